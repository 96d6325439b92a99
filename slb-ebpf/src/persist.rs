//! Source-IP persistence: all flows of one client address go to the same
//! backend until `persist_timeout_s` passes without traffic from it.
use crate::maps::{BACKENDS, PERSIST};
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
    if now.wrapping_sub(p.seen_ns) > listener.persist_timeout_s as u64 * 1_000_000_000 {
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

/// Pins (or re-pins) the client to `backend_id`, refreshing its clock.
#[inline(never)]
pub fn record(listener: &Listener, src: &Addr, backend_id: u32, backend: &Backend, now: u64) {
    let v = Persist {
        seen_ns: now,
        backend_id,
        backend_gen: backend.generation,
    };
    let _ = PERSIST.insert(key(listener, src), v, 0);
}

/// Refreshes the pin's clock (called at most once a second per flow).
#[inline(always)]
pub fn touch(listener: &Listener, src: &Addr, now: u64) {
    if let Some(p) = PERSIST.get_ptr_mut(key(listener, src)) {
        // SAFETY: map value pointer, valid for this program run.
        unsafe { (*p).seen_ns = now };
    }
}
