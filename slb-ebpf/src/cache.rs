//! Per-CPU caches of the flow-table (`FLOWS`) and reply-table (`REVERSE`)
//! entries the fast path reads: one direct-mapped slot per 5-tuple hash,
//! holding a copy of the entry with its key.
//!
//! Why: a hash-map lookup is a chain of kernel calls (lookup, key hash,
//! bucket walk, key compare), and on CPUs with return-thunk mitigations
//! every return costs several nanoseconds; measured here, it was ~40% of
//! an established packet's cost. A cache slot is an inlined per-CPU array
//! access and a key compare, no call.
//!
//! Copies go stale, and that is safe because the fast path only uses an
//! entry refreshed within the last second (`fast::usable`) and checks the
//! backend in the live `BACKENDS` map on every packet. Changes the slow
//! path makes to an entry (FIN/RST seen, once-a-second refresh) are
//! dropped from this CPU's cache at once (`forget_*`); another CPU's copy
//! keeps forwarding the flow's packets to the same backend, with the same
//! translation, for at most a second, exactly as the entry itself would.
use crate::maps::{FLOW_CACHE, REPLY_CACHE};
use slb_common::{hash::cache_slot, Flow, FlowKey, Reverse};

#[repr(C)]
pub struct CachedFlow {
    pub key: FlowKey,
    pub flow: Flow,
}

#[repr(C)]
pub struct CachedReply {
    pub key: FlowKey,
    pub rev: Reverse,
}

#[inline(always)]
fn slot(key: &FlowKey) -> u32 {
    let ports = key.sport as u32 | (key.dport as u32) << 16;
    cache_slot(&key.src, &key.dst, ports, key.proto)
}

/// Word-wise key compare: a derived `==` may become a `memcmp` call.
#[inline(always)]
pub fn same(a: &FlowKey, b: &FlowKey) -> bool {
    // SAFETY: `FlowKey` is `repr(C)`, 40 bytes without implicit padding
    // (checked by `slb_common`'s layout test), 4-byte aligned.
    let (a, b) = unsafe {
        (
            &*(a as *const FlowKey as *const [u32; 10]),
            &*(b as *const FlowKey as *const [u32; 10]),
        )
    };
    let mut diff = 0;
    for i in 0..10 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// This CPU's flow-cache slot for `key` (holding `key`'s entry or another).
#[inline(always)]
pub fn flow_slot(key: &FlowKey) -> Option<&'static mut CachedFlow> {
    // SAFETY: per-CPU value, valid for this program run; XDP runs to
    // completion on its CPU, so nothing else touches it meanwhile.
    FLOW_CACHE
        .get_ptr_mut(slot(key))
        .map(|p| unsafe { &mut *p })
}

/// This CPU's reply-cache slot for `key`.
#[inline(always)]
pub fn reply_slot(key: &FlowKey) -> Option<&'static mut CachedReply> {
    // SAFETY: as in `flow_slot`.
    REPLY_CACHE
        .get_ptr_mut(slot(key))
        .map(|p| unsafe { &mut *p })
}

/// Drops this CPU's cached copy of `key`'s flow entry.
#[inline(always)]
pub fn forget_flow(key: &FlowKey) {
    if let Some(c) = flow_slot(key) {
        if same(&c.key, key) {
            // Protocol 0 never matches a packet's key.
            c.key.proto = 0;
        }
    }
}

/// Drops this CPU's cached copy of `key`'s reply entry.
#[inline(always)]
pub fn forget_reply(key: &FlowKey) {
    if let Some(c) = reply_slot(key) {
        if same(&c.key, key) {
            c.key.proto = 0;
        }
    }
}
