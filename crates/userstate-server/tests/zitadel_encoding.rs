//! Every `zitadel.user.v2` request and answer message userstate serves, built with our types,
//! encoded, and decoded with ZITADEL's generated types (the crates.io `zitadel` crate) — and back —
//! with equal values field by field. A field renumbered or retyped in `proto/` fails here.
//! (`zitadel.user.v3alpha`, which the crate does not carry, is checked against ZITADEL's numbers
//! in tests/zitadel_client.rs.)

use std::fmt::Debug;

use userstate_server::grpc::pb::zitadel::object::v2 as our_object;
use userstate_server::grpc::pb::zitadel::user::v2 as ours;
use zitadel::api::zitadel::object::v2 as z_object;
use zitadel::api::zitadel::user::v2 as z;

/// `ours` encodes to what ZITADEL's types decode as `theirs`, and `theirs` encodes to what our
/// types decode as `ours`.
fn both_ways<O, Z>(ours: O, theirs: Z)
where
    O: prost::Message + Default + PartialEq + Debug,
    Z: prost14::Message + Default + PartialEq + Debug,
{
    let bytes = prost::Message::encode_to_vec(&ours);
    assert_eq!(
        <Z as prost14::Message>::decode(bytes.as_slice()).expect("ZITADEL's type decodes ours"),
        theirs,
        "ours -> ZITADEL's"
    );
    let bytes = prost14::Message::encode_to_vec(&theirs);
    assert_eq!(
        <O as prost::Message>::decode(bytes.as_slice()).expect("our type decodes ZITADEL's"),
        ours,
        "ZITADEL's -> ours"
    );
}

fn our_time(seconds: i64, nanos: i32) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos }
}

fn z_time(seconds: i64, nanos: i32) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp { seconds, nanos }
}

fn our_details() -> our_object::Details {
    our_object::Details {
        sequence: 7,
        change_date: Some(our_time(1_741_210_162, 38_000_000)),
        resource_owner: "69629023906488334".into(),
        creation_date: Some(our_time(1_741_210_100, 1_000_000)),
    }
}

fn z_details() -> z_object::Details {
    z_object::Details {
        sequence: 7,
        change_date: Some(z_time(1_741_210_162, 38_000_000)),
        resource_owner: "69629023906488334".into(),
        creation_date: Some(z_time(1_741_210_100, 1_000_000)),
    }
}

#[test]
fn add_human_user_request_and_response() {
    both_ways(
        ours::AddHumanUserRequest {
            user_id: Some("u1".into()),
            username: Some("alice".into()),
            organization: Some(our_object::Organization {
                org: Some(our_object::organization::Org::OrgId("acme".into())),
            }),
            profile: Some(ours::SetHumanProfile {
                given_name: "Alice".into(),
                family_name: "Doe".into(),
            }),
            email: Some(ours::SetHumanEmail {
                email: "alice@example.com".into(),
                verification: Some(ours::set_human_email::Verification::IsVerified(true)),
            }),
            initial: None,
        },
        z::AddHumanUserRequest {
            user_id: Some("u1".into()),
            username: Some("alice".into()),
            organization: Some(z_object::Organization {
                org: Some(z_object::organization::Org::OrgId("acme".into())),
            }),
            profile: Some(z::SetHumanProfile {
                given_name: "Alice".into(),
                family_name: "Doe".into(),
                ..Default::default()
            }),
            email: Some(z::SetHumanEmail {
                email: "alice@example.com".into(),
                verification: Some(z::set_human_email::Verification::IsVerified(true)),
            }),
            ..Default::default()
        },
    );
    // The other branch of the organisation oneof.
    both_ways(
        ours::AddHumanUserRequest {
            organization: Some(our_object::Organization {
                org: Some(our_object::organization::Org::OrgDomain(
                    "acme.example".into(),
                )),
            }),
            ..Default::default()
        },
        z::AddHumanUserRequest {
            organization: Some(z_object::Organization {
                org: Some(z_object::organization::Org::OrgDomain(
                    "acme.example".into(),
                )),
            }),
            ..Default::default()
        },
    );
    both_ways(
        ours::AddHumanUserResponse {
            user_id: "u1".into(),
            details: Some(our_details()),
        },
        z::AddHumanUserResponse {
            user_id: "u1".into(),
            details: Some(z_details()),
            ..Default::default()
        },
    );
}

#[test]
fn zitadels_fields_we_do_not_implement_are_skipped() {
    let theirs = z::AddHumanUserRequest {
        username: Some("alice".into()),
        organization: Some(z_object::Organization {
            org: Some(z_object::organization::Org::OrgId("acme".into())),
        }),
        profile: Some(z::SetHumanProfile {
            given_name: "Alice".into(),
            family_name: "Doe".into(),
            nick_name: Some("Al".into()),
            display_name: Some("Alice Doe".into()),
            preferred_language: Some("en".into()),
            gender: Some(z::Gender::Female as i32),
        }),
        email: Some(z::SetHumanEmail {
            email: "alice@example.com".into(),
            verification: Some(z::set_human_email::Verification::ReturnCode(
                z::ReturnEmailVerificationCode {},
            )),
        }),
        phone: Some(z::SetHumanPhone {
            phone: "+41791234567".into(),
            ..Default::default()
        }),
        metadata: vec![z::SetMetadataEntry {
            key: "k".into(),
            value: b"v".to_vec(),
        }],
        totp_secret: Some("secret".into()),
        password_type: Some(z::add_human_user_request::PasswordType::Password(
            z::Password {
                password: "Secr3tP4ssw0rd!".into(),
                change_required: false,
            },
        )),
        ..Default::default()
    };
    let decoded = <ours::AddHumanUserRequest as prost::Message>::decode(
        prost14::Message::encode_to_vec(&theirs).as_slice(),
    )
    .unwrap();
    assert_eq!(
        decoded,
        ours::AddHumanUserRequest {
            username: Some("alice".into()),
            organization: Some(our_object::Organization {
                org: Some(our_object::organization::Org::OrgId("acme".into())),
            }),
            profile: Some(ours::SetHumanProfile {
                given_name: "Alice".into(),
                family_name: "Doe".into(),
            }),
            // A verification ZITADEL has and we do not: an unverified address.
            email: Some(ours::SetHumanEmail {
                email: "alice@example.com".into(),
                verification: None,
            }),
            ..Default::default()
        }
    );
    // Our own field (1000) is nothing to ZITADEL's type.
    let ours_initial = ours::AddHumanUserRequest {
        username: Some("bob".into()),
        initial: Some(true),
        ..Default::default()
    };
    let theirs = <z::AddHumanUserRequest as prost14::Message>::decode(
        prost::Message::encode_to_vec(&ours_initial).as_slice(),
    )
    .unwrap();
    assert_eq!(theirs.username.as_deref(), Some("bob"));
}

#[test]
fn get_user_by_id_request_and_response() {
    both_ways(
        ours::GetUserByIdRequest {
            user_id: "u1".into(),
        },
        z::GetUserByIdRequest {
            user_id: "u1".into(),
        },
    );
    for (state, z_state) in [
        (ours::UserState::Unspecified, z::UserState::Unspecified),
        (ours::UserState::Active, z::UserState::Active),
        (ours::UserState::Inactive, z::UserState::Inactive),
        (ours::UserState::Deleted, z::UserState::Deleted),
        (ours::UserState::Locked, z::UserState::Locked),
        (ours::UserState::Initial, z::UserState::Initial),
    ] {
        assert_eq!(state.as_str_name(), z_state.as_str_name());
        both_ways(
            ours::GetUserByIdResponse {
                details: Some(our_details()),
                user: Some(ours::User {
                    user_id: "u1".into(),
                    details: Some(our_details()),
                    state: state as i32,
                    username: "alice".into(),
                    r#type: Some(ours::user::Type::Human(ours::HumanUser {
                        profile: Some(ours::HumanProfile {
                            given_name: "Alice".into(),
                            family_name: "Doe".into(),
                        }),
                        email: Some(ours::HumanEmail {
                            email: "alice@example.com".into(),
                            is_verified: true,
                        }),
                    })),
                }),
            },
            z::GetUserByIdResponse {
                details: Some(z_details()),
                user: Some(z::User {
                    user_id: "u1".into(),
                    details: Some(z_details()),
                    state: z_state as i32,
                    username: "alice".into(),
                    r#type: Some(z::user::Type::Human(z::HumanUser {
                        profile: Some(z::HumanProfile {
                            given_name: "Alice".into(),
                            family_name: "Doe".into(),
                            ..Default::default()
                        }),
                        email: Some(z::HumanEmail {
                            email: "alice@example.com".into(),
                            is_verified: true,
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            },
        );
    }
}

/// The five commands: `user_id = 1` in, `details = 1` out.
macro_rules! command_messages {
    ($($request:ident => $response:ident),* $(,)?) => {$(
        both_ways(
            ours::$request { user_id: "69629023906488334".into() },
            z::$request { user_id: "69629023906488334".into() },
        );
        both_ways(
            ours::$response { details: Some(our_details()) },
            z::$response { details: Some(z_details()) },
        );
    )*};
}

#[test]
fn command_requests_and_responses() {
    command_messages!(
        DeactivateUserRequest => DeactivateUserResponse,
        ReactivateUserRequest => ReactivateUserResponse,
        LockUserRequest => LockUserResponse,
        UnlockUserRequest => UnlockUserResponse,
        DeleteUserRequest => DeleteUserResponse,
    );
}
