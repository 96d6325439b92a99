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
    args: Vec<String>,
    ns: String,
    /// A bpffs this runner mounted at `<dir>/bpf` (unmounted on drop).
    mounted: bool,
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

    /// Like `start`, with `--keep-dataplane` and the pin path on a bpffs
    /// mounted here, outside the agent's own mount namespace (`ip netns
    /// exec` gives every run a private one), so a restarted agent finds
    /// the pinned state of the previous one.
    pub fn start_keeping(
        ns: &Netns,
        tag: &str,
        config: impl FnOnce(&Path) -> String,
    ) -> Result<Agent> {
        Self::start_pinned(ns, tag, &["run", "--keep-dataplane"], config)
    }

    /// `slb <args>` with the pin path on a bpffs mounted here (see
    /// `start_keeping`), where a test can look at the pins.
    pub fn start_pinned(
        ns: &Netns,
        tag: &str,
        args: &[&str],
        config: impl FnOnce(&Path) -> String,
    ) -> Result<Agent> {
        let dir = scratch_dir(tag)?;
        let pins = dir.join("bpf");
        std::fs::create_dir_all(&pins)?;
        crate::sh("mount", &["-t", "bpf", "bpf", &pins.to_string_lossy()])?;
        let cfg = dir.join("slb.toml");
        std::fs::write(&cfg, config(&dir))?;
        let mut a = Self::spawn(ns, dir, cfg, args)?;
        a.mounted = true;
        a.wait_for_log(READY, Duration::from_secs(30))?;
        Ok(a)
    }

    /// Starts the agent again with the same arguments and configuration
    /// (after `stop`, or after a start that failed), waiting for it to be
    /// ready.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            anyhow::ensure!(child.try_wait()?.is_some(), "agent still running");
        }
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let fresh = Self::spawn_child(&self.ns, &self.config, &self.log, &args, None, None)?;
        self.child = Some(fresh);
        self.wait_for_log_count(READY, 2, Duration::from_secs(30))
    }

    fn spawn_child(
        ns: &str,
        config: &Path,
        log: &Path,
        args: &[&str],
        uid: Option<u32>,
        soft_nofile: Option<u64>,
    ) -> Result<Child> {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let bin = slb_bin();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(n) = soft_nofile {
            // A low soft open-file limit (the hard one stays).
            cmd.arg("prlimit").arg(format!("--nofile={n}:"));
        }
        if let Some(uid) = uid {
            // Drop root entirely: the unprivileged `slb proxy` case.
            cmd.arg("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg("--inh-caps=-all");
        }
        cmd.arg(&bin)
            .args(args)
            .arg("-c")
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        cmd.spawn()
            .with_context(|| format!("starting {}", bin.display()))
    }

    fn spawn(ns: &Netns, dir: PathBuf, config: PathBuf, args: &[&str]) -> Result<Agent> {
        Self::spawn_as(ns, dir, config, args, None, None)
    }

    fn spawn_as(
        ns: &Netns,
        dir: PathBuf,
        config: PathBuf,
        args: &[&str],
        uid: Option<u32>,
        soft_nofile: Option<u64>,
    ) -> Result<Agent> {
        let log = dir.join("agent.log");
        let child = Self::spawn_child(&ns.name, &config, &log, args, uid, soft_nofile)?;
        Ok(Agent {
            child: Some(child),
            log,
            config,
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            ns: ns.name.clone(),
            mounted: false,
        })
    }

    /// Waits until the log contains `needle` at least `n` times.
    pub fn wait_for_log_count(&mut self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.log_text().matches(needle).count() >= n {
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
        Self::start_as(ns, dir, config, args, None, None)
    }

    /// `start_with`, running slb as user `uid` (no capabilities) when given,
    /// with a soft open-file limit of `soft_nofile` when given.
    pub fn start_as(
        ns: &Netns,
        dir: PathBuf,
        config: PathBuf,
        args: &[&str],
        uid: Option<u32>,
        soft_nofile: Option<u64>,
    ) -> Result<Agent> {
        let mut agent = Self::spawn_as(ns, dir, config, args, uid, soft_nofile)?;
        agent.wait_for_log(READY, Duration::from_secs(30))?;
        Ok(agent)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, failing early if the agent
    /// exits.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.wait_for_log_count(needle, 1, timeout)
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

    /// SIGKILL (a crash: nothing of the agent's shutdown runs), then waits
    /// for exit.
    pub fn crash(&mut self) -> Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.child.as_mut().context("agent not running")?.wait()?;
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

    /// The control socket the generated configurations use.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Runs `slb <args> --control-socket <this agent's>`; returns stdout,
    /// or the failure with stderr.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(slb_bin())
            .args(args)
            .arg("--control-socket")
            .arg(self.control_socket())
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "slb {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `slb status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.cli(&["status", "--json"])?)?)
    }

    /// The status entry of backend `addr` ("10.0.1.2:8080") of `listener`.
    pub fn backend_status(&self, listener: &str, addr: &str) -> Result<serde_json::Value> {
        let s = self.status()?;
        let l = s["listeners"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == listener))
            .with_context(|| format!("no listener {listener} in {s}"))?;
        l["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["address"] == addr))
            .cloned()
            .with_context(|| format!("no backend {addr} in {l}"))
    }

    /// Polls until backend `addr` of `listener` reports `state` ("up",
    /// "down", "drained"); returns how long it took.
    pub fn wait_backend_state(
        &self,
        listener: &str,
        addr: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let b = self.backend_status(listener, addr)?;
            if b["state"] == state {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "{addr} stayed {} for {timeout:?}: {b}\n{}",
                    b["state"],
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET /metrics from inside `ns` at `addr` (the agent's metrics_listen).
    pub fn metrics(ns: &Netns, addr: &str) -> Result<String> {
        use std::io::{Read, Write};
        let addr: std::net::SocketAddr = addr.parse()?;
        let mut s =
            ns.enter(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)))??;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: slb\r\nConnection: close\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        let (head, text) = body.split_once("\r\n\r\n").context("no HTTP body")?;
        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "metrics answered {head}");
        Ok(text.to_owned())
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
        if self.mounted {
            let _ = crate::sh("umount", &[&self.dir.join("bpf").to_string_lossy()]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
