//! Address/port rewriting with incremental checksum updates.
use crate::{
    bytes::{ld128, ld16, ld32, st128, st16, st32},
    parse::{ptr_at, Family, ETH_LEN, V4_L4, V6_L4},
};
use slb_common::{csum::udp_nonzero, csum::CsumUpdate, Addr, PROTO_TCP};

/// The new addresses and ports of a packet (ports in network order).
pub struct Rewrite<'a> {
    pub src: &'a Addr,
    pub sport: u16,
    pub dst: &'a Addr,
    pub dport: u16,
}

/// `rewrite_inline` as a subprogram of its own (its stack frame is not
/// part of the caller's; see `forward::dispatch`).
#[inline(never)]
pub fn rewrite(
    ctx: &aya_ebpf::programs::XdpContext,
    family: Family,
    proto: u8,
    to: &Rewrite,
) -> Option<()> {
    rewrite_inline(ctx, family, proto, to)
}

/// Rewrites addresses and ports of a fast-path packet (see `parse`) and
/// fixes the IPv4 header and TCP/UDP checksums. An IPv4 UDP checksum of 0
/// ("none") is left alone. Each field is read, folded into the checksums
/// and written before the next, which keeps few values alive at once.
#[inline(always)]
pub fn rewrite_inline(
    ctx: &aya_ebpf::programs::XdpContext,
    family: Family,
    proto: u8,
    to: &Rewrite,
) -> Option<()> {
    let l4_off = match family {
        Family::V4 => V4_L4,
        Family::V6 => V6_L4,
    };
    // The frame up to a full TCP header or the 8-byte UDP header.
    let base = if proto == PROTO_TCP {
        match family {
            Family::V4 => ptr_at::<[u8; V4_L4 + 20]>(ctx, 0)? as *mut u8,
            Family::V6 => ptr_at::<[u8; V6_L4 + 20]>(ctx, 0)? as *mut u8,
        }
    } else {
        match family {
            Family::V4 => ptr_at::<[u8; V4_L4 + 8]>(ctx, 0)? as *mut u8,
            Family::V6 => ptr_at::<[u8; V6_L4 + 8]>(ctx, 0)? as *mut u8,
        }
    };
    let at = |off: usize| base.wrapping_add(off);
    let csum_p = at(l4_off + if proto == PROTO_TCP { 16 } else { 6 });
    let old_l4_csum = ld16(csum_p);
    let mut l4c = CsumUpdate::new(old_l4_csum);

    let old = ld16(at(l4_off));
    l4c.replace16(old, to.sport);
    st16(at(l4_off), to.sport);
    let old = ld16(at(l4_off + 2));
    l4c.replace16(old, to.dport);
    st16(at(l4_off + 2), to.dport);

    match family {
        Family::V4 => {
            let ipc_p = at(ETH_LEN + 10);
            let mut ipc = CsumUpdate::new(ld16(ipc_p));
            let old = ld32(at(ETH_LEN + 12));
            ipc.replace32(old, to.src[3]);
            l4c.replace32(old, to.src[3]);
            st32(at(ETH_LEN + 12), to.src[3]);
            let old = ld32(at(ETH_LEN + 16));
            ipc.replace32(old, to.dst[3]);
            l4c.replace32(old, to.dst[3]);
            st32(at(ETH_LEN + 16), to.dst[3]);
            st16(ipc_p, ipc.finish());
            if proto == PROTO_TCP {
                st16(csum_p, l4c.finish());
            } else if old_l4_csum != 0 {
                st16(csum_p, udp_nonzero(l4c.finish()));
            }
        }
        Family::V6 => {
            let old = ld128(at(ETH_LEN + 8));
            l4c.replace128(&old, to.src);
            st128(at(ETH_LEN + 8), to.src);
            let old = ld128(at(ETH_LEN + 24));
            l4c.replace128(&old, to.dst);
            st128(at(ETH_LEN + 24), to.dst);
            let c = l4c.finish();
            st16(
                csum_p,
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
