//! The conformance suite again with two batches in flight per store (`batches_in_flight(2)`),
//! the writer's non-default mode. Skips without `USERSTATE_TEST_POSTGRES_URL`.

mod common;

userstate::store_conformance_tests!(optional: || common::fresh_with("conf2", |b| b
    .batches_in_flight(2)));
