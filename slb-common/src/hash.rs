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

/// First slot of an address in the `DESTS` table. Every bit of the
/// folded address reaches the slot bits (a 32-bit finalizer): the words
/// hold the address bytes in network order, so an IPv4 address's last
/// octet is the top byte of `addr[3]`, and a bare multiply carries top
/// bits only upwards: the addresses of one /24 then had 16 first slots
/// between them, and at most 128 of them fitted in the table.
#[inline(always)]
pub fn dest_slot(addr: &[u32; 4]) -> u32 {
    let mut x = addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3];
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x & (crate::limits::DEST_SLOTS - 1)
}

/// The `try_no`-th FULLNAT source candidate of a flow with hash `h`: an
/// index into the address pool of `count` addresses and a port in the
/// FULLNAT range. Every try is an independent hash (splitmix64's
/// finalizer): candidates derived from one hash by fixed strides are
/// correlated, so flows whose first choice is taken tend to find their
/// next ones taken too, and new flows get dropped long before the pool is
/// full. Deterministic, so a re-created flow finds its old reverse entry.
#[inline(always)]
pub fn snat_candidate(h: u32, try_no: u32, count: u32) -> (u32, u16) {
    let mut z = ((h as u64) << 32 | try_no as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let min = crate::limits::SNAT_PORT_MIN as u32;
    let span = 65536 - min;
    let port = min + (z as u32) % span;
    ((z >> 32) as u32 % count.max(1), port as u16)
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

    /// Fills a FULLNAT tuple space (2 backends × 32 addresses × the port
    /// range) to 1/8 with random flows, each taking the first free of
    /// `SNAT_PORT_TRIES` candidates, and counts the flows that found none.
    fn snat_exhausted(candidate: impl Fn(u32, u32) -> (u32, u16)) -> u32 {
        use crate::limits::{SNAT_PORT_MIN, SNAT_PORT_TRIES};
        let (backends, count) = (2u32, 32u32);
        let ports = 65536 - SNAT_PORT_MIN as u32;
        let mut used = std::vec![false; (backends * count * ports) as usize];
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut failed = 0;
        for _ in 0..(backends * count * ports / 8) {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let h = (rng >> 32) as u32;
            let backend = (rng >> 20) as u32 % backends;
            let free = (0..SNAT_PORT_TRIES).find_map(|i| {
                let (idx, port) = candidate(h, i);
                let slot =
                    ((backend * count + idx) * ports + (port - SNAT_PORT_MIN) as u32) as usize;
                (!used[slot]).then_some(slot)
            });
            match free {
                Some(slot) => used[slot] = true,
                None => failed += 1,
            }
        }
        failed
    }

    #[test]
    fn snat_candidates_do_not_run_out_early() {
        assert_eq!(snat_exhausted(|h, i| snat_candidate(h, i, 32)), 0);
        // What the strided candidates of earlier versions did (same seed):
        // the test would catch a return to correlated tries.
        let strided = |h: u32, i: u32| {
            let idx = h.rotate_right(7).wrapping_add(i) % 32;
            let port = 1024 + h.wrapping_add(i.wrapping_mul(40503)) % 64512;
            (idx, port as u16)
        };
        assert!(snat_exhausted(strided) > 0);
    }

    #[test]
    fn snat_candidates_stay_in_range() {
        for h in [0, 1, u32::MAX, 0xdead_beef] {
            for i in 0..64 {
                let (idx, port) = snat_candidate(h, i, 5);
                assert!(idx < 5 && port >= crate::limits::SNAT_PORT_MIN);
            }
        }
        assert_eq!(snat_candidate(7, 0, 0).0, 0, "no division by zero");
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
