//! WebSocket pass-through (HTTP/1.x `Upgrade: websocket`; other upgrades
//! lose their `Upgrade` field as any hop-by-hop field): the handshake is
//! forwarded on a fresh backend connection (upgraded connections are never
//! pooled); on `101 Switching Protocols` both sides are upgraded and bytes
//! are copied both ways until both sides closed (a half-close is passed
//! on), either fails, nothing moves either way for the idle timeout, or
//! `cancel` fires (the listener was removed, the proxy shuts down).

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::body::Body;
use super::idle::{Activity, Watched};
use super::upstream::{error_chain, Failure};

/// Timeouts of a tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    pub response: Duration,
    pub idle: Duration,
}

/// Sends the upgrade request `req` to `backend`. On 101, takes `client`
/// (the client's pending upgrade) and spawns the tunnel between it and the
/// backend; otherwise `client` stays for another attempt. The backend's
/// response is returned either way. `hold` lives as long as the tunnel (it
/// keeps the tunnel counted as the backend's request in progress, which is
/// what `wlc` balances: a tunnel is a long request).
pub async fn open<H: Send + 'static>(
    backend: SocketAddr,
    req: Request<Body>,
    client: &mut Option<OnUpgrade>,
    limits: Limits,
    cancel: CancellationToken,
    hold: H,
) -> Result<Response<Incoming>, Failure> {
    let stream = match tokio::time::timeout(limits.connect, TcpStream::connect(backend)).await {
        Err(_) => {
            return Err(Failure::Connect(format!(
                "timed out after {:?}",
                limits.connect
            )))
        }
        Ok(Err(e)) => return Err(Failure::Connect(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Connect(error_chain(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!("websocket backend connection: {}", error_chain(&e));
        }
    });
    let mut res = match tokio::time::timeout(limits.response, sender.send_request(req)).await {
        Err(_) => return Err(Failure::Timeout(limits.response)),
        Ok(Err(e)) => return Err(Failure::Reset(error_chain(&e))),
        Ok(Ok(r)) => r,
    };
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = client.take() {
            let upstream = hyper::upgrade::on(&mut res);
            tokio::spawn(async move {
                tunnel(client, upstream, limits.idle, cancel).await;
                drop(hold);
            });
        }
    }
    Ok(res)
}

async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, cancel: CancellationToken) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!("websocket upgrade failed: {}", error_chain(&e));
            return;
        }
    };
    let activity = Activity::new();
    let mut a = Watched::new(TokioIo::new(client), activity.clone());
    let mut b = Watched::new(TokioIo::new(upstream), activity.clone());
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            r = &mut copy => {
                if let Err(e) = r {
                    debug!("websocket tunnel ended: {e}");
                }
                return;
            }
            () = tokio::time::sleep_until(activity.deadline(idle) + Activity::slack()) => {
                if tokio::time::Instant::now() >= activity.deadline(idle) + Activity::slack() {
                    debug!("websocket tunnel idle for {idle:?}, closing");
                    return;
                }
            }
            () = cancel.cancelled() => return,
        }
    }
}
