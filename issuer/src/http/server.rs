//! The HTTP/1.1 server loop: accepts connections within a cap and serves each with hyper, under the limits of
//! [`HttpSettings`], so that no client can hold the server's connections or file descriptors:
//!
//! - **Header timeout.** A connection must deliver a complete request head within `header_timeout` of connecting, or
//!   of the first byte of a later request on a kept-alive connection; else it is closed (slowloris).
//! - **Keep-alive timeout.** A connection idle between requests for `keepalive_timeout` is closed gracefully.
//! - **Body timeout.** Enforced per request by `guard` (408 `body_timeout`).
//! - **Connection cap.** At `max_connections` open connections, accepting one more first closes the connection that
//!   is idle the longest (between requests, or still sending its head), as nginx reuses keep-alive connections
//!   when it runs short; a new client is never locked out by idle ones. When none is idle, the new one is closed.
//! - **Accept errors** (out of file descriptors) close an idle connection and back off from 10 ms to 1 s instead of
//!   spinning; the log says so at most once a second.
//!
//! A connection's phase (sending a head, handling requests, idle) is tracked from what hyper does with it: bytes
//! read while idle start a head, a call of the service ends it, and the end of the last request in flight starts
//! the idle time. The connection's task compares the phase with its deadline once a [`TICK`], not on every change:
//! a request costs two uncontended lock operations and no wake-up, and deadlines hold to within a tick.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use futures_util::FutureExt as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::metrics::Connections;
use crate::config::HttpSettings;

/// How often a connection checks its deadline.
const TICK: Duration = Duration::from_millis(500);

/// The limits the loop enforces, as durations.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

impl From<&HttpSettings> for Limits {
    fn from(s: &HttpSettings) -> Self {
        Limits {
            max_connections: s.max_connections,
            header_timeout: Duration::from_secs(s.header_timeout_secs),
            keepalive_timeout: Duration::from_secs(s.keepalive_timeout_secs),
        }
    }
}

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A request head is arriving (or the connection is new and has sent nothing), since this instant.
    Head(Instant),
    /// This many requests are being handled.
    Busy(usize),
    /// Waiting for the next request since this instant.
    Idle(Instant),
}

/// One open connection as the loop sees it.
#[derive(Debug)]
struct Conn {
    id: u64,
    phase: Mutex<Phase>,
    /// Set and woken when the loop wants the connection closed (to make room).
    evicted: AtomicBool,
    evict: Notify,
}

impl Conn {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn on_read(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
        }
    }

    /// hyper called the service: a head arrived in full.
    fn begin_request(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        };
    }

    /// A request was answered.
    fn end_request(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
    }

    /// When the connection must be closed if nothing changes, and whether gracefully.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Close)> {
        match *self.phase() {
            Phase::Head(since) => Some((since + limits.header_timeout, Close::Now)),
            Phase::Idle(since) => Some((since + limits.keepalive_timeout, Close::Gracefully)),
            Phase::Busy(_) => None,
        }
    }

    /// Whether it may be closed to make room: no request is being handled, and it was not picked before.
    fn evictable_since(&self) -> Option<Instant> {
        if self.evicted.load(Ordering::Relaxed) {
            return None;
        }
        match *self.phase() {
            Phase::Head(since) | Phase::Idle(since) => Some(since),
            Phase::Busy(_) => None,
        }
    }
}

/// How a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// Drop it (a head that did not arrive in time: there is no request to finish).
    Now,
    /// Let hyper finish what it is doing and close (an idle keep-alive connection closes at once).
    Gracefully,
}

/// Takes a connection out of the registry when its task ends, however it ends (also by a panic).
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// Ends a request's busy time when the request is answered, also if its handler is dropped.
struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// The open connections.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// What `GET /metrics` shows of them.
    counts: Connections,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            phase: Mutex::new(Phase::Head(Instant::now())),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        self.lock().insert(id, conn.clone());
        self.counts.open.inc();
        conn
    }

    fn remove(&self, id: u64) {
        if self.lock().remove(&id).is_some() {
            self.counts.open.dec();
        }
    }

    /// Whether a new connection may be served: below the cap, or after telling the longest-idle connection to
    /// close.
    fn make_room(&self, max: usize) -> bool {
        let open = self.lock().len();
        open < max || self.evict_one()
    }

    /// Tells the connection idle the longest to close; `false` when none is idle.
    fn evict_one(&self) -> bool {
        let conns = self.lock();
        let oldest = conns.values().filter_map(|c| c.evictable_since().map(|since| (since, c))).min_by_key(|(s, _)| *s);
        match oldest {
            Some((_, conn)) => {
                conn.evicted.store(true, Ordering::Relaxed);
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A TCP stream that tells its connection when bytes arrive.
struct TrackedStream {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for TrackedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `router` on `listener` under `settings` until `shutdown` completes; then stops accepting, lets every
/// connection finish its request in flight, and returns.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    counts: Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Limits::from(settings);
    let registry = Arc::new(Registry { counts, ..Registry::default() });
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = Duration::ZERO;
    let mut refused_logged: Option<Instant> = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    if !registry.make_room(limits.max_connections) {
                        // Every connection is handling a request: this one waits for nothing, it is closed.
                        if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!(max = limits.max_connections, "connection limit reached and every connection is busy; closing new connections");
                            refused_logged = Some(Instant::now());
                        }
                        registry.counts.refused.inc();
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let conn = registry.add();
                    // Made here, not in the task: a task dropped before its first poll still takes its connection
                    // out (and the open-connections gauge down).
                    let registered = Registered { registry: registry.clone(), id: conn.id };
                    let task = run_connection(stream, peer, router.clone(), limits, conn, registered, stopped.clone());
                    tasks.spawn(task);
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    // Out of file descriptors (or memory): free an idle connection's and wait before trying again.
                    registry.evict_one();
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "cannot accept connections; closing an idle one and backing off");
                        refused_logged = Some(Instant::now());
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Errors of one connection that was gone before it was accepted; the next accept may well succeed.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

/// Serves one connection until it ends, is closed by a deadline, is evicted, or the server stops.
async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    conn: Arc<Conn>,
    _registered: Registered,
    mut stopped: watch::Receiver<bool>,
) {
    let io = TokioIo::new(TrackedStream { inner: stream, conn: conn.clone() });
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        service_conn.begin_request();
        let guard = RequestGuard(service_conn.clone());
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            // A panicking handler is answered 500 (and logged); the connection and the server go on.
            let response = std::panic::AssertUnwindSafe(router.oneshot(request)).catch_unwind().await;
            drop(guard);
            match response {
                Ok(response) => response,
                Err(_) => {
                    tracing::error!(%peer, "a request handler panicked; answered 500");
                    let error = super::ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        super::ErrorCode::InternalError,
                        "internal error; the issuer logged the details",
                    );
                    Ok(axum::response::IntoResponse::into_response(error))
                }
            }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    let mut connection = pin!(connection);
    let mut closing = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                break;
            }
            () = conn.evict.notified() => {
                if closing || matches!(*conn.phase(), Phase::Head(_)) {
                    break;
                }
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick() => match conn.deadline(&limits) {
                Some((at, _)) if Instant::now() < at => {}
                None => {}
                Some((_, Close::Gracefully)) if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                // A head that did not arrive in time, or a graceful close that did not finish within a tick.
                Some(_) => break,
            },
            Ok(()) = stopped.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Raises the soft open-file limit to the hard limit and returns the limit now in force (`None` where it cannot be
/// read). Each connection holds a file descriptor.
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            None
        }
    }
}

/// File descriptors kept free of connections: the database, the key ring, logs.
pub(crate) const RESERVED_FILES: u64 = 64;

/// `max_connections` lowered to fit an open-file limit, keeping [`RESERVED_FILES`] for everything else.
pub(crate) fn fit_connections(max_connections: usize, open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX).max(1);
            max_connections.min(room)
        }
        None => max_connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_open_file_limit() {
        assert_eq!(fit_connections(4096, Some(1024)), 960);
        assert_eq!(fit_connections(100, Some(1_048_576)), 100);
        assert_eq!(fit_connections(4096, Some(10)), 1);
        assert_eq!(fit_connections(4096, None), 4096);
    }

    #[tokio::test]
    async fn the_longest_idle_connection_is_evicted_and_busy_ones_never() {
        let registry = Registry::default();
        let (a, b, c) = (registry.add(), registry.add(), registry.add());
        a.begin_request();
        b.begin_request();
        b.end_request(); // idle since now
        c.begin_request();
        assert!(registry.make_room(4), "below the cap");
        assert!(registry.make_room(3), "b is idle");
        assert!(b.evicted.load(Ordering::Relaxed) && !a.evicted.load(Ordering::Relaxed));
        assert!(!registry.make_room(3), "a and c are busy, b was picked already");
        c.end_request();
        assert!(registry.make_room(3));
        assert!(c.evicted.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn bytes_on_an_idle_connection_start_the_header_clock() {
        let limits = Limits {
            max_connections: 1,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
        };
        let registry = Registry::default();
        let conn = registry.add();
        assert!(matches!(conn.deadline(&limits), Some((_, Close::Now))), "a new connection owes a head");
        conn.begin_request();
        assert_eq!(conn.deadline(&limits), None, "no deadline while a request is handled");
        conn.end_request();
        assert!(matches!(conn.deadline(&limits), Some((_, Close::Gracefully))));
        conn.on_read();
        assert!(matches!(conn.deadline(&limits), Some((_, Close::Now))));
    }
}
