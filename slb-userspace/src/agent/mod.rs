//! `slb run`: load the dataplane, keep it in step with the configuration,
//! detach cleanly on exit.
mod apply;
mod support;
mod sysctl;

pub use apply::Applier;
pub use support::check as check_supported;

use crate::{
    config::{self, Config, XdpMode},
    dataplane::{AttachMode, Dataplane, DataplaneOptions},
    planner::{self, Health},
};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

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

struct Running {
    path: PathBuf,
    cfg: Config,
    dp: Dataplane,
    applier: Applier,
    health: Health,
}

impl Running {
    fn apply(&mut self) -> Result<()> {
        let plan = planner::plan(&self.cfg, &mut self.applier.ids, &self.health)?;
        self.applier.apply(&mut self.dp, &plan)?;
        Ok(())
    }

    /// Re-reads the file; a file that does not validate leaves the running
    /// configuration in force.
    fn reload(&mut self) {
        let cfg = match load_config(&self.path) {
            Ok(c) => c,
            Err(errors) => {
                error!("reload rejected, the running configuration stays in force:\n{errors}");
                return;
            }
        };
        let restart_only = cfg.agent != self.cfg.agent;
        if restart_only {
            error!("reload rejected: [agent] settings change only with a restart; listeners were not changed either");
            return;
        }
        let previous = std::mem::replace(&mut self.cfg, cfg);
        match self.apply() {
            Ok(()) => info!(
                listeners = self.cfg.listeners.len(),
                "configuration reloaded"
            ),
            Err(e) => {
                error!("applying the new configuration failed, restoring the previous one: {e:#}");
                self.cfg = previous;
                if let Err(e) = self.apply() {
                    error!("restoring the previous configuration failed: {e:#}");
                }
            }
        }
    }
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(path: &Path) -> Result<()> {
    let cfg = load_config(path)
        .map_err(|e| anyhow::anyhow!("{}: invalid configuration:\n{e}", path.display()))?;
    let opts = DataplaneOptions {
        pin_dir: cfg.agent.pin_path.clone(),
        flow_table_size: cfg.agent.flow_table_size,
        ring_size: cfg.agent.maglev_table_size,
    };
    let dp = Dataplane::load(&opts).context("loading the XDP dataplane")?;
    let mut applier = Applier::default();
    if dp.adopted {
        info!(pin_path = %opts.pin_dir.display(), "adopting pinned dataplane state");
        applier.adopt(&dp)?;
    }
    let v6 = cfg.l4_listeners().any(|l| l.vip.is_ipv6());
    for iface in &cfg.agent.interfaces {
        sysctl::enable_forwarding(iface, v6)
            .map_err(|e| anyhow::anyhow!("interface {iface}: {e}"))?;
    }
    let mut st = Running {
        path: path.to_owned(),
        cfg,
        dp,
        applier,
        health: Health::default(),
    };
    st.apply().context("filling the dataplane maps")?;
    let mode = attach_mode(st.cfg.agent.xdp_mode);
    let ifaces = st.cfg.agent.interfaces.clone();
    for iface in &ifaces {
        if let Err(e) = st.dp.attach(iface, mode) {
            st.dp.detach_all();
            let _ = st.dp.unpin();
            return Err(e).context("attaching XDP");
        }
    }
    info!(
        listeners = st.cfg.l4_listeners().count(),
        interfaces = ?ifaces,
        "{READY}"
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => st.reload(),
        }
    }
    info!("shutting down");
    st.dp.detach_all();
    st.dp.unpin().context("removing pinned maps")?;
    info!("dataplane detached, pinned state removed");
    Ok(())
}
