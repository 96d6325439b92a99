//! Looking an address up in the `DESTS` table.
use crate::maps::DESTS;
use slb_common::{
    hash::dest_slot,
    limits::{DEST_PROBES, DEST_SLOTS},
    Addr,
};

/// The `DEST_*` flags of `addr`, 0 when it is none of ours.
#[inline(always)]
pub fn lookup(addr: &Addr) -> u32 {
    let first = dest_slot(addr);
    for i in 0..DEST_PROBES {
        let Some(slot) = DESTS.get((first + i) & (DEST_SLOTS - 1)) else {
            return 0;
        };
        if slot.flags == 0 {
            return 0;
        }
        if slot.addr == *addr {
            return slot.flags;
        }
    }
    0
}
