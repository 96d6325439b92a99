//! The validated configuration: plain Rust types, every default applied.
//!
//! Invariants established by [`super::parse`]: see the field docs. Consumers
//! need not re-check them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

/// Declares a fieldless enum spelled in the file as fixed keywords.
macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value with its spelling in the file.
            pub const ALL: &'static [(&'static str, $name)] = &[$(($text, $name::$variant),)+];

            /// The spelling in the file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parses the spelling in the file (exact, case-sensitive).
            pub fn from_keyword(text: &str) -> Option<Self> {
                Self::ALL.iter().find(|(t, _)| *t == text).map(|(_, v)| *v)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

keyword_enum!(
    /// How the XDP program is attached.
    XdpMode {
        Native = "native",
        Skb = "skb",
        /// Native, falling back to skb (generic) mode.
        Auto = "auto",
    }
);

keyword_enum!(
    /// Listener protocol: `tcp`/`udp` are served by the XDP dataplane (L4),
    /// `http`/`https` by the proxy (L7).
    Protocol {
        Tcp = "tcp",
        Udp = "udp",
        Http = "http",
        Https = "https",
    }
);

keyword_enum!(
    /// New-flow scheduler.
    Scheduler {
        /// Weighted round robin.
        Wrr = "wrr",
        /// Weighted least connections.
        Wlc = "wlc",
        /// Weighted Maglev consistent hashing.
        Maglev = "maglev",
        /// Source-address hash.
        Sh = "sh",
    }
);

keyword_enum!(
    /// L4 forwarding mode.
    Forwarding {
        FullNat = "fullnat",
        Nat = "nat",
        /// Direct routing (destination MAC rewrite only).
        Dr = "dr",
    }
);

keyword_enum!(
    PersistenceMode {
        /// All flows of one client address go to the same backend.
        SourceIp = "source_ip",
    }
);

keyword_enum!(
    AclMode {
        /// Only the listed sources may connect.
        Allow = "allow",
        /// The listed sources may not connect.
        Deny = "deny",
    }
);

keyword_enum!(
    /// Health-check protocol (the `protocol` key of `health_check`).
    CheckProtocol {
        Tcp = "tcp",
        Http = "http",
        Udp = "udp",
    }
);

keyword_enum!(
    HttpMethod {
        Head = "HEAD",
        Get = "GET",
    }
);

keyword_enum!(
    /// An accepted HTTP status class.
    StatusClass {
        S2xx = "2xx",
        S3xx = "3xx",
        S4xx = "4xx",
        S5xx = "5xx",
    }
);

impl Protocol {
    /// Served by the XDP dataplane (`tcp`, `udp`).
    pub fn is_l4(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }

    /// Served by the L7 proxy (`http`, `https`).
    pub fn is_l7(self) -> bool {
        !self.is_l4()
    }

    /// The transport protocol on the wire: `http`/`https` run over TCP.
    pub fn transport(self) -> Protocol {
        match self {
            Protocol::Udp => Protocol::Udp,
            Protocol::Tcp | Protocol::Http | Protocol::Https => Protocol::Tcp,
        }
    }
}

impl StatusClass {
    /// True when `status` (e.g. 204) is in this class.
    pub fn matches(self, status: u16) -> bool {
        let class = match self {
            StatusClass::S2xx => 2,
            StatusClass::S3xx => 3,
            StatusClass::S4xx => 4,
            StatusClass::S5xx => 5,
        };
        status / 100 == class
    }
}

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub agent: Agent,
    /// In file order. Names are unique and non-empty; `(vip, port,
    /// transport)` is unique (an `http` and a `tcp` listener cannot share a
    /// VIP and port).
    #[serde(rename = "listener")]
    pub listeners: Vec<Listener>,
}

/// The `[agent]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    /// Devices the XDP program is attached to; may be empty after `parse`
    /// (`slb proxy` needs none), see [`Config::require_dataplane`].
    /// Valid Linux interface names, no duplicates.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    /// Health-check source addresses, at most one per family. Holds an
    /// address of the family of every backend whose listener checks health.
    /// Empty only when no listener checks health.
    pub probe_source: Vec<IpAddr>,
    /// FULLNAT source pool. Holds an address of each family used by
    /// fullnat listeners, at most `MAX_SNAT_ADDRS` per family, no duplicates,
    /// none equal to a VIP or a probe source.
    pub local_addresses: Vec<IpAddr>,
    /// Absolute path.
    pub pin_path: PathBuf,
    pub metrics_listen: SocketAddr,
    /// 1024..=67_108_864.
    pub flow_table_size: u32,
    /// A prime in 1021..=1_000_003.
    pub maglev_table_size: u32,
    /// At most 107 bytes (fits a `sockaddr_un`).
    pub control_socket: PathBuf,
}

impl Agent {
    /// The health-check source address for a backend address's family.
    pub fn probe_source_for(&self, backend: IpAddr) -> Option<IpAddr> {
        self.probe_source
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == backend.is_ipv4())
    }

    /// The FULLNAT source addresses of the family of `addr`.
    pub fn local_addresses_for(&self, addr: IpAddr) -> impl Iterator<Item = IpAddr> + '_ {
        self.local_addresses
            .iter()
            .copied()
            .filter(move |a| a.is_ipv4() == addr.is_ipv4())
    }

    /// The keys whose value `new` changes, each as an error naming it
    /// with the running and the new value. They take effect only when the
    /// agent starts (the maps are sized and the program attached then,
    /// the sockets bound, the FULLNAT pool is what established flows'
    /// replies are addressed to), so a reload that changes one is
    /// refused; the operator is told which key to put back.
    pub fn changes_to(&self, new: &Agent) -> Vec<super::ConfigError> {
        fn list<T: std::fmt::Display>(v: &[T]) -> String {
            let items: Vec<String> = v.iter().map(|x| format!("\"{x}\"")).collect();
            format!("[{}]", items.join(", "))
        }
        // Destructured, so that a new key cannot be forgotten here.
        let Agent {
            interfaces,
            xdp_mode,
            probe_source,
            local_addresses,
            pin_path,
            metrics_listen,
            flow_table_size,
            maglev_table_size,
            control_socket,
        } = self;
        let mut out = Vec::new();
        let mut check = |key: &str, changed: bool, running: String, wanted: String| {
            if changed {
                out.push(super::ConfigError::new(
                    format!("agent.{key}"),
                    format!(
                        "changes only with a restart (running: {running}, in the file: \
                         {wanted}); nothing was changed"
                    ),
                ));
            }
        };
        check(
            "interfaces",
            *interfaces != new.interfaces,
            list(interfaces),
            list(&new.interfaces),
        );
        check(
            "xdp_mode",
            *xdp_mode != new.xdp_mode,
            format!("\"{xdp_mode}\""),
            format!("\"{}\"", new.xdp_mode),
        );
        check(
            "probe_source",
            *probe_source != new.probe_source,
            list(probe_source),
            list(&new.probe_source),
        );
        check(
            "local_addresses",
            *local_addresses != new.local_addresses,
            list(local_addresses),
            list(&new.local_addresses),
        );
        check(
            "pin_path",
            *pin_path != new.pin_path,
            format!("\"{}\"", pin_path.display()),
            format!("\"{}\"", new.pin_path.display()),
        );
        check(
            "metrics_listen",
            *metrics_listen != new.metrics_listen,
            format!("\"{metrics_listen}\""),
            format!("\"{}\"", new.metrics_listen),
        );
        check(
            "flow_table_size",
            *flow_table_size != new.flow_table_size,
            flow_table_size.to_string(),
            new.flow_table_size.to_string(),
        );
        check(
            "maglev_table_size",
            *maglev_table_size != new.maglev_table_size,
            maglev_table_size.to_string(),
            new.maglev_table_size.to_string(),
        );
        check(
            "control_socket",
            *control_socket != new.control_socket,
            format!("\"{}\"", control_socket.display()),
            format!("\"{}\"", new.control_socket.display()),
        );
        out
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    pub name: String,
    /// A unicast address.
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    /// `Some` (default `fullnat`) for `tcp`/`udp` listeners, `None` for
    /// `http`/`https` listeners (where the key is not allowed).
    pub forwarding: Option<Forwarding>,
    #[serde(serialize_with = "super::duration::serialize")]
    pub idle_timeout: Duration,
    /// Only on `tcp`/`udp` listeners.
    pub persistence: Option<Persistence>,
    pub acl: Option<Acl>,
    /// `None` when turned off (`enabled = false`, allowed on `http`/`https`
    /// listeners only).
    pub health_check: Option<HealthCheck>,
    /// At least one; `(address, port)` unique. For `tcp`/`udp` listeners
    /// every backend has the VIP's address family; with `dr` every backend
    /// port equals the listener port. Empty only on an `http` listener with
    /// `redirect_https = true` (it answers every request itself). On
    /// `http`/`https` listeners this is the default group of the forwarding
    /// rules.
    #[serde(rename = "backend")]
    pub backends: Vec<Backend>,
    /// `Some` exactly for `http`/`https` listeners: the proxy's settings.
    /// There, `scheduler` is `Wrr`, `Wlc`, or `Maglev` standing for
    /// `scheduler = "hash"` (consistent hashing on `l7.hash_key`), and
    /// `idle_timeout` is the idle timeout of upgraded (WebSocket) connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Settings>,
}

impl Listener {
    /// The VIP and port the listener serves.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }

    /// Every backend of the listener once: for `tcp`/`udp` listeners its
    /// `backends`; for `http`/`https` listeners the default group followed
    /// by the backends of the named groups, without repeating an address
    /// that is in several groups (health is per `(listener, address)`). A
    /// backend listed several times keeps its first weight.
    ///
    /// Linear in the number of backends: the agent asks for them twice a
    /// second (the probe source must stay local while something is
    /// checked), and a scan of the output for every backend took 4096²/2
    /// comparisons at the 4096-backend limit.
    pub fn all_backends(&self) -> Vec<Backend> {
        let mut seen = std::collections::HashSet::new();
        let groups = self.l7.iter().flat_map(|l7| l7.groups.iter());
        self.backends
            .iter()
            .chain(groups.flat_map(|g| g.backends.iter()))
            .filter(|b| seen.insert(b.socket_addr()))
            .cloned()
            .collect()
    }
}

keyword_enum!(
    /// Scheduler of an `http`/`https` listener (`scheduler` key there).
    L7Scheduler {
        /// Weighted round robin.
        Wrr = "wrr",
        /// Weighted least in-flight requests.
        Wlc = "wlc",
        /// Consistent hashing on `hash_key` (weighted rendezvous hashing).
        Hash = "hash",
    }
);

keyword_enum!(
    /// Cookie persistence of an `http`/`https` listener.
    CookieMode {
        /// The proxy sets its own cookie (`SERVERID`) naming the backend.
        InsertCookie = "insert_cookie",
        /// The proxy prefixes the application's own cookie with the backend.
        RewriteCookie = "rewrite_cookie",
    }
);

/// The settings of an `http`/`https` listener (the keys that only they take).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L7Settings {
    pub scheduler: L7Scheduler,
    /// `Some` exactly when `scheduler` is `Hash`.
    pub hash_key: Option<HashKey>,
    pub persistence: Option<CookiePersistence>,
    /// Only `true` on `http` listeners: every request gets a 301 to https.
    pub redirect_https: bool,
    /// Compress compressible responses the backend sent uncompressed.
    pub gzip: bool,
    /// Per attempt; then the next backend is tried. 10ms..=300s.
    #[serde(serialize_with = "super::duration::serialize")]
    pub backend_connect_timeout: Duration,
    /// Until the backend's response header (then 504), and between the
    /// bytes of its body (then the response is cut). 10ms..=3600s.
    #[serde(serialize_with = "super::duration::serialize")]
    pub backend_response_timeout: Duration,
    /// Keep-alive idle time of a client connection between requests.
    /// 10ms..=3600s.
    #[serde(serialize_with = "super::duration::serialize")]
    pub client_idle_timeout: Duration,
    /// Time to read a request's header. 10ms..=300s.
    #[serde(serialize_with = "super::duration::serialize")]
    pub request_header_timeout: Duration,
    /// 1..=1_000_000.
    pub max_requests_per_connection: u32,
    /// Bytes of request line and header fields; beyond, 431. 1024..=1048576.
    pub max_header_size: u32,
    /// `https` listeners: the first is the default (no SNI or no match);
    /// at least one in a file read by [`super::load`], or once
    /// [`Config::require_certificates`] passed (`parse` accepts none); empty on
    /// `http` listeners. Files were readable, parsed,
    /// and the key matched the certificate when the config was validated.
    #[serde(rename = "certificate")]
    pub certificates: Vec<Certificate>,
    /// Mutual TLS: client certificates must chain to these CA certificates.
    pub client_ca: Option<PathBuf>,
    /// At most `MAX_RULES`; each names an existing group.
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
    /// Names unique, not "default"; each has at least one backend,
    /// `(address, port)` unique within the group.
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
}

impl L7Settings {
    /// The group called `name` (`None` for "default", the listener's own
    /// backends, or an unknown name).
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// What `scheduler = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashKey {
    /// A request header (name lower-cased).
    Header(String),
    /// A request cookie.
    Cookie(String),
}

/// `persistence = { mode = "insert_cookie" | "rewrite_cookie", ... }` on an
/// `http`/`https` listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CookiePersistence {
    pub mode: CookieMode,
    /// The inserted cookie (default "SERVERID") or the application's cookie
    /// that is rewritten (required). A cookie-name token.
    pub cookie: String,
    /// `insert_cookie` only: the cookie's Max-Age.
    #[serde(
        serialize_with = "serialize_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

fn serialize_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => super::duration::serialize(d, s),
        None => s.serialize_none(),
    }
}

/// One `[[listener.certificate]]`: PEM files (absolute, or made absolute
/// against the configuration file's directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Certificate {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One `[[listener.rule]]`: requests matching `host` and `path` go to
/// `group`. At least one of `host` and `path` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Lower-case; an exact name or `*.suffix` (any name ending in `.suffix`).
    pub host: Option<String>,
    /// A path prefix starting with `/`, without `?` or `#`. No two rules
    /// have the same host and (normalised) path.
    pub path: Option<String>,
    /// A group's name, or "default" for the listener's own backends.
    pub group: String,
}

/// One `[[listener.group]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    #[serde(rename = "backend")]
    pub backends: Vec<Backend>,
}

/// `persistence = { mode = "source_ip", timeout = "1000s" }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Persistence {
    pub mode: PersistenceMode,
    #[serde(serialize_with = "super::duration::serialize")]
    pub timeout: Duration,
}

/// `acl = { mode = "allow", cidrs = [...] }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acl {
    pub mode: AclMode,
    /// At least one; both families may be mixed; no host bits set (a bare
    /// address is a /32 or /128).
    pub cidrs: Vec<IpNet>,
}

/// An enabled health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    /// 1s..=50s.
    #[serde(serialize_with = "super::duration::serialize")]
    pub interval: Duration,
    /// 1s..=300s.
    #[serde(serialize_with = "super::duration::serialize")]
    pub timeout: Duration,
    /// 2..=10.
    pub healthy_threshold: u32,
    /// 2..=10.
    pub unhealthy_threshold: u32,
    /// Where the check goes; `None` = the backend's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// What is sent; serialized flat with a `protocol` key.
    #[serde(flatten)]
    pub probe: Probe,
}

impl HealthCheck {
    pub fn protocol(&self) -> CheckProtocol {
        match self.probe {
            Probe::Tcp => CheckProtocol::Tcp,
            Probe::Http(_) => CheckProtocol::Http,
            Probe::Udp(_) => CheckProtocol::Udp,
        }
    }
}

/// The protocol-specific part of a health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum Probe {
    /// Connect, then close with RST.
    Tcp,
    Http(HttpProbe),
    Udp(UdpProbe),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpProbe {
    pub method: HttpMethod,
    /// 1..=80 chars of letters, digits and `-_/.%?#&=`, starting with `/`.
    pub path: String,
    /// `Host` header; `None` = the backend's address.
    pub host: Option<String>,
    /// Accepted status classes; at least one, no duplicates.
    pub codes: Vec<StatusClass>,
}

impl HttpProbe {
    /// True when `status` is in one of the accepted classes.
    pub fn accepts(&self, status: u16) -> bool {
        self.codes.iter().any(|c| c.matches(status))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UdpProbe {
    /// The datagram sent (1..=1024 bytes).
    pub payload: Vec<u8>,
    /// When set, a reply must contain these bytes.
    pub expect: Option<Vec<u8>>,
}

/// In the effective configuration (`slb validate --print`) each byte
/// string appears as it could be written: `payload` when it is UTF-8
/// text, `payload_hex` otherwise.
impl Serialize for UdpProbe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        let mut field = |name: &str, bytes: &[u8]| match std::str::from_utf8(bytes) {
            Ok(text) => m.serialize_entry(name, text),
            Err(_) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                m.serialize_entry(&format!("{name}_hex"), &hex)
            }
        };
        field("payload", &self.payload)?;
        if let Some(e) = &self.expect {
            field("expect", e)?;
        }
        m.end()
    }
}

/// One `[[listener.backend]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    /// A unicast address.
    pub address: IpAddr,
    pub port: u16,
    /// 0..=100; 0 = drain.
    pub weight: u32,
    /// A backup ("sorry server"): it gets new flows or requests only while
    /// no other backend of its list is up with a weight.
    pub backup: bool,
}

impl Backend {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}
