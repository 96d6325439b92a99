//! `http` check: one HTTP/1.1 request over a TCP connection from the probe
//! source; success = the response status is in an accepted class. The
//! client is hyper's HTTP/1 connection (no hand-written parser).
//!
//! Request: the configured method (`HEAD` by default, or `GET`) and path,
//! `Host` = the configured host verbatim, or else the backend's address
//! (IPv6 in brackets) with `:port` when the port is not 80,
//! `User-Agent: slb-health/<version>`, `Connection: close`. The check is
//! decided when the response head arrives: the body (of a `GET`) is never
//! read, so a slow or endless body cannot turn a good status into a
//! timeout; unread data is discarded by the reset. The connection closes with RST like the `tcp` check: hyper's own shutdown
//! after `Connection: close` is suppressed ([`NoShutdown`]), so no FIN is
//! sent and neither side keeps a TIME_WAIT socket. A `#fragment` in the
//! configured path is not sent (RFC 9110: never part of a request target).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::probe_tcp::connect;
use crate::config::{HttpMethod, HttpProbe};

/// `User-Agent` of every HTTP check.
pub const USER_AGENT_VALUE: &str = concat!("slb-health/", env!("CARGO_PKG_VERSION"));

/// The `Host` header for a check of `addr` on `port`.
pub fn host_header(check: &HttpProbe, addr: IpAddr, port: u16) -> String {
    if let Some(host) = &check.host {
        return host.clone();
    }
    let host = match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// The probe's connection as hyper sees it: a [`TcpStream`] whose
/// `poll_shutdown` does nothing. hyper shuts the write side down (FIN)
/// when a `Connection: close` exchange ends; with that FIN sent, the
/// zero-linger close that follows has nothing left to reset, and one side
/// keeps a TIME_WAIT socket per check (thousands at 1000 backends).
/// Without it, dropping the stream (SO_LINGER 0, see
/// [`connect`]) ends the connection with RST.
struct NoShutdown(TcpStream);

impl AsyncRead for NoShutdown {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for NoShutdown {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    /// Deliberately no shutdown: the connection ends when the stream is
    /// dropped, with RST.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn request(check: &HttpProbe, host: &str) -> Result<Request<Empty<Bytes>>, String> {
    let method = match check.method {
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Get => Method::GET,
    };
    Request::builder()
        .method(method)
        .uri(check.path.as_str())
        .header(HOST, host)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| format!("invalid request: {e}"))
}

/// One `http` probe of backend `addr` (without the timeout, which the
/// caller applies to the whole exchange).
pub async fn probe(addr: SocketAddr, source: IpAddr, check: &HttpProbe) -> Result<(), String> {
    let req = request(check, &host_header(check, addr.ip(), addr.port()))?;
    let stream = connect(addr, source).await?;

    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(NoShutdown(stream)))
            .await
            .map_err(|e| format!("http: {e}"))?;
    // Resolves with the response head: the status decides (SPEC §4), the
    // body is left unread and the socket is reset when dropped.
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http_reason(&e))?;
        Ok::<u16, String>(resp.status().as_u16())
    };
    tokio::pin!(conn);
    tokio::pin!(exchange);
    let status = tokio::select! {
        biased;
        r = &mut exchange => r?,
        c = &mut conn => match c {
            // The connection ended first (e.g. closed after the
            // response): the exchange has its answer or its error.
            Ok(()) => exchange.await?,
            Err(e) => return Err(http_reason(&e)),
        },
    };
    if check.accepts(status) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// The failure reason for a hyper error: the socket error when there is
/// one, else hyper's description.
fn http_reason(e: &hyper::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return super::probe::io_reason(io);
        }
        source = s.source();
    }
    if e.is_incomplete_message() {
        return "connection closed before the response".to_owned();
    }
    format!("http: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Probe, StatusClass};
    use crate::health::probe::run_check;
    use crate::health::testutil::{
        check, free_port, http_server, scripted_server, silent_server, PeerClose,
    };

    fn http(
        method: HttpMethod,
        path: &str,
        host: Option<&str>,
        codes: &[StatusClass],
    ) -> HttpProbe {
        HttpProbe {
            method,
            path: path.into(),
            host: host.map(Into::into),
            codes: codes.to_vec(),
        }
    }

    fn default_http() -> HttpProbe {
        http(
            HttpMethod::Head,
            "/",
            None,
            &[StatusClass::S2xx, StatusClass::S3xx],
        )
    }

    #[test]
    fn host_header_defaults_to_the_address() {
        let c = default_http();
        assert_eq!(
            host_header(&c, "10.0.1.12".parse().unwrap(), 80),
            "10.0.1.12"
        );
        assert_eq!(
            host_header(&c, "10.0.1.12".parse().unwrap(), 8080),
            "10.0.1.12:8080"
        );
        assert_eq!(host_header(&c, "fd00::1".parse().unwrap(), 80), "[fd00::1]");
        assert_eq!(
            host_header(&c, "fd00::1".parse().unwrap(), 81),
            "[fd00::1]:81"
        );
        let c = http(
            HttpMethod::Head,
            "/",
            Some("www.example.com"),
            &[StatusClass::S2xx],
        );
        assert_eq!(
            host_header(&c, "fd00::1".parse().unwrap(), 81),
            "www.example.com"
        );
    }

    #[tokio::test]
    async fn head_by_default_with_address_host_from_the_source() {
        let server = http_server("127.0.0.1", 200).await;
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let out = run_check(server.addr, source, &check(Probe::Http(default_http()))).await;
        assert!(out.ok, "{out:?}");
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.method, "HEAD");
        assert_eq!(r.uri, "/");
        assert_eq!(
            r.host.as_deref(),
            Some(&*format!("127.0.0.1:{}", server.addr.port()))
        );
        assert_eq!(r.user_agent.as_deref(), Some(USER_AGENT_VALUE));
        assert_eq!(r.connection.as_deref(), Some("close"));
        assert_eq!(r.version, "HTTP/1.1");
        assert_eq!(r.peer.ip(), source);
    }

    /// An IPv6 backend: `Host` is its address in brackets with the port,
    /// and the check comes from the IPv6 probe source.
    #[tokio::test]
    async fn an_ipv6_backend_is_checked_with_a_bracketed_host() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            return; // no IPv6 on this host
        }
        let server = http_server("::1", 200).await;
        let source: IpAddr = "::1".parse().unwrap();
        let out = run_check(server.addr, source, &check(Probe::Http(default_http()))).await;
        assert!(out.ok, "{out:?}");
        let seen = server.requests();
        assert_eq!(
            seen[0].host.as_deref(),
            Some(&*format!("[::1]:{}", server.addr.port()))
        );
        assert_eq!(seen[0].peer.ip(), source);
    }

    #[tokio::test]
    async fn get_with_configured_path_and_host() {
        let server = http_server("127.0.0.1", 200).await;
        let c = http(
            HttpMethod::Get,
            "/health/check.html?x=1&y=%20#top",
            Some("www.example.com"),
            &[StatusClass::S2xx],
        );
        let out = run_check(
            server.addr,
            "127.0.0.1".parse().unwrap(),
            &check(Probe::Http(c)),
        )
        .await;
        assert!(out.ok, "{out:?}");
        let r = &server.requests()[0];
        assert_eq!(r.method, "GET");
        assert_eq!(r.uri, "/health/check.html?x=1&y=%20");
        assert_eq!(r.host.as_deref(), Some("www.example.com"));
    }

    #[tokio::test]
    async fn get_with_a_stalled_body_is_decided_by_the_status() {
        // 200 announcing 100000 bytes, 5 sent, then nothing: up at once,
        // not a timeout, and the connection is reset.
        const STALLED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nhello";
        let (addr, server) = scripted_server("127.0.0.1", STALLED, false).await;
        let c = check(Probe::Http(http(
            HttpMethod::Get,
            "/",
            None,
            &[StatusClass::S2xx],
        )));
        let out = run_check(addr, "127.0.0.1".parse().unwrap(), &c).await;
        assert!(out.ok, "{out:?}");
        assert!(out.latency < c.timeout / 2, "{out:?}");
        assert_eq!(server.await.unwrap(), PeerClose::Reset);
    }

    #[tokio::test]
    async fn get_with_a_large_body_succeeds() {
        // 1 MiB body: the probe succeeds without reading it.
        let server =
            crate::health::testutil::http_server_with_body("127.0.0.1", 200, 1 << 20).await;
        let c = http(HttpMethod::Get, "/", None, &[StatusClass::S2xx]);
        let out = run_check(
            server.addr,
            "127.0.0.1".parse().unwrap(),
            &check(Probe::Http(c)),
        )
        .await;
        assert!(out.ok, "{out:?}");
    }

    /// 200, no body, connection close.
    const EMPTY_200: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn closes_with_rst_when_the_server_waits_for_the_client() {
        let (addr, server) = scripted_server("127.0.0.1", EMPTY_200, false).await;
        let c = check(Probe::Http(default_http()));
        let out = run_check(addr, "127.0.0.1".parse().unwrap(), &c).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(server.await.unwrap(), PeerClose::Reset);
    }

    #[tokio::test]
    async fn closes_with_rst_when_the_server_closes_first() {
        let (addr, server) = scripted_server("127.0.0.1", EMPTY_200, true).await;
        let c = check(Probe::Http(default_http()));
        let out = run_check(addr, "127.0.0.1".parse().unwrap(), &c).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(server.await.unwrap(), PeerClose::Reset);
    }

    #[tokio::test]
    async fn a_check_port_overrides_the_backend_port() {
        let server = http_server("127.0.0.1", 204).await;
        let mut c = check(Probe::Http(default_http()));
        c.port = Some(server.addr.port());
        // The backend's own port is closed; the check goes to `port`.
        let backend = SocketAddr::new(server.addr.ip(), free_port().await);
        let out = run_check(backend, "127.0.0.1".parse().unwrap(), &c).await;
        assert!(out.ok, "{out:?}");
        // `Host` names the port checked, as a client of it would.
        let want = format!("127.0.0.1:{}", server.addr.port());
        assert_eq!(server.requests()[0].host.as_deref(), Some(&*want));
    }

    #[tokio::test]
    async fn status_404_fails_unless_4xx_is_accepted() {
        let server = http_server("127.0.0.1", 404).await;
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let out = run_check(server.addr, src, &check(Probe::Http(default_http()))).await;
        assert!(!out.ok);
        assert_eq!(out.reason, "status 404");

        let c = http(
            HttpMethod::Head,
            "/",
            None,
            &[StatusClass::S2xx, StatusClass::S4xx],
        );
        let out = run_check(server.addr, src, &check(Probe::Http(c))).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn status_500_fails_with_defaults() {
        let server = http_server("127.0.0.1", 503).await;
        let out = run_check(
            server.addr,
            "127.0.0.1".parse().unwrap(),
            &check(Probe::Http(default_http())),
        )
        .await;
        assert_eq!(out.reason, "status 503");
    }

    #[tokio::test]
    async fn timeout_against_a_server_that_never_answers() {
        let server = silent_server("127.0.0.1").await;
        let c = check(Probe::Http(default_http()));
        let out = run_check(server, "127.0.0.1".parse().unwrap(), &c).await;
        assert!(!out.ok);
        assert_eq!(out.reason, "timeout");
        assert!(out.latency >= c.timeout);
    }

    #[tokio::test]
    async fn connect_refused() {
        let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port().await);
        let out = run_check(
            addr,
            "127.0.0.1".parse().unwrap(),
            &check(Probe::Http(default_http())),
        )
        .await;
        assert_eq!(out.reason, "connect refused");
    }
}
