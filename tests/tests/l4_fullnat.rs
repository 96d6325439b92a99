//! FULLNAT through real XDP on veth devices in network namespaces: real TCP
//! and UDP sockets on the client and the backends, the `slb` binary on the
//! load balancer.
use slb_tests::{
    config::{render, ListenerSpec},
    servers::{tcp_hello, udp_ask, NameServer},
    topology::{backend4, backend6, CLIENT4, LB4, PROBE4, PROBE6, SNAT4, SNAT6, VIP4, VIP6},
    Agent, Topology,
};
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

const T: Duration = Duration::from_secs(3);

/// Opens `n` connections to `vip` and counts the names that answered.
fn spread(t: &Topology, vip: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let (name, _) =
            tcp_hello(&t.client, vip, T).unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// Addresses a backend may see: the FULLNAT pool, and the health-check
/// source (which probes from the same 100.64.0.0/10 range).
fn snat_pool() -> Vec<IpAddr> {
    SNAT4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(SNAT6.iter().map(|a| IpAddr::V6(*a)))
        .chain([IpAddr::V4(PROBE4), IpAddr::V6(PROBE6)])
        .collect()
}

/// Each backend's count within 20 % of its weight share, or within 4.5
/// standard deviations of it where that is wider: every connection lands
/// on a backend independently (the Maglev table holds the weights
/// exactly), so a small share's count is binomial, and ±20 % of 100 is
/// only 2.2 of its deviations (a test failing one run in thirty). Equal
/// shares instead of weights 1, 2 and 3 would still be ~100 connections
/// off for two backends, far outside.
fn assert_weighted(counts: &BTreeMap<String, usize>, weights: &[(&str, u32)], n: usize) {
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    for (name, w) in weights {
        let p = *w as f64 / total as f64;
        let want = n as f64 * p;
        let tolerance = (0.2 * want).max(4.5 * (n as f64 * p * (1.0 - p)).sqrt());
        let got = *counts.get(*name).unwrap_or(&0) as f64;
        assert!(
            (got - want).abs() <= tolerance,
            "{name}: {got} connections, weight share says {want:.0} (±{tolerance:.0}): {counts:?}"
        );
    }
}

#[test]
fn tcp_weights_and_source_pool_v4() {
    let t = Topology::new("w4", 3).unwrap();
    let servers = t.tcp_servers(8080, false);
    let l = ListenerSpec::new("web", VIP4.into(), 80, "tcp")
        .backend(backend4(0).into(), 8080, 1)
        .backend(backend4(1).into(), 8080, 2)
        .backend(backend4(2).into(), 8080, 3);
    let _agent = Agent::start(&t.lb, "w4", |d| render(3, d, &[l])).unwrap();
    let n = 600;
    let counts = spread(&t, SocketAddr::new(VIP4.into(), 80), n);
    assert_weighted(&counts, &[("b1", 1), ("b2", 2), ("b3", 3)], n);
    let pool = snat_pool();
    for s in &servers {
        let peers = s.peers();
        assert!(!peers.is_empty(), "{} saw no connection", s.name);
        for p in peers {
            assert!(
                pool.contains(&p),
                "{} saw source {p}, not from the local-address pool",
                s.name
            );
        }
    }
}

#[test]
fn tcp_and_udp_over_ipv6() {
    let t = Topology::new("v6", 2).unwrap();
    let servers = t.tcp_servers(8080, true);
    let udp = t.udp_servers(5353, true);
    let tcp = ListenerSpec::new("web6", VIP6.into(), 80, "tcp")
        .backend(backend6(0).into(), 8080, 1)
        .backend(backend6(1).into(), 8080, 1);
    let dns = ListenerSpec::new("dns6", VIP6.into(), 53, "udp")
        .backend(backend6(0).into(), 5353, 1)
        .backend(backend6(1).into(), 5353, 1);
    let _agent = Agent::start(&t.lb, "v6", |d| render(2, d, &[tcp, dns])).unwrap();

    let counts = spread(&t, SocketAddr::new(VIP6.into(), 80), 200);
    assert_weighted(&counts, &[("b1", 1), ("b2", 1)], 200);
    let mut answers = BTreeMap::new();
    for i in 0..100 {
        let a = udp_ask(
            &t.client,
            SocketAddr::new(VIP6.into(), 53),
            format!("q{i}").as_bytes(),
            T,
        )
        .unwrap_or_else(|e| panic!("datagram {i}: {e:#}"));
        *answers.entry(a).or_insert(0) += 1;
    }
    assert_eq!(answers.len(), 2, "both UDP backends answer: {answers:?}");
    let pool = snat_pool();
    for s in servers.iter().chain(&udp) {
        for p in s.peers() {
            assert!(pool.contains(&p), "{} saw source {p}", s.name);
        }
    }
}

#[test]
fn udp_request_response_v4() {
    let t = Topology::new("u4", 2).unwrap();
    let udp = t.udp_servers(5353, false);
    let dns = ListenerSpec::new("dns", VIP4.into(), 53, "udp")
        .backend(backend4(0).into(), 5353, 1)
        .backend(backend4(1).into(), 5353, 1);
    let _agent = Agent::start(&t.lb, "u4", |d| render(2, d, &[dns])).unwrap();
    let mut answers = BTreeMap::new();
    for i in 0..200 {
        let a = udp_ask(
            &t.client,
            SocketAddr::new(VIP4.into(), 53),
            format!("q{i}").as_bytes(),
            T,
        )
        .unwrap_or_else(|e| panic!("datagram {i}: {e:#}"));
        *answers.entry(a).or_insert(0) += 1;
    }
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers.values().all(|&c| c >= 60), "{answers:?}");
    for s in &udp {
        for p in s.peers() {
            assert!(snat_pool().contains(&p), "{} saw source {p}", s.name);
        }
    }
}

#[test]
fn long_lived_connection_survives_adding_a_backend() {
    let t = Topology::new("ll", 3).unwrap();
    let _servers = t.tcp_servers(8080, false);
    let two = ListenerSpec::new("web", VIP4.into(), 80, "tcp")
        .backend(backend4(0).into(), 8080, 1)
        .backend(backend4(1).into(), 8080, 1);
    let three = two.clone().backend(backend4(2).into(), 8080, 1);
    let mut agent = Agent::start(&t.lb, "ll", |d| render(3, d, &[two])).unwrap();
    let vip = SocketAddr::new(VIP4.into(), 80);

    let (first, mut conn) = tcp_hello(&t.client, vip, T).unwrap();
    let echo = |conn: &mut std::net::TcpStream, msg: &str| {
        conn.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(String::from_utf8_lossy(&buf), msg);
    };
    echo(&mut conn, "before");

    let cfg = std::fs::read_to_string(&agent.config).unwrap();
    let dir = agent.dir().to_owned();
    let _ = cfg;
    let outcome = agent.reload(&render(3, &dir, &[three])).unwrap();
    assert!(outcome.contains("configuration reloaded"), "{outcome}");

    // The new backend gets new connections ...
    let counts = spread(&t, vip, 150);
    assert!(
        counts.get("b3").copied().unwrap_or(0) > 20,
        "b3 gets new flows: {counts:?}"
    );
    // ... and the old connection still talks to its backend.
    for i in 0..20 {
        echo(&mut conn, &format!("after-{i}"));
    }
    assert!(["b1", "b2"].contains(&first.as_str()));
}

#[test]
fn lb_own_address_still_reaches_its_stack() {
    let t = Topology::new("own", 1).unwrap();
    let _own = NameServer::tcp(&t.lb, SocketAddr::new(LB4.into(), 2222), "lb").unwrap();
    let l = ListenerSpec::new("web", VIP4.into(), 80, "tcp").backend(backend4(0).into(), 8080, 1);
    let _agent = Agent::start(&t.lb, "own", |d| render(1, d, &[l])).unwrap();
    for _ in 0..5 {
        let (name, _) = tcp_hello(&t.client, SocketAddr::new(LB4.into(), 2222), T).unwrap();
        assert_eq!(name, "lb");
    }
    // Ping from the client (ICMP is not for a VIP) also keeps working.
    t.client
        .exec("ping", &["-c", "1", "-W", "2", &LB4.to_string()])
        .unwrap();
    let _ = CLIENT4;
}

/// An IPv6 listener added by a reload forwards: the reload turns IPv6
/// forwarding on, as a start with that listener does.
#[test]
fn an_ipv6_listener_added_by_a_reload_forwards() {
    let t = Topology::new("r6", 1).unwrap();
    let _v4 = t.tcp_servers(8080, false);
    let _v6 = t.tcp_servers(8080, true);
    let web = ListenerSpec::new("web", VIP4.into(), 80, "tcp").backend(backend4(0).into(), 8080, 1);
    let web6 =
        ListenerSpec::new("web6", VIP6.into(), 80, "tcp").backend(backend6(0).into(), 8080, 1);
    let mut agent =
        Agent::start(&t.lb, "r6", |d| render(1, d, std::slice::from_ref(&web))).unwrap();
    let dir = agent.dir().to_owned();
    let out = agent.reload(&render(1, &dir, &[web, web6])).unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    let counts = spread(&t, SocketAddr::new(VIP6.into(), 80), 5);
    assert_eq!(counts.get("b1"), Some(&5), "{counts:?}");
}
