//! Reading the per-CPU counters, summed over CPUs. One system call per
//! slot (aya 0.14 has no batch reads): a status with 4096 backends makes
//! about 4,200 of them on the agent's main loop, 6-12 ms on 2 CPUs, each
//! copying one value per possible CPU (README, "Active flows").
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
