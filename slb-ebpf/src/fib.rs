//! Next hop from the kernel FIB, and transmission (XDP_TX / DEVMAP
//! redirect).
use crate::{
    maps::{scratch, TX_PORTS},
    parse::{ptr_at, Family},
};
use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::{bpf_check_mtu, bpf_fib_lookup as fib_lookup},
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
    /// No route, blackhole, forwarding disabled.
    Unreachable,
}

/// Looks up the next hop for a packet `src → dst` (already translated)
/// arriving on the context's device, with the egress device's MTU.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, family: Family, src: &Addr, dst: &Addr) -> Route {
    let mut nh = NextHop::default();
    match lookup_into(ctx, family, src, dst, &mut nh) {
        FOUND => Route::Via(nh),
        NO_NEIGH => Route::NoNeigh,
        _ => Route::Unreachable,
    }
}

const FOUND: u32 = 0;
const NO_NEIGH: u32 = 1;
const UNREACHABLE: u32 = 2;

// Not inlined: the lookup's parameter block gets its own stack frame
// (the verifier caps each call chain at 512 bytes of stack).
#[inline(never)]
fn lookup_into(ctx: &XdpContext, family: Family, src: &Addr, dst: &Addr, out: &mut NextHop) -> u32 {
    let Some(s) = scratch() else {
        return UNREACHABLE;
    };
    let p = &mut s.fib;
    // SAFETY: `bpf_fib_lookup` is plain old data; all-zero is a valid value.
    *p = unsafe { core::mem::zeroed() };
    p.ifindex = ctx.ingress_ifindex() as u32;
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
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let mut mtu: u32 = 0;
            // SAFETY: plain helper call; with a zero length it only reports
            // the device MTU (the FIB lookup above skipped the MTU check,
            // which does not report the MTU on success).
            unsafe { bpf_check_mtu(ctx.as_ptr(), p.ifindex, &mut mtu, 0, 0) };
            *out = NextHop {
                ifindex: p.ifindex,
                mtu: if mtu > 0xffff { 0xffff } else { mtu as u16 },
                _pad: 0,
                smac: p.smac,
                dmac: p.dmac,
            };
            FOUND
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => NO_NEIGH,
        _ => UNREACHABLE,
    }
}

/// The way back to the sender of the frame being handled: out of the
/// device it came in on, to the MAC it came from. The first next hop of a
/// flow's replies (the once-a-second refresh then asks the FIB), which
/// spares a FIB lookup per new flow.
#[inline(always)]
pub fn way_back(ctx: &XdpContext) -> Option<NextHop> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by `ptr_at`.
    let (dmac, smac) = unsafe { ((*eth).src_addr, (*eth).dst_addr) };
    // MTU 0: not checked until the first refresh (within a second) learns
    // it from the FIB; asking the device here would cost a helper call on
    // every new flow.
    Some(NextHop {
        ifindex: ctx.ingress_ifindex() as u32,
        mtu: 0,
        _pad: 0,
        smac,
        dmac,
    })
}

/// Writes the MACs and sends the frame out of `nh.ifindex`: `XDP_TX` when
/// that is the ingress device, a DEVMAP redirect otherwise. A device the
/// agent did not put in `TX_PORTS` gets the frame through the kernel.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, nh: &NextHop) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // 16-bit stores: assigning the arrays makes LLVM call memmove (it
    // cannot tell the map value and the packet apart), a function call on
    // every forwarded packet.
    let p = eth as *mut u8;
    for i in 0..3 {
        let d = u16::from_ne_bytes([nh.dmac[2 * i], nh.dmac[2 * i + 1]]);
        let s = u16::from_ne_bytes([nh.smac[2 * i], nh.smac[2 * i + 1]]);
        crate::bytes::st16(p.wrapping_add(2 * i), d);
        crate::bytes::st16(p.wrapping_add(6 + 2 * i), s);
    }
    if nh.ifindex == ctx.ingress_ifindex() as u32 {
        return xdp_action::XDP_TX;
    }
    match TX_PORTS.redirect(nh.ifindex, xdp_action::XDP_PASS as u64) {
        Ok(action) => action,
        Err(action) => action,
    }
}
