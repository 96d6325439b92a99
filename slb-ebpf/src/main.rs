//! SLB's XDP program. Entry points only; see the modules for each concern.
#![no_std]
#![no_main]

mod fib;
mod flow;
mod forward;
mod maps;
mod nat;
mod parse;
mod schedule;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// The load balancer: VIP traffic is scheduled and translated, replies of
/// translated flows are translated back, everything else is passed.
#[xdp]
pub fn slb_xdp(ctx: XdpContext) -> u32 {
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
