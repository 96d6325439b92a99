//! L7 proxy over TLS with throwaway certificates: SNI picks the
//! certificate, mutual TLS, HTTP/2 end to end, TLS 1.2, session resumption.

mod l7_support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use l7_support::*;
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An https listener with certificates for a.test (default), b.test,
/// *.wild.test and, after it, exact.wild.test; `extra` lines added to the
/// listener.
async fn https_proxy(pki: &Pki, backend: &Backend, extra: &str) -> Running {
    let (a_crt, a_key, _) = pki.server("a", &["a.test"]);
    let (b_crt, b_key, _) = pki.server("b", &["b.test"]);
    let (w_crt, w_key, _) = pki.server("wild", &["*.wild.test"]);
    let (e_crt, e_key, _) = pki.server("exactwild", &["exact.wild.test"]);
    let (p, _) = start_proxy(&["tls"], |ports| {
        let mut t = listener("tls", "https", ports[0], extra);
        for (c, k) in [
            (&a_crt, &a_key),
            (&b_crt, &b_key),
            (&w_crt, &w_key),
            (&e_crt, &e_key),
        ] {
            t.push_str(&certificate(c, k));
        }
        t.push_str(&backend.toml("listener.backend", 100));
        t
    })
    .await;
    p
}

/// A `[[listener.certificate]]` table of the listener before it.
fn certificate(crt: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "\n  [[listener.certificate]]\n  cert = \"{}\"\n  key = \"{}\"\n",
        crt.display(),
        key.display()
    )
}

/// Sends one HTTP/1.1 request on a TLS stream and returns the response text.
async fn h1_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
) -> std::io::Result<String> {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate() {
    let pki = Pki::new("sni");
    let backend = Backend::start("a").await;
    let p = https_proxy(&pki, &backend, "").await;
    let (_, _, _) = pki.server("unused", &["unused.test"]);
    let cfg = pki.client_config(&[b"http/1.1"], None);
    let leaf = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    let der = |file: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(pki.dir.join(format!("{file}.crt")))
            .unwrap()
    };
    for (sni, file) in [
        ("b.test", "b"),
        ("x.wild.test", "wild"),
        // An exact name wins over an earlier wildcard.
        ("exact.wild.test", "exactwild"),
        ("deep.x.wild.test", "a"),
        ("a.test", "a"),
    ] {
        let s = tls_connect(cfg.clone(), p.addr("tls"), sni).await;
        if file == "a" && sni != "a.test" {
            // The default certificate does not name this host: the client
            // rejects it, as it should.
            assert!(s.is_err(), "{sni}");
            continue;
        }
        let mut s = s.unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(leaf(&s), der(file), "{sni}");
        let r = h1_over(&mut s, "/headers").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("x-forwarded-proto: https"), "{r}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_rejects_a_client_without_a_certificate() {
    let pki = Pki::new("mtls");
    let backend = Backend::start("a").await;
    let extra = format!("client_ca = \"{}\"", pki.ca_path().display());
    let p = https_proxy(&pki, &backend, &extra).await;

    let anonymous = pki.client_config(&[b"http/1.1"], None);
    let refused = match tls_connect(anonymous, p.addr("tls"), "a.test").await {
        // TLS 1.3: the client's handshake completes before the server
        // checks its certificate; the refusal arrives on the first read.
        Ok(mut s) => match h1_over(&mut s, "/").await {
            Ok(r) => !r.starts_with("HTTP/1.1 200"),
            Err(_) => true,
        },
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate was served");
    assert_eq!(backend.hits(), 0);
    // Counted as a failed handshake (the server side fails once it reads
    // the empty certificate message, possibly after the client's read).
    let t = std::time::Instant::now();
    while p.metrics.tls_failures_of("tls") == 0 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.metrics.tls_failures_of("tls"), 1);

    let (c_crt, c_key, _) = pki.client("client");
    let with_cert = pki.client_config(&[b"http/1.1"], Some((&c_crt, &c_key)));
    let mut s = tls_connect(with_cert, p.addr("tls"), "a.test")
        .await
        .unwrap();
    let r = h1_over(&mut s, "/").await.unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        p.metrics.tls_failures_of("tls"),
        1,
        "a good handshake counts nothing"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_end_to_end() {
    let pki = Pki::new("h2");
    let backend = Backend::start("a").await;
    let p = https_proxy(&pki, &backend, "").await;
    let cfg = pki.client_config(&[b"h2"], None);
    let s = tls_connect(cfg, p.addr("tls"), "a.test").await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, _conn) = h2_over(s).await;
    // Several streams at once on the one connection.
    let mut tasks = Vec::new();
    for i in 0..5 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(format!("https://a.test/version?i={i}"))
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(Full::new(Bytes::new()))
                .unwrap();
            collect(sender.send_request(req).await.unwrap()).await
        }));
    }
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.version, http::Version::HTTP_2);
        assert_eq!(got.body, "HTTP/1.1", "backends get HTTP/1.1");
    }
    // Host from :authority, cookies joined for the HTTP/1.1 backend.
    let mut sender = sender.clone();
    let req = http::Request::get("https://a.test/headers")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = collect(sender.send_request(req).await.unwrap()).await;
    assert!(got.body.contains("host: a.test\n"), "{}", got.body);
    assert!(got.body.contains("cookie: a=1; b=2\n"), "{}", got.body);
    p.stop().await;
}

/// A session made where no client certificate was asked for must not
/// resume where one is: a resumed handshake skips client-certificate
/// verification. Two listeners, one with mutual TLS; a client without a
/// certificate gets a session from the open one (TLS 1.3 ticket, TLS 1.2
/// ticket or session id) and offers it to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_another_listener_does_not_bypass_mutual_tls() {
    let pki = Pki::new("mtlsres");
    let backend = Backend::start("a").await;
    let (crt, key, _) = pki.server("a", &["a.test"]);
    let cert = certificate(&crt, &key);
    let ca = format!("client_ca = \"{}\"", pki.ca_path().display());
    let (p, _) = start_proxy(&["open", "mtls"], |ports| {
        format!(
            "{}{cert}{}{}{cert}{}",
            listener("open", "https", ports[0], ""),
            backend.toml("listener.backend", 100),
            listener("mtls", "https", ports[1], &ca),
            backend.toml("listener.backend", 100),
        )
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = |tickets: bool| {
        let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        if !tickets {
            c.resumption = rustls::client::Resumption::default()
                .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
        }
        std::sync::Arc::new(c)
    };
    for (what, cfg) in [
        ("TLS 1.3", pki.client_config(&[b"http/1.1"], None)),
        ("TLS 1.2 ticket", tls12(true)),
        ("TLS 1.2 session id", tls12(false)),
    ] {
        let mut s = tls_connect(cfg.clone(), p.addr("open"), "a.test")
            .await
            .unwrap();
        assert!(h1_over(&mut s, "/")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200"));
        let hits = backend.hits();
        let served = match tls_connect(cfg, p.addr("mtls"), "a.test").await {
            Ok(mut s) => h1_over(&mut s, "/secret")
                .await
                .is_ok_and(|r| r.starts_with("HTTP/1.1 200")),
            Err(_) => false,
        };
        assert!(!served, "{what}: served without a client certificate");
        assert_eq!(backend.hits(), hits, "{what}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_tls13_and_session_resumption() {
    let pki = Pki::new("resume");
    let backend = Backend::start("a").await;
    let p = https_proxy(&pki, &backend, "").await;

    // TLS 1.2 only client.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls12 = std::sync::Arc::new(tls12);
    let versions = [
        rustls::ProtocolVersion::TLSv1_2,
        rustls::ProtocolVersion::TLSv1_3,
    ];
    for (cfg, version) in [tls12, pki.client_config(&[b"http/1.1"], None)]
        .into_iter()
        .zip(versions)
    {
        let mut s = tls_connect(cfg.clone(), p.addr("tls"), "a.test")
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
        // A client offering both gets TLS 1.3.
        assert_eq!(s.get_ref().1.protocol_version(), Some(version));
        assert!(h1_over(&mut s, "/")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200"));
        // The same client config remembers the session: resumed.
        let mut s = tls_connect(cfg, p.addr("tls"), "a.test").await.unwrap();
        assert_eq!(
            s.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{:?}",
            s.get_ref().1.protocol_version()
        );
        assert!(h1_over(&mut s, "/")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200"));
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listener_redirects_to_the_https_listener_port() {
    let pki = Pki::new("redir");
    let (crt, key, _) = pki.server("a", &["a.test"]);
    let (p, _) = start_proxy(&["plain", "tls"], |ports| {
        format!(
            "{}{}{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = 9\n",
            listener("plain", "http", ports[0], "redirect_https = true"),
            listener("tls", "https", ports[1], ""),
            certificate(&crt, &key)
        )
    })
    .await;
    let tls_port = p.addr("tls").port();
    let got = get(&client(), &p.url("plain", "/x"), &[("host", "a.test")]).await;
    assert_eq!(got.status, 301);
    assert_eq!(
        got.header("location").unwrap(),
        format!("https://a.test:{tls_port}/x")
    );
    p.stop().await;
}

/// A reload with a new certificate: new handshakes get it, a connection
/// made before keeps working; a reload whose certificate does not load is
/// refused and the running one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_the_certificate_live() {
    let pki = Pki::new("rcert");
    let backend = Backend::start("a").await;
    let (old_crt, old_key, old_der) = pki.server("old", &["a.test"]);
    let (new_crt, new_key, new_der) = pki.server("new", &["a.test"]);
    let config = |port: u16, crt: &std::path::Path, key: &std::path::Path| {
        format!(
            "{}{}{}",
            listener("tls", "https", port, ""),
            certificate(crt, key),
            backend.toml("listener.backend", 100)
        )
    };
    let (p, _) = start_proxy(&["tls"], |ports| config(ports[0], &old_crt, &old_key)).await;
    let port = p.addr("tls").port();
    let cfg = pki.client_config(&[b"http/1.1"], None);
    let peer_cert = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref().1.peer_certificates().unwrap()[0].clone()
    };

    let before = tls_connect(cfg.clone(), p.addr("tls"), "a.test")
        .await
        .unwrap();
    assert_eq!(peer_cert(&before), old_der);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(before))
            .await
            .unwrap();
    tokio::spawn(conn);
    let ask = || {
        http::Request::get("/")
            .header("host", "a.test")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(sender.send_request(ask()).await.unwrap().status(), 200);

    p.reload(&config(port, &new_crt, &new_key)).await.unwrap();
    // A fresh client (no session to resume) sees the new certificate.
    let fresh = pki.client_config(&[b"http/1.1"], None);
    let s = tls_connect(fresh, p.addr("tls"), "a.test").await.unwrap();
    assert_eq!(peer_cert(&s), new_der);
    // The connection from before goes on.
    sender.ready().await.expect("still open");
    assert_eq!(sender.send_request(ask()).await.unwrap().status(), 200);

    // A reload that cannot be applied (a port in use) changes nothing,
    // the certificate neither.
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let refused = format!(
        "{}{}{}",
        config(port, &old_crt, &old_key),
        listener("busy", "http", busy_port, ""),
        backend.toml("listener.backend", 100)
    );
    assert!(p.reload(&refused).await.is_err());
    let fresh = pki.client_config(&[b"http/1.1"], None);
    let mut s = tls_connect(fresh, p.addr("tls"), "a.test").await.unwrap();
    assert_eq!(peer_cert(&s), new_der);
    assert!(h1_over(&mut s, "/")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    p.stop().await;
}

/// A connection whose TLS handshake is not done has no request to finish:
/// a shutdown, or a reload that removes its listener, closes it at once
/// (as it closes an idle plain-http connection), rather than waiting for
/// the handshake timeout (`request_header_timeout`, 60 s) or the whole
/// shutdown grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_handshake_does_not_hold_up_shutdown_or_removal() {
    let pki = Pki::new("pending");
    let backend = Backend::start("a").await;
    let (crt, key, _) = pki.server("a", &["a.test"]);
    let tls = |port: u16| {
        format!(
            "{}{}{}",
            listener("tls", "https", port, ""),
            certificate(&crt, &key),
            backend.toml("listener.backend", 100)
        )
    };
    let (p, _) = start_proxy(&["tls", "plain"], |ports| {
        format!(
            "{}{}{}",
            tls(ports[0]),
            listener("plain", "http", ports[1], ""),
            backend.toml("listener.backend", 100)
        )
    })
    .await;
    let plain = p.addr("plain");
    // Connected, no ClientHello yet (a stalled client, or a browser's
    // spare connection).
    let mut stalled = tokio::net::TcpStream::connect(p.addr("tls")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Removed by a reload: its address stops draining promptly.
    let text = format!(
        "{}{}",
        listener("plain", "http", plain.port(), ""),
        backend.toml("listener.backend", 100)
    );
    p.reload(&text).await.unwrap();
    let handle = p.handle.as_ref().unwrap();
    let t = std::time::Instant::now();
    while !handle.draining_vips().is_empty() && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        handle.draining_vips().is_empty(),
        "still draining after {:?}",
        t.elapsed()
    );
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(1), stalled.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");

    // Shutdown with another one pending on a listener that stays.
    let port = {
        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        free.local_addr().unwrap().port()
    };
    p.reload(&format!("{}{text}", tls(port))).await.unwrap();
    let addr = p.handle.as_ref().unwrap().local_addr("tls").await.unwrap();
    let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    p.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        t.elapsed()
    );
}

/// ALPN: a client offering only `http/1.0` (curl 8's `--http1.0`) is
/// served, as nginx serves it, rather than refused with a
/// `no_application_protocol` alert; one offering none gets HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_offering_http10_or_no_alpn_are_served() {
    let pki = Pki::new("alpn10");
    let backend = Backend::start("a").await;
    let p = https_proxy(&pki, &backend, "").await;
    for (alpn, version) in [(&[&b"http/1.0"[..]][..], "HTTP/1.0"), (&[][..], "HTTP/1.1")] {
        let cfg = pki.client_config(alpn, None);
        let mut s = tls_connect(cfg, p.addr("tls"), "a.test")
            .await
            .unwrap_or_else(|e| panic!("{alpn:?}: {e}"));
        assert_eq!(s.get_ref().1.alpn_protocol(), alpn.first().copied());
        s.write_all(
            format!("GET /version {version}\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(out.starts_with(&format!("{version} 200")), "{out}");
        assert!(out.ends_with(version), "{out}");
    }
    p.stop().await;
}

/// An answer sent before the request body was read (503: the backend is
/// down) reaches a client still uploading over TLS too: the lingering close
/// is below TLS (see the plain-HTTP test in l7_http.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_reaches_a_client_still_sending_its_body_over_tls() {
    let pki = Pki::new("linger");
    let backend = Backend::start("a").await;
    let p = https_proxy(&pki, &backend, "").await;
    p.set_down("tls", backend.addr, true);
    let cfg = pki.client_config(&[b"http/1.1"], None);
    let mut s = tls_connect(cfg, p.addr("tls"), "a.test").await.unwrap();
    let len = 64 << 20;
    let head = format!("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: {len}\r\n\r\n");
    match upload(&mut s, &head, len).await {
        Upload::Answered(r) => assert!(r.starts_with("HTTP/1.1 503 "), "{r:?}"),
        Upload::SendFailed { sent, error } => {
            panic!("the upload failed after {sent} of {len} bytes, no answer seen: {error}")
        }
    }
    assert_eq!(backend.hits(), 0);
    p.stop().await;
}

/// A certificate renewal as certbot does it: the configuration is left as
/// it is and the files behind its paths change (in place, or by swapping
/// a symlink); a reload puts the new certificate in service. A renewal
/// that left a key not matching the certificate is refused by the proxy
/// itself (also when the files change after the configuration was
/// checked) and the running certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_the_same_text_picks_up_renewed_files() {
    let pki = Pki::new("renew");
    let backend = Backend::start("a").await;
    let (one_crt, one_key, one_der) = pki.server("one", &["a.test"]);
    let (two_crt, two_key, two_der) = pki.server("two", &["a.test"]);
    let (_, other_key, _) = pki.server("other", &["a.test"]);
    let live = pki.dir.join("live");
    std::fs::create_dir(&live).unwrap();
    let (crt, key) = (live.join("cert.pem"), live.join("privkey.pem"));
    std::fs::copy(&one_crt, &crt).unwrap();
    std::fs::copy(&one_key, &key).unwrap();
    let (p, text) = start_proxy(&["tls"], |ports| {
        format!(
            "{}{}{}",
            listener("tls", "https", ports[0], ""),
            certificate(&crt, &key),
            backend.toml("listener.backend", 100)
        )
    })
    .await;
    let served = || async {
        let cfg = pki.client_config(&[b"http/1.1"], None);
        let s = tls_connect(cfg, p.addr("tls"), "a.test").await.unwrap();
        s.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(served().await, one_der);

    // Rewritten in place.
    std::fs::write(&crt, std::fs::read(&two_crt).unwrap()).unwrap();
    std::fs::write(&key, std::fs::read(&two_key).unwrap()).unwrap();
    p.reload(&text).await.unwrap();
    assert_eq!(served().await, two_der);

    // Symlinks swapped by rename, as in certbot's live/ directory.
    let swap = |link: &std::path::Path, target: &std::path::Path| {
        let tmp = live.join("swap.tmp");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, link).unwrap();
    };
    swap(&crt, &one_crt);
    swap(&key, &one_key);
    p.reload(&text).await.unwrap();
    assert_eq!(served().await, one_der);

    // Checked, then broken before the proxy reads the files.
    let cfg = slb::config::parse(&text).unwrap();
    swap(&key, &other_key);
    let err = p
        .handle
        .as_ref()
        .unwrap()
        .reload(&cfg.listeners)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listener tls: certificate[0]: the key in") && err.contains("privkey.pem"),
        "{err}"
    );
    assert_eq!(served().await, one_der);
    p.stop().await;
}

/// `client_ca` renewed behind the same path (the configuration text
/// unchanged): a reload verifies client certificates against the new
/// bundle, and a session made under the old one does not resume (a
/// resumed handshake skips verification, and the old CA's clients are
/// no longer admitted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_renewed_client_ca_file_drops_the_old_sessions() {
    let old = Pki::new("caold");
    let new = Pki::new("canew");
    let backend = Backend::start("a").await;
    let (crt, key, _) = old.server("a", &["a.test"]);
    let ca = old.dir.join("client-ca.pem");
    std::fs::write(&ca, &old.ca_pem).unwrap();
    let (p, text) = start_proxy(&["tls"], |ports| {
        format!(
            "{}{}{}",
            listener(
                "tls",
                "https",
                ports[0],
                &format!("client_ca = \"{}\"", ca.display())
            ),
            certificate(&crt, &key),
            backend.toml("listener.backend", 100)
        )
    })
    .await;
    let (old_crt, old_key, _) = old.client("oldclient");
    let (new_crt, new_key, _) = new.client("newclient");
    let old_client = old.client_config(&[b"http/1.1"], Some((&old_crt, &old_key)));
    // The new CA's client, trusting the old PKI's server certificate.
    let new_client = {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&new_crt)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let k = rustls::pki_types::PrivateKeyDer::from_pem_file(&new_key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(old.ca_der.clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, k)
            .unwrap();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(c)
    };
    let served = |cfg: std::sync::Arc<rustls::ClientConfig>| async {
        match tls_connect(cfg, p.addr("tls"), "a.test").await {
            Ok(mut s) => {
                let resumed = s.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
                let ok = h1_over(&mut s, "/")
                    .await
                    .is_ok_and(|r| r.starts_with("HTTP/1.1 200"));
                (ok, resumed)
            }
            Err(_) => (false, false),
        }
    };
    // A session under the old CA, resumable while it is in force.
    assert_eq!(served(old_client.clone()).await, (true, false));
    assert_eq!(served(old_client.clone()).await, (true, true));
    assert!(!served(new_client.clone()).await.0);

    std::fs::write(&ca, &new.ca_pem).unwrap();
    p.reload(&text).await.unwrap();
    // The old client's remembered session does not get it in, nor does
    // its certificate; the new CA's client is served.
    assert_eq!(served(old_client).await, (false, false));
    assert_eq!(served(new_client).await, (true, false));
    p.stop().await;
}
