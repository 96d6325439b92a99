//! Next hop from the kernel FIB, and transmission (XDP_TX / DEVMAP
//! redirect).
use crate::{
    maps::TX_PORTS,
    parse::{ptr_at, Family},
};
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
    EbpfContext,
};
use network_types::eth::EthHdr;
use slb_common::{Addr, NextHop};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

pub enum Route {
    Via(NextHop),
    /// Route exists but the neighbour is not resolved yet: let the kernel
    /// forward this packet, which resolves it for the next one.
    NoNeigh,
    /// The packet is bigger than the egress MTU: the kernel sends the ICMP
    /// error or fragments.
    TooBig,
    /// No route, blackhole, forwarding disabled.
    Unreachable,
}

/// Looks up the next hop for a packet `src → dst` (already translated)
/// arriving on the context's device.
#[inline(always)]
pub fn lookup(
    ctx: &XdpContext,
    family: Family,
    src: &Addr,
    dst: &Addr,
    proto: u8,
    tot_len: u16,
) -> Route {
    // SAFETY: `bpf_fib_lookup` is plain old data; all-zero is a valid value.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.l4_protocol = proto;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_1.tot_len = tot_len;
    match family {
        Family::V4 => {
            p.family = AF_INET;
            p.__bindgen_anon_3.ipv4_src = src[3];
            p.__bindgen_anon_4.ipv4_dst = dst[3];
        }
        Family::V6 => {
            p.family = AF_INET6;
            p.__bindgen_anon_3.ipv6_src = *src;
            p.__bindgen_anon_4.ipv6_dst = *dst;
        }
    }
    // SAFETY: `p` is a valid, initialised parameter block of the size given.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Route::Via(NextHop {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
        }),
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::NoNeigh,
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Route::TooBig,
        _ => Route::Unreachable,
    }
}

/// Writes the MACs and sends the frame out of `nh.ifindex`: `XDP_TX` when
/// that is the ingress device, a DEVMAP redirect otherwise. A device the
/// agent did not put in `TX_PORTS` gets the frame through the kernel.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, nh: &NextHop) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        (*eth).dst_addr = nh.dmac;
        (*eth).src_addr = nh.smac;
    }
    if nh.ifindex == ctx.ingress_ifindex() as u32 {
        return xdp_action::XDP_TX;
    }
    match TX_PORTS.redirect(nh.ifindex, xdp_action::XDP_PASS as u64) {
        Ok(action) => action,
        Err(action) => action,
    }
}
