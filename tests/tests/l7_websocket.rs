//! WebSocket upgrades through the L7 proxy: the tunnel carries messages
//! both ways (ws and wss), passes closes and resets on, is closed after its
//! idle timeout and when its listener is removed; HTTP/2 clients are not
//! offered WebSocket (RFC 8441).

mod l7_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use l7_support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Request targets of the handshakes an echo server received.
static TARGETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
/// Target and header (`name: value` lines) of every handshake.
static HEADS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A WebSocket echo server; returns its address. Records the target of
/// every handshake in `TARGETS` (and with its header in `HEADS`). Text
/// `push <n>` gets `n` messages 300 ms apart (and nothing else), `reset`
/// an RST of the connection.
async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // The callback's type is tungstenite's, large error and all.
                #[allow(clippy::result_large_err)]
                let record = |req: &Request, res: Response| {
                    TARGETS.lock().unwrap().push(req.uri().to_string());
                    let head: String = req
                        .headers()
                        .iter()
                        .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                        .collect();
                    HEADS.lock().unwrap().push(format!("{}\n{head}", req.uri()));
                    Ok(res)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, record).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = &m {
                        if let Some(n) = t.as_str().strip_prefix("push ") {
                            for i in 0..n.parse::<usize>().unwrap() {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                if ws.send(Message::text(format!("pushed {i}"))).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        if t.as_str() == "reset" {
                            // Linger 0: closing sends an RST.
                            ws.get_ref().set_zero_linger().unwrap();
                            return;
                        }
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A WebSocket client connection to `path` at `addr` (plain ws), with the
/// handshake's response.
async fn ws_connect(
    addr: SocketAddr,
    path: &str,
) -> (
    tokio_tungstenite::WebSocketStream<TcpStream>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .unwrap()
}

async fn proxy_to(echo: SocketAddr, extra: &str) -> Running {
    let (p, _) = start_proxy(&["ws"], |ports| {
        format!(
            "{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n",
            listener("ws", "http", ports[0], extra),
            echo.port()
        )
    })
    .await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_pass_both_ways() {
    let (echo, task) = echo_server().await;
    let p = proxy_to(echo, "").await;
    let (mut ws, res) = ws_connect(p.addr("ws"), "/chat?room=1").await;
    assert_eq!(res.status(), 101);
    // The handshake reaches the backend in origin-form, as any request.
    assert!(
        TARGETS.lock().unwrap().contains(&"/chat?room=1".to_owned()),
        "{:?}",
        TARGETS.lock().unwrap()
    );
    for i in 0..20 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    assert_eq!(p.metrics.requests_in_class("ws", "1xx"), 1);
    task.abort();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_is_closed_after_the_idle_timeout() {
    let (echo, task) = echo_server().await;
    let p = proxy_to(echo, "idle_timeout = \"1s\"").await;
    let (mut ws, _) = ws_connect(p.addr("ws"), "/").await;
    // Traffic keeps it open past the timeout...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ws.send(Message::text("ping")).await.unwrap();
        assert!(ws.next().await.unwrap().is_ok());
    }
    // ...silence closes it.
    let t = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("tunnel closed in time");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "unexpected message: {end:?}"
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    task.abort();
    p.stop().await;
}

/// The next message within 5 s.
async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message within 5 s")
        .expect("a message")
        .expect("a message");
    m.into_text().unwrap().as_str().to_owned()
}

/// The stream ends (close frame, EOF or error) within `within`.
async fn ends_within<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, within: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let t = Instant::now();
    loop {
        let left = within.saturating_sub(t.elapsed());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("the tunnel is still open after {within:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(m))) => assert!(!m.is_text(), "unexpected message: {m:?}"),
        }
    }
}

/// An https listener `wss` (certificate for ws.test) over `echo`.
async fn wss_proxy(pki: &Pki, echo: SocketAddr) -> Running {
    let (crt, key, _) = pki.server("ws", &["ws.test"]);
    let (p, _) = start_proxy(&["wss"], |ports| {
        format!(
            "{}\n  [[listener.certificate]]\n  cert = \"{}\"\n  key = \"{}\"\n\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n",
            listener("wss", "https", ports[0], ""),
            crt.display(),
            key.display(),
            echo.port()
        )
    })
    .await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_an_https_listener() {
    let pki = Pki::new("wss");
    let (echo, task) = echo_server().await;
    let p = wss_proxy(&pki, echo).await;
    // tungstenite speaks HTTP/1.1 (ALPN says so).
    let cfg = pki.client_config(&[b"http/1.1"], None);
    let tls = tls_connect(cfg, p.addr("wss"), "ws.test").await.unwrap();
    let url = "wss://ws.test/secure?x=1";
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
    let (mut ws, res) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    // tungstenite checked Sec-WebSocket-Accept; the upgrade header came
    // through too.
    assert_eq!(res.status(), 101);
    assert_eq!(
        res.headers()
            .get("upgrade")
            .map(|v| v.to_str().unwrap().to_ascii_lowercase()),
        Some("websocket".into())
    );
    let head = HEADS
        .lock()
        .unwrap()
        .iter()
        .find(|h| h.starts_with("/secure?x=1\n"))
        .cloned()
        .expect("the handshake reached the backend");
    for want in [
        "x-forwarded-proto: https\n",
        "x-forwarded-for: 192.0.2.1, 127.0.0.1\n",
        "x-real-ip: 127.0.0.1\n",
        &format!("x-forwarded-port: {}\n", p.addr("wss").port()),
        "host: ws.test\n",
        "sec-websocket-key: ",
    ] {
        assert!(head.contains(want), "{want:?} missing in:\n{head}");
    }
    for i in 0..5 {
        ws.send(Message::text(format!("tls {i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("tls {i}"));
    }
    // A close goes through and its answer comes back.
    ws.close(None).await.unwrap();
    ends_within(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(p.metrics.requests_in_class("wss", "1xx"), 1);
    task.abort();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_traffic_alone_keeps_a_tunnel_open() {
    let (echo, task) = echo_server().await;
    let p = proxy_to(echo, "idle_timeout = \"1s\"").await;
    let (mut ws, _) = ws_connect(p.addr("ws"), "/").await;
    // 8 pushes 300 ms apart: 2.4 s with nothing from the client.
    ws.send(Message::text("push 8")).await.unwrap();
    for i in 0..8 {
        assert_eq!(next_text(&mut ws).await, format!("pushed {i}"));
    }
    task.abort();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reset_ends_the_tunnel_at_once() {
    let (echo, task) = echo_server().await;
    let p = proxy_to(echo, "").await;
    let (mut ws, _) = ws_connect(p.addr("ws"), "/").await;
    ws.send(Message::text("reset")).await.unwrap();
    // Not after the 60 s idle timeout.
    ends_within(&mut ws, Duration::from_secs(3)).await;
    task.abort();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_listener_closes_its_tunnels() {
    let (echo, task) = echo_server().await;
    let p = proxy_to(echo, "").await;
    let (mut ws, _) = ws_connect(p.addr("ws"), "/").await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "before");
    // The listener moves to another port: the old one is removed.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    p.reload(&format!(
        "{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n",
        listener("ws", "http", port, ""),
        echo.port()
    ))
    .await
    .unwrap();
    // As the removed listener's other connections, its tunnels close
    // (rather than live on at an address no longer served, up to forever
    // while they carry traffic).
    ends_within(&mut ws, Duration::from_secs(3)).await;
    // The new port carries WebSocket.
    let (mut ws, _) = ws_connect(SocketAddr::from(([127, 0, 0, 1], port)), "/").await;
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "after");
    task.abort();
    p.stop().await;
}

/// RFC 8441 is not done: an HTTP/2 connection does not announce extended
/// CONNECT, and one sent anyway gets no tunnel (an error, not a hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_websocket_is_refused() {
    use bytes::Bytes;
    use http_body_util::Full;
    let pki = Pki::new("wsh2");
    let (echo, task) = echo_server().await;
    let p = wss_proxy(&pki, echo).await;
    let tls = tls_connect(pki.client_config(&[b"h2"], None), p.addr("wss"), "ws.test")
        .await
        .unwrap();
    let (mut sender, _conn) = h2_over(tls).await;
    let mut req = http::Request::builder()
        .method("CONNECT")
        .uri("https://ws.test/chat")
        .header("sec-websocket-version", "13")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let r = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("an answer, not a hang");
    match r {
        // What happens: the proxy resets the stream (PROTOCOL_ERROR).
        Err(_) => {}
        Ok(res) => assert!(
            res.status().is_client_error() || res.status().is_server_error(),
            "{res:?}"
        ),
    }
    assert!(
        !TARGETS.lock().unwrap().contains(&"/chat".to_owned()),
        "no handshake reached the backend"
    );
    // The connection still serves ordinary requests.
    let req = http::Request::get("https://ws.test/plain")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    task.abort();
    p.stop().await;
}

/// A WebSocket server that answers `who` with its name.
async fn named_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(Message::text(name)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// `wlc` counts an open tunnel as its backend's request in progress (a
/// WebSocket is one long request): with three tunnels open on one backend,
/// the next three go to the other. Without the count both would look idle
/// and the tie would alternate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wlc_counts_open_tunnels() {
    let (a, ta) = named_echo("a").await;
    let (b, tb) = named_echo("b").await;
    let (p, _) = start_proxy(&["ws"], |ports| {
        format!(
            "{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n\
             \n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {}\n",
            listener("ws", "http", ports[0], "scheduler = \"wlc\""),
            a.port(),
            b.port()
        )
    })
    .await;
    let open = || async {
        let (mut ws, _) = ws_connect(p.addr("ws"), "/").await;
        ws.send(Message::text("who")).await.unwrap();
        let name = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .to_string();
        (name, ws)
    };
    // Three tunnels on "a", while "b" is held down.
    let b_addr: SocketAddr = format!("127.0.0.1:{}", b.port()).parse().unwrap();
    p.set_down("ws", b_addr, true);
    let mut held = Vec::new();
    for _ in 0..3 {
        let (name, ws) = open().await;
        assert_eq!(name, "a");
        held.push(ws);
    }
    p.set_down("ws", b_addr, false);
    let mut next = Vec::new();
    for _ in 0..3 {
        let (name, ws) = open().await;
        next.push(name);
        held.push(ws);
    }
    assert_eq!(next, ["b", "b", "b"]);
    ta.abort();
    tb.abort();
    p.stop().await;
}

/// A WebSocket handshake carrying a body is refused (400): the body could
/// be neither sent to the backend nor told apart from the tunnel's first
/// bytes, and the backend would wait for it. The backend sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_with_a_body_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (echo, task) = echo_server().await;
    let p = proxy_to(echo, "").await;
    let mut s = TcpStream::connect(p.addr("ws")).await.unwrap();
    s.write_all(
        b"GET /body HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Content-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    let mut got = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
        .await
        .expect("an answer in time")
        .unwrap();
    let head = String::from_utf8_lossy(&got[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        !TARGETS.lock().unwrap().iter().any(|t| t == "/body"),
        "the backend got it"
    );
    task.abort();
    p.stop().await;
}

/// A handshake as a WebSocket client sends it, with a subprotocol and an
/// extension offered.
const HANDSHAKE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// Reads a response head (up to the blank line) from `s`; returns it and
/// any bytes read after it.
async fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).to_lowercase(), rest);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response head within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_and_extension_fields_pass_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // To the backend: what the client offered.
    let (echo, task) = echo_server().await;
    let p = proxy_to(echo, "").await;
    let mut s = TcpStream::connect(p.addr("ws")).await.unwrap();
    s.write_all(HANDSHAKE).await.unwrap();
    let (head, _) = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    let heads = HEADS.lock().unwrap().clone();
    let ours = heads
        .iter()
        .find(|h| h.contains("sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ=="))
        .unwrap_or_else(|| panic!("{heads:?}"));
    assert!(
        ours.contains("sec-websocket-protocol: chat, superchat"),
        "{ours}"
    );
    assert!(
        ours.contains("sec-websocket-extensions: permessage-deflate; client_max_window_bits"),
        "{ours}"
    );
    task.abort();
    p.stop().await;

    // To the client: what the backend chose, and whatever bytes follow
    // the 101 (the proxy does not read them), then its close.
    let backend = ScriptedBackend::start(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n\x00\xffnot a frame",
    )
    .await;
    let p = backend.proxy().await;
    let mut s = TcpStream::connect(p.addr("web")).await.unwrap();
    s.write_all(HANDSHAKE).await.unwrap();
    let (head, mut rest) = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(
        head.contains("\r\nsec-websocket-protocol: chat\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nsec-websocket-extensions: permessage-deflate\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("the backend's close passed on")
        .unwrap();
    assert_eq!(rest, b"\x00\xffnot a frame");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_is_passed_on_and_the_connection_stays_usable() {
    let backend =
        ScriptedBackend::start(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nno way").await;
    let p = backend.proxy().await;
    let tcp = TcpStream::connect(p.addr("web")).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(tcp))
    .await
    .unwrap();
    let conn = tokio::spawn(conn.with_upgrades());
    for upgrade in [true, false] {
        let mut req = http::Request::get("/chat").header("host", "ws.test");
        if upgrade {
            req = req
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        // The client library takes a moment after a response to be ready
        // for the next request; a connection the proxy closed fails here.
        sender.ready().await.expect("the connection stays open");
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            sender.send_request(req.body(http_body_util::Empty::new()).unwrap()),
        )
        .await
        .expect("answered")
        .expect("on the same connection");
        let got = collect(res).await;
        assert_eq!(got.status, 403, "upgrade: {upgrade}");
        assert_eq!(got.body, "no way");
    }
    conn.abort();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_half_close_reaches_the_backend_which_can_still_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let backend = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_request_head(&mut s).await;
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        // Everything the client sent, up to its FIN.
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(b"got ").await.unwrap();
        s.write_all(&got).await.unwrap();
        // Dropped: FIN.
    });
    let echo: SocketAddr = ([127, 0, 0, 1], port).into();
    let p = proxy_to(echo, "").await;
    let mut s = TcpStream::connect(p.addr("ws")).await.unwrap();
    s.write_all(HANDSHAKE).await.unwrap();
    let (head, mut rest) = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    s.write_all(b"last words").await.unwrap();
    s.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("answer and close within 3 s")
        .unwrap();
    assert_eq!(rest, b"got last words");
    backend.await.unwrap();
    p.stop().await;
}

/// Reads a request head from a raw backend connection.
async fn read_request_head(s: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed in the head");
        buf.push(b[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tunnels_carry_large_binary_messages_intact() {
    let (echo, task) = echo_server().await;
    let p = proxy_to(echo, "").await;
    let addr = p.addr("ws");
    let tunnels: Vec<_> = (0..40u32)
        .map(|t| {
            tokio::spawn(async move {
                let (mut ws, _) = ws_connect(addr, "/").await;
                // Sizes around frame-header boundaries (125, 65535) and a
                // large one; content that shows reordering or loss.
                for len in [1usize, 125, 126, 65_535, 65_536, 1 << 20] {
                    let data: Vec<u8> = (0..len)
                        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(t) as u8)
                        .collect();
                    ws.send(Message::binary(data.clone())).await.unwrap();
                    let back = tokio::time::timeout(Duration::from_secs(20), ws.next())
                        .await
                        .expect("echo within 20 s")
                        .unwrap()
                        .unwrap();
                    assert!(back.is_binary());
                    assert!(back.into_data() == data, "tunnel {t}, {len} bytes");
                }
                ws.close(None).await.unwrap();
            })
        })
        .collect();
    for t in tunnels {
        t.await.unwrap();
    }
    task.abort();
    p.stop().await;
}
