//! Picking a backend for a new flow from the listener's lookup table.
use crate::maps::{BACKENDS, RING};
use slb_common::{hash::flow_hash, limits::NO_BACKEND, Backend, FlowKey, Listener};

/// The backend for a new flow, or `None` when the listener has none up.
#[inline(always)]
pub fn pick(listener: &Listener, key: &FlowKey) -> Option<(u32, Backend)> {
    if listener.live_backends == 0 || listener.ring_size == 0 {
        return None;
    }
    let h = flow_hash(&key.src, &key.dst, key.sport, key.dport, key.proto);
    let slot = listener.ring_base + h % listener.ring_size;
    let id = *RING.get(slot)?;
    if id == NO_BACKEND {
        return None;
    }
    let backend = *BACKENDS.get(id)?;
    Some((id, backend))
}
