//! The L7 proxy as the agent runs it: inside `slb run` next to the XDP
//! dataplane (VIP added to `lo`, backends health-checked, status), and
//! alone as an unprivileged `slb proxy`.
use slb_tests::{
    config::{render, unplaceable, ListenerSpec},
    servers::{http_get, tcp_hello, HttpServer, NameServer},
    topology::{backend4, CLIENT4, VIP4},
    Agent, Netns, Topology,
};
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

const WWW: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 20);
const FAST_HTTP_CHECK: &str = r#"health_check = { protocol = "http", path = "/health", interval = "1s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }"#;

/// The HTTP server `web<i+1>` on port 8081 of backend `i`.
fn web_server(t: &Topology, i: usize) -> HttpServer {
    HttpServer::start_named(
        &t.backends[i],
        SocketAddr::new(backend4(i).into(), 8081),
        200,
        &format!("web{}", i + 1),
    )
    .unwrap()
}

/// A tcp listener on the VIP's port 80 over backend 1's port 8080.
fn l4() -> ListenerSpec {
    ListenerSpec::new("tcp", VIP4.into(), 80, "tcp").backend(backend4(0).into(), 8080, 1)
}

/// The http listener `www` (wrr) over backend 1's port 8081, checked by
/// `health_check`.
fn www(health_check: &str) -> ListenerSpec {
    ListenerSpec::new("www", WWW.into(), 80, "http")
        .scheduler("wrr")
        .extra(health_check)
        .backend(backend4(0).into(), 8081, 1)
}

#[test]
fn slb_run_serves_http_listeners_next_to_l4_ones() {
    let t = Topology::new("l7", 2).unwrap();
    let _tcp = NameServer::tcp(
        &t.backends[0],
        SocketAddr::new(backend4(0).into(), 8080),
        "tcp1",
    )
    .unwrap();
    let h1 = web_server(&t, 0);
    let h2 = web_server(&t, 1);
    let l4 = l4();
    let www = www(FAST_HTTP_CHECK).backend(backend4(1).into(), 8081, 1);
    let agent = Agent::start(&t.lb, "l7", |d| render(2, d, &[l4, www])).unwrap();

    // The VIP was added to the LB's loopback for the proxy to bind.
    let lo = t.lb.ip(&["addr", "show", "dev", "lo"]).unwrap();
    assert!(lo.contains("10.10.0.20/32"), "{lo}");

    // L4 and L7 listeners both serve the client.
    let (name, _) = tcp_hello(
        &t.client,
        SocketAddr::new(VIP4.into(), 80),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(name, "tcp1");
    let vip = SocketAddr::new(WWW.into(), 80);
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        let (code, body) = http_get(&t.client, vip, "www.example", "/page").unwrap();
        assert_eq!(code, 200, "{body}");
        *seen.entry(body.trim().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both backends serve: {seen:?}");
    // The backends saw the client's address in X-Forwarded-For.
    let page = h1
        .requests()
        .into_iter()
        .chain(h2.requests())
        .map(|(_, head)| head)
        .find(|h| h.starts_with("GET /page"))
        .unwrap();
    assert!(
        page.to_ascii_lowercase()
            .contains(&format!("x-forwarded-for: {CLIENT4}")),
        "{page}"
    );

    let s = agent.status().unwrap();
    let l = s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "www")
        .unwrap()
        .clone();
    assert_eq!(l["mode"], "proxy", "{l}");
    // The proxy's answers, as `/metrics` counts them.
    assert_eq!(l["requests"]["2xx"], 20, "{l}");
    assert_eq!(l["requests"]["5xx"], 0, "{l}");
    let metrics = Agent::metrics(&t.lb, "127.0.0.1:9470").unwrap();
    assert!(
        metrics
            .lines()
            .any(|m| m.starts_with("slb_l7_requests_total{")
                && m.contains("listener=\"www\"")
                && m.contains("class=\"2xx\"")
                && m.ends_with(" 20")),
        "{metrics}"
    );
    let table = agent.cli(&["status"]).unwrap();
    assert!(table.contains("requests: 1xx 0, 2xx 20, 3xx 0"), "{table}");

    // A failing backend leaves rotation.
    h2.set_status(500);
    agent
        .wait_backend_state(
            "www",
            &format!("{}:8081", backend4(1)),
            "down",
            Duration::from_secs(6),
        )
        .unwrap();
    for _ in 0..10 {
        let (code, body) = http_get(&t.client, vip, "www.example", "/page").unwrap();
        assert_eq!((code, body.trim()), (200, "web1"));
    }

    let mut agent = agent;
    agent.stop().unwrap();
    let lo = t.lb.ip(&["addr", "show", "dev", "lo"]).unwrap();
    assert!(
        !lo.contains("10.10.0.20"),
        "the VIP the agent added is removed: {lo}"
    );
}

/// An `slb run` started with tcp listeners only gets an http listener by
/// a reload: the reload must not be reported done while nothing serves it.
#[test]
fn a_reload_adds_the_first_http_listener() {
    let t = Topology::new("l7r", 1).unwrap();
    let _tcp = NameServer::tcp(
        &t.backends[0],
        SocketAddr::new(backend4(0).into(), 8080),
        "tcp1",
    )
    .unwrap();
    let _web = web_server(&t, 0);
    let l4 = l4();
    let www = www("health_check = { enabled = false }");
    let mut agent =
        Agent::start(&t.lb, "l7r", |d| render(1, d, std::slice::from_ref(&l4))).unwrap();
    let dir = agent.dir().to_owned();
    let out = agent.reload(&render(1, &dir, &[l4.clone(), www])).unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    let vip = SocketAddr::new(WWW.into(), 80);
    let (code, body) = http_get(&t.client, vip, "www.example", "/page").unwrap();
    assert_eq!((code, body.trim()), (200, "web1"));
    // And removed again: its VIP leaves lo, the L4 listener stays.
    let out = agent.reload(&render(1, &dir, &[l4])).unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    let lo = t.lb.ip(&["addr", "show", "dev", "lo"]).unwrap();
    assert!(!lo.contains("10.10.0.20"), "{lo}");
    let (name, _) = tcp_hello(
        &t.client,
        SocketAddr::new(VIP4.into(), 80),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(name, "tcp1");
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
}

/// A reload that removes an http listener lets the request it is serving
/// finish (README, Reload): the listener's VIP stays on `lo` until the
/// proxy is done with it, then goes.
#[test]
fn a_reload_removing_an_http_listener_lets_its_request_finish() {
    let t = Topology::new("l7d", 1).unwrap();
    let web = web_server(&t, 0);
    let www = www("health_check = { enabled = false }");
    // What the reload leaves (a configuration keeps some listener).
    let l4 = l4();
    let mut agent = Agent::start(&t.lb, "l7d", |d| render(1, d, &[l4.clone(), www])).unwrap();
    let dir = agent.dir().to_owned();
    let vip = SocketAddr::new(WWW.into(), 80);
    web.set_delay(Duration::from_millis(2000));
    let (slow, out) = std::thread::scope(|s| {
        let slow = s.spawn(|| http_get(&t.client, vip, "www.example", "/slow"));
        // The request reached the backend, which takes its time.
        let start = std::time::Instant::now();
        while web.requests().is_empty() && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(web.requests().len(), 1, "{}", agent.log_text());
        let out = agent
            .reload(&render(1, &dir, std::slice::from_ref(&l4)))
            .unwrap();
        (slow.join().unwrap(), out)
    });
    assert!(out.contains("configuration reloaded"), "{out}");
    let (code, body) = slow.unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log_text()));
    assert_eq!((code, body.trim()), (200, "web1"));
    // Then the VIP leaves lo.
    let start = std::time::Instant::now();
    let mut lo = t.lb.ip(&["addr", "show", "dev", "lo"]).unwrap();
    while lo.contains("10.10.0.20") && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        lo = t.lb.ip(&["addr", "show", "dev", "lo"]).unwrap();
    }
    assert!(!lo.contains("10.10.0.20"), "{lo}");
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
}

#[test]
fn slb_proxy_runs_unprivileged() {
    let ns = Netns::new("l7np").unwrap();
    let backend =
        HttpServer::start_named(&ns, "127.0.0.1:18081".parse().unwrap(), 200, "solo").unwrap();
    let dir = slb_tests::agent::scratch_dir("l7np").unwrap();
    // `nobody` must be able to create the control socket there.
    slb_tests::sh("chmod", &["0777", &dir.to_string_lossy()]).unwrap();
    let cfg = format!(
        r#"[agent]
probe_source = "127.0.0.2"
control_socket = "{}/control.sock"
metrics_listen = "127.0.0.1:19470"

[[listener]]
name = "local"
vip = "127.0.0.1"
port = 18080
protocol = "http"
health_check = {{ protocol = "http", path = "/", interval = "1s", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }}
  [[listener.backend]]
  address = "127.0.0.1"
  port = 18081
"#,
        dir.display()
    );
    let cfg_path = dir.join("slb.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    // Started with a soft open-file limit of 256: raised to the hard one
    // (each proxied connection takes two descriptors).
    let mut agent =
        Agent::start_as(&ns, dir, cfg_path, &["proxy"], Some(65534), Some(256)).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid().unwrap())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(open_files[3], open_files[4], "soft = hard: {limits}");
    assert_ne!(open_files[3], "256", "{limits}");
    assert!(
        agent.log_text().contains("open-file limit raised from 256"),
        "{}",
        agent.log_text()
    );
    let (code, body) = http_get(&ns, "127.0.0.1:18080".parse().unwrap(), "local", "/x").unwrap();
    assert_eq!((code, body.trim()), (200, "solo"));
    let b = agent.backend_status("local", "127.0.0.1:18081").unwrap();
    assert_eq!(b["state"], "up", "{b}");
    assert!(backend
        .requests()
        .iter()
        .any(|(_, h)| h.starts_with("GET /x")));
    assert!(agent.stop().unwrap().success(), "{}", agent.log_text());
}

/// A reload the dataplane cannot take (it validates, but its `nat`
/// backends do not fit the destination table) is refused before the
/// proxy changes anything: an http listener the file left out keeps
/// serving its open keep-alive connections.
#[test]
fn a_reload_the_dataplane_refuses_leaves_http_connections_alone() {
    use std::io::{Read, Write};
    let t = Topology::new("l7rr", 1).unwrap();
    let _web = web_server(&t, 0);
    let l4 = l4();
    let www = www("health_check = { enabled = false }");
    let mut agent = Agent::start(&t.lb, "l7rr", |d| render(1, d, &[l4.clone(), www])).unwrap();
    let dir = agent.dir().to_owned();
    let mut conn = t
        .client
        .enter(|| std::net::TcpStream::connect((WWW, 80)))
        .unwrap()
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let ask = |conn: &mut std::net::TcpStream| -> String {
        conn.write_all(b"GET /page HTTP/1.1\r\nHost: www.example\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Header and the short body ("web1\n") arrive together.
        while !String::from_utf8_lossy(&got).contains("web1") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    assert!(ask(&mut conn).starts_with("HTTP/1.1 200"));
    let out = agent
        .reload(&render(1, &dir, &[l4, unplaceable(VIP4.into(), 81)]))
        .unwrap();
    assert!(out.contains("reload rejected"), "{out}");
    let again = ask(&mut conn);
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "the kept-alive connection was closed by a refused reload: {again:?}"
    );
}

/// IPv6 forwarding turned on by a reload that is then rejected is put
/// back: on, it makes the kernel ignore router advertisements host-wide,
/// for a listener that never came. Here the file's first IPv6 tcp listener
/// needs it, and its http listener cannot be bound (something else holds
/// the port on every address).
#[test]
fn a_rejected_reload_puts_back_the_forwarding_it_turned_on() {
    use slb_tests::topology::{backend6, VIP6};
    const KEY: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
    let t = Topology::new("l7fw", 1).unwrap();
    let forwarding = || {
        t.lb.enter(|| std::fs::read_to_string(KEY))
            .unwrap()
            .unwrap()
            .trim()
            .to_owned()
    };
    t.lb.sysctl("net.ipv6.conf.all.forwarding", "0").unwrap();
    let mut agent = Agent::start(&t.lb, "l7fw", |d| render(1, d, &[l4()])).unwrap();
    let dir = agent.dir().to_owned();
    assert_eq!(
        forwarding(),
        "0",
        "an IPv4-only file needs no IPv6 forwarding"
    );
    let held =
        t.lb.enter(|| std::net::TcpListener::bind("0.0.0.0:8088"))
            .unwrap()
            .unwrap();
    let web6 =
        ListenerSpec::new("web6", VIP6.into(), 80, "tcp").backend(backend6(0).into(), 8080, 1);
    let blocked = ListenerSpec::new("www", WWW.into(), 8088, "http")
        .scheduler("wrr")
        .extra("health_check = { enabled = false }")
        .backend(backend4(0).into(), 8081, 1);
    let out = agent
        .reload(&render(1, &dir, &[l4(), web6.clone(), blocked]))
        .unwrap();
    assert!(out.contains("reload rejected"), "{out}");
    assert!(out.contains("L7 proxy"), "{out}");
    assert_eq!(forwarding(), "0", "{}", agent.log_text());
    drop(held);
    let out = agent.reload(&render(1, &dir, &[l4(), web6])).unwrap();
    assert!(!out.contains("rejected"), "{out}");
    assert_eq!(forwarding(), "1");
}
