//! Picking a backend for a new flow from the listener's lookup table.
use crate::maps::{BACKENDS, RING, WRR_POS};
use slb_common::{
    hash::{addr_hash, flow_hash},
    limits::NO_BACKEND,
    listener::{SCHED_SH, SCHED_WLC, SCHED_WRR},
    Backend, FlowKey, Listener,
};

/// Index into the listener's table: Maglev hashes the 5-tuple, `sh` the
/// client address (same table, so it is consistent too), WRR walks its
/// sequence with a per-CPU position (no shared counter to contend on).
#[inline(always)]
fn slot(listener: &Listener, key: &FlowKey) -> Option<u32> {
    let n = match listener.scheduler {
        SCHED_WRR | SCHED_WLC => {
            let pos = WRR_POS.get_ptr_mut(listener.id)?;
            // SAFETY: per-CPU slot; only this CPU touches it while we run.
            unsafe {
                let n = *pos;
                *pos = n.wrapping_add(1);
                n
            }
        }
        SCHED_SH => addr_hash(&key.src),
        _ => flow_hash(&key.src, &key.dst, key.sport, key.dport, key.proto),
    };
    Some(n % listener.ring_size)
}

/// The backend for a new flow, or `None` when the listener has none up.
#[inline(always)]
pub fn pick(listener: &Listener, key: &FlowKey) -> Option<(u32, Backend)> {
    if listener.live_backends == 0 || listener.ring_size == 0 {
        return None;
    }
    let id = *RING.get(listener.ring_base + slot(listener, key)?)?;
    if id == NO_BACKEND {
        return None;
    }
    let backend = *BACKENDS.get(id)?;
    Some((id, backend))
}
