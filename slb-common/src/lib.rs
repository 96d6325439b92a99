//! Types and constants shared by the XDP program (`slb-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding so the byte layout
//! seen by the kernel, the eBPF program and userspace is identical. No
//! `bool`, `Option` or enums are stored in maps: flags are plain integers.
//!
//! Addresses are always 16 bytes: IPv4 is stored IPv4-mapped
//! (`::ffff:a.b.c.d`), so one key type serves both families. An IPv6
//! address in `::ffff:0:0/96` would collide with an IPv4 one: the XDP
//! program never takes such addresses from an IPv6 header (it passes those
//! packets to the kernel), so keys of the two families stay apart. Each `u32` word holds four bytes in network
//! order (`u32::from_ne_bytes(octets[i*4..i*4+4])`), exactly as they are
//! copied out of a packet.
#![no_std]

pub mod addr;
pub mod csum;
pub mod flow;
pub mod hash;
pub mod limits;
pub mod listener;
pub mod stats;

pub use flow::{BackendHop, Flow, FlowKey, NextHop, Reverse};
pub use listener::{
    AclKey, Backend, DestSlot, Listener, Persist, PersistKey, RingChunk, Settings, SnatPool, VipKey,
};
pub use stats::{GlobalCounter, Stats};

/// A 16-byte address in network byte order, IPv4 stored IPv4-mapped.
pub type Addr = [u32; 4];

/// The third word of an IPv4-mapped address (`::ffff:0:0/96`).
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Builds the IPv4-mapped form of a network-order IPv4 address word.
#[inline(always)]
pub const fn v4_mapped(addr_be: u32) -> Addr {
    [0, 0, V4_MAPPED_WORD, addr_be]
}

/// True when `addr` is an IPv4-mapped address.
#[inline(always)]
pub const fn is_v4_mapped(addr: &Addr) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == V4_MAPPED_WORD
}

/// True when no packet on the wire may come from `addr` (as the maps hold
/// it: IPv4 IPv4-mapped). IPv4: multicast (224/4), the limited broadcast,
/// "this network" (0/8) and loopback (127/8), the sources Linux drops as
/// martians (`ip_route_input_slow`) and routers must not forward (RFC 1812
/// §5.3.7). IPv6: multicast, loopback and the unspecified address (RFC
/// 4291 §2.5.2-3, §2.7).
#[inline(always)]
pub const fn is_martian_source(addr: &Addr) -> bool {
    if is_v4_mapped(addr) {
        let [first, ..] = addr[3].to_ne_bytes();
        first == 0 || first == 127 || first & 0xf0 == 0xe0 || addr[3] == u32::MAX
    } else {
        let [first, ..] = addr[0].to_ne_bytes();
        let low_zero = addr[0] == 0 && addr[1] == 0 && addr[2] == 0;
        first == 0xff || (low_zero && (addr[3] == 0 || addr[3] == u32::from_ne_bytes([0, 0, 0, 1])))
    }
}

/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;

#[cfg(feature = "user")]
mod pod {
    // SAFETY (for every impl below): each type is `#[repr(C)]`, `Copy`, made
    // only of integers and integer arrays with explicit padding fields, so
    // every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::Listener {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::SnatPool {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::Reverse {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::Stats {}
    unsafe impl aya::Pod for super::AclKey {}
    unsafe impl aya::Pod for super::PersistKey {}
    unsafe impl aya::Pod for super::Persist {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::DestSlot {}
    unsafe impl aya::Pod for super::RingChunk {}
    unsafe impl aya::Pod for super::BackendHop {}
}
