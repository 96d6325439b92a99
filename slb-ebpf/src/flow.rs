//! The connection table: flow lookup, validity, FULLNAT source selection
//! and the reverse entries that translate replies.
use crate::maps::{BACKENDS, REVERSE, SNAT_POOL, SNAT_V4, SNAT_V6};
use crate::parse::Family;
use aya_ebpf::bindings::BPF_NOEXIST;
use slb_common::{
    hash::flow_hash,
    limits::{SNAT_PORT_MIN, SNAT_PORT_TRIES},
    listener::BACKEND_F_DOWN,
    Addr, Backend, Flow, FlowKey, Listener, Reverse,
};

/// The backend a flow is pinned to, if the flow may keep it: same listener,
/// the backend slot still holds the same backend, it is not down, and the
/// flow has not been idle longer than the listener's timeout.
#[inline(always)]
pub fn still_valid(flow: &Flow, listener: &Listener, now: u64) -> Option<Backend> {
    if flow.listener_id != listener.id {
        return None;
    }
    if now.wrapping_sub(flow.seen_ns) > listener.idle_timeout_s as u64 * 1_000_000_000 {
        return None;
    }
    let b = BACKENDS.get(flow.backend_id)?;
    if b.generation != flow.backend_gen
        || b.listener_id != listener.id
        || b.flags & BACKEND_F_DOWN != 0
    {
        return None;
    }
    Some(*b)
}

/// Chooses the FULLNAT source (address, port in network order) for a new
/// flow so that the backend-side tuple is unique, and records the reverse
/// entry. A reverse entry left by the same client tuple (flow re-scheduled
/// or its forward entry evicted) is reused, so the backend keeps seeing the
/// same connection.
#[inline(always)]
pub fn snat_bind(
    family: Family,
    key: &FlowKey,
    backend_id: u32,
    backend: &Backend,
    listener_id: u32,
    now: u64,
) -> Option<(Addr, u16)> {
    let pool = SNAT_POOL.get(0)?;
    let count = match family {
        Family::V4 => pool.v4_count,
        Family::V6 => pool.v6_count,
    };
    if count == 0 {
        return None;
    }
    let h = flow_hash(&key.src, &key.dst, key.sport, key.dport, key.proto);
    let span = 65536 - SNAT_PORT_MIN as u32;
    let rev = Reverse {
        seen_ns: now,
        client: key.src,
        vip: key.dst,
        client_port: key.sport,
        vip_port: key.dport,
        backend_id,
        listener_id,
        ..Default::default()
    };
    for i in 0..SNAT_PORT_TRIES {
        let idx = (h.rotate_right(7).wrapping_add(i)) % count;
        let addr = match family {
            Family::V4 => SNAT_V4.get(idx),
            Family::V6 => SNAT_V6.get(idx),
        };
        let Some(addr) = addr else {
            continue;
        };
        // Spread tries over the port range: a busy neighbour port says
        // little about a port far away.
        let port = SNAT_PORT_MIN as u32 + (h.wrapping_add(i.wrapping_mul(40503))) % span;
        let port = (port as u16).to_be();
        let rkey = FlowKey {
            src: backend.addr,
            dst: *addr,
            sport: backend.port,
            dport: port,
            proto: key.proto,
            _pad: [0; 3],
        };
        if let Some(old) = REVERSE.get_ptr_mut(rkey) {
            // SAFETY: map value pointer, valid for this program run.
            let old = unsafe { &mut *old };
            if old.client == key.src
                && old.client_port == key.sport
                && old.vip == key.dst
                && old.vip_port == key.dport
            {
                old.backend_id = backend_id;
                old.listener_id = listener_id;
                old.seen_ns = now;
                return Some((*addr, port));
            }
            continue;
        }
        if REVERSE.insert(rkey, rev, BPF_NOEXIST as u64).is_ok() {
            return Some((*addr, port));
        }
    }
    None
}
