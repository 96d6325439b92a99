//! `slb run`: load the dataplane, keep it in step with the configuration
//! and with health checks, answer status/reload requests, serve metrics,
//! detach cleanly on exit (or leave the dataplane running).
mod apply;
mod running;
mod snapshot;
mod support;
mod sysctl;

pub use apply::Applier;
pub use support::check as check_supported;

use crate::{
    config::{self, Config, XdpMode},
    control,
    dataplane::{AttachMode, Dataplane, DataplaneOptions},
    health::{Checker, Observer},
    localaddr::LocalAddrs,
    metrics::{self, Metrics},
};
use anyhow::{Context, Result};
use running::Running;
use std::{path::Path, sync::Arc};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::info;

/// Logged once the program is attached and the maps are filled; tests and
/// scripts wait for it.
pub const READY: &str = "slb ready";

fn attach_mode(m: XdpMode) -> AttachMode {
    match m {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Skb => AttachMode::Skb,
        XdpMode::Auto => AttachMode::Auto,
    }
}

/// Loads and fully checks a configuration for `slb run`.
pub fn load_config(path: &Path) -> Result<Config, config::ConfigErrors> {
    let cfg = load_config_for_validate(path)?;
    cfg.require_dataplane()?;
    Ok(cfg)
}

/// What `slb validate` checks: the file, and that this build serves every
/// feature it uses.
pub fn load_config_for_validate(path: &Path) -> Result<Config, config::ConfigErrors> {
    let cfg = config::load(path)?;
    support::check(&cfg)?;
    Ok(cfg)
}

/// Options of `slb run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// On SIGTERM/SIGINT leave the XDP program attached and the maps
    /// pinned: forwarding of established flows goes on, and the next
    /// `slb run` adopts the state.
    pub keep_dataplane: bool,
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(path: &Path, opts: RunOptions) -> Result<()> {
    let cfg = load_config(path)
        .map_err(|e| anyhow::anyhow!("{}: invalid configuration:\n{e}", path.display()))?;
    let dp_opts = DataplaneOptions {
        pin_dir: cfg.agent.pin_path.clone(),
        flow_table_size: cfg.agent.flow_table_size,
        ring_size: cfg.agent.maglev_table_size,
    };
    let dp = Dataplane::load(&dp_opts).context("loading the XDP dataplane")?;
    let mut applier = Applier::default();
    if dp.adopted {
        info!(pin_path = %dp_opts.pin_dir.display(), "adopting pinned dataplane state");
        applier.adopt(&dp, &cfg)?;
    }
    let v6 = cfg.l4_listeners().any(|l| l.vip.is_ipv6());
    for iface in &cfg.agent.interfaces {
        sysctl::enable_forwarding(iface, v6)
            .map_err(|e| anyhow::anyhow!("interface {iface}: {e}"))?;
    }
    let mut local = LocalAddrs::new().context("managing local addresses")?;
    local
        .sync(&cfg.agent.probe_source)
        .context("adding the health-check source address")?;

    let metrics = Arc::new(Metrics::new());
    let observer: Observer = {
        let m = metrics.clone();
        Arc::new(move |_key, protocol, took, ok| {
            m.record_check(protocol.as_str(), ok, took.as_secs_f64())
        })
    };
    let (checker, transitions) =
        Checker::start_with_observer(running::targets(&cfg), Some(observer));

    let mut st = Running::new(
        path.to_owned(),
        cfg,
        dp,
        applier,
        checker,
        metrics.clone(),
        local,
    );
    st.start().context("filling the dataplane maps")?;

    let (to_agent, mut requests) = mpsc::channel(64);
    let _control = control::serve(&st.cfg.agent.control_socket, to_agent.clone()).await?;
    let _metrics = metrics::serve(st.cfg.agent.metrics_listen, metrics, to_agent).await?;

    let mode = attach_mode(st.cfg.agent.xdp_mode);
    let ifaces = st.cfg.agent.interfaces.clone();
    for iface in &ifaces {
        if let Err(e) = st.dp.attach(iface, mode) {
            st.shutdown(false);
            return Err(e).context("attaching XDP");
        }
    }
    info!(listeners = st.cfg.l4_listeners().count(), interfaces = ?ifaces, "{READY}");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut transitions = transitions;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => { st.reload(); }
            Some(t) = transitions.recv() => st.health_changed(t),
            Some((req, reply)) = requests.recv() => {
                let _ = reply.send(st.handle(req));
            }
        }
    }
    info!(keep_dataplane = opts.keep_dataplane, "shutting down");
    std::fs::remove_file(&st.cfg.agent.control_socket).ok();
    st.shutdown(opts.keep_dataplane);
    Ok(())
}
