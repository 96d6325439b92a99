//! The connection table: flow lookup, validity, FULLNAT source selection
//! and the reverse entries that translate replies.
use crate::maps::{
    scratch, ACTIVE, BACKENDS, CLOCK, FLOWS, FLOW_CACHE, REPLY_CACHE, REVERSE, SNAT_POOL, SNAT_V4,
    SNAT_V6,
};
use crate::parse::{Family, TCP_FIN, TCP_RST};
use aya_ebpf::bindings::BPF_NOEXIST;
use core::intrinsics::{atomic_cxchg, atomic_or, atomic_xadd, AtomicOrdering};
use core::mem::MaybeUninit;
use slb_common::{
    flow::{
        entry_timeout_s, flow_ended, FLOW_F_CLOSING, FLOW_F_DR, FLOW_F_FIN_BACKEND,
        FLOW_F_FIN_CLIENT, FLOW_F_NAT, FLOW_F_RST,
    },
    hash::{flow_hash, snat_candidate},
    limits::{CLOSING_TIMEOUT_S, SNAT_PORT_TRIES, SNAT_REUSE_AFTER_CLOSE_S, SNAT_REUSE_QUIET_NS},
    listener::BACKEND_F_DOWN,
    Addr, Backend, Flow, FlowKey, Listener, NextHop, Reverse,
};

/// The backend a flow is pinned to, if the flow may keep it: same listener,
/// the backend slot still holds the same backend, it is not down, and the
/// flow has not been idle longer than the listener's timeout.
///
/// The backend comes back as the map's value, not a copy: the caller's
/// frame is at the verifier's stack limit.
#[inline(always)]
pub fn still_valid(flow: &Flow, listener: &Listener, now: u64) -> Option<&'static Backend> {
    if flow.listener_id != listener.id || idle_past_timeout(flow, listener, now) {
        return None;
    }
    let b = BACKENDS.get(flow.backend_id)?;
    if b.generation != flow.backend_gen
        || b.listener_id != listener.id
        || b.flags & BACKEND_F_DOWN != 0
    {
        return None;
    }
    Some(b)
}

/// The flow has been idle longer than its listener's timeout (an ended
/// connection's: `CLOSING_TIMEOUT_S`), as its own timestamp says.
#[inline(always)]
pub fn idle_past_timeout(flow: &Flow, listener: &Listener, now: u64) -> bool {
    let idle_s = entry_timeout_s(flow.flags, listener.idle_timeout_s);
    older_than(now, flow.seen_ns, idle_s)
}

/// Whether more than `secs` passed from `seen` to `now`. Signed: another
/// CPU (the client's flows and their replies run on several) may have
/// stamped an entry a clock tick after this packet read the time; a stamp
/// ahead of `now` is recent, not 584 years old.
#[inline(always)]
pub fn older_than(now: u64, seen: u64, secs: u32) -> bool {
    (now.wrapping_sub(seen) as i64) > secs as i64 * 1_000_000_000
}

/// Whether replies kept a seemingly idle flow alive: a stream only the
/// backend sends must not expire while the client is quiet. Replies
/// refresh the reverse entry, not the flow's timestamp (which also paces
/// the flow's next-hop refresh), so this is looked at only when the flow
/// seems to have expired; if the reverse entry, still this flow's, saw a
/// reply within the timeout, the flow takes its time and lives on.
#[inline(never)]
pub fn kept_alive_by_replies(flow: &mut Flow, key: &FlowKey, listener: &Listener, now: u64) {
    if flow_ended(flow.flags) || flow.flags & FLOW_F_DR != 0 || flow.listener_id != listener.id {
        return;
    }
    let Some(b) = BACKENDS.get(flow.backend_id) else {
        return;
    };
    let Some(s) = scratch() else {
        return;
    };
    // The reply tuple, field by field in the scratch space (no 40-byte key
    // on the stack).
    s.owner.src = b.addr;
    s.owner.sport = b.port;
    if flow.flags & FLOW_F_NAT != 0 {
        s.owner.dst = key.src;
        s.owner.dport = key.sport;
    } else {
        s.owner.dst = flow.snat_addr;
        s.owner.dport = flow.snat_port;
    }
    s.owner.proto = key.proto;
    s.owner._pad1 = 0;
    s.owner._pad2 = 0;
    // SAFETY: map value, valid for this program run; read only.
    let Some(rev) = (unsafe { REVERSE.get(&s.owner) }) else {
        return;
    };
    let ours = rev.client == key.src
        && rev.client_port == key.sport
        && rev.vip == key.dst
        && rev.vip_port == key.dport;
    if ours && !older_than(now, rev.seen_ns, listener.idle_timeout_s) {
        flow.seen_ns = rev.seen_ns;
    }
}

/// Chooses the FULLNAT source (address, port in network order) for a new
/// flow so that the backend-side tuple is unique, and records the reverse
/// entry. A reverse entry left by the same client tuple (flow re-scheduled
/// or its forward entry evicted) is reused, so the backend keeps seeing the
/// same connection.
#[inline(always)]
pub fn snat_bind(req: &SnatRequest) -> Option<(Addr, u16)> {
    // Not zero-initialised: zeroing costs a `memset` call (a byte loop).
    let mut out = MaybeUninit::<(Addr, u16)>::uninit();
    if snat_bind_into(req, out.as_mut_ptr()) {
        // SAFETY: written by `snat_bind_into`, which returned true.
        Some(unsafe { out.assume_init() })
    } else {
        None
    }
}

/// What `snat_bind` needs (one pointer: BPF calls take at most five
/// arguments).
#[derive(Clone, Copy)]
/// The backend is the one `pick_backend` left in the scratch space.
pub struct SnatRequest<'a> {
    pub family: Family,
    pub key: &'a FlowKey,
    pub listener_id: u32,
    pub now: u64,
}

// Not inlined: its reverse entry gets its own stack frame. Writes `out`
// (possibly uninitialised) only when it returns true.
#[inline(never)]
fn snat_bind_into(req: &SnatRequest, out: *mut (Addr, u16)) -> bool {
    let SnatRequest {
        family,
        key,
        listener_id,
        now,
    } = *req;
    match snat_search(family, key, listener_id, now) {
        Some(r) => {
            // SAFETY: `out` points to space for the pair in the caller's
            // frame; `write` drops nothing there.
            unsafe { out.write(r) };
            true
        }
        None => false,
    }
}

#[inline(always)]
fn snat_search(family: Family, key: &FlowKey, listener_id: u32, now: u64) -> Option<(Addr, u16)> {
    let pool = SNAT_POOL.get(0)?;
    let count = match family {
        Family::V4 => pool.v4_count,
        Family::V6 => pool.v6_count,
    };
    if count == 0 {
        return None;
    }
    let h = flow_hash(&key.src, &key.dst, key.sport, key.dport, key.proto);
    // Candidate key and new entry live in the per-CPU scratch space: the
    // unrolled tries would otherwise each take stack.
    let crate::maps::Scratch {
        rev,
        rkey,
        owner,
        in_nh,
        backend,
        backend_id,
        ..
    } = scratch()?;
    *rev = reverse_entry(key, *backend_id, listener_id, now, in_nh);
    for i in 0..SNAT_PORT_TRIES {
        let (idx, port) = snat_candidate(h, i, count);
        let addr = match family {
            Family::V4 => SNAT_V4.get(idx),
            Family::V6 => SNAT_V6.get(idx),
        };
        let Some(addr) = addr else {
            continue;
        };
        let port = port.to_be();
        *rkey = FlowKey {
            src: backend.addr,
            dst: *addr,
            sport: backend.port,
            dport: port,
            proto: key.proto,
            _pad1: 0,
            _pad2: 0,
        };
        // Insert first: a free tuple is the common case, and one walk of
        // the bucket is then enough.
        if REVERSE.insert(&*rkey, &*rev, BPF_NOEXIST as u64).is_ok() {
            return Some((*addr, port));
        }
        if take_over(rkey, rev, owner, now) {
            return Some((*addr, port));
        }
    }
    None
}

/// Gives the taken FULLNAT source `rkey` to the new flow whose reverse
/// entry is `rev` when it may have it: its reverse entry was left by the
/// same client tuple (the flow was re-scheduled or its forward entry
/// evicted: the backend keeps seeing the same connection), or its flow is
/// over (`source_free`). Then `rev` replaces the entry (for the same
/// client, that changes only the backend, listener, time and next hop).
///
/// Not inlined into the unrolled tries: one copy of this, and its own
/// small frame (the new-flow call chain is close to the verifier's
/// 512-byte stack limit).
#[inline(never)]
fn take_over(rkey: &FlowKey, rev: &Reverse, owner: &mut FlowKey, now: u64) -> bool {
    let Some(old) = REVERSE.get_ptr_mut(rkey) else {
        return false;
    };
    // SAFETY: map value pointer, valid for this program run.
    let old = unsafe { &mut *old };
    let same_client = old.client == rev.client
        && old.client_port == rev.client_port
        && old.vip == rev.vip
        && old.vip_port == rev.vip_port;
    if !same_client {
        // Read once: what `source_free` judges is what the claim below
        // expects to find.
        // SAFETY: an aligned field of the map value.
        let seen = unsafe { core::ptr::read_volatile(&old.seen_ns) };
        if !source_free(old, seen, rkey, owner, now) {
            return false;
        }
        // Another CPU may be handing the same source to another client
        // right now (or a reply just refreshed the entry): only the one
        // that swaps the timestamp it judged for its own has it. Without
        // this, two clients' new flows got the same backend-side tuple,
        // and replies went to one of them (or, from an entry both wrote
        // at once, to a mix of their addresses and ports).
        // SAFETY: an aligned 64-bit field of the map value.
        let (_, claimed) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                &mut old.seen_ns,
                seen,
                now,
            )
        };
        if !claimed {
            return false;
        }
    }
    crate::cache::forget(&REPLY_CACHE, rkey);
    // SAFETY: two map values of different maps (`REVERSE` and the scratch
    // space): they cannot overlap. Said explicitly, as an assignment would
    // become a `memmove` call.
    unsafe { core::ptr::copy_nonoverlapping(rev, old, 1) };
    true
}

/// Whether the FULLNAT source `rkey` names, held by the reverse entry
/// `old` (last seen at `seen`) of another client's flow, may be given to a new flow: that flow
/// is over. Reverse entries are never deleted (a late reply still finds
/// its way), and the table only evicts when full, which a small pool
/// never makes it: without this, sources of ended flows would stay taken
/// and the pool would run dry.
///
/// Over means: the reverse entry has been quiet for `SNAT_REUSE_QUIET_NS`
/// on the kernel's and the agent's clock (no CPU's cached copy is still
/// used), and the flow entry is gone (client RST, eviction), belongs to
/// another source now, ended with an RST, ended with FINs at least
/// `SNAT_REUSE_AFTER_CLOSE_S` ago (TIME_WAIT), or has been idle past its
/// timeout.
#[inline(always)]
fn source_free(old: &Reverse, seen: u64, rkey: &FlowKey, owner: &mut FlowKey, now: u64) -> bool {
    let clock = CLOCK.get(0).copied().unwrap_or(0);
    if (now.wrapping_sub(seen) as i64) < SNAT_REUSE_QUIET_NS as i64
        || (clock.wrapping_sub(seen) as i64) < SNAT_REUSE_QUIET_NS as i64
    {
        return false;
    }
    // In the scratch space, not on the stack: this call is the deepest of
    // the new-flow chain, close to the verifier's 512-byte limit.
    owner_key_into(owner, old, rkey.proto);
    // SAFETY: map value, valid for this program run; read only.
    let Some(flow) = (unsafe { FLOWS.get(&*owner) }) else {
        return true;
    };
    if flow.snat_addr != rkey.dst || flow.snat_port != rkey.dport {
        return true;
    }
    if flow.flags & FLOW_F_RST != 0 {
        // An RST leaves no TIME_WAIT on either side: free once quiet, as
        // after a client's RST (which removes the entry).
        return true;
    }
    let idle_s = if flow_ended(flow.flags) {
        SNAT_REUSE_AFTER_CLOSE_S
    } else {
        flow.idle_timeout_s
    };
    older_than(now, flow.seen_ns, idle_s)
}

/// The key of the client flow a reverse entry belongs to, written field by
/// field (a struct literal would be built on the stack first).
#[inline(always)]
fn owner_key_into(out: &mut FlowKey, rev: &Reverse, proto: u8) {
    out.src = rev.client;
    out.dst = rev.vip;
    out.sport = rev.client_port;
    out.dport = rev.vip_port;
    out.proto = proto;
    out._pad1 = 0;
    out._pad2 = 0;
}

/// Whether the `nat` reverse entry `rev` still belongs to a live flow. Its
/// key is made of the backend's and the client's own addresses, so once
/// the flow is over the same tuple is plain traffic (the client talking to
/// the backend directly) that must not be translated. Live: the flow
/// entry or the reverse entry was seen within the flow's idle timeout (a
/// closing flow's: `CLOSING_TIMEOUT_S`); without a flow entry (the client
/// reset it, or it was evicted), a reply within `CLOSING_TIMEOUT_S` of the
/// previous one.
#[inline(never)]
pub fn nat_reply_live(rev: &Reverse, proto: u8, now: u64) -> bool {
    let Some(s) = scratch() else {
        return false;
    };
    // In the scratch space: no 40-byte key on the stack.
    owner_key_into(&mut s.owner, rev, proto);
    // SAFETY: map value, valid for this program run; read only.
    let (seen, idle_s) = match unsafe { FLOWS.get(&s.owner) } {
        Some(f) => (
            f.seen_ns.max(rev.seen_ns),
            if flow_ended(f.flags) {
                CLOSING_TIMEOUT_S
            } else {
                f.idle_timeout_s
            },
        ),
        None => (rev.seen_ns, CLOSING_TIMEOUT_S),
    };
    !older_than(now, seen, idle_s)
}

/// Records the reverse entry of a `nat` flow: replies come from the backend
/// straight to the client's address.
#[inline(never)]
pub fn nat_bind(key: &FlowKey, listener_id: u32, now: u64) {
    let Some(s) = scratch() else {
        return;
    };
    let rkey = FlowKey {
        src: s.backend.addr,
        dst: key.src,
        sport: s.backend.port,
        dport: key.sport,
        proto: key.proto,
        _pad1: 0,
        _pad2: 0,
    };
    s.rev = reverse_entry(key, s.backend_id, listener_id, now, &s.in_nh);
    let _ = REVERSE.insert(rkey, &s.rev, 0);
}

/// The reverse entry of the client flow `key`: replies are translated back
/// to VIP → client and sent out through `nh`.
#[inline(always)]
fn reverse_entry(
    key: &FlowKey,
    backend_id: u32,
    listener_id: u32,
    now: u64,
    nh: &NextHop,
) -> Reverse {
    Reverse {
        seen_ns: now,
        client: key.src,
        vip: key.dst,
        client_port: key.sport,
        vip_port: key.dport,
        backend_id,
        listener_id,
        nh: *nh,
        ..Default::default()
    }
}

/// Adds `delta` to a backend's active-flow count (`wlc`).
#[inline(always)]
pub fn active_add(backend_id: u32, delta: i32) {
    if let Some(p) = ACTIVE.get_ptr_mut(backend_id) {
        // SAFETY: a valid, aligned u32 in an array map shared by all CPUs,
        // hence the atomic add (the target has no AtomicU32 type, only the
        // instruction).
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, delta as u32) };
    }
}

/// Records a FIN or RST of the flow's connection (`tcp_flags`, sent by
/// the client when `from_client`): the flow stops counting as active at
/// the first one, and ends (short timeout) with a FIN each way or an RST.
#[inline(always)]
pub fn mark_closing(flow: &mut Flow, tcp_flags: u8, from_client: bool) {
    let end = if tcp_flags & TCP_RST != 0 {
        FLOW_F_RST
    } else if tcp_flags & TCP_FIN != 0 {
        if from_client {
            FLOW_F_FIN_CLIENT
        } else {
            FLOW_F_FIN_BACKEND
        }
    } else {
        0
    };
    if set_flags(flow, FLOW_F_CLOSING | end) & FLOW_F_CLOSING == 0 {
        active_add(flow.backend_id, -1);
    }
}

/// Marks the flow closing (it no longer counts as active) unless it is
/// already: for a flow that expired or lost its backend.
#[inline(always)]
pub fn mark_inactive(flow: &mut Flow) {
    // The plain read spares the atomic instruction when nothing changes;
    // the atomic one decides.
    if flow.flags & FLOW_F_CLOSING == 0 && set_flags(flow, FLOW_F_CLOSING) & FLOW_F_CLOSING == 0 {
        active_add(flow.backend_id, -1);
    }
}

/// Sets `bits` in the flow's flags in one atomic instruction and returns
/// the flags as they were. A flow's client packets and its replies are
/// handled on different CPUs (RX queues), and both mark the flow: with a
/// plain read-modify-write, a client's FIN and the backend's handled at
/// the same moment could each write back the flags without the other's
/// bit (the connection then never counted as over: 900 s instead of 10 s),
/// and both could find the flow not yet closing and take it out of the
/// active count twice. The flags as they were say which CPU closed it.
#[inline(always)]
fn set_flags(flow: &mut Flow, bits: u16) -> u16 {
    // BPF atomics act on whole words, and this build's (no 32-bit
    // subregisters) only on 64-bit ones: `flags` is the top quarter
    // (little-endian target) of the aligned word it shares with
    // `listener_id` and `snat_port`, never written after the flow is
    // created (the or leaves them as they are anyway).
    const _: () = assert!(
        core::mem::offset_of!(Flow, listener_id) % 8 == 0
            && core::mem::offset_of!(Flow, flags) == core::mem::offset_of!(Flow, listener_id) + 6
            && cfg!(target_endian = "little")
    );
    let word = core::ptr::addr_of_mut!(flow.listener_id) as *mut u64;
    // SAFETY: an aligned 64-bit word inside the entry (checked above), in
    // a map value or the per-CPU scratch space.
    let old =
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(word, (bits as u64) << 48) };
    (old >> 48) as u16
}

/// `mark_closing` for the flow a reply (the backend's `tcp_flags`)
/// belongs to. Not inlined: its work would take registers and stack in
/// `to_client`'s frame, at the verifier's limit.
#[inline(never)]
pub fn mark_closing_from_reply(rev: &Reverse, proto: u8, tcp_flags: u8) {
    let Some(s) = scratch() else {
        return;
    };
    owner_key_into(&mut s.owner, rev, proto);
    let fkey = &s.owner;
    if let Some(f) = FLOWS.get_ptr_mut(fkey) {
        crate::cache::forget(&FLOW_CACHE, fkey);
        // SAFETY: map value pointer, valid for this program run.
        mark_closing(unsafe { &mut *f }, tcp_flags, false);
    }
}
