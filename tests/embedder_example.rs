//! Runs `examples/embedder_auth.rs` (its `demo`), so the example keeps compiling and working:
//! userstate's router behind the embedder's own authenticator.

#[allow(dead_code)]
#[path = "../examples/embedder_auth.rs"]
mod example;

#[tokio::test]
async fn the_embedder_example_authenticates_with_its_own_sessions() {
    let statuses = example::demo().await.expect("the example runs");
    // Added as alice; no session is 401; bob's organisation is another one (403); alice reads.
    assert_eq!(statuses, [201, 401, 403, 200]);
}
