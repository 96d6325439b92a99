//! Every map of the program. Sizes marked "set by the agent" are overridden
//! at load time from the configuration; the ones here are placeholders that
//! keep the object loadable on its own (tests).
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
};
use slb_common::{
    limits::{
        CACHE_SLOTS, DEST_SLOTS, MAX_ACL_ENTRIES, MAX_BACKENDS, MAX_DEVICES, MAX_LISTENERS,
        MAX_SNAT_ADDRS, RINGS_PER_LISTENER, RING_CHUNK,
    },
    stats::GLOBAL_COUNTERS,
    AclKey, Addr, Backend, BackendHop, DestSlot, Flow, FlowKey, Listener, NextHop, Persist,
    PersistKey, Reverse, RingChunk, Settings, SnatPool, Stats, VipKey,
};

/// Destination addresses the program acts on (`DEST_*` flags): VIPs, FULLNAT
/// source addresses, `nat` backends. An open-addressing hash table in an
/// array (see `slb_common::DestSlot`): the lookup every packet makes is
/// inlined, no function call.
#[map]
pub static DESTS: Array<DestSlot> = Array::pinned(DEST_SLOTS, 0);

/// Index 0: the slow path (`slb_xdp_slow`), tail-called by the fast path
/// for everything but established flows and non-VIP traffic.
#[map]
pub static JUMP: ProgramArray = ProgramArray::pinned(1, 0);

/// (VIP, port, protocol) → listener.
///
/// Not preallocated: in a preallocated hash map an update hands the
/// replaced element to the updating CPU as its spare, and the next update
/// from that CPU (the agent writes every listener in a row) fills it with
/// another key's value at once, while a packet on another CPU may still be
/// reading it: that packet would be scheduled with another listener's
/// table. Without preallocation a replaced element is freed only after an
/// RCU grace period, when no program can hold it any more.
#[map]
pub static LISTENERS: HashMap<VipKey, Listener> =
    HashMap::pinned(MAX_LISTENERS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Lookup tables of all listeners, back to back: `RINGS_PER_LISTENER`
/// tables of `ring_size` slots per listener (set by the agent),
/// `RING_CHUNK` slots to an element (see `schedule::ring_slot`).
#[map]
pub static RING: Array<RingChunk> =
    Array::pinned(MAX_LISTENERS * RINGS_PER_LISTENER * 1021 / RING_CHUNK, 0);

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

/// Per-CPU copies of recently used `FLOWS` entries (see `cache`). Not
/// pinned: a restarted agent starts with empty caches.
#[map]
pub static FLOW_CACHE: PerCpuArray<crate::cache::Cached<Flow>> =
    PerCpuArray::with_max_entries(CACHE_SLOTS, 0);

/// Per-CPU copies of recently used `REVERSE` entries (see `cache`).
#[map]
pub static REPLY_CACHE: PerCpuArray<crate::cache::Cached<Reverse>> =
    PerCpuArray::with_max_entries(CACHE_SLOTS, 0);

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

/// Flows currently counted active per backend id (`wlc`): incremented when
/// a flow is scheduled, decremented at its FIN/RST; the agent rewrites the
/// true counts from the connection table every few seconds (flows that
/// just went idle decrement nothing here).
#[map]
pub static ACTIVE: Array<u32> = Array::pinned(MAX_BACKENDS, 0);

/// Source-IP persistence: (listener, client address) → backend (size set
/// by the agent).
#[map]
pub static PERSIST: LruHashMap<PersistKey, Persist> = LruHashMap::pinned(65536, 0);

/// Per-listener allow/deny lists.
#[map]
pub static ACL: LpmTrie<AclKey, u32> = LpmTrie::pinned(MAX_ACL_ENTRIES, 0);

/// Next hop towards each backend (by backend id), shared by its flows.
#[map]
pub static BACKEND_NH: Array<BackendHop> = Array::pinned(MAX_BACKENDS, 0);

/// Element 0: the time (`CLOCK_MONOTONIC_COARSE` ns, the clock of
/// `bpf_ktime_get_coarse_ns`), written by the agent four times a second.
/// The fast path reads it instead of calling the clock helper: a call per
/// packet costs more than most of its work. When no agent runs, the clock
/// stands still and the fast path steps aside: every packet takes the slow
/// path, which reads the kernel clock itself.
#[map]
pub static CLOCK: Array<u64> = Array::pinned(1, 0);

/// Element 0: program-wide switches.
#[map]
pub static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// Per-CPU scratch space for values too big for the 512-byte BPF stack
/// (the verifier sums the frames of a whole call chain). XDP runs to
/// completion on its CPU, and each field has one user at a time.
#[repr(C)]
pub struct Scratch {
    pub fib: aya_ebpf::bindings::bpf_fib_lookup,
    pub flow: Flow,
    pub rev: Reverse,
    /// A FULLNAT source being tried (`flow::snat_search`), or the tuple an
    /// ICMP error answers (`icmp::plan`).
    pub rkey: FlowKey,
    /// The client flow of a reverse entry whose FULLNAT source another
    /// client wants (`flow::source_free`).
    pub owner: FlowKey,
    /// The backend picked for a new flow and the source towards it.
    pub backend: Backend,
    pub backend_id: u32,
    pub src: Addr,
    pub sport: u16,
    pub flow_flags: u16,
    /// MTU of the next hop a packet was too big for (`forward::TOO_BIG`).
    pub mtu: u16,
    pub _pad: u16,
    /// The way back to the sender of the packet being handled: its
    /// ingress device and MACs swapped (the first next hop of replies).
    pub in_nh: NextHop,
    /// An ICMP error being translated (`icmp::translate`).
    pub icmp: crate::icmp::IcmpPlan,
    pub buf: [u8; 160],
    /// `bpf_ktime_get_coarse_ns` when the slow path took the packet.
    pub now: u64,
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The scratch space of this CPU.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU value, valid for this program run; see `Scratch`.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}
