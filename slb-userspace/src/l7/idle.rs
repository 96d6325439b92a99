//! Idle detection: a stream wrapper that records when bytes last moved, for
//! the client keep-alive timeout and the WebSocket idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::clock;

/// When something last happened, shared between a stream and its watcher.
///
/// Bytes move many times per request; reading the precise clock each time
/// costs more than the rest of the bookkeeping. A touch reads the coarse
/// clock (see [`clock`]) and takes a precise reading only when the coarse
/// one moved on since the last recorded touch: [`Activity::last`] may then
/// be up to one coarse tick ([`Activity::slack`]) before the actual last
/// activity, which watchers add to their deadlines.
#[derive(Debug, Clone)]
pub struct Activity {
    base: Instant,
    inner: Arc<Times>,
}

#[derive(Debug)]
struct Times {
    /// Milliseconds after `base`.
    last: AtomicU64,
    /// The coarse clock (ns) at the last recorded touch.
    tick: AtomicU64,
    /// Milliseconds after `base` of the first touch since [`Activity::rearm`]
    /// (or the start); `UNSET` before.
    first: AtomicU64,
}

const UNSET: u64 = u64::MAX;

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            inner: Arc::new(Times {
                last: AtomicU64::new(0),
                tick: AtomicU64::new(u64::MAX),
                first: AtomicU64::new(UNSET),
            }),
        }
    }

    pub fn touch(&self) {
        let tick = clock::coarse_ns();
        if self.inner.tick.load(Ordering::Relaxed) == tick {
            // Recorded within this tick already.
            if self.inner.first.load(Ordering::Relaxed) == UNSET {
                let last = self.inner.last.load(Ordering::Relaxed);
                self.inner.first.store(last, Ordering::Relaxed);
            }
            return;
        }
        self.inner.tick.store(tick, Ordering::Relaxed);
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.inner.last.fetch_max(ms, Ordering::Relaxed);
        if self.inner.first.load(Ordering::Relaxed) == UNSET {
            self.inner.first.store(ms, Ordering::Relaxed);
        }
    }

    /// Forgets the first touch: [`Activity::first_ms`] tells the next one.
    pub fn rearm(&self) {
        self.inner.first.store(UNSET, Ordering::Relaxed);
    }

    /// Milliseconds after the start of the first touch since the start or
    /// [`Activity::rearm`], if any.
    pub fn first_ms(&self) -> Option<u64> {
        match self.inner.first.load(Ordering::Relaxed) {
            UNSET => None,
            ms => Some(ms),
        }
    }

    pub fn last(&self) -> Instant {
        self.at(self.last_ms())
    }

    /// [`Activity::last`] in milliseconds after the start.
    pub fn last_ms(&self) -> u64 {
        self.inner.last.load(Ordering::Relaxed)
    }

    /// The instant `ms` milliseconds after the start.
    pub fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// When the stream counts as idle, if nothing happens until then.
    pub fn deadline(&self, idle: Duration) -> Instant {
        self.last() + idle
    }

    /// How much [`Activity::last`] may lag behind the last activity.
    pub fn slack() -> Duration {
        clock::resolution()
    }
}

/// A stream that touches its [`Activity`] whenever bytes are read or written.
#[derive(Debug)]
pub struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Activity) -> Self {
        Self { inner, activity }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_and_writes_touch() {
        let a = Activity::new();
        let (x, mut y) = tokio::io::duplex(64);
        let mut w = Watched::new(x, a.clone());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(a.last(), a.base, "nothing moved yet");
        w.write_all(b"hi").await.unwrap();
        let after_write = a.last();
        assert!(after_write >= a.base + Duration::from_millis(30));
        tokio::time::sleep(Duration::from_millis(30)).await;
        y.write_all(b"yo").await.unwrap();
        let mut buf = [0u8; 2];
        w.read_exact(&mut buf).await.unwrap();
        assert!(a.last() >= after_write + Duration::from_millis(30));
        assert_eq!(
            a.deadline(Duration::from_secs(1)),
            a.last() + Duration::from_secs(1)
        );
    }
}
