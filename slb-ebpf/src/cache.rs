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
//! dropped from this CPU's cache at once (`forget`); another CPU's copy
//! keeps forwarding the flow's packets to the same backend, with the same
//! translation, for at most a second, exactly as the entry itself would.
use aya_ebpf::maps::{LruHashMap, PerCpuArray};
use slb_common::{hash::cache_slot, FlowKey};

/// A cache slot: a copy of a table entry and its key.
#[repr(C)]
pub struct Cached<V> {
    pub key: FlowKey,
    pub value: V,
}

#[inline(always)]
fn slot(key: &FlowKey) -> u32 {
    let ports = key.sport as u32 | (key.dport as u32) << 16;
    cache_slot(&key.src, &key.dst, ports, key.proto)
}

/// Word-wise key compare: a derived `==` may become a `memcmp` call.
#[inline(always)]
fn same(a: &FlowKey, b: &FlowKey) -> bool {
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

/// This CPU's slot for `key` (holding `key`'s entry or another).
#[inline(always)]
fn slot_of<V: 'static>(
    cache: &PerCpuArray<Cached<V>>,
    key: &FlowKey,
) -> Option<&'static mut Cached<V>> {
    // SAFETY: per-CPU value, valid for this program run; XDP runs to
    // completion on its CPU, so nothing else touches it meanwhile.
    cache.get_ptr_mut(slot(key)).map(|p| unsafe { &mut *p })
}

/// `key`'s entry if it is `fresh`: this CPU's copy when that is, else the
/// table's, copied into the cache for the next packet. `None` when the
/// table has no entry or only a stale one (the caller need not check
/// `fresh` again).
#[inline(always)]
pub fn entry<V: Copy + 'static>(
    cache: &PerCpuArray<Cached<V>>,
    table: &LruHashMap<FlowKey, V>,
    key: &FlowKey,
    fresh: impl Fn(&V) -> bool,
) -> Option<&'static V> {
    let c = slot_of(cache, key)?;
    if !(same(&c.key, key) && fresh(&c.value)) {
        let p = table.get_ptr(key)?;
        // SAFETY: map value pointer, valid for this program run.
        if !fresh(unsafe { &*p }) {
            return None;
        }
        c.key = *key;
        // SAFETY: map value pointer, valid for this program run, and not
        // the cache slot (another map). Said explicitly: a plain
        // assignment between two pointers becomes a `memmove` call, a byte
        // loop, where a known non-overlapping copy is inlined as loads and
        // stores.
        unsafe { core::ptr::copy_nonoverlapping(p, &mut c.value, 1) };
    }
    Some(&c.value)
}

/// Drops this CPU's copy of `key`'s entry.
#[inline(always)]
pub fn forget<V: 'static>(cache: &PerCpuArray<Cached<V>>, key: &FlowKey) {
    if let Some(c) = slot_of(cache, key) {
        if same(&c.key, key) {
            // Protocol 0 never matches a packet's key.
            c.key.proto = 0;
        }
    }
}
