//! Shared by the L7 proxy tests: in-process backends, the proxy started
//! through the library API on 127.0.0.1 ports, HTTP clients, throwaway
//! certificates. Nothing here needs root or leaves a process behind.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use slb::l7::{L7Metrics, Proxy, ProxyHandle};
use slb::planner::{BackendKey, Health};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// An in-process HTTP/1.1 backend. Answers:
/// * `/sleep/<ms>` after that long;
/// * `/headers`: the request header, one `name: value` per line;
/// * `/setcookie`: `Set-Cookie: SESSIONID=abc123`;
/// * `/big`: 8 KiB of text/html;
/// * `/version`: the request's HTTP version;
/// * `/target`: the request target as received (origin-form: a path);
/// * anything else: `backend=<name> path=<path>`.
///
/// Every answer carries `X-Backend: <name>`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1").await
    }

    /// [`Backend::start`] on `ip` (e.g. `::1`).
    pub async fn start_on(name: &str, ip: &str) -> Backend {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (name.to_owned(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h) = (n.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (n, h) = (n.clone(), h.clone());
                        async move { Ok::<_, Infallible>(answer(&n, &h, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            hits,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// `[[listener.backend]]` (or group backend) lines for this backend.
    pub fn toml(&self, table: &str, weight: u32) -> String {
        format!(
            "\n  [[{table}]]\n  address = \"{}\"\n  port = {}\n  weight = {weight}\n",
            self.addr.ip(),
            self.addr.port()
        )
    }
}

async fn answer(name: &str, hits: &AtomicUsize, req: Request<Incoming>) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let mut res = Response::new(Full::new(Bytes::new()));
    res.headers_mut().insert("x-backend", name.parse().unwrap());
    let body: String = if path == "/upload" {
        // The whole body first, then the answer (as an upload handler).
        let len = req
            .into_body()
            .collect()
            .await
            .map_or(0, |b| b.to_bytes().len());
        format!("backend={name} received={len}")
    } else if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        format!("backend={name} slept")
    } else if path == "/headers" {
        req.headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
            .collect()
    } else if path == "/setcookie" {
        res.headers_mut()
            .insert("set-cookie", "SESSIONID=abc123; Path=/".parse().unwrap());
        format!("backend={name}")
    } else if path == "/big" {
        res.headers_mut()
            .insert("content-type", "text/html; charset=utf-8".parse().unwrap());
        "<p>hello compressible world</p>\n".repeat(256)
    } else if path == "/version" {
        format!("{:?}", req.version())
    } else if path == "/target" {
        format!(
            "{} host={}",
            req.uri(),
            req.headers()
                .get("host")
                .map_or("-", |h| h.to_str().unwrap_or("?"))
        )
    } else {
        format!("backend={name} path={path}")
    };
    *res.body_mut() = Full::new(Bytes::from(body));
    res
}

/// A raw backend: reads a request's first bytes and answers every
/// connection with the same bytes, whatever they are (for responses a
/// real server would not send).
pub struct ScriptedBackend {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedBackend {
    pub async fn start(response: &'static [u8]) -> ScriptedBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let n = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response).await;
            }
        });
        ScriptedBackend {
            port,
            connections,
            task,
        }
    }

    /// Connections it accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The proxy with one http listener `web` over this backend alone.
    pub async fn proxy(&self) -> Running {
        let port = self.port;
        let (p, _) = start_proxy(&["web"], |ports| {
            format!(
                "{}\n  [[listener.backend]]\n  address = \"127.0.0.1\"\n  port = {port}\n",
                listener("web", "http", ports[0], "")
            )
        })
        .await;
        p
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens (connections are refused).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// An address where connecting hangs: a listener with a full accept
/// queue (backlog 0, one connection queued, never accepted), so the
/// kernel drops further SYNs as it does for an overloaded or firewalled
/// host. Keep it alive while it is used.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<std::net::TcpStream>,
}

impl Blackhole {
    /// Needs a tokio runtime (the listener is tokio's).
    pub fn new() -> Blackhole {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        // Fill the queue; a connect that does not complete at once means
        // it is full.
        let mut queued = Vec::new();
        loop {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => queued.push(s),
                Err(_) => break,
            }
            assert!(queued.len() < 8, "the accept queue does not fill up");
        }
        Blackhole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// A backend that accepts, reads the request and closes the connection
/// without answering.
pub async fn resetting_backend() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = l.accept().await else {
                continue;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            drop(tcp);
        }
    });
    (addr, count, task)
}

/// A started proxy and what a test needs to drive it.
pub struct Running {
    pub handle: Option<ProxyHandle>,
    pub health: watch::Sender<Health>,
    pub metrics: L7Metrics,
    /// Listener name → bound address.
    pub addrs: Vec<(String, SocketAddr)>,
}

impl Running {
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    pub fn url(&self, name: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(name))
    }

    /// Marks a backend down (or up again) as a health checker would.
    pub fn set_down(&self, listener: &str, addr: SocketAddr, down: bool) {
        self.health.send_modify(|h| {
            let key = BackendKey {
                listener: listener.to_owned(),
                addr,
            };
            if down {
                h.down.insert(key);
            } else {
                h.down.remove(&key);
            }
        });
    }

    /// Requests of `listener` counted in `class` once the count reaches
    /// `want` or a second has passed. Requests the server library answers
    /// itself (and abandoned ones) are counted when their connection or
    /// stream ends, which the client may see first.
    pub async fn requests_settled(&self, listener: &str, class: &str, want: u64) -> u64 {
        let t = std::time::Instant::now();
        loop {
            let n = self.metrics.requests_in_class(listener, class);
            if n >= want || t.elapsed() > Duration::from_secs(1) {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn reload(&self, config: &str) -> Result<(), slb::l7::L7Error> {
        let cfg = slb::config::parse(config).expect("valid config");
        self.handle.as_ref().unwrap().reload(&cfg.listeners).await
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown_within(Duration::from_secs(2)).await;
        }
    }
}

/// Binds one port per listener name on 127.0.0.1, calls `config` with the
/// ports (in order) to get the TOML, and starts the proxy on those sockets.
pub async fn start_proxy(
    names: &[&str],
    config: impl FnOnce(&[u16]) -> String,
) -> (Running, String) {
    start_proxy_on("127.0.0.1", names, config).await
}

/// [`start_proxy`] with the sockets bound on `ip` (e.g. `::1`).
pub async fn start_proxy_on(
    ip: &str,
    names: &[&str],
    config: impl FnOnce(&[u16]) -> String,
) -> (Running, String) {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    let mut sockets = Vec::new();
    let mut ports = Vec::new();
    for n in names {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        ports.push(l.local_addr().unwrap().port());
        sockets.push(((*n).to_owned(), l));
    }
    let text = config(&ports);
    let cfg = match slb::config::parse(&text) {
        Ok(c) => c,
        Err(e) => panic!("config does not validate:\n{e}\n---\n{text}"),
    };
    let (tx, rx) = watch::channel(Health {
        down: BTreeSet::new(),
    });
    let metrics = L7Metrics::new();
    let handle = Proxy::start_with_sockets(&cfg.listeners, sockets, rx, metrics.clone())
        .await
        .expect("proxy starts");
    let addrs = handle.local_addrs().await;
    (
        Running {
            handle: Some(handle),
            health: tx,
            metrics,
            addrs,
        },
        text,
    )
}

/// The proxy with one http listener `web` (`extra` lines added) over
/// `backends`, each of weight 100.
pub async fn web_proxy(backends: &[&Backend], extra: &str) -> Running {
    let (p, _) = start_proxy(&["web"], |ports| {
        let mut t = listener("web", "http", ports[0], extra);
        for b in backends {
            t.push_str(&b.toml("listener.backend", 100));
        }
        t
    })
    .await;
    p
}

/// A `[[listener]]` header for an http listener on 127.0.0.1:`port` with
/// health checks off; `extra` lines are added to the table.
pub fn listener(name: &str, protocol: &str, port: u16, extra: &str) -> String {
    format!(
        "\n[[listener]]\nname = \"{name}\"\nvip = \"127.0.0.1\"\nport = {port}\nprotocol = \"{protocol}\"\nhealth_check = {{ enabled = false }}\n{extra}\n"
    )
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A pooling HTTP/1.1 client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What a test looks at in a response.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub version: http::Version,
}

impl Got {
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn collect(res: Response<Incoming>) -> Got {
    let (parts, body) = res.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        version: parts.version,
    }
}

/// GET `url` with extra header lines.
pub async fn get(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Got {
    send(client, "GET", url, headers, "").await
}

pub async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("response within 10s")
        .expect("response");
    collect(res).await
}

/// An HTTP/2 client connection (prior knowledge, or over TLS with h2
/// negotiated) on `io`, its driving task spawned.
pub async fn h2_over<T>(
    io: T,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

/// Sends GET `uri` on `sender` and gives it up after `after` without an
/// answer (dropping the response future resets the stream).
pub async fn abandon(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    uri: &str,
    after: Duration,
) {
    let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let pending = sender.send_request(req);
    assert!(
        tokio::time::timeout(after, pending).await.is_err(),
        "answered within {after:?}"
    );
}

/// Throwaway PKI: a CA, certificates it signs, PEM files in a fresh
/// directory (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "slb-l7-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("slb test CA {tag}"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Pki {
            dir,
            ca_key,
            ca_params,
            ca_pem,
            ca_der: ca.der().clone(),
        }
    }

    /// A server certificate for `names`, written as `<file>.crt` and
    /// `<file>.key`; returns the two paths and the certificate's DER.
    pub fn server(
        &self,
        file: &str,
        names: &[&str],
    ) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
        self.issue(file, names, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mutual TLS).
    pub fn client(
        &self,
        file: &str,
    ) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
        self.issue(
            file,
            &["client.test"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        file: &str,
        names: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let crt = self.dir.join(format!("{file}.crt"));
        let k = self.dir.join(format!("{file}.key"));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (crt, k, cert.der().clone())
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A rustls client trusting this CA, with ALPN `alpn`, optionally
    /// presenting a client certificate.
    pub fn client_config(
        &self,
        alpn: &[&[u8]],
        client_cert: Option<(&PathBuf, &PathBuf)>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match client_cert {
            None => builder.with_no_client_auth(),
            Some((crt, key)) => {
                use rustls::pki_types::pem::PemObject;
                let certs = rustls::pki_types::CertificateDer::pem_file_iter(crt)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// Connects with TLS to `addr`, sending `sni`.
pub async fn tls_connect(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

/// How an upload that the proxy answers early ends for the client.
#[derive(Debug)]
pub enum Upload {
    /// The whole body went out, then this response (head and body) came.
    Answered(String),
    /// Sending the body failed (the proxy reset the connection) after
    /// `sent` of its bytes: a client that stops at a failed write, as
    /// most do, never sees the response.
    SendFailed { sent: usize, error: std::io::Error },
}

/// Sends `head` (a request header announcing `body_len` bytes), then
/// `body_len` bytes of body, then reads the response until the end of its
/// Content-Length body or the end of the stream. As curl or a client
/// library uploading a file: everything is sent before anything is read.
pub async fn upload<S>(s: &mut S, head: &str, body_len: usize) -> Upload
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if let Err(error) = s.write_all(head.as_bytes()).await {
        return Upload::SendFailed { sent: 0, error };
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        let write = tokio::time::timeout(Duration::from_secs(10), s.write_all(&chunk[..n]))
            .await
            .expect("the proxy takes the body (or closes) within 10 s");
        if let Err(error) = write {
            return Upload::SendFailed { sent, error };
        }
        sent += n;
    }
    let _ = s.flush().await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a response within 10 s")
        {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("reading the response: {e}"),
        };
        got.extend_from_slice(&buf[..n]);
        if response_complete(&got) {
            break;
        }
    }
    Upload::Answered(String::from_utf8_lossy(&got).into_owned())
}

/// Whether `got` holds a whole HTTP/1.x response head and the
/// Content-Length body it announces (none: no body).
pub fn response_complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let len = text[..end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    got.len() >= end + 4 + len
}
