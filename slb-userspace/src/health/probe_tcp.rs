//! `tcp` check: connect from the probe source; success = handshake done.
//! The connection is closed at once with RST (SO_LINGER 0): no data is
//! sent, and the prober keeps no TIME_WAIT sockets (at 1000 backends every
//! 2 s those would exhaust the source's ephemeral ports).

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

use super::probe::{bind_reason, io_reason};

/// Connects to `addr` from `source` (port 0); the socket closes with RST
/// when dropped. Errors are failure reasons. Shared with the HTTP check.
pub async fn connect(addr: SocketAddr, source: IpAddr) -> Result<TcpStream, String> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("cannot create socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| bind_reason(source, &e))?;
    socket
        .set_zero_linger()
        .map_err(|e| format!("cannot set SO_LINGER: {e}"))?;
    socket.connect(addr).await.map_err(|e| io_reason(&e))
}

/// One `tcp` probe (without the timeout, which the caller applies).
pub async fn probe(addr: SocketAddr, source: IpAddr) -> Result<(), String> {
    let stream = connect(addr, source).await?;
    // Dropping with SO_LINGER 0 sends RST.
    drop(stream);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Probe;
    use crate::health::probe::run_check;
    use crate::health::testutil::{check, free_port};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn up_against_a_listener_with_rst_and_no_data() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let out = run_check(addr, source, &check(Probe::Tcp)).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.reason, "ok");

        let (mut conn, peer) = listener.accept().await.unwrap();
        // Bound to the probe source.
        assert_eq!(peer.ip(), source);
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
            .await
            .expect("the probe neither reset nor closed the connection");
        // RST, not FIN (Ok(0)) and no data (Ok(n)).
        match read {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            Ok(n) => panic!("no RST: read returned {n} bytes"),
        }
    }

    #[tokio::test]
    async fn connect_refused_against_a_closed_port() {
        let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port().await);
        let out = run_check(addr, "127.0.0.1".parse().unwrap(), &check(Probe::Tcp)).await;
        assert!(!out.ok);
        assert_eq!(out.reason, "connect refused");
    }

    /// `port` sends the check to another port of the backend (a health
    /// endpoint of its own), as keepalived's `connect_port` does.
    #[tokio::test]
    async fn a_check_port_overrides_the_backend_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let backend = SocketAddr::new(open.ip(), free_port().await);
        let mut c = check(Probe::Tcp);
        c.port = Some(open.port());
        let out = run_check(backend, "127.0.0.1".parse().unwrap(), &c).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn ipv6_from_the_v6_source() {
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback: skipped");
            return;
        };
        let addr = listener.local_addr().unwrap();
        let out = run_check(addr, "::1".parse().unwrap(), &check(Probe::Tcp)).await;
        assert!(out.ok, "{out:?}");
        let (_conn, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), "::1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn a_non_local_source_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // TEST-NET-1: never a local address here.
        let out = run_check(addr, "192.0.2.1".parse().unwrap(), &check(Probe::Tcp)).await;
        assert!(!out.ok);
        assert!(
            out.reason.starts_with("cannot bind probe source 192.0.2.1"),
            "{}",
            out.reason
        );
    }
}
