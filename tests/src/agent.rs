//! Runs the `slb` binary inside a namespace and waits for it.
use crate::{netns::Netns, slb_bin};
use anyhow::{Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The line the agent logs once the dataplane is attached and filled.
pub const READY: &str = "slb ready";

pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
    pub config: PathBuf,
    dir: PathBuf,
}

/// A scratch directory for one test's files, removed by `Agent` on drop.
pub fn scratch_dir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "slbt-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand_suffix() -> u64 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000_007)
        .unwrap_or(0)
}

impl Agent {
    /// Writes the configuration `config(scratch_dir)` returns into a
    /// scratch dir and starts `slb run -c` in `ns`, waiting for the ready
    /// line (or failing with the agent's log).
    pub fn start(ns: &Netns, tag: &str, config: impl FnOnce(&Path) -> String) -> Result<Agent> {
        let dir = scratch_dir(tag)?;
        let cfg = dir.join("slb.toml");
        std::fs::write(&cfg, config(&dir))?;
        Self::start_with(ns, dir, cfg, &["run"])
    }

    /// Replaces the configuration file and sends SIGHUP; waits until the
    /// agent logged the outcome (`reloaded` or `rejected`) and returns it.
    pub fn reload(&mut self, config: &str) -> Result<String> {
        let before = self.log_text().len();
        std::fs::write(&self.config, config)?;
        self.signal(Signal::SIGHUP)?;
        let start = Instant::now();
        loop {
            let log = self.log_text();
            let new = log.get(before..).unwrap_or("");
            if new.contains("configuration reloaded") || new.contains("reload rejected") {
                return Ok(new.to_owned());
            }
            if start.elapsed() > Duration::from_secs(20) {
                anyhow::bail!("no reload outcome logged within 20 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `slb <args> -c <config>` in `ns` with an existing config file.
    pub fn start_with(ns: &Netns, dir: PathBuf, config: PathBuf, args: &[&str]) -> Result<Agent> {
        let log = dir.join("agent.log");
        let logf = std::fs::File::create(&log)?;
        let bin = slb_bin();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(&bin)
            .args(args)
            .arg("-c")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut agent = Agent {
            child: Some(child),
            log,
            config,
            dir,
        };
        agent.wait_for_log(READY, Duration::from_secs(30))?;
        Ok(agent)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, failing early if the agent
    /// exits.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!(
                        "slb exited ({status}) before logging {needle:?}:\n{}",
                        self.log_text()
                    );
                }
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "slb did not log {needle:?} within {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    pub fn signal(&self, sig: Signal) -> Result<()> {
        // `ip netns exec` execs the program, so the child pid is slb's.
        let pid = self.pid().context("agent not running")?;
        kill(pid, sig).context("kill")?;
        Ok(())
    }

    /// SIGTERM, then waits for exit; returns the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        let mut child = self.child.take().context("agent not running")?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                anyhow::bail!(
                    "slb did not exit within 20 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
