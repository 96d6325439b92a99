//! Loopback servers for the health-check tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::config::{HealthCheck, Probe};

/// A check with test-friendly timings (shorter than validation allows).
pub fn check(probe: Probe) -> HealthCheck {
    HealthCheck {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        port: None,
        probe,
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on (just now).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A UDP port on 127.0.0.1 that nothing listens on (just now).
pub async fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.local_addr().unwrap().port()
}

/// What the HTTP test server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    pub method: String,
    pub uri: String,
    pub version: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub connection: Option<String>,
}

pub struct HttpServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 server on `ip` (port chosen) answering `status` to all.
pub async fn http_server(ip: &str, status: u16) -> HttpServer {
    http_server_with_body(ip, status, 0).await
}

/// Same, with a body of `body_len` bytes.
pub async fn http_server_with_body(ip: &str, status: u16, body_len: usize) -> HttpServer {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let body = Bytes::from(vec![b'x'; body_len]);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let h = |n: hyper::header::HeaderName| {
                        req.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap_or("").to_owned())
                    };
                    seen.lock().unwrap().push(Seen {
                        peer,
                        method: req.method().to_string(),
                        uri: req.uri().to_string(),
                        version: format!("{:?}", req.version()),
                        host: h(hyper::header::HOST),
                        user_agent: h(hyper::header::USER_AGENT),
                        connection: h(hyper::header::CONNECTION),
                    });
                    let resp = Response::builder()
                        .status(status)
                        .body(Full::new(body.clone()))
                        .unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    HttpServer { addr, seen, task }
}

/// A TCP server that accepts connections and never answers.
pub async fn silent_server(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

pub struct UdpEcho {
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl UdpEcho {
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP echo server on `ip` (port chosen).
pub async fn udp_echo(ip: &str) -> UdpEcho {
    udp_server(ip, |m| Some(m.to_vec())).await
}

/// A UDP server on `ip` (port chosen) that records every sender and
/// sends back what `answer` makes of a datagram (nothing for `None`).
async fn udp_server(ip: &str, answer: fn(&[u8]) -> Option<Vec<u8>>) -> UdpEcho {
    let sock = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = sock.local_addr().unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let peers2 = peers.clone();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            peers2.lock().unwrap().push(peer);
            if let Some(reply) = answer(&buf[..n]) {
                let _ = sock.send_to(&reply, peer).await;
            }
        }
    });
    UdpEcho { addr, peers, task }
}

/// How a client ended its connection, as seen by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClose {
    /// RST: the read failed with `ConnectionReset`.
    Reset,
    /// FIN: the read returned end of stream.
    Fin,
    /// The client sent more data.
    Data,
    /// Still open after a few seconds.
    Open,
}

/// A one-connection TCP server on `ip`: reads a request head (up to the
/// blank line), writes `response`, shuts its own sending side when
/// `close_first`, then reports how the client ended the connection.
pub async fn scripted_server(
    ip: &str,
    response: &'static [u8],
    close_first: bool,
) -> (SocketAddr, JoinHandle<PeerClose>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) => return PeerClose::Fin,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return PeerClose::Reset
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        // The client may reset before the whole response is written.
        let _ = conn.write_all(response).await;
        if close_first {
            let _ = conn.shutdown().await;
        }
        match tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf)).await {
            Err(_) => PeerClose::Open,
            Ok(Ok(0)) => PeerClose::Fin,
            Ok(Ok(_)) => PeerClose::Data,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => PeerClose::Reset,
            Ok(Err(e)) => panic!("read: {e}"),
        }
    });
    (addr, task)
}

/// A UDP server on `ip` (port chosen) speaking a binary protocol: a
/// datagram whose first byte is 0xfe is answered `ff 01`, others not at
/// all (bytes a TOML string cannot give as single bytes).
pub async fn binary_server(ip: &str) -> UdpEcho {
    udp_server(ip, |m| (m.first() == Some(&0xfe)).then(|| vec![0xff, 0x01])).await
}

/// A UDP server on `ip` (port chosen) that behaves like a DNS server
/// towards what it cannot parse: a datagram that is not a query (shorter
/// than the 12-byte header, a response, not exactly one question, or a
/// question that runs past the end) is dropped without a reply, as BIND,
/// Unbound and dnsmasq do; a query is answered REFUSED.
pub async fn dns_server(ip: &str) -> UdpEcho {
    fn is_query(m: &[u8]) -> bool {
        if m.len() < 12 || m[2] & 0x80 != 0 || m[4..6] != [0, 1] {
            return false;
        }
        let mut i = 12;
        while let Some(&len) = m.get(i) {
            if len == 0 {
                // Root label, then QTYPE and QCLASS.
                return m.len() >= i + 5;
            }
            if len > 63 {
                return false;
            }
            i += 1 + usize::from(len);
        }
        false
    }
    udp_server(ip, |m| {
        if !is_query(m) {
            return None;
        }
        let mut reply = m.to_vec();
        reply[2] |= 0x80; // QR: a response
        reply[3] = (reply[3] & 0xf0) | 5; // RCODE: REFUSED
        Some(reply)
    })
    .await
}
