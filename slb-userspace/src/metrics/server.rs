//! The `/metrics` HTTP endpoint.
use super::Metrics;
use crate::control::{Pending, Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, Semaphore},
};
use tracing::debug;

#[derive(Debug, thiserror::Error)]
// The reason is in the message, not also a `source`: `{:#}` at the
// binary's edge would print it twice.
#[error("metrics_listen {addr}: {error}")]
pub struct MetricsError {
    addr: SocketAddr,
    error: std::io::Error,
}

type Reply = hyper::Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: String) -> Reply {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    req: hyper::Request<Incoming>,
    metrics: Arc<Metrics>,
    agent: mpsc::Sender<Pending>,
) -> Result<Reply, std::convert::Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try GET /metrics\n".into(),
        ));
    }
    // HEAD as well: monitoring checks probe with it (hyper sends the
    // headers of the GET answer without its body).
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".into(),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(r);
    }
    let (tx, rx) = oneshot::channel();
    let snapshot = match agent.send((Request::Status, tx)).await {
        Ok(()) => match rx.await {
            Ok(Response::Status(s)) => Some(s),
            _ => None,
        },
        Err(_) => None,
    };
    let Some(snapshot) = snapshot else {
        return Ok(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "agent not available\n".into(),
        ));
    };
    Ok(match metrics.encode(snapshot) {
        Ok(text) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "encoding failed\n".into(),
        ),
    })
}

/// Serves `/metrics` on `addr`; snapshots come from the agent loop.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    agent: mpsc::Sender<Pending>,
) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| MetricsError { addr, error })?;
    Ok(serve_on(listener, metrics, agent))
}

/// Time to send a request header, from the connection's start or the end
/// of the previous response: a client that connects and sends nothing (or
/// a keep-alive connection left idle) is closed after it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is asked to close after this long (at the end of the
/// response in progress) and cut GRACE later: the bound for a client that
/// requests and then never reads the answer.
const LIFETIME: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(10);
/// Connections served at once; further ones are closed at once, so that
/// no number of clients can use up the agent's file descriptors (which
/// its health checks and the proxy need too).
const MAX_CONNECTIONS: usize = 64;

fn serve_on(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    agent: mpsc::Sender<Pending>,
) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    // Out of file descriptors, say: accept fails again at
                    // once, and retrying without a pause spins a CPU.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let (metrics, agent) = (metrics.clone(), agent.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, metrics.clone(), agent.clone()));
                // HTTP/1.1 only (what Prometheus speaks): the
                // auto-detecting server waits for a first byte with no
                // time limit.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                let done = tokio::select! {
                    r = conn.as_mut() => Some(r),
                    () = tokio::time::sleep(LIFETIME) => None,
                };
                let result = match done {
                    Some(r) => r,
                    None => {
                        conn.as_mut().graceful_shutdown();
                        match tokio::time::timeout(GRACE, conn).await {
                            Ok(r) => r,
                            Err(_) => Ok(()),
                        }
                    }
                };
                if let Err(e) = result {
                    debug!(error = %e, "metrics connection failed");
                }
                drop(slot);
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{GlobalCounters, Snapshot};
    use std::time::Duration;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    /// The endpoint on a free port, with an "agent" answering snapshots.
    async fn endpoint() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Pending>(8);
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Response::Status(Snapshot {
                    generation: 3,
                    listeners: vec![],
                    global: GlobalCounters::default(),
                    flows: 0,
                }));
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, serve_on(listener, Arc::new(Metrics::new()), tx))
    }

    /// Sends `request` and returns what comes back until the server
    /// closes (the requests below say `connection: close`).
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn req(method: &str, path: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn get_and_head_on_metrics_other_methods_and_paths_refused() {
        let (addr, task) = endpoint().await;
        let get = exchange(addr, &req("GET", "/metrics")).await;
        assert!(get.starts_with("HTTP/1.1 200"), "{get}");
        assert!(get.contains("slb_config_generation 3"), "{get}");
        assert!(get.ends_with("# EOF\n"), "{get}");
        let head = exchange(addr, &req("HEAD", "/metrics")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.contains("slb_config_generation"), "{head}");
        let post = exchange(addr, &req("POST", "/metrics")).await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(
            post.to_ascii_lowercase().contains("allow: get, head"),
            "{post}"
        );
        let other = exchange(addr, &req("GET", "/")).await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_and_scrapes_go_on_meanwhile() {
        let (addr, task) = endpoint().await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let get = exchange(addr, &req("GET", "/metrics")).await;
        assert!(get.starts_with("HTTP/1.1 200"), "{get}");
        for c in [&mut idle, &mut slow] {
            let mut out = Vec::new();
            tokio::time::timeout(
                HEADER_TIMEOUT + Duration::from_secs(3),
                c.read_to_end(&mut out),
            )
            .await
            .expect("a client that sends no request is disconnected")
            .ok();
        }
        task.abort();
    }

    #[tokio::test]
    async fn clients_over_the_limit_are_closed_at_once() {
        let (addr, task) = endpoint().await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut out))
            .await
            .expect("closed at once")
            .ok();
        assert!(out.is_empty());
        task.abort();
    }
}
