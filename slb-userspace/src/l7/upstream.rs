//! Requests to backends: a pool of keep-alive HTTP/1.1 connections per
//! backend and listener, a connect timeout per attempt, a response
//! timeout, and a request body that can be sent again when an attempt
//! failed before the body was read.
//!
//! The pool keeps the idle connections of a backend in a short list: a
//! request takes the most recently used one that is still open (or
//! connects), sends on it, and the response body puts it back once it has
//! been read to its end. A connection whose response was not read to the
//! end (client gone, error) is closed. Idle connections are closed after
//! `POOL_IDLE`; the backend may close them earlier. A pooled connection
//! hyper already knows to be closed hands the request back unsent, and it
//! goes out on another connection transparently. A close that races the
//! request (hyper writes it before it sees the close) cannot be told from
//! a reset after sending: it fails the attempt as [`Failure::Stale`], and
//! the caller's rules apply (an idempotent request goes out again on a new
//! connection, else 502).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::{
    http1::{self, SendRequest},
    TrySendError,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::body::{Body, BoxError};
use super::clock;
use super::service::Conn;

/// Idle pooled connections are closed after this; backends' own keep-alive
/// timeouts are usually shorter, and a closed one is simply not reused.
const POOL_IDLE: Duration = Duration::from_secs(60);
const POOL_MAX_IDLE_PER_BACKEND: usize = 256;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Nothing was sent: refused, unreachable, connect timeout.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The connection failed after (part of) the request was sent.
    #[error("backend failed: {0}")]
    Reset(String),
    /// A pooled connection failed after (part of) the request was sent on
    /// it, before the response header: most likely the backend closed it
    /// for idleness as the request went out (its keep-alive timeout is
    /// usually shorter than the pool's), not a failure of the backend.
    #[error("pooled connection failed: {0}")]
    Stale(String),
    /// No response header within the response timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The response timeout ran out while the request body waited for the
    /// client's next bytes: the client stopped sending, not the backend
    /// answering (it is waiting for the rest of the body).
    #[error("no request body bytes from the client for {0:?}")]
    ClientTimeout(Duration),
}

/// Keep-alive connections to one backend (of one listener).
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    connect_timeout: Duration,
    /// `Host` for requests that have none (HTTP/1.0 clients): the backend's
    /// address, without the port when it is 80.
    host: HeaderValue,
    /// Most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// A task closes connections idle longer than `POOL_IDLE`.
    reaper: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    tx: SendRequest<Body>,
    /// Coarse milliseconds (see [`clock::coarse_ms`]).
    since: u64,
}

impl Pool {
    pub fn new(addr: SocketAddr, connect_timeout: Duration) -> Arc<Self> {
        let host = if addr.port() == 80 {
            match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            }
        } else {
            addr.to_string()
        };
        Arc::new(Self {
            addr,
            connect_timeout,
            // An address is always a valid header value.
            host: HeaderValue::from_maybe_shared(Bytes::from(host))
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            idle: Mutex::new(Vec::new()),
            reaper: AtomicBool::new(false),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The value of `Host` for a request that has none.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // Nothing panics while holding the lock; recover if it did.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection ready for a request: an idle one (unless `fresh`),
    /// else a new one.
    pub async fn checkout(self: &Arc<Self>, fresh: bool) -> Result<Checkout, Failure> {
        if let Some(tx) = (!fresh).then(|| self.take_idle()).flatten() {
            return Ok(Checkout {
                pool: self.clone(),
                tx,
                reused: true,
            });
        }
        // Boxed: connecting is rare with keep-alive, and its future would
        // otherwise make every request's future larger.
        Box::pin(self.connect()).await
    }

    /// The most recently used idle connection that is open and ready.
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let now = clock::coarse_ms();
        let mut idle = self.idle();
        while let Some(c) = idle.pop() {
            if c.tx.is_ready() && now.saturating_sub(c.since) < POOL_IDLE.as_millis() as u64 {
                return Some(c.tx);
            }
            // Closed by the backend, or expired: dropping it closes it.
        }
        None
    }

    async fn connect(self: &Arc<Self>) -> Result<Checkout, Failure> {
        let tcp =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr)).await {
                Err(_) => {
                    return Err(Failure::Connect(format!(
                        "tcp connect error: timed out after {:?}",
                        self.connect_timeout
                    )))
                }
                Ok(Err(e)) => return Err(Failure::Connect(format!("tcp connect error: {e}"))),
                Ok(Ok(s)) => s,
            };
        let _ = tcp.set_nodelay(true);
        let (tx, conn) = http1::Builder::new()
            // One write(2) of header and body (see the server's builder).
            .writev(false)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Failure::Connect(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!("backend connection: {}", error_chain(&e));
            }
        });
        Ok(Checkout {
            pool: self.clone(),
            tx,
            reused: false,
        })
    }

    /// Puts back a connection whose exchange is over.
    fn put(self: &Arc<Self>, tx: SendRequest<Body>) {
        if !tx.is_ready() {
            if tx.is_closed() {
                return;
            }
            // Still finishing the exchange (e.g. sending the rest of the
            // request body): back once it is ready, unless it closes.
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = Arc::downgrade(self);
            rt.spawn(async move {
                let mut tx = tx;
                if tx.ready().await.is_ok() {
                    if let Some(pool) = pool.upgrade() {
                        pool.put(tx);
                    }
                }
            });
            return;
        }
        let now = clock::coarse_ms();
        {
            let mut idle = self.idle();
            if idle.len() >= POOL_MAX_IDLE_PER_BACKEND {
                return;
            }
            idle.push(Idle { tx, since: now });
        }
        if !self.reaper.load(Ordering::Relaxed) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                if !self.reaper.swap(true, Ordering::Relaxed) {
                    rt.spawn(reap(Arc::downgrade(self)));
                }
            }
        }
    }

    /// Closes the connections idle for longer than `POOL_IDLE`, and those
    /// the backend closed.
    fn reap(&self) {
        let now = clock::coarse_ms();
        self.idle().retain(|c| {
            !c.tx.is_closed() && now.saturating_sub(c.since) < POOL_IDLE.as_millis() as u64
        });
    }
}

/// Runs while the pool exists.
async fn reap(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(POOL_IDLE).await;
        match pool.upgrade() {
            Some(p) => p.reap(),
            None => return,
        }
    }
}

/// A connection taken from a pool for one request.
pub struct Checkout {
    pool: Arc<Pool>,
    tx: SendRequest<Body>,
    /// It served requests before (it may have been closed meanwhile).
    reused: bool,
}

/// A failed exchange, with the request when it was not sent (it may go
/// to another backend as it is).
pub type SendError = (Failure, Option<Request<Body>>);

impl Checkout {
    /// Sends `req` (origin-form URI, `Host` set). A reused connection found
    /// closed before the request was written is replaced (nothing was
    /// sent); other failures are the caller's.
    pub fn send(
        self,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, SendError>> {
        let Checkout {
            pool,
            mut tx,
            reused,
        } = self;
        // Handed to the connection now; the future only waits for the
        // answer (and holds no copy of the request).
        let sent = tx.try_send_request(req);
        async move {
            match sent.await {
                Ok(res) => Ok(res.map(|body| UpstreamBody {
                    body,
                    conn: Some((pool, tx)),
                    stall: None,
                })),
                // Boxed: the rare path would otherwise make every request's
                // future (moved a few times per request) larger.
                Err(e) => {
                    drop(tx);
                    Box::pin(Self::resend(pool, reused, e)).await
                }
            }
        }
    }

    /// After a failed first attempt of [`Checkout::send`]: on a reused
    /// connection the request goes out again on another one, as long as
    /// nothing was sent.
    async fn resend(
        pool: Arc<Pool>,
        mut reused: bool,
        mut e: TrySendError<Request<Body>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let back = match e.take_message() {
                Some(back) if reused => back,
                Some(back) => {
                    return Err((Failure::Connect(error_chain(e.error())), Some(back)));
                }
                None if reused => return Err((Failure::Stale(error_chain(e.error())), None)),
                None => return Err((Failure::Reset(error_chain(e.error())), None)),
            };
            debug!(
                "pooled connection to {} closed: {}",
                pool.addr,
                error_chain(e.error())
            );
            let mut next = match pool.checkout(false).await {
                Ok(c) => c,
                Err(f) => return Err((f, Some(back))),
            };
            match next.tx.try_send_request(back).await {
                Ok(res) => {
                    return Ok(res.map(|body| UpstreamBody {
                        body,
                        conn: Some((next.pool, next.tx)),
                        stall: None,
                    }))
                }
                Err(again) => {
                    reused = next.reused;
                    e = again;
                }
            }
        }
    }
}

/// Sends a request to `pool`'s backend: a connection first (an idle one,
/// or a new one within the pool's connect timeout), then at most `timeout`
/// for the response header. The response timeout starts once the request
/// can go out, not before the connect: a hanging connect is a connect
/// failure (the next backend gets the request) even when the response
/// timeout is the shorter one, as nginx's and HAProxy's connect and server
/// timeouts are separate. It counts from the request body's last bytes
/// (`body_progress`: coarse ns, see [`ReplayBody::progress`]): an
/// upload slower than the timeout is not a slow backend while it moves.
/// The same holds for the response body's pauses (see [`Stall`]).
/// `make` builds the request once a connection is there (a failed connect
/// leaves it unbuilt); it is told whether the connection is a pooled one
/// (which may fail as [`Failure::Stale`]). With `fresh`, the request goes
/// out on a new connection.
pub async fn send(
    pool: &Arc<Pool>,
    fresh: bool,
    make: impl FnOnce(bool) -> Request<Body>,
    timeout: Duration,
    body_progress: Progress,
) -> Result<Response<UpstreamBody>, SendError> {
    let conn = pool.checkout(fresh).await.map_err(|f| (f, None))?;
    let start = clock::coarse_ns();
    let req = make(conn.reused);
    let sent = conn.send(req);
    tokio::pin!(sent);
    let mut wait = timeout;
    loop {
        if let Ok(r) = tokio::time::timeout(wait, &mut sent).await {
            return r.map(|mut res| {
                res.body_mut().stall = Some(Stall {
                    limit: timeout,
                    request: body_progress,
                    timer: None,
                });
                res
            });
        }
        match body_progress.left_of(timeout, start) {
            Some(left) => wait = left,
            None if body_progress.waiting_on_client() => {
                return Err((Failure::ClientTimeout(timeout), None))
            }
            None => return Err((Failure::Timeout(timeout), None)),
        }
    }
}

/// A backend response's body; its connection goes back to the pool when
/// the body was read to its end. A body that, once asked for more, sends
/// nothing for the response timeout fails (see [`Stall`]).
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<(Arc<Pool>, SendRequest<Body>)>,
    stall: Option<Stall>,
}

/// How long a response body may keep the proxy waiting for its next bytes:
/// the response timeout, as nginx's `proxy_read_timeout` and HAProxy's
/// `timeout server` count inactivity during the body too. Without it a
/// backend that stalls mid-body would hold the client's connection (busy
/// with a request: never idle) and its own for as long as it stays open.
/// Only time spent waiting on the backend counts: a client reading
/// slowly leaves the body unpolled, and a client still sending its request
/// body keeps a backend that answers once it has it all (or, full duplex,
/// streams its answer to what it gets) waiting, neither is a stall.
struct Stall {
    limit: Duration,
    /// The request body's last progress: the wait counts from there too.
    request: Progress,
    /// Armed while the body waits on the backend; kept to be reset.
    timer: Option<(bool, Pin<Box<tokio::time::Sleep>>)>,
}

impl Stall {
    /// The body is waiting: `true` once it has waited for `limit`.
    fn waiting(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let (armed, timer) = self.timer.get_or_insert_with(|| {
            (
                true,
                Box::pin(tokio::time::sleep_until(
                    tokio::time::Instant::now() + limit,
                )),
            )
        });
        if !*armed {
            timer.as_mut().reset(tokio::time::Instant::now() + limit);
            *armed = true;
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        // Read only now, not on every wait: the upload may have moved
        // since the wait began.
        let Some(left) = self.request.left_of(limit, 0) else {
            return true;
        };
        timer.as_mut().reset(tokio::time::Instant::now() + left);
        timer.as_mut().poll(cx).is_ready()
    }

    /// Bytes came: the next wait starts afresh.
    fn moved(&mut self) {
        if let Some((armed, _)) = &mut self.timer {
            *armed = false;
        }
    }
}

impl UpstreamBody {
    /// A body whose connection is not pooled (WebSocket handshakes).
    pub fn unpooled(body: Incoming) -> Self {
        Self {
            body,
            conn: None,
            stall: None,
        }
    }

    fn release(&mut self) {
        if let Some((pool, tx)) = self.conn.take() {
            pool.put(tx);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if this.body.is_end_stream() {
                    this.release();
                } else if let Some(stall) = &mut this.stall {
                    stall.moved();
                }
            }
            Poll::Ready(None) => this.release(),
            // The connection is closed by dropping it.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            Poll::Pending => {
                if let Some(stall) = &mut this.stall {
                    if stall.waiting(cx) {
                        let limit = stall.limit;
                        this.stall = None;
                        let addr = this.conn.take().map(|(pool, _)| pool.addr);
                        debug!(backend = ?addr, "response body stalled for {limit:?}");
                        return Poll::Ready(Some(Err(format!(
                            "backend sent nothing of the response body for {limit:?}"
                        )
                        .into())));
                    }
                }
            }
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to its end (or empty, as for HEAD, 204, 304): the connection
        // is good for another request. Otherwise dropping it closes it.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The request target sent to a backend: origin-form (`/path?query`), as
/// the client's; CONNECT: the backend's authority.
pub fn backend_uri(
    method: &http::Method,
    authority: &Authority,
    path_and_query: &PathAndQuery,
) -> http::Uri {
    let mut parts = http::uri::Parts::default();
    if *method == http::Method::CONNECT {
        parts.authority = Some(authority.clone());
    } else {
        parts.path_and_query = Some(path_and_query.clone());
    }
    // A path alone, or an authority alone: always a valid URI.
    http::Uri::from_parts(parts).unwrap_or_default()
}

/// The authority of a backend (`ip:port`, IPv6 in brackets).
pub fn authority(backend: SocketAddr) -> Authority {
    // A socket address always forms a valid authority.
    Authority::from_maybe_shared(Bytes::from(backend.to_string()))
        .unwrap_or_else(|_| Authority::from_static("invalid"))
}

/// The client's request body, shared by the attempts to send it.
///
/// Each attempt gets a view ([`ReplayBody::attempt`]) that reads the one
/// underlying body. Its first [`REPLAY_LIMIT`] bytes are kept as they are
/// read: an attempt after one that failed having read no more than that
/// (a pooled connection the backend closed under the request, a reset)
/// sends them again, then the rest as it comes. An empty body is sent by
/// every attempt as an empty body of its own.
pub struct ReplayBody(Option<Arc<Replay>>);

/// Request bodies up to this size can be sent again by a later attempt
/// (nginx buffers whole bodies to do the same; HAProxy retries only what
/// fits its buffer). A PUT or DELETE with a small JSON body is as
/// idempotent as a GET.
pub const REPLAY_LIMIT: usize = 64 * 1024;

struct Replay {
    slot: Mutex<Slot>,
    /// Told when the body was read to its end (its close need not linger).
    conn: Arc<Conn>,
    /// Bytes were read that are not kept: no attempt can send the whole
    /// body any more.
    lost: AtomicBool,
    /// Whether to keep what is read (only an idempotent request is sent
    /// again once its body was read).
    keep: bool,
    /// Coarse ns of the last frame read from the client's body (0: none).
    progress: AtomicU64,
    /// Reading the client's body failed (a malformed chunk...): an attempt
    /// that failed with it failed by the client's doing.
    failed: AtomicBool,
    /// The last read of the client's body found no bytes yet: an attempt
    /// waits on the client. (An attempt that stopped reading because the
    /// backend takes no more read its last bytes: not waiting.)
    waiting: AtomicBool,
}

struct Slot {
    /// `None` only in tests.
    body: Option<Incoming>,
    /// What was read of the body, while it fits [`REPLAY_LIMIT`].
    kept: Vec<u8>,
}

impl ReplayBody {
    /// `keep`: keep the body's first bytes for another attempt (see
    /// [`REPLAY_LIMIT`]).
    pub fn new(body: Incoming, conn: &Arc<Conn>, keep: bool) -> Self {
        if body.is_end_stream() {
            return Self(None);
        }
        Self(Some(Arc::new(Replay {
            slot: Mutex::new(Slot {
                body: Some(body),
                kept: Vec::new(),
            }),
            conn: conn.clone(),
            lost: AtomicBool::new(false),
            keep,
            progress: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        })))
    }

    /// When the body last moved on its way to a backend: the response
    /// timeout runs from there (see [`send`]).
    pub fn progress(&self) -> Progress {
        Progress(self.0.as_ref().map_or_else(Weak::new, Arc::downgrade))
    }

    /// A body for one attempt.
    pub fn attempt(&self) -> Body {
        match &self.0 {
            None => super::body::empty(),
            Some(r) => super::body::boxed(AttemptBody {
                replay: r.clone(),
                sent: 0,
            }),
        }
    }

    /// Did reading the client's body fail? An attempt that sent it then
    /// failed because of it, not because of the backend.
    pub fn client_failed(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|r| r.failed.load(Ordering::Acquire))
    }

    /// Can another attempt send the whole body?
    pub fn replayable(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|r| !r.lost.load(Ordering::Acquire))
    }
}

/// When a request body last moved on its way to a backend. Weak: the
/// response body keeps it, and must not keep the request body's stream
/// from closing; once no attempt sends the body, it moves no more.
#[derive(Clone, Default)]
pub struct Progress(Weak<Replay>);

impl Progress {
    /// Coarse ns of the last frame read from the client's body (0: none).
    fn last(&self) -> u64 {
        self.0
            .upgrade()
            .map_or(0, |r| r.progress.load(Ordering::Relaxed))
    }

    /// Is an attempt waiting for the client's next body bytes?
    fn waiting_on_client(&self) -> bool {
        self.0
            .upgrade()
            .is_some_and(|r| r.waiting.load(Ordering::Relaxed))
    }

    /// What is left of a wait of `limit` counted from `since` (coarse ns)
    /// or from the request body's last progress, whichever is later;
    /// `None` once it has all passed. The coarse clock lags by up to a
    /// tick: a wait that has run its whole time is not restarted for that.
    fn left_of(&self, limit: Duration, since: u64) -> Option<Duration> {
        let quiet = clock::coarse_ns().saturating_sub(since.max(self.last()));
        let quiet = Duration::from_nanos(quiet);
        (quiet + clock::resolution() < limit).then(|| limit - quiet)
    }
}

/// One attempt's view of a [`ReplayBody`].
struct AttemptBody {
    replay: Arc<Replay>,
    /// Bytes of `kept` this attempt has sent.
    sent: usize,
}

impl HttpBody for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let replay = &*this.replay;
        // Poisoned only if a poll panicked; the body is then unusable.
        let Ok(mut guard) = replay.slot.lock() else {
            return Poll::Ready(Some(Err("request body unavailable".into())));
        };
        let slot = &mut *guard;
        if this.sent < slot.kept.len() && !replay.lost.load(Ordering::Acquire) {
            // An earlier attempt read these: sent again first.
            let again = Bytes::copy_from_slice(&slot.kept[this.sent..]);
            this.sent = slot.kept.len();
            return Poll::Ready(Some(Ok(Frame::data(again))));
        }
        let polled = match slot.body.as_mut() {
            Some(body) => {
                let polled = Pin::new(&mut *body).poll_frame(cx).map_err(Into::into);
                // (A chunked body's end shows only as its end.)
                if matches!(polled, Poll::Ready(None))
                    || (polled.is_ready() && body.is_end_stream())
                {
                    replay.conn.linger.body_read();
                }
                polled
            }
            None => Poll::Ready(None),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let kept = match frame.data_ref() {
                Some(data) if replay.keep && slot.kept.len() + data.len() <= REPLAY_LIMIT => {
                    slot.kept.extend_from_slice(data);
                    this.sent = slot.kept.len();
                    true
                }
                // Too much to keep, or trailers (rare in requests).
                _ => false,
            };
            if !kept && !replay.lost.swap(true, Ordering::AcqRel) {
                slot.kept = Vec::new();
            }
        }
        if polled.is_ready() {
            replay.progress.store(clock::coarse_ns(), Ordering::Relaxed);
        }
        if let Poll::Ready(Some(Err(_))) = &polled {
            replay.failed.store(true, Ordering::Release);
        }
        replay.waiting.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.replay
            .slot
            .lock()
            .map(|g| {
                (self.sent >= g.kept.len() || self.replay.lost.load(Ordering::Acquire))
                    && g.body.as_ref().is_none_or(HttpBody::is_end_stream)
            })
            .unwrap_or(true)
    }

    fn size_hint(&self) -> SizeHint {
        let Ok(g) = self.replay.slot.lock() else {
            return SizeHint::default();
        };
        let mut hint = g.body.as_ref().map(HttpBody::size_hint).unwrap_or_default();
        if !self.replay.lost.load(Ordering::Acquire) {
            let again = g.kept.len().saturating_sub(self.sent) as u64;
            // Upper first: a lower bound above the upper one panics.
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + again);
            }
            hint.set_lower(hint.lower() + again);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::{Read, Write};

    /// Reads one request header (no body) from `s`.
    fn read_head(s: &mut std::net::TcpStream) {
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "request header incomplete");
            got.extend_from_slice(&b[..n]);
        }
    }

    fn get(pool: &Pool) -> Request<Body> {
        let mut req = Request::new(super::super::body::empty());
        *req.uri_mut() = "/".parse().unwrap();
        req.headers_mut()
            .insert(http::header::HOST, pool.host().clone());
        req
    }

    /// A reused connection that cannot take the request (here: busy with
    /// another one; in practice: closed meanwhile) hands it back unsent:
    /// it goes out on another connection.
    #[tokio::test]
    async fn request_refused_by_a_reused_connection_goes_out_on_another() {
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pool = Pool::new(backend.local_addr().unwrap(), Duration::from_secs(5));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            // The first connection takes a request and never answers.
            let (mut first, _) = backend.accept().unwrap();
            read_head(&mut first);
            let (mut second, _) = backend.accept().unwrap();
            read_head(&mut second);
            write!(second, "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb").unwrap();
            let _ = done_rx.recv();
        });
        let mut busy = pool.checkout(false).await.unwrap();
        let _pending = busy.tx.try_send_request(get(&pool));
        // Let the connection write that request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        busy.reused = true;
        let res = busy.send(get(&pool)).await.map_err(|(f, _)| f).unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "b");
        drop(done_tx);
        server.join().unwrap();
    }
    /// A backend that sends its response header at once and its body only
    /// once it has the whole request body is no stalled backend while the
    /// client's body still moves, even for longer than the response
    /// timeout; with no upload moving, the same pause is a stall.
    #[tokio::test]
    async fn a_response_body_waiting_for_a_moving_upload_is_no_stall() {
        const TIMEOUT: Duration = Duration::from_millis(200);
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pool = Pool::new(backend.local_addr().unwrap(), Duration::from_secs(5));
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = backend.accept().unwrap();
                read_head(&mut s);
                write!(s, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
                std::thread::sleep(TIMEOUT * 3);
                let _ = write!(s, "1\r\nb\r\n0\r\n\r\n");
            }
        });
        // A request body the client keeps sending (what `AttemptBody`
        // records of each frame it passes on).
        let upload = Arc::new(Replay {
            slot: Mutex::new(Slot {
                body: None,
                kept: Vec::new(),
            }),
            conn: Arc::new(Conn::new(
                "192.0.2.1:1234".parse().unwrap(),
                false,
                super::super::idle::Activity::new(),
                tokio_util::sync::CancellationToken::new(),
            )),
            lost: AtomicBool::new(true),
            keep: false,
            progress: AtomicU64::new(clock::coarse_ns()),
            failed: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        });
        let sending = {
            let upload = upload.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(TIMEOUT / 10).await;
                    upload.progress.store(clock::coarse_ns(), Ordering::Relaxed);
                }
            })
        };
        let res = send(
            &pool,
            true,
            |_| get(&pool),
            TIMEOUT,
            Progress(Arc::downgrade(&upload)),
        )
        .await
        .map_err(|(f, _)| f)
        .unwrap();
        let body = res
            .into_body()
            .collect()
            .await
            .expect("no stall")
            .to_bytes();
        assert_eq!(body, "b");
        sending.abort();

        let res = send(&pool, true, |_| get(&pool), TIMEOUT, Progress::default())
            .await
            .map_err(|(f, _)| f)
            .unwrap();
        let Err(e) = res.into_body().collect().await else {
            panic!("a stall");
        };
        assert!(e.to_string().contains("sent nothing"), "{e}");
        server.join().unwrap();
    }
}
