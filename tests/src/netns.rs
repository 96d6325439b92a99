//! Network namespaces that delete themselves.
use crate::sh;
use anyhow::{Context, Result};
use nix::{
    sched::{setns, CloneFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    fs::File,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
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

/// The pid in a name made by `Netns::new` or `agent::scratch_dir`
/// (`slbt-<tag>-<pid>-<n>`).
fn owner_pid(name: &str) -> Option<u32> {
    if !name.starts_with(PREFIX) {
        return None;
    }
    let mut parts = name.rsplit('-');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// Whether process `pid` exists and has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    // /proc/<pid>/stat is "<pid> (<comm>) <state> ..."; comm may contain ')'.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Whether `name` (a namespace or scratch directory name) belongs to a
/// test bed whose process is gone.
fn orphaned(name: &str, alive: impl Fn(u32) -> bool) -> bool {
    owner_pid(name).is_some_and(|pid| !alive(pid))
}

/// The owner pid of the first scratch directory named in an agent's
/// command line (`slb run -c /tmp/slbt-<tag>-<pid>-<n>/slb.toml`).
fn agent_owner<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<u32> {
    args.into_iter().find_map(|arg| {
        std::path::Path::new(arg)
            .components()
            .find_map(|c| owner_pid(c.as_os_str().to_str()?))
    })
}

/// `slb` processes started by a test bed whose process is gone: killing
/// that process (SIGKILL, a crashed test) does not stop its agents, which
/// keep their XDP programs attached in namespaces no longer named.
fn orphaned_agents(owner_alive: impl Fn(u32) -> bool) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            // A rebuilt binary shows as "<path> (deleted)".
            let exe = exe.file_name()?.to_str()?;
            if exe.strip_suffix(" (deleted)").unwrap_or(exe) != "slb" {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            let owner = agent_owner(cmdline.split('\0'))?;
            (!owner_alive(owner) && alive(pid)).then_some(pid)
        })
        .collect()
}

/// Removes what crashed or killed runs of any test bed (tests, demo,
/// benchmark) left behind: their `slb` agents (stopped as the operator
/// would, so they detach XDP), their namespaces (with their devices and
/// XDP programs) and their scratch directories (unmounting a bpffs with
/// pins in them). Only things whose creating process is gone: a running
/// test, demo or benchmark keeps its own. Call it before this process
/// creates any test bed: a name with this process's pid is a leftover of
/// an earlier process that had the same pid, and would make
/// `Netns::new` fail. Returns what it removed, and what it could not, for
/// the caller to show.
pub fn remove_leftovers() -> Vec<String> {
    let me = std::process::id();
    let owner_alive = |pid: u32| pid != me && alive(pid);
    let mut done = Vec::new();
    let agents = orphaned_agents(owner_alive);
    for &pid in &agents {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    for pid in agents {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        done.push(format!("stopped orphaned slb agent (pid {pid})"));
    }

    if let Ok(list) = sh("ip", &["netns", "list"]) {
        // Lines are "<name>" or "<name> (id: <n>)".
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if !orphaned(name, owner_alive) {
                continue;
            }
            match sh("ip", &["netns", "delete", name]) {
                Ok(_) => done.push(format!("deleted netns {name}")),
                Err(e) => done.push(format!("could not delete netns {name}: {e:#}")),
            }
        }
    }

    let tmp = std::env::temp_dir();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !orphaned(name, owner_alive) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        // Mount points (fields: source, mount point, ...) inside the
        // directory, deepest first: a bpffs `Agent::start_pinned` mounted.
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| std::path::Path::new(m).starts_with(&dir))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let mut ok = true;
        for m in inside {
            match sh("umount", &[m]) {
                Ok(_) => done.push(format!("unmounted {m}")),
                Err(e) => {
                    ok = false;
                    done.push(format!("could not unmount {m}: {e:#}"));
                }
            }
        }
        if !ok {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => done.push(format!("removed {}", dir.display())),
            Err(e) => done.push(format!("could not remove {}: {e}", dir.display())),
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_owner_pid_in_a_name() {
        assert_eq!(owner_pid("slbt-w4-b1-1234-7"), Some(1234));
        assert_eq!(owner_pid("slbt-demo-12511-960991901"), Some(12511));
        assert_eq!(owner_pid("slbt-x"), None);
        // Not ours: another tool's namespace that happens to end in numbers.
        assert_eq!(owner_pid("slbw-b1-12-3"), None);
    }

    #[test]
    fn only_leftovers_of_gone_processes_are_orphaned() {
        let alive = |pid| pid == 100;
        assert!(orphaned("slbt-demo-lb-200-1", alive));
        assert!(!orphaned("slbt-demo-lb-100-1", alive));
        assert!(!orphaned("slbw-lb", alive));
        assert!(!orphaned("slbt-x", alive));
    }

    #[test]
    fn finds_the_test_bed_of_an_agent() {
        let cmdline = "/w/target/debug/slb\0run\0-c\0/tmp/slbt-demo-12511-960991901/slb.toml\0";
        assert_eq!(agent_owner(cmdline.split('\0')), Some(12511));
        // An agent an operator started (`cargo xtask run -- run -c slb.toml`).
        assert_eq!(agent_owner(["slb", "run", "-c", "slb.toml"]), None);
        assert_eq!(agent_owner(["slb", "run", "-c", "/etc/slb/slb.toml"]), None);
    }

    #[test]
    fn a_live_process_is_alive_and_a_gone_one_is_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
