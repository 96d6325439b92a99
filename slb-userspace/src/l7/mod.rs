//! The L7 proxy of `http`/`https` listeners (SPEC §5), inside `slb run` or
//! alone as `slb proxy`.
//!
//! Pure parts, unit-tested: [`router`] (forwarding rules), [`balance`]
//! (schedulers), [`persist`] (cookie persistence), [`headers`] (header
//! rewriting), [`pages`] (error pages), [`gzip`] (what to compress),
//! [`access`] (log line). I/O parts: [`server`] (client connections),
//! [`service`] (one request), [`upstream`] (backend pool), [`websocket`],
//! [`tls`], [`linger`] (lingering close), [`proxy`] (start/reload/shutdown).
//!
//! Health is an input: a `watch::Receiver<Health>` whose `down` set holds
//! `BackendKey { listener, addr }` of backends to avoid (for backends of
//! named groups too, keyed by listener name and address).

pub mod access;
pub mod balance;
pub mod body;
pub mod clock;
mod delegate;

pub mod gzip;
pub mod headers;
pub mod idle;
pub mod linger;
pub mod metrics;
pub mod pages;
pub mod pem;
pub mod persist;
pub mod proxy;
pub mod router;
pub mod server;
pub mod service;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod websocket;

use std::net::SocketAddr;

pub use metrics::L7Metrics;
pub use proxy::{Proxy, ProxyHandle};

/// Why the proxy could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum L7Error {
    // The cause is part of the message, not a chained source: printed
    // with its chain, it would appear twice.
    #[error("listener {listener}: {cause}")]
    Tls {
        listener: String,
        cause: tls::TlsError,
    },
    #[error("listener {listener}: cannot listen on {addr}: {cause}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("listener {0} is not an http/https listener")]
    NotL7(String),
}
