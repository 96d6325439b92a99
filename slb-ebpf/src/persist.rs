//! Source-IP persistence: all flows of one client address go to the same
//! backend until `persist_timeout_s` passes without traffic from it.
use crate::maps::{BACKENDS, PERSIST};
use aya_ebpf::bindings::BPF_NOEXIST;
use slb_common::{listener::BACKEND_F_DOWN, Addr, Backend, Listener, Persist, PersistKey};

#[inline(always)]
fn key(listener: &Listener, src: &Addr) -> PersistKey {
    PersistKey {
        listener_id: listener.id,
        addr: *src,
    }
}

/// The backend this client is pinned to, if the pin is still good.
#[inline(always)]
pub fn lookup(listener: &Listener, src: &Addr, now: u64) -> Option<(u32, Backend)> {
    let mut out = (0u32, Backend::default());
    if lookup_into(listener, src, now, &mut out) {
        Some(out)
    } else {
        None
    }
}

#[inline(never)]
fn lookup_into(listener: &Listener, src: &Addr, now: u64, out: &mut (u32, Backend)) -> bool {
    match find(listener, src, now) {
        Some(r) => {
            *out = r;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn find(listener: &Listener, src: &Addr, now: u64) -> Option<(u32, Backend)> {
    // SAFETY: the value is copied before any map update.
    let p = *unsafe { PERSIST.get(key(listener, src)) }?;
    // A client's flows run on several CPUs, each refreshing the pin.
    if crate::flow::older_than(now, p.seen_ns, listener.persist_timeout_s) {
        return None;
    }
    let b = *BACKENDS.get(p.backend_id)?;
    if b.generation != p.backend_gen
        || b.listener_id != listener.id
        || b.flags & BACKEND_F_DOWN != 0
        || b.weight == 0
    {
        return None;
    }
    Some((p.backend_id, b))
}

/// Re-pins the client to `backend_id` (its pin's), refreshing its clock.
#[inline(never)]
pub fn record(listener: &Listener, src: &Addr, backend_id: u32, backend: &Backend, now: u64) {
    let v = Persist {
        seen_ns: now,
        backend_id,
        backend_gen: backend.generation,
    };
    let _ = PERSIST.insert(key(listener, src), v, 0);
}

/// Pins a client that had no good pin to `picked`, the backend just
/// scheduled for it, unless another CPU pinned it since the lookup: then
/// `picked` becomes that pin's backend. A client's first connections often
/// come at once and RSS spreads them over CPUs; with `wrr` (a position per
/// CPU) and `wlc` two CPUs can pick differently, and each used to record
/// its own pin, splitting the client between backends.
#[inline(never)]
pub fn claim(listener: &Listener, src: &Addr, picked: &mut (u32, Backend), now: u64) {
    let v = Persist {
        seen_ns: now,
        backend_id: picked.0,
        backend_gen: picked.1.generation,
    };
    if PERSIST
        .insert(key(listener, src), v, BPF_NOEXIST as u64)
        .is_ok()
    {
        return;
    }
    // An entry is there: another CPU's new pin, or the expired or broken
    // one the lookup turned down (replaced).
    if !lookup_into(listener, src, now, picked) {
        let _ = PERSIST.insert(key(listener, src), v, 0);
    }
}

/// Refreshes the pin's clock (called at most once a second per flow).
#[inline(always)]
pub fn touch(listener: &Listener, src: &Addr, now: u64) {
    if let Some(p) = PERSIST.get_ptr_mut(key(listener, src)) {
        // SAFETY: map value pointer, valid for this program run.
        unsafe { (*p).seen_ns = now };
    }
}
