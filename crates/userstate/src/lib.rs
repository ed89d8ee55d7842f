//! # userstate
//!
//! An event-sourced user lifecycle engine, following ZITADEL's user API: every user is a
//! stream of events (`user.human.added`, `user.locked`, …); commands check their preconditions
//! against the fold of that stream and append new events; a projection keeps a read model; the
//! stream is the audit trail.
//!
//! Three layers, one direction:
//! - [`domain`]: the pure state machine ([`User::decide`], [`User::apply`]);
//! - [`store`]: the [`EventStore`] contract and its embedded backends;
//! - [`engine`]: [`Engine::execute`], the [`Projection`] and audit;
//! - [`feed`]: every committed event after a position, live ([`feed::Subscription`]), and the
//!   checkpoints of its consumers.
//!
//! ```
//! use std::sync::Arc;
//! use userstate::{AddUser, Context, Engine, InstanceId, MemoryStore, OrgId, Principal, UserCommand, UserId};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let engine = Engine::new(Arc::new(MemoryStore::new()));
//! let ctx = Context::new(Principal::system("admin", InstanceId::new("default").unwrap()));
//! let id = UserId::new("u1").unwrap();
//! engine.execute(&ctx, UserCommand::Add(AddUser {
//!     user_id: id.clone(), username: "alice".into(), organization: OrgId::new("acme").unwrap(),
//!     profile: None, email: None, initial: false,
//! })).await.unwrap();
//! let details = engine.execute(&ctx, UserCommand::Lock(id)).await.unwrap();
//! assert_eq!(details.sequence, 2);
//! # });
//! ```

#![deny(missing_docs)]

pub mod chain;
pub mod crypto;
pub mod domain;
pub mod engine;
mod error;
pub mod feed;
mod hash;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transfer;
pub mod verify;

/// Small events for the library's own unit tests.
#[cfg(test)]
pub(crate) fn testkit_events(n: u64) -> Vec<store::NewEvent> {
    (1..=n)
        .map(|i| {
            store::NewEvent::new(
                "test.happened",
                1,
                serde_json::json!({ "n": i }),
                store::EventMetadata::default(),
            )
        })
        .collect()
}

pub use crypto::{CryptoStore, FileKeyStore, KeyStore, MemoryKeyStore};
pub use domain::{
    AddUser, AuthMethod, AuthOutcome, DomainError, Email, InstanceId, LockFor, LockoutPolicy,
    OrgId, Profile, User, UserCommand, UserEvent, UserId, UserState,
};
pub use engine::{
    AsOf, AuditState, Candidate, CommitListener, Context, Details, Engine, Error, ListRequest,
    LockExpiry, Permission, PolicyDetails, PolicySource, PolicyView, Principal, Projection,
    ReadModel, SortColumn, TextMethod, UserList, UserQuery, UserView, LIST_DEFAULT_LIMIT,
    LIST_MAX_LIMIT,
};
pub use error::{Classified, ErrorKind};
pub use store::{
    EventStore, ExpectedVersion, FileStore, FileStoreOptions, MemoryStore, RecordedEvent,
    StoreError, StreamId,
};
