//! Reading the connection table: `slb flows`, the active-flow counts of
//! status and the `wlc` recount, and the live-flow check of retired `nat`
//! backends.
use super::Dataplane;
use aya::maps::{Array, HashMap, MapData};
use slb_common::flow::{flow_ended, FLOW_F_DR, FLOW_F_NAT};
use slb_common::{Backend, Flow, FlowKey, Reverse};
use std::os::fd::OwnedFd;

/// One connection-table entry and what listing it needs.
pub struct Connection {
    pub key: FlowKey,
    pub flow: Flow,
    /// The backend the flow was scheduled to, `None` when its slot now
    /// holds another one (removed by a reload).
    pub backend: Option<Backend>,
    /// Since the last packet either way.
    pub idle_ns: u64,
}

/// Calls `f` with every entry of the hash map `map` (whose descriptor for
/// batch reads is `fd`), read in batches (see `batch`), or by key where the
/// kernel cannot. False when a read failed part way (`f` saw only some
/// entries).
fn each_entry<K: aya::Pod, V: aya::Pod>(
    fd: std::os::fd::BorrowedFd<'_>,
    map: &HashMap<MapData, K, V>,
    what: &str,
    mut f: impl FnMut(&K, &V),
) -> bool {
    match super::batch::for_each(fd, &mut f) {
        Ok(()) => true,
        Err(super::batch::BatchError::Unsupported(e)) => {
            tracing::debug!("reading the {what} by key: {e}");
            for (k, v) in map.iter().filter_map(Result::ok) {
                f(&k, &v);
            }
            true
        }
        Err(e) => {
            tracing::warn!("reading the {what}: {e}");
            false
        }
    }
}

/// The clock of the flow timestamps (`bpf_ktime_get_coarse_ns`).
pub(super) fn monotonic_coarse_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The connection table, the reply table and the backend slots, on
/// descriptors of their own and only read: what walking the connection
/// table needs, shared with the threads that walk it. A walk of a
/// million entries takes a good part of a second, and the agent's main
/// loop must not wait for it (it applies health changes and reloads, and
/// answers status and metrics).
pub struct FlowTables {
    flows: HashMap<MapData, FlowKey, Flow>,
    reverse: HashMap<MapData, FlowKey, Reverse>,
    backends: Array<MapData, Backend>,
    /// `flows` and `reverse` again, for batch reads (`batch`): aya's
    /// typed maps do not lend their descriptors.
    flows_fd: OwnedFd,
    reverse_fd: OwnedFd,
}

/// What one walk of the connection table counts (see
/// [`FlowTables::census`]).
#[derive(Debug, Default)]
pub struct Census {
    /// Live flows per backend id (see [`FlowTables::active_flows`]).
    pub active: std::collections::BTreeMap<u32, u64>,
    /// Entries in the table, live or not.
    pub entries: u64,
    /// Whether the table was read whole.
    pub whole: bool,
}

impl FlowTables {
    pub(super) fn new(
        flows: HashMap<MapData, FlowKey, Flow>,
        reverse: HashMap<MapData, FlowKey, Reverse>,
        backends: Array<MapData, Backend>,
        flows_fd: OwnedFd,
        reverse_fd: OwnedFd,
    ) -> FlowTables {
        FlowTables {
            flows,
            reverse,
            backends,
            flows_fd,
            reverse_fd,
        }
    }

    /// Calls `f` with every entry of the connection table (see
    /// [`each_entry`]).
    fn each_flow(&self, f: impl FnMut(&FlowKey, &Flow)) -> bool {
        use std::os::fd::AsFd;
        each_entry(self.flows_fd.as_fd(), &self.flows, "connection table", f)
    }

    /// Calls `f` with every entry of the connection table, the backend it
    /// was scheduled to (`None` when its slot now holds another one,
    /// removed by a reload) and the clock of the flow timestamps. Each
    /// backend slot is read once. False as [`each_entry`].
    fn each_flow_and_backend(
        &self,
        mut f: impl FnMut(&FlowKey, &Flow, Option<&Backend>, u64),
    ) -> bool {
        let now = monotonic_coarse_ns();
        let mut backends = std::collections::BTreeMap::new();
        self.each_flow(|key, flow| {
            let backend = backends
                .entry(flow.backend_id)
                .or_insert_with(|| self.backends.get(&flow.backend_id, 0).ok());
            let backend = backend
                .as_ref()
                .filter(|b| b.generation == flow.backend_gen);
            f(key, flow, backend, now)
        })
    }

    /// Entries of the connection table and of the reply table.
    pub fn flow_entries(&self) -> (usize, usize) {
        use std::os::fd::AsFd;
        let mut flows = 0;
        self.each_flow(|_, _| flows += 1);
        let mut replies = 0;
        each_entry(
            self.reverse_fd.as_fd(),
            &self.reverse,
            "reply table",
            |_, _| replies += 1,
        );
        (flows, replies)
    }

    /// Calls `f` with every entry of the connection table. `idle_ns` gives
    /// a listener's idle timeout: an entry idle longer than that by its own
    /// timestamp may still be alive by its replies (a download the client
    /// does not acknowledge for a while in `nat`/FULLNAT mode refreshes
    /// only the reply entry, as the dataplane's `kept_alive_by_replies`
    /// reads it), so only for those the reply entry is read too.
    pub fn connections(&self, idle_ns: impl Fn(u32) -> Option<u64>, mut f: impl FnMut(Connection)) {
        self.each_flow_and_backend(|key, flow, backend, now| {
            let mut idle = now.saturating_sub(flow.seen_ns);
            if let Some(b) = backend {
                if idle_ns(flow.listener_id).is_some_and(|limit| idle > limit) {
                    if let Some(seen) = self.reply_seen_ns(key, flow, b) {
                        idle = idle.min(now.saturating_sub(seen));
                    }
                }
            }
            f(Connection {
                key: *key,
                flow: *flow,
                backend: backend.copied(),
                idle_ns: idle,
            });
        });
    }

    /// When the flow's reply entry last saw a reply, if it still belongs
    /// to this flow.
    fn reply_seen_ns(&self, key: &FlowKey, flow: &Flow, b: &Backend) -> Option<u64> {
        if flow_ended(flow.flags) || flow.flags & FLOW_F_DR != 0 {
            return None;
        }
        let (dst, dport) = if flow.flags & FLOW_F_NAT != 0 {
            (key.src, key.sport)
        } else {
            (flow.snat_addr, flow.snat_port)
        };
        let reply = FlowKey {
            src: b.addr,
            dst,
            sport: b.port,
            dport,
            proto: key.proto,
            ..FlowKey::default()
        };
        let rev = self.reverse.get(&reply, 0).ok()?;
        let ours = rev.client == key.src
            && rev.client_port == key.sport
            && rev.vip == key.dst
            && rev.vip_port == key.dport;
        ours.then_some(rev.seen_ns)
    }

    /// Which of `addrs` live flows are still forwarded to: entries whose
    /// connection has not ended (a half-closed one may still get replies),
    /// seen within their idle timeout, whose backend slot still holds the
    /// backend they were scheduled to. Only for the rare decision to drop
    /// a retired `nat` backend's flag.
    pub fn addrs_with_live_flows(
        &self,
        addrs: &std::collections::BTreeSet<slb_common::Addr>,
    ) -> std::collections::BTreeSet<slb_common::Addr> {
        let mut out = std::collections::BTreeSet::new();
        let whole = self.each_flow_and_backend(|_, flow, backend, now| {
            let live = !slb_common::flow::flow_ended(flow.flags)
                && now.saturating_sub(flow.seen_ns)
                    <= u64::from(flow.idle_timeout_s) * 1_000_000_000;
            if let Some(b) = backend.filter(|b| live && addrs.contains(&b.addr)) {
                out.insert(b.addr);
            }
        });
        if !whole {
            // Not read whole: any of them may have flows (dropping a
            // flag too early breaks them; keeping it longer costs nothing).
            return addrs.clone();
        }
        out
    }

    /// Live flows per backend id: entries not closing (no FIN/RST seen)
    /// whose backend slot still holds the backend they were scheduled to
    /// and that were seen within their listener's idle timeout
    /// (`idle_ns(listener_id)`). For status and metrics, and the `wlc`
    /// recount; with whether the table was read whole (else the counts
    /// are too low: good enough to show, not to schedule by).
    pub fn active_flows(
        &self,
        idle_ns: impl Fn(u32) -> Option<u64>,
    ) -> (std::collections::BTreeMap<u32, u64>, bool) {
        let c = self.census(idle_ns);
        (c.active, c.whole)
    }

    /// [`FlowTables::active_flows`] and the number of entries, in one
    /// walk (what status and metrics show).
    pub fn census(&self, idle_ns: impl Fn(u32) -> Option<u64>) -> Census {
        let mut c = Census::default();
        c.whole = self.each_flow_and_backend(|_, flow, backend, now| {
            c.entries += 1;
            let live = flow.flags & slb_common::flow::FLOW_F_CLOSING == 0
                && idle_ns(flow.listener_id)
                    .is_some_and(|idle| now.saturating_sub(flow.seen_ns) <= idle);
            if live && backend.is_some() {
                *c.active.entry(flow.backend_id).or_insert(0) += 1;
            }
        });
        c
    }
}

/// The same readings on the agent's own handle (the `wlc` recount, the
/// retired-`nat` check and tests, which run on the caller's thread).
impl Dataplane {
    /// The tables, for a walk on another thread.
    pub fn flow_tables(&self) -> std::sync::Arc<FlowTables> {
        self.tables.clone()
    }

    /// See [`FlowTables::flow_entries`].
    pub fn flow_entries(&self) -> (usize, usize) {
        self.tables.flow_entries()
    }

    /// See [`FlowTables::connections`].
    pub fn connections(&self, idle_ns: impl Fn(u32) -> Option<u64>, f: impl FnMut(Connection)) {
        self.tables.connections(idle_ns, f)
    }

    /// See [`FlowTables::addrs_with_live_flows`].
    pub fn addrs_with_live_flows(
        &self,
        addrs: &std::collections::BTreeSet<slb_common::Addr>,
    ) -> std::collections::BTreeSet<slb_common::Addr> {
        self.tables.addrs_with_live_flows(addrs)
    }

    /// See [`FlowTables::active_flows`].
    pub fn active_flows(
        &self,
        idle_ns: impl Fn(u32) -> Option<u64>,
    ) -> (std::collections::BTreeMap<u32, u64>, bool) {
        self.tables.active_flows(idle_ns)
    }
}
