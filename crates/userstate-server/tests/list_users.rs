//! ListUsers, history and state-as-of through a real server (issue 23): the same list over REST
//! (`POST /v2/users`), gRPC, gRPC-web and Connect; an organisation-scoped token sees only its
//! organisation; read-your-writes; bad input is 400/InvalidArgument; and ZITADEL's own client.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use prost::Message;
use serde_json::{json, Value};
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::object::v2::{ListQuery, TextQueryMethod};
use userstate_server::grpc::pb::zitadel::user::v2::*;

/// Users of acme and globex in several states; returns the server.
async fn seeded() -> TestServer {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    for (id, org) in [
        ("u1", "acme"),
        ("u2", "acme"),
        ("u3", "globex"),
        ("u4", "acme"),
        ("u5", "globex"),
        ("u6", "acme"),
    ] {
        assert_eq!(s.add(ADMIN, id, org).await.status, 201);
    }
    assert_eq!(s.post("/v2/users/u2/lock", ADMIN).await.status, 200);
    assert_eq!(s.post("/v2/users/u3/lock", ADMIN).await.status, 200);
    assert_eq!(s.post("/v2/users/u4/deactivate", ADMIN).await.status, 200);
    assert_eq!(s.delete("/v2/users/u6", ADMIN).await.status, 200);
    s
}

fn ids(body: &Value) -> Vec<String> {
    body["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|u| u["userId"].as_str().unwrap().to_owned())
        .collect()
}

async fn rest(s: &TestServer, token: &str, body: Value) -> Answer {
    s.call(reqwest::Method::POST, "/v2/users", Some(token), Some(body))
        .await
}

#[tokio::test]
async fn rest_lists_filters_sorts_and_pages() {
    let s = seeded().await;
    let all = rest(&s, ADMIN, json!({"query": {"asc": true}})).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(
        ids(&all.body),
        ["u1", "u2", "u3", "u4", "u5"],
        "removed u6 is not listed"
    );
    let newest_first = rest(&s, ADMIN, json!({})).await;
    assert_eq!(
        ids(&newest_first.body),
        ["u5", "u4", "u3", "u2", "u1"],
        "asc defaults to false"
    );
    assert_eq!(all.body["details"]["totalResult"], "5");
    assert!(
        all.body["details"]["processedSequence"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(all.body["details"]["timestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(all.body["result"][0]["state"], "USER_STATE_ACTIVE");
    assert_eq!(all.body["result"][0]["username"], "u1");
    assert_eq!(all.body["result"][0]["details"]["resourceOwner"], "acme");

    let locked = rest(
        &s,
        ADMIN,
        json!({"query": {"asc": true}, "queries": [{"stateQuery": {"state": "USER_STATE_LOCKED"}}]}),
    )
    .await;
    assert_eq!(ids(&locked.body), ["u2", "u3"]);
    assert_eq!(locked.body["details"]["totalResult"], "2");

    let acme_desc = rest(
        &s,
        ADMIN,
        json!({"query": {"offset": "1", "limit": 1, "asc": false},
               "sortingColumn": "USER_FIELD_NAME_USER_NAME",
               "queries": [{"organizationIdQuery": {"organizationId": "acme"}}]}),
    )
    .await;
    assert_eq!(
        ids(&acme_desc.body),
        ["u2"],
        "acme by name descending: u4, u2, u1"
    );
    assert_eq!(acme_desc.body["details"]["totalResult"], "3");
    assert_eq!(acme_desc.body["sortingColumn"], "USER_FIELD_NAME_USER_NAME");

    let composed = rest(
        &s,
        ADMIN,
        json!({"query": {"asc": true}, "queries": [
            {"orQuery": {"queries": [
                {"userNameQuery": {"userName": "U1", "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}},
                {"inUserIdsQuery": {"userIds": ["u5", "u6"]}}]}},
            {"notQuery": {"query": {"stateQuery": {"state": "USER_STATE_LOCKED"}}}}]}),
    )
    .await;
    assert_eq!(ids(&composed.body), ["u1", "u5"]);

    let by_state = rest(
        &s,
        ADMIN,
        json!({"sortingColumn": "USER_FIELD_NAME_STATE", "query": {"asc": true}}),
    )
    .await;
    assert_eq!(
        ids(&by_state.body),
        ["u1", "u5", "u4", "u2", "u3"],
        "active 1, inactive 2, locked 4"
    );
}

#[tokio::test]
async fn an_org_scoped_token_sees_and_counts_only_its_organisation() {
    let s = seeded().await;
    let acme = rest(&s, ACME_READER, json!({"query": {"asc": true}})).await;
    assert_eq!(acme.status, 200);
    assert_eq!(ids(&acme.body), ["u1", "u2", "u4"]);
    assert_eq!(acme.body["details"]["totalResult"], "3");
    let asked_for_globex = rest(
        &s,
        ACME_READER,
        json!({"queries": [{"organizationIdQuery": {"organizationId": "globex"}}]}),
    )
    .await;
    assert_eq!(asked_for_globex.status, 200, "filtered, not refused");
    assert_eq!(ids(&asked_for_globex.body), Vec::<String>::new());
    assert_eq!(asked_for_globex.body["details"]["totalResult"], "0");
    let other_instance = rest(&s, OTHER_INSTANCE, json!({})).await;
    assert_eq!(ids(&other_instance.body), Vec::<String>::new());
    let anonymous = s
        .call(reqwest::Method::POST, "/v2/users", None, Some(json!({})))
        .await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn a_list_sees_the_callers_own_writes() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    for i in 0..20 {
        let id = format!("w{i:02}");
        assert_eq!(s.add(ACME, &id, "acme").await.status, 201);
        let page = rest(&s, ACME, json!({"query": {"limit": 1000}})).await;
        assert_eq!(page.body["details"]["totalResult"], (i + 1).to_string());
        assert!(ids(&page.body).contains(&id));
    }
}

#[tokio::test]
async fn bad_list_requests_are_400_with_the_error_body() {
    let s = seeded().await;
    for body in [
        json!({"query": {"limit": 1001}}),
        json!({"queries": [{}]}),
        json!({"queries": [{"stateQuery": {"state": "USER_STATE_BOGUS"}}]}),
        json!({"queries": [{"notQuery": {}}]}),
        json!({"sortingColumn": "USER_FIELD_NAME_EMAIL"}),
        json!({"query": {"offset": "minus one"}}),
        json!([1, 2]),
    ] {
        let answer = rest(&s, ADMIN, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.text);
        assert_eq!(answer.body["code"], 3, "{body}");
        assert_eq!(
            answer.body["details"][0]["@type"],
            "type.googleapis.com/zitadel.v1.ErrorDetail"
        );
    }
}

fn proto_request() -> ListUsersRequest {
    ListUsersRequest {
        query: Some(ListQuery {
            offset: 0,
            limit: 10,
            asc: true,
        }),
        sorting_column: UserFieldName::UserName as i32,
        queries: vec![SearchQuery {
            query: Some(search_query::Query::UserNameQuery(UserNameQuery {
                user_name: "U".to_owned(),
                method: TextQueryMethod::StartsWithIgnoreCase as i32,
            })),
        }],
    }
}

#[tokio::test]
async fn grpc_lists_as_rest_does() {
    let s = seeded().await;
    let mut client = grpc_support::v2(s.addr).await;
    let answer = client
        .list_users(grpc_support::as_(ACME_READER, proto_request()))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<&str> = answer.result.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(got, ["u1", "u2", "u4"]);
    assert_eq!(answer.details.unwrap().total_result, 3);
    assert_eq!(answer.sorting_column, UserFieldName::UserName as i32);
    assert_eq!(answer.result[1].state, 4, "u2 is locked");

    let too_many = ListUsersRequest {
        query: Some(ListQuery {
            offset: 0,
            limit: 5000,
            asc: true,
        }),
        ..proto_request()
    };
    let status = client
        .list_users(grpc_support::as_(ADMIN, too_many))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn grpc_web_lists_as_rest_does() {
    let s = seeded().await;
    let mut body = vec![0u8];
    let message = proto_request().encode_to_vec();
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let response = s
        .client
        .post(s.url("/zitadel.user.v2.UserService/ListUsers"))
        .header("content-type", "application/grpc-web+proto")
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes[0], 0, "a message frame first");
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let answer = ListUsersResponse::decode(&bytes[5..5 + len]).unwrap();
    let got: Vec<&str> = answer.result.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(got, ["u1", "u2", "u3", "u4", "u5"]);
    assert_eq!(answer.details.unwrap().total_result, 5);
}

#[tokio::test]
async fn connect_lists_as_rest_does() {
    let s = seeded().await;
    let call = |token: &'static str, body: Value| {
        let request = s
            .client
            .post(s.url("/zitadel.user.v2.UserService/ListUsers"))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = call(
        GLOBEX,
        json!({"queries": [{"stateQuery": {"state": "USER_STATE_ACTIVE"}}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["u5"]);
    assert_eq!(body["details"]["totalResult"], "1");
    let (status, body) = call(ADMIN, json!({"query": {"limit": 2000}})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_argument");
}

#[tokio::test]
async fn history_and_state_as_of_are_served_to_readers_even_after_removal() {
    let s = seeded().await;
    let history = s.get("/v2/users/u6/history", ACME_READER).await;
    assert_eq!(history.status, 200, "{}", history.text);
    let types: Vec<&str> = history.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["user.human.added", "user.removed"]);
    assert_eq!(history.body["events"][0]["sequence"], "1");
    assert_eq!(history.body["events"][0]["creator"], "admin");
    assert_eq!(history.body["state"]["state"], "USER_STATE_DELETED");

    let paged = s
        .get("/v2/users/u2/history?afterSequence=1&limit=1", ADMIN)
        .await;
    assert_eq!(paged.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(paged.body["events"][0]["type"], "user.locked");
    assert_eq!(paged.body["events"][0]["sequence"], "2");

    let then = s.get("/v2/users/u2/state?atSequence=1", ADMIN).await;
    assert_eq!(then.status, 200, "{}", then.text);
    assert_eq!(then.body["state"], "USER_STATE_ACTIVE");
    assert_eq!(then.body["userId"], "u2");
    assert_eq!(then.body["details"]["sequence"], "1");
    let now = s.get("/v2/users/u2/state", ADMIN).await;
    assert_eq!(now.body["state"], "USER_STATE_LOCKED");
    let before = s
        .get("/v2/users/u2/state?atTime=2000-01-01T00:00:00Z", ADMIN)
        .await;
    assert_eq!(before.status, 404, "it did not exist yet");

    assert_eq!(s.get("/v2/users/u3/history", ACME_READER).await.status, 403);
    assert_eq!(s.get("/v2/users/u3/state", ACME_READER).await.status, 403);
    assert_eq!(s.get("/v2/users/nobody/history", ADMIN).await.status, 404);
    for bad in [
        "/v2/users/u2/history?afterSequence=-1",
        "/v2/users/u2/history?limit=1001",
        "/v2/users/u2/state?atSequence=x",
        "/v2/users/u2/state?atTime=yesterday",
        "/v2/users/u2/state?atSequence=1&atTime=2000-01-01T00:00:00Z",
    ] {
        let answer = s.get(bad, ADMIN).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text);
        assert_eq!(answer.body["code"], 3, "{bad}");
    }
}

/// Adds `id` to acme of `i1` through another node's engine on the same store (its write does
/// not feed this server's read model); the position of its event.
async fn add_elsewhere(engine: &userstate::Engine, id: &str) -> u64 {
    use userstate::{AddUser, Context, InstanceId, OrgId, Principal, UserCommand, UserId};
    let principal = Principal::system("other-node", InstanceId::new("i1").unwrap());
    let command = UserCommand::Add(AddUser {
        user_id: UserId::new(id).unwrap(),
        username: id.to_owned(),
        organization: OrgId::new("acme").unwrap(),
        profile: None,
        email: None,
        initial: false,
    });
    let details = engine.execute(&Context::new(principal), command).await;
    details.unwrap().position
}

async fn rest_at(s: &TestServer, token: &str, min_position: u64) -> Answer {
    TestServer::answer(
        s.client
            .post(s.url("/v2/users"))
            .bearer_auth(token)
            .header("x-userstate-min-position", min_position.to_string())
            .json(&json!({"query": {"asc": true}})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_waits_for_x_userstate_min_position_of_another_writers_write() {
    // Frozen, this server's projection sees nothing new, as on a node whose feed lags; the
    // other node's writes land in the store all the same.
    let store = Arc::new(userstate::testkit::SpyStore::new(Arc::new(
        MemoryStore::new(),
    )));
    let s = TestServer::start_with(store.clone(), std::time::Duration::from_secs(3)).await;
    let other_node = userstate::Engine::new(store.clone());
    assert_eq!(s.add(ADMIN, "here", "acme").await.status, 201);
    store.freeze(true);
    let position = add_elsewhere(&other_node, "there").await;

    // Without the header, a reader that wrote nothing gets what the node has seen.
    let stale = rest(&s, ACME_READER, json!({"query": {"asc": true}})).await;
    assert_eq!(stale.status, 200, "{}", stale.text);
    assert_eq!(ids(&stale.body), ["here"]);
    assert!(stale.position() < position);

    // With the writer's position, the list waits until the node has it.
    let waiting = {
        let url = s.url("/v2/users");
        let client = s.client.clone();
        tokio::spawn(TestServer::answer(
            client
                .post(url)
                .bearer_auth(ACME_READER)
                .header("x-userstate-min-position", position.to_string())
                .json(&json!({"query": {"asc": true}})),
        ))
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "answered before the node had the write"
    );
    // Thawed, the next write wakes the projection.
    store.freeze(false);
    add_elsewhere(&other_node, "wake").await;
    let page = waiting.await.unwrap();
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        ids(&page.body).contains(&"there".to_owned()),
        "{}",
        page.text
    );
    assert!(page.position() >= position);
    let processed: u64 = page.body["details"]["processedSequence"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(processed >= position);

    // A position no write has reached: 503, code 14, after the read timeout.
    let future = rest_at(&s, ACME_READER, position + 1000).await;
    assert_error(
        &future,
        503,
        14,
        "QUERY-not-caught-up",
        "Errors.Projection.NotCaughtUp",
    );
    s.stop().await;
}
