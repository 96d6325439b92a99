//! The probing tasks and the [`Checker`] handle that owns them.
//!
//! One tokio task per target: it sleeps until its first probe (spread over
//! one interval, see [`super::schedule`]), then probes once per interval
//! tick (after a probe longer than the interval, at the next tick after
//! it ended). A task is a timer and, during a probe, one socket, so 1000+
//! targets cost little; a slow backend only delays its own task. Results
//! go into a shared table (a short `std` mutex section per probe), where
//! the state machine decides; each change is logged and sent on the
//! transition channel while the table is locked, so no transition of a
//! target is sent after [`Checker::update`] removed or replaced it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::probe::{self, Outcome};
use super::schedule::{first_offset, next_tick, tick_offset};
use super::state::HealthState;
use super::{Observer, Target, TargetStatus, Transition};
use crate::planner::BackendKey;

/// The state of one target, shared between its task and the handle.
struct Slot {
    /// Which task owns the slot: a replaced target's old task must not
    /// write into its successor's slot.
    generation: u64,
    target: Target,
    state: HealthState,
    history: History,
}

/// What a slot remembers of past probes, for `slb status`.
#[derive(Clone, Debug, Default)]
struct History {
    last_change: Option<SystemTime>,
    last_reason: Option<String>,
    last_change_run: Option<(u32, u32)>,
    last_result: Option<String>,
    last_probe: Option<SystemTime>,
    last_latency: Option<Duration>,
}

type Table = Arc<Mutex<BTreeMap<BackendKey, Slot>>>;

fn lock(table: &Table) -> MutexGuard<'_, BTreeMap<BackendKey, Slot>> {
    // A panic while holding the lock cannot leave a slot half-written in a
    // way that matters; keep going with the data.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handle on the running health checks. Dropping it (or [`stop`]) stops
/// all probing.
///
/// [`stop`]: Checker::stop
pub struct Checker {
    runtime: Handle,
    table: Table,
    tasks: BTreeMap<BackendKey, JoinHandle<()>>,
    events: UnboundedSender<Transition>,
    observer: Option<Observer>,
    next_generation: u64,
}

impl Checker {
    /// Spawns probing on the current tokio runtime; transitions are sent on
    /// the returned channel. Panics outside a tokio runtime.
    pub fn start(targets: Vec<Target>) -> (Checker, UnboundedReceiver<Transition>) {
        Self::start_with_observer(targets, None)
    }

    /// Like [`start`](Checker::start), calling `observer` after every probe.
    pub fn start_with_observer(
        targets: Vec<Target>,
        observer: Option<Observer>,
    ) -> (Checker, UnboundedReceiver<Transition>) {
        Self::start_seeded(targets, observer, &BTreeSet::new())
    }

    /// Like [`start_with_observer`](Checker::start_with_observer), with the
    /// targets in `down` starting down-but-unconfirmed instead of up: what
    /// an agent adopting a previous run's state knows of them until their
    /// first probe decides.
    pub fn start_seeded(
        targets: Vec<Target>,
        observer: Option<Observer>,
        down: &BTreeSet<BackendKey>,
    ) -> (Checker, UnboundedReceiver<Transition>) {
        let (tx, rx) = unbounded_channel();
        let mut checker = Checker {
            runtime: Handle::current(),
            table: Arc::new(Mutex::new(BTreeMap::new())),
            tasks: BTreeMap::new(),
            events: tx,
            observer,
            next_generation: 0,
        };
        let fresh = dedup(targets)
            .into_iter()
            .map(|t| {
                let up = !down.contains(&t.key);
                (t, HealthState::provisional(up), History::default())
            })
            .collect();
        checker.spawn_batch(fresh);
        (checker, rx)
    }

    /// Replaces the target set (config reload). A target whose key, address,
    /// source and check settings are all unchanged keeps its task, state
    /// and counters (it is not probed early). Removed targets stop. New
    /// targets start up-but-unconfirmed; a target whose settings changed
    /// keeps its state and history with its runs of results reset: under
    /// the new settings, a change still needs a full threshold of
    /// consecutive results. First probes of the started targets are
    /// spread over their interval.
    pub fn update(&mut self, targets: Vec<Target>) {
        self.update_renamed(targets, &BTreeMap::new());
    }

    /// [`update`](Checker::update) where listeners were renamed
    /// (`renamed`: new name → old name): a backend of a renamed listener
    /// is the same backend under a new key, so it goes on with the state
    /// and history of its old key (with its runs of results reset, if its
    /// check settings changed too) instead of starting over as a new
    /// target.
    pub fn update_renamed(&mut self, targets: Vec<Target>, renamed: &BTreeMap<String, String>) {
        let targets = dedup(targets);
        let mut start = Vec::new();
        {
            let mut table = lock(&self.table);
            let wanted: BTreeSet<&BackendKey> = targets.iter().map(|t| &t.key).collect();
            let gone: Vec<BackendKey> = table
                .keys()
                .filter(|k| !wanted.contains(k))
                .cloned()
                .collect();
            let mut gone_slots = BTreeMap::new();
            for key in gone {
                if let Some(slot) = table.remove(&key) {
                    gone_slots.insert(key.clone(), slot);
                }
                if let Some(task) = self.tasks.remove(&key) {
                    task.abort();
                }
            }
            for target in targets {
                if table.get(&target.key).is_some_and(|s| s.target == target) {
                    continue;
                }
                // The slot this backend had: under the same key (new check
                // settings), or under its listener's old name.
                let earlier = match table.remove(&target.key) {
                    Some(slot) => {
                        if let Some(task) = self.tasks.remove(&target.key) {
                            task.abort();
                        }
                        Some(slot)
                    }
                    None => renamed.get(&target.key.listener).and_then(|old| {
                        gone_slots.remove(&BackendKey {
                            listener: old.clone(),
                            addr: target.key.addr,
                        })
                    }),
                };
                let (state, history) = match earlier {
                    // The same check under another listener name: as it was.
                    Some(old) if same_check(&old.target, &target) => (old.state, old.history),
                    // New settings: the state stands (only a new target is
                    // unconfirmed), the runs start over.
                    Some(old) => (old.state.restarted(), old.history),
                    None => (HealthState::new(), History::default()),
                };
                start.push((target, state, history));
            }
        }
        self.spawn_batch(start);
    }

    /// The current view of every target, in key order.
    pub fn snapshot(&self) -> Vec<TargetStatus> {
        lock(&self.table)
            .iter()
            .map(|(key, s)| TargetStatus {
                key: key.clone(),
                protocol: s.target.check.protocol(),
                up: s.state.is_up(),
                confirmed: s.state.is_confirmed(),
                last_change: s.history.last_change,
                last_reason: s.history.last_reason.clone(),
                last_change_run: s.history.last_change_run,
                last_result: s.history.last_result.clone(),
                last_probe: s.history.last_probe,
                last_latency: s.history.last_latency,
                consecutive_ok: s.state.consecutive_ok(),
                consecutive_fail: s.state.consecutive_fail(),
            })
            .collect()
    }

    /// The targets currently down.
    pub fn down(&self) -> BTreeSet<BackendKey> {
        lock(&self.table)
            .iter()
            .filter(|(_, s)| !s.state.is_up())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Number of targets being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops all probing.
    pub fn stop(mut self) {
        self.abort_all();
    }

    fn abort_all(&mut self) {
        let mut table = lock(&self.table);
        table.clear();
        for (_, task) in std::mem::take(&mut self.tasks) {
            task.abort();
        }
    }

    /// Inserts the slots and spawns the tasks of targets started together,
    /// spreading their first probes.
    fn spawn_batch(&mut self, batch: Vec<(Target, HealthState, History)>) {
        let count = batch.len();
        let mut table = lock(&self.table);
        for (index, (target, state, history)) in batch.into_iter().enumerate() {
            self.next_generation += 1;
            let generation = self.next_generation;
            let key = target.key.clone();
            let offset = first_offset(index, count, target.check.interval);
            table.insert(
                key.clone(),
                Slot {
                    generation,
                    target: target.clone(),
                    state,
                    history,
                },
            );
            let task = Task {
                table: self.table.clone(),
                generation,
                target,
                events: self.events.clone(),
                observer: self.observer.clone(),
            };
            let handle = self.runtime.spawn(task.run(offset));
            self.tasks.insert(key, handle);
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// `a` and `b` check the same way (their keys aside).
fn same_check(a: &Target, b: &Target) -> bool {
    Target {
        key: b.key.clone(),
        ..a.clone()
    } == *b
}

/// Keeps the first target of each key.
fn dedup(targets: Vec<Target>) -> Vec<Target> {
    let mut seen = BTreeSet::new();
    targets
        .into_iter()
        .filter(|t| {
            let new = seen.insert(t.key.clone());
            if !new {
                warn!(
                    listener = %t.key.listener,
                    "health check target {} given twice; the first one is used",
                    t.key.addr
                );
            }
            new
        })
        .collect()
}

/// The probing loop of one target.
struct Task {
    table: Table,
    generation: u64,
    target: Target,
    events: UnboundedSender<Transition>,
    observer: Option<Observer>,
}

impl Task {
    async fn run(self, offset: Duration) {
        let interval = self.target.check.interval.max(Duration::from_millis(1));
        let first = Instant::now() + offset;
        let mut tick = 0u64;
        loop {
            // Explicit ticks rather than tokio's interval: its Skip mode
            // fires a missed tick at once, so a probe longer than the
            // interval was followed by the next one straight away instead
            // of at the next tick after it ended.
            let at = first
                .checked_add(tick_offset(tick, interval))
                .unwrap_or_else(|| Instant::now() + interval);
            tokio::time::sleep_until(at).await;
            let outcome = probe::run(&self.target).await;
            if let Some(observe) = &self.observer {
                observe(
                    &self.target.key,
                    self.target.check.protocol(),
                    outcome.latency,
                    outcome.ok,
                );
            }
            if !self.record(outcome) {
                return;
            }
            tick = next_tick(
                tick,
                Instant::now().saturating_duration_since(first),
                interval,
            );
        }
    }

    /// Applies one result; false when the target was removed or replaced.
    fn record(&self, outcome: Outcome) -> bool {
        let mut table = lock(&self.table);
        let Some(slot) = table.get_mut(&self.target.key) else {
            return false;
        };
        if slot.generation != self.generation {
            return false;
        }
        let now = SystemTime::now();
        slot.history.last_probe = Some(now);
        slot.history.last_latency = Some(outcome.latency);
        let check = &self.target.check;
        let change = slot.state.record(
            outcome.ok,
            &outcome.reason,
            check.healthy_threshold,
            check.unhealthy_threshold,
        );
        slot.history.last_result = Some(outcome.reason);
        if let Some(change) = change {
            slot.history.last_change = Some(now);
            slot.history.last_reason = Some(change.reason.clone());
            slot.history.last_change_run = Some((change.count, change.threshold));
            info!(
                listener = %self.target.key.listener,
                "{}",
                change.describe(self.target.key.addr)
            );
            // The receiver may be gone (shutting down): nothing to do then.
            let _ = self.events.send(Transition {
                key: self.target.key.clone(),
                up: change.up,
                reason: change.reason,
                count: change.count,
                threshold: change.threshold,
                at: now,
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `HEAD /`, 2xx only.
    fn head_probe() -> Probe {
        Probe::Http(crate::config::HttpProbe {
            method: crate::config::HttpMethod::Head,
            path: "/".into(),
            host: None,
            codes: vec![crate::config::StatusClass::S2xx],
        })
    }
    use crate::config::{HealthCheck, Probe};
    use crate::health::testutil::check;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use tokio::time::timeout;

    fn target(listener: &str, addr: SocketAddr, check: HealthCheck) -> Target {
        Target {
            key: BackendKey {
                listener: listener.into(),
                addr,
            },
            addr,
            source: "127.0.0.1".parse().unwrap(),
            check,
        }
    }

    async fn listen(ip: &str) -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    /// Waits for the next transition of `key`, skipping others.
    async fn next_for(
        rx: &mut UnboundedReceiver<Transition>,
        key: &BackendKey,
        within: Duration,
    ) -> Transition {
        timeout(within, async {
            loop {
                let t = rx.recv().await.expect("channel closed");
                if &t.key == key {
                    return t;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no transition of {key:?} within {within:?}"))
    }

    #[tokio::test]
    async fn down_on_failure_and_up_again() {
        let c = check(Probe::Tcp);
        let (l1, a1) = listen("127.0.0.11").await;
        let (l2, a2) = listen("127.0.0.12").await;
        let (l3, a3) = listen("127.0.0.13").await;
        let targets = vec![
            target("web", a1, c.clone()),
            target("web", a2, c.clone()),
            target("web", a3, c.clone()),
        ];
        let probes = Arc::new(AtomicUsize::new(0));
        let p2 = probes.clone();
        let observer: Observer = Arc::new(move |_, proto, _, _| {
            assert_eq!(proto, crate::config::CheckProtocol::Tcp);
            p2.fetch_add(1, Ordering::Relaxed);
        });
        let (checker, mut rx) = Checker::start_with_observer(targets.clone(), Some(observer));
        // Up but unconfirmed at first.
        assert!(checker.down().is_empty());
        assert!(checker.snapshot().iter().all(|s| s.up && !s.confirmed));

        // The first probes (spread over one interval) confirm all three.
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(
                timeout(Duration::from_millis(1500), rx.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert!(first
            .iter()
            .all(|t| t.up && t.reason == "ok" && (t.count, t.threshold) == (1, 1)));
        assert!(checker.snapshot().iter().all(|s| s.up && s.confirmed));

        // Kill the second: down after 2 failures.
        drop(l2);
        let bound = c.interval * c.unhealthy_threshold + c.timeout + Duration::from_millis(300);
        let t = next_for(&mut rx, &targets[1].key, bound).await;
        assert!(!t.up);
        assert_eq!(t.describe(), format!("{a2} down: connect refused (2/2)"));
        assert_eq!(checker.down(), BTreeSet::from([targets[1].key.clone()]));
        let s = checker
            .snapshot()
            .into_iter()
            .find(|s| s.key == targets[1].key)
            .unwrap();
        assert_eq!(s.last_reason.as_deref(), Some("connect refused"));
        assert_eq!(s.last_change_run, Some((2, 2)));
        assert_eq!(s.consecutive_fail, 2);
        assert!(s.last_latency.is_some());

        // Restart it: up again after 2 successes.
        let l2 = TcpListener::bind(a2).await.unwrap();
        let t = next_for(&mut rx, &targets[1].key, bound).await;
        assert!(t.up);
        assert_eq!(t.describe(), format!("{a2} up: ok (2/2)"));
        assert!(checker.down().is_empty());
        assert!(probes.load(Ordering::Relaxed) >= 7);
        checker.stop();
        drop((l1, l2, l3));
    }

    #[tokio::test]
    async fn seeded_down_targets_stay_down_until_their_first_probe() {
        let (_l, a) = listen("127.0.0.25").await;
        let t = target("web", a, check(Probe::Tcp));
        let down = BTreeSet::from([t.key.clone()]);
        let (checker, mut rx) = Checker::start_seeded(vec![t.clone()], None, &down);
        assert_eq!(checker.down(), down);
        assert!(checker.snapshot().iter().all(|s| !s.up && !s.confirmed));
        let first = timeout(Duration::from_millis(1500), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(first.up && (first.count, first.threshold) == (1, 1));
        assert!(checker.down().is_empty());
    }

    #[tokio::test]
    async fn a_renamed_listeners_backends_keep_their_health() {
        let (l, a) = listen("127.0.0.26").await;
        drop(l);
        let c = check(Probe::Tcp);
        let (mut checker, mut rx) = Checker::start(vec![target("web", a, c.clone())]);
        let first = timeout(Duration::from_millis(1500), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(!first.up);
        let before = checker.snapshot().remove(0);
        let renamed = BTreeMap::from([("www".to_owned(), "web".to_owned())]);
        checker.update_renamed(vec![target("www", a, c)], &renamed);
        let after = checker.snapshot().remove(0);
        assert_eq!(after.key.listener, "www");
        assert!(!after.up && after.confirmed);
        assert_eq!(after.last_change, before.last_change);
        assert_eq!(after.last_reason, before.last_reason);
        // Still down: no new decision, unlike a new target's first probe.
        assert!(timeout(Duration::from_millis(1200), rx.recv())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn update_keeps_unchanged_targets() {
        let c = check(Probe::Tcp);
        let (_l1, a1) = listen("127.0.0.21").await;
        let (_l2, a2) = listen("127.0.0.22").await;
        let (_l3, a3) = listen("127.0.0.23").await;
        let t1 = target("web", a1, c.clone());
        let t2 = target("web", a2, c.clone());
        let t3 = target("web", a3, c.clone());
        let (mut checker, mut rx) = Checker::start(vec![t1.clone(), t2.clone()]);
        for _ in 0..2 {
            timeout(Duration::from_millis(1500), rx.recv())
                .await
                .unwrap()
                .unwrap();
        }
        let before = checker.snapshot();
        let s1 = before.iter().find(|s| s.key == t1.key).unwrap().clone();
        assert!(s1.confirmed);

        // t1 unchanged, t2 with a new threshold, t3 new.
        let mut c2 = c.clone();
        c2.healthy_threshold = 3;
        let t2b = target("web", a2, c2);
        checker.update(vec![t1.clone(), t2b, t3.clone()]);
        assert_eq!(checker.len(), 3);
        let after = checker.snapshot();
        let s1b = after.iter().find(|s| s.key == t1.key).unwrap();
        assert!(s1b.confirmed);
        assert_eq!(s1b.last_change, s1.last_change);
        assert!(s1b.consecutive_ok >= s1.consecutive_ok);
        // The changed target keeps its confirmed state and history.
        let s2 = before.iter().find(|s| s.key == t2.key).unwrap();
        let s2b = after.iter().find(|s| s.key == t2.key).unwrap();
        assert!(s2b.up && s2b.confirmed);
        assert_eq!(s2b.last_change, s2.last_change);
        assert_eq!((s2b.consecutive_ok, s2b.consecutive_fail), (0, 0));
        let s3 = after.iter().find(|s| s.key == t3.key).unwrap();
        assert!(s3.up && !s3.confirmed);

        // Only the new target is decided by its first probe; the changed
        // and the unchanged ones (still up) send nothing.
        let t = timeout(Duration::from_millis(1500), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(t.up && t.count == 1);
        assert_eq!(t.key, t3.key);
        let s1c = checker
            .snapshot()
            .into_iter()
            .find(|s| s.key == t1.key)
            .unwrap();
        assert_eq!(s1c.last_change, s1.last_change);

        // Removing stops it.
        checker.update(vec![t3.clone()]);
        assert_eq!(checker.len(), 1);
        let keys: Vec<_> = checker.snapshot().into_iter().map(|s| s.key).collect();
        assert_eq!(keys, vec![t3.key]);
        assert!(timeout(Duration::from_millis(1200), rx.recv())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn changed_settings_keep_the_state_until_a_full_threshold() {
        // Up (confirmed), then the backend dies as its check settings
        // change: it goes down only after unhealthy_threshold (3)
        // failures under the new settings, not at the first one.
        let (l, a) = listen("127.0.0.27").await;
        let c = check(Probe::Tcp);
        let (mut checker, mut rx) = Checker::start(vec![target("web", a, c.clone())]);
        let first = timeout(Duration::from_millis(1500), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(first.up);
        drop(l);
        let mut c2 = c.clone();
        c2.unhealthy_threshold = 3;
        let t2 = target("web", a, c2);
        checker.update(vec![t2.clone()]);
        let s = checker.snapshot().remove(0);
        assert!(s.up && s.confirmed);
        let started = std::time::Instant::now();
        // Probes at about 0, 1 and 2 s after the update.
        let t = next_for(&mut rx, &t2.key, Duration::from_millis(3500)).await;
        assert_eq!(t.describe(), format!("{a} down: connect refused (3/3)"));
        assert!(started.elapsed() >= Duration::from_millis(1800));
    }

    #[tokio::test]
    async fn a_probe_longer_than_the_interval_waits_for_the_next_tick() {
        // Interval 1 s, probes of a silent server time out after 1.3 s:
        // probes start at 0, 2 and 4 s (ticks after each end), not at
        // 0, 1.3 and 2.6 s.
        let silent = crate::health::testutil::silent_server("127.0.0.33").await;
        let http = head_probe();
        let mut c = check(http);
        c.timeout = Duration::from_millis(1300);
        let starts = Arc::new(Mutex::new(Vec::new()));
        let s2 = starts.clone();
        let observer: Observer = Arc::new(move |_, _, latency, _| {
            s2.lock().unwrap().push(std::time::Instant::now() - latency);
        });
        let (checker, _rx) =
            Checker::start_with_observer(vec![target("web", silent, c)], Some(observer));
        tokio::time::sleep(Duration::from_millis(5500)).await;
        drop(checker);
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 3, "{starts:?}");
        for w in starts.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_millis(1900) && gap <= Duration::from_millis(2200),
                "{gap:?} between probes"
            );
        }
    }

    #[tokio::test]
    async fn a_slow_target_does_not_delay_others() {
        // One target that never answers (HTTP to a silent server, timeout
        // 2 s) probed first, one fast probed 500 ms later: the fast one is
        // decided well before the slow one times out.
        let silent = crate::health::testutil::silent_server("127.0.0.31").await;
        let (_l, fast) = listen("127.0.0.32").await;
        let http = head_probe();
        let mut slow_check = check(http);
        slow_check.timeout = Duration::from_secs(2);
        let slow_t = target("web", silent, slow_check);
        let fast_t = target("web", fast, check(Probe::Tcp));
        // Fast target second: its first probe starts 500 ms in.
        let (checker, mut rx) = Checker::start(vec![slow_t.clone(), fast_t.clone()]);
        let t = timeout(Duration::from_millis(1500), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.key, fast_t.key);
        assert!(t.up);
        // The slow one times out 2 s after the start.
        let t = timeout(Duration::from_millis(2500), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.key, slow_t.key);
        assert_eq!(t.reason, "timeout");
        drop(checker);
    }

    #[tokio::test]
    async fn many_targets_are_cheap() {
        // 1000 targets (closed ports on loopback): all decided within
        // about one interval.
        let c = check(Probe::Tcp);
        let port = crate::health::testutil::free_port().await;
        let targets: Vec<Target> = (0..1000u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x7f01_0000 + i);
                target("many", SocketAddr::new(ip.into(), port), c.clone())
            })
            .collect();
        let (checker, mut rx) = Checker::start(targets);
        let mut n = 0;
        while n < 1000 {
            let t = timeout(Duration::from_millis(2500), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(!t.up);
            assert_eq!(t.reason, "connect refused");
            n += 1;
        }
        assert_eq!(checker.down().len(), 1000);
    }
}
