//! The protocol-level KurrentDB test server: a tonic server generated from the protos shipped
//! with the `kurrentdb` client, serving `Streams` and `ServerFeatures` over plain HTTP/2 on
//! 127.0.0.1.
//!
//! It runs on its own runtime thread so that [`TestServer::stop`] can drop it like a crashed
//! node: the listener and every open connection close at once, without a graceful goodbye.
//! [`TestServer::start_on`] brings it back on the same port with the same [`Log`].

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::log::Log;
use super::proto::event_store::client::server_features::{
    server_features_server, SupportedMethod, SupportedMethods,
};
use super::proto::event_store::client::streams::streams_server::StreamsServer;
use super::proto::event_store::client::Empty;
use super::streams::StreamsService;

/// The KurrentDB version the test server claims to be.
pub const SERVER_VERSION: &str = "24.10.0";

struct Features;

#[tonic::async_trait]
impl server_features_server::ServerFeatures for Features {
    async fn get_supported_methods(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        let service = "event_store.client.streams.streams";
        let methods = ["read", "append", "delete", "tombstone"]
            .into_iter()
            .map(|m| SupportedMethod {
                method_name: m.into(),
                service_name: service.into(),
                features: Vec::new(),
            })
            .collect();
        Ok(Response::new(SupportedMethods {
            methods,
            event_store_server_version: SERVER_VERSION.into(),
        }))
    }
}

/// A running test server.
pub struct TestServer {
    addr: SocketAddr,
    log: Log,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts an empty server on a free port.
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Log::new())
    }

    /// Starts a server on `addr` (port 0: any free port) serving `log`.
    pub fn start_on(addr: SocketAddr, log: Log) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let served = log.clone();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match bind_with_retry(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(listener.local_addr().map_err(|e| e.to_string()));
                let incoming = tokio_stream_of(listener);
                let server = tonic::transport::Server::builder()
                    .add_service(StreamsServer::new(StreamsService { log: served }))
                    .add_service(server_features_server::ServerFeaturesServer::new(Features))
                    .serve_with_incoming(incoming);
                tokio::select! {
                    _ = server => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime drops every connection task: the clients see the
            // connection reset, as with a crashed node.
            runtime.shutdown_background();
        });
        let addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("test server failed to start: {e}"),
            Err(e) => panic!("test server thread died: {e}"),
        };
        Self {
            addr,
            log,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection string for the `kurrentdb` client (insecure, single node).
    pub fn url(&self) -> String {
        format!("esdb://{}?tls=false", self.addr)
    }

    /// The log it serves (kept across restarts).
    pub fn log(&self) -> Log {
        self.log.clone()
    }

    /// Stops the server abruptly and returns its data, to start it again with.
    pub fn stop(mut self) -> (SocketAddr, Log) {
        self.shutdown();
        (self.addr, self.log.clone())
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Rebinding the port of a server that just stopped can briefly fail; retry for a while.
async fn bind_with_retry(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let mut attempt = 0;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if attempt < 50 => {
                attempt += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The accepted connections as the stream tonic serves.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((accepted, listener))
    })
}
