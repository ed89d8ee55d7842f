//! The PostgreSQL store passes the same conformance suite as every other backend, each check in
//! a schema of its own (dropped afterwards). Skips without `USERSTATE_TEST_POSTGRES_URL`.

mod common;

userstate::store_conformance_tests!(optional: || common::fresh("conf"));
