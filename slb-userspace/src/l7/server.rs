//! Client connections: accept, TLS handshake (https), HTTP/1.1 or HTTP/2
//! (detected), keep-alive idle timeout, request limit per connection,
//! graceful close on shutdown or when the listener is removed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::access::{self, Entry};
use super::idle::{Activity, Watched};
use super::linger::{self, Lingering};
use super::service::{self, Conn, Shared};
use super::state::Runtime;
use super::upstream::error_chain;

/// Header size limits up to this keep hyper's default number of header
/// fields per request (100, parsed on the stack); larger limits allow one
/// field per 64 bytes. More fields get hyper's own 431.
const DEFAULT_HEADER_SIZE: u32 = 16 * 1024;

/// `max_headers` for a header size limit (`None`: hyper's default).
fn max_headers(max_header_size: u32) -> Option<usize> {
    (max_header_size > DEFAULT_HEADER_SIZE).then_some(max_header_size as usize / 64)
}
/// After a shutdown began, connections still busy this long are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts connections until `stop` is cancelled. Each connection's task
/// is in `tracker` (all of the proxy's) and in `conns` (the listener's).
pub async fn accept_loop(
    listener: TcpListener,
    runtime: watch::Receiver<Arc<Runtime>>,
    stop: CancellationToken,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    conns: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let rt = runtime.borrow().clone();
                if !rt.admits(peer.ip()) {
                    // Closed at once, nothing answered (as the XDP
                    // program drops an L4 listener's refused packets).
                    debug!(listener = %rt.name, %peer, "refused by the ACL");
                    rt.metrics.acl_refused();
                    continue;
                }
                let _ = tcp.set_nodelay(true);
                tracker.spawn(conns.track_future(serve(
                    tcp,
                    peer,
                    runtime.clone(),
                    stop.clone(),
                    shared.clone(),
                )));
            }
            Err(e) => {
                // Out of descriptors or memory: wait rather than spin.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    runtime: watch::Receiver<Arc<Runtime>>,
    stop: CancellationToken,
    shared: Arc<Shared>,
) {
    let rt = runtime.borrow().clone();
    let activity = Activity::new();
    let state = Arc::new(Conn::new(
        peer,
        rt.tls.is_some(),
        activity.clone(),
        stop.clone(),
    ));
    // Below TLS: a TLS connection's close lingers too, after its
    // close_notify.
    let io = Watched::new(Lingering::new(tcp, state.clone()), activity.clone());
    match rt.tls.clone() {
        None => drive(io, false, state, activity, runtime, stop, shared).await,
        Some(cfg) => {
            let handshake = TlsAcceptor::from(cfg).accept(io);
            let handshake = tokio::time::timeout(rt.l7.request_header_timeout, handshake);
            // A shutdown, or a reload removing the listener, closes a
            // connection still in its handshake at once: no request can
            // have come on it yet (as an idle plain connection is closed),
            // and its listener's address is draining until it ends.
            let done = tokio::select! {
                r = handshake => r,
                () = stop.cancelled() => {
                    debug!(listener = %rt.name, %peer, "closing: shutting down during the TLS handshake");
                    return;
                }
            };
            match done {
                Ok(Ok(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    if h2 {
                        state.set_h2();
                    }
                    drive(tls, h2, state, activity, runtime, stop, shared).await
                }
                Ok(Err(e)) => {
                    rt.metrics.tls_failed();
                    debug!(listener = %rt.name, %peer, "TLS handshake failed: {e}");
                }
                Err(_) => {
                    rt.metrics.tls_failed();
                    debug!(listener = %rt.name, %peer, "TLS handshake timed out");
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive<I>(
    io: I,
    h2: bool,
    state: Arc<Conn>,
    activity: Activity,
    runtime: watch::Receiver<Arc<Runtime>>,
    stop: CancellationToken,
    shared: Arc<Shared>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let rt = runtime.borrow().clone();
    let peer = state.peer;
    let io = Preface::new(io, (!h2).then(|| state.clone()));
    // The header timeout of the first request starts with its first bytes,
    // not with the TLS handshake's.
    activity.rearm();
    let svc = {
        let state = state.clone();
        let shared = shared.clone();
        let runtime = runtime.clone();
        service_fn(move |req| {
            // Each request uses the listener's settings of the moment: a
            // reload applies to open connections too.
            let rt = runtime.borrow().clone();
            let state = state.clone();
            let shared = shared.clone();
            async move { service::handle(req, rt, state, shared).await }
        })
    };

    // Room for a header a bit over the limit, so that the proxy answers
    // 431 with its page instead of the server library's bare one.
    let max_header = rt.l7.max_header_size as usize;
    let buffer = (2 * max_header + 8192).max(8192);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The request header timeout is kept below (hyper's would arm a
        // timer for every request).
        .header_read_timeout(None)
        .max_buf_size(buffer)
        // Header and body in one buffer, one write(2): for the small
        // responses that dominate, copying the body costs less than the
        // kernel's writev of separate pieces (measured: about 0.8 µs less
        // system time per proxied request).
        .writev(false)
        .keep_alive(true);
    if let Some(n) = max_headers(rt.l7.max_header_size) {
        builder.http1().max_headers(n);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);

    let idle = rt.l7.client_idle_timeout;
    let header_timeout = rt.l7.request_header_timeout;
    let mut closing = false;
    let mut hard_deadline: Option<Instant> = None;
    // When the connection counts as idle if nothing changes. HTTP/1: its
    // last byte plus the idle timeout (bytes after a response are the next
    // request's header, which the header timeout then bounds). HTTP/2: its
    // last request's end (or its first bytes) plus the idle timeout,
    // whatever frames came since: PINGs or SETTINGS alone would otherwise
    // keep a connection without requests open for ever.
    let idle_deadline = || match state.waiting_since() {
        Some(since) if state.is_h2() => since + idle,
        _ => activity.deadline(idle),
    };
    loop {
        // While a request runs, look again after the shorter timeout: the
        // header timeout starts when its response ends.
        let deadline = if state.linger.lingering() {
            // Bounded by the lingering's own limits (and a shutdown's
            // grace): a client still sending is no idle one.
            Instant::now() + linger::TIME
        } else if state.active.load(Ordering::Relaxed) > 0 {
            let next = Instant::now() + idle.min(header_timeout);
            state.stall_deadline(idle).map_or(next, |d| d.min(next))
        } else {
            let quiet = idle_deadline() + Activity::slack();
            // Before its first bytes a connection's header deadline is not
            // known, and nothing wakes this loop when they come: look again
            // within the header timeout, or a header trickled in slowly
            // would be cut off only at the (longer) idle timeout.
            state
                .header_deadline(header_timeout)
                .unwrap_or_else(|| Instant::now() + header_timeout)
                .min(quiet)
        };
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(listener = %rt.name, %peer, "connection ended: {}", error_chain(&*e));
                    if let Some(status) = e.downcast_ref::<hyper::Error>().and_then(automatic_answer) {
                        // Never reached the service: counted and logged here.
                        let rt = runtime.borrow().clone();
                        unparsed_request(&rt, &state, status);
                    }
                }
                return;
            }
            () = state.close.notified(), if !closing => {
                // The request limit is reached: finish what runs, then close.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = stop.cancelled(), if hard_deadline.is_none() => {
                if state.linger.lingering() {
                    // Its answer went out: a shutdown (or the listener's
                    // removal) ends the lingering at once, as nginx's.
                    debug!(listener = %rt.name, %peer, "shutting down, lingering close cut short");
                    return;
                }
                hard_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                if !closing {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = sleep_until_opt(hard_deadline), if hard_deadline.is_some() => {
                debug!(listener = %rt.name, %peer, "still busy {SHUTDOWN_GRACE:?} after shutdown, dropping");
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if state.linger.lingering() {
                    continue;
                }
                let now = Instant::now();
                if state.active.load(Ordering::Relaxed) > 0 && state.stalled(idle) {
                    // Closing gracefully would wait for the very responses
                    // the client does not take.
                    debug!(listener = %rt.name, %peer, "client took nothing of its response for {idle:?}, dropping");
                    return;
                }
                let quiet = state.active.load(Ordering::Relaxed) == 0
                    && now >= idle_deadline() + Activity::slack();
                if closing {
                    // Closing gracefully needs the client's part too (an
                    // HTTP/2 client must acknowledge the shutdown); one
                    // that stays quiet instead is dropped.
                    if quiet {
                        debug!(listener = %rt.name, %peer, "quiet while closing, dropping");
                        return;
                    }
                    continue;
                }
                if state.header_deadline(header_timeout).is_some_and(|d| now >= d) {
                    // As hyper's header read timeout: the connection is
                    // dropped, nothing is answered.
                    debug!(listener = %rt.name, %peer, "no request header within {header_timeout:?}, closing");
                    return;
                }
                if quiet {
                    debug!(listener = %rt.name, %peer, "idle for {idle:?}, closing");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The status of the answer hyper itself wrote before ending the
/// connection with `e`, if any: an HTTP/1 request head it cannot parse gets
/// a bare 400 (bad method, target, version or header), 431 (head larger
/// than the read buffer, or more fields than `max_headers`) or 414 (a
/// target over 64 KiB), with no body. (hyper writes it for every head that
/// fails to parse, as it reads a head only when no response is being
/// written; when that write fails, the connection ends with the write's
/// error instead, and nothing is counted.)
/// An HTTP/2 preface sent over HTTP/1 gets nothing, nor do failures to
/// read or write, a client closing mid-header, or HTTP/2 errors (streams
/// reset, not answered).
fn automatic_answer(e: &hyper::Error) -> Option<u16> {
    if !e.is_parse() || e.is_parse_version_h2() || e.is_parse_status() {
        return None;
    }
    if e.is_parse_too_large() {
        // The public API tells "too large" apart only by its message;
        // the tests check the status sent against the one counted and logged.
        return Some(if e.to_string().contains("URI too long") {
            414
        } else {
            431
        });
    }
    Some(400)
}

/// Counts and logs a request hyper answered itself with `status`: no
/// request line, host or upstream is known, and the answer has no body.
fn unparsed_request(rt: &Runtime, state: &Conn, status: u16) {
    rt.metrics.request(status);
    if !tracing::enabled!(target: access::TARGET, tracing::Level::INFO) {
        return;
    }
    // Since its first bytes (or, on a kept-alive connection, since the
    // previous response ended: the time of arrival is not known better).
    let total = state
        .waiting_since()
        .map_or(Duration::ZERO, |since| since.elapsed());
    Entry {
        time: SystemTime::now()
            .checked_sub(total)
            .unwrap_or_else(SystemTime::now),
        client: state.peer.ip(),
        host: None,
        request: None,
        status,
        bytes: 0,
        upstream: None,
        upstream_time: None,
        total,
    }
    .log();
}

/// The client preface of HTTP/2 (RFC 9113 §3.4), which the server
/// library recognises a connection without ALPN as HTTP/2 by.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Marks its connection as HTTP/2 as soon as the client preface came
/// (prior knowledge, mostly h2c): its timeouts are HTTP/2's from then on,
/// not those of an HTTP/1 connection waiting for its first request
/// header, which PINGs or SETTINGS would keep open until the header
/// timeout, without a request ever coming.
struct Preface<I> {
    inner: I,
    /// `None` once the protocol is known.
    conn: Option<Arc<Conn>>,
    /// Bytes of the preface matched so far.
    matched: usize,
}

impl<I> Preface<I> {
    /// `conn`: `None` when the protocol is known already (ALPN).
    fn new(inner: I, conn: Option<Arc<Conn>>) -> Self {
        Self {
            inner,
            conn,
            matched: 0,
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        let want = &H2_PREFACE[self.matched..];
        let n = want.len().min(bytes.len());
        if bytes[..n] != want[..n] {
            self.conn = None;
            return;
        }
        self.matched += n;
        if self.matched == H2_PREFACE.len() {
            if let Some(conn) = self.conn.take() {
                conn.set_h2();
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Preface<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.conn.is_some() && buf.filled().len() > before {
            let this = &mut *self;
            this.saw(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Preface<I> {
    super::delegate::delegate_writes!(inner);

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
