//! Configuration state written by the agent and read by the XDP program.
use crate::Addr;

/// Key of the `LISTENERS` map: where a client sends (VIP, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    pub addr: Addr,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Forwarding mode of a listener (`Listener::mode`).
pub const MODE_FULLNAT: u8 = 0;
pub const MODE_NAT: u8 = 1;
pub const MODE_DR: u8 = 2;

/// Scheduler of a listener (`Listener::scheduler`).
pub const SCHED_MAGLEV: u8 = 0;
pub const SCHED_WRR: u8 = 1;
pub const SCHED_WLC: u8 = 2;
pub const SCHED_SH: u8 = 3;

/// Value of the `RING` map: `limits::RING_CHUNK` consecutive slots of the
/// lookup tables (backend ids), which lie back to back across elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingChunk {
    pub slots: [u32; crate::limits::RING_CHUNK as usize],
}

/// Value of the `LISTENERS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    /// Index into per-listener maps (stats, lookup tables).
    pub id: u32,
    /// First slot of the live lookup table in the `RING` map.
    pub ring_base: u32,
    /// Number of slots in the lookup table (prime for Maglev).
    pub ring_size: u32,
    /// Idle timeout of flows, seconds.
    pub idle_timeout_s: u32,
    /// Source-IP persistence timeout, seconds; 0 = off.
    pub persist_timeout_s: u32,
    /// Number of backends with slots in the live table; 0 = drop new flows.
    pub live_backends: u32,
    pub mode: u8,
    pub scheduler: u8,
    /// `ACL_*`: whether new flows are checked against the `ACL` trie.
    pub acl: u8,
    pub _pad: [u8; 5],
}

/// ACL mode of a listener (`Listener::acl`).
pub const ACL_NONE: u8 = 0;
/// Only sources matching an entry of the listener may open flows.
pub const ACL_ALLOW: u8 = 1;
/// Sources matching an entry of the listener are refused.
pub const ACL_DENY: u8 = 2;

/// Key of the `ACL` longest-prefix-match trie: the listener id (always
/// fully matched, so the prefix length is 32 + the address prefix) then the
/// address (IPv4 mapped, so an IPv4 /n is a /96+n).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AclKey {
    /// Network byte order, so it is the leading bits of the key.
    pub listener_id_be: u32,
    pub addr: Addr,
}

/// Key of the `PERSIST` table (source-IP persistence).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistKey {
    pub listener_id: u32,
    pub addr: Addr,
}

/// Value of the `PERSIST` table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    pub seen_ns: u64,
    pub backend_id: u32,
    pub backend_gen: u32,
}

/// Element 0 of the `SETTINGS` array: switches of the whole program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Some listener uses `nat` forwarding: replies from backends are
    /// addressed to clients, so packets are also classified by source.
    pub nat: u32,
    pub _pad: u32,
}

/// Backend flags (`Backend::flags`).
/// Health checks say the backend is down: its flows are re-scheduled.
pub const BACKEND_F_DOWN: u8 = 1;
/// The agent retired the id: its backend was removed (its flows run on
/// until idle). The program ignores it; a restarted agent adopting the
/// pinned table must not take the id for a backend of the same address
/// that was added again and has a newer id.
pub const BACKEND_F_RETIRED: u8 = 2;

/// Value of the `BACKENDS` array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: Addr,
    /// Network byte order.
    pub port: u16,
    pub flags: u8,
    pub _pad: u8,
    /// The listener this backend belongs to; a flow whose backend was moved
    /// to another listener (slot reused) is re-scheduled.
    pub listener_id: u32,
    /// Bumped by the agent each time this id is given to a different
    /// backend, so flows pinned to the previous owner are re-scheduled.
    pub generation: u32,
    /// Configured weight (the `wlc` scheduler divides by it).
    pub weight: u32,
}

/// Element 0 of the `SNAT_POOL` array: how many FULLNAT source addresses of
/// each family are in `SNAT_V4` / `SNAT_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatPool {
    pub v4_count: u32,
    pub v6_count: u32,
}

/// A slot of the `DESTS` table: an open-addressing hash table in an array
/// map (linear probing from `hash::dest_slot`, at most
/// `limits::DEST_PROBES` slots, an empty slot ends the search). An array
/// lookup is inlined by the verifier; a hash-map lookup is a function call,
/// which costs more than the whole lookup on CPUs with return-thunk
/// mitigations, and every packet pays for this one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestSlot {
    pub addr: Addr,
    /// `DEST_*` flags; 0 = empty slot.
    pub flags: u32,
}

/// Flags of the `DESTS` table: what a destination address is to the
/// program. The address is a VIP of at least one listener.
pub const DEST_VIP: u32 = 1;
/// The address is a FULLNAT source address: packets to it are replies.
pub const DEST_SNAT: u32 = 2;
/// The address is a backend of a `nat` listener: packets *from* it may be
/// replies to translate (looked up by source address).
pub const DEST_NAT_BACKEND: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<Listener>(), 32);
        assert_eq!(size_of::<Backend>(), 32);
        assert_eq!(size_of::<SnatPool>(), 8);
        assert_eq!(size_of::<AclKey>(), 20);
        assert_eq!(size_of::<PersistKey>(), 20);
        assert_eq!(size_of::<Persist>(), 16);
        assert_eq!(size_of::<Settings>(), 8);
        assert_eq!(size_of::<DestSlot>(), 20);
    }
}
