//! Operating the agent with real traffic in the namespace test bed: health
//! checks taking backends out and back, status and metrics agreeing with
//! the traffic sent, reloads and drains not disturbing established
//! connections, a restart with the dataplane kept running, and a standby
//! taking over established connections.
use slb_common::limits::LAYOUT_VERSION;
use slb_tests::{
    config::{render, unplaceable, ListenerSpec},
    servers::{tcp_hello, tcp_hello_from, udp_ask, HttpServer, NameServer},
    topology::{backend4, PROBE4, STANDBY_PROBE4, VIP4},
    Agent, Topology,
};
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

const T: Duration = Duration::from_secs(3);
const FAST_TCP_CHECK: &str = r#"health_check = { protocol = "tcp", interval = "1s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }"#;

fn vip() -> SocketAddr {
    SocketAddr::new(VIP4.into(), 80)
}

fn tcp_server(t: &Topology, i: usize) -> NameServer {
    NameServer::tcp(
        &t.backends[i],
        SocketAddr::new(backend4(i).into(), 8080),
        &format!("b{}", i + 1),
    )
    .unwrap()
}

fn web(n: usize, weights: &[u32]) -> ListenerSpec {
    let mut l = ListenerSpec::new("web", VIP4.into(), 80, "tcp")
        .scheduler("maglev")
        .extra(FAST_TCP_CHECK);
    for (i, w) in weights.iter().enumerate().take(n) {
        l = l.backend(backend4(i).into(), 8080, *w);
    }
    l
}

fn addr(i: usize) -> String {
    format!("{}:8080", backend4(i))
}

fn echo(conn: &mut TcpStream, msg: &str) {
    conn.write_all(msg.as_bytes()).unwrap();
    let mut buf = vec![0u8; msg.len()];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf), msg);
}

fn spread(t: &Topology, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let (name, _) =
            tcp_hello(&t.client, vip(), T).unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// Opens a connection that lands on backend `name` (retrying new ones).
fn connection_to(t: &Topology, name: &str) -> TcpStream {
    for _ in 0..200 {
        let (got, conn) = tcp_hello(&t.client, vip(), T).unwrap();
        if got == name {
            return conn;
        }
    }
    panic!("no connection landed on {name}");
}

#[test]
fn failed_backend_leaves_rotation_and_comes_back() {
    let t = Topology::new("hc", 3).unwrap();
    let _b1 = tcp_server(&t, 0);
    let b2 = tcp_server(&t, 1);
    let _b3 = tcp_server(&t, 2);
    let agent = Agent::start(&t.lb, "hc", |d| render(3, d, &[web(3, &[1, 1, 1])])).unwrap();
    // Wait for the first probe to confirm it (before that it is up but
    // unconfirmed, and has no reason yet).
    let start = Instant::now();
    while agent.backend_status("web", &addr(1)).unwrap()["reason"].is_null() {
        assert!(start.elapsed() < T, "never probed");
        std::thread::sleep(Duration::from_millis(50));
    }

    drop(b2);
    let killed = Instant::now();
    // interval × unhealthy_threshold + timeout = 1 s × 2 + 1 s.
    agent
        .wait_backend_state("web", &addr(1), "down", Duration::from_secs(6))
        .unwrap();
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(4), "marked down after {took:?}");
    let log = agent.log_text();
    assert!(
        log.contains(&format!("{} down: connect refused (2/2)", addr(1))),
        "{log}"
    );
    let b = agent.backend_status("web", &addr(1)).unwrap();
    assert_eq!(b["reason"], "connect refused (2/2)", "{b}");

    let counts = spread(&t, 100);
    assert!(!counts.contains_key("b2"), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 100);

    let _b2 = tcp_server(&t, 1);
    agent
        .wait_backend_state("web", &addr(1), "up", Duration::from_secs(5))
        .unwrap();
    assert!(agent
        .log_text()
        .contains(&format!("{} up: ok (2/2)", addr(1))));
    let counts = spread(&t, 100);
    assert!(counts.get("b2").copied().unwrap_or(0) > 10, "{counts:?}");
}

#[test]
fn checks_come_from_the_probe_source_with_the_configured_http_request() {
    let t = Topology::new("hh", 2).unwrap();
    let tcp = tcp_server(&t, 0);
    let http = HttpServer::start(
        &t.backends[1],
        SocketAddr::new(backend4(1).into(), 8080),
        200,
    )
    .unwrap();
    let tcp_l = ListenerSpec::new("tcpcheck", VIP4.into(), 80, "tcp")
        .extra(FAST_TCP_CHECK)
        .backend(backend4(0).into(), 8080, 1);
    let http_l = ListenerSpec::new("httpcheck", VIP4.into(), 81, "tcp")
        .extra(
            r#"health_check = { protocol = "http", method = "GET", host = "health.example", path = "/healthz?x=1", interval = "1s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }"#,
        )
        .backend(backend4(1).into(), 8080, 1);
    let agent = Agent::start(&t.lb, "hh", |d| render(2, d, &[tcp_l, http_l])).unwrap();
    std::thread::sleep(Duration::from_millis(2500));

    // No client traffic was sent: everything the backends saw is checks.
    let probe: IpAddr = PROBE4.into();
    assert!(tcp.count() >= 2, "tcp checks arrived");
    assert_eq!(tcp.peers().into_iter().collect::<Vec<_>>(), vec![probe]);
    let reqs = http.requests();
    assert!(reqs.len() >= 2);
    for (peer, head) in &reqs {
        assert_eq!(*peer, probe);
        assert!(head.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nhost: health.example"),
            "{head}"
        );
    }
    agent
        .wait_backend_state("httpcheck", &addr(1), "up", T)
        .unwrap();

    http.set_status(404);
    agent
        .wait_backend_state("httpcheck", &addr(1), "down", Duration::from_secs(5))
        .unwrap();
    let b = agent.backend_status("httpcheck", &addr(1)).unwrap();
    assert_eq!(b["reason"], "status 404 (2/2)", "{b}");
}

#[test]
fn udp_checks_detect_a_closed_port_and_keep_an_echo_service_up() {
    let t = Topology::new("hu", 2).unwrap();
    let _echo = NameServer::udp(
        &t.backends[0],
        SocketAddr::new(backend4(0).into(), 5353),
        "u1",
    )
    .unwrap();
    let check = r#"health_check = { protocol = "udp", interval = "1s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }"#;
    let dns = ListenerSpec::new("dns", VIP4.into(), 53, "udp")
        .extra(check)
        .backend(backend4(0).into(), 5353, 1)
        .backend(backend4(1).into(), 5353, 1);
    let agent = Agent::start(&t.lb, "hu", |d| render(2, d, &[dns])).unwrap();
    agent
        .wait_backend_state(
            "dns",
            &format!("{}:5353", backend4(1)),
            "down",
            Duration::from_secs(5),
        )
        .unwrap();
    let b = agent
        .backend_status("dns", &format!("{}:5353", backend4(1)))
        .unwrap();
    // Down at its first probe: the change as logged, `(1/1)`.
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("port unreachable") && reason.ends_with(" (1/1)"),
        "{b}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let up = agent
        .backend_status("dns", &format!("{}:5353", backend4(0)))
        .unwrap();
    assert_eq!(up["state"], "up", "{up}");
    // Every request now goes to the live backend.
    for i in 0..20 {
        let a = udp_ask(
            &t.client,
            SocketAddr::new(VIP4.into(), 53),
            format!("q{i}").as_bytes(),
            T,
        )
        .unwrap();
        assert_eq!(a, "u1");
    }
}

#[test]
fn weight_zero_drains_and_reloads_keep_established_connections() {
    let t = Topology::new("dr", 3).unwrap();
    let _s: Vec<_> = (0..3).map(|i| tcp_server(&t, i)).collect();
    let mut agent = Agent::start(&t.lb, "dr", |d| render(3, d, &[web(2, &[1, 1])])).unwrap();
    let dir = agent.dir().to_owned();
    let mut on_b1 = connection_to(&t, "b1");
    let mut on_b2 = connection_to(&t, "b2");
    echo(&mut on_b1, "hello");

    // Drain b1: new connections avoid it, the open one keeps working.
    let out = agent.reload(&render(3, &dir, &[web(2, &[0, 1])])).unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    agent
        .wait_backend_state("web", &addr(0), "drained", T)
        .unwrap();
    let counts = spread(&t, 60);
    assert_eq!(counts.get("b2"), Some(&60), "{counts:?}");
    echo(&mut on_b1, "still here");

    // Add b3, re-weight, remove b1 while the b2 connection is open.
    let three = ListenerSpec::new("web", VIP4.into(), 80, "tcp")
        .scheduler("maglev")
        .extra(FAST_TCP_CHECK)
        .backend(backend4(1).into(), 8080, 1)
        .backend(backend4(2).into(), 8080, 3);
    let out = agent
        .reload(&render(3, &dir, std::slice::from_ref(&three)))
        .unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    let counts = spread(&t, 120);
    assert!(counts.get("b3").copied().unwrap_or(0) > 60, "{counts:?}");
    for i in 0..10 {
        echo(&mut on_b2, &format!("unchanged backend {i}"));
    }

    // An invalid file is rejected with its errors; nothing changes.
    let before = agent.status().unwrap();
    std::fs::write(&agent.config, "[agent]\nbogus = 1\n").unwrap();
    let err = agent.cli(&["reload"]).unwrap_err().to_string();
    assert!(err.contains("bogus"), "{err}");
    let after = agent.status().unwrap();
    assert_eq!(before["generation"], after["generation"]);
    assert_eq!(
        before["listeners"][0]["backends"].as_array().unwrap().len(),
        2
    );
    echo(&mut on_b2, "after the rejected reload");

    // An `[agent]` setting only changes with a restart: the refusal names
    // it, with the value that stays in force.
    let resized =
        render(3, &dir, &[three]).replace("flow_table_size = 65536", "flow_table_size = 131072");
    std::fs::write(&agent.config, resized).unwrap();
    let err = agent.cli(&["reload"]).unwrap_err().to_string();
    assert!(
        err.contains("agent.flow_table_size") && err.contains("65536"),
        "{err}"
    );
    assert_eq!(agent.status().unwrap()["generation"], before["generation"]);
    echo(&mut on_b2, "after the refused [agent] change");
}

#[test]
fn status_and_metrics_agree_with_the_traffic_sent() {
    let t = Topology::new("st", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let agent = Agent::start(&t.lb, "st", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let n = 50;
    let counts = spread(&t, n);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tcp_hello(&t.client, vip(), T).unwrap().1);
    }
    let s = agent.status().unwrap();
    let web = &s["listeners"][0];
    assert_eq!(web["counters"]["conns"], (n + 3) as u64, "{web}");
    let per: u64 = web["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["counters"]["conns"].as_u64().unwrap())
        .sum();
    assert_eq!(per, (n + 3) as u64);
    let active: u64 = web["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["active_flows"].as_u64().unwrap())
        .sum();
    assert!(active >= 3, "the open connections are active: {web}");
    for (i, name) in ["b1", "b2"].iter().enumerate() {
        let b = &web["backends"][i];
        let sent = counts.get(*name).copied().unwrap_or(0) as u64;
        assert!(b["counters"]["conns"].as_u64().unwrap() >= sent, "{b}");
    }

    let text = Agent::metrics(&t.lb, "127.0.0.1:9470").unwrap();
    let line = format!(
        "slb_listener_connections_total{{listener=\"web\"}} {}",
        n + 3
    );
    assert!(text.contains(&line), "missing {line} in\n{text}");
    for (i, b) in web["backends"].as_array().unwrap().iter().enumerate() {
        let line = format!(
            "slb_backend_connections_total{{listener=\"web\",backend=\"{}\"}} {}",
            addr(i),
            b["counters"]["conns"]
        );
        assert!(text.contains(&line), "missing {line}");
        assert!(text.contains(&format!(
            "slb_backend_healthy{{listener=\"web\",backend=\"{}\",state=\"up\"}} 1",
            addr(i)
        )));
    }
    assert!(
        text.contains("slb_health_check_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("slb_config_generation 1"), "{text}");

    let table = agent.cli(&["status"]).unwrap();
    assert!(
        table.contains("TCP  10.10.0.10:80 maglev fullnat"),
        "{table}"
    );

    // The start said what the maps take, in the kernel's own figures: at
    // least the two connection tables' entries (65536 each, a 40-byte
    // key and a value besides).
    let log = agent.log_text();
    let said = log
        .lines()
        .find_map(|l| l.split("dataplane maps take ").nth(1))
        .unwrap_or_else(|| panic!("no memory line in\n{log}"));
    let mib = |name: &str| -> f64 {
        let at = said
            .find(&format!("{name} "))
            .map(|i| &said[i + name.len() + 1..]);
        at.and_then(|s| s.split(" MiB").next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {said}"))
    };
    let total: f64 = said.split(" MiB").next().unwrap().parse().unwrap();
    assert!(mib("FLOWS") >= 65536.0 * 40.0 / 1048576.0, "{said}");
    assert!(mib("REVERSE") >= 65536.0 * 40.0 / 1048576.0, "{said}");
    assert!(
        total >= mib("FLOWS") + mib("REVERSE") + mib("RING"),
        "{said}"
    );
}

#[test]
fn established_connection_survives_an_agent_restart_with_kept_dataplane() {
    let t = Topology::new("rs", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent =
        Agent::start_keeping(&t.lb, "rs", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let (name, mut conn) = tcp_hello(&t.client, vip(), T).unwrap();
    echo(&mut conn, "before");
    let status = agent.stop().unwrap();
    assert!(status.success(), "{}", agent.log_text());
    assert!(agent.log_text().contains("dataplane left running"));
    // No agent: the pinned program keeps forwarding.
    for i in 0..5 {
        echo(&mut conn, &format!("no agent {i}"));
    }
    agent.restart().unwrap();
    assert!(
        agent.log_text().contains("adopting pinned dataplane state"),
        "{}",
        agent.log_text()
    );
    for i in 0..5 {
        echo(&mut conn, &format!("new agent {i}"));
    }
    // The adopted flow kept its backend; new connections still work.
    let counts = spread(&t, 20);
    assert_eq!(counts.values().sum::<usize>(), 20);
    assert!(["b1", "b2"].contains(&name.as_str()));
}

/// README "Everyday operations", "The agent crashes": killed outright
/// (nothing of its shutdown runs), the agent leaves the pinned program
/// forwarding established and new connections by the last tables, and the
/// unit's restart adopts that state (its stale control socket replaced).
#[test]
fn a_crashed_agent_leaves_the_dataplane_forwarding_and_a_restart_adopts_it() {
    let t = Topology::new("cr", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent =
        Agent::start_keeping(&t.lb, "cr", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let (name, mut conn) = tcp_hello(&t.client, vip(), T).unwrap();
    echo(&mut conn, "before");
    agent.crash().unwrap();
    assert!(agent.control_socket().exists(), "a crash leaves the socket");
    for i in 0..5 {
        echo(&mut conn, &format!("crashed {i}"));
    }
    // New connections too, after the agent's clock has stood still for
    // over a second (the fast path steps aside, the slow path goes on).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(spread(&t, 20).values().sum::<usize>(), 20);

    agent.restart().unwrap();
    assert!(
        agent.log_text().contains("adopting pinned dataplane state"),
        "{}",
        agent.log_text()
    );
    echo(&mut conn, "restarted");
    // The new agent answers on the socket the dead one left behind.
    let status = agent.status().unwrap();
    assert_eq!(
        status["listeners"][0]["backends"][0]["state"], "up",
        "{status}"
    );
    let counts = spread(&t, 20);
    assert_eq!(counts.values().sum::<usize>(), 20);
    assert!(["b1", "b2"].contains(&name.as_str()));
}

/// SPEC §6: with a `pin_path` that is not on a bpffs the agent mounts one
/// there (in its own mount namespace under `ip netns exec`); a plain
/// SIGTERM detaches the program from every interface and removes the pins
/// (only `--keep-dataplane` leaves them, above).
#[test]
fn a_plain_stop_detaches_and_unpins() {
    let t = Topology::new("dt", 1).unwrap();
    let _s = tcp_server(&t, 0);
    let mut agent = Agent::start(&t.lb, "dt", |d| render(1, d, &[web(1, &[1])])).unwrap();
    let pin_path = agent.dir().join("bpf");
    let pid = agent.pid().unwrap();
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(&format!(" {} ", pin_path.display())) && l.contains(" - bpf ")),
        "no bpffs at {}:\n{mounts}",
        pin_path.display()
    );
    assert_eq!(attached(&t), t.lb_interfaces());
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
    assert!(
        attached(&t).is_empty(),
        "still attached: {:?}",
        attached(&t)
    );
    drop(agent);

    // Pins where the test can see them: there while running, gone after.
    let mut agent =
        Agent::start_pinned(&t.lb, "dt", &["run"], |d| render(1, d, &[web(1, &[1])])).unwrap();
    let pin_dir = agent.dir().join("bpf");
    let pins = || pins_in(&pin_dir);
    assert!(!pins().is_empty(), "nothing pinned");
    let (_, mut conn) = tcp_hello(&t.client, vip(), T).unwrap();
    echo(&mut conn, "before");
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
    assert_eq!(pins(), Vec::<String>::new(), "pins left behind");
    assert!(
        attached(&t).is_empty(),
        "still attached: {:?}",
        attached(&t)
    );
}

/// The LB's interfaces that run an XDP program.
fn attached(t: &Topology) -> Vec<String> {
    t.lb_interfaces()
        .into_iter()
        .filter(|i| {
            t.lb.ip(&["link", "show", "dev", i])
                .unwrap()
                .contains("xdp")
        })
        .collect()
}

/// A restart with the kept dataplane whose file no longer names an
/// interface detaches the previous run's link there. Left pinned, the
/// previous program went on running on it with tables nobody kept, and
/// not even a plain stop took it off (it detaches only its own links).
#[test]
fn an_interface_left_out_of_a_restart_is_detached() {
    let t = Topology::new("ri", 2).unwrap();
    let _s = tcp_server(&t, 0);
    let mut agent = Agent::start_keeping(&t.lb, "ri", |d| render(2, d, &[web(1, &[1])])).unwrap();
    let pin_dir = agent.dir().join("bpf");
    let (_, mut conn) = tcp_hello(&t.client, vip(), T).unwrap();
    echo(&mut conn, "before");
    assert_eq!(attached(&t), ["cl0", "be1", "be2"]);
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
    let all = std::fs::read_to_string(&agent.config).unwrap();
    let fewer = all.replace(", \"be2\"]", "]");
    assert_ne!(all, fewer);
    std::fs::write(&agent.config, fewer).unwrap();
    agent.restart().unwrap();
    assert_eq!(attached(&t), ["cl0", "be1"], "{}", agent.log_text());
    assert!(
        !pins_in(&pin_dir).contains(&"link_be2".to_owned()),
        "{:?}",
        pins_in(&pin_dir)
    );
    echo(&mut conn, "after the restart");
}

/// A restart with the kept dataplane after an interface was deleted and
/// created again (a driver reload, a re-created veth) attaches to the new
/// device. The kernel released the previous run's link with the old
/// device, and taking over its pin failed (`bpf_link_update`: ENOLINK) on
/// every start, until the operator removed the pin by hand.
#[test]
fn a_restart_after_an_interface_was_re_created_attaches_to_it() {
    let t = Topology::new("rc", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent =
        Agent::start_keeping(&t.lb, "rc", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let mut conn = connection_to(&t, "b1");
    echo(&mut conn, "before");
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
    t.recreate_backend_link(1).unwrap();
    agent.restart().unwrap();
    assert_eq!(attached(&t), t.lb_interfaces(), "{}", agent.log_text());
    // The flow through the kept interface carries on; b2 is reached
    // through the new device.
    echo(&mut conn, "after the restart");
    let mut conn2 = connection_to(&t, "b2");
    echo(&mut conn2, "through the new device");
}

/// `--keep-dataplane` with a `pin_path` that is not on a bpffs, under `ip
/// netns exec`: the bpffs the agent mounts there lives in the mount
/// namespace `ip netns exec` gave it and goes away with it (SPEC §6 note),
/// and the pinned links with it. The agent says so at start and at the
/// stop, where it claimed to leave the dataplane running for the next
/// agent to adopt while the program was in fact being detached.
#[test]
fn keep_dataplane_on_a_private_bpffs_says_it_cannot_keep_it() {
    let t = Topology::new("pk", 1).unwrap();
    let _s = tcp_server(&t, 0);
    let dir = slb_tests::agent::scratch_dir("pk").unwrap();
    let cfg = dir.join("slb.toml");
    std::fs::write(&cfg, render(1, &dir, &[web(1, &[1])])).unwrap();
    let mut agent = Agent::start_with(&t.lb, dir, cfg, &["run", "--keep-dataplane"]).unwrap();
    let mount = format!("mount -t bpf bpf {}", agent.dir().join("bpf").display());
    assert!(agent.log_text().contains(&mount), "{}", agent.log_text());
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
    let log = agent.log_text();
    assert!(!log.contains("dataplane left running"), "{log}");
    assert!(log.contains("detaching instead"), "{log}");
    assert!(attached(&t).is_empty(), "{:?}", attached(&t));
    agent.restart().unwrap();
    assert!(
        !agent.log_text().contains("adopting"),
        "{}",
        agent.log_text()
    );
}

/// The agent's pins in `pin_dir`. A fresh bpffs holds files of the
/// kernel's own (`maps.debug`, `progs.debug`), and iproute2 run by a test
/// in parallel may add its `tc` directory and `ip` and `xdp` links to it
/// to the first bpffs it finds mounted: the agent's pins are the other
/// (regular) files.
fn pins_in(pin_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(pin_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".debug"))
        .collect()
}

/// A fresh start that fails before it attached (here: its metrics port
/// is taken) removes the maps it pinned. Left behind, they made the next
/// start "adopt" a state nothing ever ran with, and refuse to start at
/// all when the operator also changed `flow_table_size` meanwhile.
#[test]
fn a_failed_fresh_start_leaves_no_pins() {
    let t = Topology::new("fp", 1).unwrap();
    let _s = tcp_server(&t, 0);
    let mut agent =
        Agent::start_pinned(&t.lb, "fp", &["run"], |d| render(1, d, &[web(1, &[1])])).unwrap();
    let pin_dir = agent.dir().join("bpf");
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
    assert_eq!(pins_in(&pin_dir), Vec::<String>::new());
    restart_fails_without_its_metrics_port(&t, &mut agent);
    assert_eq!(pins_in(&pin_dir), Vec::<String>::new(), "pins left behind");
    let cfg = std::fs::read_to_string(&agent.config).unwrap();
    let bigger = cfg.replace("flow_table_size = 65536", "flow_table_size = 131072");
    assert_ne!(cfg, bigger);
    std::fs::write(&agent.config, bigger).unwrap();
    agent.restart().unwrap();
    assert!(
        !agent.log_text().contains("adopting pinned dataplane state"),
        "{}",
        agent.log_text()
    );
    let (_, mut conn) = tcp_hello(&t.client, vip(), T).unwrap();
    echo(&mut conn, "after the failed start");
}

/// An upgrade to a build with another map layout: its start refuses the
/// pinned state and says what to do, while the kept dataplane goes on
/// forwarding. Done as it says (pins removed, start again), the new build
/// starts with an empty connection table and Maglev connections carry on,
/// rebuilt from their next packet as on a standby. The message said
/// "established flows are then lost" and told the operator to "start with
/// the settings it was created with", which no setting can do.
#[test]
fn another_map_layout_is_refused_and_a_fresh_start_keeps_maglev_connections() {
    let t = Topology::new("lv", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent =
        Agent::start_keeping(&t.lb, "lv", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let pin_dir = agent.dir().join("bpf");
    let mut conns: Vec<TcpStream> = (0..4)
        .map(|i| {
            tcp_hello(&t.client, vip(), T)
                .unwrap_or_else(|e| panic!("connection {i}: {e:#}"))
                .1
        })
        .collect();
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
    // A changed table size is refused naming the setting, not the map.
    let cfg = std::fs::read_to_string(&agent.config).unwrap();
    let bigger = cfg.replace("flow_table_size = 65536", "flow_table_size = 131072");
    assert_ne!(cfg, bigger);
    std::fs::write(&agent.config, bigger).unwrap();
    let err = format!("{:#}", agent.restart().unwrap_err());
    assert!(
        err.contains("created with agent.flow_table_size = 65536, this configuration has 131072"),
        "{err}"
    );
    std::fs::write(&agent.config, cfg).unwrap();
    // What the previous build wrote: its layout version in VERSION[0].
    let older = LAYOUT_VERSION - 1;
    let value: Vec<String> = older.to_le_bytes().iter().map(u8::to_string).collect();
    let mut args = vec!["map", "update", "pinned"];
    let version = pin_dir.join("VERSION");
    let version = version.to_str().unwrap();
    args.extend([version, "key", "0", "0", "0", "0", "value"]);
    args.extend(value.iter().map(String::as_str));
    slb_tests::sh("bpftool", &args).unwrap();

    let err = format!("{:#}", agent.restart().unwrap_err());
    let want = format!("map layout version {older}; this build uses {LAYOUT_VERSION}");
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains(&format!("remove {} and start again", pin_dir.display())),
        "{err}"
    );
    assert!(
        err.contains("flows of maglev and sh listeners carry on"),
        "{err}"
    );
    for (i, c) in conns.iter_mut().enumerate() {
        echo(c, &format!("connection {i} after the refused start"));
    }
    for name in pins_in(&pin_dir) {
        std::fs::remove_file(pin_dir.join(name)).unwrap();
    }
    agent.restart().unwrap();
    assert_eq!(
        agent
            .log_text()
            .matches("adopting pinned dataplane state")
            .count(),
        0,
        "{}",
        agent.log_text()
    );
    for (i, c) in conns.iter_mut().enumerate() {
        echo(c, &format!("connection {i} after the fresh start"));
    }
}

/// A standby with the same configuration and an empty connection table
/// takes over established connections, with no state handed over (no
/// connection-sync daemon): Maglev gives the same client tuple the same
/// backend, and the FULLNAT source is derived from the client tuple, so
/// the standby rebuilds each flow from its next packet exactly as the
/// primary had it. FULLNAT and `nat` listeners, and one with source-IP
/// persistence (a client's connections follow its pin on the primary; the
/// standby has no pin and must pick the same backend for each).
#[test]
fn a_standby_with_an_empty_table_takes_over_established_connections() {
    let t = Topology::new("to", 2).unwrap();
    let lb2 = t.add_standby("to").unwrap();
    let _servers = t.tcp_servers(8080, false);
    let mut nat = ListenerSpec::new("webnat", VIP4.into(), 81, "tcp")
        .scheduler("maglev")
        .extra("forwarding = \"nat\"");
    for i in 0..2 {
        nat = nat.backend(backend4(i).into(), 8080, 1);
    }
    let mut sticky = ListenerSpec::new("sticky", VIP4.into(), 82, "tcp")
        .scheduler("maglev")
        .extra("persistence = { mode = \"source_ip\", timeout = \"1000s\" }");
    for i in 0..2 {
        sticky = sticky.backend(backend4(i).into(), 8080, 1);
    }
    let listeners = [web(2, &[1, 1]), nat, sticky];
    let mut primary = Agent::start(&t.lb, "to1", |d| render(2, d, &listeners)).unwrap();
    // The standby only differs in its health-check source.
    let _standby = Agent::start(&lb2, "to2", |d| {
        render(2, d, &listeners).replace(&format!("\"{PROBE4}\""), &format!("\"{STANDBY_PROBE4}\""))
    })
    .unwrap();

    // (what, backend, connection)
    let mut conns: Vec<(String, String, TcpStream)> = Vec::new();
    for port in [80, 81] {
        for i in 0..8 {
            let (name, c) = tcp_hello(&t.client, SocketAddr::new(VIP4.into(), port), T)
                .unwrap_or_else(|e| panic!("port {port}, connection {i}: {e:#}"));
            conns.push((format!("port {port}, connection {i}"), name, c));
        }
    }
    // Two connections from each of 6 client addresses: the second follows
    // the pin the first one made.
    for from in t.add_client_addrs(6).unwrap() {
        let mut first = None;
        for i in 0..2 {
            let (name, c) = tcp_hello_from(&t.client, from, SocketAddr::new(VIP4.into(), 82), T)
                .unwrap_or_else(|e| panic!("{from}, connection {i}: {e:#}"));
            assert_eq!(
                *first.get_or_insert(name.clone()),
                name,
                "{from}: not pinned"
            );
            conns.push((format!("{from}, connection {i}"), name, c));
        }
    }
    for (_, _, c) in &mut conns {
        echo(c, "via the primary");
    }
    let names: std::collections::BTreeSet<&str> =
        conns.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 2, "all connections on one backend: {names:?}");

    // The primary goes away (its program detached, its table gone), and
    // the VIP and the pool move to the standby.
    let status = primary.stop().unwrap();
    assert!(status.success(), "{}", primary.log_text());
    t.fail_over().unwrap();
    let rx_before = lb2.rx_packets("cl0").unwrap();
    // Last first: on the standby each client's second connection comes
    // back before its first, so it, not the pin's maker, decides the
    // standby's pin.
    for (what, name, c) in conns.iter_mut().rev() {
        // A backend handed a different tuple mid-stream answers with a
        // RST: the echo fails.
        c.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 64];
        c.write_all(b"via the standby").unwrap();
        let n = c.read(&mut buf).unwrap_or_else(|e| {
            panic!("{what}: connection to {name} broken after the failover: {e}")
        });
        assert_eq!(&buf[..n], b"via the standby", "{what}, {name}");
    }
    assert!(
        lb2.rx_packets("cl0").unwrap() >= rx_before + conns.len() as u64,
        "the standby did not carry the connections"
    );
    // New connections go through the standby too.
    let (_, mut fresh) = tcp_hello(&t.client, vip(), T).unwrap();
    echo(&mut fresh, "new");
}

/// Runs a second `slb run -c <config>` next to `agent` and returns its
/// stderr; it must fail.
fn second_agent(t: &Topology, config: &std::path::Path) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &t.lb.name])
        .arg(slb_tests::slb_bin())
        .args(["run", "-c"])
        .arg(config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the second agent ran: {err}");
    err
}

/// A second `slb run` on the pinned state of a running one (same file,
/// or only another control socket) refuses to start and changes nothing:
/// the backend the first one holds down stays out of rotation.
#[test]
fn a_second_agent_refuses_to_start_and_changes_nothing() {
    let t = Topology::new("sa", 2).unwrap();
    let _b1 = tcp_server(&t, 0);
    // b2 never listens: down at its first probe.
    let agent = Agent::start_keeping(&t.lb, "sa", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    agent
        .wait_backend_state("web", &addr(1), "down", T)
        .unwrap();
    let err = second_agent(&t, &agent.config);
    assert!(err.contains("another agent"), "{err}");
    let other = agent.dir().join("other.toml");
    let cfg = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&other, cfg.replace("control.sock", "other.sock")).unwrap();
    let err = second_agent(&t, &other);
    assert!(err.contains("another `slb run`"), "{err}");
    // Every connection still goes to b1 (one to b2 would be refused).
    assert_eq!(spread(&t, 30).get("b1"), Some(&30));
}

/// A restart that cannot attach everywhere (here: `lo`, which has no
/// native XDP) exits with the error but leaves the kept dataplane as it
/// was: established connections go on, and the next agent adopts it.
#[test]
fn a_failed_restart_leaves_the_kept_dataplane_running() {
    let t = Topology::new("fr", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent =
        Agent::start_keeping(&t.lb, "fr", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let (_, mut conn) = tcp_hello(&t.client, vip(), T).unwrap();
    echo(&mut conn, "before");
    assert!(agent.stop().unwrap().success());
    let good = std::fs::read_to_string(&agent.config).unwrap();
    let bad = good.replace("\"be2\"]", "\"be2\", \"lo\"]");
    assert_ne!(good, bad);
    std::fs::write(&agent.config, bad).unwrap();
    let err = format!("{:#}", agent.restart().unwrap_err());
    assert!(err.contains("interface lo"), "{err}");
    // With the kernel's reason, not only the name of the failed call.
    assert!(
        err.contains("interface lo: attaching in native mode: `bpf_link_create` failed: "),
        "{err}"
    );
    assert!(err.contains("(os error "), "{err}");
    echo(&mut conn, "after the failed restart");
    std::fs::write(&agent.config, good).unwrap();
    agent.restart().unwrap();
    assert_eq!(
        agent
            .log_text()
            .matches("adopting pinned dataplane state")
            .count(),
        2
    );
    echo(&mut conn, "after the next restart");
}

/// A restart that fails after it wrote its tables (it cannot attach to
/// `lo`) leaves the pinned maps as the previous agent left them: the
/// previous links, still running with no agent, forward by the
/// configuration that was running, not by the file that failed (which
/// drains b2 and adds a listener on port 81).
#[test]
fn a_failed_restart_leaves_the_previous_tables_in_force() {
    let t = Topology::new("ft", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent =
        Agent::start_keeping(&t.lb, "ft", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let dir = agent.dir().to_owned();
    assert!(agent.stop().unwrap().success());
    let good = std::fs::read_to_string(&agent.config).unwrap();
    let other =
        ListenerSpec::new("other", VIP4.into(), 81, "tcp").backend(backend4(0).into(), 8080, 1);
    let bad = render(2, &dir, &[web(2, &[1, 0]), other]).replace("\"be2\"]", "\"be2\", \"lo\"]");
    assert!(bad.contains("\"lo\"]"));
    std::fs::write(&agent.config, bad).unwrap();
    let slow_path = || jump_target(&dir.join("bpf").join("JUMP"));
    let before = slow_path();
    let err = format!("{:#}", agent.restart().unwrap_err());
    assert!(err.contains("interface lo"), "{err}");
    // The kept fast path still tail-calls the slow path it came with, not
    // the failed start's (another build's, after an upgrade).
    assert_eq!(slow_path(), before, "the slow path was swapped");
    // No agent runs: what forwards now is the pinned state.
    let counts = spread(&t, 20);
    assert!(
        counts.get("b2").is_some_and(|&n| n > 0),
        "b2 drained by a configuration that never ran: {counts:?}"
    );
    let port81 = SocketAddr::new(VIP4.into(), 81);
    assert!(
        tcp_hello(&t.client, port81, Duration::from_secs(1)).is_err(),
        "port 81 served by a configuration that never ran"
    );
    std::fs::write(&agent.config, good).unwrap();
    agent.restart().unwrap();
    assert_ne!(slow_path(), before, "a start that succeeds arms its own");
    let counts = spread(&t, 20);
    assert!(counts.get("b2").is_some_and(|&n| n > 0), "{counts:?}");
}

/// The id of the program in slot 0 of the pinned program array `jump`.
fn jump_target(jump: &std::path::Path) -> u64 {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(jump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The value as bpftool shows it: the id's bytes, in hex, little-endian.
    let bytes: Vec<u8> = v[0]["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no program in {}: {v}", jump.display()))
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    bytes.iter().rev().fold(0, |id, &b| id << 8 | u64::from(b))
}

/// A restart that cannot bind its metrics port changes nothing either:
/// the port is bound before any table is written.
#[test]
fn a_restart_without_its_metrics_port_leaves_the_previous_tables() {
    let t = Topology::new("fm", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent =
        Agent::start_keeping(&t.lb, "fm", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let dir = agent.dir().to_owned();
    assert!(agent.stop().unwrap().success());
    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, render(2, &dir, &[web(2, &[1, 0])])).unwrap();
    restart_fails_without_its_metrics_port(&t, &mut agent);
    let counts = spread(&t, 20);
    assert!(
        counts.get("b2").is_some_and(|&n| n > 0),
        "b2 drained by a configuration that never ran: {counts:?}"
    );
    std::fs::write(&agent.config, good).unwrap();
    agent.restart().unwrap();
}

/// A reload that validates but cannot be applied is rejected and leaves
/// everything as it was: the listener it removed keeps its id (and so its
/// counters and flows), and a backend held down stays down (not put back
/// into rotation as a never-probed target).
#[test]
fn a_reload_that_cannot_be_applied_changes_nothing() {
    let t = Topology::new("ra", 2).unwrap();
    let _b1 = tcp_server(&t, 0);
    // b2 never listens.
    let mut agent = Agent::start(&t.lb, "ra", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    let dir = agent.dir().to_owned();
    agent
        .wait_backend_state("web", &addr(1), "down", T)
        .unwrap();
    assert_eq!(spread(&t, 5).get("b1"), Some(&5));
    let running = std::fs::read_to_string(&agent.config).unwrap();
    let out = agent
        .reload(&render(2, &dir, &[unplaceable(VIP4.into(), 81)]))
        .unwrap();
    assert!(out.contains("reload rejected"), "{out}");
    assert!(out.contains("destination table"), "{out}");
    std::fs::write(&agent.config, running).unwrap();
    let b2 = agent.backend_status("web", &addr(1)).unwrap();
    assert_eq!(b2["state"], "down", "{b2}");
    assert_eq!(listener_conns(&agent, "web"), 5);
    assert_eq!(spread(&t, 30).get("b1"), Some(&30));
    assert_eq!(listener_conns(&agent, "web"), 35);
}

/// A backend down when the agent stopped stays down across a restart
/// with the kept dataplane until its first probe says otherwise (a fresh
/// checker would count it as up and put it back into the tables).
#[test]
fn a_down_backend_stays_down_across_a_restart() {
    let t = Topology::new("rd", 2).unwrap();
    let _b1 = tcp_server(&t, 0);
    // b2 never listens.
    let mut agent =
        Agent::start_keeping(&t.lb, "rd", |d| render(2, d, &[web(2, &[1, 1])])).unwrap();
    agent
        .wait_backend_state("web", &addr(1), "down", T)
        .unwrap();
    assert!(agent.stop().unwrap().success());
    agent.restart().unwrap();
    let b = agent.backend_status("web", &addr(1)).unwrap();
    assert_eq!(b["state"], "down", "{b}");
    assert_eq!(spread(&t, 30).get("b1"), Some(&30));
}

/// The probe source the agent added to `lo` is put back when something
/// else removes it (SPEC §4: the agent adds it when missing): without it
/// every probe fails to bind, and every backend would be marked down
/// although none failed.
#[test]
fn a_probe_source_removed_from_lo_is_put_back() {
    let t = Topology::new("pl", 1).unwrap();
    let _b1 = tcp_server(&t, 0);
    let agent = Agent::start(&t.lb, "pl", |d| render(1, d, &[web(1, &[1])])).unwrap();
    agent.wait_backend_state("web", &addr(0), "up", T).unwrap();
    let probe = format!("{PROBE4}/32");
    t.lb.ip(&["addr", "del", &probe, "dev", "lo"]).unwrap();
    // Long enough for interval × unhealthy_threshold (1 s × 2) failures
    // and the down transition.
    std::thread::sleep(Duration::from_millis(3500));
    let lo = t.lb.ip(&["addr", "show", "dev", "lo"]).unwrap();
    assert!(lo.contains(&probe), "{lo}");
    let b = agent.backend_status("web", &addr(0)).unwrap();
    assert_eq!(b["state"], "up", "{b}\n{}", agent.log_text());
    assert!(
        !agent.log_text().contains(" down: "),
        "{}",
        agent.log_text()
    );
    // Still one of the addresses the agent added: removed when it stops.
    let mut agent = agent;
    assert!(agent.stop().unwrap().success());
    let lo = t.lb.ip(&["addr", "show", "dev", "lo"]).unwrap();
    assert!(!lo.contains(&probe), "{lo}");
}

/// Connections counted by `slb status` for listener `name`.
fn listener_conns(agent: &Agent, name: &str) -> serde_json::Value {
    let s = agent.status().unwrap();
    let l = s["listeners"].as_array().unwrap().iter();
    l.clone().find(|l| l["name"] == name).unwrap()["counters"]["conns"].clone()
}

/// New listeners and backends start from zero counters: not with the
/// counts of a removed one whose id they get, in this run or under a
/// previous run's pinned maps (a listener removed before a restart).
#[test]
fn new_listeners_and_backends_start_from_zero_counters() {
    let t = Topology::new("zc", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let other = |name: &str, port, b| {
        ListenerSpec::new(name, VIP4.into(), port, "tcp")
            .extra(FAST_TCP_CHECK)
            .backend(backend4(b).into(), 8080, 1)
    };
    let mut agent = Agent::start_keeping(&t.lb, "zc", |d| {
        render(2, d, &[other("web", 80, 0), other("old", 81, 1)])
    })
    .unwrap();
    let dir = agent.dir().to_owned();
    for port in [80, 81] {
        for _ in 0..5 {
            tcp_hello(&t.client, SocketAddr::new(VIP4.into(), port), T).unwrap();
        }
    }
    // b1 replaced by b2 in web, old removed.
    let out = agent
        .reload(&render(2, &dir, &[other("web", 80, 1)]))
        .unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    assert_eq!(
        agent.backend_status("web", &addr(1)).unwrap()["counters"]["conns"],
        0
    );
    assert_eq!(listener_conns(&agent, "web"), 5);
    assert!(agent.stop().unwrap().success());
    let next = render(2, &dir, &[other("web", 80, 1), other("new", 82, 0)]);
    std::fs::write(&agent.config, next).unwrap();
    agent.restart().unwrap();
    assert_eq!(listener_conns(&agent, "new"), 0);
    assert_eq!(listener_conns(&agent, "web"), 5);
}

/// A backend removed and added again gets a new id; its old one, retired,
/// still names it in the pinned backend table. A restarted agent adopts
/// the id it had when the previous run stopped: its counters and active
/// flows carry on as they were (not the retired id's older numbers).
#[test]
fn a_backend_added_again_keeps_its_counters_across_a_restart() {
    let t = Topology::new("ra", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let only = |b: usize| {
        ListenerSpec::new("web", VIP4.into(), 80, "tcp")
            .extra(FAST_TCP_CHECK)
            .backend(backend4(b).into(), 8080, 1)
    };
    let mut agent = Agent::start_keeping(&t.lb, "ra", |d| render(2, d, &[only(1)])).unwrap();
    let dir = agent.dir().to_owned();
    for _ in 0..5 {
        assert_eq!(tcp_hello(&t.client, vip(), T).unwrap().0, "b2");
    }
    // b2 out, then in again: a new id, counted from zero.
    for b in [0, 1] {
        let out = agent.reload(&render(2, &dir, &[only(b)])).unwrap();
        assert!(out.contains("configuration reloaded"), "{out}");
    }
    agent
        .wait_backend_state("web", &addr(1), "up", Duration::from_secs(10))
        .unwrap();
    let mut open: Vec<_> = (0..2)
        .map(|_| tcp_hello(&t.client, vip(), T).unwrap().1)
        .collect();
    let before = agent.backend_status("web", &addr(1)).unwrap();
    assert_eq!(before["counters"]["conns"], 2, "{before}");
    assert_eq!(before["active_flows"], 2, "{before}");
    assert!(agent.stop().unwrap().success());
    agent.restart().unwrap();
    let after = agent.backend_status("web", &addr(1)).unwrap();
    assert_eq!(after["counters"], before["counters"], "{after}");
    assert_eq!(after["active_flows"], 2, "{after}");
    for c in &mut open {
        echo(c, "after the restart");
    }
}

/// Renaming a listener (same VIP, port and protocol) only changes a
/// label: established connections keep their backends (`wrr` would move
/// re-scheduled ones), and its counters carry over.
#[test]
fn renaming_a_listener_keeps_its_connections() {
    let t = Topology::new("rn", 3).unwrap();
    let _s: Vec<_> = (0..3).map(|i| tcp_server(&t, i)).collect();
    let named = |name: &str| {
        let mut l = ListenerSpec::new(name, VIP4.into(), 80, "tcp")
            .scheduler("wrr")
            .extra(FAST_TCP_CHECK);
        for i in 0..3 {
            l = l.backend(backend4(i).into(), 8080, 1);
        }
        l
    };
    let mut agent = Agent::start(&t.lb, "rn", |d| render(3, d, &[named("web")])).unwrap();
    let dir = agent.dir().to_owned();
    let mut conns: Vec<_> = (0..6)
        .map(|_| tcp_hello(&t.client, vip(), T).unwrap().1)
        .collect();
    for c in &mut conns {
        echo(c, "before");
    }
    let out = agent.reload(&render(3, &dir, &[named("www")])).unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    // Past the once-a-second refresh, where the slow path checks a flow
    // against its listener.
    std::thread::sleep(Duration::from_millis(1500));
    for c in &mut conns {
        c.set_read_timeout(Some(T)).unwrap();
        echo(c, "after the rename");
    }
    assert_eq!(listener_conns(&agent, "www"), 6);
}

/// `slb flows` lists a real connection with the backend that answered it
/// and the FULLNAT source it got, filters by client and backend, and
/// follows the connection's close.
#[test]
fn flows_lists_each_connection_with_its_backend_source_and_state() {
    let t = Topology::new("fl", 2).unwrap();
    let _servers = t.tcp_servers(8080, false);
    let l = ListenerSpec::new("web", VIP4.into(), 80, "tcp")
        .backend(backend4(0).into(), 8080, 1)
        .backend(backend4(1).into(), 8080, 1);
    let agent = Agent::start(&t.lb, "fl", |d| render(2, d, &[l])).unwrap();

    let (name, mut conn) = tcp_hello(&t.client, vip(), T).unwrap();
    let client = conn.local_addr().unwrap();
    let (ours, other) = match name.as_str() {
        "b1" => (backend4(0), backend4(1)),
        _ => (backend4(1), backend4(0)),
    };
    let flows = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["flows", "--json"];
        all.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&agent.cli(&all).unwrap()).unwrap();
        v["flows"].as_array().cloned().unwrap_or_default()
    };
    let entry = |args: &[&str]| {
        flows(args)
            .into_iter()
            .find(|f| f["client"] == client.to_string())
    };

    let f = entry(&[]).expect("the connection is listed");
    assert_eq!(f["listener"], "web", "{f}");
    assert_eq!(f["protocol"], "tcp", "{f}");
    assert_eq!(f["vip"], vip().to_string(), "{f}");
    assert_eq!(f["backend"], format!("{ours}:8080"), "{f}");
    assert_eq!(f["mode"], "fullnat", "{f}");
    assert_eq!(f["state"], "ESTABLISHED", "{f}");
    let source: SocketAddr = f["source"].as_str().unwrap().parse().unwrap();
    assert!(
        slb_tests::topology::SNAT4.contains(&match source.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => panic!("{f}"),
        }),
        "{f}"
    );
    assert!(f["expire_s"].as_u64().unwrap() > 0, "{f}");

    // Filters.
    assert!(entry(&["--client", &client.ip().to_string()]).is_some());
    assert!(entry(&["--client", "10.99.0.1"]).is_none());
    assert!(entry(&["--backend", &format!("{ours}:8080")]).is_some());
    assert!(entry(&["--backend", &other.to_string()]).is_none());
    assert!(entry(&["--listener", "web"]).is_some());
    // A misspelt listener is an error, not an empty list.
    let e = agent
        .cli(&["flows", "--listener", "wbe"])
        .expect_err("an unknown listener is refused");
    assert!(
        e.to_string()
            .contains("no listener named \"wbe\" (tcp/udp listeners: web)"),
        "{e:#}"
    );

    // The table shows the same connection.
    let text = agent.cli(&["flows"]).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains(&client.to_string()) && l.contains("ESTABLISHED")),
        "{text}"
    );

    // Close: the client's FIN, then the backend's (it closes on EOF).
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.set_read_timeout(Some(T)).unwrap();
    conn.read_to_end(&mut rest).unwrap();
    let f = entry(&[]).expect("a closed connection stays listed for its short timeout");
    assert_eq!(f["state"], "TIME_WAIT", "{f}");
    assert!(f["expire_s"].as_u64().unwrap() <= 10, "{f}");
}

/// A backup backend (`backup = true`, keepalived's sorry server) stands by
/// while another backend is up, takes the new connections while none is,
/// and stands by again when one comes back; its connections from the
/// outage go on meanwhile.
#[test]
fn a_backup_backend_serves_only_during_an_outage() {
    let t = Topology::new("bk", 2).unwrap();
    let b1 = tcp_server(&t, 0);
    let _b2 = tcp_server(&t, 1);
    let backup_of = |text: String| {
        let line = format!(
            "address = \"{}\"\n  port = 8080\n  weight = 1\n",
            backend4(1)
        );
        assert!(text.contains(&line), "{text}");
        text.replace(&line, &format!("{line}  backup = true\n"))
    };
    let agent = Agent::start(&t.lb, "bk", |d| backup_of(render(2, d, &[web(2, &[1, 1])]))).unwrap();
    agent
        .wait_backend_state("web", &addr(1), "standby", Duration::from_secs(6))
        .unwrap();
    assert_eq!(spread(&t, 30), BTreeMap::from([("b1".to_owned(), 30)]));

    // b1 fails: the backup takes over.
    drop(b1);
    agent
        .wait_backend_state("web", &addr(0), "down", Duration::from_secs(6))
        .unwrap();
    assert_eq!(
        agent.backend_status("web", &addr(1)).unwrap()["state"],
        "up"
    );
    assert_eq!(spread(&t, 30), BTreeMap::from([("b2".to_owned(), 30)]));
    let (name, mut during) = tcp_hello(&t.client, vip(), T).unwrap();
    assert_eq!(name, "b2");

    // b1 is back: new connections go to it, the backup's go on.
    let _b1 = tcp_server(&t, 0);
    agent
        .wait_backend_state("web", &addr(1), "standby", Duration::from_secs(8))
        .unwrap();
    assert_eq!(spread(&t, 30), BTreeMap::from([("b1".to_owned(), 30)]));
    echo(&mut during, "still on the backup");
    let table = agent.cli(&["status"]).unwrap();
    assert!(table.contains("standby"), "{table}");
}

/// A listener switched to `wlc` by a reload schedules by the true
/// active-flow counts at once. Without a `wlc` listener nothing re-counts
/// the program's +1/−1 counts, and flows that just go idle (UDP ones
/// always) are never counted out: here 20 idle flows still weigh on u1,
/// which would get no new flow until the next periodic recount.
#[test]
fn a_listener_switched_to_wlc_schedules_by_the_true_active_counts() {
    let t = Topology::new("sw", 2).unwrap();
    let _servers = t.udp_servers(53, false);
    let dns = |scheduler: &'static str, weights: [u32; 2]| {
        ListenerSpec::new("dns", VIP4.into(), 53, "udp")
            .scheduler(scheduler)
            .extra("idle_timeout = \"1s\"")
            .backend(backend4(0).into(), 53, weights[0])
            .backend(backend4(1).into(), 53, weights[1])
    };
    let mut agent = Agent::start(&t.lb, "sw", |d| render(2, d, &[dns("wrr", [1, 0])])).unwrap();
    let dir = agent.dir().to_owned();
    let to = SocketAddr::new(VIP4.into(), 53);
    for i in 0..20 {
        assert_eq!(
            udp_ask(&t.client, to, format!("a{i}").as_bytes(), T).unwrap(),
            "u1"
        );
    }
    // Past the idle timeout: none of the 20 is active any more.
    std::thread::sleep(Duration::from_millis(2500));
    let out = agent
        .reload(&render(2, &dir, &[dns("wlc", [1, 1])]))
        .unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    let mut counts = BTreeMap::new();
    for i in 0..10 {
        let name = udp_ask(&t.client, to, format!("b{i}").as_bytes(), T).unwrap();
        *counts.entry(name).or_insert(0) += 1;
    }
    // In turn (5 each), give or take a recount between two of them.
    assert!(
        counts.get("u1").is_some_and(|&n| n >= 4) && counts.get("u2").is_some_and(|&n| n >= 4),
        "equal weights and no active flow at the switch: {counts:?}"
    );
}

/// Restarts `agent` while its metrics port (9470) is taken in the LB's
/// namespace: the start must fail, naming the port.
fn restart_fails_without_its_metrics_port(t: &Topology, agent: &mut Agent) {
    let taken =
        t.lb.enter(|| std::net::TcpListener::bind("127.0.0.1:9470"))
            .unwrap()
            .unwrap();
    let err = format!("{:#}", agent.restart().unwrap_err());
    assert!(err.contains("9470"), "{err}");
    // The reason once, not repeated as its own cause.
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    drop(taken);
}

/// Two listeners swapping ports (in one reload, with other schedulers)
/// swap services: each VIP and port keeps its id, so its established
/// connections stay on the backends they had, and its counters go on
/// under the listener now on it; new connections follow the new file.
#[test]
fn swapping_two_listeners_ports_keeps_each_ports_connections() {
    let t = Topology::new("sw", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let on = |name: &str, port: u16, scheduler: &'static str, b: usize| {
        ListenerSpec::new(name, VIP4.into(), port, "tcp")
            .scheduler(scheduler)
            .extra(FAST_TCP_CHECK)
            .backend(backend4(b).into(), 8080, 1)
    };
    let mut agent = Agent::start(&t.lb, "sw", |d| {
        render(2, d, &[on("a", 80, "maglev", 0), on("b", 81, "maglev", 1)])
    })
    .unwrap();
    let dir = agent.dir().to_owned();
    let at = |port| SocketAddr::new(VIP4.into(), port);
    let (first, mut on80) = tcp_hello(&t.client, at(80), T).unwrap();
    let (second, mut on81) = tcp_hello(&t.client, at(81), T).unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("b1", "b2"));
    let out = agent
        .reload(&render(
            2,
            &dir,
            &[on("a", 81, "wrr", 0), on("b", 80, "wlc", 1)],
        ))
        .unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    // Past the once-a-second refresh, where the slow path checks a flow
    // against its listener.
    std::thread::sleep(Duration::from_millis(1500));
    for c in [&mut on80, &mut on81] {
        c.set_read_timeout(Some(T)).unwrap();
        echo(c, "after the swap");
    }
    assert_eq!(tcp_hello(&t.client, at(80), T).unwrap().0, "b2");
    assert_eq!(tcp_hello(&t.client, at(81), T).unwrap().0, "b1");
    assert_eq!(listener_conns(&agent, "b"), 2);
    assert_eq!(listener_conns(&agent, "a"), 2);
}

/// Writes `n` copies of the connection table's only entry, each under
/// another client address and port, into the pinned `FLOWS` map of the
/// agent whose pins are in `pins`; returns that entry.
fn fill_flows(pins: &std::path::Path, n: u32) -> slb_common::Flow {
    use aya::maps::{HashMap, Map, MapData};
    use slb_common::{Flow, FlowKey};
    let flows = MapData::from_pin(pins.join("FLOWS")).unwrap();
    let mut flows: HashMap<_, FlowKey, Flow> = HashMap::try_from(Map::LruHashMap(flows)).unwrap();
    let (key, flow) = flows.iter().next().unwrap().unwrap();
    for i in 0..n {
        let mut k = key;
        k.src =
            slb_common::addr::to_addr(std::net::Ipv4Addr::from(0x0b00_0000 + i / 50_000).into());
        k.sport = (1024 + (i % 50_000) as u16).to_be();
        flows.insert(k, flow, 0).unwrap();
    }
    flow
}

/// The agent stays responsive while the `wlc` recount walks a connection
/// table of 2,000,000 live entries (every 2 s; over a second each here,
/// debug build). Before, the main loop walked it: the fast path's clock,
/// which the loop advanced, stood still for each walk (a second behind,
/// the fast path hands every packet to the slow path), and a reload (or a
/// health change, a status) waited for the walk to end. The counts still
/// land: all the copies are live flows of one backend. The bounds are
/// liveness bounds, not measurements: 1 s is four clock ticks, and the
/// loop stood still for 1.4–2.6 s per walk before.
#[test]
fn the_agent_keeps_its_clock_and_answers_while_the_wlc_recount_walks_a_large_table() {
    use aya::maps::{Array, Map, MapData};
    const N: u32 = 2_000_000;
    let t = Topology::new("wc", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent = Agent::start_pinned(&t.lb, "wc", &["run"], |d| {
        render(2, d, &[web(2, &[1, 1]).scheduler("wlc")])
            .replace("flow_table_size = 65536", "flow_table_size = 2097152")
    })
    .unwrap();
    let pins = agent.dir().join("bpf");
    let (_, _conn) = tcp_hello(&t.client, vip(), T).unwrap();
    let flow = fill_flows(&pins, N);
    let clock = MapData::from_pin(pins.join("CLOCK")).unwrap();
    let clock: Array<_, u64> = Array::try_from(Map::Array(clock)).unwrap();
    let (mut lag, mut slowest) = (Duration::ZERO, Duration::ZERO);
    std::thread::scope(|s| {
        let a = &agent;
        // Two recounts at least.
        let reloads = s.spawn(move || {
            let (start, mut slowest) = (Instant::now(), Duration::ZERO);
            while start.elapsed() < Duration::from_millis(4500) {
                let one = Instant::now();
                a.cli(&["reload"]).unwrap();
                slowest = slowest.max(one.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            slowest
        });
        while !reloads.is_finished() {
            lag = lag.max(clock_lag(&clock));
            std::thread::sleep(Duration::from_millis(10));
        }
        slowest = reloads.join().unwrap();
    });
    assert!(
        lag < Duration::from_secs(1),
        "the clock stood still for {lag:?} while the wlc recount walked {N} entries"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a reload waited {slowest:?} while the wlc recount walked {N} entries"
    );
    // Once no reload intervenes, the recount writes what it counted.
    let active = MapData::from_pin(pins.join("ACTIVE")).unwrap();
    let active: Array<_, u32> = Array::try_from(Map::Array(active)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while active.get(&flow.backend_id, 0).unwrap() != N + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(active.get(&flow.backend_id, 0).unwrap(), N + 1);
    agent.stop().unwrap();
}

/// The agent's high-water mark of resident memory, in KiB.
fn agent_peak_kib(agent: &Agent) -> u64 {
    let pid = agent.pid().unwrap();
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {s}"))
}

/// How far the fast path's clock (`CLOCK`, advanced by the agent four
/// times a second) is behind the kernel's.
fn clock_lag(clock: &aya::maps::Array<aya::maps::MapData, u64>) -> Duration {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).unwrap();
    let now = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    Duration::from_nanos(now.saturating_sub(clock.get(&0, 0).unwrap()))
}

/// `slb flows` over a connection table of 400,000 entries (copies of a
/// real connection's entry, written into the pinned map). The walk runs
/// off the agent's main loop: meanwhile the fast path's clock keeps
/// advancing (a second behind, every packet would take the slow path) and
/// a reload is answered before the listing ends; before, both waited for
/// the whole walk. (Told by order of events, not by timing.)
/// `--limit 10` keeps ten entries, not the table: before, every entry was
/// collected before the first was filtered (over 60 MiB here).
#[test]
fn a_large_flows_listing_neither_stalls_the_agent_nor_holds_the_table() {
    use aya::maps::{Array, Map, MapData};
    const N: u32 = 400_000;
    let t = Topology::new("lf", 2).unwrap();
    let _s: Vec<_> = (0..2).map(|i| tcp_server(&t, i)).collect();
    let mut agent = Agent::start_pinned(&t.lb, "lf", &["run"], |d| {
        render(2, d, &[web(2, &[1, 1])])
            .replace("flow_table_size = 65536", "flow_table_size = 524288")
    })
    .unwrap();
    let dir = agent.dir().to_owned();
    let (_, _conn) = tcp_hello(&t.client, vip(), T).unwrap();
    let pins = dir.join("bpf");
    fill_flows(&pins, N);
    let total = format!("{} connection(s)", N + 1);
    let s = agent.status().unwrap();
    assert_eq!(s["flows"], N + 1, "{s}");

    let before = agent_peak_kib(&agent);
    let text = agent.cli(&["flows", "--limit", "10"]).unwrap();
    assert!(text.ends_with(&format!("{total}\n")), "{text}");
    let grew = agent_peak_kib(&agent).saturating_sub(before);
    assert!(grew < 16 * 1024, "a 10-line listing took {grew} KiB");

    let clock = MapData::from_pin(pins.join("CLOCK")).unwrap();
    let clock: Array<_, u64> = Array::try_from(Map::Array(clock)).unwrap();
    let config = std::fs::read_to_string(&agent.config).unwrap();
    std::thread::scope(|s| {
        let a = &agent;
        let listing = s.spawn(move || a.cli(&["flows", "--limit", "0"]).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        let reload = s.spawn(move || a.cli(&["reload"]).unwrap());
        // The clock values seen while the listing runs, and whether the
        // reload was answered before it ended.
        let (mut ticks, mut reloaded_first) = (std::collections::BTreeSet::new(), false);
        while !listing.is_finished() {
            ticks.insert(clock.get(&0, 0).unwrap());
            reloaded_first |= reload.is_finished();
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = listing.join().unwrap();
        assert!(
            text.ends_with(&format!("{total}\n")),
            "{}",
            &text[text.len() - 200..]
        );
        reload.join().unwrap();
        assert!(
            ticks.len() >= 2,
            "the clock stood still through the listing: {ticks:?}"
        );
        assert!(reloaded_first, "the reload waited for the listing");
    });
    assert!(agent
        .reload(&config)
        .unwrap()
        .contains("configuration reloaded"));
}
