//! Cross-crate scenarios and examples for userstate; see `tests/` and `examples/`.
