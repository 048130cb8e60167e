//! Serving the router: the accept loop, the connection cap and the
//! per-connection timeouts.
//!
//! ```text
//!   accept ── max_connections open, or max_connections_per_client from this IP?
//!     │          ── close it at once (sibyl_api_connections_refused{reason})
//!     │
//!     └─▶ one task per connection:  hyper http1 ◀── Io (notes bytes read / writes blocked)
//!           select! { the connection | its next deadline | a close request }
//! ```
//!
//! A connection is always in one phase, and each phase has its own limit:
//! - idle (no request under way, e.g. keep-alive between requests): closed
//!   after `idle_timeout`;
//! - head (a new connection, or the first byte of a further request arrived
//!   and its head has not): closed `header_read_timeout` after the accept or
//!   that byte, however slowly bytes trickle in;
//! - busy (a request is being answered, or its body streamed): the handler is
//!   bounded by `request_timeout` in the router; a response the client stops
//!   reading is closed once a write has been blocked for `idle_timeout`, or
//!   at once when a stream asks for it ([`ConnHandle::close_within`]).
//!
//! hyper's own header timer restarts when a keep-alive connection goes idle,
//! so it would be the idle limit as well; hence this watchdog.

use super::ApiState;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// The timeouts a connection is held to.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

/// Accepts connections on `listener` and serves `app` on each, forever.
pub(super) async fn run(listener: TcpListener, app: Router, state: ApiState) {
    let limits = &state.inner.config.limits;
    let timeouts = Timeouts {
        header_read: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    let open = Arc::new(Semaphore::new(
        connection_cap(limits.max_connections).min(Semaphore::MAX_PERMITS),
    ));
    let clients = PerClient::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors (or a similar resource error): the
                // connection waits in the backlog; try again shortly.
                tracing::warn!(error = %e, "API cannot accept a connection; lower `api.max_connections` or raise the file-descriptor limit");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let refused = |reason: &str| {
            state
                .inner
                .metrics
                .connections_refused
                .get_or_create(&super::ReasonLabels {
                    reason: reason.to_owned(),
                })
                .inc();
            tracing::debug!(%peer, reason, "API connection refused: too many open");
        };
        let Some(slot) = clients.take(peer.ip(), limits.max_connections_per_client) else {
            refused("per_client");
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused("global");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let state = state.clone();
        tokio::spawn(async move {
            serve_connection(tcp, peer, app, &state, timeouts).await;
            drop((permit, slot));
        });
    }
}

/// Open connections per client IP.
#[derive(Clone, Default)]
struct PerClient(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl PerClient {
    /// A slot for one more connection from `ip`, if it holds fewer than `max`.
    fn take(&self, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.get(&ip).copied().unwrap_or(0);
        if n >= max {
            return None;
        }
        open.insert(ip, n + 1);
        Some(ClientSlot(self.clone(), ip))
    }
}

/// One open connection of a client; its count drops with it.
struct ClientSlot(PerClient, IpAddr);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// File descriptors the rest of the node may need (store, peers, exchanges).
const FD_RESERVE: u64 = 256;

/// The cap only protects the node if it is below the descriptor limit: when
/// `max_connections` would leave fewer than [`FD_RESERVE`] descriptors, the
/// cap is lowered to leave them (and a warning says so).
fn connection_cap(max_connections: usize) -> usize {
    #[cfg(target_os = "linux")]
    if let Some(soft) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current
        && (max_connections as u64).saturating_add(FD_RESERVE) > soft
    {
        let cap = soft
            .saturating_sub(FD_RESERVE)
            .max(soft / 4)
            .min(max_connections as u64);
        tracing::warn!(
            max_connections,
            fd_limit = soft,
            cap,
            "api.max_connections would leave fewer than {FD_RESERVE} file descriptors for the rest of the node; serving at most {cap} connections. Raise the limit (LimitNOFILE in the systemd unit, `ulimit -n`) or lower api.max_connections"
        );
        return usize::try_from(cap).unwrap_or(max_connections);
    }
    max_connections
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    state: &ApiState,
    timeouts: Timeouts,
) {
    let metrics = &state.inner.metrics;
    let _open = OpenConnection::count(&metrics.connections);
    let conn = Arc::new(Conn::new());
    let handle = ConnHandle {
        conn: conn.clone(),
        peer,
    };
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let app = app.clone();
        let busy = Busy::start(&handle.conn);
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(handle.clone());
        async move {
            let resp = app.oneshot(req).await?;
            Ok::<_, Infallible>(resp.map(|body| Body::new(Tracked { body, _busy: busy })))
        }
    });
    let io = TokioIo::new(Io {
        tcp,
        conn: conn.clone(),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true).header_read_timeout(None);
    let connection = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let closed = loop {
        let next = {
            let s = conn.lock();
            if let Some(reason) = s.expired(timeouts) {
                break Some(reason);
            }
            // Busy with nothing stalled: look again after the shorter limit.
            s.deadline(timeouts)
                .unwrap_or_else(|| later(Instant::now(), timeouts.idle.min(timeouts.header_read)))
        };
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "API connection ended with an error");
                }
                break None;
            }
            () = conn.wake.notified() => {}
            () = tokio::time::sleep_until(next) => {}
        }
    };
    if let Some(reason) = closed {
        tracing::debug!(%peer, reason = reason.as_str(), "API connection closed");
        metrics
            .connections_closed
            .get_or_create(&super::ReasonLabels {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }
}

/// Counts a connection in the gauge while it lives (a panicking handler included).
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn count(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `at + d`, or a year on for a duration too long to add.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 86_400))
}

/// Why the server closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    Idle,
    HeaderRead,
    WriteStalled,
    SlowStream,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle_timeout",
            Self::HeaderRead => "header_read_timeout",
            Self::WriteStalled => "write_stalled",
            Self::SlowStream => "slow_stream",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    /// Requests under way (their responses not yet fully handed to hyper).
    Busy(u32),
}

#[derive(Debug)]
struct ConnState {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// Since when a write has been waiting for the client to read.
    write_blocked: Option<Instant>,
    /// A stream asked for the connection to end by then.
    close_by: Option<Instant>,
}

impl ConnState {
    /// When this connection runs out of time in its current phase; `None`
    /// while it is busy with nothing stalled.
    fn deadline(&self, t: Timeouts) -> Option<Instant> {
        match self.phase {
            Phase::Idle => Some(later(self.since, t.idle)),
            Phase::Head => Some(later(self.since, t.header_read)),
            Phase::Busy(_) => {
                let stalled = self.write_blocked.map(|at| later(at, t.idle));
                match (stalled, self.close_by) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    fn expired(&self, t: Timeouts) -> Option<Closed> {
        let now = Instant::now();
        match self.phase {
            Phase::Idle => (now >= later(self.since, t.idle)).then_some(Closed::Idle),
            Phase::Head => (now >= later(self.since, t.header_read)).then_some(Closed::HeaderRead),
            Phase::Busy(_) => {
                if self.close_by.is_some_and(|at| now >= at) {
                    Some(Closed::SlowStream)
                } else if self
                    .write_blocked
                    .is_some_and(|at| now >= later(at, t.idle))
                {
                    Some(Closed::WriteStalled)
                } else {
                    None
                }
            }
        }
    }
}

/// One connection's phase, shared by its IO, its requests and its watchdog.
struct Conn {
    state: Mutex<ConnState>,
    /// Wakes the watchdog when a deadline moves earlier.
    wake: Notify,
}

impl Conn {
    fn new() -> Self {
        Self {
            // A new connection owes its first request head at once.
            state: Mutex::new(ConnState {
                phase: Phase::Head,
                since: Instant::now(),
                write_blocked: None,
                close_by: None,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnState> {
        // The state stays consistent under any panic: plain assignments only.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_read(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Idle {
            s.phase = Phase::Head;
            s.since = Instant::now();
            drop(s);
            self.wake.notify_one();
        }
    }

    fn on_write(&self, blocked: bool) {
        let mut s = self.lock();
        match (blocked, s.write_blocked) {
            (true, None) => {
                s.write_blocked = Some(Instant::now());
                drop(s);
                self.wake.notify_one();
            }
            (false, Some(_)) => s.write_blocked = None,
            _ => {}
        }
    }
}

/// A request's handle on its connection (in the request's extensions).
#[derive(Clone)]
pub(super) struct ConnHandle {
    conn: Arc<Conn>,
    pub(super) peer: SocketAddr,
}

impl ConnHandle {
    /// End the connection if its current response has not finished within
    /// `grace` (a stream whose client does not keep up).
    pub(super) fn close_within(&self, grace: Duration) {
        let mut s = self.conn.lock();
        let at = Instant::now() + grace;
        s.close_by = Some(s.close_by.map_or(at, |b| b.min(at)));
        drop(s);
        self.conn.wake.notify_one();
    }
}

/// Holds its connection busy from the request's arrival until its response
/// body is done (or dropped).
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: &Arc<Conn>) -> Self {
        let mut s = conn.lock();
        s.phase = match s.phase {
            Phase::Busy(n) => Phase::Busy(n.saturating_add(1)),
            Phase::Idle | Phase::Head => Phase::Busy(1),
        };
        s.since = Instant::now();
        drop(s);
        Self(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.phase = match s.phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle,
        };
        s.since = Instant::now();
        if s.phase == Phase::Idle {
            s.close_by = None;
        }
        drop(s);
        self.0.wake.notify_one();
    }
}

/// A response body that keeps its connection busy while it is being sent.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, noting when bytes arrive and when a write has
/// to wait for the client.
struct Io {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl Io {
    fn note_write(&self, r: &Poll<std::io::Result<usize>>) {
        match r {
            Poll::Pending => self.conn.on_write(true),
            Poll::Ready(Ok(n)) if *n > 0 => self.conn.on_write(false),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        r
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.note_write(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
