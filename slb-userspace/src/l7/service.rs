//! One request through the proxy: limits, redirect, routing, persistence,
//! scheduling with retries, header rewriting, gzip, access log, metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{ACCEPT_ENCODING, CONNECTION, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::access::Entry;
use super::balance::hash_bytes;
use super::body::{boxed, empty, Body, Tracked};
use super::headers::{self, Forwarded};
use super::idle::Activity;
use super::metrics::L7Metrics;
use super::pages;
use super::persist::request_cookie;
use super::state::{Group, Runtime};
use super::upstream::{self, Failure, ReplayBody};
use super::websocket;
use crate::config::{HashKey, Protocol};
use crate::planner::Health;

/// What every connection of the proxy shares.
#[derive(Debug)]
pub struct Shared {
    pub health: watch::Receiver<Health>,
    pub metrics: L7Metrics,
    /// Cancelled when the proxy shuts down (ends WebSocket tunnels).
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
}

impl Conn {
    pub fn new(peer: SocketAddr, tls: bool, activity: Activity) -> Self {
        Self {
            peer,
            tls,
            requests: AtomicU32::new(0),
            active: AtomicUsize::new(0),
            activity,
            close: Notify::new(),
        }
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
    response: Response<Body>,
    upstream: Option<SocketAddr>,
    upstream_time: Option<Duration>,
    in_flight: Option<InFlight>,
}

impl Outcome {
    fn local(response: Response<Body>) -> Self {
        Self {
            response,
            upstream: None,
            upstream_time: None,
            in_flight: None,
        }
    }
}

/// Answers one request.
pub async fn handle(
    req: Request<Incoming>,
    rt: Arc<Runtime>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
) -> Response<Body> {
    let start = Instant::now();
    let time = SystemTime::now();
    conn.active.fetch_add(1, Ordering::Relaxed);
    conn.activity.touch();
    let n = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let last = n >= rt.l7.max_requests_per_connection;
    if last {
        conn.close.notify_one();
    }

    let version = req.version();
    let entry = Entry {
        time,
        client: conn.peer.ip(),
        host: headers::request_host(req.uri(), req.headers()),
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        version,
        status: 0,
        bytes: 0,
        upstream: None,
        upstream_time: None,
        total: Duration::ZERO,
    };

    let outcome = route(req, &rt, &conn, &shared, entry.host.as_deref()).await;
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
    }
    let status = response.status().as_u16();
    let metrics = shared.metrics.clone();
    let listener = rt.name.clone();
    let conn_done = conn.clone();
    let (parts, body) = response.into_parts();
    let body = Tracked::new(body, move |bytes| {
        drop(in_flight);
        conn_done.active.fetch_sub(1, Ordering::Relaxed);
        conn_done.activity.touch();
        metrics.request(&listener, status);
        Entry {
            status,
            bytes,
            upstream,
            upstream_time,
            total: start.elapsed(),
            ..entry
        }
        .log();
    });
    Response::from_parts(parts, boxed(body))
}

/// Everything between the request and the response.
async fn route(
    req: Request<Incoming>,
    rt: &Runtime,
    conn: &Conn,
    shared: &Shared,
    host: Option<&str>,
) -> Outcome {
    let h1 = req.version() != Version::HTTP_2;
    if headers::header_size(req.method(), req.uri(), req.headers()) > rt.l7.max_header_size as usize
    {
        return Outcome::local(pages::error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            h1,
        ));
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();

    if rt.l7.redirect_https && rt.protocol == Protocol::Http {
        return Outcome::local(match host {
            Some(h) => pages::redirect(&pages::https_location(h, rt.https_port, &path_and_query)),
            None => pages::error(StatusCode::BAD_REQUEST, h1),
        });
    }

    let group = &rt.groups[rt.router.route(host, req.uri().path())];
    let upgrade = h1 && headers::is_websocket_upgrade(req.headers());
    forward(req, rt, conn, shared, group, &path_and_query, upgrade).await
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

/// Picks the next backend: the one the persistence cookie names when it is
/// usable (up, not tried; weight 0 is fine, draining keeps its clients),
/// else the scheduler's choice among the up, weighted, untried ones.
fn choose(
    group: &Group,
    health: &watch::Receiver<Health>,
    sticky: Option<&str>,
    key: Option<u64>,
    tried: &[usize],
) -> Option<usize> {
    let up: Vec<bool> = {
        let h = health.borrow();
        group
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| h.is_up(&b.key) && !tried.contains(&i))
            .collect()
    };
    if let Some(id) = sticky {
        if let Some(i) = group.backends.iter().position(|b| b.id == id) {
            if up[i] {
                return Some(i);
            }
        }
    }
    let in_flight: Vec<usize> = group
        .backends
        .iter()
        .map(|b| b.in_flight.load(Ordering::Relaxed))
        .collect();
    group.balancer.pick(&up, &in_flight, key)
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
    conn: &Conn,
    shared: &Shared,
    group: &Group,
    path_and_query: &str,
    upgrade: bool,
) -> Outcome {
    let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let h1 = parts.version != Version::HTTP_2;
    let sticky = rt
        .persistence
        .as_ref()
        .and_then(|p| p.on_request(&mut parts.headers));
    let key = hash_of(rt, &parts.headers);
    let mut accept = HeaderMap::new();
    for v in parts.headers.get_all(ACCEPT_ENCODING) {
        accept.append(ACCEPT_ENCODING, v.clone());
    }
    if !parts.headers.contains_key(HOST) {
        // HTTP/2 carries the host in :authority; HTTP/1.1 needs Host.
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, v);
        }
    }
    let fwd = Forwarded {
        client: conn.peer.ip(),
        proto: if conn.tls { "https" } else { "http" },
        port: rt.addr.port(),
    };
    headers::to_backend(&mut parts.headers, &fwd, upgrade);
    let version = if parts.version == Version::HTTP_10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let body = ReplayBody::new(body);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_failure: Option<Failure> = None;

    loop {
        let Some(i) = choose(group, &shared.health, sticky.as_deref(), key, &tried) else {
            let status = match &last_failure {
                None => {
                    warn!(listener = %rt.name, group = %group.name, "no healthy backend");
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Some(_) => StatusCode::BAD_GATEWAY,
            };
            return Outcome::local(pages::error(status, false));
        };
        tried.push(i);
        let backend = &group.backends[i];
        let uri = match upstream::backend_uri(backend.addr, path_and_query) {
            Ok(u) => u,
            Err(e) => {
                debug!("bad request target {path_and_query:?}: {e}");
                return Outcome::local(pages::error(StatusCode::BAD_REQUEST, h1));
            }
        };
        let mut out = Request::new(if upgrade { empty() } else { body.attempt() });
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.version_mut() = version;
        *out.headers_mut() = parts.headers.clone();

        let in_flight = InFlight::new(&backend.in_flight);
        let sent = Instant::now();
        let result = if upgrade {
            let limits = websocket::Limits {
                connect: rt.l7.backend_connect_timeout,
                response: rt.l7.backend_response_timeout,
                idle: rt.tunnel_idle,
            };
            let cancel = shared.shutdown.clone();
            websocket::open(backend.addr, out, &mut client_upgrade, limits, cancel).await
        } else {
            upstream::send(&rt.client, out, rt.l7.backend_response_timeout).await
        };
        match result {
            Ok(res) => {
                let elapsed = sent.elapsed();
                shared.metrics.upstream_latency(&rt.name, elapsed);
                let (mut rparts, rbody) = res.into_parts();
                let switching = rparts.status == StatusCode::SWITCHING_PROTOCOLS;
                headers::to_client(&mut rparts.headers, switching);
                if let Some(p) = &rt.persistence {
                    p.on_response(
                        rparts.status,
                        &mut rparts.headers,
                        &backend.id,
                        sticky.as_deref(),
                        conn.tls,
                    );
                }
                let mut rbody = boxed(rbody);
                if rt.l7.gzip
                    && super::gzip::should_compress(
                        &parts.method,
                        &accept,
                        rparts.status,
                        &rparts.headers,
                    )
                {
                    rbody = super::gzip::compress(&mut rparts.headers, rbody);
                }
                return Outcome {
                    response: Response::from_parts(rparts, rbody),
                    upstream: Some(backend.addr),
                    upstream_time: Some(elapsed),
                    in_flight: Some(in_flight),
                };
            }
            Err(Failure::Timeout(t)) => {
                warn!(listener = %rt.name, backend = %backend.addr, "no response within {t:?}");
                return Outcome {
                    upstream: Some(backend.addr),
                    upstream_time: Some(sent.elapsed()),
                    ..Outcome::local(pages::error(StatusCode::GATEWAY_TIMEOUT, false))
                };
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
                    return Outcome {
                        upstream: Some(backend.addr),
                        upstream_time: Some(sent.elapsed()),
                        ..Outcome::local(pages::error(StatusCode::BAD_GATEWAY, false))
                    };
                }
                last_failure = Some(f);
            }
        }
    }
}
