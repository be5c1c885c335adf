//! Connections: the accept loop in front of the router, and the limits that
//! keep one client from starving the others.
//!
//! - At most `max_connections` are open; a socket accepted over the cap is
//!   closed at once (logged at most once a second, with a count). The cap
//!   keeps file descriptors for the gateway's own needs (its database).
//! - A request's headers must arrive within `header_read_timeout` of its
//!   first byte (of the connection, for a new one): slowloris clients are
//!   cut off.
//! - A connection with no request in progress for `idle_timeout` is closed.
//! - A request in progress is never cut by either timer, however long it
//!   runs (a tool call waiting on a slow backend, an SSE stream): a
//!   connection counts as busy from the moment its request's headers are
//!   parsed until the response has been sent in full.
//!
//! hyper's own `header_read_timeout` is not used: it starts as soon as the
//! connection waits for a request, so it would also close idle keep-alive
//! connections at the header deadline. The timers here are per connection
//! and event driven (no polling).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// The connection limits in force.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Accepts connections on `listener` and serves `app` on each, within
/// `limits`, until `shutdown` resolves; then stops accepting, closes idle
/// connections, lets requests in progress finish for up to
/// `shutdown_grace` (a client's open SSE stream would otherwise hold the
/// process forever), and returns once every connection is closed.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut over_cap = RateLimitedLog::default();
    let mut accept_failures = RateLimitedLog::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if accept_failures.tick() {
                        tracing::error!(error = %e, failures = accept_failures.take(), "cannot accept connections");
                    }
                    // Out of descriptors (or a transient error): give the
                    // process a moment instead of spinning on accept.
                    if !is_per_connection(&e) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            if over_cap.tick() {
                tracing::warn!(
                    limit = limits.max_connections,
                    refused = over_cap.take(),
                    last_peer = %peer,
                    "connection limit reached; closing new connections",
                );
            }
            continue;
        };
        // Without TCP_NODELAY, keep-alive clients wait ~40 ms per response
        // on delayed ACKs.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(tcp, peer, app, limits, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// Accept errors that concern one connection only (the peer gave up), as
/// opposed to the process (out of descriptors).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Counts events and says when to log them: at most once a second.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    count: u64,
}

impl RateLimitedLog {
    /// Counts one event; true when it is time to log.
    fn tick(&mut self) -> bool {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|l| now.duration_since(l) >= Duration::from_secs(1))
        {
            self.last = Some(now);
            return true;
        }
        false
    }

    /// The events counted since the last log.
    fn take(&mut self) -> u64 {
        std::mem::take(&mut self.count)
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
    });
    let service = ConnService {
        app,
        activity: activity.clone(),
        peer,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    let mut cut_off: Option<Instant> = None;
    loop {
        if !stopping && *stop.borrow() {
            stopping = true;
            cut_off = Some(Instant::now() + limits.shutdown_grace);
            conn.as_mut().graceful_shutdown();
        }
        // A stream a client only listens on (MCP's GET stream) never ends
        // by itself: at shutdown it must not hold the grace period.
        if stopping && activity.only_listening() {
            tracing::debug!("closing a connection that only holds listening streams");
            return;
        }
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = sleep_until(deadline) => {
                if let Some(why) = activity.expired(&limits, Instant::now()) {
                    // Nothing is in progress on this connection: dropping it
                    // closes the socket.
                    tracing::debug!(reason = why, "closing connection");
                    return;
                }
            }
            () = activity.changed.notified() => {}
            () = sleep_until(cut_off) => {
                tracing::info!("closing a connection still busy at the end of the shutdown grace period");
                return;
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() {
                    // The server is gone without a word: stop all the same.
                    stopping = true;
                    cut_off = Some(Instant::now() + limits.shutdown_grace);
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, for its timers.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when the deadline may have moved earlier.
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    /// Requests whose response has not been sent in full.
    in_flight: usize,
    /// Of those, streams the client only listens on (a GET for
    /// `text/event-stream`): no work of the client's is in them.
    listening: usize,
    /// No request yet on this connection.
    fresh: bool,
    /// When the connection was accepted or its last response was sent.
    idle_since: Instant,
    /// First byte read while no request was in progress: a request's
    /// headers are arriving.
    reading_since: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                listening: 0,
                fresh: true,
                idle_since: Instant::now(),
                reading_since: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the connection must be closed if nothing happens; none while a
    /// request is in progress.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let s = self.lock();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.reading_since {
            Some(t) => t + limits.header_read_timeout,
            None if s.fresh => s.idle_since + limits.header_read_timeout,
            None => s.idle_since + limits.idle_timeout,
        })
    }

    /// Why the connection is to be closed now, if it is.
    fn expired(&self, limits: &Limits, now: Instant) -> Option<&'static str> {
        let due = self.deadline(limits)?;
        if now < due {
            return None;
        }
        let s = self.lock();
        Some(if s.reading_since.is_some() || s.fresh {
            "request headers not received in time"
        } else {
            "idle keep-alive connection"
        })
    }

    fn bytes_read(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && s.reading_since.is_none() {
            s.reading_since = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>, listening: bool) -> Busy {
        let mut s = self.lock();
        s.in_flight += 1;
        s.listening += usize::from(listening);
        s.fresh = false;
        s.reading_since = None;
        Busy(self.clone(), listening)
    }

    /// Whether every request in progress is a listening stream.
    fn only_listening(&self) -> bool {
        let s = self.lock();
        s.in_flight == s.listening
    }
}

/// A request in progress on a connection; dropped when its response has
/// been sent in full (or abandoned).
#[derive(Debug)]
struct Busy(Arc<Activity>, bool);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if self.1 {
            s.listening = s.listening.saturating_sub(1);
        }
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
            s.reading_since = None;
        }
        drop(s);
        self.0.changed.notify_one();
    }
}

/// The socket, noting when bytes arrive.
#[derive(Debug)]
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as a hyper service on one connection, marking the
/// connection busy for as long as each response is being produced and sent.
#[derive(Debug, Clone)]
struct ConnService {
    app: Router,
    activity: Arc<Activity>,
    /// The client's address, handed to handlers (failed authentications
    /// are recorded with it).
    peer: std::net::SocketAddr,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let listening = request.method() == http::Method::GET
            && request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("text/event-stream"));
        let busy = self.activity.request_started(listening);
        let app = self.app.clone();
        let mut request = request.map(axum::body::Body::new);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        Box::pin(async move {
            let response = app.oneshot(request).await?;
            Ok(hold_until_sent(response, busy))
        })
    }
}

/// Keeps `guard` alive until `response`'s body has been sent in full (or
/// dropped): for what must last as long as the response, not the handler.
pub(super) fn hold_until_sent<G: Send + Unpin + 'static>(response: Response, guard: G) -> Response {
    response.map(|body| {
        axum::body::Body::new(Held {
            body,
            _guard: guard,
        })
    })
}

/// A response body with something riding along until it is done.
struct Held<G> {
    body: axum::body::Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
