//! The running agent's state and what it does on each event.
use super::{apply::Applier, load_config, snapshot};
use crate::{
    config::Config,
    control::{Request, Response},
    dataplane::Dataplane,
    health::{Checker, Target, Transition},
    localaddr::LocalAddrs,
    metrics::Metrics,
    planner::{self, Health},
};
use std::{path::PathBuf, sync::Arc};
use tracing::{error, info, warn};

/// Health-check targets of every checked backend of the L4 listeners.
pub fn targets(cfg: &Config) -> Vec<Target> {
    cfg.l4_listeners()
        .filter_map(|l| Some((l, l.health_check.as_ref()?)))
        .flat_map(|(l, check)| {
            l.backends
                .iter()
                .filter_map(move |b| Target::new(&cfg.agent, &l.name, b.socket_addr(), check))
        })
        .collect()
}

pub struct Running {
    pub path: PathBuf,
    pub cfg: Config,
    pub dp: Dataplane,
    applier: Applier,
    checker: Checker,
    metrics: Arc<Metrics>,
    local: LocalAddrs,
    /// Configurations applied so far (1 after start).
    generation: u64,
}

impl Running {
    pub fn new(
        path: PathBuf,
        cfg: Config,
        dp: Dataplane,
        applier: Applier,
        checker: Checker,
        metrics: Arc<Metrics>,
        local: LocalAddrs,
    ) -> Running {
        Running {
            path,
            cfg,
            dp,
            applier,
            checker,
            metrics,
            local,
            generation: 0,
        }
    }

    fn health(&self) -> Health {
        Health {
            down: self.checker.down(),
        }
    }

    /// Plans the current configuration with `health` and writes it.
    pub fn apply(&mut self, health: &Health) -> anyhow::Result<()> {
        let plan = planner::plan(&self.cfg, &mut self.applier.ids, health)?;
        self.applier.apply(&mut self.dp, &plan)?;
        Ok(())
    }

    /// Applies a configuration for the first time (start).
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.apply(&Health::default())?;
        self.generation = 1;
        Ok(())
    }

    /// A backend went down or came back: its table slots move at once.
    pub fn health_changed(&mut self, t: Transition) {
        let health = self.health();
        if let Err(e) = self.apply(&health) {
            error!("applying the health change of {} failed: {e:#}", t.key.addr);
        }
    }

    /// Re-reads the file. A file that does not validate, or changes
    /// `[agent]` settings, leaves the running configuration in force.
    pub fn reload(&mut self) -> Response {
        let response = self.try_reload();
        let ok = matches!(response, Response::Reloaded { .. });
        self.metrics.record_reload(ok);
        response
    }

    fn try_reload(&mut self) -> Response {
        let cfg = match load_config(&self.path) {
            Ok(c) => c,
            Err(errors) => {
                error!("reload rejected, the running configuration stays in force:\n{errors}");
                return Response::Error {
                    errors: errors.errors.iter().map(|e| e.to_string()).collect(),
                };
            }
        };
        if cfg.agent != self.cfg.agent {
            let msg =
                "reload rejected: [agent] settings change only with a restart; nothing was changed";
            error!("{msg}");
            return Response::Error {
                errors: vec![msg.into()],
            };
        }
        let previous = std::mem::replace(&mut self.cfg, cfg);
        self.checker.update(targets(&self.cfg));
        let health = self.health();
        match self.apply(&health) {
            Ok(()) => {
                self.generation += 1;
                info!(
                    listeners = self.cfg.listeners.len(),
                    generation = self.generation,
                    "configuration reloaded"
                );
                Response::Reloaded {
                    generation: self.generation,
                }
            }
            Err(e) => {
                error!("reload rejected: applying it failed, restoring the previous configuration: {e:#}");
                self.cfg = previous;
                self.checker.update(targets(&self.cfg));
                let health = self.health();
                if let Err(e) = self.apply(&health) {
                    error!("restoring the previous configuration failed: {e:#}");
                }
                Response::Error {
                    errors: vec![format!("{e:#}")],
                }
            }
        }
    }

    pub fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Reload => self.reload(),
            Request::Status => {
                match snapshot::build(
                    &self.cfg,
                    &self.applier.ids,
                    &self.checker.snapshot(),
                    &self.dp,
                    self.generation,
                ) {
                    Ok(s) => Response::Status(s),
                    Err(e) => Response::Error {
                        errors: vec![format!("reading the dataplane: {e}")],
                    },
                }
            }
        }
    }

    /// Stops health checks, removes the addresses the agent added, then
    /// either detaches and unpins everything or leaves the dataplane
    /// running for the next agent.
    pub fn shutdown(self, keep_dataplane: bool) {
        let Running {
            dp,
            checker,
            mut local,
            ..
        } = self;
        checker.stop();
        if let Err(e) = local.release() {
            warn!("removing added local addresses: {e}");
        }
        if keep_dataplane {
            dp.keep_running();
            info!("dataplane left running; the next `slb run` adopts it");
        } else {
            let mut dp = dp;
            dp.detach_all();
            match dp.unpin() {
                Ok(()) => info!("dataplane detached, pinned state removed"),
                Err(e) => warn!("removing pinned maps: {e}"),
            }
        }
    }
}
