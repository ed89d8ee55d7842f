//! One command history, two front ends: the JSON and the gRPC answers carry the same sequence,
//! dates and resource owner; and the gRPC health and reflection services answer on the port.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use grpc_support::*;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::user::v2::*;
use userstate_server::grpc::pb::zitadel::user::v3alpha as v3;

#[tokio::test]
async fn json_and_grpc_answers_agree_on_sequence_and_dates() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let mut c = v2(s.addr).await;
    // History: add (JSON), lock (gRPC), unlock (JSON), deactivate (gRPC v3alpha).
    let added = s.add(ADMIN, "u1", "acme").await;
    assert_eq!(added.status, 201);
    let locked = c
        .lock_user(as_(
            ADMIN,
            LockUserRequest {
                user_id: "u1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .details
        .unwrap();
    // The gRPC command's answer, read back through JSON.
    let after_lock = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(after_lock.body["details"]["sequence"], "2");
    assert_eq!(
        after_lock.body["details"]["changeDate"],
        json_time(locked.change_date.as_ref().unwrap())
    );
    assert_eq!(
        after_lock.body["details"]["resourceOwner"],
        locked.resource_owner
    );
    let unlocked = s.post("/v2/users/u1/unlock", ADMIN).await;
    assert_eq!(unlocked.status, 200);
    // The JSON command's answer, read back through gRPC.
    let after_unlock = c
        .get_user_by_id(as_(
            ADMIN,
            GetUserByIdRequest {
                user_id: "u1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .details
        .unwrap();
    assert_eq!(after_unlock.sequence, 3);
    assert_eq!(
        unlocked.body["details"]["changeDate"],
        json_time(after_unlock.change_date.as_ref().unwrap())
    );
    assert_eq!(
        added.body["details"]["creationDate"],
        json_time(after_unlock.creation_date.as_ref().unwrap())
    );
    let deactivated = v3(s.addr)
        .await
        .deactivate_user(as_(
            ADMIN,
            v3::DeactivateUserRequest {
                user_id: "u1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .details
        .unwrap();
    assert_eq!(
        (added.body["details"]["sequence"].as_str(), locked.sequence),
        (Some("1"), 2)
    );
    assert_eq!(unlocked.body["details"]["sequence"], "3");
    assert_eq!(deactivated.sequence, 4);

    // The reads of both front ends describe the same state.
    let json = s.get("/v2/users/u1", ACME_READER).await;
    assert_eq!(json.status, 200, "{}", json.text);
    let grpc = c
        .get_user_by_id(as_(
            ACME_READER,
            GetUserByIdRequest {
                user_id: "u1".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(position(&grpc), json.position());
    let grpc = grpc.into_inner();
    let d = grpc.details.clone().unwrap();
    let jd = &json.body["details"];
    assert_eq!(jd["sequence"], d.sequence.to_string());
    assert_eq!(jd["sequence"], "4");
    assert_eq!(jd["resourceOwner"], d.resource_owner);
    assert_eq!(jd["changeDate"], json_time(d.change_date.as_ref().unwrap()));
    assert_eq!(
        jd["creationDate"],
        json_time(d.creation_date.as_ref().unwrap())
    );
    // The read's dates are the commands' dates: first event's and last event's.
    assert_eq!(jd["creationDate"], added.body["details"]["changeDate"]);
    assert_eq!(d.change_date, deactivated.change_date);
    assert_eq!(json.body["user"]["state"], "USER_STATE_INACTIVE");
    assert_eq!(
        grpc.user.as_ref().unwrap().state,
        UserState::Inactive as i32
    );
    assert_eq!(json.body["user"]["details"], json.body["details"]);
    // v3alpha reads agree too (no creation date).
    let json3 = s.get("/v3alpha/users/u1", ADMIN).await;
    let grpc3 = v3(s.addr)
        .await
        .get_user_by_id(as_(
            ADMIN,
            v3::GetUserByIdRequest {
                user_id: "u1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .details
        .unwrap();
    assert_eq!(
        json3.body["details"]["sequence"],
        grpc3.sequence.to_string()
    );
    assert_eq!(
        json3.body["details"]["changeDate"],
        json_time(grpc3.change_date.as_ref().unwrap())
    );
    assert!(json3.body["details"].get("creationDate").is_none());
    s.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer_on_the_same_port() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let mut health = HealthClient::new(channel(s.addr).await);
    for service in [
        "",
        "zitadel.user.v2.UserService",
        "zitadel.user.v3alpha.UserService",
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel(s.addr).await);
    let ask = |request: MessageRequest| {
        tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }])
    };
    let mut answers = reflection
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("a service list")
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    // What `grpcurl -plaintext HOST list` prints (docs/API.md).
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "userstate.events.v1.EventService",
            "userstate.lockout.v1.LockoutService",
            "zitadel.user.v2.UserService",
            "zitadel.user.v3alpha.UserService",
        ]
    );
    // What grpcurl asks to describe a method's types: the file that defines the service.
    let mut answers = reflection
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "zitadel.user.v2.UserService".into(),
        )))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("file descriptors")
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        files.file_descriptor_proto[0].as_slice(),
    )
    .unwrap();
    assert_eq!(file.name(), "zitadel/user/v2/user_service.proto");
    // A client then fetches every import by name (as grpcurl does), down to the well-known types.
    let mut pending = file.dependency.clone();
    let mut fetched = Vec::new();
    while let Some(name) = pending.pop() {
        let mut answers = reflection
            .server_reflection_info(ask(MessageRequest::FileByFilename(name.clone())))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("{name} is served")
        };
        let dep = <prost_types::FileDescriptorProto as prost::Message>::decode(
            files.file_descriptor_proto[0].as_slice(),
        )
        .unwrap();
        pending.extend(dep.dependency.iter().cloned());
        fetched.push(name);
    }
    for file in [
        "zitadel/object/v2/object.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(fetched.iter().any(|n| n == file), "{file} in {fetched:?}");
    }
    // The error detail's type resolves too (grpcurl prints the details with it).
    let mut answers = reflection
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "zitadel.v1.ErrorDetail".into(),
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        answers.message().await.unwrap().unwrap().message_response,
        Some(MessageResponse::FileDescriptorResponse(_))
    ));
    s.stop().await;
}
