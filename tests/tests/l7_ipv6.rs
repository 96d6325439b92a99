//! L7 proxy over IPv6, end to end on `::1`: an http listener on an IPv6
//! VIP, IPv6 clients and backends.

mod l7_support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use l7_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `[[listener]]` header for an http listener on `[::1]:port` with health
/// checks off; `extra` lines are added to the table.
fn listener6(name: &str, protocol: &str, port: u16, extra: &str) -> String {
    format!(
        "\n[[listener]]\nname = \"{name}\"\nvip = \"::1\"\nport = {port}\nprotocol = \"{protocol}\"\nhealth_check = {{ enabled = false }}\n{extra}\n"
    )
}

/// The proxy with one http listener `web` on `::1` (`extra` lines added)
/// over `backends`.
async fn web6(backends: &[&Backend], extra: &str) -> Running {
    let (p, _) = start_proxy_on("::1", &["web"], |ports| {
        let mut t = listener6("web", "http", ports[0], extra);
        for b in backends {
            t.push_str(&b.toml("listener.backend", 100));
        }
        t
    })
    .await;
    p
}

/// Sends `raw` on a new connection to `p`'s listener `web` and reads
/// until the proxy closes it.
async fn exchange(p: &Running, raw: &str) -> String {
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("closed in time");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A host in brackets must be an IPv6 address, in `Host` as in the request
/// target (absolute-form, HTTP/2 `:authority`), as nginx checks the request
/// line's host too: else `[zz]` is routed, redirected to and sent to the
/// backend as its `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bracketed_host_must_be_an_ipv6_address() {
    let a = Backend::start_on("a", "::1").await;
    let p = web6(&[&a], "").await;
    for raw in [
        "GET / HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [zz]\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: []\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [192.0.2.1]:80\r\nConnection: close\r\n\r\n",
        "GET http://[zz]/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        "GET http://[]:80/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    ] {
        let r = exchange(&p, raw).await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{raw:?}: {r}");
    }
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut tx, _conn) = h2_over(tcp).await;
    let req = http::Request::get("http://[zz]/headers")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = collect(tx.send_request(req).await.unwrap()).await;
    assert_eq!(got.status, 400, "{}", got.body);
    assert_eq!(a.hits(), 0, "a refused request reached the backend");

    let r = exchange(
        &p,
        "GET http://[::1]:8080/target HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert!(r.ends_with("/target host=[::1]:8080"), "{r}");
    p.stop().await;
}

/// Free ports on both `::1` and 127.0.0.1 (for listeners of both families
/// on one port), found by binding and releasing them.
fn free_dual_stack_port() -> u16 {
    loop {
        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = v6.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Dual stack: listeners on `::1` and 127.0.0.1 share a port; an IPv6
/// client's address reaches the backend as nginx writes it (no brackets,
/// no port); the backend's address is logged with brackets; a redirect
/// to https keeps the brackets of an IPv6 `Host` and names the port of
/// the https listener on the same VIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_listeners_headers_and_redirect() {
    let a = Backend::start_on("a", "::1").await;
    let pki = Pki::new("v6");
    let (crt, key, _) = pki.server("v6", &["a.test"]);
    let port = free_dual_stack_port();
    let https_port = free_dual_stack_port();
    let text = format!(
        "{}{}{}{}{}\n  [[listener.certificate]]\n  cert = \"{}\"\n  key = \"{}\"\n{}",
        listener6("web6", "http", port, ""),
        a.toml("listener.backend", 100),
        listener("web4", "http", port, ""),
        a.toml("listener.backend", 100),
        listener6("tls6", "https", https_port, ""),
        crt.display(),
        key.display(),
        a.toml("listener.backend", 100),
    );
    let redirect = listener6(
        "redirect",
        "http",
        free_dual_stack_port(),
        "redirect_https = true",
    );
    let cfg = slb::config::parse(&format!("{text}{redirect}")).expect("valid config");
    let (_health, rx) = tokio::sync::watch::channel(slb::planner::Health::default());
    let proxy = slb::l7::Proxy::start(&cfg.listeners, rx, slb::l7::L7Metrics::new())
        .await
        .expect("both families bind the same port");
    let c = client();
    let v6 = get(&c, &format!("http://[::1]:{port}/headers"), &[]).await;
    assert_eq!(v6.status, 200, "{}", v6.body);
    for line in [
        format!("host: [::1]:{port}\n"),
        "x-forwarded-for: ::1\n".to_owned(),
        "x-real-ip: ::1\n".to_owned(),
        format!("x-forwarded-port: {port}\n"),
    ] {
        assert!(v6.body.contains(&line), "{line:?} in {}", v6.body);
    }
    let chained = get(
        &c,
        &format!("http://[::1]:{port}/headers"),
        &[("x-forwarded-for", "2001:db8::7")],
    )
    .await;
    assert!(
        chained.body.contains("x-forwarded-for: 2001:db8::7, ::1\n"),
        "{}",
        chained.body
    );
    let v4 = get(&c, &format!("http://127.0.0.1:{port}/headers"), &[]).await;
    assert!(v4.body.contains("x-real-ip: 127.0.0.1\n"), "{}", v4.body);

    let rport = proxy.local_addr("redirect").await.unwrap().port();
    for (host, want) in [
        (
            format!("[::1]:{rport}"),
            format!("https://[::1]:{https_port}/a?b=1"),
        ),
        (
            "[2001:DB8::1]".to_owned(),
            format!("https://[2001:db8::1]:{https_port}/a?b=1"),
        ),
    ] {
        let got = get(
            &c,
            &format!("http://[::1]:{rport}/a?b=1"),
            &[("host", &host)],
        )
        .await;
        assert_eq!(got.status, 301);
        assert_eq!(got.header("location"), Some(want.as_str()), "{host}");
    }
    proxy.shutdown_within(Duration::from_secs(2)).await;
}

/// A rule may name an IPv6 address as it may an IPv4 one: requests to it,
/// however they spell it (case, zeros, port), go to the rule's group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_route_by_an_ipv6_host() {
    let d = Backend::start_on("default", "::1").await;
    let lit = Backend::start_on("literal", "::1").await;
    let (p, _) = start_proxy_on("::1", &["web"], |ports| {
        format!(
            "{}{}\n[[listener.rule]]\nhost = \"2001:db8::10\"\ngroup = \"lit\"\n\
             [[listener.group]]\nname = \"lit\"{}",
            listener6("web", "http", ports[0], ""),
            d.toml("listener.backend", 100),
            lit.toml("listener.group.backend", 100),
        )
    })
    .await;
    let c = client();
    let url = format!("http://{}/", p.addr("web"));
    for (host, want) in [
        ("[2001:db8::10]", "literal"),
        ("[2001:DB8:0:0::10]:8080", "literal"),
        ("[2001:db8::11]", "default"),
        ("www.example", "default"),
    ] {
        let got = get(&c, &url, &[("host", host)]).await;
        assert_eq!(got.backend(), want, "{host}: {}", got.body);
    }
    p.stop().await;
}
