//! Per-CPU counter updates.
use crate::maps::{BACKEND_STATS, GLOBAL_STATS, LISTENER_STATS};
use slb_common::{GlobalCounter, Stats};

#[inline(always)]
pub fn global(c: GlobalCounter) {
    if let Some(v) = GLOBAL_STATS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
fn with(map: &aya_ebpf::maps::PerCpuArray<Stats>, id: u32, f: impl FnOnce(&mut Stats)) {
    if let Some(s) = map.get_ptr_mut(id) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        f(unsafe { &mut *s });
    }
}

/// Direction of a forwarded packet for the in/out counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → backend.
    In,
    /// Backend → client.
    Out,
}

#[inline(always)]
pub fn packet(listener_id: u32, backend_id: u32, dir: Dir, bytes: u64, new_conn: bool) {
    let bump = |s: &mut Stats| {
        match dir {
            Dir::In => {
                s.packets_in += 1;
                s.bytes_in += bytes;
            }
            Dir::Out => {
                s.packets_out += 1;
                s.bytes_out += bytes;
            }
        }
        if new_conn {
            s.conns += 1;
        }
    };
    with(&LISTENER_STATS, listener_id, bump);
    with(&BACKEND_STATS, backend_id, bump);
}

/// Reasons a new flow is dropped.
#[derive(Clone, Copy)]
pub enum Drop {
    NoBackend,
    NoPort,
    Acl,
}

#[inline(always)]
pub fn drop(listener_id: u32, why: Drop) {
    with(&LISTENER_STATS, listener_id, |s| match why {
        Drop::NoBackend => s.drop_no_backend += 1,
        Drop::NoPort => s.drop_no_port += 1,
        Drop::Acl => s.drop_acl += 1,
    });
    if let Drop::NoBackend = why {
        global(GlobalCounter::NoBackend);
    }
}
