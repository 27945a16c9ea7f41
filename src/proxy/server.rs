//! The server loop behind [`serve`]: client connections accepted, counted, timed and closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_service::Service;

use crate::auth::ClientAddr;
use crate::body::IdleTimeout;
use axum::body::Body as AppBody;
use axum::routing::future::RouteFuture;
use axum::Router;

/// How [`serve`] treats connections; [`ServeOptions::default`] is what the bundled proxy uses
/// when the configuration says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// In-flight requests, streams included, may run this long after the shutdown signal.
    pub shutdown_grace: Duration,
    /// Open client connections, at most.
    pub max_connections: usize,
    /// A connection with nothing in flight must deliver its next request's head (the first
    /// one's included, the HTTP/2 handshake with it) within this, or it is closed.
    pub request_head_timeout: Duration,
    /// An HTTP/2 ping goes out after this long without a frame from the peer; a ping
    /// unanswered for as long closes the connection. `None`: no pings.
    pub http2_keepalive: Option<Duration>,
    /// A request body that sends no byte for this long fails with a 408. `None`: no limit.
    pub body_idle_timeout: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            shutdown_grace: Duration::from_secs(30),
            max_connections: default_max_connections(),
            request_head_timeout: Duration::from_secs(30),
            http2_keepalive: Some(Duration::from_secs(20)),
            body_idle_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// The most connections served by default.
pub const MAX_CONNECTIONS: usize = 10_000;

/// The default bound on connections: [`MAX_CONNECTIONS`], or less when the process may open
/// fewer files. Each client connection can hold an upstream connection too, and the process
/// needs a few descriptors of its own, so clients get half of what is left after 64.
pub fn default_max_connections() -> usize {
    #[cfg(unix)]
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        let budget = soft.saturating_sub(64) / 2;
        return usize::try_from(budget)
            .unwrap_or(usize::MAX)
            .clamp(8, MAX_CONNECTIONS);
    }
    MAX_CONNECTIONS
}

/// Serves `app` (the proxy's [`router`](super::Proxy::router), or any axum router) on
/// `listener` (HTTP/1.1 and HTTP/2) until `shutdown` completes; then stops
/// accepting and lets in-flight requests, streams included, finish for at most
/// `options.shutdown_grace`.
///
/// - **A bounded number of connections** ([`ServeOptions::max_connections`]). At the bound, a
///   new connection makes room by closing the connection that has been idle (nothing in
///   flight) the longest; when every connection is busy, the loop stops accepting (new
///   clients wait in the listen backlog) until one frees up, and each connection that goes
///   idle meanwhile closes itself. The accept loop never spins: out of file descriptors, it
///   also closes the oldest idle connection, or waits.
/// - **A deadline for every request head** ([`ServeOptions::request_head_timeout`]). A
///   connection with nothing in flight must deliver the head of its next request within it,
///   on every protocol: the first request's included, before HTTP/1 or HTTP/2 is even
///   recognised, and the HTTP/2 handshake with it. Past it, the connection is closed. So a
///   connection that sends nothing, half a preface, or a preface and SETTINGS and then nothing
///   holds its descriptor for that long at most, and so does an idle keep-alive connection.
/// - **HTTP/2 keep-alive pings** ([`ServeOptions::http2_keepalive`]): a peer that does not
///   answer a ping within the same interval is gone, and its connection is closed.
/// - **An idle deadline on request bodies** ([`ServeOptions::body_idle_timeout`]): a body that
///   sends no byte for that long fails; the gateway answers 408. A slow but steady upload is
///   never cut.
/// - **Graceful shutdown**: when the shutdown future completes, the loop stops accepting, every
///   connection is asked to finish what it has in flight, and [`serve`] returns when all have,
///   or after [`ServeOptions::shutdown_grace`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.request_head_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(options.http2_keepalive);
    if let Some(every) = options.http2_keepalive {
        builder.http2().keep_alive_timeout(every);
    }
    let table = Arc::new(Table::new(options.max_connections.max(1)));
    let mut accept_failures = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok((tcp, peer)) => (tcp, peer),
            Err(e) => {
                // Out of descriptors (or a connection reset while queued): make room if an
                // idle connection can give its descriptor up, else wait a moment; never spin.
                let made_room = out_of_descriptors(&e) && table.evict_oldest_idle();
                if accept_failures.ready() {
                    tracing::warn!(error = %e, made_room, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(if made_room { 5 } else { 50 })).await;
                continue;
            }
        };
        let permit = match table.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // At the bound: the oldest idle connection makes room, or, every connection
                // being busy, the next one to go idle does.
                table.pressure.store(true, Ordering::Relaxed);
                if !table.evict_oldest_idle() && accept_failures.ready() {
                    tracing::warn!(
                        max_connections = options.max_connections,
                        "every connection is busy: new connections wait"
                    );
                }
                let permit = tokio::select! {
                    permit = table.slots.clone().acquire_owned() => permit,
                    () = &mut shutdown => break,
                };
                table.pressure.store(false, Ordering::Relaxed);
                match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let conn = table.open(permit);
        let service = Tracked {
            app: app.clone(),
            conn: conn.clone(),
            peer: ClientAddr(peer.ip()),
            body_idle_timeout: options.body_idle_timeout,
        };
        let connection = builder
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .into_owned();
        tokio::spawn(run_connection(
            connection,
            conn,
            table.clone(),
            options.request_head_timeout,
        ));
    }
    drop(listener);
    // Every connection: finish what is in flight, then close.
    table.shut_down();
    tracing::info!(
        grace_secs = options.shutdown_grace.as_secs(),
        "shutting down: waiting for in-flight requests"
    );
    tokio::select! {
        () = table.all_closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(options.shutdown_grace) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    Ok(())
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (the process's limit) and ENFILE (the system's), on Linux and the BSDs.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// A client connection as [`serve`] drives it.
type Connection =
    auto::Connection<'static, TokioIo<TcpStream>, TowerToHyperService<Tracked>, TokioExecutor>;

/// Drives one connection until it ends. It is closed when it has nothing in flight and no
/// request head arrives in time (dropped if it never sent a request; closed gracefully
/// otherwise, so an HTTP/2 client gets its GOAWAY), when it is evicted, and at shutdown.
async fn run_connection(
    connection: Connection,
    conn: Arc<Conn>,
    table: Arc<Table>,
    head_timeout: Duration,
) {
    tokio::pin!(connection);
    // Once asked to close gracefully: `Some(by)`, dropped at `by` if still idle then (a
    // peer that never acknowledges the GOAWAY does not hold its place); `Some(None)`: at
    // shutdown, or with a request in flight, it finishes first.
    let mut closing: Option<Option<Instant>> = None;
    let deadline = tokio::time::sleep_until(conn.deadline(head_timeout));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            // The connection first: it is what wakes the task nearly every time.
            biased;
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = deadline.as_mut() => {
                let now = Instant::now();
                match closing {
                    Some(Some(_)) if conn.idle_since().is_some() => break,
                    // A request slipped in: let it finish; the connection closes after it.
                    Some(_) => closing = Some(None),
                    None if !conn.is_idle_since(now - head_timeout) => {}
                    None if !conn.has_served() => {
                        // Never a request: silence, half a preface, a handshake and nothing.
                        tracing::debug!("connection closed: no request head in time");
                        break;
                    }
                    None => {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Some(now + CLOSE_GRACE));
                    }
                }
                let next = match closing {
                    Some(Some(by)) => by,
                    Some(None) => now + NO_DEADLINE,
                    None => conn.deadline(head_timeout),
                };
                deadline.as_mut().reset(next);
            }
            () = conn.close.notified(), if closing.is_none() => {
                if table.shutting_down.load(Ordering::Relaxed) {
                    // Shutdown: what is in flight may finish (the grace period bounds it).
                    connection.as_mut().graceful_shutdown();
                    closing = Some(None);
                    deadline.as_mut().reset(Instant::now() + NO_DEADLINE);
                    continue;
                }
                conn.evicted.store(true, Ordering::Relaxed);
                if !conn.has_served() {
                    break;
                }
                tracing::debug!("idle connection closed to make room for a new one");
                connection.as_mut().graceful_shutdown();
                let by = Instant::now() + CLOSE_GRACE;
                closing = Some(Some(by));
                deadline.as_mut().reset(by);
            }
        }
    }
    table.close(&conn);
}

/// How long an idle connection asked to close gracefully may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Every open connection, for the bound and for eviction.
struct Table {
    slots: Arc<Semaphore>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Set while a new connection waits for room: a connection going idle then closes.
    pressure: AtomicBool,
    /// Set at shutdown: a connection asked to close finishes what it has in flight.
    shutting_down: AtomicBool,
    /// The bound, as permits.
    max: u32,
}

impl Table {
    fn new(max: usize) -> Self {
        let max = u32::try_from(max.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Table {
            slots: Arc::new(Semaphore::new(max as usize)),
            conns: Mutex::default(),
            next_id: AtomicU64::new(0),
            pressure: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            max,
        }
    }

    /// Asks every connection to finish what it has in flight and close.
    fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        for conn in self.lock().values() {
            conn.close.notify_one();
        }
    }

    /// Completes when every connection has ended (each holds a permit until then).
    async fn all_closed(&self) {
        let _all = self.slots.acquire_many(self.max).await;
    }

    fn open(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            activity: Mutex::new(Activity {
                in_flight: 0,
                served: false,
                idle_since: Instant::now(),
            }),
            close: Notify::new(),
            evicted: AtomicBool::new(false),
            table: Arc::downgrade(self),
            _permit: permit,
        });
        self.lock().insert(conn.id, conn.clone());
        conn
    }

    fn close(&self, conn: &Conn) {
        self.lock().remove(&conn.id);
    }

    /// Asks the connection idle the longest to close; whether there was one.
    fn evict_oldest_idle(&self) -> bool {
        let oldest = self
            .lock()
            .values()
            .filter(|c| !c.evicted.load(Ordering::Relaxed))
            .filter_map(|c| c.idle_since().map(|since| (since, c.clone())))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, conn)) => {
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One client connection's shared state.
struct Conn {
    id: u64,
    activity: Mutex<Activity>,
    /// Asks the connection to close: it is idle and another needs its place, or the server
    /// shuts down.
    close: Notify,
    /// Set once it was asked: it is not chosen again.
    evicted: AtomicBool,
    table: std::sync::Weak<Table>,
    /// Its place under the bound, given back when the connection ends.
    _permit: OwnedSemaphorePermit,
}

struct Activity {
    /// Requests begun and not yet answered to the end (their bodies included).
    in_flight: usize,
    /// Whether a request ever began.
    served: bool,
    /// When the last request ended (or the connection opened).
    idle_since: Instant,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection has nothing in flight: since when.
    fn idle_since(&self) -> Option<Instant> {
        let a = self.lock();
        (a.in_flight == 0).then_some(a.idle_since)
    }

    fn is_idle_since(&self, at_or_before: Instant) -> bool {
        self.idle_since().is_some_and(|since| since <= at_or_before)
    }

    /// When to look again: the head deadline when idle; while busy, a timeout later.
    fn deadline(&self, head_timeout: Duration) -> Instant {
        self.idle_since().unwrap_or_else(Instant::now) + head_timeout
    }

    fn has_served(&self) -> bool {
        self.lock().served
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut a = self.lock();
        a.in_flight += 1;
        a.served = true;
        drop(a);
        InFlight(self.clone())
    }
}

/// One request in flight on a connection, until its answer's body is done or dropped.
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let idle = {
            let mut a = self.0.lock();
            a.in_flight -= 1;
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
            }
            a.in_flight == 0
        };
        // A new connection is waiting for room: this one, idle now, gives it.
        let pressed = self
            .0
            .table
            .upgrade()
            .is_some_and(|t| t.pressure.load(Ordering::Relaxed));
        if idle && pressed {
            self.0.close.notify_one();
        }
    }
}

/// The proxy as one connection serves it: each request counted in flight until its answer's
/// body ends, and its body read under the idle deadline.
#[derive(Clone)]
struct Tracked {
    app: Router,
    conn: Arc<Conn>,
    /// The connection's peer, told to the request (for counting failed key attempts).
    peer: ClientAddr,
    body_idle_timeout: Option<Duration>,
}

/// No deadline: a year is as good as none.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 86_400);

impl Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody<AppBody>>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<IdleTimeout<Incoming>>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> TrackedFuture {
        let in_flight = self.conn.begin();
        let mut req = req.map(|body| IdleTimeout::new(body, self.body_idle_timeout));
        req.extensions_mut().insert(self.peer);
        TrackedFuture {
            inner: self.app.call(req),
            in_flight: Some(in_flight),
        }
    }
}

/// The response future of [`Tracked`].
#[pin_project]
struct TrackedFuture {
    #[pin]
    inner: RouteFuture<Infallible>,
    in_flight: Option<InFlight>,
}

impl Future for TrackedFuture {
    type Output = Result<Response<TrackedBody<AppBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.inner.poll(cx).map(|res| {
            let in_flight = this.in_flight.take();
            res.map(|res| {
                res.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                })
            })
        })
    }
}

/// An answer's body; its request stays in flight until it is done (or dropped).
#[pin_project]
struct TrackedBody<B> {
    #[pin]
    body: B,
    _in_flight: Option<InFlight>,
}

impl<B: Body<Data = Bytes>> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// At most one log line a second for a condition that repeats (the accept loop's failures).
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}
