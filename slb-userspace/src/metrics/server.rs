//! The `/metrics` HTTP endpoint.
use super::Metrics;
use crate::control::{Pending, Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{net::SocketAddr, sync::Arc};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use tracing::debug;

#[derive(Debug, thiserror::Error)]
#[error("metrics_listen {addr}: {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
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
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try GET /metrics\n".into(),
        ));
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
        .map_err(|source| MetricsError { addr, source })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, agent) = (metrics.clone(), agent.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, metrics.clone(), agent.clone()));
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(error = %e, "metrics connection failed");
                }
            });
        }
    }))
}
