//! One request through the proxy: limits, redirect, routing, persistence,
//! scheduling with retries, header rewriting, gzip, access log, metrics.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{ACCEPT_ENCODING, CONNECTION, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::access::{Entry, RequestLine};
use super::balance::hash_bytes;
use super::body::{boxed, empty, Body, Finish, ResponseBody, Tracked};
use super::headers::{self, ForwardedValues};
use super::idle::Activity;
use super::linger::Linger;
use super::metrics::{L7Metrics, ListenerMetrics};
use super::pages;
use super::persist::{self, request_cookie};
use super::state::{Group, Runtime};
use super::upstream::{self, Failure, ReplayBody, UpstreamBody};
use super::websocket;
use crate::config::{HashKey, Protocol};
use crate::planner::Health;

/// What every connection of the proxy shares.
#[derive(Debug)]
pub struct Shared {
    pub health: watch::Receiver<Health>,
    pub metrics: L7Metrics,
    /// Cancelled when the proxy shuts down (its listeners' tokens are
    /// children of it).
    pub shutdown: CancellationToken,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
    /// Requests seen so far.
    pub requests: AtomicU32,
    /// Requests whose response is not finished.
    pub active: AtomicUsize,
    pub activity: Activity,
    /// Asks the connection task to close the connection gracefully (the
    /// request limit was reached).
    pub close: Notify,
    /// Cancelled when the connection's listener is removed or the proxy
    /// shuts down: ends the WebSocket tunnels the connection became (they
    /// outlive its HTTP task, which ends with the upgrade).
    pub stop: CancellationToken,
    /// The client's address as `X-Real-IP` / `X-Forwarded-For` value.
    client_value: HeaderValue,
    /// HTTP/1: since when (activity clock, ms) the connection waits for a
    /// request header; `NOT_WAITING` while a request runs; `FIRST_BYTES`
    /// before the first request: since the client's first bytes.
    head_since: AtomicU64,
    /// HTTP/2, which has no request header timeout.
    h2: AtomicBool,
    /// Whether closing the connection is to linger (see [`super::linger`]).
    pub linger: Linger,
    /// Responses whose bytes wait for the client to take them (see
    /// [`Conn::stall_deadline`]).
    waiting: AtomicUsize,
    /// Coarse ns when a response last handed the client bytes, was asked
    /// for more, or ended.
    took: AtomicU64,
}

const NOT_WAITING: u64 = u64::MAX;
const FIRST_BYTES: u64 = u64::MAX - 1;

impl Conn {
    pub fn new(peer: SocketAddr, tls: bool, activity: Activity, stop: CancellationToken) -> Self {
        Self {
            peer,
            tls,
            requests: AtomicU32::new(0),
            active: AtomicUsize::new(0),
            activity,
            close: Notify::new(),
            stop,
            client_value: headers::client_value(peer.ip()),
            head_since: AtomicU64::new(FIRST_BYTES),
            h2: AtomicBool::new(false),
            linger: Linger::default(),
            waiting: AtomicUsize::new(0),
            took: AtomicU64::new(0),
        }
    }

    /// When the connection is to be dropped because its client takes
    /// nothing of the responses waiting for it: `idle` after one last
    /// handed it bytes, was asked for more or ended, and after the last
    /// bytes either way. As nginx's `send_timeout` and HAProxy's `timeout
    /// client`: a client that stops reading would otherwise hold its
    /// connection, the backend's and the backend's request for as long as
    /// it stays connected. A client still sending (its request body; over
    /// HTTP/2 any frame: a slow reader's window updates come as the
    /// response is, and a gRPC client may leave a stream's window shut for
    /// long while it pings) is busy, not gone. `None` while no response
    /// waits for the client.
    pub fn stall_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        let quiet = self.stalled_for()?;
        let deadline = tokio::time::Instant::now() + idle.saturating_sub(quiet) + Activity::slack();
        Some(deadline.max(self.activity.deadline(idle) + Activity::slack()))
    }

    /// Whether [`Conn::stall_deadline`] has passed.
    pub fn stalled(&self, idle: Duration) -> bool {
        self.stalled_for().is_some_and(|quiet| quiet >= idle)
            && tokio::time::Instant::now() >= self.activity.deadline(idle) + Activity::slack()
    }

    /// How long responses have waited for the client (coarse), if any does.
    fn stalled_for(&self) -> Option<Duration> {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(Duration::from_nanos(
            super::clock::coarse_ns().saturating_sub(self.took.load(Ordering::Relaxed)),
        ))
    }

    /// A response of the connection moved: it handed the client bytes or
    /// was asked for more.
    fn took(&self) {
        self.took
            .store(super::clock::coarse_ns(), Ordering::Relaxed);
    }

    /// The connection speaks HTTP/2.
    pub fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// Whether it is known to speak HTTP/2 (from ALPN, or since its first
    /// HTTP/2 request).
    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// HTTP/1: when the connection is to be closed if the request header it
    /// waits for is still not complete: `timeout` after it began waiting
    /// (the last response ended; on a new connection, the first bytes came,
    /// as with hyper's header read timeout). `None` while a request runs,
    /// before the first bytes, and for HTTP/2.
    pub fn header_deadline(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.h2.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.waiting_since()? + timeout + Activity::slack())
    }

    /// HTTP/1: since when the connection waits for a request header (see
    /// [`Conn::header_deadline`]), whatever the protocol.
    pub fn waiting_since(&self) -> Option<tokio::time::Instant> {
        let since = match self.head_since.load(Ordering::Relaxed) {
            NOT_WAITING => return None,
            FIRST_BYTES => self.activity.first_ms()?,
            since => since,
        };
        Some(self.activity.at(since))
    }
}

/// Holds a backend's in-flight count up while a request runs.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a request was answered, for the log.
struct Outcome {
    response: Response<ResponseBody>,
    upstream: Option<SocketAddr>,
    upstream_time: Option<Duration>,
    in_flight: Option<InFlight>,
}

impl Outcome {
    /// The proxy's error page for a failed exchange with the backend at
    /// `addr` (logged with its address and time).
    fn upstream_error(status: StatusCode, addr: SocketAddr, took: Duration) -> Self {
        Self {
            upstream: Some(addr),
            upstream_time: Some(took),
            ..Self::local(pages::error(status, false))
        }
    }

    fn local(response: Response<Body>) -> Self {
        Self {
            response: response.map(ResponseBody::Other),
            upstream: None,
            upstream_time: None,
            in_flight: None,
        }
    }
}

/// The body of the proxy's responses.
pub type ProxyBody = Tracked<ResponseBody, Done>;

/// A request counted in its connection's `active` until it is over,
/// however it ends: its response sent, or its handler dropped (an HTTP/2
/// client reset the stream before the response came). A count left behind
/// would keep the connection from ever closing for idleness.
struct ActiveRequest(Arc<Conn>);

impl ActiveRequest {
    fn enter(conn: &Arc<Conn>) -> Self {
        conn.active.fetch_add(1, Ordering::Relaxed);
        conn.activity.touch();
        conn.head_since.store(NOT_WAITING, Ordering::Relaxed);
        Self(conn.clone())
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let conn = &self.0;
        let active = conn.active.fetch_sub(1, Ordering::Relaxed) - 1;
        conn.activity.touch();
        if active == 0 {
            // HTTP/1: waiting for the next request header from now on.
            let now = conn.activity.last_ms();
            conn.head_since.store(now, Ordering::Relaxed);
        }
    }
}

/// What happens when a response is over: counters, metrics, access log.
pub struct Done {
    in_flight: Option<InFlight>,
    rt: Arc<Runtime>,
    active: ActiveRequest,
    status: u16,
    /// With the access log on.
    log: Option<Box<Log>>,
}

struct Log {
    entry: Entry,
    start: Instant,
}

impl Finish for Done {
    fn waiting(&self, waiting: bool) {
        let conn = &self.active.0;
        conn.took();
        if waiting {
            conn.waiting.fetch_add(1, Ordering::Relaxed);
        } else {
            conn.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn finish(self, bytes: u64) {
        self.active.0.took();
        drop(self.in_flight);
        drop(self.active);
        self.rt.metrics.request(self.status);
        if let Some(log) = self.log {
            let Log { mut entry, start } = *log;
            entry.bytes = bytes;
            entry.total = start.elapsed();
            entry.log();
        }
    }
}

/// nginx's status for a request whose client went away before its
/// response began (logged and counted, never sent).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// A request waiting for its backend: when the server library drops it
/// there (an HTTP/2 client reset the stream, an HTTP/1 client closed the
/// connection), it is still counted and logged, as 499; else it would
/// vanish from the metrics and the access log although the backend may
/// have acted on it.
struct Abandoned<'a> {
    /// `None` once the request got its response.
    metrics: Option<&'a ListenerMetrics>,
    log: Option<Box<Log>>,
}

impl Abandoned<'_> {
    /// The response came: [`Done`] counts and logs from here on.
    fn answered(mut self) -> Option<Box<Log>> {
        self.metrics = None;
        self.log.take()
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        let Some(metrics) = self.metrics else {
            return;
        };
        metrics.request(CLIENT_CLOSED_REQUEST);
        if let Some(log) = self.log.take() {
            let Log { mut entry, start } = *log;
            entry.status = CLIENT_CLOSED_REQUEST;
            entry.total = start.elapsed();
            entry.log();
        }
    }
}

/// Answers one request. An HTTP/2 stream beyond the connection's request
/// limit is refused: the server library resets it with the error's reason.
pub async fn handle(
    req: Request<Incoming>,
    rt: Arc<Runtime>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, h2::Error> {
    let n = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if n > rt.l7.max_requests_per_connection && req.version() == Version::HTTP_2 {
        // The limit was reached and GOAWAY sent, but the server library's
        // GOAWAY admits any stream until the client acknowledges its PING
        // (the final GOAWAY, naming the last stream, comes after that): a
        // client that never does could open streams without end.
        // REFUSED_STREAM tells it the request was not processed and may be
        // sent again on another connection (RFC 9113 §8.7), as it would
        // send a stream above nginx's GOAWAY.
        debug!(peer = %conn.peer, "HTTP/2 stream beyond the request limit refused");
        return Err(h2::Error::from(h2::Reason::REFUSED_STREAM));
    }
    let active = ActiveRequest::enter(&conn);
    if req.version() == Version::HTTP_2 {
        conn.set_h2();
    } else {
        // Whatever answers it, a request body may be left unread.
        conn.linger
            .request(!hyper::body::Body::is_end_stream(req.body()));
    }
    let last = n >= rt.l7.max_requests_per_connection;
    if last {
        conn.close.notify_one();
    }

    let version = req.version();
    // HTTP/1.0 keeps a connection open only when both sides say so.
    let keep_alive_10 = version == Version::HTTP_10 && headers::wants_keep_alive(req.headers());
    // The log line's fields, only when it is written.
    let mut log = tracing::enabled!(target: "slb::access", tracing::Level::INFO).then(|| {
        Box::new(Log {
            start: Instant::now(),
            entry: Entry {
                time: SystemTime::now(),
                client: conn.peer.ip(),
                host: headers::request_host(req.uri(), req.headers()).map(Cow::into_owned),
                request: Some(RequestLine {
                    method: req.method().to_string(),
                    target: req
                        .uri()
                        .path_and_query()
                        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
                    version,
                }),
                status: 0,
                bytes: 0,
                upstream: None,
                upstream_time: None,
                total: Duration::ZERO,
            },
        })
    });

    // Routing is synchronous: only forwarding is a future of its own.
    // (Every layer of futures is moved, whole, when it starts.)
    let outcome = match route(&req, &rt) {
        Route::Local(outcome) => *outcome,
        Route::Forward { group, upgrade } => {
            let waiting = Abandoned {
                metrics: Some(&rt.metrics),
                log,
            };
            let outcome = forward(req, &rt, &conn, &shared, &rt.groups[group], upgrade).await;
            log = waiting.answered();
            outcome
        }
    };
    let Outcome {
        mut response,
        upstream,
        upstream_time,
        in_flight,
    } = outcome;
    *response.version_mut() = match version {
        Version::HTTP_10 => Version::HTTP_10,
        Version::HTTP_2 => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    if last && version != Version::HTTP_2 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    } else if keep_alive_10 && framed_for_http10(&response) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    let status = response.status().as_u16();
    let log = log.map(|mut log| {
        log.entry.status = status;
        log.entry.upstream = upstream;
        log.entry.upstream_time = upstream_time;
        log
    });
    let (parts, body) = response.into_parts();
    let done = Done {
        in_flight,
        rt,
        active,
        status,
        log,
    };
    Ok(Response::from_parts(parts, Tracked::new(body, done)))
}

/// Can an HTTP/1.0 client tell where this response ends without the
/// connection closing? HTTP/1.0 has no chunks: a body of unknown length
/// (a backend's chunked one, gzip's) is sent until the connection closes,
/// so the response must not promise keep-alive (RFC 9112 §9.3 and C.2.2:
/// persistence with a 1.0 client needs a Content-Length).
fn framed_for_http10(response: &Response<ResponseBody>) -> bool {
    use hyper::body::Body as _;
    let body = response.body();
    body.is_end_stream() || body.size_hint().exact().is_some()
}

/// Where a request goes.
enum Route {
    /// The proxy answers it itself (an error page or a redirect: rare
    /// enough to be boxed).
    Local(Box<Outcome>),
    /// To the group `rt.groups[group]`.
    Forward { group: usize, upgrade: bool },
}

/// Limits, redirect and forwarding rules.
fn route(req: &Request<Incoming>, rt: &Runtime) -> Route {
    let h1 = req.version() != Version::HTTP_2;
    if headers::header_size(req.method(), req.uri(), req.headers()) > rt.l7.max_header_size as usize
    {
        return Route::Local(Box::new(Outcome::local(pages::error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            h1,
        ))));
    }
    if let Some(status) = headers::malformed(req.version(), req.uri(), req.headers()) {
        return Route::Local(Box::new(Outcome::local(pages::error(status, h1))));
    }
    if req.method() == Method::CONNECT {
        // A reverse proxy, not a forward one: no tunnels to arbitrary
        // hosts (as nginx refuses it).
        return Route::Local(Box::new(Outcome::local(pages::error(
            StatusCode::NOT_IMPLEMENTED,
            h1,
        ))));
    }
    if req.method() == Method::TRACE {
        // A backend's TRACE echoes the request header back, cookies and
        // credentials included, to any script that can send one (cross-site
        // tracing): answered here, as nginx answers it (405, no `Allow`:
        // the proxy does not know the methods a backend's resource allows;
        // the HTTP/1 connection closed, as nginx's).
        return Route::Local(Box::new(Outcome::local(pages::error(
            StatusCode::METHOD_NOT_ALLOWED,
            h1,
        ))));
    }
    let authority_form = req.uri().scheme().is_none() && req.uri().authority().is_some();
    let asterisk_form = req.uri().path() == "*" && req.method() != Method::OPTIONS;
    if authority_form || asterisk_form {
        // Authority-form (`GET host:80`) is CONNECT's alone, `*` OPTIONS's
        // (RFC 9112 §3.2.3, §3.2.4; nginx answers 400): the server library
        // takes either for any method, and the first as a target with a
        // host and no path, which would route by that host and reach the
        // backend as `/`.
        return Route::Local(Box::new(Outcome::local(pages::error(
            StatusCode::BAD_REQUEST,
            h1,
        ))));
    }
    let host = headers::request_host(req.uri(), req.headers());
    if rt.l7.redirect_https && rt.protocol == Protocol::Http {
        return Route::Local(Box::new(Outcome::local(match host {
            Some(h) => pages::redirect(&pages::https_location(
                &h,
                rt.https_port,
                path_and_query(req.uri()).as_str(),
            )),
            None => pages::error(StatusCode::BAD_REQUEST, h1),
        })));
    }
    let upgrade = h1 && headers::is_websocket_upgrade(req.headers());
    if upgrade && !hyper::body::Body::is_end_stream(req.body()) {
        // A WebSocket handshake has no body (RFC 6455), and the tunnel
        // takes the connection's bytes after it: a body could be neither
        // forwarded nor told apart from the first frames.
        return Route::Local(Box::new(Outcome::local(pages::error(
            StatusCode::BAD_REQUEST,
            h1,
        ))));
    }
    Route::Forward {
        group: rt.router.route(host.as_deref(), req.uri().path()),
        upgrade,
    }
}

/// The request's path and query ("/" when it has none).
fn path_and_query(uri: &http::Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// The hash of the request's hash key, when the scheduler wants one.
fn hash_of(rt: &Runtime, headers: &HeaderMap) -> Option<u64> {
    match rt.hash_key()? {
        HashKey::Header(name) => {
            let v = headers.get(name.as_str())?;
            (!v.is_empty()).then(|| hash_bytes(v.as_bytes()))
        }
        HashKey::Cookie(name) => request_cookie(headers, name)
            .filter(|v| !v.is_empty())
            .map(|v| hash_bytes(v.as_bytes())),
    }
}

/// Picks the next backend: the one of the group the persistence cookie
/// names (`sticky`: its ids, see `persist::ids`) when it is
/// usable (up, not tried, not a backup standing by; weight 0 is fine,
/// draining keeps its clients), else the scheduler's choice among the up,
/// weighted, untried ones. Backups stand by while another backend of the
/// group is up with a weight (the rule of `planner::backups_serve`): a
/// cookie naming one is then rescheduled.
fn choose(
    group: &Group,
    health: &watch::Receiver<Health>,
    sticky: Option<&str>,
    key: Option<u64>,
    tried: &Tried,
) -> Option<usize> {
    let h = health.borrow();
    let standing_by = group.has_backup
        && group
            .backends
            .iter()
            .any(|b| !b.backup && b.weight > 0 && h.is_up(&b.key));
    let usable = |i: usize| {
        let b = &group.backends[i];
        !tried.contains(i) && (!b.backup || !standing_by) && h.is_up(&b.key)
    };
    if let Some(value) = sticky {
        // The first id naming a backend of this group (the others are
        // other groups'; see `persist`).
        let named =
            persist::ids(value).find_map(|id| group.backends.iter().position(|b| b.id == id));
        if let Some(i) = named {
            if usable(i) {
                return Some(i);
            }
        }
    }
    let in_flight = |i: usize| group.backends[i].in_flight.load(Ordering::Relaxed);
    group.balancer.pick_by(&usable, &in_flight, key)
}

/// The backends a request has tried, without allocating for the first few.
#[derive(Default)]
struct Tried {
    first: [usize; 4],
    len: usize,
    more: Vec<usize>,
}

impl Tried {
    fn push(&mut self, i: usize) {
        if self.len < self.first.len() {
            self.first[self.len] = i;
        } else {
            self.more.push(i);
        }
        self.len += 1;
    }

    fn contains(&self, i: usize) -> bool {
        self.first[..self.len.min(self.first.len())].contains(&i) || self.more.contains(&i)
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// GET, HEAD, OPTIONS, TRACE, PUT, DELETE (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

async fn forward(
    mut req: Request<Incoming>,
    rt: &Runtime,
    conn: &Arc<Conn>,
    shared: &Shared,
    group: &Group,
    upgrade: bool,
) -> Outcome {
    let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path_and_query = path_and_query(&parts.uri);
    let sticky = rt
        .persistence
        .as_ref()
        .and_then(|p| p.on_request(&mut parts.headers));
    let key = hash_of(rt, &parts.headers);
    // Only gzip looks at what the client accepts.
    let mut accept = HeaderMap::new();
    if rt.l7.gzip {
        for v in parts.headers.get_all(ACCEPT_ENCODING) {
            accept.append(ACCEPT_ENCODING, v.clone());
        }
    }
    // A request target with a host (HTTP/1.1 absolute-form, HTTP/2
    // :authority) overrides any Host field (RFC 9112 §3.2.2, RFC 9113
    // §8.3.1): the backend gets the host the request was routed by.
    if let Some(v) = parts.uri.authority().and_then(headers::host_value) {
        parts.headers.insert(HOST, v);
    }
    let fwd = ForwardedValues {
        client: conn.client_value.clone(),
        proto: HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        port: rt.forwarded_port.clone(),
    };
    headers::to_backend_values(&mut parts.headers, &fwd, upgrade);
    let version = if parts.version == Version::HTTP_10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // A body of unknown length (HTTP/1.1 chunks, HTTP/2 without
    // content-length) goes out in chunks, said so: unasked, the client
    // library chunks only the bodies of methods that usually have one,
    // and sends a GET's or HEAD's as none (the body was lost).
    if !upgrade
        && version == Version::HTTP_11
        && !hyper::body::Body::is_end_stream(&body)
        && hyper::body::Body::size_hint(&body).exact().is_none()
    {
        parts
            .headers
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    // HTTP/1.0 clients may send no Host: each backend gets its address.
    let add_host = !parts.headers.contains_key(HOST);
    let body = ReplayBody::new(body, conn, idempotent(&parts.method));
    let mut tried = Tried::default();
    // The backend of the last failed attempt, and how long it took.
    let mut last_failure: Option<(SocketAddr, Duration)> = None;
    // The header, cloned for an attempt only while a later one may need it
    // again (a reset idempotent request goes to the next backend); else
    // moved.
    let mut headers = Some(parts.headers);
    // The backend whose pooled connection failed under the request, to be
    // tried again on a new connection (once per request).
    let mut again: Option<usize> = None;
    let mut fresh_tried = false;

    loop {
        let fresh = again.is_some();
        let chosen = again
            .take()
            .or_else(|| choose(group, &shared.health, sticky.as_deref(), key, &tried));
        let Some(i) = chosen else {
            return match last_failure {
                None => {
                    warn!(listener = %rt.name, group = %group.name, "no healthy backend");
                    Outcome::local(pages::error(StatusCode::SERVICE_UNAVAILABLE, false))
                }
                // Logged with the backend that failed last, as a failure
                // that is not retried.
                Some((addr, took)) => Outcome::upstream_error(StatusCode::BAD_GATEWAY, addr, took),
            };
        };
        if !fresh {
            tried.push(i);
        }
        let backend = &group.backends[i];
        // Cloned while another attempt may send the request after this one
        // sent it: an idempotent request after a reset (to the next
        // backend) or after its pooled connection failed (to the same
        // backend, once); a WebSocket handshake (not handed back after a
        // connect failure, unlike the others) after any failure.
        let more_backends = tried.len() < group.backends.len();
        let retriable = upgrade || idempotent(&parts.method);
        let make = |headers: &mut Option<HeaderMap>, pooled: bool| {
            let keep = retriable && (more_backends || (pooled && !fresh_tried));
            let mut out = Request::new(if upgrade { empty() } else { body.attempt() });
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() =
                upstream::backend_uri(&parts.method, &backend.authority, &path_and_query);
            *out.version_mut() = version;
            *out.headers_mut() = if keep {
                headers.clone().unwrap_or_default()
            } else {
                headers.take().unwrap_or_default()
            };
            if add_host && !upgrade {
                out.headers_mut().insert(HOST, backend.pool.host().clone());
            }
            out
        };

        let in_flight = InFlight::new(&backend.in_flight);
        let sent = tokio::time::Instant::now();
        let result = if upgrade {
            let limits = websocket::Limits {
                connect: rt.l7.backend_connect_timeout,
                response: rt.l7.backend_response_timeout,
                idle: rt.tunnel_idle,
            };
            let cancel = conn.stop.clone();
            // Boxed: rare, and large enough to make every request's future
            // (moved a few times per request) larger.
            Box::pin(websocket::open(
                backend.addr,
                make(&mut headers, false),
                &mut client_upgrade,
                limits,
                cancel,
                InFlight::new(&backend.in_flight),
            ))
            .await
            .map(|r| r.map(|b| ResponseBody::Upstream(UpstreamBody::unpooled(b))))
            .map_err(|f| (f, None))
        } else {
            upstream::send(
                &backend.pool,
                fresh,
                |pooled| make(&mut headers, pooled),
                rt.l7.backend_response_timeout,
                body.progress(),
            )
            .await
            .map(|r| r.map(ResponseBody::Upstream))
        };
        let result = result.map_err(|(f, unsent)| {
            // Not sent: its header goes to the next attempt.
            if let Some(req) = unsent {
                let mut h = req.into_parts().0.headers;
                if add_host && !upgrade {
                    h.remove(HOST);
                }
                headers = Some(h);
            }
            f
        });
        match result {
            Ok(res) => {
                let elapsed = sent.elapsed();
                rt.metrics.upstream_latency(elapsed);
                let (mut rparts, mut rbody) = res.into_parts();
                if headers::other_transfer_coding(&rparts.headers) {
                    warn!(listener = %rt.name, backend = %backend.addr, "response with a transfer coding other than chunked");
                    return Outcome::upstream_error(StatusCode::BAD_GATEWAY, backend.addr, elapsed);
                }
                let switching = rparts.status == StatusCode::SWITCHING_PROTOCOLS;
                if switching && !upgrade {
                    // A switch the client never asked for (and that HTTP/2
                    // cannot carry): not the client's to handle.
                    warn!(listener = %rt.name, backend = %backend.addr, "101 without an upgrade request");
                    return Outcome::upstream_error(StatusCode::BAD_GATEWAY, backend.addr, elapsed);
                }
                if switching {
                    // The connection becomes the tunnel's: its reads and
                    // half-closes are the tunnel's, none to discard.
                    conn.linger.never();
                }
                headers::to_client(&mut rparts.headers, switching);
                if let Some(p) = &rt.persistence {
                    p.on_response(
                        rparts.status,
                        &mut rparts.headers,
                        &backend.id,
                        sticky.as_deref(),
                        &|id| group.backends.iter().any(|b| b.id == id),
                        conn.tls,
                    );
                }
                if rt.l7.gzip {
                    use super::gzip::{self, Plan};
                    match gzip::plan(&accept, rparts.status, &rparts.headers) {
                        Plan::Untouched => {}
                        Plan::Vary => gzip::add_vary(&mut rparts.headers),
                        // The header its GET would get, and no body.
                        Plan::Compress if parts.method == Method::HEAD => {
                            gzip::compressed_header(&mut rparts.headers)
                        }
                        Plan::Compress => {
                            rbody = ResponseBody::Other(gzip::compress(
                                &mut rparts.headers,
                                boxed(rbody),
                            ));
                        }
                    }
                }
                return Outcome {
                    response: Response::from_parts(rparts, rbody),
                    upstream: Some(backend.addr),
                    upstream_time: Some(elapsed),
                    in_flight: Some(in_flight),
                };
            }
            Err(Failure::ClientTimeout(t)) => {
                // As nginx's `client_body_timeout`: 408, and the HTTP/1
                // connection, left in the middle of a body, closed.
                debug!(listener = %rt.name, backend = %backend.addr, "no request body bytes from the client for {t:?}");
                return Outcome {
                    upstream: Some(backend.addr),
                    upstream_time: Some(sent.elapsed()),
                    ..Outcome::local(pages::error(
                        StatusCode::REQUEST_TIMEOUT,
                        parts.version != Version::HTTP_2,
                    ))
                };
            }
            Err(Failure::Timeout(t)) => {
                warn!(listener = %rt.name, backend = %backend.addr, "no response within {t:?}");
                return Outcome::upstream_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    backend.addr,
                    sent.elapsed(),
                );
            }
            Err(f) if body.client_failed() => {
                // The client's body broke off (a malformed chunk, a length
                // it did not keep to) while it went out: the client's
                // error, answered as nginx answers an invalid chunked
                // body, not a failure of the backend (502, warned about)
                // nor a reason to try another. Its HTTP/1 connection is
                // out of step: closed.
                debug!(listener = %rt.name, backend = %backend.addr, "the client's request body failed: {f}");
                return Outcome {
                    upstream: Some(backend.addr),
                    upstream_time: Some(sent.elapsed()),
                    ..Outcome::local(pages::error(
                        StatusCode::BAD_REQUEST,
                        parts.version != Version::HTTP_2,
                    ))
                };
            }
            Err(Failure::Stale(e))
                if !fresh_tried && idempotent(&parts.method) && body.replayable() =>
            {
                // Most likely the backend closed the idle connection as the
                // request went out (its keep-alive timeout ran out): no
                // reason to give up on it, nor to count it as failed. An
                // idempotent request may be sent again (RFC 9110 §9.2.2),
                // as Go's and curl's clients do; on a new connection, so
                // that another stale one cannot fail it again.
                debug!(listener = %rt.name, backend = %backend.addr, "pooled connection failed ({e}), sending again on a new one");
                fresh_tried = true;
                again = Some(i);
            }
            Err(f) => {
                warn!(listener = %rt.name, backend = %backend.addr, "{f}");
                // A connect failure sent nothing: any request may go to the
                // next backend. After a reset the backend may have acted on
                // it: only idempotent ones may.
                let retry = match &f {
                    Failure::Connect(_) => body.replayable(),
                    _ => idempotent(&parts.method) && body.replayable(),
                };
                if !retry {
                    return Outcome::upstream_error(
                        StatusCode::BAD_GATEWAY,
                        backend.addr,
                        sent.elapsed(),
                    );
                }
                last_failure = Some((backend.addr, sent.elapsed()));
            }
        }
    }
}
