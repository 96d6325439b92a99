//! Packet-level tests of the XDP program through `BPF_PROG_TEST_RUN`: the
//! real object, loaded with maps filled from a real configuration by the
//! agent's planner, run on packets built with etherparse. Each case states
//! its input, the verdict it expects and what the output must look like.
//!
//! The program runs inside a namespace holding the routes and static
//! neighbours the FIB lookup needs:
//! `vc0` 10.0.0.1/24, fd00::1/64 towards the client (neighbour 10.0.0.2 /
//! fd00::2 = CLIENT_MAC) and `vb0` 10.0.1.1/24, fd00:1::1/64 towards the
//! backend (neighbour 10.0.1.2 / fd00:1::2 = BACKEND_MAC). 10.0.2.0/24 is
//! routed but has no neighbour (the kernel must resolve it).
use aya::programs::{TestRun, TestRunOptions};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use slb::{
    agent::Applier,
    config,
    dataplane::{Dataplane, DataplaneOptions},
    planner::{self, Health},
};
use slb_tests::Netns;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x02];
const IN_MAC_SRC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const IN_MAC_DST: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 1];

const CONFIG: &str = r#"
[agent]
interfaces = ["vc0", "vb0"]
probe_source = ["100.64.0.1", "fd64::1"]
local_addresses = ["100.64.0.10", "fd64::10"]
flow_table_size = 4096
maglev_table_size = 1021

[[listener]]
name = "web"
vip = "10.10.0.10"
port = 80
scheduler = "maglev"
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8080

[[listener]]
name = "dns"
vip = "10.10.0.10"
port = 53
protocol = "udp"
  [[listener.backend]]
  address = "10.0.1.2"
  port = 5353

[[listener]]
name = "web6"
vip = "fd10::10"
port = 80
  [[listener.backend]]
  address = "fd00:1::2"
  port = 8080

[[listener]]
name = "unresolved"
vip = "10.10.0.11"
port = 80
  [[listener.backend]]
  address = "10.0.2.2"
  port = 8080

[[listener]]
name = "empty"
vip = "10.10.0.12"
port = 80
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8080
  weight = 0
"#;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const SNAT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);

/// A bpffs mounted for one test, unmounted on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new(tag: &str) -> PinDir {
        let p = std::env::temp_dir().join(format!("slbt-pin-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        slb_tests::sh("mount", &["-t", "bpf", "bpf", p.to_str().unwrap()]).unwrap();
        PinDir(p)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = slb_tests::sh("umount", &[self.0.to_str().unwrap_or_default()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct Bed {
    dp: Dataplane,
    ns: Netns,
    _pins: PinDir,
}

impl Bed {
    fn new(tag: &str) -> Bed {
        let ns = Netns::new(&format!("pk{tag}")).unwrap();
        ns.ip(&["link", "add", "vc0", "type", "veth", "peer", "name", "vc1"])
            .unwrap();
        ns.ip(&["link", "add", "vb0", "type", "veth", "peer", "name", "vb1"])
            .unwrap();
        for d in ["vc0", "vc1", "vb0", "vb1"] {
            ns.ip(&["link", "set", d, "up"]).unwrap();
        }
        for (dev, a) in [
            ("vc0", "10.0.0.1/24"),
            ("vc0", "fd00::1/64"),
            ("vb0", "10.0.1.1/24"),
            ("vb0", "fd00:1::1/64"),
        ] {
            ns.ip(&["addr", "add", a, "dev", dev, "nodad"]).unwrap();
        }
        ns.ip(&["route", "add", "10.0.2.0/24", "dev", "vb0"])
            .unwrap();
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        for (a, dev, m) in [
            ("10.0.0.2", "vc0", CLIENT_MAC),
            ("fd00::2", "vc0", CLIENT_MAC),
            ("10.0.1.2", "vb0", BACKEND_MAC),
            ("fd00:1::2", "vb0", BACKEND_MAC),
        ] {
            ns.ip(&[
                "neigh",
                "add",
                a,
                "lladdr",
                &mac(m),
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .unwrap();
        }
        ns.sysctl("net.ipv4.conf.all.forwarding", "1").unwrap();
        ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();

        let pins = PinDir::new(tag);
        let cfg = config::parse(CONFIG).unwrap();
        let mut dp = Dataplane::load(&DataplaneOptions {
            pin_dir: pins.0.join("maps"),
            flow_table_size: cfg.agent.flow_table_size,
            ring_size: cfg.agent.maglev_table_size,
        })
        .unwrap();
        let mut applier = Applier::default();
        let plan = planner::plan(&cfg, &mut applier.ids, &Health::default()).unwrap();
        applier.apply(&mut dp, &plan).unwrap();
        // A device map resolves ifindexes in the caller's namespace.
        ns.enter(|| {
            for dev in ["vc0", "vb0"] {
                let idx = nix::net::if_::if_nametoindex(dev).unwrap();
                dp.add_tx_port(idx).unwrap();
            }
        })
        .unwrap();
        Bed {
            dp,
            ns,
            _pins: pins,
        }
    }

    /// Runs the program on `frame` inside the namespace.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = self.dp.program().unwrap();
        self.ns
            .enter(|| {
                let mut out = vec![0u8; frame.len() + 256];
                let r = prog
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        data_out: Some(&mut out),
                        ..TestRunOptions::default()
                    })
                    .unwrap();
                out.truncate(r.data_size_out as usize);
                (r.return_value, out)
            })
            .unwrap()
    }

    fn vb0_mac(&self) -> [u8; 6] {
        let out = self.ns.ip(&["-br", "link", "show", "vb0"]).unwrap();
        let mac = out.split_whitespace().nth(2).unwrap();
        let b: Vec<u8> = mac
            .split(':')
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect();
        b.try_into().unwrap()
    }
}

fn tcp4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// What a parsed output frame says.
#[derive(Debug)]
struct Out {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    l4_csum: u16,
}

/// Parses a frame and asserts every checksum in it is correct.
fn parse_checked(frame: &[u8]) -> Out {
    let p = PacketHeaders::from_ethernet_slice(frame).expect("output parses");
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = p.link else {
        panic!("no ethernet header")
    };
    let payload = p.payload.slice();
    let (src, dst, sport, dport, l4_csum) = match (&p.net, &p.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(t)) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 header checksum"
            );
            let (sp, dp, c, want) = match t {
                TransportHeader::Tcp(tcp) => (
                    tcp.source_port,
                    tcp.destination_port,
                    tcp.checksum,
                    tcp.calc_checksum_ipv4(ip, payload).unwrap(),
                ),
                TransportHeader::Udp(udp) => {
                    let want = if udp.checksum == 0 {
                        0
                    } else {
                        udp.calc_checksum_ipv4(ip, payload).unwrap()
                    };
                    (udp.source_port, udp.destination_port, udp.checksum, want)
                }
                _ => panic!("unexpected transport"),
            };
            assert_eq!(c, want, "IPv4 transport checksum");
            (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                sp,
                dp,
                c,
            )
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(t)) => {
            let (sp, dp, c, want) = match t {
                TransportHeader::Tcp(tcp) => (
                    tcp.source_port,
                    tcp.destination_port,
                    tcp.checksum,
                    tcp.calc_checksum_ipv6(ip, payload).unwrap(),
                ),
                TransportHeader::Udp(udp) => (
                    udp.source_port,
                    udp.destination_port,
                    udp.checksum,
                    udp.calc_checksum_ipv6(ip, payload).unwrap(),
                ),
                _ => panic!("unexpected transport"),
            };
            assert_eq!(c, want, "IPv6 transport checksum");
            (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                sp,
                dp,
                c,
            )
        }
        other => panic!("unexpected headers {other:?}"),
    };
    Out {
        src_mac: eth.source,
        dst_mac: eth.destination,
        src,
        dst,
        sport,
        dport,
        l4_csum,
    }
}

#[test]
fn syn_to_vip_is_rewritten_and_reply_translated_back() {
    let bed = Bed::new("syn");
    let (verdict, out) = bed.run(&tcp4(CLIENT, 40000, VIP, 80, true, b""));
    assert_eq!(verdict, XDP_REDIRECT, "forwarded to the backend device");
    let o = parse_checked(&out);
    assert_eq!(o.dst, IpAddr::V4(BACKEND));
    assert_eq!(o.dport, 8080);
    assert_eq!(
        o.src,
        IpAddr::V4(SNAT),
        "source from the local-address pool"
    );
    assert!(o.sport >= 1024);
    assert_eq!(o.dst_mac, BACKEND_MAC);
    assert_eq!(o.src_mac, bed.vb0_mac());

    // A data packet of the same flow takes the same translation.
    let (v2, out2) = bed.run(&tcp4(CLIENT, 40000, VIP, 80, false, b"hello world"));
    assert_eq!(v2, XDP_REDIRECT);
    let o2 = parse_checked(&out2);
    assert_eq!(
        (o2.src, o2.sport, o2.dst, o2.dport),
        (o.src, o.sport, o.dst, o.dport)
    );

    // The backend's reply goes back to the client from the VIP.
    let (v3, out3) = bed.run(&tcp4(BACKEND, 8080, SNAT, o.sport, false, b"response"));
    assert_eq!(v3, XDP_REDIRECT, "forwarded to the client device");
    let r = parse_checked(&out3);
    assert_eq!((r.src, r.sport), (IpAddr::V4(VIP), 80));
    assert_eq!((r.dst, r.dport), (IpAddr::V4(CLIENT), 40000));
    assert_eq!(r.dst_mac, CLIENT_MAC);

    // Another client port gets its own backend-side tuple.
    let (_, out4) = bed.run(&tcp4(CLIENT, 40001, VIP, 80, true, b""));
    let o4 = parse_checked(&out4);
    assert_ne!((o4.src, o4.sport), (o.src, o.sport));
    let (flows, reverse) = bed.dp.flow_entries();
    assert_eq!((flows, reverse), (2, 2));
}

#[test]
fn udp_checksums_including_zero_checksum() {
    let bed = Bed::new("udp");
    let (v, out) = bed.run(&udp4(CLIENT, 5000, VIP, 53, b"query"));
    assert_eq!(v, XDP_REDIRECT);
    let o = parse_checked(&out);
    assert_eq!((o.dst, o.dport), (IpAddr::V4(BACKEND), 5353));
    assert_ne!(o.l4_csum, 0);

    // IPv4 UDP without checksum stays without checksum.
    let mut zero = udp4(CLIENT, 5001, VIP, 53, b"query");
    zero[14 + 20 + 6] = 0;
    zero[14 + 20 + 7] = 0;
    let (v, out) = bed.run(&zero);
    assert_eq!(v, XDP_REDIRECT);
    let o = parse_checked(&out);
    assert_eq!(o.l4_csum, 0);
    assert_eq!(o.dport, 5353);
}

#[test]
fn ipv6_syn_is_rewritten_with_valid_checksum() {
    let bed = Bed::new("v6");
    let client: Ipv6Addr = "fd00::2".parse().unwrap();
    let vip: Ipv6Addr = "fd10::10".parse().unwrap();
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv6(client.octets(), vip.octets(), 64)
        .tcp(40000, 80, 1, 64000)
        .syn()
        .write(&mut frame, b"")
        .unwrap();
    let (v, out) = bed.run(&frame);
    assert_eq!(v, XDP_REDIRECT);
    let o = parse_checked(&out);
    assert_eq!(o.dst, "fd00:1::2".parse::<IpAddr>().unwrap());
    assert_eq!(o.src, "fd64::10".parse::<IpAddr>().unwrap());
    assert_eq!(o.dport, 8080);
    assert_eq!(o.dst_mac, BACKEND_MAC);
}

#[test]
fn unresolved_neighbour_goes_to_the_kernel_translated() {
    let bed = Bed::new("nn");
    let (v, out) = bed.run(&tcp4(
        CLIENT,
        40000,
        Ipv4Addr::new(10, 10, 0, 11),
        80,
        true,
        b"",
    ));
    assert_eq!(v, XDP_PASS, "the kernel resolves the neighbour");
    let o = parse_checked(&out);
    assert_eq!(o.dst, IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)));
    assert_eq!(o.src, IpAddr::V4(SNAT));
}

#[test]
fn listener_without_live_backend_drops_new_flows() {
    let bed = Bed::new("nb");
    let (v, _) = bed.run(&tcp4(
        CLIENT,
        40000,
        Ipv4Addr::new(10, 10, 0, 12),
        80,
        true,
        b"",
    ));
    assert_eq!(v, XDP_DROP);
    let c = bed.dp.counters().unwrap();
    assert_eq!(c.no_backend, 1);
}

/// Frames the program must hand to the kernel byte for byte unchanged.
#[test]
fn non_vip_and_malformed_frames_pass_untouched() {
    let bed = Bed::new("pass");
    let mut options = tcp4(CLIENT, 40000, VIP, 80, true, b"");
    // IHL 6 with a 4-byte option: not on the fast path.
    options[14] = 0x46;
    options.splice(34..34, [1u8, 1, 1, 0]);
    let mut fragment = udp4(CLIENT, 5000, VIP, 53, b"query");
    fragment[14 + 6] = 0x20; // more fragments
    let syn = tcp4(CLIENT, 40000, VIP, 80, true, b"");
    let arp = {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&IN_MAC_SRC);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0u8; 28]);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "TCP to a non-VIP address",
            tcp4(CLIENT, 40000, Ipv4Addr::new(10, 0, 1, 1), 22, true, b""),
        ),
        (
            "UDP to a non-VIP address",
            udp4(CLIENT, 5000, Ipv4Addr::new(192, 0, 2, 1), 53, b"x"),
        ),
        (
            "VIP on a port without listener",
            tcp4(CLIENT, 40000, VIP, 443, true, b""),
        ),
        ("ARP", arp),
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        ("IPv4 EtherType without IP header", syn[..14].to_vec()),
        ("truncated IPv4 header to a VIP", syn[..14 + 12].to_vec()),
        (
            "truncated TCP header to a VIP",
            syn[..14 + 20 + 10].to_vec(),
        ),
        ("IPv4 options to a VIP", options),
        ("fragment to a VIP", fragment),
        (
            "reply to a FULLNAT address without a flow",
            tcp4(BACKEND, 8080, SNAT, 5555, false, b""),
        ),
    ];
    for (what, frame) in cases {
        let (v, out) = bed.run(&frame);
        assert_eq!(v, XDP_PASS, "{what}: verdict");
        assert_eq!(out, frame, "{what}: frame changed");
    }
    let c = bed.dp.counters().unwrap();
    assert!(c.parse_errors >= 3, "{c:?}");
    assert!(c.unsupported >= 2, "{c:?}");
    assert!(c.not_for_us >= 4, "{c:?}");
    let (flows, _) = bed.dp.flow_entries();
    assert_eq!(flows, 0, "nothing was scheduled");
}
