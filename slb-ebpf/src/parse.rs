//! Bounds-checked packet access and header parsing.
//!
//! Only the layouts the fast path rewrites are accepted: untagged Ethernet,
//! IPv4 without options and not fragmented, IPv6 whose next header is TCP or
//! UDP directly (and whose addresses are not IPv4-mapped, see `parse_l3`).
//! So every header sits at a constant offset, which keeps the verifier's
//! job (and ours) simple. Anything else addressed to a VIP is handed to the
//! kernel unchanged.
use crate::bytes::{ld128, ld16, ld32};
use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};
use slb_common::{is_v4_mapped, v4_mapped, Addr, FlowKey, PROTO_TCP, PROTO_UDP};

pub const ETH_LEN: usize = size_of::<EthHdr>();
pub const V4_L4: usize = ETH_LEN + size_of::<Ipv4Hdr>();
pub const V6_L4: usize = ETH_LEN + size_of::<Ipv6Hdr>();
const ETH_P_IP: u16 = 0x0800u16.to_be();
const ETH_P_IPV6: u16 = 0x86DDu16.to_be();

/// `data` and `data_end` of the frame, read with volatile loads: the
/// verifier only accepts packet pointers loaded from the context itself,
/// and plain loads let LLVM hoist them into a caller and pass them as
/// (zero-extended, hence rejected) arguments.
#[inline(always)]
pub fn bounds(ctx: &XdpContext) -> (usize, usize) {
    // SAFETY: `ctx.ctx` is the program's context pointer.
    unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    }
}

/// The frame's length in bytes (for the byte counters).
#[inline(always)]
pub fn packet_len(ctx: &XdpContext) -> u64 {
    let (start, end) = bounds(ctx);
    (end - start) as u64
}

/// A pointer to a `T` at `off` bytes into the packet, if it fits.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let (start, end) = bounds(ctx);
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The network layer of a packet, enough to decide whether it is ours.
pub struct L3 {
    pub family: Family,
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    /// Total IP length (header included), for the FIB MTU check.
    pub tot_len: u16,
    /// The fast path cannot rewrite this packet: not TCP/UDP, a fragment,
    /// IPv4 options, or an IPv6 extension header before the transport
    /// header.
    pub unsupported: bool,
    /// An ICMP/ICMPv6 packet at the fast-path offset (no options, not a
    /// fragment): possibly an error about a translated flow.
    pub icmp: bool,
    /// IPv4 "don't fragment" (always true for IPv6, which routers never
    /// fragment).
    pub df: bool,
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

pub enum Parsed {
    Ip(L3),
    /// Not IPv4/IPv6 (ARP, VLAN-tagged, ...): not ours.
    Other,
    /// Truncated or inconsistent headers.
    Malformed,
}

/// `parse_l3` into `out`, which is written in full when the result is
/// `PARSED_IP` and left alone otherwise (it may be uninitialised). Not
/// inlined: the parse's temporaries live in a frame that is gone before
/// the rest of the path runs (the verifier limits the stack of a whole
/// call chain).
#[inline(never)]
pub fn parse_into(ctx: &XdpContext, out: *mut L3) -> u32 {
    match parse_l3(ctx) {
        Parsed::Ip(l3) => {
            // SAFETY: `out` points to (possibly uninitialised) space for
            // an `L3` in the caller's frame; `write` drops nothing there.
            unsafe { out.write(l3) };
            PARSED_IP
        }
        Parsed::Other => PARSED_OTHER,
        Parsed::Malformed => PARSED_MALFORMED,
    }
}

pub const PARSED_IP: u32 = 0;
pub const PARSED_OTHER: u32 = 1;
pub const PARSED_MALFORMED: u32 = 2;

#[inline(always)]
pub fn parse_l3(ctx: &XdpContext) -> Parsed {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Parsed::Malformed;
    };
    // SAFETY: `ptr_at` checked bounds.
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type == ETH_P_IP {
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN) else {
            return Parsed::Malformed;
        };
        // SAFETY: bounds checked above.
        let ip = unsafe { &*ip };
        if ip.version() != 4 || ip.ihl() < 20 {
            return Parsed::Malformed;
        }
        let tot_len = u16::from_be_bytes(ip.tot_len);
        let frags = u16::from_be_bytes(ip.frags);
        // More-fragments flag or a non-zero offset.
        let fragment = frags & 0x3fff != 0;
        let plain = !fragment && ip.ihl() == 20;
        Parsed::Ip(L3 {
            family: Family::V4,
            src: v4_mapped(ld32(ip.src_addr.as_ptr())),
            dst: v4_mapped(ld32(ip.dst_addr.as_ptr())),
            proto: ip.proto,
            tot_len,
            unsupported: !plain || (ip.proto != PROTO_TCP && ip.proto != PROTO_UDP),
            icmp: plain && ip.proto == PROTO_ICMP,
            df: frags & 0x4000 != 0,
        })
    } else if ether_type == ETH_P_IPV6 {
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN) else {
            return Parsed::Malformed;
        };
        // SAFETY: bounds checked above.
        let ip = unsafe { &*ip };
        let next = ip.next_hdr;
        if ip.version() != 6 {
            return Parsed::Malformed;
        }
        let payload_len = u16::from_be_bytes(ip.payload_len);
        let src = ld128(ip.src_addr.as_ptr());
        let dst = ld128(ip.dst_addr.as_ptr());
        if is_v4_mapped(&src) || is_v4_mapped(&dst) {
            // The maps hold IPv4 addresses IPv4-mapped, so such a packet
            // would carry an IPv4 flow's key (and could join or end that
            // flow). IPv4-mapped addresses do not belong on the wire (RFC
            // 4291 §2.5.5.2; Linux drops such a source): the kernel decides.
            return Parsed::Malformed;
        }
        Parsed::Ip(L3 {
            family: Family::V6,
            src,
            dst,
            proto: next,
            tot_len: payload_len.saturating_add(size_of::<Ipv6Hdr>() as u16),
            unsupported: next != PROTO_TCP && next != PROTO_UDP,
            icmp: next == PROTO_ICMPV6,
            df: true,
        })
    } else {
        Parsed::Other
    }
}

/// Whether the IP length field covers the IP header (and, for a packet the
/// program translates, its TCP/UDP header) and fits in the frame (Ethernet
/// padding may follow): Linux drops the packet otherwise, and the MTU check
/// trusts the field. An IPv6 payload length of 0 before a transport header
/// is no jumbogram (that needs a hop-by-hop option). Checked only once a
/// packet is known to be addressed to us (or a `nat` reply), so traffic for
/// the host itself pays nothing for it: the kernel judges that.
#[inline(always)]
pub fn lengths_ok(ctx: &XdpContext, l3: &L3) -> bool {
    let header = match l3.family {
        Family::V4 => size_of::<Ipv4Hdr>() as u16,
        Family::V6 => size_of::<Ipv6Hdr>() as u16,
    };
    let need = header + if l3.unsupported { 0 } else { l4_min(l3.proto) };
    l3.tot_len >= need && l3.tot_len as u64 <= packet_len(ctx).saturating_sub(ETH_LEN as u64)
}

/// The transport header bytes the fast path reads for `proto` (none for
/// the protocols it does not translate).
#[inline(always)]
fn l4_min(proto: u8) -> u16 {
    match proto {
        PROTO_TCP => size_of::<TcpHdr>() as u16,
        PROTO_UDP => size_of::<UdpHdr>() as u16,
        _ => 0,
    }
}

/// Transport ports and TCP flags of a packet at the fast-path offset.
pub struct L4 {
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (FIN=1, SYN=2, RST=4, ...); 0 for UDP.
    pub tcp_flags: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

#[inline(always)]
pub fn l4_offset(family: Family) -> usize {
    match family {
        Family::V4 => V4_L4,
        Family::V6 => V6_L4,
    }
}

/// The ports and flags, if the transport header is one the receiver's
/// kernel accepts: a TCP data offset of at least 5 words that stays inside
/// the segment, a UDP length of at least 8 bytes that stays inside the
/// datagram (an IPv6 UDP length of 0 means "the whole payload" to Linux).
/// Linux drops anything else (`tcp_v4_rcv`, `__udp4_lib_rcv`): forwarded,
/// it would open a flow, and take a FULLNAT source, for nothing. Relies on
/// `lengths_ok` for the IP length.
#[inline(always)]
pub fn parse_l4(ctx: &XdpContext, l3: &L3) -> Option<L4> {
    let off = l4_offset(l3.family);
    let ip_header = match l3.family {
        Family::V4 => size_of::<Ipv4Hdr>() as u16,
        Family::V6 => size_of::<Ipv6Hdr>() as u16,
    };
    let l4_len = l3.tot_len.saturating_sub(ip_header);
    if l3.proto == PROTO_TCP {
        let tcp = ptr_at::<TcpHdr>(ctx, off)?;
        // SAFETY: bounds checked by `ptr_at`.
        let tcp = unsafe { &*tcp };
        let base = tcp as *const TcpHdr as *const u8;
        // SAFETY: bytes 12 and 13 lie inside the 20-byte TCP header
        // checked above.
        let (doff, tcp_flags) = unsafe { (*base.wrapping_add(12), *base.wrapping_add(13)) };
        let header_len = u16::from(doff >> 4) * 4;
        if header_len < size_of::<TcpHdr>() as u16 || header_len > l4_len {
            return None;
        }
        Some(L4 {
            sport: ld16(tcp.source.as_ptr()),
            dport: ld16(tcp.dest.as_ptr()),
            tcp_flags,
        })
    } else if l3.proto == PROTO_UDP {
        let udp = ptr_at::<UdpHdr>(ctx, off)?;
        // SAFETY: bounds checked by `ptr_at`.
        let udp = unsafe { &*udp };
        let len = u16::from_be(ld16(udp.len.as_ptr()));
        let jumbo = len == 0 && l3.family == Family::V6;
        if (len < size_of::<UdpHdr>() as u16 && !jumbo) || len > l4_len {
            return None;
        }
        Some(L4 {
            sport: ld16(udp.src.as_ptr()),
            dport: ld16(udp.dst.as_ptr()),
            tcp_flags: 0,
        })
    } else {
        None
    }
}

#[inline(always)]
pub fn flow_key(l3: &L3, l4: &L4) -> FlowKey {
    FlowKey {
        src: l3.src,
        dst: l3.dst,
        sport: l4.sport,
        dport: l4.dport,
        proto: l3.proto,
        _pad1: 0,
        _pad2: 0,
    }
}
