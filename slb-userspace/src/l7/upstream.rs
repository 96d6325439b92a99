//! Requests to backends: a pool of keep-alive HTTP/1.1 connections per
//! listener (hyper-util's client), a connect timeout per attempt, a
//! response timeout, and a request body that can be sent again when an
//! attempt failed before the body was read.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{Body, BoxError};

/// Idle pooled connections are closed after this; backends' own keep-alive
/// timeouts are usually shorter, and a closed one is simply not reused.
const POOL_IDLE: Duration = Duration::from_secs(60);
const POOL_MAX_IDLE_PER_BACKEND: usize = 256;

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

/// A client whose connection attempts give up after `connect_timeout`.
pub fn client(connect_timeout: Duration) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_BACKEND)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Nothing was sent: refused, unreachable, connect timeout.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The connection failed after (part of) the request was sent.
    #[error("backend failed: {0}")]
    Reset(String),
    /// No response header within the response timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// Sends `req` to the backend named in its URI, waiting at most `timeout`
/// for the response header.
pub async fn send(
    client: &Client,
    req: Request<Body>,
    timeout: Duration,
) -> Result<Response<Incoming>, Failure> {
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(Failure::Timeout(timeout)),
        Ok(Ok(res)) => Ok(res),
        Ok(Err(e)) if e.is_connect() => Err(Failure::Connect(error_chain(&e))),
        Ok(Err(e)) => Err(Failure::Reset(error_chain(&e))),
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

/// The absolute URI of a request to `backend` (the pool is keyed on it).
pub fn backend_uri(backend: SocketAddr, path_and_query: &str) -> Result<http::Uri, http::Error> {
    http::Uri::builder()
        .scheme("http")
        .authority(backend.to_string())
        .path_and_query(path_and_query)
        .build()
}

/// The client's request body, shared by the attempts to send it.
///
/// Each attempt gets a view ([`ReplayBody::attempt`]) that reads the one
/// underlying body. An attempt that failed without reading it (connect
/// failure: the client sends the body only on an open connection) leaves
/// it intact for the next backend; so does an empty body.
pub struct ReplayBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    touched: Arc<AtomicBool>,
    empty: bool,
}

impl ReplayBody {
    pub fn new(body: Incoming) -> Self {
        let empty = body.is_end_stream();
        Self {
            slot: Arc::new(Mutex::new(Some(body))),
            touched: Arc::new(AtomicBool::new(false)),
            empty,
        }
    }

    /// A body for one attempt.
    pub fn attempt(&self) -> Body {
        super::body::boxed(AttemptBody {
            slot: self.slot.clone(),
            touched: self.touched.clone(),
        })
    }

    /// Can another attempt send the whole body?
    pub fn replayable(&self) -> bool {
        self.empty || !self.touched.load(Ordering::Acquire)
    }
}

struct AttemptBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    touched: Arc<AtomicBool>,
}

impl HttpBody for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.touched.store(true, Ordering::Release);
        // Poisoned only if a poll panicked; the body is then unusable.
        let Ok(mut guard) = self.slot.lock() else {
            return Poll::Ready(Some(Err("request body unavailable".into())));
        };
        match guard.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot
            .lock()
            .map(|g| g.as_ref().is_none_or(HttpBody::is_end_stream))
            .unwrap_or(true)
    }

    fn size_hint(&self) -> SizeHint {
        self.slot
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(HttpBody::size_hint))
            .unwrap_or_default()
    }
}
