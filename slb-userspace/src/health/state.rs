//! The rise/fall state machine of one backend (SPEC §4). Pure: no I/O, no
//! clock reads, no tokio.
//!
//! A backend starts *up but unconfirmed*: it takes traffic from the start,
//! and the first probe result decides at once (success: up, confirmed;
//! failure: down), reported as `(1/1)`. After that the state changes only
//! after `unhealthy_threshold` consecutive failures (up → down) or
//! `healthy_threshold` consecutive successes (down → up).

use std::fmt;
use std::net::SocketAddr;

/// The reason given for a successful probe.
pub const OK: &str = "ok";

/// Health of one backend as decided from its probe results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    up: bool,
    confirmed: bool,
    consecutive_ok: u32,
    consecutive_fail: u32,
}

/// A change of state (or the first decision), with what caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The new state.
    pub up: bool,
    /// The reason of the probe that completed the run (`ok` for successes).
    pub reason: String,
    /// Length of the run of equal results that caused the change.
    pub count: u32,
    /// The run length needed (1 for the first decision).
    pub threshold: u32,
}

impl Change {
    /// The log line, e.g. `10.0.1.12:8080 down: connect refused (3/3)`.
    pub fn describe(&self, addr: SocketAddr) -> String {
        format!("{addr} {self}")
    }
}

impl fmt::Display for Change {
    /// `down: connect refused (3/3)` / `up: ok (3/3)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.up { "up" } else { "down" };
        write!(
            f,
            "{state}: {} ({}/{})",
            self.reason, self.count, self.threshold
        )
    }
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// Up but unconfirmed: the first result decides.
    pub fn new() -> Self {
        Self::provisional(true)
    }

    /// Unconfirmed with a provisional state: the first result decides at
    /// once. Only for targets never probed in this run (an agent adopting
    /// a previous run's dataplane seeds the backends it held down).
    pub fn provisional(up: bool) -> Self {
        HealthState {
            up,
            confirmed: false,
            consecutive_ok: 0,
            consecutive_fail: 0,
        }
    }

    /// The same up/down and confirmation, with the runs of equal results
    /// forgotten: used when a target's check settings change. Results
    /// under the old settings do not count towards the new thresholds,
    /// but a confirmed state stands until a full threshold of results
    /// under the new settings changes it (SPEC §4); making it provisional
    /// would let a single result decide.
    pub fn restarted(&self) -> Self {
        HealthState {
            consecutive_ok: 0,
            consecutive_fail: 0,
            ..self.clone()
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// False until the first probe result.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    pub fn consecutive_ok(&self) -> u32 {
        self.consecutive_ok
    }

    pub fn consecutive_fail(&self) -> u32 {
        self.consecutive_fail
    }

    /// Records one probe result; returns the change it causes, if any.
    /// `reason` is the failure reason (ignored on success, where `ok` is
    /// used). Thresholds below 1 are treated as 1.
    pub fn record(
        &mut self,
        ok: bool,
        reason: &str,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<Change> {
        if ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_fail = 0;
        } else {
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            self.consecutive_ok = 0;
        }
        let reason = if ok { OK } else { reason };

        if !self.confirmed {
            self.confirmed = true;
            self.up = ok;
            return Some(Change {
                up: ok,
                reason: reason.to_owned(),
                count: 1,
                threshold: 1,
            });
        }

        let (run, threshold) = if ok {
            (self.consecutive_ok, healthy_threshold.max(1))
        } else {
            (self.consecutive_fail, unhealthy_threshold.max(1))
        };
        if self.up != ok && run >= threshold {
            self.up = ok;
            return Some(Change {
                up: ok,
                reason: reason.to_owned(),
                count: run,
                threshold,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.0.1.12:8080".parse().unwrap()
    }

    #[test]
    fn starts_up_unconfirmed() {
        let s = HealthState::new();
        assert!(s.is_up());
        assert!(!s.is_confirmed());
        assert_eq!((s.consecutive_ok(), s.consecutive_fail()), (0, 0));
    }

    #[test]
    fn first_success_confirms_up() {
        let mut s = HealthState::new();
        let c = s.record(true, "", 3, 3).unwrap();
        assert_eq!(c.describe(addr()), "10.0.1.12:8080 up: ok (1/1)");
        assert!(s.is_up() && s.is_confirmed());
        // Further successes change nothing.
        assert_eq!(s.record(true, "", 3, 3), None);
        assert_eq!(s.consecutive_ok(), 2);
    }

    #[test]
    fn first_failure_is_down_at_once() {
        let mut s = HealthState::new();
        let c = s.record(false, "connect refused", 3, 3).unwrap();
        assert_eq!(
            c.describe(addr()),
            "10.0.1.12:8080 down: connect refused (1/1)"
        );
        assert!(!s.is_up() && s.is_confirmed());
        assert_eq!(s.consecutive_fail(), 1);
    }

    #[test]
    fn goes_down_after_unhealthy_threshold() {
        let mut s = HealthState::new();
        s.record(true, "", 2, 3);
        assert_eq!(s.record(false, "timeout", 2, 3), None);
        assert_eq!(s.record(false, "timeout", 2, 3), None);
        assert!(s.is_up());
        let c = s.record(false, "connect refused", 2, 3).unwrap();
        assert_eq!(
            c.describe(addr()),
            "10.0.1.12:8080 down: connect refused (3/3)"
        );
        assert!(!s.is_up());
        // Staying down reports nothing more, counting on.
        assert_eq!(s.record(false, "timeout", 2, 3), None);
        assert_eq!(s.consecutive_fail(), 4);
    }

    #[test]
    fn comes_up_after_healthy_threshold() {
        let mut s = HealthState::new();
        s.record(false, "no route", 3, 2);
        assert_eq!(s.record(true, "", 3, 2), None);
        assert_eq!(s.record(true, "", 3, 2), None);
        let c = s.record(true, "", 3, 2).unwrap();
        assert_eq!(c.to_string(), "up: ok (3/3)");
        assert!(s.is_up());
    }

    #[test]
    fn an_interrupted_run_starts_over() {
        let mut s = HealthState::new();
        s.record(true, "", 3, 3);
        s.record(false, "timeout", 3, 3);
        s.record(false, "timeout", 3, 3);
        s.record(true, "", 3, 3); // resets the failure run
        assert_eq!(s.consecutive_fail(), 0);
        s.record(false, "timeout", 3, 3);
        assert_eq!(s.record(false, "timeout", 3, 3), None);
        assert!(s.is_up());
        assert!(s.record(false, "timeout", 3, 3).is_some());
        // Down: two successes then a failure do not bring it up.
        s.record(true, "", 3, 3);
        s.record(true, "", 3, 3);
        assert_eq!(s.record(false, "status 500", 3, 3), None);
        assert!(!s.is_up());
        assert_eq!(s.consecutive_ok(), 0);
    }

    #[test]
    fn provisional_state_is_decided_by_first_result() {
        let mut s = HealthState::provisional(false);
        assert!(!s.is_up() && !s.is_confirmed());
        let c = s.record(true, "", 5, 5).unwrap();
        assert_eq!(c.to_string(), "up: ok (1/1)");
        let mut s = HealthState::provisional(false);
        let c = s.record(false, "timeout", 5, 5).unwrap();
        assert_eq!(c.to_string(), "down: timeout (1/1)");
    }

    #[test]
    fn a_restarted_state_needs_a_full_threshold() {
        let mut s = HealthState::new();
        s.record(true, "", 3, 3);
        s.record(false, "timeout", 3, 3);
        s.record(false, "timeout", 3, 3);
        // Settings changed: still up and confirmed, runs start over.
        let mut s = s.restarted();
        assert!(s.is_up() && s.is_confirmed());
        assert_eq!((s.consecutive_ok(), s.consecutive_fail()), (0, 0));
        assert_eq!(s.record(false, "timeout", 3, 3), None);
        assert_eq!(s.record(false, "timeout", 3, 3), None);
        let c = s.record(false, "timeout", 3, 3).unwrap();
        assert_eq!(c.to_string(), "down: timeout (3/3)");
        // An unconfirmed state stays unconfirmed.
        let s = HealthState::provisional(false).restarted();
        assert!(!s.is_up() && !s.is_confirmed());
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let c = Change {
            up: false,
            reason: "timeout".into(),
            count: 2,
            threshold: 2,
        };
        let a: SocketAddr = "[fd00::1]:53".parse().unwrap();
        assert_eq!(c.describe(a), "[fd00::1]:53 down: timeout (2/2)");
    }
}
