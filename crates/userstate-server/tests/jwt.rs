//! JWT bearer tokens through the real server (SPEC.md "Operator interface"): keys generated
//! here (Ed25519 and P-256 with ring), a JWKS file or a JWKS URL served from loopback; good
//! tokens are served, and every bad one is 401 with SPEC.md's error body.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};
use userstate::MemoryStore;
use userstate_server::jwt::{JwksSource, JwtAuthenticator, JwtConfig, RefreshPolicy};
use userstate_server::Chain;

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "userstate";

/// A signing key made for the test: its private half (PKCS#8) and its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    pkcs8: Vec<u8>,
    jwk: Value,
    public: Vec<u8>,
}

impl TestKey {
    fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&public)});
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk,
            public,
        }
    }

    fn p256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // Uncompressed point: 0x04, x (32 bytes), y (32 bytes).
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..])});
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk,
            public,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_der(&self.pkcs8),
            _ => EncodingKey::from_ec_der(&self.pkcs8),
        }
    }

    /// A token of `claims` signed with this key (header `alg` and `kid` its own).
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of an operator of `acme` on instance `i1` (as common's ACME token), valid now.
fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub,
        "iat": now(), "exp": now() + 600,
        "urn:userstate:grants": {
            "instance": "i1",
            "orgGrants": {"acme": ["user.read", "user.write", "user.delete"]}
        }
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn config(jwks: JwksSource, refresh: RefreshPolicy) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks,
        refresh,
    }
}

/// A server accepting common's static tokens and JWTs of `jwt`.
async fn server_with(jwt: JwtAuthenticator) -> TestServer {
    TestServer::start_config(Arc::new(MemoryStore::new()), move |config| {
        config.authenticator = Chain::new()
            .with(authenticator().shared())
            .with(Arc::new(jwt))
            .into();
    })
    .await
}

/// An admin adds `u1` in `acme` (static token), so JWT callers have a user to read.
async fn with_user(s: &TestServer) {
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
}

fn assert_401(answer: &Answer, id: &str, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.text);
    assert_error(answer, 401, 16, id, "Errors.Token.Invalid");
}

#[tokio::test]
async fn jwts_from_a_jwks_file_are_verified_and_bad_ones_are_401() {
    let ed = TestKey::ed25519("ed-1");
    let ec = TestKey::p256("ec-1");
    let stranger = TestKey::ed25519("not-in-jwks");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&ed, &ec])).unwrap();
    let jwt = JwtAuthenticator::load(config(JwksSource::File(path), RefreshPolicy::default()))
        .await
        .unwrap();
    let s = server_with(jwt).await;
    with_user(&s).await;

    // Good tokens of both algorithms: the subject's grants apply (acme: read, write, delete).
    for key in [&ed, &ec] {
        let token = key.sign(&claims("jwt-operator"));
        let read = s.get("/v2/users/u1", &token).await;
        assert_eq!(read.status, 200, "{:?}: {}", key.alg, read.text);
    }
    let token = ed.sign(&claims("jwt-operator"));
    let lock = s.post("/v2/users/u1/lock", &token).await;
    assert_eq!(lock.status, 200, "{}", lock.text);
    // The subject is the creator of the event.
    let history = s.get("/v2/users/u1/history", ADMIN).await;
    assert!(history.text.contains("jwt-operator"), "{}", history.text);
    // Grants are the claim's: not globex, not instance i2.
    let globex = s
        .call(
            reqwest::Method::POST,
            "/v2/users/human",
            Some(&token),
            Some(json!({"userId": "g1", "username": "g1", "organization": {"orgId": "globex"}})),
        )
        .await;
    assert_eq!(globex.status, 403, "{}", globex.text);

    let good = claims("jwt-operator");
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            ed.sign(&with(good.clone(), "exp", json!(now() - 3600))),
        ),
        (
            "not yet valid",
            ed.sign(&with(good.clone(), "nbf", json!(now() + 3600))),
        ),
        (
            "wrong issuer",
            ec.sign(&with(good.clone(), "iss", json!("https://evil.example"))),
        ),
        (
            "wrong audience",
            ed.sign(&with(good.clone(), "aud", json!("someone-else"))),
        ),
        (
            "no exp",
            ed.sign(&{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
        ),
        (
            "no grants claim",
            ed.sign(&{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("urn:userstate:grants");
                c
            }),
        ),
        ("unknown kid", stranger.sign(&good)),
        ("alg none", {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"ed-1"}"#);
            let payload = URL_SAFE_NO_PAD.encode(good.to_string());
            format!("{header}.{payload}.")
        }),
        ("tampered signature", {
            let token = ed.sign(&good);
            let (rest, signature) = token.rsplit_once('.').unwrap();
            let mut sig = signature.as_bytes().to_vec();
            sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
            format!("{rest}.{}", String::from_utf8(sig).unwrap())
        }),
        ("tampered payload", {
            let token = ed.sign(&good);
            let parts: Vec<&str> = token.split('.').collect();
            let grants = with(good.clone(), "sub", json!("someone-else"));
            let payload = URL_SAFE_NO_PAD.encode(grants.to_string());
            format!("{}.{payload}.{}", parts[0], parts[2])
        }),
        ("HS256 signed with the Ed25519 public key", {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("ed-1".into());
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&ed.public)).unwrap()
        }),
        ("HS256 signed with the P-256 public key", {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("ec-1".into());
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&ec.public)).unwrap()
        }),
        ("ES256 header on the EdDSA key", {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("ed-1".into());
            jsonwebtoken::encode(&header, &good, &ec.encoding_key()).unwrap()
        }),
    ];
    for (what, token) in &cases {
        let answer = s.get("/v2/users/u1", token).await;
        assert_401(&answer, "AUTH-invalid-token", what);
        assert!(
            !answer.text.contains(token.as_str()),
            "{what}: the token is echoed"
        );
        // Before the body is decoded, as every 401: a command with garbage is 401 too.
        let add = s
            .call(
                reqwest::Method::POST,
                "/v2/users/human",
                Some(token),
                Some(json!("garbage")),
            )
            .await;
        assert_eq!(add.status, 401, "{what}: {}", add.text);
    }
    // Static tokens keep working next to JWTs; a non-JWT unknown token is still "unknown".
    assert_eq!(s.get("/v2/users/u1", ADMIN).await.status, 200);
    assert_401(
        &s.get("/v2/users/u1", "not-a-token").await,
        "AUTH-unknown-token",
        "unknown",
    );
    s.stop().await;
}

#[tokio::test]
async fn a_jwt_is_authenticated_over_grpc_web_and_connect_too() {
    let ed = TestKey::ed25519("ed-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&ed])).unwrap();
    let jwt = JwtAuthenticator::load(config(JwksSource::File(path), RefreshPolicy::default()))
        .await
        .unwrap();
    let s = server_with(jwt).await;
    with_user(&s).await;
    let connect = |token: String| {
        s.client
            .post(s.url("/zitadel.user.v2.UserService/GetUserByID"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(r#"{"userId":"u1"}"#)
    };
    let ok = TestServer::answer(connect(ed.sign(&claims("jwt-operator")))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let expired = ed.sign(&with(claims("jwt-operator"), "exp", json!(now() - 3600)));
    let refused = TestServer::answer(connect(expired)).await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert_eq!(refused.body["code"], "unauthenticated", "{}", refused.text);

    // gRPC-web (HTTP/1.1): GetUserByIdRequest { user_id: "u1" } in one data frame.
    let grpc_web = |token: String| {
        let mut frame = vec![0u8, 0, 0, 0, 4];
        frame.extend_from_slice(&[0x0a, 0x02, b'u', b'1']);
        s.client
            .post(s.url("/zitadel.user.v2.UserService/GetUserByID"))
            .bearer_auth(token)
            .header("content-type", "application/grpc-web+proto")
            .body(frame)
    };
    let ok = grpc_web(ed.sign(&claims("jwt-operator")))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("grpc-status").is_none_or(|v| v == "0"));
    let body = ok.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("grpc-status:0"));
    let expired = ed.sign(&with(claims("jwt-operator"), "exp", json!(now() - 3600)));
    let refused = grpc_web(expired).send().await.unwrap();
    assert_eq!(refused.headers()["grpc-status"], "16");
    s.stop().await;
}

/// A JWKS served from loopback: the current document, and how often it was fetched.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(initial: String) -> JwksServer {
    let document = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (doc, count) = (document.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (doc, count) = (doc.clone(), count.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let body = doc.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    JwksServer {
        url,
        document,
        fetches,
    }
}

#[tokio::test]
async fn a_jwks_url_is_cached_refreshed_on_an_unknown_kid_with_a_rate_limit_and_rotates() {
    let old = TestKey::ed25519("2026-01");
    let new = TestKey::p256("2026-02");
    let idp = jwks_server(jwks(&[&old])).await;
    let refresh = RefreshPolicy {
        max_age: Duration::from_secs(3600),
        min_interval: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
    };
    let jwt = JwtAuthenticator::load(config(JwksSource::Url(idp.url.clone()), refresh))
        .await
        .unwrap();
    assert_eq!(jwt.key_ids(), ["2026-01"]);
    let s = server_with(jwt).await;
    with_user(&s).await;
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);

    // Cached: many requests, no new fetch.
    for _ in 0..5 {
        let read = s.get("/v2/users/u1", &old.sign(&claims("op"))).await;
        assert_eq!(read.status, 200, "{}", read.text);
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);

    // The identity provider rotates: the new key appears (the old one stays a while).
    *idp.document.lock().unwrap() = jwks(&[&old, &new]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let read = s.get("/v2/users/u1", &new.sign(&claims("op"))).await;
    assert_eq!(read.status, 200, "new kid after refresh: {}", read.text);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);

    // Unknown kids do not make the server hammer the provider: at most one fetch per interval.
    let stranger = TestKey::ed25519("forged");
    for _ in 0..10 {
        let read = s.get("/v2/users/u1", &stranger.sign(&claims("op"))).await;
        assert_401(&read, "AUTH-invalid-token", "unknown kid");
    }
    assert!(
        idp.fetches.load(Ordering::SeqCst) <= 3,
        "fetched {} times",
        idp.fetches.load(Ordering::SeqCst)
    );

    // The old key is retired: after the next refresh its tokens are refused.
    *idp.document.lock().unwrap() = jwks(&[&new]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let retired = s
        .get(
            "/v2/users/u1",
            &TestKey::ed25519("2026-03").sign(&claims("op")),
        )
        .await;
    assert_401(&retired, "AUTH-invalid-token", "unknown kid refreshes");
    let old_token = s.get("/v2/users/u1", &old.sign(&claims("op"))).await;
    assert_401(&old_token, "AUTH-invalid-token", "retired key");
    let read = s.get("/v2/users/u1", &new.sign(&claims("op"))).await;
    assert_eq!(read.status, 200, "{}", read.text);
    s.stop().await;
}

#[tokio::test]
async fn a_jwks_without_usable_keys_or_unreachable_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#,
    )
    .unwrap();
    let err = JwtAuthenticator::load(config(JwksSource::File(path), RefreshPolicy::default()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no RS256, ES256 or EdDSA"),
        "{err}"
    );
    let missing = JwksSource::File(dir.path().join("absent.json"));
    assert!(
        JwtAuthenticator::load(config(missing, RefreshPolicy::default()))
            .await
            .is_err()
    );
}

/// An RSA key made by the `openssl` command for this test (ring cannot generate RSA keys):
/// its PKCS#1 DER private key and its public JWK.
fn rsa_key(dir: &std::path::Path, kid: &str) -> (Vec<u8>, Value) {
    let pem = dir.join(format!("{kid}.pem"));
    let der = dir.join(format!("{kid}.der"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl command (RSA keys for the RS256 test)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (pem_s, der_s) = (pem.to_str().unwrap(), der.to_str().unwrap());
    openssl(&["genrsa", "-out", pem_s, "2048"]);
    openssl(&[
        "rsa",
        "-in",
        pem_s,
        "-traditional",
        "-outform",
        "DER",
        "-out",
        der_s,
    ]);
    let modulus = openssl(&["rsa", "-in", pem_s, "-noout", "-modulus"]);
    let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
    let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"});
    (std::fs::read(der).unwrap(), jwk)
}

#[tokio::test]
async fn rs256_tokens_of_an_rsa_jwk_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (der, jwk) = rsa_key(dir.path(), "rsa-1");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [jwk.clone()]}).to_string()).unwrap();
    let jwt = JwtAuthenticator::load(config(JwksSource::File(path), RefreshPolicy::default()))
        .await
        .unwrap();
    let s = server_with(jwt).await;
    with_user(&s).await;
    let sign = |alg: Algorithm, claims: &Value, key: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    };
    let key = EncodingKey::from_rsa_der(&der);
    let good = sign(Algorithm::RS256, &claims("rsa-op"), &key);
    let read = s.get("/v2/users/u1", &good).await;
    assert_eq!(read.status, 200, "{}", read.text);
    let expired = sign(
        Algorithm::RS256,
        &with(claims("rsa-op"), "exp", json!(now() - 3600)),
        &key,
    );
    assert_401(
        &s.get("/v2/users/u1", &expired).await,
        "AUTH-invalid-token",
        "expired RS256",
    );
    // Another RSA algorithm with the same key, and HMAC keyed with the public modulus or JWK.
    let rs512 = sign(Algorithm::RS512, &claims("rsa-op"), &key);
    assert_401(
        &s.get("/v2/users/u1", &rs512).await,
        "AUTH-invalid-token",
        "RS512 on an RS256 key",
    );
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    for secret in [n, jwk.to_string().into_bytes()] {
        let hs = sign(
            Algorithm::HS256,
            &claims("rsa-op"),
            &EncodingKey::from_secret(&secret),
        );
        assert_401(
            &s.get("/v2/users/u1", &hs).await,
            "AUTH-invalid-token",
            "HS256 keyed with the RSA public key",
        );
    }
    s.stop().await;
}
