//! Incremental Internet-checksum updates (RFC 1624, eq. 3:
//! `HC' = ~(~HC + ~m + m')`).
//!
//! All values are the raw bytes of the packet read as native integers. The
//! one's-complement sum is invariant under byte swapping, so no conversion
//! to host order is needed as long as old and new values are read the same
//! way.

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Accumulator for a checksum update: start from the old checksum, feed
/// every changed 16- or 32-bit field, then `finish`.
#[derive(Clone, Copy)]
pub struct CsumUpdate(u64);

impl CsumUpdate {
    #[inline(always)]
    pub fn new(csum: u16) -> Self {
        CsumUpdate(!csum as u64 & 0xffff)
    }

    #[inline(always)]
    pub fn replace16(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u64 + new as u64;
    }

    #[inline(always)]
    pub fn replace32(&mut self, old: u32, new: u32) {
        let o = !old;
        self.0 +=
            (o >> 16) as u64 + (o & 0xffff) as u64 + (new >> 16) as u64 + (new & 0xffff) as u64;
    }

    #[inline(always)]
    pub fn replace128(&mut self, old: &[u32; 4], new: &[u32; 4]) {
        self.replace32(old[0], new[0]);
        self.replace32(old[1], new[1]);
        self.replace32(old[2], new[2]);
        self.replace32(old[3], new[3]);
    }

    #[inline(always)]
    pub fn finish(self) -> u16 {
        !fold(self.0)
    }
}

/// A UDP checksum of zero means "none" (IPv4 only); a computed zero is sent
/// as all ones.
#[inline(always)]
pub fn udp_nonzero(csum: u16) -> u16 {
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

/// Full checksum over `data` (used by tests and the agent, never per
/// packet in the XDP program).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_ne_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_ne_bytes([*last, 0]) as u64;
    }
    !fold(sum)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn header(src: u32, dst: u32, port: u16) -> Vec<u8> {
        let mut h = std::vec![0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
        h.extend_from_slice(&src.to_ne_bytes());
        h.extend_from_slice(&dst.to_ne_bytes());
        h.extend_from_slice(&port.to_ne_bytes());
        h
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let cases = [
            (
                0x0a00_0001u32,
                0x0a00_000au32,
                80u16,
                0x6440_000au32,
                0x0a01_000bu32,
                8080u16,
            ),
            (0xffff_ffff, 0, 0, 0, 0xffff_ffff, 0xffff),
            (1, 2, 3, 0xdead_beef, 0xfeed_f00d, 0xabcd),
        ];
        for (s, d, p, s2, d2, p2) in cases {
            let before = header(s, d, p);
            let after = header(s2, d2, p2);
            let mut u = CsumUpdate::new(checksum(&before));
            u.replace32(s, s2);
            u.replace32(d, d2);
            u.replace16(p, p2);
            assert_eq!(u.finish(), checksum(&after));
        }
    }

    #[test]
    fn replace128_matches() {
        let old = [1u32, 2, 3, 4];
        let new = [0xffff_0000u32, 7, 0, 0x1234_5678];
        let bytes = |a: &[u32; 4]| a.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
        let mut u = CsumUpdate::new(checksum(&bytes(&old)));
        u.replace128(&old, &new);
        assert_eq!(u.finish(), checksum(&bytes(&new)));
    }
}
