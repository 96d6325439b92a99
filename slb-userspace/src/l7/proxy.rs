//! The proxy as the agent (and `slb proxy`) drive it: start on the
//! configuration's http/https listeners, reload, shut down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::metrics::L7Metrics;
use super::server::{self, SHUTDOWN_GRACE};
use super::service::Shared;
use super::state::{Counters, Pools, Runtime};
use super::tls::Resumption;
use super::L7Error;
use crate::config::Listener;
use crate::planner::Health;

/// Entry point: see [`Proxy::start`].
#[derive(Debug)]
pub struct Proxy;

/// One listening socket.
struct Served {
    name: String,
    /// The configured `vip:port`.
    addr: SocketAddr,
    /// The bound address (differs from `addr` only in port when a test
    /// handed in a socket bound to port 0).
    local: SocketAddr,
    runtime: watch::Sender<Arc<Runtime>>,
    /// Stops accepting and closes this listener's connections.
    stop: CancellationToken,
    /// This listener's client connections (also in the proxy's tracker).
    conns: TaskTracker,
    /// The accept loop, which owns the listening socket.
    accepting: tokio::task::JoinHandle<()>,
}

/// A running proxy. Dropping it leaves the proxy running until the tokio
/// runtime ends; call [`ProxyHandle::shutdown`] to stop it.
pub struct ProxyHandle {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    state: Mutex<State>,
    /// Removed listeners whose connections may still be running: their
    /// VIP and connections. A plain mutex: read from synchronous code
    /// (the agent's clock tick), never held across an await.
    draining: std::sync::Mutex<Vec<(IpAddr, TaskTracker)>>,
}

struct State {
    served: Vec<Served>,
    counters: Counters,
    pools: Pools,
    /// Session resumption state per https listener, with what its client
    /// certificates were verified against (see [`Resumption`]).
    resumptions: BTreeMap<String, (ClientAuth, Resumption)>,
}

/// What an https listener verifies client certificates against: nothing,
/// or a CA bundle (its path and content). A session may only resume under
/// the setting it was made under.
type ClientAuth = Option<(std::path::PathBuf, Vec<u8>)>;

fn client_auth(l: &Listener) -> ClientAuth {
    let path = l.l7.as_ref()?.client_ca.clone()?;
    // Unreadable: building the TLS settings fails with the file's error.
    let content = std::fs::read(&path).unwrap_or_default();
    Some((path, content))
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle").finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts serving the `http`/`https` listeners among `listeners` (the
    /// others are ignored), binding each `vip:port`. `health`: the backends
    /// health checks hold down (keys: listener name and backend address,
    /// for the backends of groups too). Nothing is left running on error.
    pub async fn start(
        listeners: &[Listener],
        health: watch::Receiver<Health>,
        metrics: L7Metrics,
    ) -> Result<ProxyHandle, L7Error> {
        Self::start_with_sockets(listeners, Vec::new(), health, metrics).await
    }

    /// Like [`Proxy::start`], using already bound sockets where one is
    /// given for a listener: `(name, socket)` serves the listener of that
    /// name, or the one whose `vip:port` the socket is bound to. (Tests bind
    /// port 0 and hand the socket in.)
    pub async fn start_with_sockets(
        listeners: &[Listener],
        sockets: Vec<(String, TcpListener)>,
        health: watch::Receiver<Health>,
        metrics: L7Metrics,
    ) -> Result<ProxyHandle, L7Error> {
        let handle = ProxyHandle {
            shared: Arc::new(Shared {
                health,
                metrics,
                shutdown: CancellationToken::new(),
            }),
            tracker: TaskTracker::new(),
            state: Mutex::new(State {
                served: Vec::new(),
                counters: Counters::default(),
                pools: Pools::default(),
                resumptions: BTreeMap::new(),
            }),
            draining: std::sync::Mutex::new(Vec::new()),
        };
        handle.apply(listeners, sockets).await?;
        Ok(handle)
    }
}

impl ProxyHandle {
    /// The proxy's request counters (for `slb status`).
    pub fn metrics(&self) -> &L7Metrics {
        &self.shared.metrics
    }

    /// Applies a new configuration: listeners that keep their `vip:port`
    /// switch to the new rules, backends, certificates and timeouts without
    /// closing a connection (requests in progress finish on the old
    /// settings); new ones are bound; removed ones stop accepting and close
    /// their connections gracefully. On error (a certificate that does not
    /// load, an address that cannot be bound) nothing changes.
    pub async fn reload(&self, listeners: &[Listener]) -> Result<(), L7Error> {
        self.apply(listeners, Vec::new()).await
    }

    /// The VIPs of removed listeners that still have connections (finishing
    /// their requests, at most `SHUTDOWN_GRACE`): they must stay local
    /// addresses until then, or those connections can no longer send.
    pub fn draining_vips(&self) -> BTreeSet<IpAddr> {
        let mut draining = self
            .draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        draining.retain(|(_, conns)| !conns.is_empty());
        draining.iter().map(|(vip, _)| *vip).collect()
    }

    /// The bound address of each listener, by name.
    pub async fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        let st = self.state.lock().await;
        st.served
            .iter()
            .map(|s| (s.name.clone(), s.local))
            .collect()
    }

    /// The bound address of listener `name`.
    pub async fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let st = self.state.lock().await;
        st.served.iter().find(|s| s.name == name).map(|s| s.local)
    }

    /// Stops accepting, lets requests in progress finish (at most
    /// `SHUTDOWN_GRACE`), ends WebSocket tunnels, and returns when every
    /// connection is closed or the grace period is over.
    pub async fn shutdown(self) {
        self.shutdown_within(SHUTDOWN_GRACE + Duration::from_secs(1))
            .await;
    }

    /// [`ProxyHandle::shutdown`], waiting at most `grace`.
    pub async fn shutdown_within(self, grace: Duration) {
        {
            let st = self.state.lock().await;
            for s in &st.served {
                s.stop.cancel();
            }
        }
        self.shared.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            info!("proxy shutdown: some connections were still open after {grace:?}");
        }
    }

    async fn apply(
        &self,
        listeners: &[Listener],
        mut sockets: Vec<(String, TcpListener)>,
    ) -> Result<(), L7Error> {
        let mut guard = self.state.lock().await;
        // Through a plain reference: fields borrowed apart (counters and
        // pools at once) cannot be through the guard.
        let st = &mut *guard;
        let wanted: Vec<&Listener> = listeners.iter().filter(|l| l.protocol.is_l7()).collect();

        // Everything that can fail, before anything changes.
        let mut runtimes = Vec::with_capacity(wanted.len());
        let mut resumptions = BTreeMap::new();
        for l in &wanted {
            let auth = client_auth(l);
            let resumption = match st.resumptions.get(&l.name) {
                Some((was, r)) if *was == auth => r.clone(),
                _ => Resumption::new().map_err(|source| L7Error::Tls {
                    listener: l.name.clone(),
                    cause: source,
                })?,
            };
            runtimes.push(Runtime::build(
                l,
                listeners,
                &resumption,
                &mut st.counters,
                &mut st.pools,
                &self.shared.metrics,
            )?);
            resumptions.insert(l.name.clone(), (auth, resumption));
        }
        let mut bound: Vec<(SocketAddr, TcpListener)> = Vec::new();
        for l in &wanted {
            let addr = l.socket_addr();
            if st.served.iter().any(|s| s.addr == addr) {
                continue;
            }
            let given = sockets.iter().position(|(name, sock)| {
                *name == l.name || sock.local_addr().is_ok_and(|a| a == addr)
            });
            let sock = match given {
                Some(i) => sockets.swap_remove(i).1,
                None => TcpListener::bind(addr)
                    .await
                    .map_err(|source| L7Error::Bind {
                        listener: l.name.clone(),
                        addr,
                        cause: source,
                    })?,
            };
            bound.push((addr, sock));
        }

        // Removed listeners: stop accepting, close their connections
        // gracefully (they are draining until the last one ends).
        let (kept, removed): (Vec<Served>, Vec<Served>) = std::mem::take(&mut st.served)
            .into_iter()
            .partition(|s| wanted.iter().any(|l| l.socket_addr() == s.addr));
        st.served = kept;
        for s in removed {
            info!(listener = %s.name, addr = %s.addr, "proxy listener removed");
            s.stop.cancel();
            s.conns.close();
            self.draining
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((s.addr.ip(), s.conns));
            // Its listening socket is closed once the reload is done (the
            // loop ends at once when cancelled).
            if tokio::time::timeout(Duration::from_secs(1), s.accepting)
                .await
                .is_err()
            {
                warn!(listener = %s.name, "accept loop still running after its removal");
            }
        }
        for (l, rt) in wanted.iter().zip(runtimes) {
            let rt = Arc::new(rt);
            let addr = l.socket_addr();
            if let Some(s) = st.served.iter_mut().find(|s| s.addr == addr) {
                s.name = l.name.clone();
                s.runtime.send_replace(rt);
                continue;
            }
            let Some(i) = bound.iter().position(|(a, _)| *a == addr) else {
                // Bound above for every address not yet served.
                continue;
            };
            let (_, sock) = bound.swap_remove(i);
            let local = sock.local_addr().unwrap_or(addr);
            let (tx, rx) = watch::channel(rt);
            let stop = self.shared.shutdown.child_token();
            let conns = TaskTracker::new();
            let accepting = self.tracker.spawn(server::accept_loop(
                sock,
                rx,
                stop.clone(),
                self.shared.clone(),
                self.tracker.clone(),
                conns.clone(),
            ));
            info!(listener = %l.name, %local, protocol = %l.protocol, "proxy listening");
            st.served.push(Served {
                name: l.name.clone(),
                addr,
                local,
                runtime: tx,
                stop,
                conns,
                accepting,
            });
        }
        let configured = super::state::configured(listeners);
        st.counters.retain_configured(&configured);
        st.pools.retain_configured(&configured);
        st.resumptions = resumptions;
        Ok(())
    }
}
