//! The agent behind `slb run` and `slb proxy`: keeps the XDP dataplane (run
//! only) and the L7 proxy in step with the configuration and with health
//! checks, answers status/reload requests, serves metrics, and on exit
//! detaches cleanly (or leaves the dataplane running).
mod apply;
mod fds;
mod flows;
mod notify;
mod retry;
mod running;
mod snapshot;
mod sysctl;

pub use apply::{Applier, ApplyError};

use crate::{
    config::{self, Config, ConfigErrors, XdpMode},
    control,
    dataplane::{human_bytes, AttachMode, Dataplane, DataplaneOptions},
    health::{Checker, Observer},
    l7::{L7Metrics, Proxy},
    localaddr::LocalAddrs,
    metrics::{self, Metrics},
    planner::{BackendKey, Health},
};
use anyhow::{Context, Result};
use running::Running;
use std::{collections::BTreeSet, path::Path, sync::Arc};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};
use tracing::{error, info, warn};

/// Logged once everything is attached, bound and filled; tests and scripts
/// wait for it.
pub const READY: &str = "slb ready";

/// What the agent serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `slb run`: the XDP dataplane for tcp/udp listeners and the proxy for
    /// http/https listeners.
    Full,
    /// `slb proxy`: only the http/https listeners, no XDP.
    ProxyOnly,
}

fn attach_mode(m: XdpMode) -> AttachMode {
    match m {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Skb => AttachMode::Skb,
        XdpMode::Auto => AttachMode::Auto,
    }
}

/// What `slb validate` checks: the file, certificates and this build's
/// dataplane limits included (`config::load`), every error at once.
pub fn load_config_for_validate(path: &Path) -> Result<Config, ConfigErrors> {
    config::load(path)
}

/// Loads and fully checks a configuration for `mode`.
pub fn load_config(path: &Path, mode: Mode) -> Result<Config, ConfigErrors> {
    let cfg = load_config_for_validate(path)?;
    match mode {
        Mode::Full => cfg.require_dataplane()?,
        Mode::ProxyOnly => {
            if cfg.l7_listeners().next().is_none() {
                return Err(ConfigErrors::one(
                    "listener",
                    "no http/https listener to serve (`slb proxy` serves only those)",
                ));
            }
        }
    }
    Ok(cfg)
}

/// Options of `slb run` / `slb proxy`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub mode: Mode,
    /// On SIGTERM/SIGINT leave the XDP program attached and the maps
    /// pinned: forwarding of established flows goes on, and the next
    /// `slb run` adopts the state.
    pub keep_dataplane: bool,
}

/// Loads the dataplane, adopting pinned state when there is some; also
/// returns the backends the adopted state held down.
fn load_dataplane(cfg: &Config) -> Result<(Dataplane, Applier, BTreeSet<BackendKey>)> {
    let opts = DataplaneOptions {
        pin_dir: cfg.agent.pin_path.clone(),
        flow_table_size: cfg.agent.flow_table_size,
        ring_size: cfg.agent.maglev_table_size,
    };
    let dp = Dataplane::load(&opts).context("loading the XDP dataplane")?;
    log_map_memory(&dp, cfg);
    let mut applier = Applier::default();
    let mut down = BTreeSet::new();
    if dp.adopted {
        info!(pin_path = %opts.pin_dir.display(), "adopting pinned dataplane state");
        down = applier.adopt(&dp, cfg)?;
    }
    // Kept as the start leaves them (forwarding, like an LVS director's,
    // stays on for the next start).
    sysctl::enable_forwarding_for(cfg).map_err(|e| anyhow::anyhow!(e))?;
    Ok((dp, applier, down))
}

/// What the maps take of the kernel's memory, once per start: their sizes
/// are fixed by the `[agent]` settings, and an operator sizing a machine
/// (or wondering where the memory went) needs the kernel's own figure.
fn log_map_memory(dp: &Dataplane, cfg: &Config) {
    match dp.map_memory() {
        Ok(maps) => {
            const LARGE: u64 = 1 << 20;
            let total: u64 = maps.iter().map(|m| m.bytes).sum();
            let mut parts: Vec<String> = maps
                .iter()
                .filter(|m| m.bytes >= LARGE)
                .map(|m| format!("{} {}", m.name, human_bytes(m.bytes)))
                .collect();
            let small: Vec<u64> = maps
                .iter()
                .filter(|m| m.bytes < LARGE)
                .map(|m| m.bytes)
                .collect();
            if !small.is_empty() {
                let sum = human_bytes(small.iter().sum());
                parts.push(format!("{} smaller maps {sum}", small.len()));
            }
            info!(
                flow_table_size = cfg.agent.flow_table_size,
                maglev_table_size = cfg.agent.maglev_table_size,
                "dataplane maps take {} of kernel memory ({})",
                human_bytes(total),
                parts.join(", ")
            );
        }
        Err(e) => warn!("cannot tell what the dataplane maps take of memory: {e}"),
    }
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(path: &Path, opts: RunOptions) -> Result<()> {
    // Caught from the start: until a handler exists, SIGTERM or SIGHUP
    // (whose default is to terminate) would kill the agent in the middle
    // of writing the tables, before it could undo anything. Caught, they
    // wait for the main loop: a stop then shuts down cleanly, a reload
    // re-reads the file.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    match fds::raise_open_files() {
        Ok((before, after)) if after > before => {
            info!("open-file limit raised from {before} to {after}")
        }
        Ok(_) => {}
        Err(e) => warn!("raising the open-file limit: {e}"),
    }
    let cfg = load_config(path, opts.mode)
        .map_err(|e| anyhow::anyhow!("{}: invalid configuration:\n{e}", path.display()))?;
    if opts.mode == Mode::ProxyOnly && cfg.l4_listeners().next().is_some() {
        warn!("`slb proxy` ignores the tcp/udp listeners (they need `slb run`)");
    }
    // The control socket first, then the pin directory's lock (in
    // `Dataplane::load`): an agent already running with this socket or
    // this pinned state makes this one exit before it changes anything.
    let (to_agent, mut requests) = mpsc::channel(64);
    let control = control::serve(&cfg.agent.control_socket, to_agent.clone()).await?;
    let (dataplane, down) = match opts.mode {
        Mode::Full => {
            let (dp, applier, down) = load_dataplane(&cfg)?;
            if !dp.pins_outlive_process {
                let pins = dp.pin_dir().display();
                let why = format!(
                    "pin_path {pins} is not on a bpffs visible outside this agent: it mounted \
                     one in a mount namespace of its own (as `ip netns exec` gives), which \
                     goes away with the agent, and the pinned dataplane with it"
                );
                let fix = format!("mount one there beforehand, outside: `mount -t bpf bpf {pins}`");
                if opts.keep_dataplane {
                    warn!("{why}. --keep-dataplane cannot leave it running; {fix}");
                } else {
                    info!("{why}. A crash detaches the program too; to keep it forwarding then, {fix}");
                }
            }
            (Some((dp, applier)), down)
        }
        Mode::ProxyOnly => (None, BTreeSet::new()),
    };
    let mut local = LocalAddrs::new().context("managing local addresses")?;
    local
        .sync(&running::local_addresses(&cfg, opts.mode))
        .context(
        "adding the health-check source and L7 VIPs to lo (needs CAP_NET_ADMIN unless they exist)",
    )?;

    let mut metrics = Metrics::new();
    let l7_metrics = L7Metrics::new();
    l7_metrics.register(&mut metrics.registry);
    let metrics = Arc::new(metrics);
    let observer: Observer = {
        let m = metrics.clone();
        Arc::new(move |_key, protocol, took, ok| {
            m.record_check(protocol.as_str(), ok, took.as_secs_f64())
        })
    };
    if !down.is_empty() {
        info!(
            backends = down.len(),
            "backends down in the adopted state stay down until their first probe"
        );
    }
    let (checker, transitions) =
        Checker::start_seeded(running::targets(&cfg, opts.mode), Some(observer), &down);
    let (health_tx, health_rx) = watch::channel(Health::default());
    // Started even with no http/https listener (it then binds nothing):
    // a reload may add one.
    let proxy = Proxy::start(&cfg.listeners, health_rx, l7_metrics)
        .await
        .context("starting the L7 proxy")?;

    // Bound before any table is written: a start that fails on its port
    // must not have changed an adopted dataplane.
    let metrics_server = metrics::serve(cfg.agent.metrics_listen, metrics.clone(), to_agent).await;
    let _metrics = match metrics_server {
        Ok(h) => Some(h),
        // The proxy may run unprivileged next to an agent that owns the
        // port; metrics are worth a warning, not a refusal to serve.
        Err(e) if opts.mode == Mode::ProxyOnly => {
            warn!("metrics not served: {e}");
            None
        }
        Err(e) => return Err(e.into()),
    };

    let (recounted, mut recounts) = mpsc::unbounded_channel();
    let mut st = Running::new(
        path.to_owned(),
        opts.mode,
        cfg,
        dataplane,
        checker,
        health_tx,
        proxy,
        metrics.clone(),
        local,
        recounted,
    );
    // Everything written from here until the program is attached
    // everywhere is undone if the start fails: the previous run's links
    // go on running on the maps, and must go on forwarding by the
    // configuration that was running, not by one that never started.
    let cp = st.checkpoint();
    let started = st
        .start()
        .context("filling the dataplane maps")
        .and_then(|()| {
            st.attach(attach_mode(st.cfg.agent.xdp_mode))
                .context("attaching XDP")
        });
    if let Err(e) = started {
        // Adopted state belongs to the previous run as much as to this
        // one: its links still forward established flows with it. Leave
        // it for the next agent rather than cut those flows off.
        let keep = st.adopted();
        match st.roll_back(cp) {
            Ok(()) if keep => error!(
                "starting failed; the adopted links are left running with \
                 the tables they had"
            ),
            Ok(()) => {}
            Err(undo) => error!("starting failed, and putting back the tables failed too: {undo}"),
        }
        control.close();
        st.shutdown(keep).await;
        return Err(e);
    }
    st.release(cp);
    st.keep_pins();
    info!(
        l4_listeners = st.cfg.l4_listeners().count(),
        l7_listeners = st.cfg.l7_listeners().count(),
        "{READY}"
    );
    notify::ready();

    let mut transitions = transitions;
    let mut active_refresh = tokio::time::interval(std::time::Duration::from_secs(2));
    let mut housekeeping = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = active_refresh.tick() => st.refresh_active(),
            Some(r) = recounts.recv() => st.recounted(r),
            _ = housekeeping.tick() => st.tick(),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => { st.reload().await; }
            Some(t) = transitions.recv() => {
                st.health_changed(&running::queued_transitions(t, &mut transitions));
            }
            Some((req, reply)) = requests.recv() => st.handle(req, reply).await,
        }
    }
    info!(keep_dataplane = opts.keep_dataplane, "shutting down");
    control.close();
    st.shutdown(opts.keep_dataplane).await;
    Ok(())
}
