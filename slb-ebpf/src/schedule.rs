//! Picking a backend for a new flow from the listener's lookup table.
use crate::maps::{ACTIVE, BACKENDS, RING, WRR_POS};
use slb_common::{
    hash::{addr_hash, flow_hash},
    limits::{MAX_WLC_BACKENDS, NO_BACKEND, RING_CHUNK},
    listener::{BACKEND_F_DOWN, SCHED_SH, SCHED_WLC, SCHED_WRR},
    Backend, FlowKey, Listener,
};

/// Slot `i` of the lookup tables, which `RING` holds `RING_CHUNK` to an
/// element.
#[inline(always)]
fn ring_slot(i: u32) -> Option<u32> {
    let chunk = RING.get(i / RING_CHUNK)?;
    chunk.slots.get((i % RING_CHUNK) as usize).copied()
}

/// Index into the listener's table: Maglev hashes the 5-tuple (the client
/// address with persistence), `sh` the client address (same table, so it
/// is consistent too), WRR walks its sequence with a per-CPU position (no
/// shared counter to contend on).
#[inline(always)]
fn slot(listener: &Listener, key: &FlowKey) -> Option<u32> {
    let n = match listener.scheduler {
        SCHED_WRR => {
            let pos = WRR_POS.get_ptr_mut(listener.id)?;
            // SAFETY: per-CPU slot; only this CPU touches it while we run.
            unsafe {
                let n = *pos;
                *pos = n.wrapping_add(1);
                n
            }
        }
        SCHED_SH => addr_hash(&key.src),
        // With source-IP persistence the client, not the connection, is
        // what gets balanced: hashing its address makes the first pick,
        // and so the pin, the same on every node with this configuration,
        // and a standby without the pin rebuilds the client's flows onto
        // the same backend.
        _ if listener.persist_timeout_s != 0 => addr_hash(&key.src),
        _ => flow_hash(&key.src, &key.dst, key.sport, key.dport, key.proto),
    };
    Some(n % listener.ring_size)
}

/// Weighted least connections: the live backend with the fewest active
/// flows per unit of weight (`a/wa < b/wb` compared as `a·wb < b·wa`). The
/// table holds each live backend once.
///
/// Ties go to the first tied backend at or after a per-CPU position that
/// advances with every pick. Ties are the rule, not the exception, when
/// connections are short: each one is over before the next starts, so all
/// backends are at zero, and always taking the first of the table sent
/// every such connection to one backend (LVS spreads them by its
/// inactive-connection count, HAProxy's `leastconn` and nginx's
/// `least_conn` take tied servers in turn).
#[inline(never)]
fn least_loaded(listener: &Listener) -> Option<(u32, Backend)> {
    let n = listener.ring_size;
    if n == 0 {
        return None;
    }
    let pos = WRR_POS.get_ptr_mut(listener.id)?;
    // SAFETY: per-CPU slot; only this CPU touches it while we run.
    let start = unsafe {
        let p = *pos;
        *pos = p.wrapping_add(1);
        p % n
    };
    // Plain initialised locals (no Option in the loop): the verifier
    // rejects spills of registers it cannot prove were written.
    let mut best_id = NO_BACKEND;
    let mut best_active: u64 = 0;
    let mut best_weight: u64 = 0;
    for i in 0..MAX_WLC_BACKENDS {
        if i >= n {
            break;
        }
        // start < n and i < n: one wrap at most.
        let mut j = start + i;
        if j >= n {
            j -= n;
        }
        let Some(id) = ring_slot(listener.ring_base + j) else {
            break;
        };
        let Some(b) = BACKENDS.get(id) else { continue };
        // The table holds live backends, but an entry may be marked
        // drained or down just before the table without it is switched in.
        if b.weight == 0 || b.flags & BACKEND_F_DOWN != 0 {
            continue;
        }
        // The count is kept by +1/-1 and re-set by the agent every 2 s from
        // the connection table: a flow the agent did not count that then
        // ends takes it below zero, which reads as 4 billion and would
        // keep the backend out until the next re-set. Below zero is zero.
        let active = (ACTIVE.get(id).copied().unwrap_or(0) as i32).max(0) as u64;
        let weight = b.weight as u64;
        if best_id == NO_BACKEND || active * best_weight < best_active * weight {
            best_id = id;
            best_active = active;
            best_weight = weight;
        }
    }
    if best_id == NO_BACKEND {
        return None;
    }
    Some((best_id, *BACKENDS.get(best_id)?))
}

/// The backend for a new flow, or `None` when the listener has none up.
#[inline(always)]
pub fn pick(listener: &Listener, key: &FlowKey) -> Option<(u32, Backend)> {
    if listener.live_backends == 0 || listener.ring_size == 0 {
        return None;
    }
    if listener.scheduler == SCHED_WLC {
        return least_loaded(listener);
    }
    let id = ring_slot(listener.ring_base + slot(listener, key)?)?;
    if id == NO_BACKEND {
        return None;
    }
    let backend = *BACKENDS.get(id)?;
    Some((id, backend))
}
