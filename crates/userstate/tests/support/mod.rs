//! Helpers shared by this crate's integration tests (each test file that needs one declares
//! `mod support;`).

pub mod crash_child;
