//! Every route of SPEC.md against a real server, called with a real HTTP client: successes,
//! exact JSON shapes, every lifecycle transition, v2 and v3alpha.

mod common;

use std::sync::Arc;

use common::*;
use reqwest::Method;
use serde_json::json;
use userstate::MemoryStore;

async fn server() -> TestServer {
    TestServer::start(Arc::new(MemoryStore::new())).await
}

#[tokio::test]
async fn v2_lifecycle_through_every_route() {
    let s = server().await;
    let added = s
        .call(
            Method::POST,
            "/v2/users/human",
            Some(ADMIN),
            Some(json!({
                "userId": "69629023906488334", "username": "alice",
                "organization": {"orgId": "acme"},
                "profile": {"givenName": "Alice", "familyName": "Doe"},
                "email": {"email": "alice@example.com", "isVerified": true},
                "unknownField": "ignored"
            })),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    assert_eq!(added.body["userId"], "69629023906488334");
    let (seq, date) = assert_details(&added.body["details"], true);
    assert_eq!(seq, 1);
    assert_eq!(added.body["details"]["resourceOwner"], "acme");
    assert_eq!(added.body["details"]["creationDate"], date);
    let keys: Vec<_> = added.body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 2);
    assert!(added.position() > 0);

    let got = s.get("/v2/users/69629023906488334", ADMIN).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_details(&got.body["details"], true);
    assert_eq!(
        got.body["user"],
        json!({
            "userId": "69629023906488334",
            "details": got.body["details"],
            "state": "USER_STATE_ACTIVE",
            "username": "alice",
            "human": {
                "profile": {"givenName": "Alice", "familyName": "Doe"},
                "email": {"email": "alice@example.com", "isVerified": true}
            },
            "failedAttempts": 0
        })
    );
    assert_eq!(got.body["details"]["creationDate"], date);

    let steps = [
        ("deactivate", "USER_STATE_INACTIVE"),
        ("reactivate", "USER_STATE_ACTIVE"),
        ("lock", "USER_STATE_LOCKED"),
        ("unlock", "USER_STATE_ACTIVE"),
        ("lock", "USER_STATE_LOCKED"),
        ("deactivate", "USER_STATE_INACTIVE"),
        ("reactivate", "USER_STATE_ACTIVE"),
    ];
    for (i, (action, state)) in steps.into_iter().enumerate() {
        let r = s
            .post(&format!("/v2/users/69629023906488334/{action}"), ADMIN)
            .await;
        assert_eq!(r.status, 200, "{action}: {}", r.text);
        let keys: Vec<_> = r.body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["details"]);
        let (seq, change) = assert_details(&r.body["details"], true);
        assert_eq!(seq, i as u64 + 2, "{action}");
        assert_eq!(
            r.body["details"]["creationDate"], change,
            "manipulation form"
        );
        // A plain GET right after the command by the same caller sees it.
        let got = s.get("/v2/users/69629023906488334", ADMIN).await;
        assert_eq!(got.body["user"]["state"], state, "{action}");
        assert_eq!(got.body["details"]["sequence"], (i + 2).to_string());
        assert_eq!(got.body["details"]["changeDate"], change);
        assert_eq!(got.body["details"]["creationDate"], date, "read form");
    }

    let removed = s.delete("/v2/users/69629023906488334", ADMIN).await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert_eq!(assert_details(&removed.body["details"], true).0, 9);
    let gone = s.get("/v2/users/69629023906488334", ADMIN).await;
    assert_error(&gone, 404, 5, "COMMAND-450yxuqrh1", "Errors.User.NotFound");
    let again = s.post("/v2/users/69629023906488334/lock", ADMIN).await;
    assert_error(&again, 404, 5, "COMMAND-450yxuqrh1", "Errors.User.NotFound");
    s.stop().await;
}

#[tokio::test]
async fn v3alpha_routes_answer_without_creation_date() {
    let s = server().await;
    assert_eq!(s.add(ADMIN, "u3", "acme").await.status, 201);
    let steps = [
        ("deactivate", "USER_STATE_INACTIVE"),
        ("reactivate", "USER_STATE_ACTIVE"),
        ("lock", "USER_STATE_LOCKED"),
        ("unlock", "USER_STATE_ACTIVE"),
        ("deactivate", "USER_STATE_INACTIVE"),
        // The alias of earlier releases.
        ("activate", "USER_STATE_ACTIVE"),
    ];
    for (i, (action, state)) in steps.into_iter().enumerate() {
        let r = s.post(&format!("/v3alpha/users/u3/{action}"), ADMIN).await;
        assert_eq!(r.status, 200, "{action}: {}", r.text);
        assert_eq!(assert_details(&r.body["details"], false).0, i as u64 + 2);
        let got = s.get("/v3alpha/users/u3", ADMIN).await;
        assert_eq!(got.status, 200);
        assert_details(&got.body["details"], false);
        assert_details(&got.body["user"]["details"], false);
        assert_eq!(got.body["user"]["state"], state);
        assert_eq!(got.body["user"]["human"], json!({}));
    }
    let removed = s.delete("/v3alpha/users/u3", ADMIN).await;
    assert_eq!(removed.status, 200);
    assert_details(&removed.body["details"], false);
    assert_eq!(s.get("/v3alpha/users/u3", ADMIN).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn seed_unlock_example_has_the_exact_shape() {
    let s = server().await;
    s.add(ADMIN, "69629023906488334", "69629023906488334").await;
    s.post("/v2/users/69629023906488334/lock", ADMIN).await;
    let r = s
        .post("/v3alpha/users/69629023906488334/unlock", ADMIN)
        .await;
    assert_eq!(r.status, 200);
    let change = r.body["details"]["changeDate"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body,
        json!({"details": {"sequence": "3", "changeDate": change,
            "resourceOwner": "69629023906488334"}})
    );
    let again = s
        .post("/v3alpha/users/69629023906488334/unlock", ADMIN)
        .await;
    assert_error(
        &again,
        400,
        9,
        "COMMAND-olb9vb0oca",
        "Errors.User.NotLocked",
    );
    assert_eq!(
        again.body["message"],
        "user \"69629023906488334\" is not locked (state: active)"
    );
    s.stop().await;
}

#[tokio::test]
async fn seed_reactivate_example_has_the_exact_shape() {
    let s = server().await;
    s.add(ADMIN, "u1", "69629023906488334").await;
    s.post("/v2/users/u1/deactivate", ADMIN).await;
    let r = s.post("/v2/users/u1/reactivate", ADMIN).await;
    let change = r.body["details"]["changeDate"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body,
        json!({"details": {"sequence": "3", "changeDate": change,
            "resourceOwner": "69629023906488334", "creationDate": change}})
    );
    let again = s.post("/v2/users/u1/reactivate", ADMIN).await;
    assert_error(
        &again,
        400,
        9,
        "COMMAND-s5qqcz97hf",
        "Errors.User.NotInactive",
    );
    s.stop().await;
}

#[tokio::test]
async fn commands_take_no_body_or_an_empty_object() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    let no_body = s
        .call(Method::POST, "/v2/users/u1/lock", Some(ADMIN), None)
        .await;
    assert_eq!(no_body.status, 200, "{}", no_body.text);
    let with_fields = s
        .call(
            Method::POST,
            "/v2/users/u1/unlock",
            Some(ADMIN),
            Some(json!({"userId": "u1", "extra": 1})),
        )
        .await;
    assert_eq!(with_fields.status, 200, "{}", with_fields.text);
    s.stop().await;
}

#[tokio::test]
async fn add_generates_ids_and_honours_initial() {
    let s = server().await;
    let r = s
        .call(
            Method::POST,
            "/v2/users/human",
            Some(ADMIN),
            Some(json!({"username": "gen", "organization": {"orgId": "acme"}, "initial": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["userId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 18);
    assert!(id.bytes().all(|b| b.is_ascii_digit()));
    let got = s.get(&format!("/v2/users/{id}"), ADMIN).await;
    assert_eq!(got.body["user"]["state"], "USER_STATE_INITIAL");
    let deactivate = s.post(&format!("/v2/users/{id}/deactivate"), ADMIN).await;
    assert_error(
        &deactivate,
        400,
        9,
        "COMMAND-gvx4kct9r2",
        "Errors.User.CantDeactivateInitial",
    );
    let lock = s.post(&format!("/v2/users/{id}/lock"), ADMIN).await;
    assert_eq!(lock.status, 200, "an initial user may be locked");
    let unlock = s.post(&format!("/v2/users/{id}/unlock"), ADMIN).await;
    assert_eq!(unlock.status, 200);
    let got = s.get(&format!("/v2/users/{id}"), ADMIN).await;
    assert_eq!(got.body["user"]["state"], "USER_STATE_ACTIVE");
    s.stop().await;
}

#[tokio::test]
async fn every_failed_precondition_has_its_zitadel_id() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    let reactivate = s.post("/v2/users/u1/reactivate", ADMIN).await;
    assert_error(
        &reactivate,
        400,
        9,
        "COMMAND-s5qqcz97hf",
        "Errors.User.NotInactive",
    );
    let unlock = s.post("/v2/users/u1/unlock", ADMIN).await;
    assert_error(
        &unlock,
        400,
        9,
        "COMMAND-olb9vb0oca",
        "Errors.User.NotLocked",
    );
    s.post("/v2/users/u1/deactivate", ADMIN).await;
    let twice = s.post("/v2/users/u1/deactivate", ADMIN).await;
    assert_error(
        &twice,
        400,
        9,
        "COMMAND-5gunjw0cd7",
        "Errors.User.AlreadyInactive",
    );
    let lock = s.post("/v3alpha/users/u1/lock", ADMIN).await;
    assert_error(
        &lock,
        400,
        9,
        "COMMAND-lgws8wtsqf",
        "Errors.User.ShouldBeActiveOrInitial",
    );
    let exists = s.add(ADMIN, "u1", "acme").await;
    assert_error(
        &exists,
        409,
        6,
        "COMMAND-7yiox1isql",
        "Errors.User.AlreadyExisting",
    );
    let taken = s
        .call(
            Method::POST,
            "/v2/users/human",
            Some(ADMIN),
            Some(json!({"userId": "u2", "username": "u1", "organization": {"orgId": "acme"}})),
        )
        .await;
    assert_error(
        &taken,
        409,
        6,
        "COMMAND-7yiox1isql",
        "Errors.User.AlreadyExisting",
    );
    let missing = s.post("/v3alpha/users/nobody/unlock", ADMIN).await;
    assert_error(
        &missing,
        404,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    s.stop().await;
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    let health = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (health.status.as_u16(), health.body.clone()),
        (200, json!({"status": "ok"}))
    );
    let ready = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let metrics = s.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    for needle in [
        "userstate_http_requests_total{method=\"POST\",route=\"/v2/users/human\",status=\"201\"} 1",
        "userstate_http_request_duration_seconds_bucket",
        "userstate_store_append_duration_seconds_count{outcome=\"ok\"}",
        "userstate_projection_lag_events",
        "userstate_store_head_position",
    ] {
        assert!(
            metrics.text.contains(needle),
            "{needle} missing in\n{}",
            metrics.text
        );
    }
    let openapi = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(openapi.status, 200);
    assert_eq!(openapi.text, userstate_server::openapi::openapi_json());
    assert!(openapi.body["paths"]["/v3alpha/users/{userId}/unlock"]["post"].is_object());
    s.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_and_stored_as_correlation_ids() {
    let store = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    let r = TestServer::answer(
        s.client
            .post(s.url("/v2/users/human"))
            .bearer_auth(ADMIN)
            .header("x-request-id", "req-42")
            .json(&json!({"userId": "u1", "username": "u1", "organization": {"orgId": "acme"}})),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.headers.get("x-request-id").unwrap(), "req-42");
    let events = userstate::EventStore::read_stream(
        &*store,
        &userstate::StreamId::user(
            &userstate::InstanceId::new("i1").unwrap(),
            &userstate::UserId::new("u1").unwrap(),
        ),
        1,
    )
    .await
    .unwrap();
    assert_eq!(events[0].metadata.correlation_id.as_deref(), Some("req-42"));
    assert_eq!(events[0].metadata.creator, "admin");
    let generated = s.call(Method::GET, "/healthz", None, None).await;
    assert!(generated.headers.get("x-request-id").is_some());
    s.stop().await;
}
