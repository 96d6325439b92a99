//! The running agent's state and what it does on each event.
use super::{
    apply::{Applier, Prepared},
    load_config,
    retry::{Retry, FIRST_DELAY, MAX_DELAY},
    snapshot, Mode,
};
use crate::{
    config::Config,
    control::{Request, Response},
    dataplane::{AttachMode, Checkpoint, Dataplane, DataplaneError, FlowTables},
    health::{Checker, Target, Transition},
    l7::ProxyHandle,
    localaddr::{LocalAddrs, LOOPBACK},
    metrics::Metrics,
    planner::{BackendKey, Health},
};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, mpsc::UnboundedReceiver, oneshot, watch, Semaphore};
use tracing::{error, info, warn};

/// `first` and every transition already queued behind it, in the order
/// sent. A switch outage marks hundreds of backends down within one
/// interval (and an agent's start decides all of them at once); applying
/// each on its own rewrote every backend entry and re-planned every table
/// once per backend, 4096 full applies in a row, keeping the agent busy
/// for minutes while one apply with the final health does the same.
pub fn queued_transitions(
    first: Transition,
    rx: &mut UnboundedReceiver<Transition>,
) -> Vec<Transition> {
    let mut batch = vec![first];
    while let Ok(t) = rx.try_recv() {
        batch.push(t);
    }
    batch
}

/// Health-check targets: every backend of a listener that checks health
/// (for http/https listeners, the backends of every group too).
pub fn targets(cfg: &Config, mode: Mode) -> Vec<Target> {
    cfg.listeners
        .iter()
        .filter(|l| mode == Mode::Full || l.protocol.is_l7())
        .filter_map(|l| Some((l, l.health_check.as_ref()?)))
        .flat_map(|(l, check)| {
            l.all_backends()
                .into_iter()
                .filter_map(move |b| Target::new(&cfg.agent, &l.name, b.socket_addr(), check))
        })
        .collect()
}

/// Addresses that must be local: the probe sources (when something is
/// checked) and the VIPs of http/https listeners (SPEC §4, §5).
pub fn local_addresses(cfg: &Config, mode: Mode) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Vec::new();
    if !targets(cfg, mode).is_empty() {
        v.extend(cfg.agent.probe_source.iter().copied());
    }
    for l in cfg.l7_listeners() {
        if !v.contains(&l.vip) {
            v.push(l.vip);
        }
    }
    v
}

/// Listeners of `new` that are listeners of `old` under another name:
/// same VIP, port and transport, the old name gone (new name → old name).
/// They keep their ids anyway (the planner keys ids by VIP, port and
/// protocol); this lets their backends keep their health too.
pub fn renames(old: &Config, new: &Config) -> BTreeMap<String, String> {
    let service = crate::planner::vip_key;
    new.listeners
        .iter()
        .filter(|n| old.listener(&n.name).is_none())
        .filter_map(|n| {
            let o = old
                .listeners
                .iter()
                .find(|o| service(o) == service(n) && new.listener(&o.name).is_none())?;
            Some((n.name.clone(), o.name.clone()))
        })
        .collect()
}

/// The backends down under a new configuration before the checker was told
/// about it, as `Checker::update_renamed` will see them: a target kept under
/// its key, or under its listener's new name, keeps its state; any other
/// target of `targets` is new, and up until probed.
pub fn health_after(
    down: &BTreeSet<BackendKey>,
    renamed: &BTreeMap<String, String>,
    targets: &[Target],
) -> Health {
    let new_name: BTreeMap<&String, &String> = renamed.iter().map(|(n, o)| (o, n)).collect();
    let wanted: BTreeSet<&BackendKey> = targets.iter().map(|t| &t.key).collect();
    let down = down
        .iter()
        .flat_map(|k| {
            // Under its own name while that is still a listener's,
            // under the new name of a renamed listener otherwise.
            let moved = new_name.get(&k.listener).map(|n| BackendKey {
                listener: (*n).clone(),
                addr: k.addr,
            });
            [Some(k.clone()), moved]
        })
        .flatten()
        .filter(|k| wanted.contains(k))
        .collect();
    Health { down }
}

/// How often [`Running::keep_local`] looks for missing local addresses:
/// half the shortest check interval (`Running::tick` runs every 250 ms).
const LOCAL_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Whether a tcp/udp listener of `cfg` schedules by active flows (`wlc`):
/// only then are the dataplane's counts kept true (`refresh_active`).
fn has_wlc(cfg: &Config) -> bool {
    cfg.l4_listeners()
        .any(|l| l.scheduler == crate::config::Scheduler::Wlc)
}

/// What the `wlc` recount needs to walk the connection table away from
/// the main loop: the tables and each listener's idle timeout (by id, as
/// `cfg` sets them), `None` when no listener of `cfg` uses `wlc`.
fn recount_work(
    dp: &Dataplane,
    applier: &Applier,
    cfg: &Config,
) -> Option<impl FnOnce() -> Option<BTreeMap<u32, u64>> + Send + 'static> {
    if !has_wlc(cfg) {
        return None;
    }
    // A listener `cfg` adds has no id yet, and no flow either.
    let idle: BTreeMap<u32, u64> = applier
        .listeners_by_id(cfg)
        .into_iter()
        .map(|(id, l)| (id, l.idle_timeout.as_nanos() as u64))
        .collect();
    let tables = dp.flow_tables();
    Some(move || {
        let (counts, whole) = tables.active_flows(|id| idle.get(&id).copied());
        // Part of the table only: the counts are too low, and `wlc` would
        // pile new flows on the backends it missed.
        whole.then_some(counts)
    })
}

/// A periodic `wlc` recount, walked on a blocking thread (see
/// [`Running::refresh_active`]).
pub struct Recounted {
    /// [`Running::changes`] when the walk started.
    changes: u64,
    /// `None` when the table was not read whole.
    counts: Option<BTreeMap<u32, u64>>,
}

/// Runs `work` on a blocking thread once it has one of `turns`, and sends
/// what it returns on `reply`.
fn walk(
    turns: Arc<Semaphore>,
    tables: Arc<FlowTables>,
    reply: oneshot::Sender<Response>,
    work: impl FnOnce(&FlowTables) -> Response + Send + 'static,
) {
    tokio::spawn(async move {
        // Queued here, not on the main loop: each walk reads the whole
        // table, and a burst of requests (scrapes, a script calling
        // `slb status` in a loop) must not take every CPU.
        let Ok(_turn) = turns.acquire_owned().await else {
            return;
        };
        let response = tokio::task::spawn_blocking(move || work(&tables))
            .await
            .unwrap_or_else(|e| Response::Error {
                errors: vec![format!("reading the connection table failed: {e}")],
            });
        let _ = reply.send(response);
    });
}

pub struct Running {
    pub path: PathBuf,
    mode: Mode,
    pub cfg: Config,
    /// The XDP dataplane and its writer (`slb run` only).
    dataplane: Option<(Dataplane, Applier)>,
    checker: Checker,
    /// Tells the proxy which backends are down.
    health_tx: watch::Sender<Health>,
    /// Serves the http/https listeners (none, until a reload adds some).
    proxy: ProxyHandle,
    metrics: Arc<Metrics>,
    local: LocalAddrs,
    /// VIPs kept local for removed listeners still draining (as of the
    /// last look).
    draining: BTreeSet<IpAddr>,
    /// When [`Running::keep_local`] looks at the local addresses next.
    next_local_check: Instant,
    /// The last error making addresses local, so that one retried on
    /// every look is logged once.
    local_error: Option<String>,
    /// Configurations applied so far (1 after start).
    generation: u64,
    /// Turns for walks of the connection table (see [`Running::walk`]):
    /// for `slb flows`, and for the counts of status and metrics, apart
    /// so that a scrape does not wait seconds behind a full listing.
    listings: Arc<Semaphore>,
    counts: Arc<Semaphore>,
    /// Reloads that reached the dataplane: a recount walked before one
    /// may count under ids that now name other backends, and is dropped.
    changes: u64,
    /// Whether a periodic recount is being walked.
    recounting: bool,
    /// Where periodic recounts report (to the main loop).
    recounted: mpsc::UnboundedSender<Recounted>,
    /// A health change (or a retired flag's drop) the dataplane did not
    /// take, retried on the clock (`tick`) until an apply goes in.
    retry: Retry,
}

/// How a failed apply is retried, for its log line.
fn retrying() -> String {
    format!(
        "retrying with a backoff from {} s up to {} s until an apply goes in",
        FIRST_DELAY.as_secs(),
        MAX_DELAY.as_secs()
    )
}

impl Running {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: PathBuf,
        mode: Mode,
        cfg: Config,
        dataplane: Option<(Dataplane, Applier)>,
        checker: Checker,
        health_tx: watch::Sender<Health>,
        proxy: ProxyHandle,
        metrics: Arc<Metrics>,
        local: LocalAddrs,
        recounted: mpsc::UnboundedSender<Recounted>,
    ) -> Running {
        Running {
            path,
            mode,
            cfg,
            dataplane,
            checker,
            health_tx,
            proxy,
            metrics,
            local,
            draining: BTreeSet::new(),
            // The caller made them local just before.
            next_local_check: Instant::now() + LOCAL_CHECK_EVERY,
            local_error: None,
            generation: 0,
            listings: Arc::new(Semaphore::new(1)),
            counts: Arc::new(Semaphore::new(1)),
            changes: 0,
            recounting: false,
            recounted,
            retry: Retry::default(),
        }
    }

    fn health(&self) -> Health {
        Health {
            down: self.checker.down(),
        }
    }

    /// Plans the current configuration with the current health and writes
    /// it to the dataplane; tells the proxy about health.
    fn apply(&mut self) -> anyhow::Result<()> {
        let health = self.health();
        self.apply_with(health)
    }

    /// Plans the current configuration with `health` and writes it to the
    /// dataplane as one change: one that fails leaves the maps and the ids
    /// as they were (see `Applier::commit`).
    fn apply_with(&mut self, health: Health) -> anyhow::Result<()> {
        let prepared = match self.dataplane.as_ref() {
            Some((_, applier)) => Some(applier.prepare(&self.cfg, &health)?),
            None => None,
        };
        self.commit(prepared, health)
    }

    /// Writes a change `Applier::prepare` planned (with `health`, for the
    /// current configuration); tells the proxy about health.
    fn commit(&mut self, prepared: Option<Prepared>, health: Health) -> anyhow::Result<()> {
        if let (Some((dp, applier)), Some(prepared)) = (self.dataplane.as_mut(), prepared) {
            applier.commit(dp, prepared)?;
        }
        self.health_tx.send_replace(health);
        // Planned with the current health (a reload's too): whatever a
        // failed apply left undone is in now.
        if let Some(r) = self.retry.succeeded(Instant::now()) {
            info!(
                failed_attempts = r.failures,
                "the dataplane took the change it had refused {:.1} s ago: \
                 its tables follow the current health again",
                r.after.as_secs_f64()
            );
        }
        Ok(())
    }

    /// Starts recording the dataplane writes from here on, so that a start
    /// that fails after writing its tables can put back what an adopted
    /// dataplane held (`None` for `slb proxy`).
    pub fn checkpoint(&mut self) -> Option<Checkpoint> {
        self.dataplane.as_mut().map(|(dp, _)| dp.checkpoint())
    }

    /// Keeps what was written since `cp`.
    pub fn release(&mut self, cp: Option<Checkpoint>) {
        if let (Some((dp, _)), Some(cp)) = (self.dataplane.as_mut(), cp) {
            dp.release(cp);
        }
    }

    /// The start went through: the pinned state is this run's to keep
    /// (see `Dataplane::keep_pins`).
    pub fn keep_pins(&mut self) {
        if let Some((dp, _)) = self.dataplane.as_mut() {
            dp.keep_pins();
        }
    }

    /// Puts back what the dataplane maps held at `cp`.
    pub fn roll_back(&mut self, cp: Option<Checkpoint>) -> Result<(), DataplaneError> {
        match (self.dataplane.as_mut(), cp) {
            (Some((dp, _)), Some(cp)) => dp.roll_back(cp),
            _ => Ok(()),
        }
    }

    /// The agent's housekeeping, four times a second: local addresses,
    /// drained VIPs, the retry of an apply that failed (see [`Retry`]),
    /// and the kept flag of a retired `nat` backend whose time is up (see
    /// `planner::RetiredNat`). The fast path's clock is
    /// not advanced here but by a thread of its own (`start`), so that it
    /// keeps moving while this loop is busy.
    pub fn tick(&mut self) {
        self.release_drained();
        self.keep_local();
        let Some((_, applier)) = self.dataplane.as_ref() else {
            return;
        };
        let now = Instant::now();
        // A due flag waits while a failed apply waits for its retry: the
        // retry drops it too, and a failure that lasts is not to be
        // rewritten (and logged) four times a second.
        let retry = self.retry.due(now);
        if !retry && (self.retry.pending() || !applier.retired_nat_due(now)) {
            return;
        }
        if let Err(e) = self.apply() {
            // A retry's failure was logged when the failure began.
            if self.retry.failed(now) {
                error!(
                    "dropping the flags of retired nat backends failed: {e:#}; {}",
                    retrying()
                );
            }
        }
    }

    /// Makes local exactly the addresses the configuration needs and those
    /// of removed listeners whose connections are still draining; removes
    /// (of those the agent added) the others.
    fn sync_local(&mut self) {
        let mut wanted = local_addresses(&self.cfg, self.mode);
        self.draining = self.proxy.draining_vips();
        for vip in &self.draining {
            if !wanted.contains(vip) {
                wanted.push(*vip);
            }
        }
        match self.local.sync(&wanted) {
            Ok(added) => {
                // Every caller runs after the wanted addresses were made
                // local (at start, or by the reload): one added here had
                // gone missing since.
                for addr in added {
                    warn!("{addr} was no longer a local address; added it to {LOOPBACK} again");
                }
                self.local_error = None;
            }
            Err(e) => {
                let e = e.to_string();
                if self.local_error.as_ref() != Some(&e) {
                    warn!("local addresses: {e}");
                }
                self.local_error = Some(e);
            }
        }
    }

    /// Puts back the addresses that must be local and went missing (`lo`
    /// flushed by an operator or a network manager; SPEC §4: the agent
    /// adds the probe source when it is missing). Without the probe
    /// source every probe fails to bind, and every backend would be
    /// marked down although none failed. Looked at more often than the
    /// shortest check interval (1 s), so a backend sees at most one such
    /// failure, below any `unhealthy_threshold` (at least 2).
    fn keep_local(&mut self) {
        let now = Instant::now();
        if now < self.next_local_check {
            return;
        }
        self.next_local_check = now + LOCAL_CHECK_EVERY;
        self.sync_local();
    }

    /// Removes the VIPs of removed listeners once their last connection
    /// ended (called on the agent's clock).
    fn release_drained(&mut self) {
        if self.draining.is_empty() || self.proxy.draining_vips() == self.draining {
            return;
        }
        self.sync_local();
    }

    /// Applies the configuration for the first time.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if let Some((dp, _)) = self.dataplane.as_mut() {
            // Before the program runs on these maps: an adopted clock
            // stood still since the previous agent stopped.
            dp.start_clock()?;
        }
        self.tick();
        self.apply()?;
        self.generation = 1;
        Ok(())
    }

    /// Rewrites the active-flow counts `wlc` reads from the connection
    /// table: the program counts flows in at scheduling and out at FIN/RST,
    /// but flows that just go idle are only noticed here. Walks the table,
    /// so only done when a `wlc` listener exists, and on a blocking thread:
    /// about 0.4 s per million entries, during which the main loop goes on
    /// with health changes, reloads and status. The counts are written
    /// when the walk reports back ([`Running::recounted`]).
    pub fn refresh_active(&mut self) {
        if self.recounting {
            return;
        }
        let Some((dp, applier)) = self.dataplane.as_ref() else {
            return;
        };
        let Some(work) = recount_work(dp, applier, &self.cfg) else {
            return;
        };
        self.recounting = true;
        let (changes, to_loop) = (self.changes, self.recounted.clone());
        tokio::task::spawn_blocking(move || {
            // Reported even if the walk panicked: until it hears back, the
            // loop starts no other recount.
            let counts =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or(None);
            let _ = to_loop.send(Recounted { changes, counts });
        });
    }

    /// Writes the counts of a periodic recount, unless a reload reached
    /// the dataplane since its walk began: that may have given a backend's
    /// id to another backend (zeroing its count) or changed an idle
    /// timeout. The next recount, 2 s later, counts afresh.
    pub fn recounted(&mut self, r: Recounted) {
        self.recounting = false;
        let Some(counts) = r.counts.filter(|_| r.changes == self.changes) else {
            return;
        };
        if let Some((dp, applier)) = self.dataplane.as_mut() {
            if let Err(e) = dp.set_active(&counts, applier.ids.backend_ids()) {
                warn!("refreshing active-flow counts: {e}");
            }
        }
    }

    /// Rewrites the active-flow counts as `cfg` (a configuration about to
    /// be applied) needs them, before anything else happens: walked on a
    /// blocking thread, but waited for.
    async fn recount_active_now(&mut self, cfg: &Config) {
        let Some((dp, applier)) = self.dataplane.as_ref() else {
            return;
        };
        let Some(work) = recount_work(dp, applier, cfg) else {
            return;
        };
        let counts = match tokio::task::spawn_blocking(work).await {
            Ok(Some(counts)) => counts,
            Ok(None) => return,
            Err(e) => {
                warn!("counting active flows: {e}");
                return;
            }
        };
        if let Some((dp, applier)) = self.dataplane.as_mut() {
            if let Err(e) = dp.set_active(&counts, applier.ids.backend_ids()) {
                warn!("refreshing active-flow counts: {e}");
            }
        }
    }

    /// Attaches the XDP program to the configured interfaces (`slb run`).
    /// On failure, the links of a previous run are still in place (see
    /// `Dataplane::attach_all`).
    pub fn attach(&mut self, mode: AttachMode) -> Result<(), DataplaneError> {
        match self.dataplane.as_mut() {
            Some((dp, _)) => dp.attach_all(&self.cfg.agent.interfaces, mode),
            None => Ok(()),
        }
    }

    /// Whether the dataplane was adopted from a previous run's pins.
    pub fn adopted(&self) -> bool {
        self.dataplane.as_ref().is_some_and(|(dp, _)| dp.adopted)
    }

    /// Backends went down or came back (`batch`, see [`queued_transitions`]):
    /// their table slots move at once, and the proxy stops or resumes using
    /// them. One apply for the whole batch: it plans with the checker's
    /// current health, which already holds every change of the batch.
    /// One that fails is retried on the clock ([`Running::tick`]) until an
    /// apply goes in: nothing else would write it before the backend's
    /// next transition.
    pub fn health_changed(&mut self, batch: &[Transition]) {
        if let Err(e) = self.apply() {
            // Each transition that fails is logged (it names other
            // backends); the retries in between are not.
            self.retry.failed(Instant::now());
            let retrying = retrying();
            match batch {
                [t] => error!(
                    "applying the health change of {} failed: {e:#}; {retrying}",
                    t.key.addr
                ),
                _ => error!(
                    "applying the health changes of {} backends failed: {e:#}; {retrying}",
                    batch.len()
                ),
            }
        }
    }

    /// Re-reads the file. A file that does not validate, changes `[agent]`
    /// settings, or cannot be applied leaves the running configuration in
    /// force.
    pub async fn reload(&mut self) -> Response {
        let response = self.try_reload().await;
        self.metrics
            .record_reload(matches!(response, Response::Reloaded { .. }));
        response
    }

    async fn try_reload(&mut self) -> Response {
        let refuse = |errors: Vec<String>| {
            error!(
                "reload rejected, the running configuration stays in force:\n{}",
                errors.join("\n")
            );
            Response::Error { errors }
        };
        let cfg = match load_config(&self.path, self.mode) {
            Ok(c) => c,
            Err(errors) => return refuse(errors.errors.iter().map(|e| e.to_string()).collect()),
        };
        let agent_changes = self.cfg.agent.changes_to(&cfg.agent);
        if !agent_changes.is_empty() {
            return refuse(agent_changes.iter().map(|e| e.to_string()).collect());
        }
        let renamed = renames(&self.cfg, &cfg);
        let new_targets = targets(&cfg, self.mode);
        // The checker learns the new targets only once the change is in:
        // told and then told back, it would forget the state of a backend
        // the failed file left out, and count it as up (unprobed) again.
        let health = health_after(&self.checker.down(), &renamed, &new_targets);
        // A file the dataplane cannot take is refused before the proxy
        // changes anything: a removed http/https listener would otherwise
        // have closed its connections for nothing.
        let prepared = match self.dataplane.as_ref() {
            Some((_, applier)) => match applier.prepare(&cfg, &health) {
                Ok(p) => Some(p),
                Err(e) => return refuse(vec![format!("applying it failed: {e:#}")]),
            },
            None => None,
        };
        // Before the tables: a first IPv6 listener's flows need IPv6
        // forwarding from their first packet. Put back if the reload fails.
        let mut sysctls = Vec::new();
        if self.dataplane.is_some() {
            match super::sysctl::enable_forwarding_for(&cfg) {
                Ok(changed) => sysctls = changed,
                Err(e) => return refuse(vec![format!("kernel settings: {e}")]),
            }
        }
        // New VIPs must be local before the proxy binds them. Addresses no
        // longer wanted go only once the proxy is done with them: the
        // connections of a removed listener finish their requests (within
        // `SHUTDOWN_GRACE`) from its VIP, which they could no longer send
        // from without it.
        if let Err(e) = self.local.ensure_all(local_addresses(&cfg, self.mode)) {
            self.sync_local();
            super::sysctl::restore(sysctls);
            return refuse(vec![format!("local addresses: {e}")]);
        }
        if let Err(e) = self.proxy.reload(&cfg.listeners).await {
            self.sync_local();
            super::sysctl::restore(sysctls);
            return refuse(vec![format!("L7 proxy: {e}")]);
        }
        // From here the dataplane changes (or fails part way and is put
        // back): a periodic recount walked meanwhile is dropped.
        self.changes += 1;
        if !has_wlc(&self.cfg) {
            // Nothing re-counted the active flows while no `wlc` listener
            // existed: the program's counts still hold every flow that
            // went idle since (every UDP flow). A listener about to
            // schedule by them must not wait for the periodic recount;
            // counted before the switch, so no new flow sees the stale
            // counts (and true counts are harmless if the change fails).
            self.recount_active_now(&cfg).await;
        }
        let previous = std::mem::replace(&mut self.cfg, cfg);
        match self.commit(prepared, health) {
            Ok(()) => {
                self.checker.update_renamed(new_targets, &renamed);
                self.sync_local();
                self.generation += 1;
                info!(
                    listeners = self.cfg.listeners.len(),
                    generation = self.generation,
                    "configuration reloaded"
                );
                Response::Reloaded {
                    generation: self.generation,
                }
            }
            Err(e) => {
                // The dataplane and the ids are as they were (the change
                // was rolled back); the proxy and the addresses go back.
                self.cfg = previous;
                // The previous VIPs are still local (nothing was removed
                // yet): the proxy can bind them again.
                if let Err(e) = self.proxy.reload(&self.cfg.listeners).await {
                    error!("restoring the previous proxy configuration failed: {e}");
                }
                self.sync_local();
                super::sysctl::restore(sysctls);
                refuse(vec![format!("applying it failed: {e:#}")])
            }
        }
    }

    /// Answers `req` on `reply`. What walks the connection table (flows,
    /// and the active-flow counts of status and metrics) is answered from
    /// a blocking thread, so the main loop goes on meanwhile: a walk of a
    /// million entries takes seconds.
    pub async fn handle(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        let fail = |e: String| Response::Error { errors: vec![e] };
        match req {
            Request::Reload => {
                let _ = reply.send(self.reload().await);
            }
            Request::Flows { filter } => match self.dataplane.as_ref() {
                Some((dp, applier)) => match super::flows::filter_error(&self.cfg, &filter) {
                    Some(e) => {
                        let _ = reply.send(fail(e));
                    }
                    None => {
                        let names = super::flows::ListenerNames::new(&self.cfg, applier);
                        let turns = self.listings.clone();
                        walk(turns, dp.flow_tables(), reply, move |tables| {
                            Response::Flows(super::flows::list(tables, &names, &filter))
                        });
                    }
                },
                None => {
                    let _ = reply.send(fail(
                        "no connection table: this agent runs only the L7 proxy (`slb proxy`)"
                            .into(),
                    ));
                }
            },
            Request::Status => {
                let built = snapshot::build(
                    &self.cfg,
                    self.dataplane.as_ref(),
                    self.proxy.metrics(),
                    &self.checker.snapshot(),
                    self.generation,
                );
                match (built, self.dataplane.as_ref()) {
                    (Ok((mut s, Some(counts))), Some((dp, _))) => {
                        let turns = self.counts.clone();
                        walk(turns, dp.flow_tables(), reply, move |tables| {
                            counts.fill(&mut s, tables);
                            Response::Status(s)
                        });
                    }
                    (Ok((s, _)), _) => {
                        let _ = reply.send(Response::Status(s));
                    }
                    (Err(e), _) => {
                        let _ = reply.send(fail(format!("reading the dataplane: {e}")));
                    }
                }
            }
        }
    }

    /// Stops health checks and the proxy, removes the addresses the agent
    /// added, then either detaches and unpins everything or leaves the
    /// dataplane running for the next agent.
    pub async fn shutdown(self, keep_dataplane: bool) {
        let Running {
            dataplane,
            checker,
            mut local,
            proxy,
            ..
        } = self;
        checker.stop();
        proxy.shutdown().await;
        if let Err(e) = local.release() {
            warn!("removing added local addresses: {e}");
        }
        let Some((mut dp, _)) = dataplane else {
            return;
        };
        if keep_dataplane && !dp.pins_outlive_process {
            warn!(
                "the dataplane cannot be left running: its pins are on a bpffs in this \
                 agent's own mount namespace, which goes away with it; detaching instead"
            );
        }
        if keep_dataplane && dp.pins_outlive_process {
            dp.keep_running();
            info!("dataplane left running; the next `slb run` adopts it");
        } else {
            dp.detach_all();
            match dp.unpin() {
                Ok(()) => info!("dataplane detached, pinned state removed"),
                Err(e) => warn!("removing pinned maps: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listeners: &[(&str, u16, &str)]) -> Config {
        crate::config::parse(&toml_of(listeners)).unwrap()
    }

    fn toml_of(listeners: &[(&str, u16, &str)]) -> String {
        let mut s =
            String::from("[agent]\ninterfaces = [\"eth0\"]\nprobe_source = \"100.64.0.1\"\nlocal_addresses = [\"100.64.0.10\"]\n");
        for (name, port, protocol) in listeners {
            s += &format!(
                "[[listener]]\nname = \"{name}\"\nvip = \"10.0.0.10\"\nport = {port}\nprotocol = \"{protocol}\"\n\
                 [[listener.backend]]\naddress = \"10.0.1.2\"\nport = 80\n"
            );
        }
        s
    }

    /// A burst of transitions (every backend decided at start, or marked
    /// down by a switch outage) is handled as one batch, every transition
    /// in it in the order sent; a later one goes into the next batch.
    #[tokio::test]
    async fn a_burst_of_transitions_is_one_batch_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let transition = |i: u32| Transition {
            key: BackendKey {
                listener: "web".into(),
                addr: std::net::SocketAddr::new(
                    std::net::Ipv4Addr::from(0x0a01_0000 + i).into(),
                    8080,
                ),
            },
            up: i.is_multiple_of(2),
            reason: "connect refused".into(),
            count: 3,
            threshold: 3,
            at: std::time::SystemTime::now(),
        };
        let sent: Vec<Transition> = (0..4096).map(transition).collect();
        for t in &sent {
            tx.send(t.clone()).unwrap();
        }
        let first = rx.recv().await.unwrap();
        let batch = queued_transitions(first, &mut rx);
        assert_eq!(batch, sent);
        let later = transition(5000);
        tx.send(later.clone()).unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(queued_transitions(first, &mut rx), vec![later]);
    }

    /// The health a reload plans with before the checker hears of it: the
    /// state of a kept target, also under its listener's new name; none
    /// for a target no longer checked.
    #[test]
    fn health_after_a_change_follows_renames_and_drops_gone_targets() {
        let checked = |listeners: &[(&str, u16, &str)]| {
            let text = toml_of(listeners).replace(
                "[[listener.backend]]",
                "health_check = { protocol = \"tcp\" }\n[[listener.backend]]",
            );
            crate::config::parse(&text).unwrap()
        };
        let old = checked(&[("web", 80, "tcp"), ("api", 81, "tcp"), ("dns", 53, "udp")]);
        let new = checked(&[("www", 80, "tcp"), ("dns", 53, "udp")]);
        let key = |l: &str| BackendKey {
            listener: l.to_owned(),
            addr: "10.0.1.2:80".parse().unwrap(),
        };
        let down = BTreeSet::from([key("web"), key("api"), key("dns")]);
        let h = health_after(&down, &renames(&old, &new), &targets(&new, Mode::Full));
        assert_eq!(h.down, BTreeSet::from([key("www"), key("dns")]));
    }

    #[test]
    fn renames_are_listeners_on_the_same_service_under_a_new_name() {
        let old = cfg(&[("web", 80, "tcp"), ("dns", 53, "udp"), ("api", 81, "tcp")]);
        let new = cfg(&[
            ("www", 80, "tcp"),
            ("dns", 53, "udp"),
            ("dns2", 54, "udp"),
            ("api2", 81, "udp"),
        ]);
        let r = renames(&old, &new);
        // api → api2 changed protocol: another service.
        assert_eq!(r, BTreeMap::from([("www".to_owned(), "web".to_owned())]));
    }
}
