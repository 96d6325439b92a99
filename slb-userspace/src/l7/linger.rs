//! Lingering close of HTTP/1 client connections, as nginx's
//! `lingering_close`: a connection closed while its client may still be
//! sending (the proxy answered before reading the whole request body: 503,
//! a backend's early 413...) first closes its sending side, then reads and
//! discards what the client still sends, until the client closes too, it
//! stays quiet for [`TIMEOUT`], or [`TIME`] has passed. Closing at once
//! with unread bytes would make the kernel reset the connection, and a
//! client still writing its body would get the reset instead of the
//! answer (most report the failed write, never read the response).

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::service::Conn;

/// How long a lingering close may last in all (nginx's `lingering_time`).
pub const TIME: Duration = Duration::from_secs(30);
/// How long it waits for the client's next bytes (nginx's
/// `lingering_timeout`).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Reads in one go before giving other tasks a turn.
const READS_PER_POLL: usize = 64;
const BUF: usize = 16 * 1024;

/// Whether a connection's close is to linger, told by its requests.
#[derive(Debug, Default)]
pub struct Linger(AtomicU8);

/// Nothing of the client's is known to be left unread.
const QUIET: u8 = 0;
/// The request body may not have been read to its end.
const BODY: u8 = 1;
/// Never: HTTP/2 (GOAWAY ends it), or the connection became a tunnel,
/// whose reads and half-closes are the tunnel's.
const NEVER: u8 = 2;
/// Lingering now.
const LINGERING: u8 = 3;

impl Linger {
    /// An HTTP/1 request begins; `body`: it has a body. (A new request
    /// means the previous one's body was read to its end.)
    pub fn request(&self, body: bool) {
        if self.0.load(Ordering::Relaxed) != NEVER {
            self.0
                .store(if body { BODY } else { QUIET }, Ordering::Relaxed);
        }
    }

    /// The request body was read to its end.
    pub fn body_read(&self) {
        let _ = self
            .0
            .compare_exchange(BODY, QUIET, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The connection is never to linger.
    pub fn never(&self) {
        self.0.store(NEVER, Ordering::Relaxed);
    }

    /// Whether the connection is in its lingering close: only its limits
    /// (and a shutdown's grace) bound it, not the idle or header timeout.
    pub fn lingering(&self) -> bool {
        self.0.load(Ordering::Relaxed) == LINGERING
    }
}

/// A client connection's stream (below TLS) whose shutdown lingers when
/// its [`Conn`] may have left client bytes unread, or some are waiting.
/// The HTTP/1 server (hyper 1's `Dispatcher::poll_inner`) awaits the
/// shutdown before it drops the stream, and
/// calls it only once the response is flushed: the answer and the FIN go
/// out at once, only the descriptor's release waits.
#[derive(Debug)]
pub struct Lingering<T> {
    inner: T,
    conn: Arc<Conn>,
    /// [`TIME`] and [`TIMEOUT`] (shorter in tests).
    limits: (Duration, Duration),
    /// The client closed its side (a read returned nothing).
    eof: bool,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    Draining(Drain),
    Closed,
}

#[derive(Debug)]
struct Drain {
    start: Instant,
    /// When the client's last bytes came.
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> Lingering<T> {
    pub fn new(inner: T, conn: Arc<Conn>) -> Self {
        Self {
            inner,
            conn,
            limits: (TIME, TIMEOUT),
            eof: false,
            state: State::Open,
        }
    }
}

/// What one read gave.
enum Read {
    Data,
    /// End of stream, or an error: nothing more to wait for.
    Over,
    Pending,
}

fn read<T: AsyncRead + Unpin>(
    inner: &mut T,
    cx: &mut Context<'_>,
    buf: &mut [MaybeUninit<u8>],
) -> Read {
    let mut rb = ReadBuf::uninit(buf);
    match Pin::new(inner).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) if !rb.filled().is_empty() => Read::Data,
        Poll::Ready(_) => Read::Over,
        Poll::Pending => Read::Pending,
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Lingering<T> {
    /// Whether the shut-down connection is to linger: its request body
    /// may be unread, or bytes are waiting (a pipelined request after a
    /// `Connection: close` answer, the rest of a header too large).
    fn should_linger(&mut self, cx: &mut Context<'_>, buf: &mut [MaybeUninit<u8>]) -> bool {
        if self.eof {
            return false;
        }
        let told = self.conn.linger.0.load(Ordering::Relaxed);
        // Shutting down (or the listener removed): closed at once, as a
        // shutdown cuts a lingering close short.
        if told == NEVER || self.conn.is_h2() || self.conn.stop.is_cancelled() {
            return false;
        }
        // Nothing read if the stream is known not to be readable since
        // its last read: no system call then.
        match read(&mut self.inner, cx, buf) {
            Read::Data => true,
            Read::Over => false,
            Read::Pending => told == BODY,
        }
    }

    /// Reads and discards until the client closes or a limit is reached.
    fn poll_drain(&mut self, cx: &mut Context<'_>, buf: &mut [MaybeUninit<u8>]) -> Poll<()> {
        let State::Draining(d) = &mut self.state else {
            return Poll::Ready(());
        };
        let (time, timeout) = self.limits;
        if Instant::now() >= d.start + time {
            return Poll::Ready(());
        }
        let mut moved = false;
        for _ in 0..READS_PER_POLL {
            match read(&mut self.inner, cx, buf) {
                Read::Data => moved = true,
                Read::Over => return Poll::Ready(()),
                Read::Pending => {
                    if moved {
                        d.last = Instant::now();
                    }
                    let due = (d.start + time).min(d.last + timeout);
                    if d.timer.deadline() != due {
                        d.timer.as_mut().reset(due);
                    }
                    return d.timer.as_mut().poll(cx);
                }
            }
        }
        // A client sending as fast as it can: others get a turn.
        d.last = Instant::now();
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() == before && buf.remaining() > 0 {
            self.eof = true;
        }
        r
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<T> {
    super::delegate::delegate_writes!(inner);

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let mut buf = [MaybeUninit::<u8>::uninit(); BUF];
        loop {
            match this.state {
                State::Open => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    if !this.should_linger(cx, &mut buf) {
                        this.state = State::Closed;
                        continue;
                    }
                    let now = Instant::now();
                    this.conn.linger.0.store(LINGERING, Ordering::Relaxed);
                    this.state = State::Draining(Drain {
                        start: now,
                        last: now,
                        timer: Box::pin(tokio::time::sleep_until(now + this.limits.1)),
                    });
                }
                State::Draining(_) => {
                    ready!(this.poll_drain(cx, &mut buf));
                    this.state = State::Closed;
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::idle::Activity;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_util::sync::CancellationToken;

    const TOTAL: Duration = Duration::from_millis(1500);
    const QUIET_FOR: Duration = Duration::from_millis(300);
    /// Far below both.
    const AT_ONCE: Duration = Duration::from_millis(100);

    /// The proxy's end (lingering) and the client's.
    fn pair() -> (Lingering<DuplexStream>, DuplexStream, Arc<Conn>) {
        let (ours, client) = tokio::io::duplex(1 << 20);
        let conn = Arc::new(Conn::new(
            "192.0.2.1:1234".parse().unwrap(),
            false,
            Activity::new(),
            CancellationToken::new(),
        ));
        let mut l = Lingering::new(ours, conn.clone());
        l.limits = (TOTAL, QUIET_FOR);
        (l, client, conn)
    }

    /// Shuts `l` down; returns how long that took.
    async fn close(mut l: Lingering<DuplexStream>) -> Duration {
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), l.shutdown())
            .await
            .expect("the shutdown ends")
            .unwrap();
        t.elapsed()
    }

    /// The client sees the end of the stream at once, whatever follows.
    async fn sees_eof(client: &mut DuplexStream) {
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_millis(100), client.read(&mut b))
            .await
            .expect("the FIN goes out at once")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn nothing_unread_closes_at_once() {
        let (l, mut client, _conn) = pair();
        assert!(close(l).await < AT_ONCE);
        sees_eof(&mut client).await;
    }

    #[tokio::test]
    async fn an_unread_body_is_drained_until_the_client_closes() {
        let (l, mut client, conn) = pair();
        conn.linger.request(true);
        let closing = tokio::spawn(close(l));
        sees_eof(&mut client).await;
        assert!(conn.linger.lingering());
        for _ in 0..10 {
            client.write_all(&[b'x'; 64 * 1024]).await.unwrap();
        }
        client.shutdown().await.unwrap();
        assert!(closing.await.unwrap() < QUIET_FOR);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_does_not_linger() {
        let (l, _client, conn) = pair();
        conn.linger.request(true);
        conn.linger.body_read();
        assert!(close(l).await < AT_ONCE);
    }

    #[tokio::test]
    async fn bytes_waiting_linger_without_a_body() {
        // A pipelined request after a `Connection: close` answer.
        let (l, mut client, conn) = pair();
        conn.linger.request(false);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let took = close(l).await;
        assert!(took >= QUIET_FOR, "{took:?}");
        assert!(took < TOTAL, "{took:?}");
    }

    #[tokio::test]
    async fn a_quiet_client_is_left_after_the_timeout() {
        let (l, _client, conn) = pair();
        conn.linger.request(true);
        let took = close(l).await;
        assert!(took >= QUIET_FOR, "{took:?}");
        assert!(took < TOTAL, "{took:?}");
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_left_after_the_total_time() {
        let (l, mut client, conn) = pair();
        conn.linger.request(true);
        let sender = tokio::spawn(async move {
            // Each pause shorter than the timeout.
            while client.write_all(b"more").await.is_ok() {
                tokio::time::sleep(QUIET_FOR / 3).await;
            }
        });
        let took = close(l).await;
        assert!(took >= TOTAL, "{took:?}");
        assert!(took < TOTAL + Duration::from_secs(1), "{took:?}");
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn tunnels_http2_and_shutdowns_never_linger() {
        for case in 0..3 {
            let (l, mut client, conn) = pair();
            conn.linger.request(true);
            client.write_all(b"waiting").await.unwrap();
            match case {
                0 => conn.linger.never(),
                1 => conn.set_h2(),
                _ => conn.stop.cancel(),
            }
            assert!(close(l).await < AT_ONCE, "case {case}");
        }
    }

    #[tokio::test]
    async fn a_client_that_closed_first_is_not_read_again() {
        let (mut l, mut client, conn) = pair();
        conn.linger.request(true);
        client.shutdown().await.unwrap();
        let mut b = [0u8; 8];
        assert_eq!(l.read(&mut b).await.unwrap(), 0);
        assert!(l.eof);
        assert!(close(l).await < AT_ONCE);
    }
}
