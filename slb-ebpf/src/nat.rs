//! Address/port rewriting with incremental checksum updates.
use crate::parse::{ptr_at, Family, ETH_LEN, V4_L4, V6_L4};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use slb_common::{csum::udp_nonzero, csum::CsumUpdate, Addr, PROTO_TCP};

/// The new addresses and ports of a packet (ports in network order).
pub struct Rewrite<'a> {
    pub src: &'a Addr,
    pub sport: u16,
    pub dst: &'a Addr,
    pub dport: u16,
}

/// Offset of the transport checksum inside the TCP/UDP header.
#[inline(always)]
fn l4_csum_off(proto: u8) -> usize {
    if proto == PROTO_TCP {
        16
    } else {
        6
    }
}

#[inline(always)]
fn rd16(p: *const u8) -> u16 {
    // SAFETY: callers pass pointers inside a header whose bounds were checked.
    unsafe { core::ptr::read_unaligned(p as *const u16) }
}

#[inline(always)]
fn wr16(p: *mut u8, v: u16) {
    // SAFETY: as for `rd16`.
    unsafe { core::ptr::write_unaligned(p as *mut u16, v) }
}

/// Rewrites addresses and ports of a fast-path packet (see `parse`) and
/// fixes the IPv4 header and TCP/UDP checksums. An IPv4 UDP checksum of 0
/// ("none") is left alone.
#[inline(always)]
pub fn rewrite(
    ctx: &aya_ebpf::programs::XdpContext,
    family: Family,
    proto: u8,
    to: &Rewrite,
) -> Option<()> {
    // The transport header: 20 bytes for TCP covers the checksum at 16;
    // 8 for UDP covers it at 6.
    let l4_off = match family {
        Family::V4 => V4_L4,
        Family::V6 => V6_L4,
    };
    let l4 = if proto == PROTO_TCP {
        ptr_at::<[u8; 20]>(ctx, l4_off)? as *mut u8
    } else {
        ptr_at::<[u8; 8]>(ctx, l4_off)? as *mut u8
    };
    let csum_ptr = l4.wrapping_add(l4_csum_off(proto));
    let old_l4_csum = rd16(csum_ptr);
    let mut l4c = CsumUpdate::new(old_l4_csum);

    l4c.replace16(rd16(l4), to.sport);
    l4c.replace16(rd16(l4.wrapping_add(2)), to.dport);
    wr16(l4, to.sport);
    wr16(l4.wrapping_add(2), to.dport);

    match family {
        Family::V4 => {
            let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
            // SAFETY: bounds checked by `ptr_at`.
            let ip = unsafe { &mut *ip };
            let old_src = u32::from_ne_bytes(ip.src_addr);
            let old_dst = u32::from_ne_bytes(ip.dst_addr);
            let mut ipc = CsumUpdate::new(u16::from_ne_bytes(ip.check));
            ipc.replace32(old_src, to.src[3]);
            ipc.replace32(old_dst, to.dst[3]);
            ip.check = ipc.finish().to_ne_bytes();
            ip.src_addr = to.src[3].to_ne_bytes();
            ip.dst_addr = to.dst[3].to_ne_bytes();
            l4c.replace32(old_src, to.src[3]);
            l4c.replace32(old_dst, to.dst[3]);
            if proto == PROTO_TCP {
                wr16(csum_ptr, l4c.finish());
            } else if old_l4_csum != 0 {
                wr16(csum_ptr, udp_nonzero(l4c.finish()));
            }
        }
        Family::V6 => {
            let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN)?;
            let src_p = ip as *mut u8;
            // SAFETY: both 16-byte addresses lie inside the checked header.
            let (old_src, old_dst) = unsafe {
                (
                    core::ptr::read_unaligned(src_p.wrapping_add(8) as *const Addr),
                    core::ptr::read_unaligned(src_p.wrapping_add(24) as *const Addr),
                )
            };
            l4c.replace128(&old_src, to.src);
            l4c.replace128(&old_dst, to.dst);
            // SAFETY: as above.
            unsafe {
                core::ptr::write_unaligned(src_p.wrapping_add(8) as *mut Addr, *to.src);
                core::ptr::write_unaligned(src_p.wrapping_add(24) as *mut Addr, *to.dst);
            }
            let c = l4c.finish();
            wr16(
                csum_ptr,
                if proto == PROTO_TCP {
                    c
                } else {
                    udp_nonzero(c)
                },
            );
        }
    }
    Some(())
}
