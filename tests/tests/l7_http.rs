//! L7 proxy over plain HTTP, end to end with real clients and backends on
//! 127.0.0.1: routing rules, schedulers, persistence, headers, errors and
//! timeouts, connection limits, gzip, redirect, reload.

mod l7_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use l7_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one HTTP/1.x response with a Content-Length body from `s`.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if response_complete(&buf) {
            break;
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_route_by_host_and_path() {
    let d = Backend::start("default").await;
    let api = Backend::start("api").await;
    let stat = Backend::start("static").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}\n[[listener.rule]]\nhost = \"*.example.com\"\npath = \"/api/\"\ngroup = \"api\"\n\
             [[listener.rule]]\npath = \"/static/\"\ngroup = \"static\"\n\
             [[listener.group]]\nname = \"api\"{}\n[[listener.group]]\nname = \"static\"{}",
            listener("web", "http", ports[0], ""),
            d.toml("listener.backend", 100),
            api.toml("listener.group.backend", 100),
            stat.toml("listener.group.backend", 100),
        )
    })
    .await;
    let c = client();
    let cases = [
        ("www.example.com", "/api/users", "api"),
        ("a.b.example.com", "/api/", "api"),
        ("example.org", "/api/users", "default"),
        ("www.example.com", "/static/app.js", "static"),
        ("www.example.com", "/", "default"),
    ];
    for (host, path, want) in cases {
        let got = get(&c, &p.url("web", path), &[("host", host)]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.backend(), want, "{host}{path}");
    }
    p.stop().await;
}

/// A path rule matches the path as nginx matches a location: decoded,
/// with `//` merged and `.` and `..` segments resolved, so that spellings
/// of `/admin/` that a backend takes for it do not slip past its rule to
/// another group; the backend gets the target as the client sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rules_match_the_normalised_path() {
    let d = Backend::start("default").await;
    let admin = Backend::start("admin").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}\n[[listener.rule]]\npath = \"/admin/\"\ngroup = \"admin\"\n\
             [[listener.group]]\nname = \"admin\"{}",
            listener("web", "http", ports[0], ""),
            d.toml("listener.backend", 100),
            admin.toml("listener.group.backend", 100),
        )
    })
    .await;
    for (target, want) in [
        ("/admin/x", "admin"),
        ("//admin/x", "admin"),
        ("/%61dmin/x", "admin"),
        ("/./admin/x", "admin"),
        ("/api/../admin/x", "admin"),
        ("/%2e%2e/admin/x", "admin"),
        ("/admin%2Fx", "admin"),
        ("/administrator", "default"),
        ("/admin/../x", "default"),
        ("/x?/admin/", "default"),
    ] {
        let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(raw.as_bytes()).await.unwrap();
        let r = read_response(&mut s).await;
        assert!(
            r.contains(&format!("x-backend: {want}\r\n")),
            "{target}: {r}"
        );
        let path = target.split('?').next().unwrap();
        assert!(r.ends_with(&format!(" path={path}")), "{target}: {r}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrr_follows_weights_and_weight_zero_drains() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let z = Backend::start("z").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}{}{}",
            listener("web", "http", ports[0], "scheduler = \"wrr\""),
            a.toml("listener.backend", 3),
            b.toml("listener.backend", 1),
            z.toml("listener.backend", 0),
        )
    })
    .await;
    let c = client();
    for _ in 0..40 {
        assert_eq!(get(&c, &p.url("web", "/"), &[]).await.status, 200);
    }
    assert_eq!((a.hits(), b.hits(), z.hits()), (30, 10, 0));
    assert_eq!(p.metrics.requests_in_class("web", "2xx"), 40);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wlc_sends_new_requests_to_the_less_busy_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}{}",
            listener("web", "http", ports[0], "scheduler = \"wlc\""),
            a.toml("listener.backend", 1),
            b.toml("listener.backend", 1),
        )
    })
    .await;
    let c = client();
    let slow_url = p.url("web", "/sleep/1500");
    let c2 = c.clone();
    let slow = tokio::spawn(async move { get(&c2, &slow_url, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = if a.hits() == 1 { "a" } else { "b" };
    for _ in 0..6 {
        let got = get(&c, &p.url("web", "/"), &[]).await;
        assert_ne!(got.backend(), busy, "a request went to the busy backend");
    }
    assert_eq!(slow.await.unwrap().backend(), busy);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_a_header_is_consistent() {
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let p = web_proxy(
        &[&bs[0], &bs[1], &bs[2]],
        "scheduler = \"hash\"\nhash_key = { header = \"X-User\" }",
    )
    .await;
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..12 {
        let u = format!("user-{user}");
        let first = get(&c, &p.url("web", "/"), &[("x-user", &u)]).await;
        for _ in 0..3 {
            let again = get(&c, &p.url("web", "/"), &[("x-user", &u)]).await;
            assert_eq!(again.backend(), first.backend(), "{u} moved");
        }
        seen.insert(first.backend().to_owned());
    }
    assert!(seen.len() >= 2, "all users on one backend: {seen:?}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_cookie_sticks_for_50_requests_and_stale_cookie_reschedules() {
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let p = web_proxy(
        &[&bs[0], &bs[1], &bs[2]],
        "persistence = { mode = \"insert_cookie\", timeout = \"1000s\" }",
    )
    .await;
    let c = client();
    let first = get(&c, &p.url("web", "/"), &[]).await;
    let set = first
        .header("set-cookie")
        .expect("SERVERID inserted")
        .to_owned();
    assert!(set.starts_with("SERVERID="), "{set}");
    assert!(set.contains("Max-Age=1000"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let sticky = first.backend().to_owned();
    for i in 0..50 {
        let got = get(&c, &p.url("web", "/"), &[("cookie", &cookie)]).await;
        assert_eq!(got.backend(), sticky, "request {i} left its backend");
        assert!(got.header("set-cookie").is_none(), "cookie set again");
    }
    // Without the cookie, round robin spreads requests.
    let others: std::collections::BTreeSet<String> = {
        let mut s = std::collections::BTreeSet::new();
        for _ in 0..6 {
            s.insert(get(&c, &p.url("web", "/"), &[]).await.backend().to_owned());
        }
        s
    };
    assert!(others.len() > 1);
    // The cookie's backend goes down: the next request is scheduled anew
    // and the client gets a cookie for its new backend.
    let down = bs.iter().find(|b| b.name == sticky).unwrap();
    p.set_down("web", down.addr, true);
    let moved = get(&c, &p.url("web", "/"), &[("cookie", &cookie)]).await;
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend(), sticky);
    let new_cookie = moved.header("set-cookie").expect("new SERVERID");
    assert_ne!(new_cookie.split(';').next().unwrap(), cookie);
    p.stop().await;
}

/// Weight 0 drains as HAProxy's drain state does: the backend gets no new
/// clients, but those whose persistence cookie names it stay until their
/// session ends (a down backend's do not, above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_keeps_its_cookie_clients_only() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let persistence = "persistence = { mode = \"insert_cookie\", timeout = \"1000s\" }";
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}{}",
            listener("web", "http", ports[0], persistence),
            a.toml("listener.backend", 100),
            b.toml("listener.backend", 100),
        )
    })
    .await;
    let port = p.addr("web").port();
    let c = client();
    let first = get(&c, &p.url("web", "/"), &[]).await;
    assert_eq!(first.backend(), "a");
    let cookie = first
        .header("set-cookie")
        .expect("SERVERID")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    p.reload(&format!(
        "{}{}{}",
        listener("web", "http", port, persistence),
        a.toml("listener.backend", 0),
        b.toml("listener.backend", 100),
    ))
    .await
    .unwrap();
    for _ in 0..5 {
        let got = get(&c, &p.url("web", "/"), &[("cookie", &cookie)]).await;
        assert_eq!(got.backend(), "a", "the drained backend lost its client");
        assert!(got.header("set-cookie").is_none());
    }
    for _ in 0..5 {
        let got = get(&c, &p.url("web", "/"), &[]).await;
        assert_eq!(
            got.backend(),
            "b",
            "a new client went to the drained backend"
        );
    }
    assert_eq!(a.hits(), 6);
    p.stop().await;
}

/// A backup backend (`backup = true`) gets requests only while no other
/// backend of its group is up; a persistence cookie naming it does not
/// hold once one is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_serves_only_while_the_others_are_down() {
    let a = Backend::start("a").await;
    let spare = Backend::start("spare").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}{}  backup = true\n",
            listener(
                "web",
                "http",
                ports[0],
                "persistence = { mode = \"insert_cookie\", timeout = \"1000s\" }"
            ),
            a.toml("listener.backend", 100),
            spare.toml("listener.backend", 100),
        )
    })
    .await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &p.url("web", "/"), &[]).await.backend(), "a");
    }
    p.set_down("web", a.addr, true);
    let outage = get(&c, &p.url("web", "/"), &[]).await;
    assert_eq!(outage.status, 200);
    assert_eq!(outage.backend(), "spare");
    let cookie = outage
        .header("set-cookie")
        .expect("SERVERID of the backup")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    p.set_down("web", a.addr, false);
    for _ in 0..5 {
        let got = get(&c, &p.url("web", "/"), &[("cookie", &cookie)]).await;
        assert_eq!(got.backend(), "a", "the backup's cookie held");
    }
    assert_eq!(spare.hits(), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_cookie_keys_on_the_application_cookie() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}{}",
            listener(
                "web",
                "http",
                ports[0],
                "persistence = { mode = \"rewrite_cookie\", cookie = \"SESSIONID\" }"
            ),
            a.toml("listener.backend", 100),
            b.toml("listener.backend", 100),
        )
    })
    .await;
    let c = client();
    let login = get(&c, &p.url("web", "/setcookie"), &[]).await;
    let set = login.header("set-cookie").unwrap().to_owned();
    let value = set.split(';').next().unwrap().to_owned();
    assert!(
        value.starts_with("SESSIONID=") && value.ends_with("~abc123"),
        "{set}"
    );
    for _ in 0..10 {
        let got = get(&c, &p.url("web", "/headers"), &[("cookie", &value)]).await;
        assert_eq!(got.backend(), login.backend());
        assert!(
            got.body.contains("cookie: SESSIONID=abc123\n"),
            "backend saw: {}",
            got.body
        );
    }
    p.stop().await;
}

/// One client using two groups of a listener (a page under `/` calling
/// `/api/`) keeps its backend in each: the cookie names one backend per
/// group, and a response of one group does not overwrite the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_cookie_keeps_a_backend_in_each_group() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let x = Backend::start("x").await;
    let y = Backend::start("y").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}{}\n[[listener.rule]]\npath = \"/api/\"\ngroup = \"api\"\n\
             [[listener.group]]\nname = \"api\"{}{}",
            listener(
                "web",
                "http",
                ports[0],
                "persistence = { mode = \"insert_cookie\", timeout = \"1000s\" }"
            ),
            a.toml("listener.backend", 100),
            b.toml("listener.backend", 100),
            x.toml("listener.group.backend", 100),
            y.toml("listener.group.backend", 100),
        )
    })
    .await;
    let c = client();
    // A cookie jar of one cookie: what the last Set-Cookie said.
    let mut jar: Option<String> = None;
    let mut seen: [std::collections::BTreeSet<String>; 2] = Default::default();
    for i in 0..12 {
        let (path, g) = if i % 2 == 0 { ("/", 0) } else { ("/api/x", 1) };
        let cookie = jar.clone();
        let hdrs: Vec<(&str, &str)> = cookie.iter().map(|v| ("cookie", v.as_str())).collect();
        let got = get(&c, &p.url("web", path), &hdrs).await;
        assert_eq!(got.status, 200);
        if let Some(set) = got.header("set-cookie") {
            jar = Some(set.split(';').next().unwrap().to_owned());
        }
        seen[g].insert(got.backend().to_owned());
    }
    assert_eq!(seen[0].len(), 1, "default group: {:?}", seen[0]);
    assert_eq!(seen[1].len(), 1, "api group: {:?}", seen[1]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_xff_chain() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    let port = p.addr("web").port();
    let c = client();
    let got = get(
        &c,
        &p.url("web", "/headers"),
        &[
            ("x-forwarded-for", "203.0.113.9, 198.51.100.7"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "gopher"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("host", "www.example.com"),
            // What backends also read for scheme, host and client (Rack
            // prefers `Forwarded` to X-Forwarded-Proto), which the proxy
            // does not vouch for.
            ("forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-scheme", "https"),
            ("x-forwarded-ssl", "on"),
        ],
    )
    .await;
    let b = &got.body;
    for name in [
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
    ] {
        let sent = b.lines().any(|l| l.starts_with(&format!("{name}: ")));
        assert!(!sent, "{name} forwarded: {b}");
    }
    assert!(
        b.contains("x-forwarded-for: 203.0.113.9, 198.51.100.7, 127.0.0.1\n"),
        "{b}"
    );
    assert!(b.contains("x-real-ip: 127.0.0.1\n"), "{b}");
    assert!(b.contains("x-forwarded-proto: http\n"), "{b}");
    assert!(b.contains(&format!("x-forwarded-port: {port}\n")), "{b}");
    assert!(b.contains("host: www.example.com\n"), "{b}");
    assert!(!b.contains("x-hop"), "hop-by-hop field forwarded: {b}");
    // Without an incoming chain the client address starts it.
    let got = get(&c, &p.url("web", "/headers"), &[]).await;
    assert!(got.body.contains("x-forwarded-for: 127.0.0.1\n"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_backend_is_503_and_recovers() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}{}",
            listener("web", "http", ports[0], ""),
            a.toml("listener.backend", 100),
            b.toml("listener.backend", 100)
        )
    })
    .await;
    let c = client();
    p.set_down("web", a.addr, true);
    for _ in 0..4 {
        assert_eq!(get(&c, &p.url("web", "/"), &[]).await.backend(), "b");
    }
    p.set_down("web", b.addr, true);
    let got = get(&c, &p.url("web", "/"), &[]).await;
    assert_eq!(got.status, 503);
    assert!(
        got.body.contains("<h1>503 Service Unavailable</h1>"),
        "{}",
        got.body
    );
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(p.metrics.requests_in_class("web", "5xx"), 1);
    p.set_down("web", a.addr, false);
    assert_eq!(get(&c, &p.url("web", "/"), &[]).await.backend(), "a");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_is_skipped_for_every_method() {
    let good = Backend::start("good").await;
    let dead = refused_addr().await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n{}",
            listener("web", "http", ports[0], ""),
            dead.port(),
            good.toml("listener.backend", 100)
        )
    })
    .await;
    let c = client();
    for _ in 0..6 {
        let got = get(&c, &p.url("web", "/"), &[]).await;
        assert_eq!((got.status.as_u16(), got.backend()), (200, "good"));
        // Nothing reached the refused backend, so a POST is safe to retry.
        let got = send(&c, "POST", &p.url("web", "/"), &[], "payload").await;
        assert_eq!((got.status.as_u16(), got.backend()), (200, "good"));
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_backend_is_502_retried_for_idempotent_requests_only() {
    let good = Backend::start("good").await;
    let (bad, bad_count, bad_task) = resetting_backend().await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n{}",
            listener("web", "http", ports[0], ""),
            bad.port(),
            good.toml("listener.backend", 100)
        )
    })
    .await;
    let c = client();
    for _ in 0..6 {
        let got = get(&c, &p.url("web", "/"), &[]).await;
        assert_eq!((got.status.as_u16(), got.backend()), (200, "good"));
    }
    let tried_bad = bad_count.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        tried_bad >= 2,
        "GETs were retried past the resetting backend"
    );
    // So is a PUT, body and all (its body was read by the failed attempt).
    for _ in 0..6 {
        let got = send(&c, "PUT", &p.url("web", "/upload"), &[], "{\"a\":1}").await;
        assert_eq!((got.status.as_u16(), got.backend()), (200, "good"));
        assert_eq!(got.body, "backend=good received=7");
    }
    assert!(bad_count.load(std::sync::atomic::Ordering::SeqCst) >= tried_bad + 2);
    // POST is not idempotent: a reset after sending is a 502, not a retry.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let got = send(&c, "POST", &p.url("web", "/"), &[], "order=1").await;
        if got.status == 502 {
            assert!(got.body.contains("502 Bad Gateway"));
            assert!(!got.body.contains("127.0.0.1"), "backend details leaked");
        }
        statuses.push(got.status.as_u16());
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    bad_task.abort();
    p.stop().await;
}

/// A backend whose connect hangs is given up after
/// `backend_connect_timeout` and the request goes to the next backend,
/// POST included (nothing was sent). The response timeout starts once the
/// request can go out: the connect has its own timeout, also when that
/// one is the longer (as nginx's and HAProxy's connect and server
/// timeouts are separate), so a hanging connect is never a 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_connect_times_out_to_the_next_backend() {
    let good = Backend::start("good").await;
    let hole = Blackhole::new();
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n{}",
            listener(
                "web",
                "http",
                ports[0],
                "backend_connect_timeout = \"600ms\"\nbackend_response_timeout = \"300ms\""
            ),
            hole.addr.port(),
            good.toml("listener.backend", 100)
        )
    })
    .await;
    let c = client();
    let mut slow = 0;
    for i in 0..4 {
        let t = Instant::now();
        let got = if i % 2 == 0 {
            get(&c, &p.url("web", "/"), &[]).await
        } else {
            send(&c, "POST", &p.url("web", "/"), &[], "order=1").await
        };
        assert_eq!(
            (got.status.as_u16(), got.backend()),
            (200, "good"),
            "request {i}"
        );
        if t.elapsed() >= Duration::from_millis(550) {
            slow += 1;
            assert!(
                t.elapsed() < Duration::from_millis(2500),
                "{:?}",
                t.elapsed()
            );
        }
    }
    // Round robin sent half of them to the hanging backend first.
    assert_eq!(slow, 2, "requests that waited for the connect timeout");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_is_504() {
    let a = Backend::start("a").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}",
            listener(
                "web",
                "http",
                ports[0],
                "backend_response_timeout = \"300ms\""
            ),
            a.toml("listener.backend", 100)
        )
    })
    .await;
    let c = client();
    let t = Instant::now();
    let got = get(&c, &p.url("web", "/sleep/3000"), &[]).await;
    assert_eq!(got.status, 504);
    assert!(got.body.contains("504 Gateway Timeout"));
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "{:?}",
        t.elapsed()
    );
    // Fast requests still pass.
    assert_eq!(get(&c, &p.url("web", "/sleep/10"), &[]).await.status, 200);
    p.stop().await;
}

/// A backend that sends its response header and part of the body, then
/// nothing, is given up `backend_response_timeout` after its last bytes
/// (as nginx's `proxy_read_timeout` and HAProxy's `timeout server` cut a
/// response that stalls): the client's connection ends with the body
/// incomplete instead of hanging for as long as the backend keeps its
/// connection open. A body that keeps moving, slower than the timeout in
/// all, is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_cut_after_the_response_timeout() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = backend.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let slow = buf[..n].starts_with(b"GET /slow");
                s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhello",
                )
                .await
                .unwrap();
                if slow {
                    // The rest a byte every 200 ms: 1 s in all.
                    for b in b"world" {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        s.write_all(&[*b]).await.unwrap();
                    }
                    return;
                }
                // Holds the connection open, sending nothing more.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}[[listener.backend]]\naddress = \"127.0.0.1\"\nport = {port}\n",
            listener(
                "web",
                "http",
                ports[0],
                "backend_response_timeout = \"500ms\"\nclient_idle_timeout = \"30s\""
            )
        )
    })
    .await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.ends_with("\r\n\r\nhelloworld"), "{r}");

    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    let t = Instant::now();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let took = t.elapsed();
    let got = String::from_utf8_lossy(&got);
    assert!(ended.is_ok(), "still waiting after 5 s: {got}");
    assert!(got.ends_with("\r\n\r\nhello"), "{got}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
    server.abort();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_is_431() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "max_header_size = 2048").await;
    let c = client();
    let small = "x".repeat(1000);
    assert_eq!(
        get(&c, &p.url("web", "/"), &[("x-big", &small)])
            .await
            .status,
        200
    );
    let big = "x".repeat(4000);
    let got = get(&c, &p.url("web", "/"), &[("x-big", &big)]).await;
    assert_eq!(got.status, 431);
    assert!(got.body.contains("431 Request Header Fields Too Large"));
    assert_eq!(a.hits(), 1, "the oversized request reached the backend");
    p.stop().await;
}

/// HTTP/2: a header list over `max_header_size` gets the proxy's 431 page
/// (counted), up to the server library's limit (twice `max_header_size`
/// plus 8 KiB, each field counted with 32 bytes more, RFC 7541 §4.1);
/// beyond it the library's bare 431, never seen by the proxy: not
/// counted, not logged (see the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_oversized_header_is_431() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "max_header_size = 2048").await;
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut tx, _conn) = h2_over(tcp).await;
    let mut ask = async |len: usize| {
        tx.ready().await.unwrap();
        let req = http::Request::get(format!("http://{}/", p.addr("web")))
            .header("x-big", "x".repeat(len))
            .body(Full::new(Bytes::new()))
            .unwrap();
        collect(tx.send_request(req).await.unwrap()).await
    };
    let got = ask(4000).await;
    assert_eq!(got.status, 431);
    assert!(got.body.contains("431 Request Header Fields Too Large"));
    assert_eq!(p.requests_settled("web", "4xx", 1).await, 1);
    let got = ask(2 * 2048 + 8192).await;
    assert_eq!(got.status, 431);
    assert_eq!(got.body, "", "the library's own answer has no body");
    assert_eq!(p.requests_settled("web", "4xx", 2).await, 1);
    // The connection goes on.
    assert_eq!(ask(10).await.status, 200);
    assert_eq!(a.hits(), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "client_idle_timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Still open shortly after...
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // ...closed by the proxy once idle longer than the timeout.
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    p.stop().await;
}

/// A client that sends its request header too slowly (a byte now and
/// then, so the connection is never idle) is dropped
/// `request_header_timeout` after its first bytes, or after the previous
/// response on a kept-alive connection, with no answer and nothing sent
/// to the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_header_is_dropped_after_the_header_timeout() {
    let a = Backend::start("a").await;
    let p = web_proxy(
        &[&a],
        "request_header_timeout = \"600ms\"\nclient_idle_timeout = \"30s\"",
    )
    .await;
    // Trickles a header; returns how long until the proxy closed, and
    // what it sent.
    async fn trickle(s: &mut TcpStream) -> (Duration, Vec<u8>) {
        let t = Instant::now();
        let mut got = Vec::new();
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnopqrstuvwxyz"
            .iter()
            .cycle()
        {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            assert!(t.elapsed() < Duration::from_secs(5), "never closed");
        }
        (t.elapsed(), got)
    }
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    let (took, got) = trickle(&mut s).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    // Kept alive after a request: the timeout runs from its response.
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (took, got) = trickle(&mut s).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(a.hits(), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closes_after_max_requests() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "max_requests_per_connection = 3").await;
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .unwrap();
    let conn_task = tokio::spawn(conn);
    for i in 1..=3 {
        sender.ready().await.unwrap();
        let req = http::Request::get("/")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let close = res
            .headers()
            .get("connection")
            .is_some_and(|v| v == "close");
        assert_eq!(close, i == 3, "request {i}");
        res.into_body().collect().await.unwrap();
    }
    // The proxy closed the connection after the third response.
    tokio::time::timeout(Duration::from_secs(3), conn_task)
        .await
        .expect("connection closed")
        .unwrap()
        .unwrap();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_client_gets_http10_to_the_backend() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    assert!(r.ends_with("HTTP/1.0"), "backend saw: {r}");
    let got = get(&client(), &p.url("web", "/version"), &[]).await;
    assert_eq!(got.body, "HTTP/1.1");
    p.stop().await;
}

/// An HTTP/1.0 client that asks for keep-alive gets it (both sides must
/// say so in 1.0), until the request limit closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_is_honoured() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "max_requests_per_connection = 3").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    for i in 1..=3 {
        s.write_all(b"GET /x HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut s).await.to_ascii_lowercase();
        assert!(r.starts_with("http/1.0 200"), "request {i}: {r}");
        let want = if i < 3 {
            "connection: keep-alive"
        } else {
            "connection: close"
        };
        assert!(r.contains(want), "request {i}: {r}");
    }
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed after the last request")
        .unwrap();
    assert_eq!(n, 0);
    p.stop().await;
}

/// Routing and the backend agree on the host (RFC 9112 §3.2.2: an
/// absolute-form target overrides `Host`), the backend gets origin-form,
/// and requests whose framing fields cannot be forwarded faithfully are
/// refused: no or two `Host`s in HTTP/1.1, an authority-form target
/// outside CONNECT or `*` outside OPTIONS (400), a transfer coding other
/// than chunked (501).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_target_host_and_framing() {
    let d = Backend::start("default").await;
    let admin = Backend::start("admin").await;
    let (p, _) = start_proxy(&["web"], |ports| {
        format!(
            "{}{}\n[[listener.rule]]\nhost = \"admin.example\"\ngroup = \"admin\"\n\
             [[listener.group]]\nname = \"admin\"{}",
            listener("web", "http", ports[0], ""),
            d.toml("listener.backend", 100),
            admin.toml("listener.group.backend", 100),
        )
    })
    .await;
    let ask = |raw: &'static str| {
        let addr = p.addr("web");
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(raw.as_bytes()).await.unwrap();
            read_response(&mut s).await
        }
    };
    let r = ask("GET http://www.example/target HTTP/1.1\r\nHost: admin.example\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains("x-backend: default"),
        "routed by Host, not the target: {r}"
    );
    assert!(r.ends_with("/target host=www.example"), "backend saw: {r}");
    for (raw, status) in [
        ("GET /target HTTP/1.1\r\n\r\n", "400"),
        // Authority-form is CONNECT's alone (RFC 9112 §3.2.3), as nginx
        // holds: the server library took it for a host to route by.
        (
            "GET admin.example:80 HTTP/1.1\r\nHost: www.example\r\n\r\n",
            "400",
        ),
        // As is asterisk-form OPTIONS's (§3.2.4).
        ("GET * HTTP/1.1\r\nHost: www.example\r\n\r\n", "400"),
        ("GET /target HTTP/1.1\r\nHost: www.example\r\nHost: admin.example\r\n\r\n", "400"),
        (
            "POST /target HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "501",
        ),
        (
            "POST /target HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "501",
        ),
    ] {
        let r = ask(raw).await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{raw:?}: {r}");
    }
    assert_eq!(
        d.hits() + admin.hits(),
        1,
        "a refused request reached a backend"
    );
    p.stop().await;
}

/// An HTTP/2 request without `:authority` is routed by its `Host` field,
/// which it may leave out but not send twice or with something that is
/// no host (400, as for HTTP/1.1): routing would take the first and the
/// backend, which got both, possibly the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_host_fields_are_checked_as_http1s() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut tx, _conn) = h2_over(tcp).await;
    let mut ask = async |hosts: &[&str]| {
        let mut req = http::Request::get("/headers");
        for h in hosts {
            req = req.header("host", *h);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        collect(tx.send_request(req).await.unwrap()).await
    };
    let got = ask(&["a.example"]).await;
    assert_eq!(got.status, 200);
    assert!(got.body.contains("host: a.example\n"), "{}", got.body);
    assert_eq!(ask(&[]).await.status, 200);
    for hosts in [&["a.example", "admin.example"][..], &["a.example/x"][..]] {
        assert_eq!(ask(hosts).await.status, 400, "{hosts:?}");
    }
    assert_eq!(a.hits(), 2, "a refused request reached the backend");
    p.stop().await;
}

/// A GET whose body comes in chunks (or, over HTTP/2, without a length)
/// reaches the backend with its body: the client library sends a GET
/// with no framing of its own as having none, which dropped the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_get_keeps_its_body() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(
        b"GET /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("received=5"), "{r}");
    p.stop().await;
}

/// A request body the client breaks (a malformed chunk) is the client's
/// error: 400, as nginx answers an invalid chunked body, with the
/// connection closed (its bytes are out of step). It was answered 502 and
/// logged as a failure of the backend, which had done nothing wrong, and
/// counted as a 5xx, the class an operator alerts on for backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_body_is_400_not_a_backend_failure() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    // PUT may go to another backend after a reset, POST may not: neither
    // is a backend's failure here.
    for method in ["POST", "PUT"] {
        let raw = format!(
            "{method} /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
        );
        let r = exchange(&p, raw.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{method}: {r}");
        assert!(says_close(&r), "{method}: {r}");
    }
    assert_eq!(p.requests_settled("web", "4xx", 2).await, 2);
    assert_eq!(p.metrics.requests_in_class("web", "5xx"), 0);
    p.stop().await;
}

/// A request with both Content-Length and Transfer-Encoding (the classic
/// smuggling pair) is framed by its chunks, reaches the backend without
/// the length, and its connection closes after the answer (RFC 9112
/// §6.3): bytes the two framings disagree on are never read as a next
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_beside_chunks_is_ignored_and_the_connection_closes() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    let r = exchange(
        &p,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.ends_with("received=5"),
        "one response, then the close: {r}"
    );
    assert!(says_close(&r), "{r}");
    assert_eq!(a.hits(), 1, "the bytes after the chunks were served");
    p.stop().await;
}

/// A response whose body carries a transfer coding other than chunked
/// cannot be passed on as it is (the coding would be lost): 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_with_another_transfer_coding_is_502() {
    let backend = ScriptedBackend::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let p = backend.proxy().await;
    let got = get(&client(), &p.url("web", "/"), &[]).await;
    assert_eq!(got.status, 502);
    p.stop().await;
}

/// A response framed by both Transfer-Encoding and Content-Length is
/// read by its chunks (RFC 9112 §6.3), and the length must not reach the
/// client, whose framing would follow it: the client gets the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_with_chunks_and_a_length_is_sent_by_its_chunks() {
    let backend = ScriptedBackend::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let p = backend.proxy().await;
    let got = get(&client(), &p.url("web", "/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "hello"));
    assert_eq!(got.header("content-length"), None);
    p.stop().await;
}

/// An HTTP/2 client that resets a stream before its response came leaves
/// the connection idle, and the idle timeout closes it (the reset request
/// used to stay counted as running forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stream_reset_before_the_response_leaves_the_connection_idle() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "client_idle_timeout = \"1s\"").await;
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut tx, conn) = h2_over(tcp).await;
    abandon(
        &mut tx,
        &p.url("web", "/sleep/3000"),
        Duration::from_millis(300),
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(
        closed.is_ok(),
        "the connection was never closed for idleness"
    );
    p.stop().await;
}

/// An HTTP/2 client that goes quiet is told to go away (GOAWAY, and a
/// PING whose acknowledgement ends the graceful close) at the idle
/// timeout; one that never answers is dropped an idle timeout later
/// instead of holding the connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_that_never_acknowledges_the_shutdown_is_dropped() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "client_idle_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    // The client preface and an empty SETTINGS frame, then silence: no
    // SETTINGS acknowledgement, no PING acknowledgement.
    s.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the quiet connection is still open after 8 s"
    );
    // Frame types the server sent: 9-byte headers, each with its length.
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len =
            usize::from(got[at]) << 16 | usize::from(got[at + 1]) << 8 | usize::from(got[at + 2]);
        types.push(got[at + 3]);
        at += 9 + len;
    }
    const GOAWAY: u8 = 7;
    const PING: u8 = 6;
    assert!(types.contains(&GOAWAY), "frames {types:?}");
    assert!(types.contains(&PING), "frames {types:?}");
    p.stop().await;
}

/// An upload slower than `backend_response_timeout` is not cut off while
/// it makes progress: the timeout counts from the request's last body
/// bytes, as nginx's and HAProxy's server timeouts count inactivity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_a_slow_backend() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "backend_response_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // 50 bytes over 3 s: three response timeouts.
    for _ in 0..10 {
        s.write_all(b"5\r\nhello\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("received=50"), "{r}");
    p.stop().await;
}

/// A client that stops sending its request body is the one the exchange
/// waits on: after `backend_response_timeout` without its bytes it gets
/// 408 and its connection closes, as nginx's `client_body_timeout`
/// answers; a backend waiting for the rest of the body is no slow backend
/// (it was answered 504 and warned about as the backend's timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_client_stops_sending_is_408_not_504() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "backend_response_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(says_close(&r), "{r}");
    assert_eq!(p.requests_settled("web", "4xx", 1).await, 1);
    assert_eq!(p.metrics.requests_in_class("web", "5xx"), 0);
    p.stop().await;
}

/// What a reverse proxy does not pass on: a CONNECT (no tunnels to
/// arbitrary hosts: 501, no backend contacted) and a 101 the client never
/// asked for (502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_an_unasked_101_is_502() {
    let backend = ScriptedBackend::start(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n",
    )
    .await;
    let p = backend.proxy().await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 501"), "{r}");
    assert_eq!(backend.connections(), 0);
    let got = get(&client(), &p.url("web", "/"), &[]).await;
    assert_eq!(got.status, 502);
    p.stop().await;
}

/// TRACE is answered by the proxy, never forwarded (a backend's echo of
/// the request header would hand its cookies to a script: cross-site
/// tracing): 405 with the proxy's page, no `Allow` (as nginx), counted as
/// a 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_405_and_never_forwarded() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"TRACE /headers HTTP/1.1\r\nHost: x\r\nCookie: session=secret\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert!(r.contains("405 Method Not Allowed"), "{r}");
    assert!(!r.contains("secret"), "{r}");
    assert!(!r.to_ascii_lowercase().contains("\r\nallow:"), "{r}");
    assert_eq!(a.hits(), 0, "the TRACE reached the backend");
    assert_eq!(p.requests_settled("web", "4xx", 1).await, 1);
    p.stop().await;
}

/// `Expect: 100-continue` is the proxy's to answer (the server library
/// sends the `100 Continue` when the body is first read), not passed on to
/// the backend, which could answer it with a 417 or its own 100 (nginx
/// removes it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_and_not_forwarded() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(
        b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // The client waits for the 100 before it sends its body.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("an answer to the head in time")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    assert!(
        got.starts_with(interim),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s.write_all(b"hello").await.unwrap();
    let mut rest = got.split_off(interim.len());
    while !response_complete(&rest) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the response in time")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&rest));
        rest.extend_from_slice(&chunk[..n]);
    }
    let r = String::from_utf8_lossy(&rest).to_ascii_lowercase();
    assert!(r.starts_with("http/1.1 200"), "{r}");
    assert!(r.contains("content-length: 5\n"), "the backend got {r}");
    assert!(!r.contains("expect:"), "the backend got {r}");
    p.stop().await;
}

/// A listener's ACL applies to http listeners too (SPEC §3: per
/// listener): a refused client's connection is closed unanswered, and
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_refuses_connections() {
    let a = Backend::start("a").await;
    let (p, _) = start_proxy(&["deny", "allow"], |ports| {
        format!(
            "{}{}{}{}",
            listener(
                "deny",
                "http",
                ports[0],
                "acl = { mode = \"deny\", cidrs = [\"127.0.0.0/8\"] }"
            ),
            a.toml("listener.backend", 100),
            listener(
                "allow",
                "http",
                ports[1],
                "acl = { mode = \"allow\", cidrs = [\"127.0.0.1/32\"] }"
            ),
            a.toml("listener.backend", 100),
        )
    })
    .await;
    let got = get(&client(), &p.url("allow", "/"), &[]).await;
    assert_eq!(got.status, 200);
    let mut s = TcpStream::connect(p.addr("deny")).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "a refused client got {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(a.hits(), 1);
    assert_eq!(p.metrics.acl_refused_of("deny"), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_when_the_client_accepts_it() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "gzip = true").await;
    let c = client();
    let plain = get(&c, &p.url("web", "/big"), &[]).await;
    assert!(plain.header("content-encoding").is_none());
    // The uncompressed variant says it has a compressed one (RFC 9110
    // §12.5.5), so that caches keep them apart.
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let req = http::Request::get(p.url("web", "/big"))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = c.request(req).await.unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["vary"], "Accept-Encoding");
    let gz = res.into_body().collect().await.unwrap().to_bytes();
    assert!(gz.len() < plain.body.len() / 4);
    let mut out = String::new();
    async_compression::tokio::bufread::GzipDecoder::new(&gz[..])
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(out, plain.body);
    // Small bodies stay as they are.
    let small = get(&c, &p.url("web", "/x"), &[("accept-encoding", "gzip")]).await;
    assert!(small.header("content-encoding").is_none());
    // HEAD gets the header its GET gets (RFC 9110 §9.3.2).
    let head = http::Request::head(p.url("web", "/big"))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = c.request(head).await.unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["vary"], "Accept-Encoding");
    assert!(!res.headers().contains_key("content-length"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_https_answers_301() {
    let (p, _) = start_proxy(&["plain"], |ports| {
        listener("plain", "http", ports[0], "redirect_https = true")
    })
    .await;
    let got = get(
        &client(),
        &p.url("plain", "/a/b?c=1"),
        &[("host", "www.example.com:8080")],
    )
    .await;
    assert_eq!(got.status, 301);
    assert_eq!(
        got.header("location"),
        Some("https://www.example.com/a/b?c=1")
    );
    // `OPTIONS *` goes to the root; a Host that is no host is refused, not
    // pasted into the Location.
    for (raw, want) in [
        (
            "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "location: https://a.test/\r\n",
        ),
        (
            "GET /p?x=1 HTTP/1.1\r\nHost: a.test/evil\r\n\r\n",
            "HTTP/1.1 400",
        ),
    ] {
        let mut s = TcpStream::connect(p.addr("plain")).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let r = read_response(&mut s).await;
        assert!(r.contains(want), "{raw:?}: {r}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_backends_without_dropping_connections() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let p = web_proxy(&[&a], "").await;
    let port = p.addr("web").port();
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let ask = |sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>| {
        let req = http::Request::get("/")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        sender.send_request(req)
    };
    let res = collect(ask(&mut sender).await.unwrap()).await;
    assert_eq!(res.backend(), "a");
    p.reload(&format!(
        "{}{}",
        listener("web", "http", port, ""),
        b.toml("listener.backend", 100)
    ))
    .await
    .unwrap();
    sender.ready().await.expect("connection still open");
    let res = collect(ask(&mut sender).await.unwrap()).await;
    assert_eq!(res.backend(), "b");
    p.stop().await;
}

/// Requests of `web` counted in any class.
fn counted(p: &Running) -> u64 {
    ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .map(|c| p.metrics.requests_in_class("web", c))
        .sum()
}

/// A request the client gives up on before its response (an HTTP/2
/// stream reset, an HTTP/1.1 connection closed) still counts, as 499
/// (nginx's "client closed request"), and gets its access-log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_client_abandons_are_counted() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;

    // HTTP/2 (prior knowledge): the stream is reset while the backend
    // sleeps.
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut sender, _conn) = h2_over(tcp).await;
    abandon(
        &mut sender,
        "http://x/sleep/1500",
        Duration::from_millis(300),
    )
    .await;
    // Dropping the response future reset the stream.
    assert_eq!(
        p.requests_settled("web", "4xx", 1).await,
        1,
        "counted as 499"
    );
    // The connection goes on serving.
    let req = http::Request::get("http://x/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!(got.status, 200);
    assert_eq!(p.metrics.requests_in_class("web", "2xx"), 1);

    // HTTP/1.1: the client closes its connection while the backend sleeps.
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"GET /sleep/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    assert_eq!(
        p.requests_settled("web", "4xx", 2).await,
        2,
        "counted as 499"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(counted(&p), 3, "each request counted once");
    p.stop().await;
}

/// A request in flight to a backend that a reload removes finishes there;
/// the next goes to the new backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_lets_requests_to_a_removed_backend_finish() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let p = web_proxy(&[&a], "").await;
    let port = p.addr("web").port();
    let c = client();
    let url = p.url("web", "/sleep/700");
    let slow = tokio::spawn({
        let c = c.clone();
        async move { get(&c, &url, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.reload(&format!(
        "{}{}",
        listener("web", "http", port, ""),
        b.toml("listener.backend", 100)
    ))
    .await
    .unwrap();
    let got = slow.await.unwrap();
    assert_eq!((got.status.as_u16(), got.backend()), (200, "a"));
    let got = get(&c, &p.url("web", "/"), &[]).await;
    assert_eq!(got.backend(), "b");
    assert_eq!(p.metrics.requests_in_class("web", "2xx"), 2);
    p.stop().await;
}

/// Sends `raw` on a new connection and reads until the proxy closes it.
async fn exchange(p: &Running, raw: &[u8]) -> String {
    exchange_then(p, raw, false).await
}

/// [`exchange`], closing the sending side after `raw` if `shut`.
async fn exchange_then(p: &Running, raw: &[u8], shut: bool) -> String {
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(raw).await.unwrap();
    if shut {
        s.shutdown().await.unwrap();
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("closed in time");
        match read {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            // Closed with part of a too large request unread: the answer
            // came before the reset.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Requests the server library cannot parse get its own bare answer (400,
/// 431 when the header outgrows the read buffer or has too many fields,
/// 414 for a target over 64 KiB) and are counted as any other request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_requests_are_answered_and_counted() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "max_header_size = 65536").await;
    let status = |r: &str| r.split_whitespace().nth(1).unwrap_or("").to_owned();

    let r = exchange(&p, b"GET / HTTP/1.1\r\nbad header\r\n\r\n").await;
    assert_eq!(status(&r), "400", "{r:?}");
    // hyper's bare answer: no body, then the connection closes.
    let lower = r.to_ascii_lowercase();
    assert!(lower.contains("content-length: 0\r\n"), "{r:?}");
    assert!(says_close(&r), "{r:?}");
    assert!(r.ends_with("\r\n\r\n"), "{r:?}");
    assert_eq!(p.requests_settled("web", "4xx", 1).await, 1);

    // After a good request on the same connection.
    let r = exchange(
        &p,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    let second = &r[r.rfind("HTTP/1.1").unwrap()..];
    assert_eq!(status(second), "400", "{r:?}");
    assert_eq!(p.metrics.requests_in_class("web", "2xx"), 1);
    assert_eq!(p.requests_settled("web", "4xx", 2).await, 2);

    // More header fields than the parser has room for (1024 here).
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..1100 {
        many.push_str(&format!("x{i}: y\r\n"));
    }
    many.push_str("\r\n");
    let r = exchange(&p, many.as_bytes()).await;
    assert_eq!(status(&r), "431", "{r:?}");
    assert_eq!(p.requests_settled("web", "4xx", 3).await, 3);

    // A header past the read buffer (twice the limit and 8 KiB).
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "y".repeat(150_000)
    );
    let r = exchange(&p, huge.as_bytes()).await;
    assert_eq!(status(&r), "431", "{r:?}");
    assert_eq!(p.requests_settled("web", "4xx", 4).await, 4);

    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(70_000));
    let r = exchange(&p, long.as_bytes()).await;
    assert_eq!(status(&r), "414", "{r:?}");
    assert_eq!(p.requests_settled("web", "4xx", 5).await, 5);

    // A connection closed in the middle of a header gets no answer and
    // counts nothing.
    let r = exchange_then(&p, b"GET / HTTP/1.1\r\nHost:", true).await;
    assert_eq!(r, "");
    assert_eq!(counted(&p), 6);
    assert_eq!(a.hits(), 1);
    p.stop().await;
}

/// A listener a reload removes stops accepting at once, finishes the
/// request it serves, and reports its VIP as draining until then (the
/// agent keeps the VIP local meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_drains_its_requests() {
    let a = Backend::start("a").await;
    let (p, _) = start_proxy(&["web", "old"], |ports| {
        format!(
            "{}{}{}{}",
            listener("web", "http", ports[0], ""),
            a.toml("listener.backend", 100),
            listener("old", "http", ports[1], ""),
            a.toml("listener.backend", 100),
        )
    })
    .await;
    let handle = p.handle.as_ref().unwrap();
    assert!(handle.draining_vips().is_empty());
    let c = client();
    let url = p.url("old", "/sleep/800");
    let slow = tokio::spawn({
        let c = c.clone();
        async move { get(&c, &url, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.reload(&format!(
        "{}{}",
        listener("web", "http", p.addr("web").port(), ""),
        a.toml("listener.backend", 100)
    ))
    .await
    .unwrap();
    let localhost: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        handle.draining_vips().into_iter().collect::<Vec<_>>(),
        [localhost]
    );
    assert!(
        TcpStream::connect(p.addr("old")).await.is_err(),
        "no longer accepting"
    );
    let got = slow.await.unwrap();
    assert_eq!((got.status.as_u16(), got.backend()), (200, "a"));
    let t = Instant::now();
    while !handle.draining_vips().is_empty() && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(handle.draining_vips().is_empty(), "drained");
    p.stop().await;
}

/// Whether a raw response head announces the connection's close.
fn says_close(r: &str) -> bool {
    r.to_ascii_lowercase().contains("connection: close\r\n")
}

/// The configuration of one http listener `web` on port `listen`
/// (`extra` in its table) over the backend on 127.0.0.1:`backend`.
fn one_backend(backend: u16, listen: u16, extra: &str) -> String {
    format!(
        "{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {backend}\n",
        listener("web", "http", listen, extra)
    )
}

/// A proxy running [`one_backend`].
async fn proxy_to(backend: u16, extra: &str) -> Running {
    start_proxy(&["web"], |ports| one_backend(backend, ports[0], extra))
        .await
        .0
}

/// A backend that answers the first request of each connection (kept
/// alive), then reads the next one and closes without answering: what a
/// backend whose keep-alive timeout ends as a request arrives looks like.
/// Returns its port and the connections it accepted.
async fn closes_reused_connections() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    counting_backend(1).await
}

/// A backend that answers `answers` requests on each connection (kept
/// alive), then reads the next one and closes without answering. Returns
/// its port and the connections it accepted.
async fn counting_backend(answers: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = std::sync::Arc::new(AtomicUsize::new(0));
    let n = conns.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut s = tokio::io::BufReader::new(s);
                // A request header; the test's requests have no body.
                async fn head(s: &mut tokio::io::BufReader<TcpStream>) -> bool {
                    use tokio::io::AsyncBufReadExt;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match s.read_line(&mut line).await {
                            Ok(0) | Err(_) => return false,
                            Ok(_) if line == "\r\n" => return true,
                            Ok(_) => {}
                        }
                    }
                }
                for _ in 0..answers {
                    if !head(&mut s).await {
                        return;
                    }
                    let _ = s
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
                head(&mut s).await;
            });
        }
    });
    (port, conns)
}

/// A pooled connection the backend closes as a request goes out on it is
/// no failure of the backend: an idempotent request goes out again on a
/// new connection to it (here the only backend, so there is no other to
/// try); a POST, which the backend may have acted on, gets 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_under_a_request_is_retried_when_idempotent() {
    use std::sync::atomic::Ordering;
    let (port, conns) = closes_reused_connections().await;
    let p = proxy_to(port, "").await;
    let c = client();
    let first = get(&c, &p.url("web", "/"), &[]).await;
    assert_eq!(first.status, 200);
    // On the pooled connection, which the backend closes: sent again on a
    // new one.
    let again = get(&c, &p.url("web", "/"), &[]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    let post = send(&c, "POST", &p.url("web", "/"), &[], "").await;
    assert_eq!(post.status, 502, "{}", post.body);
    assert_eq!(conns.load(Ordering::SeqCst), 2, "the POST was sent again");
    p.stop().await;
}

/// A reload that leaves a backend as it was keeps its pooled connections
/// (the backend sees no new connection); one that changes its connect
/// timeout starts a new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_pooled_connections_of_unchanged_backends() {
    use std::sync::atomic::Ordering;
    let (port, conns) = counting_backend(usize::MAX).await;
    let config = |listen: u16, extra: &str| one_backend(port, listen, extra);
    let (p, _) = start_proxy(&["web"], |ports| config(ports[0], "")).await;
    let listen = p.addr("web").port();
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &p.url("web", "/"), &[]).await.status, 200);
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    p.reload(&config(listen, "client_idle_timeout = \"20s\""))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(get(&c, &p.url("web", "/"), &[]).await.status, 200);
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "the reload dropped the pool"
    );
    p.reload(&config(listen, "backend_connect_timeout = \"2s\""))
        .await
        .unwrap();
    assert_eq!(get(&c, &p.url("web", "/"), &[]).await.status, 200);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "a new pool for the new timeout"
    );
    p.stop().await;
}

/// An HTTP/2 HEADERS frame of a `GET http://x/` on stream `id`, ending the
/// stream (HPACK: static-table entries and one literal, nothing indexed).
fn h2_get_frame(id: u32) -> Vec<u8> {
    // :method GET, :scheme http, :path /, :authority "x".
    let block = [0x82, 0x86, 0x84, 0x01, 0x01, b'x'];
    // Length, type HEADERS, flags END_STREAM | END_HEADERS, stream.
    let mut f = vec![0, 0, block.len() as u8, 1, 0x5];
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&block);
    f
}

/// The client preface of HTTP/2 and an empty SETTINGS frame.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Sends `first`, then an HTTP/2 PING every 200 ms, until the server
/// closes the connection: whether it did within 6 s.
async fn pinged_until_closed(s: TcpStream, first: &'static [u8]) -> bool {
    let (mut rd, mut wr) = s.into_split();
    let pinger = tokio::spawn(async move {
        wr.write_all(first).await.unwrap();
        // PING, 8 bytes of opaque data.
        let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingping";
        while wr.write_all(ping).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    pinger.abort();
    closed.is_ok()
}

/// HTTP/2 frames read from `s` until `enough` says so (or 5 s passed):
/// (type, stream, first 4 bytes of the payload).
async fn h2_frames_until(
    s: &mut TcpStream,
    got: &mut Vec<u8>,
    enough: impl Fn(&[(u8, u32, u32)]) -> bool,
) -> Vec<(u8, u32, u32)> {
    let t = Instant::now();
    loop {
        let mut frames = Vec::new();
        let mut at = 0;
        while at + 9 <= got.len() {
            let len = usize::from(got[at]) << 16
                | usize::from(got[at + 1]) << 8
                | usize::from(got[at + 2]);
            if at + 9 + len > got.len() {
                break;
            }
            let word = |i: usize| {
                got.get(i..i + 4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            frames.push((
                got[at + 3],
                word(at + 5) & 0x7fff_ffff,
                if len >= 4 { word(at + 9) } else { 0 },
            ));
            at += 9 + len;
        }
        if enough(&frames) || t.elapsed() > Duration::from_secs(5) {
            return frames;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return frames,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
}

/// `max_requests_per_connection` bounds HTTP/2 connections too: after the
/// last request the proxy says GOAWAY, and streams a client opens anyway
/// (one that never acknowledges the shutdown's PING, so that the server
/// library's final GOAWAY never comes) are refused (RST_STREAM
/// REFUSED_STREAM: not processed, safe to retry elsewhere), not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_beyond_max_requests_are_refused() {
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const GOAWAY: u8 = 7;
    const REFUSED_STREAM: u32 = 7;
    let a = Backend::start("a").await;
    let p = web_proxy(
        &[&a],
        "max_requests_per_connection = 3\nclient_idle_timeout = \"30s\"",
    )
    .await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    // The client preface and an empty SETTINGS frame; no acknowledgement
    // of anything, ever.
    s.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
    for id in [1, 3, 5] {
        s.write_all(&h2_get_frame(id)).await.unwrap();
    }
    let mut got = Vec::new();
    let frames = h2_frames_until(&mut s, &mut got, |f| {
        f.iter().filter(|x| x.0 == HEADERS).count() == 3 && f.iter().any(|x| x.0 == GOAWAY)
    })
    .await;
    assert_eq!(
        frames.iter().filter(|x| x.0 == HEADERS).count(),
        3,
        "{frames:?}"
    );
    assert!(frames.iter().any(|x| x.0 == GOAWAY), "{frames:?}");
    // Twenty more, one after another.
    let seen = frames.len();
    let later: Vec<u32> = (7..=45).step_by(2).collect();
    for id in &later {
        s.write_all(&h2_get_frame(*id)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let frames = h2_frames_until(&mut s, &mut got, |f| {
        f[seen..]
            .iter()
            .filter(|x| matches!(x.0, HEADERS | RST_STREAM))
            .count()
            >= later.len()
    })
    .await;
    let answers: Vec<_> = frames[seen..]
        .iter()
        .filter(|x| matches!(x.0, HEADERS | RST_STREAM))
        .collect();
    assert_eq!(answers.len(), later.len(), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|x| x.0 == RST_STREAM && x.2 == REFUSED_STREAM),
        "{answers:?}"
    );
    assert_eq!(a.hits(), 3);
    p.stop().await;
}

/// An HTTP/2 connection is idle from its last request's end, whatever
/// frames come after: a client sending only PINGs does not keep it open
/// past `client_idle_timeout` (it did for ever, as each PING was activity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_pings_alone_do_not_keep_a_connection_open() {
    const HEADERS: u8 = 1;
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "client_idle_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
    s.write_all(&h2_get_frame(1)).await.unwrap();
    let mut got = Vec::new();
    let frames = h2_frames_until(&mut s, &mut got, |f| f.iter().any(|x| x.0 == HEADERS)).await;
    assert!(frames.iter().any(|x| x.0 == HEADERS), "{frames:?}");
    let answered = Instant::now();
    assert!(
        pinged_until_closed(s, b"").await,
        "still open 6 s after the last response"
    );
    let took = answered.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    p.stop().await;
}

/// An HTTP/2 connection without TLS (prior knowledge) that never sends a
/// request is idle from its first bytes: PINGs alone do not keep it open
/// past `client_idle_timeout`. It was taken for an HTTP/1 connection
/// waiting for its first request header until its first request, so only
/// `request_header_timeout` (60 s by default, four times the idle
/// timeout) bounded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_connection_without_requests_is_closed_at_the_idle_timeout() {
    let a = Backend::start("a").await;
    let p = web_proxy(
        &[&a],
        "client_idle_timeout = \"1s\"\nrequest_header_timeout = \"10s\"",
    )
    .await;
    let s = TcpStream::connect(p.addr("web")).await.unwrap();
    let opened = Instant::now();
    assert!(
        pinged_until_closed(s, H2_PREFACE_AND_SETTINGS).await,
        "still open 6 s after its first bytes"
    );
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert_eq!(a.hits(), 0);
    p.stop().await;
}

/// An HTTP/1.0 client asking for keep-alive keeps its connection only when
/// the response has a length: one the backend sent in chunks (which 1.0
/// cannot carry) ends with the connection, and its header must not say
/// `Connection: keep-alive` (the client would take the body for framed and
/// wait for its end, or send its next request into a closing connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_is_not_promised_for_a_body_of_unknown_length() {
    let backend = ScriptedBackend::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let p = backend.proxy().await;
    let r = exchange(
        &p,
        b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200"), "{r}");
    assert!(!head.contains("keep-alive"), "{r}");
    assert!(!head.contains("transfer-encoding"), "{r}");
    assert_eq!(body, "hello");
    p.stop().await;
}

/// A chunked response is compressed as it streams: what the backend sent
/// reaches the client, decompressible, while the backend still works on
/// the rest (no holding the body back until it ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_streams_a_chunked_response() {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let first = "<p>first part</p>".repeat(60);
    let first_chunk = first.clone();
    let backend = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first_chunk}\r\n",
            first_chunk.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = s.write_all(b"4\r\nrest\r\n0\r\n\r\n").await;
    });
    let p = proxy_to(port, "gzip = true").await;
    let req = http::Request::get(p.url("web", "/stream"))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let mut body = res.into_body();
    let (mut to_decoder, from_proxy) = tokio::io::duplex(1 << 16);
    let mut decoder =
        async_compression::tokio::bufread::GzipDecoder::new(tokio::io::BufReader::new(from_proxy));
    let mut out = vec![0u8; first.len()];
    let started = std::time::Instant::now();
    let read = async { tokio::io::AsyncReadExt::read_exact(&mut decoder, &mut out).await };
    let feed = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                to_decoder.write_all(&data).await.unwrap();
            }
        }
        to_decoder.shutdown().await.unwrap();
    };
    tokio::pin!(feed);
    tokio::select! {
        r = read => { r.unwrap(); }
        () = &mut feed => panic!("body ended before the first part was decoded"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "first part after {:?}",
        started.elapsed()
    );
    assert_eq!(String::from_utf8(out).unwrap(), first);
    feed.await;
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut decoder, &mut rest)
        .await
        .unwrap();
    assert_eq!(rest, "rest");
    backend.await.unwrap();
    p.stop().await;
}

/// An answer the proxy gives before it has read the request body (here
/// 503: no live backend) reaches a client still uploading it, as with
/// nginx's lingering close: the proxy closes its sending side, then reads
/// and discards what the client still sends. Closing with the body unread
/// made the kernel reset the connection, and a client that sends its whole
/// body before reading (curl, most libraries) got "connection reset"
/// instead of the 503. The body is larger than the sockets' buffers, so
/// the client is still sending when the proxy answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_reaches_a_client_still_sending_its_body() {
    let a = Backend::start("a").await;
    let p = web_proxy(&[&a], "").await;
    p.set_down("web", a.addr, true);
    let len = 64 << 20;
    let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    match upload(&mut s, &head, len).await {
        Upload::Answered(r) => assert!(r.starts_with("HTTP/1.1 503 "), "{r:?}"),
        Upload::SendFailed { sent, error } => {
            panic!("the upload failed after {sent} of {len} bytes, no answer seen: {error}")
        }
    }
    assert_eq!(p.requests_settled("web", "5xx", 1).await, 1);
    assert_eq!(a.hits(), 0);
    p.stop().await;
}

/// The same when the answer is a backend's: one that refuses an upload
/// at once (413) without reading its body and closes its connection a
/// little later, as servers with a body size limit do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_early_answer_reaches_a_client_still_sending_its_body() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let backend = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big!")
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            });
        }
    });
    let p = proxy_to(port, "").await;
    let len = 64 << 20;
    let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    match upload(&mut s, &head, len).await {
        Upload::Answered(r) => {
            assert!(r.starts_with("HTTP/1.1 413 "), "{r:?}");
            assert!(r.ends_with("too big!"), "{r:?}");
        }
        Upload::SendFailed { sent, error } => {
            panic!("the upload failed after {sent} of {len} bytes, no answer seen: {error}")
        }
    }
    assert_eq!(p.requests_settled("web", "4xx", 1).await, 1);
    backend.abort();
    p.stop().await;
}

/// A backend answering every request with `len` bytes of text/plain,
/// written as fast as its connection takes them.
async fn streaming_backend(len: usize) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < len {
                    let n = chunk.len().min(len - sent);
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    port
}

async fn streaming_proxy(len: usize) -> Running {
    let port = streaming_backend(len).await;
    let p = proxy_to(port, "client_idle_timeout = \"1s\"").await;
    p
}

/// A client that stops reading its response is dropped once it has taken
/// nothing for the idle timeout, as by nginx's `send_timeout` and
/// HAProxy's `timeout client`: its connection (and the backend's, and
/// the backend's request) used to stay open for as long as the client
/// did, a request in progress being exempt from every client timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_at_the_idle_timeout() {
    const LEN: usize = 1 << 30;
    let p = streaming_proxy(LEN).await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            got += n;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "still open 3 s after the client stopped reading (read {got} bytes since)"
    );
    assert!(got < LEN, "the whole response came");
    p.stop().await;
}

/// The same over HTTP/2, where the client stops taking the body by
/// sending no window updates: nothing at all moves on its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_that_sends_no_window_updates_is_dropped() {
    let p = streaming_proxy(1 << 30).await;
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut tx, conn) = h2_over(tcp).await;
    let req = http::Request::get(p.url("web", "/big"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = tx.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // The body, never read: its window is never updated.
    let _body = res.into_body();
    let closed = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(closed.is_ok(), "still open 6 s after the client stopped");
    p.stop().await;
}

/// A client that reads with pauses shorter than the idle timeout gets its
/// whole response, however long that takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_with_pauses_gets_the_whole_response() {
    const LEN: usize = 48 << 20;
    let p = streaming_proxy(LEN).await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0usize;
    let mut since_pause = 0usize;
    let mut pauses = 0;
    let mut buf = vec![0u8; 1 << 16];
    let started = Instant::now();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("bytes within 5 s")
            .expect("no error");
        assert!(n > 0, "closed after {got} bytes, {pauses} pauses");
        got += n;
        since_pause += n;
        if got >= LEN {
            break;
        }
        if since_pause >= 8 << 20 {
            since_pause = 0;
            pauses += 1;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    assert!(pauses >= 4, "{pauses} pauses in {:?}", started.elapsed());
    p.stop().await;
}

/// A backend that answers the first request of each connection with the
/// body it got (`got=<body>`, kept alive), then reads the next request,
/// body included, and closes without answering (its keep-alive timeout
/// ending as the request arrives). Returns its port and the connections
/// it accepted.
async fn closes_after_one_body() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncBufReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = std::sync::Arc::new(AtomicUsize::new(0));
    let n = conns.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut s = tokio::io::BufReader::new(s);
                for first in [true, false] {
                    let mut len = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match s.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {
                                let l = line.to_ascii_lowercase();
                                if let Some(v) = l.strip_prefix("content-length:") {
                                    len = v.trim().parse().unwrap();
                                }
                            }
                        }
                    }
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).await.is_err() || !first {
                        return;
                    }
                    let answer = format!("got={}", String::from_utf8_lossy(&body));
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                        answer.len()
                    );
                    let _ = s.get_mut().write_all(head.as_bytes()).await;
                    let _ = s.get_mut().write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    (port, conns)
}

/// An idempotent request with a small body (a REST client's PUT with its
/// JSON) on a pooled connection the backend closes under it goes out
/// again on a new connection, body and all, as a GET does: it used to
/// get 502, its body having been read once. A body larger than what is
/// kept for that (64 KiB) cannot be sent again: 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_put_on_a_pooled_connection_closed_under_it_is_sent_again() {
    use std::sync::atomic::Ordering;
    let (port, conns) = closes_after_one_body().await;
    let p = proxy_to(port, "").await;
    let c = client();
    let first = send(&c, "PUT", &p.url("web", "/item"), &[], "{\"a\":1}").await;
    assert_eq!(first.body, "got={\"a\":1}");
    let again = send(&c, "PUT", &p.url("web", "/item"), &[], "{\"a\":2}").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, "got={\"a\":2}");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // The pooled connection of that second PUT, closed under a PUT too
    // large to keep.
    let big = "x".repeat(200 * 1024);
    let too_big = send(&c, "PUT", &p.url("web", "/item"), &[], &big).await;
    assert_eq!(too_big.status, 502);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "the large PUT was sent again"
    );
    p.stop().await;
}
