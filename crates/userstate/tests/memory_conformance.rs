//! The memory store passes the same conformance suite as every durable backend.

userstate::store_conformance_tests!(|| async { (userstate::MemoryStore::new(), ()) });
