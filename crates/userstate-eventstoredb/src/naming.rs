//! The mapping between our stream ids and KurrentDB stream names.
//!
//! `StreamId` → `{namespace}-{stream id}`, e.g. `user:default:u1` in namespace `userstate`
//! becomes `userstate-user:default:u1`. It is injective: the namespace holds no `-`, so the
//! first `-` splits a name back into namespace and stream id, and our stream ids are already
//! injective (`user:{instance}:{user}`, ids never contain `:`). Every name is a valid user
//! stream name: it never starts with `$` (KurrentDB's system prefix) and holds no control
//! characters, and it is at most 64 + 1 + 512 bytes.

use userstate::{StoreError, StreamId};

/// Names streams of one namespace.
#[derive(Clone, Debug)]
pub struct StreamNaming {
    prefix: String,
}

impl StreamNaming {
    /// The naming of a (validated) namespace.
    pub fn new(namespace: &str) -> Self {
        Self {
            prefix: format!("{namespace}-"),
        }
    }

    /// The prefix shared by every stream of the namespace (the `$all` filter).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The KurrentDB stream name of `stream`.
    pub fn esdb_name(&self, stream: &StreamId) -> String {
        format!("{}{}", self.prefix, stream.as_str())
    }

    /// The stream id of a KurrentDB stream name of this namespace.
    pub fn stream_id_of(&self, name: &str) -> Result<StreamId, StoreError> {
        let Some(id) = name.strip_prefix(&self.prefix) else {
            return Err(StoreError::Corrupt {
                location: format!("stream {name}"),
                reason: format!("not in namespace prefix {:?}", self.prefix),
            });
        };
        StreamId::new(id).map_err(|e| StoreError::Corrupt {
            location: format!("stream {name}"),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_apart() {
        let n = StreamNaming::new("userstate");
        let s = StreamId::new("user:default:u-1").unwrap();
        assert_eq!(n.esdb_name(&s), "userstate-user:default:u-1");
        assert_eq!(n.stream_id_of(&n.esdb_name(&s)).unwrap(), s);
        let dollar = StreamId::new("$odd").unwrap();
        assert!(!n.esdb_name(&dollar).starts_with('$'));
        assert!(StreamNaming::new("other")
            .stream_id_of("userstate-x")
            .is_err());
    }
}
