//! Health checker (SPEC §4): probes every backend from the probe source
//! address and reports when a backend goes down or comes back up.
//!
//! - [`state`]: the pure rise/fall state machine of one backend;
//! - [`probe`]: one probe with its timeout, dispatching to
//!   [`probe_tcp`], [`probe_http`] and [`probe_udp`];
//! - [`schedule`]: when each target is probed (first probes spread);
//! - [`checker`]: the tokio tasks that probe and the [`Checker`] handle.
//!
//! Rules worth knowing:
//! - A new target is *up but unconfirmed*; its first probe result decides
//!   at once (`(1/1)`), and a [`Transition`] is sent for that decision
//!   either way (a target the adopted dataplane of a previous run held
//!   down starts *down but unconfirmed*, [`Checker::start_seeded`]).
//!   After that a change needs `unhealthy_threshold`
//!   consecutive failures or `healthy_threshold` consecutive successes.
//! - Probes of one target never overlap: a probe that runs longer than the
//!   interval (timeout > interval) makes the next one start at the next
//!   interval tick after it ended.
//! - Every socket is bound to the target's `source` (the agent's
//!   `probe_source` of the backend's family), port 0, before connecting.

pub mod checker;
pub mod probe;
pub mod probe_http;
pub mod probe_tcp;
pub mod probe_udp;
pub mod schedule;
pub mod state;

#[cfg(test)]
mod testutil;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{self, CheckProtocol};
use crate::planner::BackendKey;

pub use checker::Checker;
pub use probe::Outcome;
pub use state::{Change, HealthState};

/// One backend to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub key: BackendKey,
    /// The backend's address (usually `key.addr`).
    pub addr: SocketAddr,
    /// Probe source address, of `addr`'s family.
    pub source: IpAddr,
    pub check: config::HealthCheck,
}

impl Target {
    /// The target of a configured backend of `listener`, or `None` when
    /// the agent has no probe source of its family (validation guarantees
    /// one whenever the listener checks health).
    pub fn new(
        agent: &config::Agent,
        listener: &str,
        backend: SocketAddr,
        check: &config::HealthCheck,
    ) -> Option<Target> {
        Some(Target {
            key: BackendKey {
                listener: listener.to_owned(),
                addr: backend,
            },
            addr: backend,
            source: agent.probe_source_for(backend.ip())?,
            check: check.clone(),
        })
    }
}

/// A backend went down or came up (or its first probe decided its state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub key: BackendKey,
    pub up: bool,
    /// `ok` or the failure reason, e.g. `connect refused`.
    pub reason: String,
    /// Consecutive results that caused the change and the threshold, e.g.
    /// `(3, 3)`; `(1, 1)` for the first decision.
    pub count: u32,
    pub threshold: u32,
    pub at: SystemTime,
}

impl Transition {
    /// The log line, e.g. `10.0.1.12:8080 down: connect refused (3/3)`.
    pub fn describe(&self) -> String {
        let state = if self.up { "up" } else { "down" };
        format!(
            "{} {state}: {} ({}/{})",
            self.key.addr, self.reason, self.count, self.threshold
        )
    }
}

/// The current view of one target, for `slb status` and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    pub key: BackendKey,
    pub protocol: CheckProtocol,
    pub up: bool,
    /// False until the first probe result.
    pub confirmed: bool,
    /// When the state last changed (or was first decided).
    pub last_change: Option<SystemTime>,
    /// The reason of the last change (`ok` or a failure reason).
    pub last_reason: Option<String>,
    /// The run of results that made the last change and the threshold it
    /// reached, as logged: `(3, 3)`, or `(1, 1)` for a first decision.
    pub last_change_run: Option<(u32, u32)>,
    /// The result of the last probe (`ok` or a failure reason).
    pub last_result: Option<String>,
    pub last_probe: Option<SystemTime>,
    pub last_latency: Option<Duration>,
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
}

/// Called after every probe with the target, the check protocol, the
/// probe's duration and whether it succeeded (e.g. to feed a Prometheus
/// histogram). Runs on the probing task: keep it cheap.
pub type Observer = Arc<dyn Fn(&BackendKey, CheckProtocol, Duration, bool) + Send + Sync>;
