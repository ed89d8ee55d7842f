//! Failures on the wire: malformed input, body limits, unknown routes, idempotency and read
//! consistency — every one in SPEC.md's error shape, never a 500 for bad input.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;
use userstate::MemoryStore;

async fn server() -> TestServer {
    TestServer::start(Arc::new(MemoryStore::new())).await
}

#[tokio::test]
async fn malformed_input_is_400_code_3() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    let raw = |path: &str, content_type: Option<&str>, body: &'static str| {
        let mut req = s.client.post(s.url(path)).bearer_auth(ADMIN).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        TestServer::answer(req)
    };
    let bad_json = raw(
        "/v2/users/human",
        Some("application/json"),
        "{\"username\":",
    )
    .await;
    assert_error(
        &bad_json,
        400,
        3,
        "HTTP-malformed-json",
        "Errors.Invalid.Body",
    );
    let wrong_type = raw("/v2/users/human", Some("text/plain"), "{}").await;
    assert_error(
        &wrong_type,
        400,
        3,
        "HTTP-unsupported-content-type",
        "Errors.Invalid.ContentType",
    );
    let no_type = raw("/v2/users/u1/lock", None, "{}").await;
    assert_eq!(no_type.status, 400);
    let form = raw(
        "/v2/users/u1/lock",
        Some("application/x-www-form-urlencoded"),
        "a=b",
    )
    .await;
    assert_eq!(form.status, 400);
    let array = raw("/v2/users/u1/lock", Some("application/json"), "[]").await;
    assert_error(&array, 400, 3, "HTTP-malformed-json", "Errors.Invalid.Body");
    let wrong_field_type = raw(
        "/v2/users/human",
        Some("application/json"),
        "{\"username\": 5, \"organization\": {\"orgId\": \"acme\"}}",
    )
    .await;
    assert_error(
        &wrong_field_type,
        400,
        3,
        "HTTP-malformed-json",
        "Errors.Invalid.Body",
    );
    let empty_add = raw("/v2/users/human", Some("application/json"), "").await;
    assert_error(
        &empty_add,
        400,
        3,
        "HTTP-missing-body",
        "Errors.Invalid.Body",
    );
    let no_org = s
        .call(
            Method::POST,
            "/v2/users/human",
            Some(ADMIN),
            Some(json!({"username": "x"})),
        )
        .await;
    assert_error(
        &no_org,
        400,
        3,
        "HTTP-missing-field",
        "Errors.Invalid.Argument",
    );
    let bad_org = s.add(ADMIN, "u9", "bad org").await;
    assert_error(
        &bad_org,
        400,
        3,
        "USERSTATE-invalid-id",
        "Errors.Invalid.Id",
    );
    let empty_name = s
        .call(
            Method::POST,
            "/v2/users/human",
            Some(ADMIN),
            Some(json!({"username": " ", "organization": {"orgId": "acme"}})),
        )
        .await;
    assert_error(
        &empty_name,
        400,
        3,
        "USERSTATE-invalid-argument",
        "Errors.Invalid.Argument",
    );

    let long_id = "a".repeat(201);
    for r in [
        s.get(&format!("/v2/users/{long_id}"), ADMIN).await,
        s.post(&format!("/v3alpha/users/{long_id}/lock"), ADMIN)
            .await,
        s.get("/v2/users/a%3Ab", ADMIN).await,
        s.get("/v2/users/%C3%BC", ADMIN).await,
        s.add(ADMIN, &long_id, "acme").await,
        s.add(ADMIN, ".", "acme").await,
        s.add(ADMIN, "..", "acme").await,
    ] {
        assert_error(&r, 400, 3, "USERSTATE-invalid-id", "Errors.Invalid.Id");
    }
    let bad_utf8 = s.get("/v2/users/%FF", ADMIN).await;
    assert_eq!(bad_utf8.status, 400, "{}", bad_utf8.text);
    assert_eq!(bad_utf8.body["code"], 3);

    let long_key = TestServer::answer(
        s.client
            .post(s.url("/v2/users/u1/lock"))
            .bearer_auth(ADMIN)
            .header("idempotency-key", "k".repeat(200)),
    )
    .await;
    assert_error(
        &long_key,
        400,
        3,
        "HTTP-invalid-header",
        "Errors.Invalid.Header",
    );
    let bad_position = TestServer::answer(
        s.client
            .get(s.url("/v2/users/u1"))
            .bearer_auth(ADMIN)
            .header("x-userstate-min-position", "soon"),
    )
    .await;
    assert_error(
        &bad_position,
        400,
        3,
        "HTTP-invalid-header",
        "Errors.Invalid.Header",
    );
    // Nothing of this changed the user.
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(got.body["details"]["sequence"], "1");
    s.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_429_code_8() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    let big = format!(
        "{{\"pad\": \"{}\"}}",
        "x".repeat(userstate_server::http::MAX_BODY_BYTES)
    );
    let declared = TestServer::answer(
        s.client
            .post(s.url("/v2/users/u1/lock"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(big.clone()),
    )
    .await;
    assert_error(
        &declared,
        429,
        8,
        "HTTP-body-too-large",
        "Errors.Invalid.BodyTooLarge",
    );
    // Chunked, without a Content-Length: the limit is enforced while reading.
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(4096)
        .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
        .collect();
    let streamed = TestServer::answer(
        s.client
            .post(s.url("/v2/users/human"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(tokio_stream::iter(chunks))),
    )
    .await;
    assert_error(
        &streamed,
        429,
        8,
        "HTTP-body-too-large",
        "Errors.Invalid.BodyTooLarge",
    );
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(got.body["user"]["state"], "USER_STATE_ACTIVE");
    s.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_use_the_error_shape() {
    let s = server().await;
    let unknown = s.get("/v1/users/u1", ADMIN).await;
    assert_error(
        &unknown,
        404,
        5,
        "HTTP-route-not-found",
        "Errors.Route.NotFound",
    );
    let nested = s.post("/v2/users/u1/explode", ADMIN).await;
    assert_error(
        &nested,
        404,
        5,
        "HTTP-route-not-found",
        "Errors.Route.NotFound",
    );
    for (method, path) in [
        (Method::PUT, "/v2/users/u1"),
        (Method::GET, "/v2/users/u1/lock"),
        (Method::DELETE, "/v3alpha/users/u1/unlock"),
        (Method::PATCH, "/v2/users/human"),
    ] {
        let r = s.call(method.clone(), path, Some(ADMIN), None).await;
        assert_error(
            &r,
            404,
            5,
            "HTTP-method-not-allowed",
            "Errors.Route.MethodNotAllowed",
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn idempotency_key_answers_the_first_answer_and_appends_nothing() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    let lock = |key: &'static str| {
        TestServer::answer(
            s.client
                .post(s.url("/v2/users/u1/lock"))
                .bearer_auth(ADMIN)
                .header("idempotency-key", key),
        )
    };
    let first = lock("k1").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = lock("k1").await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(first.body, second.body);
    assert_eq!(first.position(), second.position());
    let other_key = lock("k2").await;
    assert_error(
        &other_key,
        400,
        9,
        "COMMAND-lgws8wtsqf",
        "Errors.User.ShouldBeActiveOrInitial",
    );
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(got.body["details"]["sequence"], "2", "one lock event only");

    // An add without userId derives its id from the key: a retry finds the first answer.
    let add = || {
        TestServer::answer(
            s.client
                .post(s.url("/v2/users/human"))
                .bearer_auth(ADMIN)
                .header("idempotency-key", "add-1")
                .json(&json!({"username": "retry", "organization": {"orgId": "acme"}})),
        )
    };
    let a = add().await;
    let b = add().await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(b.status, 201, "{}", b.text);
    assert_eq!(a.body, b.body);
    let id = a.body["userId"].as_str().unwrap();
    assert_eq!(id.len(), 18);
    let got = s.get(&format!("/v2/users/{id}"), ADMIN).await;
    assert_eq!(got.body["details"]["sequence"], "1");
    s.stop().await;
}

#[tokio::test]
async fn reads_wait_for_a_position_and_give_up_with_503_code_14() {
    let s = TestServer::start_with(Arc::new(MemoryStore::new()), Duration::from_millis(200)).await;
    let added = s.add(ADMIN, "u1", "acme").await;
    let position = added.position();
    // Another caller passes the position it was given and reads the write.
    let read = TestServer::answer(
        s.client
            .get(s.url("/v2/users/u1"))
            .bearer_auth(ACME_READER)
            .header("x-userstate-min-position", position.to_string()),
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert!(read.position() >= position);
    let future = TestServer::answer(
        s.client
            .get(s.url("/v2/users/u1"))
            .bearer_auth(ADMIN)
            .header("x-userstate-min-position", (position + 1000).to_string()),
    )
    .await;
    assert_error(
        &future,
        503,
        14,
        "QUERY-not-caught-up",
        "Errors.Projection.NotCaughtUp",
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_user_never_fail_with_a_500() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let req = s.client.post(s.url("/v2/users/u1/lock")).bearer_auth(ADMIN);
        tasks.spawn(TestServer::answer(req));
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            _ => assert_error(
                &r,
                400,
                9,
                "COMMAND-lgws8wtsqf",
                "Errors.User.ShouldBeActiveOrInitial",
            ),
        }
    }
    assert_eq!(ok, 1, "exactly one lock wins");
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(got.body["details"]["sequence"], "2");
    s.stop().await;
}
