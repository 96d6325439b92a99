//! Body types of the proxy and a body that reports when it is done.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response (and upstream request) body of the proxy.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of known bytes.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Any body, boxed.
pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// What a [`Tracked`] body calls once it is done.
pub trait Finish {
    /// `bytes`: the data bytes that went through.
    fn finish(self, bytes: u64);

    /// The body handed out data and waits to be asked for more (`true`),
    /// or was asked again (`false`): while it waits, what it gave is
    /// waiting for the client to take it.
    fn waiting(&self, _waiting: bool) {}
}

/// Wraps a body, counts its data bytes and calls `done.finish(bytes)` once:
/// when the body ends, fails, or is dropped unfinished (client went away).
/// The access log line, the WLC in-flight count and the idle clock hang on
/// it. Tells `done.waiting` when it handed out data it is not yet asked
/// past (see [`Finish::waiting`]).
pub struct Tracked<B, D: Finish> {
    inner: B,
    bytes: u64,
    /// Handed out data and not asked for more since.
    waiting: bool,
    done: Option<D>,
}

impl<B, D: Finish> Tracked<B, D> {
    pub fn new(inner: B, done: D) -> Self {
        Self {
            inner,
            bytes: 0,
            waiting: false,
            done: Some(done),
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if self.waiting != waiting {
            self.waiting = waiting;
            if let Some(done) = &self.done {
                done.waiting(waiting);
            }
        }
    }

    fn finish(&mut self) {
        self.set_waiting(false);
        if let Some(done) = self.done.take() {
            done.finish(self.bytes);
        }
    }
}

impl<B, D> HttpBody for Tracked<B, D>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    D: Finish + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.set_waiting(false);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish();
                } else {
                    self.set_waiting(true);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, D: Finish> Drop for Tracked<B, D> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A response body: the backend's as it arrives (not boxed), or any other
/// (error pages, redirects, gzip), boxed.
pub enum ResponseBody {
    Upstream(super::upstream::UpstreamBody),
    Other(Body),
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Other(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Other(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Other(b) => b.size_hint(),
        }
    }
}
