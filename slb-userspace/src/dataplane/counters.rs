//! Reading the per-CPU counters, summed over CPUs.
use super::{journal::Undo, map_err, Dataplane, DataplaneError};
use crate::status::GlobalCounters;
use aya::maps::{MapData, MapError, PerCpuArray, PerCpuValues};
use slb_common::{stats::GLOBAL_COUNTERS, GlobalCounter, Stats};

fn add(a: &mut Stats, b: &Stats) {
    a.conns += b.conns;
    a.packets_in += b.packets_in;
    a.bytes_in += b.bytes_in;
    a.packets_out += b.packets_out;
    a.bytes_out += b.bytes_out;
    a.drop_no_backend += b.drop_no_backend;
    a.drop_acl += b.drop_acl;
    a.drop_no_port += b.drop_no_port;
}

/// Sets slot `id` of a per-CPU counter array to zero on every CPU;
/// returns what it held.
fn zero(
    map: &mut PerCpuArray<MapData, Stats>,
    id: u32,
    name: &'static str,
) -> Result<PerCpuValues<Stats>, DataplaneError> {
    let old = map.get(&id, 0).map_err(map_err(name))?;
    // As many values as the kernel holds per slot (one per possible CPU).
    let values = PerCpuValues::try_from(vec![Stats::default(); old.len()])
        .map_err(|e| map_err(name)(MapError::from(e)))?;
    map.set(id, values, 0).map_err(map_err(name))?;
    Ok(old)
}

impl Dataplane {
    pub fn listener_stats(&self, id: u32) -> Result<Stats, DataplaneError> {
        let per_cpu = self
            .listener_stats
            .get(&id, 0)
            .map_err(map_err("LISTENER_STATS"))?;
        let mut sum = Stats::default();
        per_cpu.iter().for_each(|s| add(&mut sum, s));
        Ok(sum)
    }

    pub fn backend_stats(&self, id: u32) -> Result<Stats, DataplaneError> {
        let per_cpu = self
            .backend_stats
            .get(&id, 0)
            .map_err(map_err("BACKEND_STATS"))?;
        let mut sum = Stats::default();
        per_cpu.iter().for_each(|s| add(&mut sum, s));
        Ok(sum)
    }

    /// Zeroes the counters of listener `id` on every CPU.
    pub fn clear_listener_counters(&mut self, id: u32) -> Result<(), DataplaneError> {
        let old = zero(&mut self.listener_stats, id, "LISTENER_STATS")?;
        self.record(Undo::ListenerStats(id, old));
        Ok(())
    }

    /// Zeroes the counters and the active-flow count (`wlc`) of backend
    /// `id`.
    pub fn clear_backend_counters(&mut self, id: u32) -> Result<(), DataplaneError> {
        let old = zero(&mut self.backend_stats, id, "BACKEND_STATS")?;
        self.record(Undo::BackendStats(id, old));
        if self.recording() {
            let active = self.active.get(&id, 0).map_err(map_err("ACTIVE"))?;
            self.record(Undo::Active(id, active));
        }
        self.active.set(id, 0, 0).map_err(map_err("ACTIVE"))
    }

    pub fn counters(&self) -> Result<GlobalCounters, DataplaneError> {
        let mut v = [0u64; GLOBAL_COUNTERS as usize];
        for (i, slot) in v.iter_mut().enumerate() {
            let per_cpu = self
                .global_stats
                .get(&(i as u32), 0)
                .map_err(map_err("GLOBAL_STATS"))?;
            *slot = per_cpu.iter().sum();
        }
        let at = |c: GlobalCounter| v[c as usize];
        Ok(GlobalCounters {
            not_for_us: at(GlobalCounter::NotForUs),
            parse_errors: at(GlobalCounter::ParseError),
            no_backend: at(GlobalCounter::NoBackend),
            flow_misses: at(GlobalCounter::FlowMiss),
            fib_pass: at(GlobalCounter::FibPass),
            fib_drop: at(GlobalCounter::FibDrop),
            unsupported: at(GlobalCounter::Unsupported),
            icmp_translated: at(GlobalCounter::IcmpTranslated),
            icmp_too_big: at(GlobalCounter::IcmpTooBig),
            too_big_drops: at(GlobalCounter::TooBigDrop),
        })
    }
}

/// The clock of the flow timestamps (`bpf_ktime_get_coarse_ns`).
pub(super) fn monotonic_coarse_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

impl Dataplane {
    /// Walks the flow table (for status and rare decisions, not per
    /// packet): calls `f` with the backend id and entry of every flow that
    /// `live(flow, now)` accepts and whose backend slot still holds the
    /// backend it was scheduled to. Each backend slot is read once.
    fn for_each_flow_on_its_backend(
        &self,
        live: impl Fn(&slb_common::Flow, u64) -> bool,
        mut f: impl FnMut(u32, &slb_common::Backend),
    ) -> bool {
        let now = monotonic_coarse_ns();
        let mut backends = std::collections::BTreeMap::new();
        self.each_flow(|_, flow| {
            if !live(flow, now) {
                return;
            }
            let backend = backends
                .entry(flow.backend_id)
                .or_insert_with(|| self.backends.get(&flow.backend_id, 0).ok());
            if let Some(b) = backend
                .as_ref()
                .filter(|b| b.generation == flow.backend_gen)
            {
                f(flow.backend_id, b);
            }
        })
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
        let whole = self.for_each_flow_on_its_backend(
            |flow, now| {
                !slb_common::flow::flow_ended(flow.flags)
                    && now.saturating_sub(flow.seen_ns)
                        <= u64::from(flow.idle_timeout_s) * 1_000_000_000
            },
            |_, b| {
                if addrs.contains(&b.addr) {
                    out.insert(b.addr);
                }
            },
        );
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
        let mut out = std::collections::BTreeMap::new();
        let whole = self.for_each_flow_on_its_backend(
            |flow, now| {
                flow.flags & slb_common::flow::FLOW_F_CLOSING == 0
                    && idle_ns(flow.listener_id)
                        .is_some_and(|idle| now.saturating_sub(flow.seen_ns) <= idle)
            },
            |id, _| *out.entry(id).or_insert(0) += 1,
        );
        (out, whole)
    }
}
