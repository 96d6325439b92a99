//! Tiny backends that answer with their name and remember who connected.
//!
//! TCP: on accept the server writes `<name>\n`, then echoes every byte it
//! receives until the peer closes. UDP: every datagram is answered with
//! `<name>`.
use crate::netns::Netns;
use anyhow::{Context, Result};
use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

/// What a server saw.
#[derive(Default)]
pub struct Seen {
    /// Source addresses of connections / datagrams.
    pub peers: Mutex<BTreeSet<IpAddr>>,
    /// Connections accepted / datagrams answered.
    pub count: AtomicU64,
}

pub struct NameServer {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NameServer {
    /// A TCP name server bound to `addr` inside `ns`.
    pub fn tcp(ns: &Netns, addr: SocketAddr, name: &str) -> Result<NameServer> {
        let listener = ns
            .enter(|| TcpListener::bind(addr))?
            .with_context(|| format!("bind {addr}"))?;
        listener.set_nonblocking(true)?;
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2, n2) = (seen.clone(), stop.clone(), name.to_owned());
        let thread = std::thread::spawn(move || {
            while !st2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        s2.count.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut p) = s2.peers.lock() {
                            p.insert(peer.ip());
                        }
                        let name = n2.clone();
                        let stop = st2.clone();
                        std::thread::spawn(move || serve_tcp(conn, &name, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(NameServer {
            name: name.to_owned(),
            addr,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// A UDP name server bound to `addr` inside `ns`.
    pub fn udp(ns: &Netns, addr: SocketAddr, name: &str) -> Result<NameServer> {
        let sock = ns
            .enter(|| UdpSocket::bind(addr))?
            .with_context(|| format!("bind udp {addr}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2, n2) = (seen.clone(), stop.clone(), name.to_owned());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st2.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    s2.count.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut p) = s2.peers.lock() {
                        p.insert(peer.ip());
                    }
                    let _ = sock.send_to(n2.as_bytes(), peer);
                }
            }
        });
        Ok(NameServer {
            name: name.to_owned(),
            addr,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    pub fn count(&self) -> u64 {
        self.seen.count.load(Ordering::Relaxed)
    }

    pub fn peers(&self) -> BTreeSet<IpAddr> {
        self.seen
            .peers
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

fn serve_tcp(mut conn: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    if conn.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens a TCP connection from inside `ns` and reads the server's name
/// line. Returns the name and the open stream.
pub fn tcp_hello(ns: &Netns, to: SocketAddr, timeout: Duration) -> Result<(String, TcpStream)> {
    let stream = ns
        .enter(|| TcpStream::connect_timeout(&to, timeout))?
        .with_context(|| format!("connect {to}"))?;
    read_name(stream, to, timeout)
}

/// Sends one datagram from inside `ns` and returns the reply.
pub fn udp_ask(ns: &Netns, to: SocketAddr, payload: &[u8], timeout: Duration) -> Result<String> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = ns.enter(|| UdpSocket::bind(bind))??;
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(payload, to)?;
    let mut buf = [0u8; 2048];
    let (n, _) = sock
        .recv_from(&mut buf)
        .with_context(|| format!("no UDP reply from {to}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A backend that answers HTTP requests with a settable status, after a
/// settable delay, and remembers each request's head (request line and
/// headers), for checking what HTTP health checks send. One connection at
/// a time.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub name: String,
    pub status: Arc<std::sync::atomic::AtomicU16>,
    /// Milliseconds between a request's head and its answer.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    pub requests: Arc<Mutex<Vec<(IpAddr, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(ns: &Netns, addr: SocketAddr, status: u16) -> Result<HttpServer> {
        Self::start_named(ns, addr, status, "")
    }

    /// As `start`; the body of every answer is `<name>` (or `status
    /// <code>` when `name` is empty).
    pub fn start_named(
        ns: &Netns,
        addr: SocketAddr,
        status: u16,
        name: &str,
    ) -> Result<HttpServer> {
        let listener = ns
            .enter(|| TcpListener::bind(addr))?
            .with_context(|| format!("bind {addr}"))?;
        listener.set_nonblocking(true)?;
        let code = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (c2, r2, s2, n2, d2) = (
            code.clone(),
            requests.clone(),
            stop.clone(),
            name.to_owned(),
            delay_ms.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let Ok((mut conn, peer)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                if let Ok(mut r) = r2.lock() {
                    r.push((peer.ip(), String::from_utf8_lossy(&head).into_owned()));
                }
                let delay = d2.load(Ordering::Relaxed);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                let code = c2.load(Ordering::Relaxed);
                let body = if n2.is_empty() {
                    format!("status {code}\n")
                } else {
                    format!("{n2}\n")
                };
                let _ = conn.write_all(
                    format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
                );
            }
        });
        Ok(HttpServer {
            addr,
            name: name.to_owned(),
            status: code,
            delay_ms,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }

    /// Answers each request `delay` after its head arrived.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<(IpAddr, String)> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `GET <path>` with `Host: <host>` from inside `ns` and returns the
/// status code and body (HTTP/1.1, `Connection: close`).
pub fn http_get(ns: &Netns, to: SocketAddr, host: &str, path: &str) -> Result<(u16, String)> {
    let mut s = ns
        .enter(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)))?
        .with_context(|| format!("connect {to}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line in {head}"))?;
    Ok((code, body.to_owned()))
}

/// `tcp_hello` from a given local address of `ns`.
pub fn tcp_hello_from(
    ns: &Netns,
    from: IpAddr,
    to: SocketAddr,
    timeout: Duration,
) -> Result<(String, TcpStream)> {
    let stream = ns.enter(|| -> std::io::Result<TcpStream> {
        let sock = nix::sys::socket::socket(
            if to.is_ipv4() {
                nix::sys::socket::AddressFamily::Inet
            } else {
                nix::sys::socket::AddressFamily::Inet6
            },
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        )?;
        let local = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(from, 0));
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &local)?;
        let stream = TcpStream::from(sock);
        // Connect with a timeout: non-blocking connect, then wait.
        stream.set_nonblocking(true)?;
        let remote = nix::sys::socket::SockaddrStorage::from(to);
        match nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&stream), &remote) {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&stream),
            nix::poll::PollFlags::POLLOUT,
        )];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        if nix::poll::poll(&mut fds, ms)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ));
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    })??;
    read_name(stream, to, timeout)
}

fn read_name(
    mut stream: TcpStream,
    to: SocketAddr,
    timeout: Duration,
) -> Result<(String, TcpStream)> {
    stream.set_read_timeout(Some(timeout))?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream
            .read(&mut byte)
            .with_context(|| format!("reading name from {to}"))?;
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        name.push(byte[0]);
    }
    Ok((String::from_utf8_lossy(&name).into_owned(), stream))
}

/// Sends `bytes` through an echo connection and reads them all back.
pub fn echo_bulk(conn: &mut TcpStream, bytes: usize) -> Result<()> {
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let mut writer = conn.try_clone()?;
    let sender = std::thread::spawn(move || writer.write_all(&data).map(|_| data));
    let mut back = vec![0u8; bytes];
    conn.read_exact(&mut back)
        .context("reading the echo back")?;
    let data = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    anyhow::ensure!(back == data, "echo differs");
    Ok(())
}
