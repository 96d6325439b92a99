//! SLB's XDP program. Entry points only; see the modules for each concern.
#![no_std]
#![no_main]
// Atomic add on map values (`flow::active_add`): the bpf target has the
// instruction but no `AtomicU32` type.
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Map keys and values are passed by reference on purpose: passing them by
// value (as this lint suggests for `impl Borrow<K>` arguments) copies them
// onto the 512-byte stack, out of the per-CPU scratch space they live in.
#![allow(clippy::needless_borrows_for_generic_args)]

mod acl;
mod bytes;
mod cache;
mod dests;
mod fast;
mod fib;
mod flow;
mod forward;
mod icmp;
mod maps;
mod nat;
mod parse;
mod persist;
mod schedule;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// The load balancer's fast path: traffic not for us is passed, packets of
/// established flows and their replies are translated and sent on; the
/// rest goes to `slb_xdp_slow` by a tail call.
#[xdp]
pub fn slb_xdp(ctx: XdpContext) -> u32 {
    fast::process(&ctx)
}

/// The whole load balancer: classification, new flows, translation,
/// ICMP, path MTU. Only reached by the fast path's tail call.
#[xdp]
pub fn slb_xdp_slow(ctx: XdpContext) -> u32 {
    forward::process(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
