//! WebSocket upgrades through the L7 proxy: the tunnel carries messages
//! both ways and is closed after its idle timeout.

mod l7_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use l7_support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Request targets of the handshakes an echo server received.
static TARGETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A WebSocket echo server; returns its address. Records the target of
/// every handshake in `TARGETS`.
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
                    Ok(res)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, record).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
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
    let tcp = TcpStream::connect(p.addr("ws")).await.unwrap();
    let url = format!("ws://{}/chat?room=1", p.addr("ws"));
    let (mut ws, res) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
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
    let tcp = TcpStream::connect(p.addr("ws")).await.unwrap();
    let url = format!("ws://{}/", p.addr("ws"));
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
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
