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
mod xdp_support;

use etherparse::PacketBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use xdp_support::*;

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

/// The agent reads the connection table whole, in batches of a few
/// thousand entries (every entry once, across batches), for status,
/// `slb flows` and the `wlc` recount.
#[test]
fn the_connection_table_is_read_whole() {
    let bed = Bed::new(
        "walk",
        &CONFIG.replace("flow_table_size = 4096", "flow_table_size = 65536"),
    );
    let (_, web) = bed
        .dp
        .listener_entries()
        .into_iter()
        .find(|(k, _)| {
            u16::from_be(k.port) == 80 && k.addr == slb_common::addr::to_addr(VIP.into())
        })
        .unwrap();
    let (id, backend) = (0..64)
        .find_map(|id| {
            let b = bed.dp.backend(id).ok()?;
            (b.listener_id == web.id && b.generation != 0).then_some((id, b))
        })
        .unwrap();
    let data = aya::maps::MapData::from_pin(bed.dp.pin_dir().join("FLOWS")).unwrap();
    let mut flows: aya::maps::HashMap<_, slb_common::FlowKey, slb_common::Flow> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).unwrap();
    let now = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    const N: u32 = 10_000;
    for i in 0..N {
        let key = slb_common::FlowKey {
            src: slb_common::addr::to_addr(Ipv4Addr::from(0x0a00_0000 + i).into()),
            dst: slb_common::addr::to_addr(VIP.into()),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            ..Default::default()
        };
        let flow = slb_common::Flow {
            seen_ns: now,
            backend_id: id,
            backend_gen: backend.generation,
            listener_id: web.id,
            idle_timeout_s: 900,
            ..Default::default()
        };
        flows.insert(key, flow, 0).unwrap();
    }
    assert_eq!(bed.dp.flow_entries().0, N as usize);
    let (active, whole) = bed
        .dp
        .active_flows(|l| (l == web.id).then_some(900_000_000_000));
    assert!(whole);
    assert_eq!(active.get(&id).copied(), Some(u64::from(N)), "{active:?}");
}

/// The listener map is not preallocated: an update of a preallocated hash
/// map recycles the replaced element for the next update at once, under a
/// packet that may still read it (see `maps::LISTENERS`).
#[test]
fn the_listener_map_frees_replaced_entries_after_rcu() {
    let bed = Bed::new("noprealloc", CONFIG);
    let info = aya::maps::MapInfo::from_pin(bed.dp.pin_dir().join("LISTENERS")).unwrap();
    const BPF_F_NO_PREALLOC: u32 = 1;
    assert_ne!(
        info.map_flags() & BPF_F_NO_PREALLOC,
        0,
        "flags {:#x}",
        info.map_flags()
    );
}

#[test]
fn syn_to_vip_is_rewritten_and_reply_translated_back() {
    let mut bed = Bed::new("syn", CONFIG);
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
    // Back out of the device the client's packets came in on, to the MAC
    // they came from (the FIB takes over at the first refresh).
    assert_eq!(r.dst_mac, IN_MAC_SRC);

    // Another client port gets its own backend-side tuple.
    let (_, out4) = bed.run(&tcp4(CLIENT, 40001, VIP, 80, true, b""));
    let o4 = parse_checked(&out4);
    assert_ne!((o4.src, o4.sport), (o.src, o.sport));
    let (flows, reverse) = bed.dp.flow_entries();
    assert_eq!((flows, reverse), (2, 2));
}

/// Established packets are forwarded by the fast path alone (the slow path
/// it tail-calls is taken out here), and only while the agent's clock runs:
/// once it stands still the fast path steps aside.
#[test]
fn established_flow_takes_the_fast_path_while_the_clock_runs() {
    let mut bed = Bed::new("fast", CONFIG);
    let (v, out) = bed.run(&tcp4(CLIENT, 40100, VIP, 80, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    let syn = parse_checked(&out);

    bed.take_out_slow_path();
    let data = tcp4(CLIENT, 40100, VIP, 80, false, b"data");
    let (v, out) = bed.run(&data);
    assert_eq!(v, XDP_REDIRECT, "forwarded without the slow path");
    let o = parse_checked(&out);
    assert_eq!((o.src, o.sport, o.dst), (syn.src, syn.sport, syn.dst));
    assert_eq!(o.dst_mac, BACKEND_MAC);
    let (v, _) = bed.run(&tcp4(CLIENT, 40101, VIP, 80, true, b""));
    assert_eq!(v, XDP_PASS, "a new flow needs the slow path, now gone");

    // The agent's clock lags the kernel's by up to a tick (the flow entry
    // is stamped by the slow path with the kernel clock).
    bed.set_clock(-300_000_000);
    let (v, _) = bed.run(&data);
    assert_eq!(v, XDP_REDIRECT, "a clock behind the entry's stamp");

    // The agent stopped five seconds ago.
    bed.set_clock(-5_000_000_000);
    let (v, _) = bed.run(&data);
    assert_eq!(v, XDP_PASS, "a stale clock sends packets to the slow path");
}

/// The fast path keeps per-CPU copies of flow entries; what the slow path
/// does to a flow on a CPU (here: an RST removes it) drops that CPU's copy
/// at once.
#[test]
fn rst_drops_the_cached_copy_of_its_flow() {
    let mut bed = Bed::new("crst", CONFIG);
    assert_eq!(
        bed.run(&tcp4(CLIENT, 40200, VIP, 80, true, b"")).0,
        XDP_REDIRECT
    );
    let data = tcp4(CLIENT, 40200, VIP, 80, false, b"data");
    // Forwarded by the fast path, which now holds a copy of the entry.
    assert_eq!(bed.run(&data).0, XDP_REDIRECT);
    assert_eq!(bed.run(&tcp4_rst(CLIENT, 40200, VIP, 80)).0, XDP_REDIRECT);
    assert_eq!(bed.dp.flow_entries().0, 0, "the RST removed the flow");

    bed.take_out_slow_path();
    let (v, _) = bed.run(&data);
    assert_eq!(v, XDP_PASS, "no copy of the removed flow forwards it");
}

/// A FIN from the backend marks the client's flow as closing (and drops
/// this CPU's copies of both entries): the client's next packet goes to
/// the slow path, which handles closing flows.
#[test]
fn backend_fin_drops_the_cached_copies() {
    let mut bed = Bed::new("cfin", CONFIG);
    let (_, out) = bed.run(&tcp4(CLIENT, 40300, VIP, 80, true, b""));
    let o = parse_checked(&out);
    let data = tcp4(CLIENT, 40300, VIP, 80, false, b"data");
    assert_eq!(bed.run(&data).0, XDP_REDIRECT);
    let reply = tcp4(BACKEND, 8080, SNAT, o.sport, false, b"response");
    assert_eq!(bed.run(&reply).0, XDP_REDIRECT);
    assert_eq!(bed.run(&reply).0, XDP_REDIRECT, "from the reply cache");
    assert_eq!(
        bed.run(&tcp4_fin(BACKEND, 8080, SNAT, o.sport)).0,
        XDP_REDIRECT
    );

    bed.take_out_slow_path();
    assert_eq!(
        bed.run(&data).0,
        XDP_PASS,
        "the closing flow needs the slow path"
    );
    // The reply entry itself is unchanged: its copy is taken again.
    assert_eq!(bed.run(&reply).0, XDP_REDIRECT);
}

/// Another CPU's copy of a flow entry the slow path changed keeps
/// forwarding the flow as before (same backend, same translation), for at
/// most a second: copies are only used while fresh.
#[test]
fn another_cpus_copy_expires_within_a_second() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let mut bed = Bed::new("ccpu", CONFIG);
    let (_, out) = bed.run(&tcp4(CLIENT, 40400, VIP, 80, true, b""));
    let syn = parse_checked(&out);
    let data = tcp4(CLIENT, 40400, VIP, 80, false, b"data");
    bed.cpu = 1;
    assert_eq!(bed.run(&data).0, XDP_REDIRECT, "cached on CPU 1");
    bed.cpu = 0;
    assert_eq!(bed.run(&tcp4_rst(CLIENT, 40400, VIP, 80)).0, XDP_REDIRECT);
    assert_eq!(bed.dp.flow_entries().0, 0);
    bed.take_out_slow_path();
    assert_eq!(bed.run(&data).0, XDP_PASS, "CPU 0 has no copy");

    bed.cpu = 1;
    let (v, out) = bed.run(&data);
    assert_eq!(v, XDP_REDIRECT, "CPU 1's copy is still fresh");
    let o = parse_checked(&out);
    assert_eq!(
        (o.src, o.sport, o.dst, o.dport),
        (syn.src, syn.sport, syn.dst, syn.dport)
    );
    bed.set_clock(1_500_000_000);
    assert_eq!(
        bed.run(&data).0,
        XDP_PASS,
        "a copy older than a second is not used"
    );
}

/// The kernel's coarse monotonic clock, the dataplane's.
fn coarse_now_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).unwrap();
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// A pinned map of the bed, opened anew (each closure of `Bed::race`
/// holds its own handles).
fn pinned(bed: &Bed, name: &str) -> aya::maps::MapData {
    aya::maps::MapData::from_pin(bed.dp.pin_dir().join(name)).unwrap()
}

/// A flow's client packets and its replies arrive on different CPUs (RX
/// queues), so the client's FIN and the backend's can be handled at the
/// same moment. Each must leave its mark on the flow: a lost FIN kept the
/// ended connection for the 900 s idle timeout instead of 10 s (and its
/// FULLNAT source as long), and both taking the flow out of the active
/// count put its backend's `wlc` count one below the truth, or at 4
/// billion, until the agent's next recount.
#[test]
fn fins_of_both_sides_at_once_on_two_cpus_both_count() {
    use aya::maps::{Array, HashMap, Map};
    use slb_common::{
        flow::{FLOW_F_CLOSING, FLOW_F_FIN_BACKEND, FLOW_F_FIN_CLIENT},
        Flow, FlowKey,
    };
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let mut bed = Bed::new("xfin", CONFIG);
    let sport = 40500;
    let (_, out) = bed.run(&tcp4(CLIENT, sport, VIP, 80, true, b""));
    let snat_port = parse_checked(&out).sport;
    let key = tcp_key4(CLIENT, sport, VIP, 80);
    let flows = |bed: &Bed| -> HashMap<_, FlowKey, Flow> {
        HashMap::try_from(Map::LruHashMap(pinned(bed, "FLOWS"))).unwrap()
    };
    let active = |bed: &Bed| -> Array<_, u32> {
        Array::try_from(Map::Array(pinned(bed, "ACTIVE"))).unwrap()
    };
    let open = flows(&bed).get(&key, 0).unwrap();
    assert_eq!(open.flags, 0, "a FULLNAT flow starts without flags");
    let id = open.backend_id;
    let (mut flows_a, mut active_a) = (flows(&bed), active(&bed));
    let (flows_b, active_b) = (flows(&bed), active(&bed));
    const ENDED: u16 = FLOW_F_CLOSING | FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND;
    let mut wrong = None;
    let rounds = bed.race(
        &tcp4_fin(CLIENT, sport, VIP, 80),
        &tcp4_fin(BACKEND, 8080, SNAT, snat_port),
        20_000,
        move |_| {
            // The connection open again, counted once.
            let fresh = Flow {
                seen_ns: coarse_now_ns(),
                ..open
            };
            flows_a.insert(key, fresh, 0).unwrap();
            active_a.set(id, 1, 0).unwrap();
        },
        |round, va, vb| {
            assert_eq!((va, vb), (XDP_REDIRECT, XDP_REDIRECT), "round {round}");
            let flags = flows_b.get(&key, 0).unwrap().flags;
            let count = active_b.get(&id, 0).unwrap();
            if flags != ENDED || count != 0 {
                wrong = Some((round, flags, count as i32));
            }
            wrong.is_none()
        },
    );
    assert_eq!(
        wrong, None,
        "(round, flags, active count) after {rounds} rounds; want flags {ENDED:#x}, count 0"
    );
}

#[test]
fn udp_checksums_including_zero_checksum() {
    let mut bed = Bed::new("udp", CONFIG);
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
    let mut bed = Bed::new("v6", CONFIG);
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
    let mut bed = Bed::new("nn", CONFIG);
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
    let mut bed = Bed::new("nb", CONFIG);
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
    let mut bed = Bed::new("pass", CONFIG);
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
    // An 802.1Q tag (VLAN 10) in front of the same SYN: passed, not
    // balanced (see the README).
    let mut vlan = syn.clone();
    vlan.splice(12..12, [0x81u8, 0x00, 0x00, 0x0a]);
    // IPv6 extension headers in front of the transport header (README:
    // passed, never forwarded half-translated).
    let vip6: Ipv6Addr = "fd10::10".parse().unwrap();
    let client6: Ipv6Addr = "fd00::2".parse().unwrap();
    let with_ext = |frame: Vec<u8>, next: u8, ext: [u8; 8]| {
        let mut f = frame;
        let inner = f[14 + 6];
        let plen = u16::from_be_bytes([f[14 + 4], f[14 + 5]]) + 8;
        f[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
        f[14 + 6] = next;
        let mut ext = ext;
        ext[0] = inner;
        f.splice(54..54, ext);
        f
    };
    let hop_by_hop = with_ext(
        tcp6(client6, 40000, vip6, 80, true, b""),
        0,
        [0, 0, 1, 4, 0, 0, 0, 0],
    );
    let fragment6 = with_ext(
        tcp6(client6, 40000, vip6, 80, true, b""),
        44,
        [0, 0, 0, 1, 0, 0, 0, 7],
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IPv6 hop-by-hop options to a VIP", hop_by_hop),
        ("IPv6 fragment to a VIP", fragment6),
        (
            "truncated IPv6 TCP header to a VIP",
            tcp6(client6, 40000, vip6, 80, true, b"")[..14 + 40 + 10].to_vec(),
        ),
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
        ("VLAN-tagged SYN to a VIP", vlan),
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
    assert!(c.unsupported >= 4, "{c:?}");
    assert!(c.not_for_us >= 5, "{c:?}");
    let (flows, _) = bed.dp.flow_entries();
    assert_eq!(flows, 0, "nothing was scheduled");
}

/// The first FULLNAT source port of client `src:sport` → VIP:80 (CONFIG
/// has one IPv4 pool address, so only the port varies).
fn first_source_port(src: Ipv4Addr, sport: u16) -> u16 {
    use slb_common::{
        addr::to_addr,
        hash::{flow_hash, snat_candidate},
    };
    let h = flow_hash(
        &to_addr(src.into()),
        &to_addr(VIP.into()),
        sport.to_be(),
        80u16.to_be(),
        6,
    );
    snat_candidate(h, 0, 1).1
}

/// Client tuples (from 10.0.0.3 on) whose first FULLNAT source port is
/// `port`, as many as asked.
fn rivals_for(port: u16, n: usize) -> Vec<(Ipv4Addr, u16)> {
    let mut found = Vec::new();
    for last in 3..=250u8 {
        let src = Ipv4Addr::new(10, 0, 0, last);
        for sport in 1024..=u16::MAX {
            if first_source_port(src, sport) == port {
                found.push((src, sport));
                if found.len() == n {
                    return found;
                }
            }
        }
    }
    panic!("no {n} client tuples with first source port {port}");
}

/// Makes the reverse entry of FULLNAT source port `snat_port` and, when
/// given, client flow `sport` (from CLIENT) look `secs` older.
fn age_flow(bed: &Bed, sport: Option<u16>, snat_port: u16, secs: u64) {
    use slb_common::{addr::to_addr, Flow, FlowKey, Reverse};
    let fkey = FlowKey {
        src: to_addr(CLIENT.into()),
        dst: to_addr(VIP.into()),
        sport: sport.unwrap_or(0).to_be(),
        dport: 80u16.to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    };
    let rkey = FlowKey {
        src: to_addr(BACKEND.into()),
        dst: to_addr(SNAT.into()),
        sport: 8080u16.to_be(),
        dport: snat_port.to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    };
    age::<Reverse>(bed, "REVERSE", &rkey, secs, |r| &mut r.seen_ns);
    if sport.is_some() {
        age::<Flow>(bed, "FLOWS", &fkey, secs, |f| &mut f.seen_ns);
    }
}

/// The FULLNAT source port a new flow from `src:sport` gets.
fn source_port_of_new_flow(bed: &mut Bed, (src, sport): (Ipv4Addr, u16)) -> u16 {
    let (v, out) = bed.run(&tcp4(src, sport, VIP, 80, true, b""));
    assert_eq!(v, XDP_REDIRECT, "{src}:{sport}");
    parse_checked(&out).sport
}

/// Reverse entries are never deleted, and a small pool never fills the
/// table enough for the LRU to evict them, so the FULLNAT source of an
/// ended flow must be handed out again, or the pool runs dry: after an
/// RST (either side's) once the reverse entry has been quiet for 3 s; after a FIN each
/// way once TIME_WAIT (60 s) has passed; for a flow that just stopped, after its
/// idle timeout (900 s for TCP). Not before.
#[test]
fn fullnat_source_of_an_ended_flow_goes_to_the_next_client() {
    let mut bed = Bed::new("reuse", CONFIG);
    // Ended by the client's RST.
    let a = 40000;
    let pa = source_port_of_new_flow(&mut bed, (CLIENT, a));
    assert_eq!(pa, first_source_port(CLIENT, a), "candidate prediction");
    let rivals = rivals_for(pa, 3);
    assert_ne!(
        source_port_of_new_flow(&mut bed, rivals[0]),
        pa,
        "taken while open"
    );
    assert_eq!(bed.run(&tcp4_rst(CLIENT, a, VIP, 80)).0, XDP_REDIRECT);
    assert_ne!(
        source_port_of_new_flow(&mut bed, rivals[1]),
        pa,
        "reused while the reverse entry may still be cached"
    );
    age_flow(&bed, None, pa, 4);
    assert_eq!(
        source_port_of_new_flow(&mut bed, rivals[2]),
        pa,
        "not reused after an RST"
    );
    // Ended by the backend's RST: the flow entry stays (marked ended), and
    // the source is free as soon as after the client's.
    let b = 40003;
    let pb = source_port_of_new_flow(&mut bed, (CLIENT, b));
    let rivals = rivals_for(pb, 2);
    assert_eq!(bed.run(&tcp4_rst(BACKEND, 8080, SNAT, pb)).0, XDP_REDIRECT);
    assert_ne!(
        source_port_of_new_flow(&mut bed, rivals[0]),
        pb,
        "reused while the reverse entry may still be cached"
    );
    age_flow(&bed, Some(b), pb, 4);
    assert_eq!(
        source_port_of_new_flow(&mut bed, rivals[1]),
        pb,
        "not reused after the backend's RST"
    );

    // Ended by FINs (kept through TIME_WAIT), and gone quiet without them
    // (kept until the idle timeout): (how, client port, age at which the
    // source must still be kept, age at which it must be handed out).
    for (how, sport, kept_at, free_at) in [("FINs", 40001, 30, 61), ("idle", 40002, 800, 901)] {
        let port = source_port_of_new_flow(&mut bed, (CLIENT, sport));
        let rivals = rivals_for(port, 2);
        if how == "FINs" {
            // A FIN each way: the connection is over (one FIN only
            // half-closes it, and it may go on as long as an open one).
            assert_eq!(bed.run(&tcp4_fin(CLIENT, sport, VIP, 80)).0, XDP_REDIRECT);
            assert_eq!(
                bed.run(&tcp4_fin(BACKEND, 8080, SNAT, port)).0,
                XDP_REDIRECT
            );
        }
        age_flow(&bed, Some(sport), port, kept_at);
        assert_ne!(
            source_port_of_new_flow(&mut bed, rivals[0]),
            port,
            "{how}: reused after {kept_at} s"
        );
        age_flow(&bed, Some(sport), port, free_at - kept_at);
        assert_eq!(
            source_port_of_new_flow(&mut bed, rivals[1]),
            port,
            "{how}: not reused after {free_at} s"
        );
    }
}

/// Two new flows of different clients handled at the same moment on two
/// CPUs may want the same FULLNAT source, held by an ended flow: only one
/// may take it over. Both used to (each found the source free, then
/// overwrote the reverse entry): the backend saw two clients' connections
/// as one tuple, and replies went to one of them only (or, from a reverse
/// entry both copies wrote at once, to a mix of the two clients' address
/// and port).
#[test]
fn two_cpus_never_take_over_the_same_fullnat_source() {
    use aya::maps::{HashMap, Map};
    use slb_common::{Flow, FlowKey, Reverse};
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let mut bed = Bed::new("xtake", CONFIG);
    // An ended flow (client RST) holds source port `port`...
    let old = 41000;
    let port = source_port_of_new_flow(&mut bed, (CLIENT, old));
    assert_eq!(bed.run(&tcp4_rst(CLIENT, old, VIP, 80)).0, XDP_REDIRECT);
    // ...which is the first choice of two other clients.
    let rivals = rivals_for(port, 2);
    let rkey = slb_common::FlowKey {
        src: slb_common::addr::to_addr(BACKEND.into()),
        dst: slb_common::addr::to_addr(SNAT.into()),
        sport: 8080u16.to_be(),
        dport: port.to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    };
    let reverse = |bed: &Bed| -> HashMap<_, FlowKey, Reverse> {
        HashMap::try_from(Map::LruHashMap(pinned(bed, "REVERSE"))).unwrap()
    };
    let flows = |bed: &Bed| -> HashMap<_, FlowKey, Flow> {
        HashMap::try_from(Map::LruHashMap(pinned(bed, "FLOWS"))).unwrap()
    };
    let ended = reverse(&bed).get(&rkey, 0).unwrap();
    let keys = [rivals[0], rivals[1]].map(|(src, sport)| tcp_key4(src, sport, VIP, 80));
    let (mut reverse_a, mut flows_a) = (reverse(&bed), flows(&bed));
    let (reverse_b, flows_b) = (reverse(&bed), flows(&bed));
    let mut wrong = None;
    let (a, b) = (rivals[0], rivals[1]);
    let rounds = bed.race(
        &tcp4(a.0, a.1, VIP, 80, true, b""),
        &tcp4(b.0, b.1, VIP, 80, true, b""),
        20_000,
        move |_| {
            // The source quiet long enough to be handed out, the two
            // clients without a flow.
            let quiet = Reverse {
                seen_ns: coarse_now_ns() - 10_000_000_000,
                ..ended
            };
            reverse_a.insert(rkey, quiet, 0).unwrap();
            for k in &keys {
                let _ = flows_a.remove(k);
            }
        },
        |round, va, vb| {
            assert_eq!((va, vb), (XDP_REDIRECT, XDP_REDIRECT), "round {round}");
            let ports = keys.map(|k| u16::from_be(flows_b.get(&k, 0).unwrap().snat_port));
            let owner = reverse_b.get(&rkey, 0).unwrap();
            let owner = (owner.client, u16::from_be(owner.client_port));
            // Exactly one client has the source, and the reverse entry
            // (whole, not a mix of two) sends replies to that one.
            let winner = ports
                .iter()
                .position(|&p| p == port)
                .map(|i| (slb_common::addr::to_addr(rivals[i].0.into()), rivals[i].1));
            if ports[0] == ports[1] || winner != Some(owner) {
                wrong = Some((round, ports, owner));
            }
            wrong.is_none()
        },
    );
    assert_eq!(
        wrong, None,
        "(round, source ports of the two clients, owner of port {port}) after {rounds} rounds"
    );
}

/// A client's first connections often come at once (a browser opens
/// several), and RSS spreads them over CPUs: with `source_ip` persistence
/// they must all go to one backend, also when two CPUs schedule the
/// client's first flows at the same moment. With `wrr` (each CPU walks
/// the sequence from its own position) and `wlc` the two picks can
/// differ; both used to be kept (each CPU recorded its own pin, the last
/// one stayed), so the client's connections were split between backends.
#[test]
fn first_flows_of_a_client_on_two_cpus_at_once_share_the_pin() {
    use aya::maps::{HashMap, Map};
    use slb_common::{Flow, FlowKey, PersistKey};
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let vip = Ipv4Addr::new(10, 10, 0, 13);
    let config = format!(
        r#"{CONFIG}
[[listener]]
name = "sticky"
vip = "{vip}"
port = 80
scheduler = "wrr"
persistence = {{ mode = "source_ip", timeout = "300s" }}
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8080
  [[listener.backend]]
  address = "10.0.1.3"
  port = 8080
"#
    );
    let mut bed = Bed::new("xpin", &config);
    // CPU 1 one step ahead in the WRR sequence: left alone, the two CPUs'
    // next picks differ.
    bed.cpu = 1;
    assert_eq!(
        bed.run(&tcp4(Ipv4Addr::new(10, 0, 0, 3), 40000, vip, 80, true, b""))
            .0,
        XDP_REDIRECT
    );
    bed.cpu = 0;
    let (a, b) = (42000, 42001);
    let keys = [a, b].map(|sport| tcp_key4(CLIENT, sport, vip, 80));
    let flows = |bed: &Bed| -> HashMap<_, FlowKey, Flow> {
        HashMap::try_from(Map::LruHashMap(pinned(bed, "FLOWS"))).unwrap()
    };
    let persist = |bed: &Bed| -> HashMap<_, PersistKey, slb_common::Persist> {
        HashMap::try_from(Map::LruHashMap(pinned(bed, "PERSIST"))).unwrap()
    };
    let listener_id = flows(&bed)
        .iter()
        .filter_map(Result::ok)
        .map(|(_, f)| f.listener_id)
        .next()
        .unwrap();
    let pkey = PersistKey {
        listener_id,
        addr: slb_common::addr::to_addr(CLIENT.into()),
    };
    let (mut flows_a, mut persist_a) = (flows(&bed), persist(&bed));
    let (flows_b, persist_b) = (flows(&bed), persist(&bed));
    let mut wrong = None;
    let rounds = bed.race(
        &tcp4(CLIENT, a, vip, 80, true, b""),
        &tcp4(CLIENT, b, vip, 80, true, b""),
        20_000,
        move |_| {
            // A client not seen before.
            let _ = persist_a.remove(&pkey);
            for k in &keys {
                let _ = flows_a.remove(k);
            }
        },
        |round, va, vb| {
            assert_eq!((va, vb), (XDP_REDIRECT, XDP_REDIRECT), "round {round}");
            let backends = keys.map(|k| flows_b.get(&k, 0).unwrap().backend_id);
            let pin = persist_b.get(&pkey, 0).unwrap().backend_id;
            if backends != [pin, pin] {
                wrong = Some((round, backends, pin));
            }
            wrong.is_none()
        },
    );
    assert_eq!(
        wrong, None,
        "(round, backend ids of the two flows, pinned backend id) after {rounds} rounds"
    );
}

/// Maps key IPv4 addresses in their IPv4-mapped IPv6 form, so an IPv6
/// packet carrying `::ffff:a.b.c.d` addresses has the very key of an IPv4
/// flow. Such packets are invalid on the wire (RFC 4291 §2.5.5.2; Linux
/// drops them) and must go to the kernel untouched: neither join an IPv4
/// client's flow (it used to be forwarded, an IPv6 frame with IPv4-mapped
/// addresses, out of the IPv4 next hop) nor start a flow of their own.
#[test]
fn ipv6_packets_with_ipv4_mapped_addresses_are_not_ipv4_flows() {
    let mut bed = Bed::new("v4m", CONFIG);
    let (v, _) = bed.run(&tcp4(CLIENT, 40000, VIP, 80, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    let mapped = |a: Ipv4Addr| a.to_ipv6_mapped();
    let cases = [
        (
            "data on the IPv4 flow's tuple",
            tcp6(mapped(CLIENT), 40000, mapped(VIP), 80, false, b"data"),
        ),
        ("RST on the IPv4 flow's tuple", {
            let mut f = tcp6(mapped(CLIENT), 40000, mapped(VIP), 80, false, b"");
            f[14 + 40 + 13] = 0x04;
            f
        }),
        (
            "SYN of a new tuple",
            tcp6(mapped(CLIENT), 40001, mapped(VIP), 80, true, b""),
        ),
        (
            "reply to the IPv4 FULLNAT address",
            tcp6(mapped(BACKEND), 8080, mapped(SNAT), 1024, false, b""),
        ),
    ];
    for (what, frame) in cases {
        let (v, out) = bed.run(&frame);
        assert_eq!(v, XDP_PASS, "{what}: verdict");
        assert_eq!(out, frame, "{what}: frame changed");
    }
    // An ICMPv6 error to an IPv6 VIP whose quote holds IPv4-mapped
    // addresses names an IPv4 flow's tuple too.
    let reply = tcp6(mapped(VIP), 80, mapped(CLIENT), 40000, false, b"");
    let mut err = Vec::new();
    PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv6(
            "fd00::fe".parse::<Ipv6Addr>().unwrap().octets(),
            "fd10::10".parse::<Ipv6Addr>().unwrap().octets(),
            64,
        )
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut err, &reply[14..])
        .unwrap();
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_PASS, "ICMPv6 quoting IPv4-mapped addresses: verdict");
    assert_eq!(
        out, err,
        "ICMPv6 quoting IPv4-mapped addresses: frame changed"
    );
    assert_eq!(bed.dp.flow_entries(), (1, 1), "only the IPv4 flow");
    // The IPv4 flow is intact (the RST above did not end it).
    let (v, out) = bed.run(&tcp4(CLIENT, 40000, VIP, 80, false, b"more"));
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(parse_checked(&out).dst, IpAddr::V4(BACKEND));
}

/// README: "Malformed or truncated headers: passed, counted as parse
/// errors". An IP header whose length field disagrees with the frame (a
/// packet cut short, a length that does not even cover the headers, an
/// IPv6 header that is not version 6) is one: Linux drops such packets,
/// and translating them would forward what the backend's kernel drops (and
/// mislead the MTU check, which reads the length field). Ethernet padding
/// behind a short packet is no such thing: the packet is forwarded.
#[test]
fn ip_lengths_that_disagree_with_the_frame_are_parse_errors() {
    let mut bed = Bed::new("len", CONFIG);
    let vip6: Ipv6Addr = "fd10::10".parse().unwrap();
    let client6: Ipv6Addr = "fd00::2".parse().unwrap();
    let v4_len = |frame: Vec<u8>, len: u16| {
        let mut f = frame;
        f[16..18].copy_from_slice(&len.to_be_bytes());
        fix_ipv4_checksum(&mut f);
        f
    };
    let v6_len = |frame: Vec<u8>, len: u16| {
        let mut f = frame;
        f[18..20].copy_from_slice(&len.to_be_bytes());
        f
    };
    let syn = tcp4(CLIENT, 40000, VIP, 80, true, b"");
    let data = tcp4(CLIENT, 40001, VIP, 80, false, b"hello");
    let syn6 = tcp6(client6, 40000, vip6, 80, true, b"");
    let mut version4 = syn6.clone();
    version4[14] = 0x40 | (version4[14] & 0x0f);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IPv4 total length past the frame", v4_len(syn.clone(), 140)),
        (
            "IPv4 total length short of the TCP header",
            v4_len(data.clone(), 30),
        ),
        ("IPv4 total length 0", v4_len(syn.clone(), 0)),
        (
            "IPv4 total length short of the UDP header",
            v4_len(udp4(CLIENT, 5000, VIP, 53, b"query"), 24),
        ),
        (
            "IPv6 payload length past the frame",
            v6_len(syn6.clone(), 60),
        ),
        (
            "IPv6 payload length 0 without a jumbo option",
            v6_len(syn6.clone(), 0),
        ),
        (
            "IPv6 payload length short of the TCP header",
            v6_len(syn6.clone(), 12),
        ),
        ("IPv6 EtherType, IP version 4", version4),
    ];
    for (what, frame) in cases {
        let before = bed.dp.counters().unwrap().parse_errors;
        let (v, out) = bed.run(&frame);
        assert_eq!(v, XDP_PASS, "{what}: verdict");
        assert_eq!(out, frame, "{what}: frame changed");
        assert_eq!(
            bed.dp.counters().unwrap().parse_errors,
            before + 1,
            "{what}: counted as a parse error"
        );
    }
    assert_eq!(bed.dp.flow_entries().0, 0, "nothing was scheduled");

    // A minimum-size Ethernet frame: a 54-byte SYN padded to 60 bytes.
    let mut padded = syn.clone();
    padded.resize(60, 0);
    let (v, out) = bed.run(&padded);
    assert_eq!(v, XDP_REDIRECT, "padded SYN");
    let o = parse_checked(&out);
    assert_eq!((o.dst, o.dport), (IpAddr::V4(BACKEND), 8080));
    // The same checks apply to replies.
    let reply = v4_len(tcp4(BACKEND, 8080, SNAT, o.sport, false, b"ok"), 100);
    let (v, out) = bed.run(&reply);
    assert_eq!(v, XDP_PASS, "reply with IPv4 total length past the frame");
    assert_eq!(out, reply, "reply with IPv4 total length past the frame");
    let mut padded = udp4(CLIENT, 5002, VIP, 53, b"q");
    padded.resize(60, 0);
    let (v, out) = bed.run(&padded);
    assert_eq!(v, XDP_REDIRECT, "padded UDP");
    assert_eq!(parse_checked(&out).dport, 5353);
    // Trailing bytes behind an IPv6 packet.
    let mut trailer = syn6.clone();
    trailer.extend_from_slice(&[0; 6]);
    let (v, out) = bed.run(&trailer);
    assert_eq!(v, XDP_REDIRECT, "IPv6 SYN with trailing bytes");
    assert_eq!(parse_checked(&out).dport, 8080);
}

/// A packet to a VIP from one of the load balancer's own addresses (a VIP,
/// a FULLNAT pool address) is spoofed: scheduled, its replies would be
/// addressed to the load balancer itself (a reply from VIP:53 to VIP:53
/// is a packet of the very same flow: routed back here, it goes to the
/// backend again, which answers again). Such new flows are dropped.
#[test]
fn new_flows_from_our_own_addresses_are_dropped() {
    let mut bed = Bed::new("spoof", CONFIG);
    let vip6: Ipv6Addr = "fd10::10".parse().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "UDP from the VIP's own port",
            udp4(VIP, 53, VIP, 53, b"query"),
        ),
        ("SYN from the VIP", tcp4(VIP, 80, VIP, 80, true, b"")),
        (
            "SYN from another VIP",
            tcp4(Ipv4Addr::new(10, 10, 0, 11), 80, VIP, 80, true, b""),
        ),
        (
            "SYN from a FULLNAT address",
            tcp4(SNAT, 1024, VIP, 80, true, b""),
        ),
        ("IPv6 SYN from the VIP", tcp6(vip6, 80, vip6, 80, true, b"")),
        (
            "IPv6 SYN from a FULLNAT address",
            tcp6("fd64::10".parse().unwrap(), 1024, vip6, 80, true, b""),
        ),
    ];
    for (what, frame) in cases {
        let (v, _) = bed.run(&frame);
        assert_eq!(v, XDP_DROP, "{what}");
    }
    assert_eq!(bed.dp.flow_entries(), (0, 0), "nothing was scheduled");
    assert_eq!(bed.dp.counters().unwrap().parse_errors, 6);
    // A client of the same listener is served as ever.
    let (v, _) = bed.run(&udp4(CLIENT, 53, VIP, 53, b"query"));
    assert_eq!(v, XDP_REDIRECT);
}

/// README: "Malformed or truncated headers: passed, counted as parse
/// errors". A TCP data offset below 5 words or past the segment, a UDP
/// length below 8 or past the datagram: Linux drops such a segment
/// (`tcp_v4_rcv`, `__udp4_lib_rcv`), so forwarding it would open a flow
/// (and take a FULLNAT source) for what no backend will ever accept. Not
/// a flow's packet either: an established flow's segment with a bad data
/// offset is not forwarded. An IPv6 UDP length of 0 is Linux's "as long
/// as the payload" (jumbograms): forwarded.
#[test]
fn bad_tcp_data_offsets_and_udp_lengths_are_parse_errors() {
    let mut bed = Bed::new("l4len", CONFIG);
    let vip6: Ipv6Addr = "fd10::10".parse().unwrap();
    let client6: Ipv6Addr = "fd00::2".parse().unwrap();
    // Data offset (in 32-bit words) of the TCP header at `l4`.
    let doff = |frame: Vec<u8>, l4: usize, words: u8| {
        let mut f = frame;
        f[l4 + 12] = words << 4;
        f
    };
    let udp_len = |frame: Vec<u8>, l4: usize, len: u16| {
        let mut f = frame;
        f[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
        f
    };
    let syn = tcp4(CLIENT, 40000, VIP, 80, true, b"");
    let query = udp4(CLIENT, 5000, VIP, 53, b"query");
    let syn6 = tcp6(client6, 40000, vip6, 80, true, b"");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("TCP data offset 0", doff(syn.clone(), 34, 0)),
        ("TCP data offset 4", doff(syn.clone(), 34, 4)),
        (
            "TCP data offset past the segment",
            doff(tcp4(CLIENT, 40000, VIP, 80, true, b"abcd"), 34, 7),
        ),
        ("UDP length 4", udp_len(query.clone(), 34, 4)),
        (
            "UDP length past the datagram",
            udp_len(query.clone(), 34, 14),
        ),
        ("IPv6 TCP data offset 3", doff(syn6.clone(), 54, 3)),
        ("IPv6 TCP data offset 15", doff(syn6.clone(), 54, 15)),
    ];
    for (what, frame) in cases {
        let before = bed.dp.counters().unwrap().parse_errors;
        let (v, out) = bed.run(&frame);
        assert_eq!(v, XDP_PASS, "{what}: verdict");
        assert_eq!(out, frame, "{what}: frame changed");
        assert_eq!(
            bed.dp.counters().unwrap().parse_errors,
            before + 1,
            "{what}: counted as a parse error"
        );
    }
    assert_eq!(bed.dp.flow_entries(), (0, 0), "nothing was scheduled");

    // An established flow's segment with a bad data offset, on the fast
    // path and on the slow path.
    assert_eq!(bed.run(&syn).0, XDP_REDIRECT);
    let data = tcp4(CLIENT, 40000, VIP, 80, false, b"hello");
    assert_eq!(bed.run(&data).0, XDP_REDIRECT);
    let bad = doff(data.clone(), 34, 2);
    let (v, out) = bed.run(&bad);
    assert_eq!((v, out), (XDP_PASS, bad.clone()), "established, offset 2");
    bed.take_out_slow_path();
    let (v, out) = bed.run(&bad);
    assert_eq!((v, out), (XDP_PASS, bad), "fast path, offset 2");
    assert_eq!(bed.run(&data).0, XDP_REDIRECT, "the flow goes on");

    // Still forwarded: a longer header with its options, a UDP length
    // short of the payload (the rest is trailer), an IPv6 UDP length 0.
    let udp6_listener = r#"
[[listener]]
name = "dns6"
vip = "fd10::10"
port = 53
protocol = "udp"
  [[listener.backend]]
  address = "fd00:1::2"
  port = 5353
"#;
    let mut bed = Bed::new("l4ok", &format!("{CONFIG}{udp6_listener}"));
    let mut opts = tcp4(CLIENT, 40001, VIP, 80, true, &[1, 1, 1, 0]);
    opts[34 + 12] = 6 << 4;
    fix_tcp_checksum(&mut opts);
    let (v, out) = bed.run(&opts);
    assert_eq!(v, XDP_REDIRECT, "TCP header with options");
    assert_eq!(parse_checked(&out).dport, 8080);
    let (v, _) = bed.run(&udp_len(query.clone(), 34, 10));
    assert_eq!(v, XDP_REDIRECT, "UDP length short of the payload");
    let (v, _) = bed.run(&udp_len(udp6(client6, 5000, vip6, 53, b"q"), 54, 0));
    assert_eq!(v, XDP_REDIRECT, "IPv6 UDP length 0");
    assert_eq!(bed.dp.counters().unwrap().parse_errors, 0);
}

/// A source no packet on the wire may carry: multicast, the limited
/// broadcast, "this network" (0.0.0.0/8) and loopback for IPv4; multicast,
/// loopback and the unspecified address for IPv6. Linux drops such
/// packets as martians before IPVS sees them; a router must not forward
/// them (RFC 1812 §5.3.7, RFC 4291 §2.5.2-3). Scheduled, such a flow's
/// answers (the backend's, translated back) would leave the load balancer
/// addressed to a multicast group or to the broadcast address. Dropped,
/// counted as parse errors, like the spoofed sources above.
#[test]
fn new_flows_from_martian_sources_are_dropped() {
    let mut bed = Bed::new("martian", CONFIG);
    let vip6: Ipv6Addr = "fd10::10".parse().unwrap();
    let v4 = |src: [u8; 4]| tcp4(Ipv4Addr::from(src), 40000, VIP, 80, true, b"");
    let v6 = |src: &str| tcp6(src.parse().unwrap(), 40000, vip6, 80, true, b"");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("multicast source", v4([224, 0, 0, 1])),
        ("multicast source 239/8", v4([239, 1, 2, 3])),
        ("limited broadcast source", v4([255, 255, 255, 255])),
        ("0.0.0.0 source", v4([0, 0, 0, 0])),
        ("0/8 source", v4([0, 1, 2, 3])),
        ("loopback source", v4([127, 0, 0, 1])),
        (
            "UDP from a multicast source",
            udp4(Ipv4Addr::new(224, 0, 0, 251), 5353, VIP, 53, b"query"),
        ),
        ("IPv6 multicast source", v6("ff02::1")),
        ("IPv6 loopback source", v6("::1")),
        ("IPv6 unspecified source", v6("::")),
    ];
    for (what, frame) in cases {
        let (v, _) = bed.run(&frame);
        assert_eq!(v, XDP_DROP, "{what}");
    }
    assert_eq!(bed.dp.flow_entries(), (0, 0), "nothing was scheduled");
    assert_eq!(bed.dp.counters().unwrap().parse_errors, 10);
    // Neighbouring unicast sources are clients as any.
    for src in [[223, 255, 255, 254], [1, 0, 0, 1], [128, 0, 0, 1]] {
        let (v, _) = bed.run(&v4(src));
        assert_eq!(v, XDP_REDIRECT, "{src:?}");
    }
    for src in ["fe80::1", "::2", "fd00::2"] {
        let (v, _) = bed.run(&v6(src));
        assert_eq!(v, XDP_REDIRECT, "{src}");
    }
}
