//! Placement of destination addresses in the `DESTS` table (open
//! addressing with linear probing, as `slb-ebpf/src/dests.rs` searches it).
use slb_common::{
    hash::dest_slot,
    limits::{DEST_PROBES, DEST_SLOTS},
    Addr, DestSlot,
};
use std::collections::BTreeMap;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the destination table cannot place {0} addresses within {DEST_PROBES} probes each")]
pub struct DestTableFull(pub usize);

/// The whole table for `dests` (address → `DEST_*` flags): `DEST_SLOTS`
/// slots, empty ones zeroed. Deterministic: addresses are placed in
/// sorted order.
pub fn dest_table(dests: &BTreeMap<Addr, u32>) -> Result<Vec<DestSlot>, DestTableFull> {
    let mut table = vec![DestSlot::default(); DEST_SLOTS as usize];
    for (addr, flags) in dests {
        let first = dest_slot(addr);
        let free = (0..DEST_PROBES)
            .map(|i| ((first + i) & (DEST_SLOTS - 1)) as usize)
            .find(|&s| table[s].flags == 0)
            .ok_or(DestTableFull(dests.len()))?;
        table[free] = DestSlot {
            addr: *addr,
            flags: *flags,
        };
    }
    Ok(table)
}

/// What the program's lookup finds for `addr` in `table`.
#[cfg(test)]
fn find(table: &[DestSlot], addr: &Addr) -> u32 {
    let first = dest_slot(addr);
    for i in 0..DEST_PROBES {
        let s = &table[((first + i) & (DEST_SLOTS - 1)) as usize];
        if s.flags == 0 {
            return 0;
        }
        if s.addr == *addr {
            return s.flags;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use slb_common::addr::to_addr;

    #[test]
    fn every_address_is_found_and_others_are_not() {
        let mut d = BTreeMap::new();
        for i in 0..300u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i * 7);
            d.insert(to_addr(ip.into()), 1 + i % 3);
        }
        d.insert(to_addr("fd10::10".parse().unwrap()), 2);
        let t = dest_table(&d).unwrap();
        for (a, f) in &d {
            assert_eq!(find(&t, a), *f);
        }
        assert_eq!(find(&t, &to_addr("192.0.2.1".parse().unwrap())), 0);
        assert_eq!(find(&t, &to_addr("fd10::11".parse().unwrap())), 0);
    }

    /// LVS-NAT real servers often fill one subnet: a /24 of `nat`
    /// backends (and as many IPv6 addresses of one /64) is placed, each
    /// found. The table has room for far more; the first slot of an
    /// address used to depend on its last octet through 4 bits only, so a
    /// /24 had 16 probe sequences and no more than 128 of its addresses
    /// fitted.
    #[test]
    fn a_whole_subnet_of_addresses_is_placed() {
        let mut d = BTreeMap::new();
        for i in 1..=254u32 {
            d.insert(to_addr(std::net::Ipv4Addr::from(0x0a00_0100 + i).into()), 1);
            let v6 = std::net::Ipv6Addr::from(0xfd00_0001_u128 << 96 | u128::from(i));
            d.insert(to_addr(v6.into()), 2);
        }
        let t = dest_table(&d).expect("a /24 and 254 addresses of a /64 fit");
        for (a, f) in &d {
            assert_eq!(find(&t, a), *f);
        }
    }

    #[test]
    fn colliding_addresses_share_a_probe_sequence() {
        // Addresses whose first slot is the same all get placed nearby.
        let mut d = BTreeMap::new();
        let target = dest_slot(&to_addr("10.0.0.1".parse().unwrap()));
        let mut n = 0u32;
        let mut i = 0u32;
        while n < DEST_PROBES {
            let a = to_addr(std::net::Ipv4Addr::from(0x0a00_0000 + i).into());
            if dest_slot(&a) == target {
                d.insert(a, 1);
                n += 1;
            }
            i += 1;
        }
        let t = dest_table(&d).unwrap();
        for a in d.keys() {
            assert_eq!(find(&t, a), 1);
        }
        // One more on the same first slot cannot be placed.
        loop {
            let a = to_addr(std::net::Ipv4Addr::from(0x0a00_0000 + i).into());
            i += 1;
            if dest_slot(&a) == target {
                d.insert(a, 1);
                break;
            }
        }
        assert_eq!(dest_table(&d), Err(DestTableFull(d.len())));
    }
}
