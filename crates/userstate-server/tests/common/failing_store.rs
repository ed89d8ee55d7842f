//! A store whose appends fail in a chosen way while reads work: the failures only a broken
//! store produces, for the HTTP and gRPC error-mapping tests. It stands in for no database; it
//! exercises the servers' mapping of store errors.

use async_trait::async_trait;
use userstate::store::{NewEvent, StoreWrapper};
use userstate::{EventStore, ExpectedVersion, MemoryStore, RecordedEvent, StoreError, StreamId};

/// How the store's appends fail (reads work).
#[derive(Clone, Copy)]
pub enum Failure {
    Unavailable,
    Conflict,
    Corrupt,
}

pub struct FailingStore {
    pub inner: MemoryStore,
    pub failure: Failure,
}

#[async_trait]
impl StoreWrapper for FailingStore {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        _events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Err(match self.failure {
            Failure::Unavailable => StoreError::Unavailable {
                message: "database restarting".into(),
                source: None,
            },
            Failure::Conflict => StoreError::Conflict {
                stream: stream.clone(),
                expected,
                actual: 99,
            },
            Failure::Corrupt => StoreError::Corrupt {
                location: "/secret/path/segment-1.log offset 42".into(),
                reason: "bad checksum".into(),
            },
        })
    }
}
