//! Packet-level tests (`BPF_PROG_TEST_RUN`) of the forwarding modes,
//! schedulers, persistence, ACLs and ICMP handling: output bytes and
//! checksums checked for every case.
mod xdp_support;

use etherparse::{
    Icmpv4Type, Icmpv6Type, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader,
};
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
name = "fullnat-udp"
vip = "10.10.0.10"
port = 53
protocol = "udp"
  [[listener.backend]]
  address = "10.0.1.2"
  port = 5353

[[listener]]
name = "fullnat-tcp"
vip = "10.10.0.10"
port = 80
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8080

[[listener]]
name = "nat"
vip = "10.10.0.10"
port = 81
forwarding = "nat"
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8081

[[listener]]
name = "dr"
vip = "10.10.0.10"
port = 82
forwarding = "dr"
  [[listener.backend]]
  address = "10.0.1.2"
  port = 82

[[listener]]
name = "wlc"
vip = "10.10.0.10"
port = 83
scheduler = "wlc"
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8083
  [[listener.backend]]
  address = "10.0.1.3"
  port = 8083

[[listener]]
name = "sticky"
vip = "10.10.0.10"
port = 84
scheduler = "maglev"
persistence = { mode = "source_ip", timeout = "60s" }
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8084
  [[listener.backend]]
  address = "10.0.1.3"
  port = 8084

[[listener]]
name = "allow"
vip = "10.10.0.10"
port = 85
acl = { mode = "allow", cidrs = ["10.0.0.0/24"] }
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8085

[[listener]]
name = "deny"
vip = "10.10.0.10"
port = 86
# "::/0": an IPv6 entry in a list shared with IPv6 listeners; it must
# not match IPv4 clients (stored IPv4-mapped in the trie).
acl = { mode = "deny", cidrs = ["10.0.0.2/32", "::/0"] }
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8086

[[listener]]
name = "rr"
vip = "10.10.0.10"
port = 87
scheduler = "wrr"
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8087
  [[listener.backend]]
  address = "10.0.1.3"
  port = 8087

[[listener]]
name = "web6"
vip = "fd10::10"
port = 80
  [[listener.backend]]
  address = "fd00:1::2"
  port = 8080

[[listener]]
name = "udp6"
vip = "fd10::10"
port = 53
protocol = "udp"
  [[listener.backend]]
  address = "fd00:1::2"
  port = 5353

[[listener]]
name = "nat6"
vip = "fd10::10"
port = 91
forwarding = "nat"
  [[listener.backend]]
  address = "fd00:1::2"
  port = 8091

[[listener]]
name = "dr6"
vip = "fd10::10"
port = 92
forwarding = "dr"
  [[listener.backend]]
  address = "fd00:1::2"
  port = 92
"#;

const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, 0x10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
const SNAT6: Ipv6Addr = Ipv6Addr::new(0xfd64, 0, 0, 0, 0, 0, 0, 0x10);
/// A router on the clients' side.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xfe);

/// A reload that changes a listener's forwarding mode applies to new
/// flows; an existing flow keeps the translation it started with on the
/// slow path as on the fast path (it used to get the new mode's: a `nat`
/// flow went out from 0.0.0.0:0 after a switch to `fullnat`).
#[test]
fn a_mode_change_applies_to_new_flows() {
    let mut bed = Bed::new("mode", CONFIG);
    let (v, _) = bed.run(&tcp4(CLIENT, 40000, VIP, 81, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    let nat_to_fullnat = CONFIG.replace(
        "port = 81\nforwarding = \"nat\"",
        "port = 81\nforwarding = \"fullnat\"",
    );
    assert_ne!(nat_to_fullnat, CONFIG);
    bed.reload(&nat_to_fullnat);
    // A FIN takes the slow path.
    let (v, out) = bed.run(&tcp4_fin(CLIENT, 40000, VIP, 81));
    assert_eq!(v, XDP_REDIRECT);
    let o = parse_checked(&out);
    assert_eq!(
        (o.src, o.sport),
        (IpAddr::V4(CLIENT), 40000),
        "old flow: nat"
    );
    let (v, out) = bed.run(&tcp4(CLIENT, 40001, VIP, 81, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(
        parse_checked(&out).src,
        IpAddr::V4(SNAT),
        "new flow: fullnat"
    );
}

/// A client that reuses its port for a new connection soon after a FIN
/// gets a fresh flow, not the closing one's 10 s timeout: idle for 11 s,
/// the new connection stays on its backend (`wrr` would move it).
#[test]
fn a_syn_reusing_a_closing_tuple_starts_a_fresh_flow() {
    use slb_common::Flow;
    let mut bed = Bed::new("reopen", CONFIG);
    assert_eq!(
        bed.run(&tcp4(CLIENT, 41000, VIP, 87, true, b"")).0,
        XDP_REDIRECT
    );
    assert_eq!(bed.run(&tcp4_fin(CLIENT, 41000, VIP, 87)).0, XDP_REDIRECT);
    let k = tcp_key4(CLIENT, 41000, VIP, 87);
    age::<Flow>(&bed, "FLOWS", &k, 2, |f| &mut f.seen_ns);
    let (v, out) = bed.run(&tcp4(CLIENT, 41000, VIP, 87, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    let reopened = parse_checked(&out).dst;
    age::<Flow>(&bed, "FLOWS", &k, 11, |f| &mut f.seen_ns);
    let (v, out) = bed.run(&tcp4(CLIENT, 41000, VIP, 87, false, b"GET /"));
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(
        parse_checked(&out).dst,
        reopened,
        "the open connection moved"
    );
}

/// Replies keep a flow alive while its client is quiet (a stream only the
/// backend sends): past the idle timeout by the client's side alone, the
/// flow stays on its backend (`wrr` would move it), in `fullnat` and
/// `nat`. Without recent replies it is scheduled afresh.
#[test]
fn replies_keep_a_quiet_clients_flow_alive() {
    use slb_common::Flow;
    let rr_nat = CONFIG.replace(
        "port = 87\nscheduler = \"wrr\"",
        "port = 87\nscheduler = \"wrr\"\nforwarding = \"nat\"",
    );
    assert_ne!(rr_nat, CONFIG);
    for (mode, config) in [("fullnat", CONFIG.to_owned()), ("nat", rr_nat)] {
        let mut bed = Bed::new(&format!("alive{}", &mode[..1]), &config);
        let to_backend = |bed: &mut Bed, syn: bool| {
            let (v, out) = bed.run(&tcp4(CLIENT, 42000, VIP, 87, syn, b"x"));
            assert_eq!(v, XDP_REDIRECT, "{mode}");
            parse_checked(&out)
        };
        let first = to_backend(&mut bed, true);
        let IpAddr::V4(backend) = first.dst else {
            panic!("{mode}: IPv4 expected")
        };
        let IpAddr::V4(src) = first.src else {
            panic!("{mode}: IPv4 expected")
        };
        let k = tcp_key4(CLIENT, 42000, VIP, 87);
        age::<Flow>(&bed, "FLOWS", &k, 901, |f| &mut f.seen_ns);
        // The backend has just replied.
        let reply = tcp4(backend, 8087, src, first.sport, false, b"data");
        assert_eq!(bed.run(&reply).0, XDP_REDIRECT, "{mode}: reply");
        assert_eq!(to_backend(&mut bed, false).dst, first.dst, "{mode}: moved");
        // Quiet both ways past the timeout: scheduled afresh (the other
        // backend, by wrr).
        age::<Flow>(&bed, "FLOWS", &k, 1802, |f| &mut f.seen_ns);
        let rk = tcp_key4(backend, 8087, src, first.sport);
        age::<slb_common::Reverse>(&bed, "REVERSE", &rk, 1802, |r| &mut r.seen_ns);
        bed.set_clock(2_000_000_000);
        assert_ne!(to_backend(&mut bed, false).dst, first.dst, "{mode}: kept");
    }
}

/// A half-closed connection (one FIN: the other side may still send) may
/// pause as long as an open one; once both sides sent a FIN it is
/// forgotten after 10 s idle (`wrr` then schedules the tuple afresh).
#[test]
fn a_half_closed_connection_lives_on_until_both_fins() {
    use slb_common::Flow;
    let mut bed = Bed::new("halfc", CONFIG);
    let (_, out) = bed.run(&tcp4(CLIENT, 44000, VIP, 87, true, b""));
    let o = parse_checked(&out);
    let IpAddr::V4(backend) = o.dst else {
        panic!("IPv4 expected")
    };
    let data = tcp4(CLIENT, 44000, VIP, 87, false, b"ack");
    let k = tcp_key4(CLIENT, 44000, VIP, 87);
    assert_eq!(bed.run(&tcp4_fin(CLIENT, 44000, VIP, 87)).0, XDP_REDIRECT);
    // The server takes a minute to answer: quiet both ways.
    let rk = tcp_key4(backend, 8087, SNAT, o.sport);
    age::<Flow>(&bed, "FLOWS", &k, 60, |f| &mut f.seen_ns);
    age::<slb_common::Reverse>(&bed, "REVERSE", &rk, 60, |r| &mut r.seen_ns);
    let (v, out) = bed.run(&data);
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(parse_checked(&out).dst, o.dst, "a half-closed flow moved");
    // Now the backend closes too; 11 s later the tuple is a new flow.
    let fin_back = tcp4_fin(backend, 8087, SNAT, o.sport);
    assert_eq!(bed.run(&fin_back).0, XDP_REDIRECT);
    age::<Flow>(&bed, "FLOWS", &k, 11, |f| &mut f.seen_ns);
    age::<slb_common::Reverse>(&bed, "REVERSE", &rk, 11, |r| &mut r.seen_ns);
    let (v, out) = bed.run(&data);
    assert_eq!(v, XDP_REDIRECT);
    assert_ne!(parse_checked(&out).dst, o.dst, "an ended flow was kept");
}

/// A backend removed by a reload keeps its flows (as IPVS keeps a deleted
/// real server's connections) but gets no new ones: a source-IP
/// persistence pin to it no longer holds.
#[test]
fn a_removed_backend_keeps_its_flows_and_loses_its_pins() {
    let mut bed = Bed::new("rmpin", CONFIG);
    let (v, out) = bed.run(&tcp4(CLIENT, 43000, VIP, 84, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    let pinned = parse_checked(&out).dst;
    let (gone, other) = if pinned == IpAddr::V4(BACKEND) {
        ("10.0.1.2", Ipv4Addr::new(10, 0, 1, 3))
    } else {
        ("10.0.1.3", BACKEND)
    };
    let removed = CONFIG.replace(
        &format!("  [[listener.backend]]\n  address = \"{gone}\"\n  port = 8084\n"),
        "",
    );
    assert_ne!(removed, CONFIG);
    bed.reload(&removed);
    let (v, out) = bed.run(&tcp4(CLIENT, 43001, VIP, 84, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(
        parse_checked(&out).dst,
        IpAddr::V4(other),
        "followed the pin"
    );
    // The flow it had goes on (a FIN: through the slow path).
    let (v, out) = bed.run(&tcp4_fin(CLIENT, 43000, VIP, 84));
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(parse_checked(&out).dst, pinned, "existing flow moved");
}

/// SPEC §3: a backend marked down by health checks gets no new flows, and
/// its existing flows are re-scheduled on their next packet (the client
/// would otherwise hang on a dead server), also when this CPU holds a
/// copy of the flow for the fast path. A flow of the other backend stays
/// where it is.
#[test]
fn a_backend_marked_down_loses_its_flows_on_their_next_packet() {
    use slb::planner::{BackendKey, Health};
    let mut bed = Bed::new("hcdown", CONFIG);
    let backend2 = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 3));
    // `rr` (port 87, wrr) alternates: flows on both backends.
    let mut on = std::collections::BTreeMap::new();
    for port in 41000..41004 {
        let (v, out) = bed.run(&tcp4(CLIENT, port, VIP, 87, true, b""));
        assert_eq!(v, XDP_REDIRECT);
        on.entry(parse_checked(&out).dst).or_insert(port);
    }
    let (Some(&on_a), Some(&on_b)) = (on.get(&IpAddr::V4(BACKEND)), on.get(&backend2)) else {
        panic!("wrr did not use both backends: {on:?}");
    };
    // Two data packets each: the second one is served from the copy.
    for _ in 0..2 {
        for (port, dst) in [(on_a, IpAddr::V4(BACKEND)), (on_b, backend2)] {
            let (v, out) = bed.run(&tcp4(CLIENT, port, VIP, 87, false, b"data"));
            assert_eq!(v, XDP_REDIRECT);
            assert_eq!(parse_checked(&out).dst, dst);
        }
    }

    // The checks mark 10.0.1.2 down: the agent applies it at once.
    let cfg = slb::config::parse(CONFIG).unwrap();
    let down = Health {
        down: [BackendKey {
            listener: "rr".into(),
            addr: "10.0.1.2:8087".parse().unwrap(),
        }]
        .into(),
    };
    bed.applier.change(&mut bed.dp, &cfg, &down).unwrap();

    // Its flow's next packet (no SYN, the connection goes on) and the
    // ones after: on the live backend. The other flow stays.
    for _ in 0..2 {
        let (v, out) = bed.run(&tcp4(CLIENT, on_a, VIP, 87, false, b"more"));
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(
            parse_checked(&out).dst,
            backend2,
            "flow left on a dead backend"
        );
        let (v, out) = bed.run(&tcp4(CLIENT, on_b, VIP, 87, false, b"more"));
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).dst, backend2);
    }
    // New flows: none to the down backend.
    for port in 41200..41210 {
        let (v, out) = bed.run(&tcp4(CLIENT, port, VIP, 87, true, b""));
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(
            parse_checked(&out).dst,
            backend2,
            "new flow to a down backend"
        );
    }
}

/// Moves the `seen_ns` of every source-IP persistence pin back by `secs`.
fn age_pins(bed: &Bed, secs: u64) {
    use aya::maps::{HashMap, Map, MapData};
    use slb_common::{Persist, PersistKey};
    let data = MapData::from_pin(bed.dp.pin_dir().join("PERSIST")).unwrap();
    let mut m: HashMap<_, PersistKey, Persist> = HashMap::try_from(Map::LruHashMap(data)).unwrap();
    let keys: Vec<PersistKey> = m.keys().map(Result::unwrap).collect();
    for k in keys {
        let mut v = m.get(&k, 0).unwrap();
        v.seen_ns -= secs * 1_000_000_000;
        m.insert(k, v, 0).unwrap();
    }
}

/// SPEC §3: source-IP persistence holds "until `timeout` passes without
/// traffic" (60 s on `sticky`), and no longer: pins made with equal
/// weights are then kept against a re-weighting that would hash most of
/// these clients elsewhere, until they have been idle past the timeout.
#[test]
fn a_persistence_pin_holds_until_its_timeout_and_not_after() {
    let mut bed = Bed::new("pintime", CONFIG);
    let client = |i: u8| Ipv4Addr::new(10, 0, 0, i);
    let dst = |bed: &mut Bed, i: u8, port: u16| {
        let (v, out) = bed.run(&tcp4(client(i), port, VIP, 84, true, b""));
        assert_eq!(v, XDP_REDIRECT);
        parse_checked(&out).dst
    };
    let pinned: Vec<u8> = (2..=250)
        .filter(|&i| dst(&mut bed, i, 42000) == IpAddr::V4(BACKEND))
        .collect();
    assert!(pinned.len() > 50, "{} clients on 10.0.1.2", pinned.len());
    // 10.0.1.2 keeps a weight (it is not drained) but hardly any slot.
    let reweighted = CONFIG.replace(
        "  address = \"10.0.1.2\"\n  port = 8084\n",
        "  address = \"10.0.1.2\"\n  port = 8084\n  weight = 1\n",
    );
    assert_ne!(reweighted, CONFIG);
    bed.reload(&reweighted);

    // Quiet for 59 s: every pin holds.
    age_pins(&bed, 59);
    for &i in &pinned {
        assert_eq!(dst(&mut bed, i, 42001), IpAddr::V4(BACKEND), "10.0.0.{i}");
    }
    // Those flows refreshed the pins: quiet for 61 s from now, they have
    // expired and the clients are scheduled afresh, most of them away.
    age_pins(&bed, 61);
    let moved = pinned
        .iter()
        .filter(|&&i| dst(&mut bed, i, 42002) != IpAddr::V4(BACKEND))
        .count();
    assert!(
        moved * 10 >= pinned.len() * 9,
        "only {moved} of {} expired pins were re-scheduled",
        pinned.len()
    );
}

/// A `nat` reverse entry is made of the client's and the backend's own
/// addresses: once its flow is over, the same tuple is plain traffic (the
/// client talking to the backend directly), passed untouched.
#[test]
fn nat_reply_tuple_of_an_ended_flow_is_not_translated() {
    use slb_common::{Flow, Reverse};
    let mut bed = Bed::new("natold", CONFIG);
    assert_eq!(
        bed.run(&tcp4(CLIENT, 40000, VIP, 81, true, b"")).0,
        XDP_REDIRECT
    );
    let reply = tcp4(BACKEND, 8081, CLIENT, 40000, false, b"hello");
    let (v, _) = bed.run(&reply);
    assert_eq!(v, XDP_REDIRECT, "a live flow's reply is translated");
    let k = tcp_key4(CLIENT, 40000, VIP, 81);
    let rk = tcp_key4(BACKEND, 8081, CLIENT, 40000);
    age::<Flow>(&bed, "FLOWS", &k, 3600, |f| &mut f.seen_ns);
    age::<Reverse>(&bed, "REVERSE", &rk, 3600, |r| &mut r.seen_ns);
    // This CPU's cached copy of the reply entry is only used within a
    // second of the agent's clock: move that on too.
    bed.set_clock(2_000_000_000);
    let (v, out) = bed.run(&reply);
    assert_eq!((v, out), (XDP_PASS, reply), "an hour after the flow ended");
}

/// The client's CPU refreshes a flow's stamp while a reply is handled on
/// another CPU, whose reading of the (coarse) clock may be a tick older:
/// a stamp ahead of the packet's time is a live flow. A `nat` reply
/// found the flow 584 years idle and was passed untranslated, so the
/// client got the backend's own address and answered with an RST.
#[test]
fn nat_reply_sees_a_flow_stamped_ahead_of_its_clock_as_live() {
    use slb_common::Flow;
    let mut bed = Bed::new("natahead", CONFIG);
    assert_eq!(
        bed.run(&tcp4(CLIENT, 40000, VIP, 81, true, b"")).0,
        XDP_REDIRECT
    );
    let k = tcp_key4(CLIENT, 40000, VIP, 81);
    // Ahead by more than a tick here, so that the kernel's clock cannot
    // catch up before the reply is handled.
    let data = aya::maps::MapData::from_pin(bed.dp.pin_dir().join("FLOWS")).unwrap();
    let mut flows: aya::maps::HashMap<_, slb_common::FlowKey, Flow> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).unwrap();
    let mut f = flows.get(&k, 0).unwrap();
    f.seen_ns += 500_000_000;
    flows.insert(k, f, 0).unwrap();
    // A FIN: handled by the slow path, which judges the flow.
    let (v, out) = bed.run(&tcp4_fin(BACKEND, 8081, CLIENT, 40000));
    assert_eq!(v, XDP_REDIRECT, "the reply of a live flow is translated");
    let r = parse_checked(&out);
    assert_eq!((r.src, r.sport), (IpAddr::V4(VIP), 81));
}

const XDP_TX: u32 = 3;
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);

#[test]
fn nat_rewrites_only_the_destination_and_translates_replies() {
    let mut bed = Bed::new("nat", CONFIG);
    let (v, out) = bed.run(&tcp4(CLIENT, 40000, VIP, 81, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    let o = parse_checked(&out);
    assert_eq!((o.src, o.sport), (IpAddr::V4(CLIENT), 40000), "source kept");
    assert_eq!((o.dst, o.dport), (IpAddr::V4(BACKEND), 8081));
    // The reply goes from the backend straight to the client's address.
    let (v, out) = bed.run(&tcp4(BACKEND, 8081, CLIENT, 40000, false, b"reply"));
    assert_eq!(v, XDP_REDIRECT);
    let r = parse_checked(&out);
    assert_eq!((r.src, r.sport), (IpAddr::V4(VIP), 81));
    assert_eq!((r.dst, r.dport), (IpAddr::V4(CLIENT), 40000));
    // Back out of the device the client's packets came in on, to the MAC
    // they came from (the FIB takes over at the first refresh).
    assert_eq!(r.dst_mac, IN_MAC_SRC);
    // Other traffic from the backend is not touched.
    let other = tcp4(BACKEND, 22, CLIENT, 5555, false, b"");
    let (v, out) = bed.run(&other);
    assert_eq!((v, out), (XDP_PASS, other.clone()));

    // Replies are translated by the fast path alone, like FULLNAT replies.
    bed.take_out_slow_path();
    let (v, out) = bed.run(&tcp4(BACKEND, 8081, CLIENT, 40000, false, b"more"));
    assert_eq!(v, XDP_REDIRECT, "without the slow path");
    let r2 = parse_checked(&out);
    assert_eq!(
        (r2.src, r2.sport, r2.dst, r2.dport),
        (r.src, r.sport, r.dst, r.dport)
    );
    let (v, out) = bed.run(&other);
    assert_eq!((v, out), (XDP_PASS, other), "no entry: passed");
}

#[test]
fn dr_changes_only_the_mac() {
    let mut bed = Bed::new("dr", CONFIG);
    let frame = tcp4(CLIENT, 40000, VIP, 82, true, b"");
    let (v, out) = bed.run(&frame);
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(out[..6], BACKEND_MAC);
    assert_eq!(out[6..12], bed.vb0_mac());
    assert_eq!(
        out[12..],
        frame[12..],
        "addresses, ports and checksums untouched"
    );
}

/// A `dr` packet towards a backend whose neighbour the kernel has not
/// resolved is dropped (it keeps the VIP as its destination: the kernel
/// would route it by the VIP), and counted as dropped (`fib_drop`), not
/// as handed to the kernel (`fib_pass`, which it used to be: an operator
/// looking for lost `dr` packets was told the kernel had them). IPv4 and
/// IPv6.
#[test]
fn dr_to_an_unresolved_neighbour_is_dropped_and_counted_as_dropped() {
    // The `dr` listeners' backends moved to addresses on the backend
    // side's networks that no neighbour entry resolves.
    let config = CONFIG
        .replace(
            "address = \"10.0.1.2\"\n  port = 82\n",
            "address = \"10.0.2.9\"\n  port = 82\n",
        )
        .replace(
            "address = \"fd00:1::2\"\n  port = 92\n",
            "address = \"fd00:1::9\"\n  port = 92\n",
        );
    assert_eq!(
        (
            config.matches("10.0.2.9").count(),
            config.matches("fd00:1::9").count()
        ),
        (1, 1)
    );
    let mut bed = Bed::new("drnn", &config);
    let vip6: Ipv6Addr = "fd10::10".parse().unwrap();
    let client6: Ipv6Addr = "fd00::2".parse().unwrap();
    for (i, frame) in [
        tcp4(CLIENT, 40000, VIP, 82, true, b""),
        tcp6(client6, 40000, vip6, 92, true, b""),
    ]
    .iter()
    .enumerate()
    {
        let (v, _) = bed.run(frame);
        assert_eq!(v, XDP_DROP, "frame {i}");
        let c = bed.dp.counters().unwrap();
        assert_eq!((c.fib_drop, c.fib_pass), (i as u64 + 1, 0), "frame {i}");
    }
}

#[test]
fn wlc_sends_new_flows_to_the_least_loaded_backend() {
    let mut bed = Bed::new("wlc", CONFIG);
    let mut seen = Vec::new();
    for port in 40000..40004 {
        let (v, out) = bed.run(&tcp4(CLIENT, port, VIP, 83, true, b""));
        assert_eq!(v, XDP_REDIRECT);
        seen.push(parse_checked(&out).dst);
    }
    let b1 = seen.iter().filter(|d| **d == IpAddr::V4(BACKEND)).count();
    assert_eq!(b1, 2, "equal weights alternate: {seen:?}");
    // Closing one backend's flows makes it the least loaded again.
    let first = seen[0];
    for (i, port) in (40000..40004).enumerate() {
        if seen[i] == first {
            let mut fin = tcp4(CLIENT, port, VIP, 83, false, b"");
            fin[14 + 20 + 13] |= 0x01; // FIN
            fix_tcp_checksum(&mut fin);
            bed.run(&fin);
        }
    }
    for port in 40010..40012 {
        let (_, out) = bed.run(&tcp4(CLIENT, port, VIP, 83, true, b""));
        assert_eq!(
            parse_checked(&out).dst,
            first,
            "the backend whose flows ended"
        );
    }
}

/// Short connections one after the other (each over before the next
/// starts) find every backend at zero active flows: a tie, which must
/// not always go to the first backend of the list. LVS spreads them by
/// its inactive-connection count, HAProxy's `leastconn` and nginx's
/// `least_conn` take tied servers in turn.
#[test]
fn wlc_spreads_ties_instead_of_always_taking_the_first() {
    let mut bed = Bed::new("wlctie", CONFIG);
    let mut first = 0;
    for port in 41000..41020 {
        let (v, out) = bed.run(&tcp4(CLIENT, port, VIP, 83, true, b""));
        assert_eq!(v, XDP_REDIRECT);
        if parse_checked(&out).dst == IpAddr::V4(BACKEND) {
            first += 1;
        }
        bed.run(&tcp4_rst(CLIENT, port, VIP, 83));
    }
    assert!(
        (8..=12).contains(&first),
        "20 sequential connections, equal weights: {first} on the first backend"
    );
}

/// A backend's active count taken below zero (a flow the agent's recount
/// left out ended) counts as zero, not as 4 billion.
#[test]
fn wlc_reads_a_count_below_zero_as_zero() {
    let mut bed = Bed::new("wlcneg", CONFIG);
    let mut seen = Vec::new();
    for port in 40000..40002 {
        let (_, out) = bed.run(&tcp4(CLIENT, port, VIP, 83, true, b""));
        seen.push(parse_checked(&out).dst);
    }
    // One flow each; then one backend's count goes to -1.
    assert_ne!(seen[0], seen[1]);
    let id = (0..64)
        .find(|&id| {
            bed.dp.backend(id).is_ok_and(|b| {
                u16::from_be(b.port) == 8083 && slb_common::addr::from_addr(&b.addr) == seen[0]
            })
        })
        .unwrap();
    let data = aya::maps::MapData::from_pin(bed.dp.pin_dir().join("ACTIVE")).unwrap();
    let mut active: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    active.set(id, u32::MAX, 0).unwrap();
    for port in 40010..40012 {
        let (_, out) = bed.run(&tcp4(CLIENT, port, VIP, 83, true, b""));
        assert_eq!(
            parse_checked(&out).dst,
            seen[0],
            "-1 reads as 0: least loaded"
        );
    }
}

#[test]
fn source_ip_persistence_keeps_a_client_on_one_backend() {
    let mut bed = Bed::new("per", CONFIG);
    let mut dsts = std::collections::BTreeSet::new();
    for port in 40000..40040 {
        let (v, out) = bed.run(&tcp4(CLIENT, port, VIP, 84, true, b""));
        assert_eq!(v, XDP_REDIRECT);
        dsts.insert(parse_checked(&out).dst);
    }
    assert_eq!(
        dsts.len(),
        1,
        "all flows of one client on one backend: {dsts:?}"
    );
    // Without persistence the same ports spread (sanity check of the test).
    let mut spread = std::collections::BTreeSet::new();
    for port in 40000..40040 {
        let (_, out) = bed.run(&tcp4(CLIENT, port, VIP, 83, true, b""));
        spread.insert(parse_checked(&out).dst);
    }
    assert_eq!(spread.len(), 2);
}

#[test]
fn acl_allow_and_deny_lists() {
    let mut bed = Bed::new("acl", CONFIG);
    let (v, _) = bed.run(&tcp4(CLIENT, 40000, VIP, 85, true, b""));
    assert_eq!(v, XDP_REDIRECT, "10.0.0.2 is in the allow-list");
    let (v, _) = bed.run(&tcp4(OTHER, 40000, VIP, 85, true, b""));
    assert_eq!(v, XDP_DROP, "10.9.9.9 is not");
    let (v, _) = bed.run(&tcp4(CLIENT, 40000, VIP, 86, true, b""));
    assert_eq!(v, XDP_DROP, "10.0.0.2 is in the deny-list");
    let (v, _) = bed.run(&tcp4(OTHER, 40001, VIP, 86, true, b""));
    assert_ne!(v, XDP_DROP, "10.9.9.9 is not");
    let st = |name: &str| {
        let (key, l) = bed
            .dp
            .listener_entries()
            .into_iter()
            .find(|(k, _)| u16::from_be(k.port) == if name == "allow" { 85 } else { 86 })
            .unwrap();
        let _ = key;
        bed.dp.listener_stats(l.id).unwrap()
    };
    assert_eq!(st("allow").drop_acl, 1);
    assert_eq!(st("deny").drop_acl, 1);
}

/// An ICMPv4 error from `from` to `to` quoting `quoted` (an IPv4 packet).
fn icmp4_error(from: Ipv4Addr, to: Ipv4Addr, icmp_type: Icmpv4Type, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv4(from.octets(), to.octets(), 64)
        .icmpv4(icmp_type)
        .write(&mut v, quoted)
        .unwrap();
    v
}

/// A "fragmentation needed" (next-hop MTU 1280) from `from` to `to`
/// quoting the first 28 bytes of an IPv4 packet.
fn frag_needed(from: Ipv4Addr, to: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    icmp4_error(
        from,
        to,
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1280 },
        ),
        quoted,
    )
}

/// An ICMPv6 "packet too big" (MTU 1280) from `from` to `to` quoting an
/// IPv6 packet.
fn too_big6(from: Ipv6Addr, to: Ipv6Addr, quoted: &[u8]) -> Vec<u8> {
    icmp6_error(from, to, Icmpv6Type::PacketTooBig { mtu: 1280 }, quoted)
}

/// Source and destination of the IPv4 header quoted in an ICMP error,
/// whose checksum must be right.
fn quoted_v4(q: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let inner = etherparse::Ipv4HeaderSlice::from_slice(q)
        .unwrap()
        .to_header();
    assert_eq!(
        inner.calc_header_checksum(),
        inner.header_checksum,
        "quoted IPv4 checksum"
    );
    (inner.source.into(), inner.destination.into())
}

/// Checks an ICMPv4 frame's checksums and returns (outer src, outer dst,
/// quoted packet headers).
fn icmp4_parts(frame: &[u8]) -> (IpAddr, IpAddr, Vec<u8>) {
    let p = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &p.net else {
        panic!("not IPv4")
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "outer IPv4 checksum"
    );
    let Some(TransportHeader::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP")
    };
    let payload = p.payload.slice();
    assert_eq!(
        icmp.checksum,
        icmp.icmp_type.calc_checksum(payload),
        "ICMP checksum"
    );
    (
        IpAddr::from(ip.source),
        IpAddr::from(ip.destination),
        payload.to_vec(),
    )
}

#[test]
fn port_unreachable_from_a_backend_reaches_the_client_about_its_own_packet() {
    let mut bed = Bed::new("pu", CONFIG);
    let query = udp4(CLIENT, 5000, VIP, 53, b"query");
    let (_, sent) = bed.run(&query);
    let o = parse_checked(&sent);
    assert_eq!((o.dst, o.dport), (IpAddr::V4(BACKEND), 5353));
    // The backend's error quotes the translated datagram (IP + 8 bytes).
    let quoted = &sent[14..14 + 28];
    let err = icmp4_error(
        BACKEND,
        SNAT,
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
        quoted,
    );
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "forwarded to the client");
    assert_eq!(out[..6], CLIENT_MAC);
    let (src, dst, q) = icmp4_parts(&out);
    assert_eq!((src, dst), (IpAddr::V4(VIP), IpAddr::V4(CLIENT)));
    // The quote now shows the client's datagram, checksums fixed.
    let inner = etherparse::Ipv4HeaderSlice::from_slice(&q)
        .unwrap()
        .to_header();
    assert_eq!(
        inner.calc_header_checksum(),
        inner.header_checksum,
        "quoted IPv4 checksum"
    );
    assert_eq!(
        (inner.source, inner.destination),
        (CLIENT.octets(), VIP.octets())
    );
    let udp = etherparse::UdpHeaderSlice::from_slice(&q[20..28])
        .unwrap()
        .to_header();
    assert_eq!((udp.source_port, udp.destination_port), (5000, 53));
    // The quoted UDP checksum is the one the client computed.
    assert_eq!(&q[20..28], &query[34..42]);
}

#[test]
fn fragmentation_needed_towards_a_client_reaches_the_backend() {
    let mut bed = Bed::new("fn", CONFIG);
    let (_, sent) = bed.run(&tcp4(CLIENT, 40000, VIP, 80, true, b""));
    let o = parse_checked(&sent);
    // The backend's reply, as translated towards the client.
    let (_, reply) = bed.run(&tcp4(BACKEND, 8080, SNAT, o.sport, false, b"data"));
    let r = parse_checked(&reply);
    assert_eq!(r.dst, IpAddr::V4(CLIENT));
    // A router on the client's side says it is too big.
    let err = frag_needed(Ipv4Addr::new(10, 0, 0, 254), VIP, &reply[14..14 + 28]);
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "forwarded to the backend");
    assert_eq!(out[..6], BACKEND_MAC);
    let (src, dst, q) = icmp4_parts(&out);
    assert_eq!((src, dst), (IpAddr::V4(SNAT), IpAddr::V4(BACKEND)));
    assert_eq!(quoted_v4(&q), (BACKEND, SNAT));
    assert_eq!(u16::from_be_bytes([q[20], q[21]]), 8080);
    assert_eq!(u16::from_be_bytes([q[22], q[23]]), o.sport);
    // The MTU is passed on unchanged.
    assert_eq!(
        u16::from_be_bytes([out[14 + 20 + 6], out[14 + 20 + 7]]),
        1280
    );
}

#[test]
fn packets_too_big_for_the_backend_link_are_answered_with_icmp() {
    let mut bed = Bed::with_backend_mtu("tb", CONFIG, 1400);
    let big = vec![7u8; 1400];
    let mut frame = tcp4(CLIENT, 40000, VIP, 80, false, &big);
    frame[14 + 6] = 0x40; // DF
    fix_ipv4_checksum(&mut frame);
    let (v, out) = bed.run(&frame);
    assert_eq!(v, XDP_TX, "answered back out of the client side");
    assert_eq!(out[..6], IN_MAC_SRC);
    let (src, dst, q) = icmp4_parts(&out);
    assert_eq!((src, dst), (IpAddr::V4(VIP), IpAddr::V4(CLIENT)));
    assert_eq!(&out[14 + 20..14 + 22], &[3, 4], "fragmentation needed");
    assert_eq!(u16::from_be_bytes([out[14 + 26], out[14 + 27]]), 1400);
    assert_eq!(
        &q[..28],
        &frame[14..42],
        "quotes the client's packet as sent"
    );
    // A packet that fits is forwarded.
    let (v, _) = bed.run(&tcp4(CLIENT, 40000, VIP, 80, false, &big[..1000]));
    assert_eq!(v, XDP_REDIRECT);

    // IPv6: packet too big.
    let client: Ipv6Addr = "fd00::2".parse().unwrap();
    let vip: Ipv6Addr = "fd10::10".parse().unwrap();
    let mut f6 = Vec::new();
    PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv6(client.octets(), vip.octets(), 64)
        .tcp(40000, 80, 1, 64000)
        .write(&mut f6, &big)
        .unwrap();
    let (v, out) = bed.run(&f6);
    assert_eq!(v, XDP_TX);
    let p = PacketHeaders::from_ethernet_slice(&out).unwrap();
    let Some(NetHeaders::Ipv6(ip, _)) = &p.net else {
        panic!("not IPv6")
    };
    assert_eq!((ip.source, ip.destination), (vip.octets(), client.octets()));
    let Some(TransportHeader::Icmpv6(icmp)) = &p.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(icmp.icmp_type, Icmpv6Type::PacketTooBig { mtu: 1400 });
    let want = icmp
        .icmp_type
        .calc_checksum(ip.source, ip.destination, p.payload.slice())
        .unwrap();
    assert_eq!(icmp.checksum, want, "ICMPv6 checksum");
}

/// What a change can write, as the program reads it: listener entries,
/// backend entries (of the ids in use here), the destination table.
fn map_state(
    bed: &Bed,
) -> (
    Vec<(slb_common::VipKey, slb_common::Listener)>,
    Vec<slb_common::Backend>,
    Vec<slb_common::DestSlot>,
) {
    let mut listeners = bed.dp.listener_entries();
    listeners.sort_by_key(|(k, _)| *k);
    let backends = (0..32).map(|id| bed.dp.backend(id).unwrap()).collect();
    (listeners, backends, bed.dp.dest_entries().unwrap())
}

/// A change that fails partway, after it wrote backend entries, a table
/// and listener entries (here: the flag a retired `nat` backend keeps
/// leaves the destination table one address short), is undone: the maps
/// hold exactly what they held, and the next change starts from there.
#[test]
fn a_change_that_fails_partway_leaves_the_maps_as_they_were() {
    use slb::planner::{self, Health};
    use slb_common::{addr::to_addr, hash::dest_slot, limits::DEST_PROBES};
    // Addresses whose first slot in the destination table is the same.
    let first = dest_slot(&to_addr("10.0.9.0".parse().unwrap()));
    let same_slot: Vec<Ipv4Addr> = (0u32..)
        .map(|i| Ipv4Addr::from(0x0a00_0900 + i))
        .filter(|ip| dest_slot(&to_addr((*ip).into())) == first)
        .take(DEST_PROBES as usize + 1)
        .collect();
    let config = |nat: &[Ipv4Addr], weight: u32, extra: bool| {
        let mut s = String::from(
            "[agent]\ninterfaces = [\"vc0\", \"vb0\"]\nprobe_source = [\"100.64.0.1\"]\n\
             local_addresses = [\"100.64.0.10\"]\nflow_table_size = 4096\nmaglev_table_size = 1021\n\
             [[listener]]\nname = \"web\"\nvip = \"10.10.0.10\"\nport = 80\n\
             [[listener.backend]]\naddress = \"10.0.1.2\"\nport = 8080\n\
             [[listener.backend]]\naddress = \"10.0.1.3\"\nport = 8080\n",
        );
        s += &format!("weight = {weight}\n");
        s +=
            "[[listener]]\nname = \"nat\"\nvip = \"10.10.0.10\"\nport = 81\nforwarding = \"nat\"\n";
        for ip in nat {
            s += &format!("[[listener.backend]]\naddress = \"{ip}\"\nport = 80\n");
        }
        if extra {
            s += "[[listener]]\nname = \"new\"\nvip = \"10.10.0.11\"\nport = 80\n\
                  [[listener.backend]]\naddress = \"10.0.1.3\"\nport = 8080\n";
        }
        s
    };
    let n = DEST_PROBES as usize;
    let running = config(&same_slot[..n], 1, false);
    let mut bed = Bed::new("rb", &running);
    let before = map_state(&bed);
    // The last address replaces one that keeps its flag: the plan's own
    // addresses fit, with the kept one they do not. The new weight, the
    // new listener and the new backend are written before that shows.
    let mut nat: Vec<Ipv4Addr> = same_slot[..n - 1].to_vec();
    nat.push(same_slot[n]);
    let failing = slb::config::parse(&config(&nat, 5, true)).unwrap();
    let health = Health::default();
    // The plan alone is fine.
    planner::plan(&failing, &mut bed.applier.ids.clone(), &health).unwrap();
    let err = bed
        .applier
        .change(&mut bed.dp, &failing, &health)
        .unwrap_err();
    assert!(err.to_string().contains("destination table"), "{err}");
    assert!(
        map_state(&bed) == before,
        "the failed change was not undone"
    );
    // From there, the running configuration is still the one applied:
    // applying it again changes nothing (same ids, same tables), and
    // writes nothing (every health change applies the whole file: with
    // 4096 backends that was 8192 system calls for one backend's state).
    let again = slb::config::parse(&running).unwrap();
    let cp = bed.dp.checkpoint();
    bed.applier.change(&mut bed.dp, &again, &health).unwrap();
    assert_eq!(bed.dp.written_since(&cp), 0, "a change to nothing wrote");
    bed.dp.release(cp);
    assert!(
        map_state(&bed) == before,
        "the applier lost the running ids"
    );
    // And a change that fits goes in.
    bed.reload(&config(&same_slot[..n], 5, true));
    let after = map_state(&bed);
    assert_eq!(after.0.len(), before.0.len() + 1);
    assert!(after.1 != before.1, "the change that fits was not written");
}

/// An ICMPv6 error from `from` to `to` quoting `quoted` (an IPv6 packet).
fn icmp6_error(from: Ipv6Addr, to: Ipv6Addr, icmp_type: Icmpv6Type, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv6(from.octets(), to.octets(), 64)
        .icmpv6(icmp_type)
        .write(&mut v, quoted)
        .unwrap();
    v
}

/// Checks an ICMPv6 frame's checksum (pseudo-header included) and returns
/// (outer src, outer dst, type, quoted packet).
fn icmp6_parts(frame: &[u8]) -> (IpAddr, IpAddr, Icmpv6Type, Vec<u8>) {
    let p = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv6(ip, _)) = &p.net else {
        panic!("not IPv6")
    };
    let Some(TransportHeader::Icmpv6(icmp)) = &p.transport else {
        panic!("not ICMPv6")
    };
    let payload = p.payload.slice();
    let want = icmp
        .icmp_type
        .calc_checksum(ip.source, ip.destination, payload)
        .unwrap();
    assert_eq!(icmp.checksum, want, "ICMPv6 checksum");
    (
        IpAddr::from(ip.source),
        IpAddr::from(ip.destination),
        icmp.icmp_type,
        payload.to_vec(),
    )
}

/// (source, destination, source port, destination port) of a quoted
/// IPv6 packet; a quoted UDP datagram's checksum is checked when the quote
/// holds all of it.
fn quoted6(q: &[u8]) -> (IpAddr, IpAddr, u16, u16) {
    let ip = etherparse::Ipv6HeaderSlice::from_slice(q)
        .unwrap()
        .to_header();
    let l4 = &q[40..];
    if ip.next_header == etherparse::IpNumber::UDP && l4.len() == ip.payload_length as usize {
        let udp = etherparse::UdpHeaderSlice::from_slice(l4)
            .unwrap()
            .to_header();
        assert_eq!(
            udp.checksum,
            udp.calc_checksum_ipv6(&ip, &l4[8..]).unwrap(),
            "quoted UDP checksum"
        );
    }
    (
        IpAddr::from(ip.source),
        IpAddr::from(ip.destination),
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

#[test]
fn ipv6_port_unreachable_from_a_backend_reaches_the_client() {
    let mut bed = Bed::new("pu6", CONFIG);
    let query = udp6(CLIENT6, 5000, VIP6, 53, b"query");
    let (v, sent) = bed.run(&query);
    assert_eq!(v, XDP_REDIRECT);
    let o = parse_checked(&sent);
    assert_eq!(
        (o.src, o.dst, o.dport),
        (IpAddr::V6(SNAT6), IpAddr::V6(BACKEND6), 5353)
    );
    // The backend quotes the whole translated datagram.
    let err = icmp6_error(
        BACKEND6,
        SNAT6,
        Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port),
        &sent[14..],
    );
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "forwarded to the client");
    assert_eq!(out[..6], CLIENT_MAC);
    let (src, dst, _, q) = icmp6_parts(&out);
    assert_eq!((src, dst), (IpAddr::V6(VIP6), IpAddr::V6(CLIENT6)));
    assert_eq!(
        quoted6(&q),
        (IpAddr::V6(CLIENT6), IpAddr::V6(VIP6), 5000, 53),
        "the client's own datagram"
    );
    assert_eq!(&q[40..], &query[14 + 40..], "as the client sent it");
}

#[test]
fn ipv6_packet_too_big_towards_a_client_reaches_the_backend() {
    let mut bed = Bed::new("ptb6", CONFIG);
    let (_, sent) = bed.run(&tcp6(CLIENT6, 40000, VIP6, 80, true, b""));
    let o = parse_checked(&sent);
    let (v, reply) = bed.run(&tcp6(BACKEND6, 8080, SNAT6, o.sport, false, &[1; 200]));
    assert_eq!(v, XDP_REDIRECT);
    let err = too_big6(ROUTER6, VIP6, &reply[14..]);
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "forwarded to the backend");
    assert_eq!(out[..6], BACKEND_MAC);
    let (src, dst, t, q) = icmp6_parts(&out);
    assert_eq!((src, dst), (IpAddr::V6(SNAT6), IpAddr::V6(BACKEND6)));
    assert_eq!(t, Icmpv6Type::PacketTooBig { mtu: 1280 }, "MTU unchanged");
    assert_eq!(
        quoted6(&q),
        (IpAddr::V6(BACKEND6), IpAddr::V6(SNAT6), 8080, o.sport),
        "the packet the backend sent"
    );
}

/// `nat`: the backend's error about the client's packet (client →
/// backend) reaches the client from the VIP, quoting client → VIP; a
/// client-side error about a reply (VIP → client) reaches the backend
/// quoting backend → client. IPv4 and IPv6.
#[test]
fn nat_icmp_errors_are_translated_both_ways() {
    let mut bed = Bed::new("nicmp", CONFIG);
    // IPv4.
    let (_, sent) = bed.run(&tcp4(CLIENT, 40000, VIP, 81, true, b""));
    assert_eq!(parse_checked(&sent).dst, IpAddr::V4(BACKEND));
    let err = icmp4_error(
        BACKEND,
        CLIENT,
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host),
        &sent[14..14 + 28],
    );
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "v4: to the client");
    let (src, dst, q) = icmp4_parts(&out);
    assert_eq!((src, dst), (IpAddr::V4(VIP), IpAddr::V4(CLIENT)));
    assert_eq!(quoted_v4(&q), (CLIENT, VIP));
    assert_eq!(&q[20..24], &[0x9c, 0x40, 0, 81], "ports 40000 → 81");

    let (_, reply) = bed.run(&tcp4(BACKEND, 8081, CLIENT, 40000, false, b"data"));
    assert_eq!(parse_checked(&reply).src, IpAddr::V4(VIP));
    let err = frag_needed(ROUTER, VIP, &reply[14..14 + 28]);
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "v4: to the backend");
    assert_eq!(out[..6], BACKEND_MAC);
    let (src, dst, q) = icmp4_parts(&out);
    assert_eq!((src, dst), (IpAddr::V4(ROUTER), IpAddr::V4(BACKEND)));
    assert_eq!(quoted_v4(&q), (BACKEND, CLIENT));
    assert_eq!(&q[20..24], &[0x1f, 0x91, 0x9c, 0x40], "ports 8081 → 40000");

    // IPv6.
    let (_, sent) = bed.run(&tcp6(CLIENT6, 40000, VIP6, 91, true, b""));
    assert_eq!(parse_checked(&sent).dst, IpAddr::V6(BACKEND6));
    let err = icmp6_error(
        BACKEND6,
        CLIENT6,
        Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Prohibited),
        &sent[14..],
    );
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "v6: to the client");
    let (src, dst, _, q) = icmp6_parts(&out);
    assert_eq!((src, dst), (IpAddr::V6(VIP6), IpAddr::V6(CLIENT6)));
    assert_eq!(
        quoted6(&q),
        (IpAddr::V6(CLIENT6), IpAddr::V6(VIP6), 40000, 91)
    );

    let (_, reply) = bed.run(&tcp6(BACKEND6, 8091, CLIENT6, 40000, false, b"data"));
    assert_eq!(parse_checked(&reply).src, IpAddr::V6(VIP6));
    let err = too_big6(ROUTER6, VIP6, &reply[14..]);
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "v6: to the backend");
    assert_eq!(out[..6], BACKEND_MAC);
    let (src, dst, _, q) = icmp6_parts(&out);
    assert_eq!((src, dst), (IpAddr::V6(ROUTER6), IpAddr::V6(BACKEND6)));
    assert_eq!(
        quoted6(&q),
        (IpAddr::V6(BACKEND6), IpAddr::V6(CLIENT6), 8091, 40000)
    );
}

/// Like its replies (`nat_reply_tuple_of_an_ended_flow_is_not_translated`),
/// a backend's ICMP error about client → backend is translated only while
/// the `nat` flow is alive: after it, the same tuple is the client talking
/// to the backend directly, and the error is about that traffic.
#[test]
fn nat_icmp_error_about_an_ended_flow_is_not_translated() {
    use slb_common::{Flow, Reverse};
    let mut bed = Bed::new("nicmpold", CONFIG);
    let (_, sent) = bed.run(&tcp4(CLIENT, 40000, VIP, 81, true, b""));
    let reply = tcp4(BACKEND, 8081, CLIENT, 40000, false, b"hello");
    assert_eq!(bed.run(&reply).0, XDP_REDIRECT);
    let err = icmp4_error(
        BACKEND,
        CLIENT,
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host),
        &sent[14..14 + 28],
    );
    assert_eq!(bed.run(&err).0, XDP_REDIRECT, "translated while alive");
    age::<Flow>(
        &bed,
        "FLOWS",
        &tcp_key4(CLIENT, 40000, VIP, 81),
        3600,
        |f| &mut f.seen_ns,
    );
    age::<Reverse>(
        &bed,
        "REVERSE",
        &tcp_key4(BACKEND, 8081, CLIENT, 40000),
        3600,
        |r| &mut r.seen_ns,
    );
    let (v, out) = bed.run(&err);
    assert_eq!((v, out), (XDP_PASS, err), "an hour after the flow ended");
}

/// `dr`: the backend answers the client directly, but an error about such
/// a reply (a router on the clients' side saying "too big") is addressed
/// to the VIP, so it reaches the load balancer. It goes on, unchanged, to
/// the flow's backend, which holds the VIP and lowers its path MTU (as
/// IPVS does); handed to the kernel, it would be routed towards the VIP's
/// route, never to the backend, and path MTU discovery would black-hole.
#[test]
fn dr_icmp_error_about_a_reply_reaches_the_backend() {
    let mut bed = Bed::new("dricmp", CONFIG);
    let (v, _) = bed.run(&tcp4(CLIENT, 40000, VIP, 82, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    // The backend's reply, sent straight to the client.
    let reply = tcp4(VIP, 82, CLIENT, 40000, false, &[1; 100]);
    let err = frag_needed(ROUTER, VIP, &reply[14..14 + 28]);
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "v4: forwarded to the backend");
    assert_eq!(out[..6], BACKEND_MAC);
    assert_eq!(out[6..12], bed.vb0_mac());
    assert_eq!(out[12..], err[12..], "v4: the error unchanged");

    let (v, _) = bed.run(&tcp6(CLIENT6, 40000, VIP6, 92, true, b""));
    assert_eq!(v, XDP_REDIRECT);
    let reply = tcp6(VIP6, 92, CLIENT6, 40000, false, &[1; 100]);
    let err = too_big6(ROUTER6, VIP6, &reply[14..]);
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "v6: forwarded to the backend");
    assert_eq!(out[..6], BACKEND_MAC);
    assert_eq!(out[12..], err[12..], "v6: the error unchanged");

    // An error about a tuple without a flow still goes to the kernel.
    let stray = tcp4(VIP, 82, CLIENT, 40999, false, b"");
    let err = frag_needed(ROUTER, VIP, &stray[14..14 + 28]);
    let (v, out) = bed.run(&err);
    assert_eq!((v, out), (XDP_PASS, err));
}

/// An ICMP error quoting an IPv4 fragment other than the first quotes no
/// transport header: the bytes where the ports would be are payload, and
/// must not be read as a flow's ports (here they are the translated
/// datagram's, as a crafted payload may make them). Passed untouched. An
/// error quoting a first fragment (more-fragments set, offset 0) still
/// has the ports and is translated.
#[test]
fn icmp_errors_quoting_a_later_fragment_are_not_translated() {
    let mut bed = Bed::new("ifrag", CONFIG);
    let (_, sent) = bed.run(&udp4(CLIENT, 5000, VIP, 53, b"query"));
    assert_eq!(parse_checked(&sent).dst, IpAddr::V4(BACKEND));
    let quote = |frags: u16| {
        let mut q = sent[14..14 + 28].to_vec();
        q[6..8].copy_from_slice(&frags.to_be_bytes());
        q[10..12].fill(0);
        let h = etherparse::Ipv4HeaderSlice::from_slice(&q[..20])
            .unwrap()
            .to_header();
        q[10..12].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
        icmp4_error(
            BACKEND,
            SNAT,
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
            &q,
        )
    };
    // Offset 1480 bytes (185 units of 8), last fragment.
    let later = quote(185);
    let (v, out) = bed.run(&later);
    assert_eq!(v, XDP_PASS, "later fragment quoted");
    assert_eq!(out, later, "later fragment quoted: frame changed");
    // Offset 0 with more fragments.
    let (v, out) = bed.run(&quote(0x2000));
    assert_eq!(v, XDP_REDIRECT, "first fragment quoted");
    let (src, dst, _) = icmp4_parts(&out);
    assert_eq!((src, dst), (IpAddr::V4(VIP), IpAddr::V4(CLIENT)));
}

/// Sets an IPv4 frame's fragment field (flags and offset) and fixes its
/// header checksum.
fn with_frags(frame: &[u8], frags: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[14 + 6..14 + 8].copy_from_slice(&frags.to_be_bytes());
    fix_ipv4_checksum(&mut f);
    f
}

/// Puts an 8-byte IPv6 extension header `next` (its own next-header byte
/// filled in) in front of an IPv6 frame's transport header.
fn with_ext6(frame: &[u8], next: u8, ext: [u8; 8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let inner = f[14 + 6];
    let plen = u16::from_be_bytes([f[14 + 4], f[14 + 5]]) + 8;
    f[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
    f[14 + 6] = next;
    let mut ext = ext;
    ext[0] = inner;
    f.splice(54..54, ext);
    f
}

/// README: IPv4 fragments, IPv4 options and IPv6 extension headers go to
/// the kernel unchanged, in every mode, also for a tuple with a live flow:
/// never forwarded half-translated, and a later fragment (no transport
/// header: the bytes where ports would be are payload) never matched to a
/// flow, here one whose ports the payload spells. A backend's fragmented
/// `nat` reply goes to the kernel too. DF alone is no fragment.
#[test]
fn fragments_options_and_extension_headers_go_to_the_kernel_in_every_mode() {
    let mut bed = Bed::new("frags", CONFIG);
    for (port, mode) in [(80u16, "fullnat"), (81, "nat"), (82, "dr")] {
        let syn = tcp4(CLIENT, 40000, VIP, port, true, b"");
        assert_eq!(bed.run(&syn).0, XDP_REDIRECT, "{mode}: flow");
        let data = tcp4(CLIENT, 40000, VIP, port, false, &[0; 64]);
        // A later fragment whose payload starts with the flow's ports.
        let mut later = tcp4(CLIENT, 40000, VIP, port, false, &[0; 64]);
        later.truncate(14 + 20 + 40);
        later[16..18].copy_from_slice(&60u16.to_be_bytes());
        let later = with_frags(&later, 185);
        let mut options = data.clone();
        options[14] = 0x46;
        options.splice(34..34, [1u8, 1, 1, 0]);
        let tot = u16::from_be_bytes([options[16], options[17]]) + 4;
        options[16..18].copy_from_slice(&tot.to_be_bytes());
        fix_ipv4_checksum(&mut options);
        let cases = [
            ("first fragment", with_frags(&data, 0x2000)),
            ("first fragment with DF", with_frags(&data, 0x6000)),
            ("later fragment spelling the ports", later),
            ("last fragment", with_frags(&data, 0x0010)),
            ("IPv4 options", options),
        ];
        for (what, frame) in cases {
            let before = bed.dp.counters().unwrap().unsupported;
            let (v, out) = bed.run(&frame);
            assert_eq!((v, &out), (XDP_PASS, &frame), "{mode}: {what}");
            assert_eq!(
                bed.dp.counters().unwrap().unsupported,
                before + 1,
                "{mode}: {what}: counted as unsupported"
            );
        }
        let (v, out) = bed.run(&with_frags(&data, 0x4000));
        assert_eq!(v, XDP_REDIRECT, "{mode}: DF only");
        if mode != "dr" {
            assert_eq!(parse_checked(&out).dst, IpAddr::V4(BACKEND));
        }
    }
    // nat: the backend's reply in fragments.
    let reply = tcp4(BACKEND, 8081, CLIENT, 40000, false, &[0; 64]);
    for frags in [0x2000u16, 185] {
        let frame = with_frags(&reply, frags);
        let (v, out) = bed.run(&frame);
        assert_eq!((v, out), (XDP_PASS, frame), "nat reply fragment {frags:#x}");
    }
    assert_eq!(bed.run(&reply).0, XDP_REDIRECT, "nat reply, whole");

    // IPv6: hop-by-hop (0), routing (43, type 4 with no segments left),
    // fragment (44) and destination options (60) before TCP.
    for (port, mode) in [(80u16, "fullnat"), (91, "nat"), (92, "dr")] {
        let syn = tcp6(CLIENT6, 40000, VIP6, port, true, b"");
        assert_eq!(bed.run(&syn).0, XDP_REDIRECT, "{mode}: IPv6 flow");
        let data = tcp6(CLIENT6, 40000, VIP6, port, false, b"data");
        let cases = [
            ("hop-by-hop", with_ext6(&data, 0, [0, 0, 1, 4, 0, 0, 0, 0])),
            ("routing", with_ext6(&data, 43, [0, 0, 4, 0, 0, 0, 0, 0])),
            ("fragment", with_ext6(&data, 44, [0, 0, 0, 1, 0, 0, 0, 7])),
            (
                "destination options",
                with_ext6(&data, 60, [0, 0, 1, 4, 0, 0, 0, 0]),
            ),
        ];
        for (what, frame) in cases {
            let (v, out) = bed.run(&frame);
            assert_eq!((v, &out), (XDP_PASS, &frame), "{mode}: IPv6 {what}");
        }
    }
    assert_eq!(bed.dp.counters().unwrap().parse_errors, 0);
}

/// ICMP the program has no business translating goes to the kernel
/// untouched: an echo request to a VIP (the VIP's host answers it, as with
/// LVS), an error about an ICMP message, an error about a tuple without a
/// flow, a quote cut short of the ports, an error with IPv4 options. Odd
/// but valid errors about a flow are translated, checksums right: a quote
/// holding only 8 bytes of TCP (RFC 792), "fragmentation needed" with a
/// next-hop MTU of 0 (RFC 1191's old routers), "packet too big" below
/// 1280 (the receiver's kernel judges it); the MTU is passed on as sent.
#[test]
fn odd_icmp_is_passed_or_translated_as_it_should() {
    let mut bed = Bed::new("oddicmp", CONFIG);
    let (_, sent) = bed.run(&tcp4(CLIENT, 40000, VIP, 80, true, b""));
    let o = parse_checked(&sent);
    let (_, reply) = bed.run(&tcp4(BACKEND, 8080, SNAT, o.sport, false, &[1; 100]));
    assert_eq!(parse_checked(&reply).dst, IpAddr::V4(CLIENT));

    let echo = {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
            .ipv4(CLIENT.octets(), VIP.octets(), 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut v, &[0; 56])
            .unwrap();
        v
    };
    let echo6 = {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
            .ipv6(CLIENT6.octets(), VIP6.octets(), 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut v, &[0; 56])
            .unwrap();
        v
    };
    // An echo reply from the VIP that the client's side says is
    // unreachable: an error about an ICMP message.
    let echo_reply = {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
            .ipv4(VIP.octets(), CLIENT.octets(), 64)
            .icmpv4_echo_reply(1, 1)
            .write(&mut v, &[0; 8])
            .unwrap();
        v
    };
    let about_icmp = frag_needed(ROUTER, VIP, &echo_reply[14..14 + 28]);
    let stray = tcp4(VIP, 80, CLIENT, 40999, false, b"");
    let about_nothing = frag_needed(ROUTER, VIP, &stray[14..14 + 28]);
    let short_quote = frag_needed(ROUTER, VIP, &reply[14..14 + 24]);
    let mut outer_options = frag_needed(ROUTER, VIP, &reply[14..14 + 28]);
    outer_options[14] = 0x46;
    outer_options.splice(34..34, [1u8, 1, 1, 0]);
    let tot = u16::from_be_bytes([outer_options[16], outer_options[17]]) + 4;
    outer_options[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_checksum(&mut outer_options);
    for (what, frame) in [
        ("echo request to the VIP", echo),
        ("IPv6 echo request to the VIP", echo6),
        ("error about an ICMP message", about_icmp),
        ("error about no flow", about_nothing),
        ("quote short of the ports", short_quote),
        ("error with IPv4 options", outer_options),
    ] {
        let (v, out) = bed.run(&frame);
        assert_eq!((v, &out), (XDP_PASS, &frame), "{what}");
    }
    assert_eq!(bed.dp.counters().unwrap().icmp_translated, 0);

    // Only 8 bytes of the reply's TCP header quoted, MTU 0.
    let err = icmp4_error(
        ROUTER,
        VIP,
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 0 },
        ),
        &reply[14..14 + 28],
    );
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "MTU 0: to the backend");
    let (src, dst, q) = icmp4_parts(&out);
    assert_eq!((src, dst), (IpAddr::V4(SNAT), IpAddr::V4(BACKEND)));
    assert_eq!(quoted_v4(&q), (BACKEND, SNAT));
    assert_eq!(
        &q[20..24],
        &[0x1f, 0x90, (o.sport >> 8) as u8, o.sport as u8]
    );
    assert_eq!(&out[14 + 26..14 + 28], &[0, 0], "MTU 0 passed on");
    // The backend's "port unreachable" about a datagram, 8 bytes of UDP.
    let (_, q4) = bed.run(&udp4(CLIENT, 5000, VIP, 53, b"query"));
    let err = icmp4_error(
        BACKEND,
        SNAT,
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
        &q4[14..14 + 28],
    );
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "port unreachable: to the client");
    let (src, dst, q) = icmp4_parts(&out);
    assert_eq!((src, dst), (IpAddr::V4(VIP), IpAddr::V4(CLIENT)));
    assert_eq!(quoted_v4(&q), (CLIENT, VIP));

    // IPv6 "packet too big" with an MTU below 1280.
    let (_, sent) = bed.run(&tcp6(CLIENT6, 40000, VIP6, 80, true, b""));
    let o6 = parse_checked(&sent);
    let (_, reply6) = bed.run(&tcp6(BACKEND6, 8080, SNAT6, o6.sport, false, &[1; 100]));
    let err = icmp6_error(
        ROUTER6,
        VIP6,
        Icmpv6Type::PacketTooBig { mtu: 1000 },
        &reply6[14..14 + 48],
    );
    let (v, out) = bed.run(&err);
    assert_eq!(v, XDP_REDIRECT, "IPv6 too big below 1280: to the backend");
    let (src, dst, t, q) = icmp6_parts(&out);
    assert_eq!((src, dst), (IpAddr::V6(SNAT6), IpAddr::V6(BACKEND6)));
    assert_eq!(t, Icmpv6Type::PacketTooBig { mtu: 1000 });
    assert_eq!(
        quoted6(&q),
        (IpAddr::V6(BACKEND6), IpAddr::V6(SNAT6), 8080, o6.sport)
    );
    assert_eq!(bed.dp.counters().unwrap().icmp_translated, 3);
}

/// The lookup tables the program reads are the planned ones, for every
/// listener, through changes that rewrite one listener's spare half after
/// another. `RING` holds 16 slots to an element and a table's size is
/// prime, so the elements at a table's ends are shared with the
/// neighbouring tables (live ones among them): a write must put their
/// slots back as they were.
#[test]
fn every_listener_reads_its_planned_table_through_changes_of_its_neighbours() {
    use slb::planner::{self, Health};
    let config = |w: [u32; 3]| {
        let mut s = String::from(
            "[agent]\ninterfaces = [\"vc0\", \"vb0\"]\nprobe_source = [\"100.64.0.1\"]\n\
             local_addresses = [\"100.64.0.10\"]\nflow_table_size = 4096\nmaglev_table_size = 1021\n",
        );
        for (i, (name, sched)) in [("a", "maglev"), ("b", "wrr"), ("c", "maglev")]
            .iter()
            .enumerate()
        {
            s += &format!(
                "[[listener]]\nname = \"{name}\"\nvip = \"10.10.0.10\"\nport = {}\nscheduler = \"{sched}\"\n",
                80 + i
            );
            for b in 0..3u32 {
                s += &format!(
                    "[[listener.backend]]\naddress = \"10.0.1.{}\"\nport = 80\nweight = {}\n",
                    2 + b,
                    1 + (w[i] + b) % 5
                );
            }
        }
        s
    };
    let mut bed = Bed::new("ring", &config([0, 0, 0]));
    // Each change alters one listener's weights: its table goes to its
    // spare half, between its own live half and a neighbour's.
    for w in [
        [1, 0, 0],
        [1, 1, 0],
        [1, 1, 1],
        [2, 1, 1],
        [2, 2, 1],
        [2, 2, 2],
    ] {
        let text = config(w);
        bed.reload(&text);
        let cfg = slb::config::parse(&text).unwrap();
        let plan = planner::plan(&cfg, &mut bed.applier.ids.clone(), &Health::default()).unwrap();
        let entries = bed.dp.listener_entries();
        for l in &plan.listeners {
            let (_, entry) = entries.iter().find(|(k, _)| *k == l.key).unwrap();
            let read = bed.dp.ring_slots(entry.ring_base, entry.ring_size).unwrap();
            assert!(*read == **l.table, "listener {} after {w:?}", l.name);
        }
    }
}
