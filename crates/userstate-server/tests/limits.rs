//! SPEC.md's "Shutdown and limits" against a real server on a loopback port, with short limits:
//! the header timeout, the idle timeout (HTTP/1.1 and HTTP/2), the connection cap, the
//! shutdown grace, and gRPC health during the drain. Clients are raw sockets where the point is
//! what a well-behaved client would never do, and real clients otherwise.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use userstate::MemoryStore;
use userstate_server::ServerConfig;

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

async fn server(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_config(Arc::new(MemoryStore::new()), configure).await
}

/// `f`, or a panic naming `what` after `limit`.
async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"))
}

/// Reads one HTTP/1.1 answer (head and `content-length` body); returns its status line.
async fn read_answer(socket: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before the answer was complete: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text.lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

/// Waits until the server closes `socket` (EOF or reset), reading and ignoring anything sent.
async fn closed(socket: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    while let Ok(n) = socket.read(&mut chunk).await {
        if n == 0 {
            return;
        }
    }
}

/// Whether the server has closed `socket` within `wait`.
async fn closed_within(socket: &mut TcpStream, wait: Duration) -> bool {
    tokio::time::timeout(wait, closed(socket)).await.is_ok()
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let s = server(|c| {
        c.header_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut socket = TcpStream::connect(s.addr).await.unwrap();
    let start = Instant::now();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    within(Duration::from_secs(5), "the close", closed(&mut socket)).await;
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    // A connection that never sends a byte is closed as well.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    within(Duration::from_secs(5), "the close", closed(&mut silent)).await;
    s.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let s = server(|c| {
        c.header_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut socket = TcpStream::connect(s.addr).await.unwrap();
    socket.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_answer(&mut socket).await, "HTTP/1.1 200 OK");
    // Idle for longer than the header timeout: still open, and still served.
    assert!(!closed_within(&mut socket, Duration::from_millis(800)).await);
    socket.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_answer(&mut socket).await, "HTTP/1.1 200 OK");
    let answered = Instant::now();
    within(
        Duration::from_secs(6),
        "the idle close",
        closed(&mut socket),
    )
    .await;
    let idle = answered.elapsed();
    assert!(idle >= Duration::from_millis(1300), "closed after {idle:?}");
    s.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let s = server(|c| {
        c.header_timeout = Duration::from_secs(5);
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(format!("http://{}/healthz", s.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let answer = sender.send_request(request).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), hyper::Version::HTTP_2);
    drop(answer);
    let answered = Instant::now();
    let ended = within(Duration::from_secs(6), "the GOAWAY", connection).await;
    ended
        .unwrap()
        .expect("a clean close (GOAWAY), not an error");
    assert!(answered.elapsed() >= Duration::from_millis(800));
    s.stop().await;
}

#[tokio::test]
async fn past_max_connections_new_clients_wait_and_established_ones_are_served() {
    let s = server(|c| {
        c.max_connections = 2;
        c.header_timeout = Duration::from_secs(30);
    })
    .await;
    let mut established = TcpStream::connect(s.addr).await.unwrap();
    established.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_answer(&mut established).await, "HTTP/1.1 200 OK");
    // The second and last slot, held by a client that says nothing.
    let silent = TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third client connects (the kernel's backlog) but is not served while the cap holds.
    let mut waiting = TcpStream::connect(s.addr).await.unwrap();
    waiting.write_all(HEALTHZ).await.unwrap();
    let early = tokio::time::timeout(Duration::from_secs(1), read_answer(&mut waiting)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    // The established client keeps being served.
    established.write_all(HEALTHZ).await.unwrap();
    let again = within(
        Duration::from_secs(2),
        "the established client's answer",
        async { read_answer(&mut established).await },
    )
    .await;
    assert_eq!(again, "HTTP/1.1 200 OK");
    // A slot frees: the waiting client is served.
    drop(silent);
    let served = within(
        Duration::from_secs(5),
        "the waiting client's answer",
        async { read_answer(&mut waiting).await },
    )
    .await;
    assert_eq!(served, "HTTP/1.1 200 OK");
    s.stop().await;
}

#[tokio::test]
async fn the_drain_ends_after_the_shutdown_grace() {
    let mut s = server(|c| c.shutdown_grace = Duration::from_millis(500)).await;
    // A request in flight that never completes: its body never arrives.
    let mut upload = TcpStream::connect(s.addr).await.unwrap();
    upload
        .write_all(
            format!(
                "POST /v2/users/human HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"user"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    s.begin_shutdown();
    within(Duration::from_secs(5), "the server's stop", s.stop()).await;
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    within(Duration::from_secs(1), "the close", closed(&mut upload)).await;
}

#[tokio::test]
async fn grpc_health_is_serving_then_not_serving_once_the_drain_begins() {
    let mut s = server(|c| c.shutdown_grace = Duration::from_secs(30)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "zitadel.user.v2.UserService"] {
        let checked = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(checked.into_inner().status, ServingStatus::Serving as i32);
    }
    let mut watch = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let start = Instant::now();
    s.begin_shutdown();
    let next = within(Duration::from_secs(5), "NOT_SERVING", watch.message()).await;
    assert_eq!(
        next.unwrap().expect("a status").status,
        ServingStatus::NotServing as i32
    );
    // The watch then ends, so it does not hold the drain until the grace runs out.
    within(Duration::from_secs(5), "the server's stop", s.stop()).await;
    assert!(start.elapsed() < Duration::from_secs(10));
}
