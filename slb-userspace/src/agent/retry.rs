//! When to try again a change the dataplane did not take.
//!
//! A health change is applied once, when the checker reports it; if the
//! write fails (a map update refused), nothing else would write it until
//! the next transition, and the tables would keep a dead backend in (or a
//! recovered one out) for as long as its health stays as it is. The agent
//! retries on its clock instead, backing off so that a failure that lasts
//! (the same error every time) does not rewrite every table four times a
//! second.
use std::time::{Duration, Instant};

/// The wait before the first retry; doubled after each failed one.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two retries.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Whether an apply failed since the last one that went in, and when to
/// try again. Pure (the caller passes the time), so tests drive it with
/// made-up instants.
#[derive(Debug, Default)]
pub struct Retry {
    pending: Option<Pending>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The first failure since the last success.
    since: Instant,
    /// When the next retry is due.
    next: Instant,
    /// The wait that led to `next`.
    delay: Duration,
    /// Failed attempts since `since` (the first included).
    failures: u32,
}

/// What had been pending when an apply went in again, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Since the first failure.
    pub after: Duration,
    pub failures: u32,
}

impl Retry {
    /// An apply failed at `now`. Returns whether it is the first failure
    /// since the last success: only that one is worth an error in the log,
    /// the retries of a lasting failure are not.
    pub fn failed(&mut self, now: Instant) -> bool {
        match &mut self.pending {
            None => {
                self.pending = Some(Pending {
                    since: now,
                    next: now + FIRST_DELAY,
                    delay: FIRST_DELAY,
                    failures: 1,
                });
                true
            }
            Some(p) => {
                p.delay = (p.delay * 2).min(MAX_DELAY);
                p.next = now + p.delay;
                p.failures = p.failures.saturating_add(1);
                false
            }
        }
    }

    /// Whether a failed apply waits to be retried (due or not).
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether a failed apply is to be retried at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.pending.is_some_and(|p| p.next <= now)
    }

    /// An apply went in (a retry, a later health change, a reload): the
    /// tables hold the current configuration and health again, nothing is
    /// left to retry. Returns what had been pending, if anything.
    pub fn succeeded(&mut self, now: Instant) -> Option<Recovered> {
        self.pending.take().map(|p| Recovered {
            after: now.saturating_duration_since(p.since),
            failures: p.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn nothing_is_due_before_a_failure() {
        let t0 = Instant::now();
        let mut r = Retry::default();
        assert!(!r.pending());
        assert!(!r.due(t0 + secs(3600)));
        assert_eq!(r.succeeded(t0), None);
    }

    /// The first failure is reported (logged), the retries of the same
    /// outage are not; they come 1 s, 2 s, 4 s … apart, never more than
    /// 30 s, and not before their time.
    #[test]
    fn retries_back_off_up_to_the_cap_and_only_the_first_failure_is_reported() {
        let t0 = Instant::now();
        let mut r = Retry::default();
        assert!(r.failed(t0));
        assert!(r.pending());
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = (1..=60)
                .map(secs)
                .find(|w| r.due(now + *w))
                .expect("a retry within a minute");
            assert!(!r.due(now + wait - Duration::from_millis(1)));
            waits.push(wait.as_secs());
            now += wait;
            assert!(!r.failed(now), "a retry's failure was reported again");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            r.succeeded(now),
            Some(Recovered {
                after: now - t0,
                failures: 9
            })
        );
    }

    /// A success (a retry, or a later health change or reload that went
    /// in) drops the pending retry; a failure after that is a new outage:
    /// reported again, retried after 1 s again.
    #[test]
    fn a_success_drops_the_retry_and_a_later_failure_starts_over() {
        let t0 = Instant::now();
        let mut r = Retry::default();
        r.failed(t0);
        r.failed(t0 + secs(1));
        r.failed(t0 + secs(3));
        assert!(r.succeeded(t0 + secs(4)).is_some());
        assert!(!r.pending());
        assert!(!r.due(t0 + secs(3600)));
        assert_eq!(r.succeeded(t0 + secs(5)), None, "recovered twice");
        let t1 = t0 + secs(100);
        assert!(r.failed(t1));
        assert!(!r.due(t1 + secs(1) - Duration::from_millis(1)));
        assert!(r.due(t1 + secs(1)));
    }
}
