//! `docs/openapi.json` is the document generated from the code. Regenerate it with
//! `UPDATE_OPENAPI=1 cargo test -p userstate-server --test openapi`.

use std::path::PathBuf;

#[test]
fn checked_in_openapi_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = format!("{}\n", userstate_server::openapi::openapi_json());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is out of date; run UPDATE_OPENAPI=1 cargo test -p userstate-server --test openapi"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/v2/users/human",
        "/v2/users/{userId}",
        "/v2/users/{userId}/deactivate",
        "/v2/users/{userId}/reactivate",
        "/v2/users/{userId}/lock",
        "/v2/users/{userId}/unlock",
        "/v3alpha/users/{userId}",
        "/v3alpha/users/{userId}/deactivate",
        "/v3alpha/users/{userId}/reactivate",
        "/v3alpha/users/{userId}/lock",
        "/v3alpha/users/{userId}/unlock",
    ] {
        assert!(paths.contains_key(route), "{route} missing");
    }
}
