//! One probe of one target: the protocol-specific exchange under the
//! check's `timeout`, timed, with its failure reason in the words the
//! transition log uses (`connect refused`, `timeout`, `status 404`, ...).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::debug;

use super::state::OK;
use super::{probe_http, probe_tcp, probe_udp, Target};
use crate::config::{HealthCheck, Probe};

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// `ok`, or why the probe failed.
    pub reason: String,
    /// From the start of the probe to its result (capped by the timeout).
    pub latency: Duration,
}

/// Runs one probe of `target`.
pub async fn run(target: &Target) -> Outcome {
    let outcome = run_check(target.addr, target.source, &target.check).await;
    debug!(
        listener = %target.key.listener,
        protocol = %target.check.protocol(),
        latency_ms = outcome.latency.as_secs_f64() * 1000.0,
        "probe {}: {}",
        target.addr,
        outcome.reason
    );
    outcome
}

/// Runs one probe of `addr` from `source` with the settings of `check`.
pub async fn run_check(addr: SocketAddr, source: IpAddr, check: &HealthCheck) -> Outcome {
    let addr = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
    let start = Instant::now();
    let exchange = async {
        match &check.probe {
            Probe::Tcp => probe_tcp::probe(addr, source).await,
            Probe::Http(http) => probe_http::probe(addr, source, http).await,
            Probe::Udp(udp) => probe_udp::probe(addr, source, udp).await,
        }
    };
    let result = match tokio::time::timeout(check.timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err("timeout".to_owned()),
    };
    let latency = start.elapsed();
    match result {
        Ok(()) => Outcome {
            ok: true,
            reason: OK.to_owned(),
            latency,
        },
        Err(reason) => Outcome {
            ok: false,
            reason,
            latency,
        },
    }
}

/// The failure reason for a socket error during connect/send/receive.
pub fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "connect refused".to_owned(),
        Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => "no route".to_owned(),
        Some(libc::ETIMEDOUT) => "timeout".to_owned(),
        Some(libc::ECONNRESET) => "connection reset".to_owned(),
        Some(libc::ECONNABORTED) => "connection aborted".to_owned(),
        Some(libc::EPIPE) => "broken pipe".to_owned(),
        _ => e.to_string(),
    }
}

/// The failure reason when the socket cannot be bound to the probe source
/// (usually: the source is not a local address).
pub fn bind_reason(source: IpAddr, e: &io::Error) -> String {
    format!("cannot bind probe source {source}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_reasons() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_reason(&e), "connect refused");
        let e = io::Error::from_raw_os_error(libc::ENETUNREACH);
        assert_eq!(io_reason(&e), "no route");
        let e = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert_eq!(io_reason(&e), "no route");
    }
}
