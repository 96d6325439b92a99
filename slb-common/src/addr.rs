//! Conversions between `core::net` addresses and the map representation.
use crate::{is_v4_mapped, Addr};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The map form of an address (IPv4 stored IPv4-mapped).
pub fn to_addr(ip: IpAddr) -> Addr {
    let octets = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut out = [0u32; 4];
    for (i, w) in out.iter_mut().enumerate() {
        *w = u32::from_ne_bytes([
            octets[i * 4],
            octets[i * 4 + 1],
            octets[i * 4 + 2],
            octets[i * 4 + 3],
        ]);
    }
    out
}

/// The address a map value holds.
pub fn from_addr(addr: &Addr) -> IpAddr {
    let mut octets = [0u8; 16];
    for (i, w) in addr.iter().enumerate() {
        octets[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    if is_v4_mapped(addr) {
        IpAddr::V4(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for ip in [
            "10.0.0.10",
            "100.64.0.1",
            "2001:db8::1",
            "::1",
            "::ffff:0:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let back = from_addr(&to_addr(ip));
            // ::ffff:0:1 is itself IPv4-mapped (0.0.0.1): the map form
            // cannot tell them apart, by design.
            let expect = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            assert_eq!(back, expect);
        }
    }

    #[test]
    fn v4_word_is_network_order_bytes() {
        let a = to_addr("10.1.2.3".parse().unwrap());
        assert_eq!(a[3].to_ne_bytes(), [10, 1, 2, 3]);
        assert!(is_v4_mapped(&a));
    }
}
