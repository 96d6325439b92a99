//! Packet loads and stores in 16-bit units.
//!
//! Every field the program touches sits at an even offset from the frame
//! start, and the kernel hands XDP frames to programs at an even address,
//! so 16-bit accesses are aligned. `read_unaligned` would be the textbook
//! choice, but the BPF backend splits it into byte loads whose many live
//! values spill to the 512-byte stack; two aligned 16-bit loads per word
//! keep the code small and the stack shallow.
//!
//! Callers pass pointers inside a region whose bounds they checked against
//! `data_end` (the verifier enforces it too).
use slb_common::Addr;

/// Loads the 16 bits at `p` (network-order bytes, read natively).
#[inline(always)]
pub fn ld16(p: *const u8) -> u16 {
    // SAFETY: in bounds (caller) and 2-byte aligned (module comment).
    unsafe { (p as *const u16).read() }
}

#[inline(always)]
pub fn st16(p: *mut u8, v: u16) {
    // SAFETY: as for `ld16`.
    unsafe { (p as *mut u16).write(v) }
}

/// Loads 4 bytes as `u32::from_ne_bytes` would.
#[inline(always)]
pub fn ld32(p: *const u8) -> u32 {
    let lo = ld16(p) as u32;
    let hi = ld16(p.wrapping_add(2)) as u32;
    if cfg!(target_endian = "little") {
        lo | hi << 16
    } else {
        hi | lo << 16
    }
}

#[inline(always)]
pub fn st32(p: *mut u8, v: u32) {
    let (lo, hi) = if cfg!(target_endian = "little") {
        (v as u16, (v >> 16) as u16)
    } else {
        ((v >> 16) as u16, v as u16)
    };
    st16(p, lo);
    st16(p.wrapping_add(2), hi);
}

/// Loads a 16-byte address.
#[inline(always)]
pub fn ld128(p: *const u8) -> Addr {
    [
        ld32(p),
        ld32(p.wrapping_add(4)),
        ld32(p.wrapping_add(8)),
        ld32(p.wrapping_add(12)),
    ]
}

#[inline(always)]
pub fn st128(p: *mut u8, a: &Addr) {
    st32(p, a[0]);
    st32(p.wrapping_add(4), a[1]);
    st32(p.wrapping_add(8), a[2]);
    st32(p.wrapping_add(12), a[3]);
}
