//! Every map of the program. Sizes marked "set by the agent" are overridden
//! at load time from the configuration; the ones here are placeholders that
//! keep the object loadable on its own (tests).
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use slb_common::{
    limits::{MAX_BACKENDS, MAX_DEVICES, MAX_LISTENERS, MAX_SNAT_ADDRS, RINGS_PER_LISTENER},
    stats::GLOBAL_COUNTERS,
    Addr, Backend, Flow, FlowKey, Listener, Reverse, SnatPool, Stats, VipKey,
};

/// Destination addresses the program acts on (`DEST_*` flags): VIPs and
/// FULLNAT source addresses. One small lookup decides whether a packet is
/// ours, so traffic for anything else pays for one lookup only.
#[map]
pub static DESTS: HashMap<Addr, u32> = HashMap::pinned(4096, 0);

/// (VIP, port, protocol) → listener.
#[map]
pub static LISTENERS: HashMap<VipKey, Listener> = HashMap::pinned(MAX_LISTENERS, 0);

/// Lookup tables of all listeners, back to back: `RINGS_PER_LISTENER`
/// tables of `ring_size` slots per listener (set by the agent).
#[map]
pub static RING: Array<u32> = Array::pinned(MAX_LISTENERS * RINGS_PER_LISTENER * 1021, 0);

/// Backend id → backend.
#[map]
pub static BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

/// Client-side 5-tuple → flow (size set by the agent).
#[map]
pub static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::pinned(65536, 0);

/// Backend-side 5-tuple of replies → original client tuple (size set by the
/// agent, equal to `FLOWS`).
#[map]
pub static REVERSE: LruHashMap<FlowKey, Reverse> = LruHashMap::pinned(65536, 0);

/// Element 0: number of addresses in `SNAT_V4` / `SNAT_V6`.
#[map]
pub static SNAT_POOL: Array<SnatPool> = Array::pinned(1, 0);

#[map]
pub static SNAT_V4: Array<Addr> = Array::pinned(MAX_SNAT_ADDRS, 0);

#[map]
pub static SNAT_V6: Array<Addr> = Array::pinned(MAX_SNAT_ADDRS, 0);

/// Devices the program may redirect to, keyed by ifindex.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_DEVICES, 0);

#[map]
pub static LISTENER_STATS: PerCpuArray<Stats> = PerCpuArray::pinned(MAX_LISTENERS, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<Stats> = PerCpuArray::pinned(MAX_BACKENDS, 0);

#[map]
pub static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::pinned(GLOBAL_COUNTERS, 0);

/// Element 0: `slb_common::limits::LAYOUT_VERSION` of the build that
/// created the pinned maps.
#[map]
pub static VERSION: Array<u32> = Array::pinned(1, 0);

/// Per-CPU position of each listener in its WRR sequence.
#[map]
pub static WRR_POS: PerCpuArray<u32> = PerCpuArray::pinned(MAX_LISTENERS, 0);
