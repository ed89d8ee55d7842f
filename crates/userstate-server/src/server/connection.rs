//! One accepted connection: served by hyper (HTTP/1.1 or HTTP/2, by the client's first bytes),
//! watched for the header and idle timeouts, and shut down gracefully when the server drains.
//!
//! The timeouts are ours rather than hyper's `http1::Builder::header_read_timeout`: hyper starts
//! that timer again as soon as a keep-alive connection goes idle, so it would close every idle
//! connection after the header timeout (10 s) instead of the idle timeout (60 s) of SPEC.md,
//! and it does nothing for HTTP/2. Here a connection's clock has three readings, all kept in
//! atomics the requests touch (no timer per request):
//! - a request head must be complete within the header timeout, counted from the accept (the
//!   first request, either protocol) or from the first byte after the previous answer
//!   (HTTP/1.1 keep-alive); past it the socket is closed;
//! - with no request in flight (a request is in flight from its head until its response body
//!   was written or dropped, so a streaming answer is not idle) for the idle timeout, the
//!   connection is shut down gracefully (HTTP/1.1: closed; HTTP/2: GOAWAY);
//! - on the server's drain signal, likewise, with no bound of its own: the server's shutdown
//!   grace bounds the drain.
//!
//! It is not the place for the connection cap or the shutdown grace (`server`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, Version};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::caller::ClientAddr;
use crate::grpc::ByContentType;

/// How long HTTP/2 waits for the answer to its keep-alive ping before closing the connection
/// (hyper's default): a client that vanished without a FIN is found even mid-stream.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The timeouts every connection is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// A request head must be complete within this.
    pub header: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle: Duration,
}

/// The hyper builder for every connection: both protocols, and HTTP/2 keep-alive pings every
/// idle timeout (they find dead peers; they do not count as activity).
pub(crate) fn builder(timeouts: Timeouts) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.idle)
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}

/// Serves one connection until it ends, is timed out, or has drained after `drain` turned true.
pub(crate) async fn serve(
    builder: &Builder<TokioExecutor>,
    stream: TcpStream,
    app: ByContentType,
    timeouts: Timeouts,
    mut drain: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let client = stream.peer_addr().ok().map(ClientAddr);
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = ConnService {
        app,
        activity: activity.clone(),
        client,
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Graceful shutdown was asked for (drain or idle); after an idle one, the socket is
    // dropped at `close_by` if it has not closed (a drain is bounded by the server's grace).
    let mut closing = false;
    let mut close_by = None;
    let mut draining = *drain.borrow();
    loop {
        if draining && !closing {
            conn.as_mut().graceful_shutdown();
            closing = true;
        }
        let wake = activity.next_check(timeouts, close_by);
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = drain.changed(), if !draining => {
                // A closed channel (the server is gone) drains too.
                draining = changed.is_err() || *drain.borrow();
            }
            () = tokio::time::sleep_until(wake) => match activity.expired(timeouts, closing, close_by, Instant::now()) {
                None => {}
                Some(Expiry::Header) => {
                    debug!("no complete request head within the header timeout; closing");
                    return;
                }
                Some(Expiry::Idle) => {
                    debug!("idle connection; closing");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    close_by = Some(Instant::now() + timeouts.header);
                }
                Some(Expiry::Closing) => {
                    debug!("idle connection did not close in time; dropping it");
                    return;
                }
            },
        }
    }
}

/// "Not set" in the millisecond fields of [`Activity`].
const NONE: u64 = u64::MAX;

/// What a connection's requests did, in milliseconds since its accept.
struct Activity {
    start: Instant,
    /// Requests from head to the end (or drop) of their response body.
    in_flight: AtomicUsize,
    /// When the last request finished (the accept before the first).
    idle_since: AtomicU64,
    /// When the head being read began: the accept for the first request, the first byte read
    /// while idle for the next ones on HTTP/1.1; [`NONE`] while no head is being read.
    head_since: AtomicU64,
    /// A request came over HTTP/2: bytes read while idle are pings and window updates, not a
    /// head.
    http2: AtomicBool,
}

/// Which limit a connection passed.
#[derive(Debug, PartialEq, Eq)]
enum Expiry {
    Header,
    Idle,
    Closing,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// The header and idle deadlines now (none while a request is in flight).
    fn deadlines(&self, timeouts: Timeouts) -> (Option<Instant>, Option<Instant>) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return (None, None);
        }
        let head = match self.head_since.load(Ordering::Relaxed) {
            NONE => None,
            ms => Some(self.at(ms) + timeouts.header),
        };
        let idle = self.at(self.idle_since.load(Ordering::Relaxed)) + timeouts.idle;
        (head, Some(idle))
    }

    /// When to look again: the nearest deadline, and at least every header timeout (a head
    /// may begin while we sleep; a busy connection may go idle).
    fn next_check(&self, timeouts: Timeouts, close_by: Option<Instant>) -> Instant {
        let (head, idle) = self.deadlines(timeouts);
        let poll = Instant::now() + timeouts.header.min(timeouts.idle);
        [head, idle, close_by, Some(poll)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(poll)
    }

    /// The limit passed at `now`, if any (no idle limit once `closing`).
    fn expired(
        &self,
        timeouts: Timeouts,
        closing: bool,
        close_by: Option<Instant>,
        now: Instant,
    ) -> Option<Expiry> {
        if close_by.is_some_and(|t| t <= now) {
            return Some(Expiry::Closing);
        }
        let (head, idle) = self.deadlines(timeouts);
        if head.is_some_and(|t| t <= now) {
            Some(Expiry::Header)
        } else if !closing && idle.is_some_and(|t| t <= now) {
            Some(Expiry::Idle)
        } else {
            None
        }
    }

    /// Bytes arrived: while idle on HTTP/1.1 they begin the next head.
    fn on_read(&self) {
        if self.head_since.load(Ordering::Relaxed) == NONE
            && self.in_flight.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }
}

/// A request in flight, from its head to the end of its response body.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(NONE, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.0.now_ms();
        self.0.idle_since.fetch_max(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The application as hyper calls it on this connection: each request is [`Busy`] until its
/// response body is done.
#[derive(Clone)]
struct ConnService {
    app: ByContentType,
    activity: Arc<Activity>,
    /// The peer, for the log lines of refused requests.
    client: Option<ClientAddr>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.version() == Version::HTTP_2 {
            self.activity.http2.store(true, Ordering::Relaxed);
        }
        let busy = Busy::new(self.activity.clone());
        let mut req = req.map(Body::new);
        if let Some(client) = self.client {
            req.extensions_mut().insert(client);
        }
        TrackedFuture {
            inner: self.app.dispatch(req),
            busy: Some(busy),
        }
    }
}

/// The application's answer, with the request's [`Busy`] handed to its body.
struct TrackedFuture {
    inner: crate::grpc::DispatchFuture,
    busy: Option<Busy>,
}

impl Future for TrackedFuture {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.inner.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(never)) => match never {},
        };
        let busy = self.busy.take();
        Poll::Ready(Ok(response.map(|body| Tracked { body, _busy: busy })))
    }
}

/// A response body that keeps its request [`Busy`] until it is written or dropped.
struct Tracked {
    body: Body,
    _busy: Option<Busy>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    /// `a`'s verdict `secs` seconds after its accept.
    fn at(a: &Activity, secs: f64) -> Option<Expiry> {
        a.expired(T, false, None, a.start + Duration::from_secs_f64(secs))
    }

    /// A connection that answered a request `secs` after its accept and is idle since.
    fn answered_at(secs: u64) -> Activity {
        let a = Activity::new();
        a.head_since.store(NONE, Ordering::Relaxed);
        a.idle_since.store(secs * 1000, Ordering::Relaxed);
        a
    }

    #[test]
    fn a_new_connection_must_send_a_head_within_the_header_timeout() {
        let a = Activity::new();
        assert_eq!(at(&a, 9.9), None);
        assert_eq!(at(&a, 10.0), Some(Expiry::Header));
    }

    #[test]
    fn an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_timeout() {
        let a = answered_at(1);
        assert_eq!(at(&a, 60.9), None);
        assert_eq!(at(&a, 61.0), Some(Expiry::Idle));
        let close_by = Some(a.start + Duration::from_secs(70));
        let later = a.start + Duration::from_secs(65);
        assert_eq!(a.expired(T, true, close_by, later), None, "closing already");
        let late = a.start + Duration::from_secs(70);
        assert_eq!(a.expired(T, true, close_by, late), Some(Expiry::Closing));
    }

    #[test]
    fn a_head_begun_while_idle_must_end_within_the_header_timeout() {
        let a = answered_at(1);
        a.head_since.store(5000, Ordering::Relaxed);
        assert_eq!(at(&a, 14.9), None);
        assert_eq!(at(&a, 15.0), Some(Expiry::Header));
    }

    #[test]
    fn a_request_in_flight_is_never_timed_out() {
        let a = Arc::new(Activity::new());
        let busy = Busy::new(a.clone());
        assert_eq!(a.head_since.load(Ordering::Relaxed), NONE);
        assert_eq!(at(&a, 600.0), None);
        drop(busy);
        assert_eq!(at(&a, 59.0), None);
    }

    #[test]
    fn bytes_read_while_idle_begin_a_head_on_http1_only() {
        let a = answered_at(0);
        a.on_read();
        assert_ne!(a.head_since.load(Ordering::Relaxed), NONE);
        let h2 = answered_at(0);
        h2.http2.store(true, Ordering::Relaxed);
        h2.on_read();
        assert_eq!(
            h2.head_since.load(Ordering::Relaxed),
            NONE,
            "pings are no head"
        );
    }
}
