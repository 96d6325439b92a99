//! The access log (SPEC §5), captured from the `slb::access` target. In a
//! test binary of its own: `tracing` caches, per call site, whether any
//! subscriber wants it, and the other tests' requests (with no subscriber,
//! on other threads) would race this test's subscriber for that cache.

mod l7_support;

use std::time::Duration;

use l7_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Access-log lines captured by a test.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The line of the request whose request line contains `needle`.
    fn line(&self, needle: &str) -> String {
        let lines = self.lines();
        let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
        assert_eq!(found.len(), 1, "one line with {needle:?} in {lines:#?}");
        found[0].clone()
    }
}

/// The access log (SPEC §5): one line per request with status, upstream
/// address and times, also for the proxy's own error pages and for
/// requests the client abandoned. (A current-thread runtime: the
/// subscriber is this thread's, and every task of the proxy runs on it.)
#[test]
fn access_log_lines() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("slb::access=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a_addr, refused_addr, ws_port) = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let a = Backend::start("a").await;
            let refused = refused_addr().await;
            let ws = ScriptedBackend::start(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\ntunnelled",
            )
            .await;
            let (p, _) = start_proxy(&["web", "down", "ws"], |ports| {
                format!(
                    "{}{}{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n",
                    listener("web", "http", ports[0], "max_header_size = 65536"),
                    a.toml("listener.backend", 100),
                    listener("down", "http", ports[1], ""),
                    refused.port(),
                    listener("ws", "http", ports[2], ""),
                    ws.port,
                )
            })
            .await;
            // A WebSocket handshake: logged when its 101 goes out.
            let mut s = TcpStream::connect(p.addr("ws")).await.unwrap();
            s.write_all(b"GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
            assert!(got.ends_with(b"tunnelled"), "{:?}", String::from_utf8_lossy(&got));
            let c = client();
            let got = get(&c, &p.url("web", "/ok?x=1"), &[]).await;
            assert_eq!(got.status, 200);
            let got = get(&c, &p.url("down", "/refused"), &[]).await;
            assert_eq!(got.status, 502);

            // Requests the server library answers itself: a bad header
            // line (400), a target over 64 KiB (414), more header fields
            // than it has room for (431).
            let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
            for i in 0..1100 {
                many.push_str(&format!("x{i}: y\r\n"));
            }
            many.push_str("\r\n");
            let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(70_000));
            for (raw, want) in [
                (&b"GET / HTTP/1.1\r\nbad header\r\n\r\n"[..], "400"),
                (long.as_bytes(), "414"),
                (many.as_bytes(), "431"),
            ] {
                let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
                s.write_all(raw).await.unwrap();
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                let got = String::from_utf8_lossy(&got);
                assert!(got.starts_with(&format!("HTTP/1.1 {want} ")), "{got:?}");
            }

            // A Host that is no host (400) is logged as a field of its
            // own: its spaces, quotes and tabs cannot forge the fields
            // after it.
            let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
            s.write_all(
                b"GET /forged HTTP/1.1\r\nHost: x\t\"GET /admin HTTP/1.1\" 200 1 -\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            assert!(got.starts_with(b"HTTP/1.1 400 "), "{:?}", String::from_utf8_lossy(&got));

            // An HTTP/2 stream reset while the backend works.
            let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
            let (mut sender, _conn) = h2_over(tcp).await;
            abandon(
                &mut sender,
                "http://x/sleep/1000",
                Duration::from_millis(200),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            p.stop().await;
            (a.addr, refused, ws.port)
        })
    });
    // After the request line: status, bytes, upstream, upstream time,
    // total time.
    let fields = |needle: &str| -> Vec<String> {
        let line = log.line(needle);
        let after = line.rsplit('"').next().unwrap().to_owned();
        after.split_whitespace().map(str::to_owned).collect()
    };
    let ok = fields("\"GET /ok?x=1 HTTP/1.1\"");
    let body = "backend=a path=/ok".len().to_string();
    assert_eq!(ok[..3], ["200", &body, &a_addr.to_string()], "{ok:?}");
    // The refused backend is named, as for any failed exchange.
    let refused = fields("\"GET /refused HTTP/1.1\"");
    assert_eq!(refused[0], "502", "{refused:?}");
    assert_eq!(refused[2], refused_addr.to_string(), "{refused:?}");
    assert!(refused[3].parse::<f64>().is_ok(), "{refused:?}");
    // No request line, host or upstream: what is known.
    for status in ["400", "414", "431"] {
        let line = log.line(&format!("\"-\" {status} "));
        let own = line.split_once("slb::access: ").unwrap().1;
        // After the time: client and host.
        let mut f = own.split_whitespace().skip(1);
        assert_eq!(f.next(), Some("127.0.0.1"), "{line}");
        assert_eq!(f.next(), Some("-"), "{line}");
        let after = line.rsplit('"').next().unwrap().to_owned();
        let after: Vec<&str> = after.split_whitespace().collect();
        assert_eq!(after[..4], [status, "0", "-", "-"], "{line}");
        assert!(after[4].parse::<f64>().is_ok(), "{line}");
    }
    // Time, client, host, request line (three words in quotes), then
    // the five fields after it.
    let forged = log.line("/forged");
    let own = forged.split_once("slb::access: ").unwrap().1;
    let words: Vec<&str> = own.split_whitespace().collect();
    assert_eq!(words.len(), 11, "{own:?}");
    assert_eq!(own.matches('"').count(), 2, "{own:?}");
    assert_eq!(words[3..6], ["\"GET", "/forged", "HTTP/1.1\""], "{own:?}");
    assert_eq!(words[6], "400", "{own:?}");
    // The handshake's line: 101, no body bytes, its backend; the tunnel's
    // bytes are not counted (README).
    let ws = fields("\"GET /socket HTTP/1.1\"");
    assert_eq!(
        ws[..3],
        ["101", "0", &format!("127.0.0.1:{ws_port}")],
        "{ws:?}"
    );
    let reset = fields("\"GET /sleep/1000 HTTP/2.0\"");
    assert_eq!(reset[..2], ["499", "0"], "{reset:?}");
    // Given up 200 ms after it was sent: the proxy may start the clock
    // late under load (and its coarse clock reads up to a tick late), but
    // the total covers the time the request ran.
    assert!(reset[4].parse::<f64>().unwrap() >= 0.1, "{reset:?}");
}
