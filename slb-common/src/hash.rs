//! The flow hash used to pick a lookup-table slot. Two LB nodes with the
//! same configuration compute the same hash, so they pick the same backend.

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

#[inline(always)]
fn finish(mut h: u64) -> u32 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// Hash of a client 5-tuple (source, destination, ports, protocol).
#[inline(always)]
pub fn flow_hash(src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = 0x5bd1_e995u64;
    h = mix(h, (src[0] as u64) << 32 | src[1] as u64);
    h = mix(h, (src[2] as u64) << 32 | src[3] as u64);
    h = mix(h, (dst[0] as u64) << 32 | dst[1] as u64);
    h = mix(h, (dst[2] as u64) << 32 | dst[3] as u64);
    h = mix(h, (sport as u64) << 24 | (dport as u64) << 8 | proto as u64);
    finish(h)
}

/// Hash of a client address alone (source-hash scheduling and persistence).
#[inline(always)]
pub fn addr_hash(src: &[u32; 4]) -> u32 {
    let mut h = 0x2545_f491u64;
    h = mix(h, (src[0] as u64) << 32 | src[1] as u64);
    h = mix(h, (src[2] as u64) << 32 | src[3] as u64);
    finish(h)
}

/// First slot of an address in the `DESTS` table.
#[inline(always)]
pub fn dest_slot(addr: &[u32; 4]) -> u32 {
    let x = addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3];
    let x = x.wrapping_mul(0x9e37_79b1);
    (x >> 16) & (crate::limits::DEST_SLOTS - 1)
}

/// Slot of a 5-tuple in the fast path's per-CPU entry caches: cheap (a
/// few instructions, no call), not keyed: a collision only sends a packet
/// to the flow table instead of the cache.
#[inline(always)]
pub fn cache_slot(src: &[u32; 4], dst: &[u32; 4], ports: u32, proto: u8) -> u32 {
    let s = src[0] ^ src[1] ^ src[2] ^ src[3];
    let d = dst[0] ^ dst[1] ^ dst[2] ^ dst[3];
    let x = (s as u64) << 32 | (d ^ ports.rotate_left(16) ^ proto as u32) as u64;
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 40) as u32 & (crate::limits::CACHE_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn spreads_sequential_ports_evenly() {
        let n = 65537u32;
        let buckets = 16usize;
        let mut counts = [0u32; 16];
        let src = [0, 0, 0xffff_0000, 0x0100_000a];
        let dst = [0, 0, 0xffff_0000, 0x0a00_000a];
        for port in 0..32000u16 {
            let slot = flow_hash(&src, &dst, port, 80, 6) % n;
            counts[(slot as usize * buckets) / n as usize] += 1;
        }
        for c in counts {
            assert!((1800..2200).contains(&c), "{counts:?}");
        }
    }

    // Clients differ in source address and port; 64 flows (the benchmark's
    // established case) or a few hundred should mostly get slots of their own.
    #[test]
    fn cache_slots_spread_clients() {
        use crate::limits::CACHE_SLOTS;
        let dst = [0, 0, 0xffff_0000, 0x0a00_000a];
        let mut used = std::vec![0u32; CACHE_SLOTS as usize];
        let mut n = 0;
        for host in 1..=64u32 {
            for port in [40000u16, 40001, 51234, 61000] {
                let src = [0, 0, 0xffff_0000, 0x0a01_0000 | host];
                let ports = (port.to_be() as u32) | ((80u16.to_be() as u32) << 16);
                used[cache_slot(&src, &dst, ports, 6) as usize] += 1;
                n += 1;
            }
        }
        let distinct = used.iter().filter(|&&c| c > 0).count();
        // 256 flows in 1024 slots: a uniform hash leaves ~226 distinct.
        assert!(distinct >= 200, "{distinct} of {n}");
        assert!(used.iter().all(|&c| c <= 4), "{used:?}");
    }
}
