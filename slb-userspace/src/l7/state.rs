//! A listener's settings as the proxy uses them, built from the validated
//! configuration. Immutable: a reload builds a new one and swaps it in;
//! requests already running finish with the one they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::HeaderValue;
use rustls::ServerConfig;

use super::balance::{Algorithm, Balancer};
use super::metrics::{L7Metrics, ListenerMetrics};
use super::persist::{backend_id, Persistence};
use super::router::Router;
use super::tls::{self, Resumption};
use super::upstream::{self, Pool};
use super::L7Error;
use crate::config::{self, HashKey, L7Scheduler, L7Settings, Listener, Protocol};
use crate::planner::BackendKey;

/// One backend of a group.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Used only while no other backend of its group is up with a weight.
    pub backup: bool,
    /// Its health key: listener name and address.
    pub key: BackendKey,
    /// Its id in persistence cookies.
    pub id: String,
    /// Requests in flight to this backend from this listener (all groups);
    /// kept across reloads.
    pub in_flight: Arc<AtomicUsize>,
    /// `ip:port`, for request URIs.
    pub authority: Authority,
    /// Keep-alive connections to it, shared by the groups of the listener
    /// that have this backend.
    pub pool: Arc<Pool>,
}

#[derive(Debug)]
pub struct Group {
    pub name: String,
    pub backends: Vec<Backend>,
    pub balancer: Balancer,
    /// Some backend is a backup (else choosing skips that rule).
    pub has_backup: bool,
}

/// In-flight counters by (listener, backend), outliving reloads so that
/// `wlc` does not forget the requests still running.
#[derive(Debug, Default)]
pub struct Counters(HashMap<(String, SocketAddr), Arc<AtomicUsize>>);

impl Counters {
    fn get(&mut self, listener: &str, addr: SocketAddr) -> Arc<AtomicUsize> {
        self.0
            .entry((listener.to_owned(), addr))
            .or_default()
            .clone()
    }

    /// Forgets the counters of backends no longer configured (and idle).
    pub fn retain_configured(&mut self, configured: &Configured) {
        self.0.retain(|(name, addr), c| {
            configured.contains(&(name.clone(), *addr)) || c.load(Ordering::Relaxed) > 0
        });
    }
}

/// (listener name, backend address) of every backend of `listeners`, its
/// groups' included: looked up once per kept counter and pool on reload
/// (listing a listener's backends for each of them was quadratic in the
/// backends, 4096² at the limit).
pub type Configured = std::collections::HashSet<(String, SocketAddr)>;

pub fn configured(listeners: &[Listener]) -> Configured {
    listeners
        .iter()
        .flat_map(|l| {
            l.all_backends()
                .into_iter()
                .map(move |b| (l.name.clone(), b.socket_addr()))
        })
        .collect()
}

/// Keep-alive connection pools by (listener, backend), outliving reloads:
/// a reload that leaves a backend as it was keeps its idle connections
/// (nginx and HAProxy start new workers on reload, which connect anew).
#[derive(Debug, Default)]
pub struct Pools(HashMap<(String, SocketAddr), Arc<Pool>>);

impl Pools {
    /// The pool of `listener`'s backend `addr`: the one it had, unless its
    /// connect timeout changed (a new pool then; the old one's connections
    /// close with the last request using them).
    fn get(&mut self, listener: &str, addr: SocketAddr, connect_timeout: Duration) -> Arc<Pool> {
        let pool = self
            .0
            .entry((listener.to_owned(), addr))
            .or_insert_with(|| Pool::new(addr, connect_timeout));
        if pool.connect_timeout() != connect_timeout {
            *pool = Pool::new(addr, connect_timeout);
        }
        pool.clone()
    }

    /// Forgets the pools of backends no longer configured: their idle
    /// connections close once the runtimes still using them are gone.
    pub fn retain_configured(&mut self, configured: &Configured) {
        self.0
            .retain(|(name, addr), _| configured.contains(&(name.clone(), *addr)));
    }
}

#[derive(Debug)]
pub struct Runtime {
    pub name: String,
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub l7: L7Settings,
    /// Idle timeout of WebSocket tunnels (the listener's `idle_timeout`).
    pub tunnel_idle: Duration,
    pub router: Router,
    /// `[0]` is the default group (the listener's own backends).
    pub groups: Vec<Group>,
    pub persistence: Option<Persistence>,
    /// https listeners only.
    pub tls: Option<Arc<ServerConfig>>,
    /// Port of the https URL `redirect_https` sends clients to: that of an
    /// https listener on the same VIP, else 443.
    pub https_port: u16,
    /// This listener's series of the proxy's metrics.
    pub metrics: ListenerMetrics,
    /// `X-Forwarded-Port` (the listener's port).
    pub forwarded_port: HeaderValue,
    /// The listener's `acl`, checked on every accepted connection.
    pub acl: Option<config::Acl>,
}

impl Runtime {
    /// Whether the listener's ACL lets a client at `ip` in (as the XDP
    /// program checks L4 listeners' ACLs on new flows).
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        let Some(acl) = &self.acl else {
            return true;
        };
        // An IPv4 client may reach a dual-stack socket IPv4-mapped.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let listed = acl.cidrs.iter().any(|c| c.contains(&ip));
        match acl.mode {
            config::AclMode::Allow => listed,
            config::AclMode::Deny => !listed,
        }
    }
}

impl Runtime {
    /// Builds the runtime of `l` (an http/https listener), reading its
    /// certificates. `all`: every listener of the configuration (to find
    /// the https port for redirects).
    pub fn build(
        l: &Listener,
        all: &[Listener],
        resumption: &Resumption,
        counters: &mut Counters,
        pools: &mut Pools,
        metrics: &L7Metrics,
    ) -> Result<Self, L7Error> {
        let Some(l7) = l.l7.clone() else {
            return Err(L7Error::NotL7(l.name.clone()));
        };
        let algorithm = match l7.scheduler {
            L7Scheduler::Wrr => Algorithm::Wrr,
            L7Scheduler::Wlc => Algorithm::Wlc,
            L7Scheduler::Hash => Algorithm::Hash,
        };
        let mut group = |name: &str, backends: &[config::Backend]| {
            let list: Vec<Backend> = backends
                .iter()
                .map(|b| Backend {
                    addr: b.socket_addr(),
                    weight: b.weight,
                    backup: b.backup,
                    key: BackendKey {
                        listener: l.name.clone(),
                        addr: b.socket_addr(),
                    },
                    id: backend_id(b.socket_addr()),
                    in_flight: counters.get(&l.name, b.socket_addr()),
                    authority: upstream::authority(b.socket_addr()),
                    pool: pools.get(&l.name, b.socket_addr(), l7.backend_connect_timeout),
                })
                .collect();
            let weights: Vec<(String, u32)> = list
                .iter()
                .map(|b| (b.addr.to_string(), b.weight))
                .collect();
            Group {
                name: name.to_owned(),
                balancer: Balancer::new(algorithm, &weights),
                has_backup: list.iter().any(|b| b.backup),
                backends: list,
            }
        };
        let mut groups = vec![group(config::defaults::DEFAULT_GROUP, &l.backends)];
        for g in &l7.groups {
            groups.push(group(&g.name, &g.backends));
        }
        let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        let router = Router::new(&l7.rules, |n| names.iter().position(|x| x == n));
        let tls = match l.protocol {
            Protocol::Https => Some(tls::server_config(&l.name, &l7, resumption).map_err(
                |source| L7Error::Tls {
                    listener: l.name.clone(),
                    cause: source,
                },
            )?),
            _ => None,
        };
        let https_port = all
            .iter()
            .find(|o| o.protocol == Protocol::Https && o.vip == l.vip)
            .map_or(443, |o| o.port);
        Ok(Self {
            name: l.name.clone(),
            protocol: l.protocol,
            addr: l.socket_addr(),
            persistence: l7.persistence.as_ref().map(Persistence::new),
            tunnel_idle: l.idle_timeout,
            router,
            groups,
            tls,
            https_port,
            metrics: metrics.listener(&l.name),
            forwarded_port: HeaderValue::from(l.socket_addr().port()),
            acl: l.acl.clone(),
            l7,
        })
    }

    pub fn hash_key(&self) -> Option<&HashKey> {
        self.l7.hash_key.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload keeps the counters and pools of every backend still
    /// configured under its listener, its groups' included, and of no
    /// other: a backend moved to another listener is not the same one.
    #[test]
    fn configured_backends_are_those_of_each_listener_and_its_groups() {
        let text = "[agent]\nprobe_source = [\"100.64.0.1\"]\n\
            [[listener]]\nname = \"www\"\nvip = \"127.0.0.1\"\nport = 8080\nprotocol = \"http\"\n\
            [[listener.backend]]\naddress = \"10.0.1.1\"\nport = 80\n\
            [[listener.group]]\nname = \"api\"\n\
            [[listener.group.backend]]\naddress = \"10.0.2.1\"\nport = 80\n\
            [[listener.rule]]\npath = \"/api/\"\ngroup = \"api\"\n\
            [[listener]]\nname = \"img\"\nvip = \"127.0.0.1\"\nport = 8081\nprotocol = \"http\"\n\
            [[listener.backend]]\naddress = \"10.0.3.1\"\nport = 80\n";
        let cfg = config::parse(text).unwrap();
        let c = configured(&cfg.listeners);
        let has = |l: &str, a: &str| c.contains(&(l.to_owned(), a.parse().unwrap()));
        assert!(
            has("www", "10.0.1.1:80") && has("www", "10.0.2.1:80") && has("img", "10.0.3.1:80")
        );
        assert!(!has("img", "10.0.1.1:80") && !has("www", "10.0.3.1:80"));
        assert_eq!(c.len(), 3);

        let mut pools = Pools::default();
        let t = Duration::from_secs(5);
        pools.get("www", "10.0.2.1:80".parse().unwrap(), t);
        pools.get("img", "10.0.2.1:80".parse().unwrap(), t);
        pools.retain_configured(&c);
        assert_eq!(pools.0.len(), 1);
        assert!(pools
            .0
            .contains_key(&("www".to_owned(), "10.0.2.1:80".parse().unwrap())));
    }
}
