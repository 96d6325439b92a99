//! Network namespaces that delete themselves.
use crate::sh;
use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use std::{
    fs::File,
    sync::atomic::{AtomicU32, Ordering},
};

/// Every namespace a test bed creates starts with this, so leftovers of a
/// crashed run are easy to find and remove (`cargo xtask test` does).
pub const PREFIX: &str = "slbt-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns`), deleted on drop together with
/// its devices and their XDP programs.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `slbt-<tag>-<pid>-<n>` with loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        sh("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// RX packet count of a device in the namespace.
    pub fn rx_packets(&self, dev: &str) -> Result<u64> {
        let path = format!("/sys/class/net/{dev}/statistics/rx_packets");
        Ok(self.exec("cat", &[&path])?.trim().parse()?)
    }

    /// `sysctl -w key=value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Runs `f` on a thread that has joined this namespace. Sockets created
    /// there stay in the namespace and can be used from any thread.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "delete", &self.name]);
    }
}

/// The pid in a name made by `Netns::new` (`slbt-<tag>-<pid>-<n>`).
fn owner_pid(name: &str) -> Option<u32> {
    let mut parts = name.rsplit('-');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// Deletes namespaces left behind by crashed runs of any test bed: those
/// whose creating process is gone (a running test, demo or benchmark keeps
/// its own).
pub fn remove_leftovers() {
    let Ok(list) = sh("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(PREFIX) {
            continue;
        }
        let alive = owner_pid(name)
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = sh("ip", &["netns", "delete", name]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_owner_pid_in_a_name() {
        assert_eq!(super::owner_pid("slbt-w4-b1-1234-7"), Some(1234));
        assert_eq!(super::owner_pid("slbt-x"), None);
    }
}
