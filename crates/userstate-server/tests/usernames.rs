//! Usernames and profile fields through the real server (issue 20). On the code before, a
//! 200-emoji username was accepted and wrote a stream name the read path called corruption
//! (500s, and `verify`/`export` failed on the whole store); look-alike names registered twice;
//! a 60 kB given name was stored.

mod common;

use std::sync::Arc;

use common::*;
use reqwest::Method;
use serde_json::json;
use userstate::MemoryStore;

#[tokio::test]
async fn usernames_are_canonical_bounded_and_visible_characters_only() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let add = |id: &str, username: &str| {
        let body = json!({"userId": id, "username": username, "organization": {"orgId": "acme"}});
        s.call(Method::POST, "/v2/users/human", Some(ADMIN), Some(body))
    };
    for bad in [
        "\u{1F600}".repeat(200),
        "\u{e9}".repeat(200),
        "bob\u{200b}".to_owned(),
        "c\u{ad}arol".to_owned(),
        "evil\u{202e}txt".to_owned(),
    ] {
        let r = add("u1", &bad).await;
        assert_error(
            &r,
            400,
            3,
            "USERSTATE-invalid-argument",
            "Errors.Invalid.Argument",
        );
    }
    for (i, (first, second)) in [
        ("jos\u{e9}", "jose\u{301}"),
        ("dave", "\u{ff44}\u{ff41}\u{ff56}\u{ff45}"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = add(&format!("a{i}"), first).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = add(&format!("b{i}"), second).await;
        assert_error(
            &r,
            409,
            6,
            "COMMAND-7yiox1isql",
            "Errors.User.AlreadyExisting",
        );
    }
    let got = s.get("/v2/users/a1", ADMIN).await;
    assert_eq!(got.body["user"]["username"], "dave", "{}", got.text);
    s.stop().await;
}

#[tokio::test]
async fn profile_fields_are_bounded() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let body = json!({"userId": "u1", "username": "alice", "organization": {"orgId": "acme"},
                      "profile": {"givenName": "x".repeat(60_000), "familyName": "Doe"}});
    let r = s
        .call(Method::POST, "/v2/users/human", Some(ADMIN), Some(body))
        .await;
    assert_error(
        &r,
        400,
        3,
        "USERSTATE-invalid-argument",
        "Errors.Invalid.Argument",
    );
    assert!(
        r.body["message"].as_str().unwrap().contains("givenName"),
        "{}",
        r.text
    );
    // Nothing was left behind: the username is free for the same add with a sane name.
    let body = json!({"userId": "u1", "username": "alice", "organization": {"orgId": "acme"},
                      "profile": {"givenName": "Alice", "familyName": "Doe"}});
    let r = s
        .call(Method::POST, "/v2/users/human", Some(ADMIN), Some(body))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.stop().await;
}
