//! The benchmark baseline: swaps the Ethernet addresses and sends the frame
//! back out of the device it came in on (`XDP_TX`), the least work a
//! forwarding XDP program can do. `cargo xtask bench` runs it beside the
//! load balancer on the same traffic and reports ratios to it.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn slb_tx(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: the 12 bytes of the two MAC addresses were bounds-checked.
    unsafe {
        let mut macs = *eth;
        macs.rotate_left(6);
        *eth = macs;
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
