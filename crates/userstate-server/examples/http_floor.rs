//! The HTTP floor of this machine: what hyper and axum alone answer per second under the load
//! of `bench/wrk/run.sh`, with no engine, store, token hashing, tracing or metrics behind them.
//! A figure of `userstate serve` is read beside it (docs/PERFORMANCE.md): the server cannot
//! answer faster than this on the same cores, with wrk beside it.
//!
//! It takes `serve`'s arguments, so the wrk script drives it as it drives `userstate`:
//!
//! ```sh
//! cargo build --release -p userstate-server --example http_floor
//! BIN=target/release/examples/http_floor bash bench/wrk/run.sh memory
//! ```
//!
//! Every `POST` whose bearer token is the one written to `DATA/admin-token` is answered `200`
//! with a v2 `details` body of the size `serve` writes; any other request `401`. The runtime,
//! allocator, connection handling (hyper-util's HTTP/1.1 + HTTP/2 builder, `TCP_NODELAY`) and
//! router are those `serve` uses.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The token every request must carry, as `serve` writes its admin token.
const TOKEN: &str = "floor-token";

/// A v2 answer of `lock`/`unlock` as `serve` writes it (same fields, same length).
const DETAILS: &str = r#"{"details":{"sequence":"2","changeDate":"2026-12-06T21:00:00.000000Z","resourceOwner":"bench"}}"#;

#[tokio::main]
async fn main() {
    let (data, listen) = arguments();
    std::fs::create_dir_all(&data).expect("create the data directory");
    std::fs::write(data.join("admin-token"), TOKEN).expect("write the token");
    let bearer: &'static str = Box::leak(format!("Bearer {TOKEN}").into_boxed_str());
    let app = Router::new()
        .route("/v2/users/human", post(answer))
        .route("/v2/users/{user_id}/{verb}", post(answer))
        .with_state(bearer);
    let listener = TcpListener::bind(listen).await.expect("bind");
    println!(
        "listening on http://{}",
        listener.local_addr().expect("address")
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req: axum::http::Request<Incoming>| {
            app.clone().oneshot(req.map(Body::new))
        });
        tokio::spawn(async move {
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The one handler: the token compared as bytes, a fixed body.
async fn answer(State(bearer): State<&'static str>, headers: HeaderMap) -> impl IntoResponse {
    if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(bearer.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], DETAILS).into_response()
}

/// `serve`'s `--data DIR` and `--listen ADDR`; its other arguments are taken and ignored.
/// Read by hand rather than with clap: clap would have to declare every flag of `serve` only
/// to ignore it, and this crate does not depend on clap.
fn arguments() -> (PathBuf, SocketAddr) {
    let mut data = std::env::temp_dir().join("userstate-http-floor");
    let mut listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = args.next().expect("--data DIR").into(),
            "--listen" => {
                listen = args
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("--listen ADDR")
            }
            _ => {}
        }
    }
    (data, listen)
}
