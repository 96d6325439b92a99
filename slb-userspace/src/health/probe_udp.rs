//! `udp` check: send the payload from a socket bound to the probe source
//! and *connected* to the backend, so that an ICMP port-unreachable comes
//! back as `ECONNREFUSED` on receive. Success = any reply, or with
//! `expect`, a reply containing those bytes; the first reply decides.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::probe::{bind_reason, io_reason};
use crate::config::UdpProbe;

/// One `udp` probe (without the timeout, which the caller applies: no
/// reply at all ends as `timeout`).
pub async fn probe(addr: SocketAddr, source: IpAddr, check: &UdpProbe) -> Result<(), String> {
    let socket = UdpSocket::bind(SocketAddr::new(source, 0))
        .await
        .map_err(|e| bind_reason(source, &e))?;
    socket.connect(addr).await.map_err(|e| io_reason(&e))?;
    socket
        .send(&check.payload)
        .await
        .map_err(|e| udp_reason(&e))?;
    let reply = receive(&socket).await.map_err(|e| udp_reason(&e))?;
    match &check.expect {
        None => Ok(()),
        Some(expect) if contains(&reply, expect) => Ok(()),
        Some(_) => Err("unexpected reply".to_owned()),
    }
}

/// The first datagram (or error) the socket receives. The buffer a
/// datagram of any size needs (64 KiB) is taken only once one is there:
/// held while waiting, it cost that much per probe in flight (4096 probes
/// of silent backends waiting out their timeout took 76 MiB). The wait is
/// a one-byte peek, which ends like a receive would, also with the error
/// an ICMP port unreachable leaves on the socket.
async fn receive(socket: &UdpSocket) -> std::io::Result<Vec<u8>> {
    loop {
        socket.peek(&mut [0u8; 1]).await?;
        let mut buf = vec![0u8; 65536];
        match socket.try_recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // Readiness can be spurious.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn udp_reason(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ECONNREFUSED) {
        "port unreachable".to_owned()
    } else {
        io_reason(e)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Probe;
    use crate::health::probe::run_check;
    use crate::health::testutil::{binary_server, check, dns_server, free_udp_port, udp_echo};

    fn udp(payload: &str, expect: Option<&str>) -> Probe {
        Probe::Udp(UdpProbe {
            payload: payload.into(),
            expect: expect.map(Into::into),
        })
    }

    #[test]
    fn containment() {
        assert!(contains(b"hello world", b"o w"));
        assert!(!contains(b"hello", b"hello!"));
        assert!(contains(b"x", b""));
    }

    #[tokio::test]
    async fn echo_server_is_up_from_the_source() {
        let server = udp_echo("127.0.0.1").await;
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let out = run_check(server.addr, source, &check(udp("ping", None))).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(
            server.peers(),
            vec![SocketAddr::new(source, server.peers()[0].port())]
        );
        let out = run_check(server.addr, source, &check(udp("ping", Some("in")))).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn a_check_port_overrides_the_backend_port() {
        let server = udp_echo("127.0.0.1").await;
        let backend = SocketAddr::new(server.addr.ip(), free_udp_port().await);
        let mut c = check(udp("ping", Some("ping")));
        c.port = Some(server.addr.port());
        let out = run_check(backend, "127.0.0.1".parse().unwrap(), &c).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn closed_port_is_port_unreachable() {
        let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), free_udp_port().await);
        let out = run_check(
            addr,
            "127.0.0.1".parse().unwrap(),
            &check(udp("ping", None)),
        )
        .await;
        assert!(!out.ok);
        assert_eq!(out.reason, "port unreachable");
    }

    #[tokio::test]
    async fn expect_mismatch_is_unexpected_reply() {
        let server = udp_echo("127.0.0.1").await;
        let out = run_check(
            server.addr,
            "127.0.0.1".parse().unwrap(),
            &check(udp("ping", Some("pong"))),
        )
        .await;
        assert!(!out.ok);
        assert_eq!(out.reason, "unexpected reply");
    }

    /// A binary protocol's probe needs bytes of 0x80 and above: given as
    /// `payload_hex` / `expect_hex` they are sent and matched as such; the
    /// same written in a TOML string goes out as its UTF-8 encoding, which
    /// the server ignores.
    #[tokio::test]
    async fn hex_payloads_are_sent_as_bytes() {
        let server = binary_server("127.0.0.1").await;
        let probe = |hc: &str| {
            let text = format!(
                "[agent]\ninterfaces = [\"eth0\"]\nprobe_source = [\"100.64.0.1\"]\nlocal_addresses = [\"100.64.0.10\"]\n\
                 [[listener]]\nname = \"b\"\nvip = \"10.0.0.1\"\nport = 53\nprotocol = \"udp\"\n\
                 health_check = {{ protocol = \"udp\", {hc} }}\n\
                 [[listener.backend]]\naddress = \"10.0.1.1\"\nport = 53\n"
            );
            let cfg = crate::config::parse(&text).unwrap();
            cfg.listeners[0].health_check.clone().unwrap()
        };
        let source = "127.0.0.1".parse().unwrap();
        let hex = probe("payload_hex = \"fe 00 FF\", expect_hex = \"ff01\"");
        let out = run_check(server.addr, source, &hex).await;
        assert!(out.ok, "{out:?}");
        let text = probe("payload = \"\\u00fe\\u0000\\u00ff\", timeout = \"1s\"");
        let out = run_check(server.addr, source, &text).await;
        assert!(!out.ok, "{out:?}");
    }

    /// A DNS server drops a datagram that is not a DNS query, such as the
    /// default payload: the check of a real DNS backend needs a query as
    /// its payload, as the example file shows (README "Health checks").
    #[tokio::test]
    async fn a_dns_backend_needs_a_dns_query_as_payload() {
        let server = dns_server("127.0.0.1").await;
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        let mut default = check(udp(crate::config::defaults::UDP_PAYLOAD, None));
        default.timeout = std::time::Duration::from_millis(300);
        let out = run_check(server.addr, source, &default).await;
        assert_eq!(out.reason, "timeout");
        assert_eq!(server.peers().len(), 1, "the probe reached the server");

        let cfg = crate::config::parse(include_str!("../../examples/slb.toml")).unwrap();
        let dns = cfg
            .listeners
            .iter()
            .find(|l| l.protocol == crate::config::Protocol::Udp && l.port == 53)
            .expect("the example has a DNS listener");
        let hc = dns.health_check.as_ref().expect("checked");
        let Probe::Udp(p) = &hc.probe else {
            panic!("not a udp check")
        };
        let out = run_check(server.addr, source, &check(Probe::Udp(p.clone()))).await;
        assert!(out.ok, "{out:?}");
    }

    /// Only the backend's own address and port can answer: a reply sent
    /// from another port (or address) of the host does not count, as it
    /// would on an unconnected socket.
    #[tokio::test]
    async fn a_reply_from_another_port_is_ignored() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let answer = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            other.send_to(&buf[..n], peer).await.unwrap();
            server
        });
        let mut c = check(udp("ping", None));
        c.timeout = std::time::Duration::from_millis(300);
        let out = run_check(addr, "127.0.0.1".parse().unwrap(), &c).await;
        assert_eq!(out.reason, "timeout");
        answer.await.unwrap();
    }

    /// A reply that comes after its probe timed out is not taken for the
    /// answer to the next probe: every probe has a socket (and port) of
    /// its own.
    #[tokio::test]
    async fn a_late_reply_does_not_count_for_the_next_probe() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        // Answers the first datagram 400 ms late, then no more.
        let answer = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            server.send_to(&buf[..n], peer).await.unwrap();
            let (_, second) = server.recv_from(&mut buf).await.unwrap();
            (peer, second)
        });
        let mut c = check(udp("ping", None));
        c.timeout = std::time::Duration::from_millis(300);
        let source = "127.0.0.1".parse().unwrap();
        let first = run_check(addr, source, &c).await;
        assert_eq!(first.reason, "timeout");
        c.timeout = std::time::Duration::from_millis(500);
        let second = run_check(addr, source, &c).await;
        assert_eq!(second.reason, "timeout");
        let (p1, p2) = answer.await.unwrap();
        assert_ne!(p1, p2);
    }

    #[tokio::test]
    async fn ipv6_echo() {
        let Ok(sock) = UdpSocket::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback: skipped");
            return;
        };
        drop(sock);
        let server = udp_echo("::1").await;
        let out = run_check(
            server.addr,
            "::1".parse().unwrap(),
            &check(udp("ping", None)),
        )
        .await;
        assert!(out.ok, "{out:?}");
    }

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// 4096 backends that drop the probe (a firewall, no ICMP) keep 4096
    /// probes waiting out their timeout: each used to hold a 64 KiB
    /// receive buffer meanwhile, 76 MiB in all; now about 11 MiB (tasks
    /// and sockets). The bound leaves room for other tests' allocations.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_probes_hold_no_receive_buffer() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let mut c = check(udp("ping", None));
        c.timeout = std::time::Duration::from_secs(3);
        let c = std::sync::Arc::new(c);
        let before = rss_kib();
        let probes: Vec<_> = (0..4096)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { run_check(addr, "127.0.0.1".parse().unwrap(), &c).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let grown = rss_kib().saturating_sub(before) / 1024;
        for p in probes {
            assert_eq!(p.await.unwrap().reason, "timeout");
        }
        assert!(grown < 40, "{grown} MiB for 4096 waiting probes");
    }
}
