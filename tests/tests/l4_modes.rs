//! Forwarding modes, schedulers, persistence, ACLs and path MTU through
//! real XDP in the namespace test bed, with real TCP and UDP traffic.
use slb_tests::{
    config::{render, ListenerSpec},
    servers::{echo_bulk, tcp_hello, tcp_hello_from, udp_ask, HttpServer, NameServer},
    topology::{backend4, backend6, CLIENT4, CLIENT6, PROBE4, PROBE6, SNAT6, VIP4, VIP6},
    Agent, Topology,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

const T: Duration = Duration::from_secs(3);

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP4.into(), port)
}

fn listener(name: &str, port: u16, backend_port: u16, weights: &[u32]) -> ListenerSpec {
    let mut l = ListenerSpec::new(name, VIP4.into(), port, "tcp");
    for (i, w) in weights.iter().enumerate() {
        l = l.backend(backend4(i).into(), backend_port, *w);
    }
    l
}

fn count(t: &Topology, to: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for i in 0..n {
        let (name, _) =
            tcp_hello(&t.client, to, T).unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
        *c.entry(name).or_insert(0) += 1;
    }
    c
}

fn listener_status(agent: &Agent, name: &str) -> serde_json::Value {
    let s = agent.status().unwrap();
    s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap()
        .clone()
}

#[test]
fn nat_mode_keeps_the_client_address() {
    let t = Topology::new("nat", 2).unwrap();
    let tcp = t.tcp_servers(8080, false);
    let udp = t.udp_servers(5353, false);
    let web = listener("web", 80, 8080, &[1, 1]).extra("forwarding = \"nat\"");
    let mut dns = ListenerSpec::new("dns", VIP4.into(), 53, "udp").extra("forwarding = \"nat\"");
    for i in 0..2 {
        dns = dns.backend(backend4(i).into(), 5353, 1);
    }
    let _agent = Agent::start(&t.lb, "nat", |d| render(2, d, &[web, dns])).unwrap();
    let c = count(&t, vip(80), 100);
    assert_eq!(c.len(), 2, "{c:?}");
    let mut answers = BTreeSet::new();
    for i in 0..40 {
        answers.insert(udp_ask(&t.client, vip(53), format!("q{i}").as_bytes(), T).unwrap());
    }
    assert_eq!(answers.len(), 2);
    let client: IpAddr = CLIENT4.into();
    for s in tcp.iter().chain(&udp) {
        let peers = s.peers();
        assert!(peers.contains(&client), "{} saw {peers:?}", s.name);
        assert!(
            peers
                .iter()
                .all(|p| *p == client || *p == IpAddr::V4(PROBE4)),
            "{} saw {peers:?}",
            s.name
        );
    }
}

#[test]
fn dr_mode_replies_bypass_the_lb() {
    let t = Topology::new("dr", 2).unwrap();
    t.prepare_direct_routing(&[VIP4.into()]).unwrap();
    // Real servers listen on every address: the VIP (on lo) for clients,
    // their own address for health checks.
    let _s: Vec<_> = (0..2)
        .map(|i| {
            NameServer::tcp(
                &t.backends[i],
                "0.0.0.0:80".parse().unwrap(),
                &format!("b{}", i + 1),
            )
            .unwrap()
        })
        .collect();
    let web = listener("web", 80, 80, &[1, 1]).extra("forwarding = \"dr\"");
    let agent = Agent::start(&t.lb, "dr", |d| render(2, d, &[web])).unwrap();
    // The first health checks resolve the backends' neighbours (a DR
    // packet keeps the VIP as destination, so the kernel cannot forward it
    // while they are unknown).
    for i in 0..2 {
        let a = format!("{}:80", backend4(i));
        let start = std::time::Instant::now();
        while agent.backend_status("web", &a).unwrap()["reason"].is_null() {
            assert!(start.elapsed() < T, "{a} never probed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let c = count(&t, vip(80), 60);
    assert_eq!(c.len(), 2, "{c:?}");

    let rx_before: u64 = (1..=2)
        .map(|i| t.lb_rx_packets(&format!("be{i}")).unwrap())
        .sum();
    let (_, mut conn) = tcp_hello(&t.client, vip(80), T).unwrap();
    echo_bulk(&mut conn, 2_000_000).unwrap();
    let rx_after: u64 = (1..=2)
        .map(|i| t.lb_rx_packets(&format!("be{i}")).unwrap())
        .sum();
    // 2 MB echoed back is well over 1000 segments; what reached the LB from
    // the backends meanwhile is health-check traffic only.
    assert!(
        rx_after - rx_before < 100,
        "the LB received {} packets from the backends",
        rx_after - rx_before
    );
    let l = listener_status(&agent, "web");
    assert_eq!(l["counters"]["packets_out"], 0, "{l}");
    assert!(l["counters"]["packets_in"].as_u64().unwrap() > 1000, "{l}");
}

#[test]
fn schedulers_spread_by_weight() {
    let t = Topology::new("sch", 2).unwrap();
    let _a = t.tcp_servers(8080, false);
    let wrr = listener("wrr", 80, 8080, &[1, 3]).scheduler("wrr");
    let sh = listener("sh", 81, 8080, &[1, 1]).scheduler("sh");
    let wlc = listener("wlc", 82, 8080, &[1, 2]).scheduler("wlc");
    let _agent = Agent::start(&t.lb, "sch", |d| render(2, d, &[wrr, sh, wlc])).unwrap();

    let c = count(&t, vip(80), 200);
    // Each CPU walks the 1:3 sequence with its own position, so each is
    // off by at most one from the exact share.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c["b1"] + c["b2"], 200);
    assert!(
        c["b1"].abs_diff(50) <= cpus,
        "wrr 1:3 over 200 connections: {c:?}"
    );

    // sh: a client always lands on the same backend; clients spread.
    let clients = t.add_client_addrs(24).unwrap();
    let mut per_backend = BTreeMap::new();
    for c in &clients {
        let names: BTreeSet<String> = (0..4)
            .map(|_| tcp_hello_from(&t.client, *c, vip(81), T).unwrap().0)
            .collect();
        assert_eq!(names.len(), 1, "{c} moved between backends: {names:?}");
        *per_backend
            .entry(names.into_iter().next().unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(per_backend.len(), 2, "{per_backend:?}");

    // wlc: 30 long-lived connections end up 1:2 by weight.
    let mut open = Vec::new();
    let mut c = BTreeMap::new();
    for _ in 0..30 {
        let (name, conn) = tcp_hello(&t.client, vip(82), T).unwrap();
        *c.entry(name).or_insert(0) += 1;
        open.push(conn);
    }
    assert_eq!((c["b1"], c["b2"]), (10, 20), "{c:?}");
}

#[test]
fn source_ip_persistence_and_acls() {
    let t = Topology::new("pa", 3).unwrap();
    let _a = t.tcp_servers(8080, false);
    let sticky = listener("sticky", 80, 8080, &[1, 1, 1])
        .scheduler("maglev")
        .extra(r#"persistence = { mode = "source_ip", timeout = "30s" }"#);
    let allow = listener("allow", 81, 8080, &[1])
        .extra(r#"acl = { mode = "allow", cidrs = ["10.0.0.2/32"] }"#);
    let deny =
        listener("deny", 82, 8080, &[1]).extra(r#"acl = { mode = "deny", cidrs = ["10.0.0.2"] }"#);
    let agent = Agent::start(&t.lb, "pa", |d| render(3, d, &[sticky, allow, deny])).unwrap();

    let c = count(&t, vip(80), 50);
    assert_eq!(c.len(), 1, "one client, one backend: {c:?}");
    let others = t.add_client_addrs(12).unwrap();
    let mut seen = BTreeSet::new();
    for o in &others {
        let names: BTreeSet<String> = (0..3)
            .map(|_| tcp_hello_from(&t.client, *o, vip(80), T).unwrap().0)
            .collect();
        assert_eq!(names.len(), 1);
        seen.extend(names);
    }
    assert!(seen.len() >= 2, "clients spread over backends: {seen:?}");

    let short = Duration::from_millis(700);
    assert!(tcp_hello(&t.client, vip(81), T).is_ok(), "allowed");
    assert!(
        tcp_hello_from(&t.client, others[0], vip(81), short).is_err(),
        "not in the allow-list"
    );
    assert!(tcp_hello(&t.client, vip(82), short).is_err(), "denied");
    assert!(
        tcp_hello_from(&t.client, others[0], vip(82), T).is_ok(),
        "not in the deny-list"
    );
    assert!(
        listener_status(&agent, "allow")["counters"]["drop_acl"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(
        listener_status(&agent, "deny")["counters"]["drop_acl"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn path_mtu_discovery_through_the_lb() {
    let t = Topology::new("mtu", 1).unwrap();
    // The LB's link to the backend is narrower than the MSS the backend
    // advertises, so the client's full-size segments hit it.
    t.narrow_backend_path(0, 1400).unwrap();
    let _a = t.tcp_servers(8080, false);
    let web = listener("web", 80, 8080, &[1]);
    let agent = Agent::start(&t.lb, "mtu", |d| render(1, d, &[web])).unwrap();
    let (_, mut conn) = tcp_hello(&t.client, vip(80), T).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    echo_bulk(&mut conn, 1_000_000).unwrap();
    let s = agent.status().unwrap();
    assert!(
        s["global"]["icmp_too_big"].as_u64().unwrap() >= 1,
        "{}",
        s["global"]
    );
}

/// Established `nat` connections go on when their backend stops being a
/// `nat` backend, as a removed backend's flows do: b1 removed from the
/// listener, b2 kept while the listener switches to fullnat. Their
/// replies still come from the backends' addresses and must still be
/// translated back.
#[test]
fn nat_connections_survive_their_backend_leaving_nat() {
    use std::io::{Read, Write};
    let t = Topology::new("nx", 2).unwrap();
    let _tcp = t.tcp_servers(8080, false);
    let nat = listener("web", 80, 8080, &[1, 1]).extra("forwarding = \"nat\"");
    let mut agent = Agent::start(&t.lb, "nx", |d| render(2, d, &[nat])).unwrap();
    let dir = agent.dir().to_owned();
    let mut on = BTreeMap::new();
    for _ in 0..50 {
        let (name, c) = tcp_hello(&t.client, vip(80), T).unwrap();
        on.entry(name).or_insert(c);
    }
    assert_eq!(on.len(), 2, "one connection on each backend");
    let fullnat =
        ListenerSpec::new("web", VIP4.into(), 80, "tcp").backend(backend4(1).into(), 8080, 1);
    let out = agent.reload(&render(2, &dir, &[fullnat])).unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    // Past the once-a-second refresh of each flow in the slow path.
    std::thread::sleep(Duration::from_millis(1500));
    for (name, c) in &mut on {
        c.set_read_timeout(Some(T)).unwrap();
        c.write_all(b"after the reload").unwrap();
        let mut buf = [0u8; 16];
        c.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("connection to {name}: {e}"));
        assert_eq!(&buf, b"after the reload");
        // Not one segment lost on the way (a retransmission would hide
        // a packet translated for the listener's new mode).
        assert_eq!(retransmissions(c), 0, "connection to {name}");
    }
}

/// Segments the kernel retransmitted on `c` (TCP_INFO).
fn retransmissions(c: &std::net::TcpStream) -> u32 {
    use nix::libc;
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            c.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_total_retrans
}

/// A reload that takes an allow-list off a listener never refuses a client
/// both configurations admit: the listener stops checking before its
/// entries go. (Written the other way round, the listener checked an
/// emptied list until its own entry was rewritten, after the lookup tables
/// of every listener before it: here two new ones of 65537 slots.)
#[test]
fn removing_an_allow_list_refuses_no_admitted_client_meanwhile() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let t = Topology::new("ar", 1).unwrap();
    let _u = t.udp_servers(53, false);
    let dns = |port: u16, name: &str| {
        ListenerSpec::new(name, VIP4.into(), port, "udp").backend(backend4(0).into(), 53, 1)
    };
    let guarded = dns(53, "dns").extra(&format!(
        r#"acl = {{ mode = "allow", cidrs = ["{CLIENT4}/32"] }}"#
    ));
    let mut agent = Agent::start(&t.lb, "ar", |d| render(1, d, &[guarded])).unwrap();
    let dir = agent.dir().to_owned();
    assert_eq!(udp_ask(&t.client, vip(53), b"q", T).unwrap(), "u1");
    let next = render(1, &dir, &[dns(54, "big1"), dns(55, "big2"), dns(53, "dns")]);
    let (stop, sent) = (AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|s| {
        // New flows all along (a fresh source port each): only a new flow
        // is checked against the list.
        s.spawn(|| {
            t.client
                .enter(|| {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") {
                            if sock.send_to(b"q", vip(53)).is_ok() {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
                .unwrap()
        });
        let out = agent.reload(&next).unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(out.contains("configuration reloaded"), "{out}");
    });
    assert!(sent.load(Ordering::Relaxed) > 0);
    let drops = &listener_status(&agent, "dns")["counters"]["drop_acl"];
    assert_eq!(
        drops,
        0,
        "of {} new flows sent during the reload",
        sent.load(Ordering::Relaxed)
    );
}

fn vip6(port: u16) -> SocketAddr {
    SocketAddr::new(VIP6.into(), port)
}

/// A listener of `protocol` on `vip` to `port` of every backend of the
/// family, equal weights.
fn listener_to(
    name: &str,
    vip: SocketAddr,
    protocol: &'static str,
    backend_port: u16,
    n: usize,
) -> ListenerSpec {
    let mut l = ListenerSpec::new(name, vip.ip(), vip.port(), protocol);
    for i in 0..n {
        let b: IpAddr = if vip.is_ipv4() {
            backend4(i).into()
        } else {
            backend6(i).into()
        };
        l = l.backend(b, backend_port, 1);
    }
    l
}

fn udp_answers(t: &Topology, to: SocketAddr, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            udp_ask(&t.client, to, format!("q{i}").as_bytes(), T)
                .unwrap_or_else(|e| panic!("datagram {i} to {to}: {e:#}"))
        })
        .collect()
}

/// `nat` over IPv6, TCP and UDP, next to a `fullnat` listener on another
/// port of the same VIP: each listener translates its own way (the `nat`
/// backends see the client, the `fullnat` ones the local-address pool).
#[test]
fn nat_over_ipv6_next_to_fullnat_on_the_same_vip() {
    let t = Topology::new("n6", 2).unwrap();
    let nat_tcp = t.tcp_servers(8080, true);
    let full_tcp = t.tcp_servers(8081, true);
    let nat_udp = t.udp_servers(5353, true);
    let web = listener_to("web6", vip6(80), "tcp", 8080, 2).extra("forwarding = \"nat\"");
    let full = listener_to("full6", vip6(81), "tcp", 8081, 2);
    let dns = listener_to("dns6", vip6(53), "udp", 5353, 2).extra("forwarding = \"nat\"");
    let _agent = Agent::start(&t.lb, "n6", |d| render(2, d, &[web, full, dns])).unwrap();

    let c = count(&t, vip6(80), 40);
    assert_eq!(c.len(), 2, "{c:?}");
    let c = count(&t, vip6(81), 40);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(udp_answers(&t, vip6(53), 40).len(), 2);

    let client = IpAddr::V6(CLIENT6);
    for s in nat_tcp.iter().chain(&nat_udp) {
        let peers = s.peers();
        assert!(peers.contains(&client), "{} saw {peers:?}", s.name);
        assert!(
            peers
                .iter()
                .all(|p| *p == client || *p == IpAddr::V6(PROBE6)),
            "{} saw {peers:?}",
            s.name
        );
    }
    for s in &full_tcp {
        let peers = s.peers();
        assert!(
            peers
                .iter()
                .any(|p| SNAT6.iter().any(|a| *p == IpAddr::V6(*a))),
            "{} saw {peers:?}",
            s.name
        );
        assert!(!peers.contains(&client), "{} saw {peers:?}", s.name);
    }
}

/// Waits for the first health check of every backend of `listener`: in
/// `dr` mode those resolve the backends' neighbours.
fn wait_probed(agent: &Agent, listener: &str, addrs: &[String]) {
    for a in addrs {
        let start = std::time::Instant::now();
        while agent.backend_status(listener, a).unwrap()["reason"].is_null() {
            assert!(start.elapsed() < T, "{a} never probed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `dr` over IPv6 for TCP, and over IPv4 for UDP: the backends hold the
/// VIPs on `lo` and answer the client directly over their return links.
#[test]
fn dr_over_ipv6_and_udp_replies_bypass_the_lb() {
    let t = Topology::new("d6", 2).unwrap();
    t.prepare_direct_routing(&[VIP4.into(), VIP6.into()])
        .unwrap();
    let _tcp: Vec<_> = (0..2)
        .map(|i| {
            NameServer::tcp(
                &t.backends[i],
                "[::]:80".parse().unwrap(),
                &format!("b{}", i + 1),
            )
            .unwrap()
        })
        .collect();
    // A DR real server's UDP answer must come from the VIP: bound to it.
    let _udp: Vec<_> = (0..2)
        .map(|i| NameServer::udp(&t.backends[i], vip(53), &format!("u{}", i + 1)).unwrap())
        .collect();
    // What the UDP checks ask (at the backends' own addresses).
    let _probed = t.udp_servers(53, false);
    let web = listener_to("web6", vip6(80), "tcp", 80, 2).extra("forwarding = \"dr\"");
    let web4 = listener_to("web4", vip(80), "tcp", 80, 2).extra("forwarding = \"dr\"");
    let dns = listener_to("dns", vip(53), "udp", 53, 2).extra("forwarding = \"dr\"");
    let agent = Agent::start(&t.lb, "d6", |d| render(2, d, &[web, web4, dns])).unwrap();
    wait_probed(
        &agent,
        "web6",
        &(0..2)
            .map(|i| format!("[{}]:80", backend6(i)))
            .collect::<Vec<_>>(),
    );
    wait_probed(
        &agent,
        "web4",
        &(0..2)
            .map(|i| format!("{}:80", backend4(i)))
            .collect::<Vec<_>>(),
    );

    let rx = || -> u64 {
        (1..=2)
            .map(|i| t.lb_rx_packets(&format!("be{i}")).unwrap())
            .sum()
    };
    let rx_before = rx();
    let c = count(&t, vip6(80), 40);
    assert_eq!(c.len(), 2, "{c:?}");
    let (_, mut conn) = tcp_hello(&t.client, vip6(80), T).unwrap();
    echo_bulk(&mut conn, 300_000).unwrap();
    assert_eq!(udp_answers(&t, vip(53), 40).len(), 2);
    // Well over 300 packets answered; what reached the LB from the
    // backends meanwhile is health-check traffic only.
    assert!(
        rx() - rx_before < 100,
        "the LB received {} packets from the backends",
        rx() - rx_before
    );
    for name in ["web6", "dns"] {
        let l = listener_status(&agent, name);
        assert_eq!(l["counters"]["packets_out"], 0, "{l}");
        assert!(l["counters"]["packets_in"].as_u64().unwrap() >= 40, "{l}");
    }
}

/// A connection to `to` that landed on backend `name` (new ones until
/// one does).
fn tcp_on(t: &Topology, to: SocketAddr, name: &str) -> std::net::TcpStream {
    for _ in 0..200 {
        let (got, conn) = tcp_hello(&t.client, to, T).unwrap();
        if got == name {
            return conn;
        }
    }
    panic!("no connection to {to} landed on {name}");
}

/// A UDP socket of the client whose flow to `to` landed on backend `name`.
fn udp_on(t: &Topology, to: SocketAddr, name: &str) -> std::net::UdpSocket {
    let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    for _ in 0..200 {
        let sock = t
            .client
            .enter(|| std::net::UdpSocket::bind(bind))
            .unwrap()
            .unwrap();
        sock.set_read_timeout(Some(T)).unwrap();
        if udp_send_recv(&sock, to) == name {
            return sock;
        }
    }
    panic!("no UDP flow to {to} landed on {name}");
}

fn udp_send_recv(sock: &std::net::UdpSocket, to: SocketAddr) -> String {
    sock.send_to(b"q", to).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer from {to}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// SPEC §3: a backend marked down by its health checks loses its
/// established flows on their next packet, in every mode and family: a
/// TCP connection's next segment reaches the new backend, which resets
/// it (the client learns at once instead of talking on to a server the
/// checks gave up on); a UDP flow's next datagram is answered by a live
/// backend. Here the down backend's service stays up (only its check
/// endpoint fails), so a flow left on it would still be answered.
#[test]
fn flows_of_a_backend_marked_down_move_on_their_next_packet() {
    use std::io::{Read, Write};
    let t = Topology::new("mv", 2).unwrap();
    // Dual-stack servers: one for both families' listeners.
    let dual = |port: u16| SocketAddr::new("::".parse().unwrap(), port);
    let _tcp: Vec<_> = (0..2)
        .map(|i| NameServer::tcp(&t.backends[i], dual(8080), &format!("b{}", i + 1)).unwrap())
        .collect();
    let _udp: Vec<_> = (0..2)
        .map(|i| NameServer::udp(&t.backends[i], dual(5353), &format!("u{}", i + 1)).unwrap())
        .collect();
    let checks: Vec<_> = (0..2)
        .map(|i| HttpServer::start(&t.backends[i], dual(9000), 200).unwrap())
        .collect();
    let check = r#"health_check = { protocol = "http", port = 9000, interval = "1s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }"#;
    let tcp = [
        ("full4", vip(80), "fullnat"),
        ("nat4", vip(81), "nat"),
        ("nat6", vip6(81), "nat"),
    ];
    let udp = [("full6u", vip6(53), "fullnat"), ("nat4u", vip(54), "nat")];
    let mut specs = Vec::new();
    for (name, to, mode, proto, port) in tcp
        .iter()
        .map(|(n, v, m)| (n, v, m, "tcp", 8080))
        .chain(udp.iter().map(|(n, v, m)| (n, v, m, "udp", 5353)))
    {
        specs.push(
            listener_to(name, *to, proto, port, 2)
                .extra(&format!("forwarding = \"{mode}\""))
                .extra(check),
        );
    }
    let agent = Agent::start(&t.lb, "mv", |d| render(2, d, &specs)).unwrap();

    let mut on_b1: Vec<_> = tcp.iter().map(|(_, to, _)| tcp_on(&t, *to, "b1")).collect();
    let mut on_b2: Vec<_> = tcp.iter().map(|(_, to, _)| tcp_on(&t, *to, "b2")).collect();
    let udp_b1: Vec<_> = udp.iter().map(|(_, to, _)| udp_on(&t, *to, "u1")).collect();

    checks[0].set_status(503);
    for (name, to, _) in tcp.iter().chain(&udp) {
        let port = if tcp.iter().any(|l| l.0 == *name) {
            8080
        } else {
            5353
        };
        let b1 = SocketAddr::new(
            if to.is_ipv4() {
                backend4(0).into()
            } else {
                backend6(0).into()
            },
            port,
        );
        agent
            .wait_backend_state(name, &b1.to_string(), "down", Duration::from_secs(6))
            .unwrap();
    }

    for ((name, _, mode), conn) in tcp.iter().zip(&mut on_b1) {
        conn.set_read_timeout(Some(T)).unwrap();
        conn.write_all(b"still there?").unwrap();
        let mut buf = [0u8; 12];
        match conn.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{name} ({mode}): connection on the down backend got {other:?}"),
        }
    }
    for ((name, _, _), conn) in tcp.iter().zip(&mut on_b2) {
        conn.set_read_timeout(Some(T)).unwrap();
        conn.write_all(b"still there?").unwrap();
        let mut buf = [0u8; 12];
        conn.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: connection on the live backend: {e}"));
        assert_eq!(&buf, b"still there?");
    }
    for ((name, to, mode), sock) in udp.iter().zip(&udp_b1) {
        assert_eq!(udp_send_recv(sock, *to), "u2", "{name} ({mode})");
    }
}

/// `source_ip` persistence, `sh` and `wlc` over IPv6: each of several
/// client addresses stays on one backend (whole 128-bit addresses, not a
/// part of them: clients spread), and `wlc` splits long-lived connections
/// by weight.
#[test]
fn persistence_sh_and_wlc_over_ipv6() {
    let t = Topology::new("p6", 2).unwrap();
    let _a = t.tcp_servers(8080, true);
    let sticky = listener_to("sticky6", vip6(80), "tcp", 8080, 2)
        .extra(r#"persistence = { mode = "source_ip", timeout = "30s" }"#);
    let sh = listener_to("sh6", vip6(81), "tcp", 8080, 2).scheduler("sh");
    let wlc = listener_to("wlc6", vip6(82), "tcp", 8080, 0)
        .scheduler("wlc")
        .backend(backend6(0).into(), 8080, 1)
        .backend(backend6(1).into(), 8080, 2);
    let _agent = Agent::start(&t.lb, "p6", |d| render(2, d, &[sticky, sh, wlc])).unwrap();

    let clients = t.add_client_addrs6(12).unwrap();
    for port in [80, 81] {
        let mut seen = BTreeSet::new();
        for c in &clients {
            let names: BTreeSet<String> = (0..3)
                .map(|_| tcp_hello_from(&t.client, *c, vip6(port), T).unwrap().0)
                .collect();
            assert_eq!(names.len(), 1, "port {port}: {c} moved: {names:?}");
            seen.extend(names);
        }
        assert_eq!(seen.len(), 2, "port {port}: clients spread: {seen:?}");
    }

    let mut open = Vec::new();
    let mut c = BTreeMap::new();
    for _ in 0..30 {
        let (name, conn) = tcp_hello(&t.client, vip6(82), T).unwrap();
        *c.entry(name).or_insert(0) += 1;
        open.push(conn);
    }
    assert_eq!((c["b1"], c["b2"]), (10, 20), "{c:?}");
}

/// The `dr` side of `flows_of_a_backend_marked_down_move_on_their_next_packet`:
/// the next segment of a connection on the down backend reaches the live
/// one, whose reset goes straight to the client (IPv4 and IPv6).
#[test]
fn dr_flows_of_a_backend_marked_down_move_on_their_next_packet() {
    use std::io::{Read, Write};
    let t = Topology::new("dm", 2).unwrap();
    t.prepare_direct_routing(&[VIP4.into(), VIP6.into()])
        .unwrap();
    let any = |port: u16| SocketAddr::new("::".parse().unwrap(), port);
    let _tcp: Vec<_> = (0..2)
        .map(|i| NameServer::tcp(&t.backends[i], any(80), &format!("b{}", i + 1)).unwrap())
        .collect();
    let checks: Vec<_> = (0..2)
        .map(|i| HttpServer::start(&t.backends[i], any(9000), 200).unwrap())
        .collect();
    let check = r#"health_check = { protocol = "http", port = 9000, interval = "1s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }"#;
    let specs = [
        listener_to("web4", vip(80), "tcp", 80, 2),
        listener_to("web6", vip6(80), "tcp", 80, 2),
    ]
    .map(|l| l.extra("forwarding = \"dr\"").extra(check));
    let agent = Agent::start(&t.lb, "dm", |d| render(2, d, &specs)).unwrap();
    let b1 = [
        SocketAddr::new(backend4(0).into(), 80),
        SocketAddr::new(backend6(0).into(), 80),
    ];
    for (l, b) in ["web4", "web6"].iter().zip(b1) {
        wait_probed(&agent, l, &[b.to_string()]);
    }
    let mut on_b1 = [tcp_on(&t, vip(80), "b1"), tcp_on(&t, vip6(80), "b1")];

    checks[0].set_status(503);
    for (l, b) in ["web4", "web6"].iter().zip(b1) {
        agent
            .wait_backend_state(l, &b.to_string(), "down", Duration::from_secs(6))
            .unwrap();
    }
    for (l, conn) in ["web4", "web6"].iter().zip(&mut on_b1) {
        conn.set_read_timeout(Some(T)).unwrap();
        conn.write_all(b"still there?").unwrap();
        let mut buf = [0u8; 12];
        match conn.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{l}: connection on the down backend got {other:?}"),
        }
    }
}
