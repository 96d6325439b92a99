//! How much of the machine other work used while a measurement ran.
//!
//! The benchmarks share the machine with whatever else runs (builds, other
//! test suites); on two cores a compiler in the background halves a
//! connections/s figure. A measurement takes a snapshot of the CPU time of
//! every process outside the benchmark's own network namespaces before and
//! after, and the parts repeat a measurement that others disturbed.
//!
//! Counted as other work: processes outside the given namespaces, except
//! this one and `ksoftirqd` (softirq work for the benchmark's own packets
//! may run there), with their reaped children's time (`cutime`/`cstime`,
//! so a `cargo build` counts its finished `rustc` runs), plus the
//! hypervisor's steal time. Kernel workers count: namespace teardown of
//! another test suite, for one, runs there.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use slb_tests::Netns;

/// Linux's USER_HZ: the unit of the times in /proc/<pid>/stat and /proc/stat.
const TICKS_PER_SECOND: f64 = 100.0;
/// PF_KTHREAD in the flags of /proc/<pid>/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

/// A measurement in progress.
pub struct Watch {
    ours: HashSet<u64>,
    before: HashMap<u32, u64>,
    steal: u64,
    start: Instant,
}

impl Watch {
    /// Starts watching; processes in `namespaces` are the benchmark's own.
    pub fn start(namespaces: &[&Netns]) -> Watch {
        let ours = namespaces
            .iter()
            .filter_map(|ns| std::fs::metadata(format!("/var/run/netns/{}", ns.name)).ok())
            .map(|m| m.ino())
            .collect();
        let before = others(&ours);
        Watch {
            ours,
            before,
            steal: steal(),
            start: Instant::now(),
        }
    }

    /// The share of the machine (0.0..=1.0 of all CPUs) that other work
    /// used since `start`.
    pub fn share(&self) -> f64 {
        let wall = self.start.elapsed().as_secs_f64();
        let after = others(&self.ours);
        let mut ticks = steal().saturating_sub(self.steal);
        for (pid, t) in &after {
            ticks += t.saturating_sub(self.before.get(pid).copied().unwrap_or(0));
        }
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        if wall <= 0.0 {
            return 0.0;
        }
        (ticks as f64 / TICKS_PER_SECOND / (wall * cpus)).min(1.0)
    }
}

/// Waiting for other work to calm down before a measurement, within a
/// budget for the whole part, so a busy machine delays a run by at most
/// that much.
pub struct Patience {
    left: Duration,
}

impl Patience {
    pub fn new(budget: Duration) -> Patience {
        Patience { left: budget }
    }

    /// Whether any waiting time is left.
    pub fn left(&self) -> bool {
        !self.left.is_zero()
    }

    /// Waits until other work used at most `limit` of the machine over half
    /// a second, or the budget is spent. Returns that share of the last
    /// half second.
    pub fn wait_quiet(&mut self, namespaces: &[&Netns], limit: f64) -> f64 {
        let mut said = false;
        loop {
            let start = Instant::now();
            let watch = Watch::start(namespaces);
            std::thread::sleep(Duration::from_millis(500));
            let share = watch.share();
            self.left = self.left.saturating_sub(start.elapsed());
            if share <= limit || self.left.is_zero() {
                return share;
            }
            if !said {
                println!(
                    "     other work uses {:.0}% of the machine: waiting (at most {} s more in this part)",
                    share * 100.0,
                    self.left.as_secs()
                );
                said = true;
            }
        }
    }
}

/// utime + stime + cutime + cstime of every user process outside `ours`.
fn others(ours: &HashSet<u64>) -> HashMap<u32, u64> {
    let me = std::process::id();
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if ours.contains(&ns.ino()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(t) = cpu_ticks(&stat) {
            out.insert(pid, t);
        }
    }
    out
}

/// From a /proc/<pid>/stat line: None for `ksoftirqd`, else the
/// process's and its reaped children's CPU ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command may contain spaces and parentheses: fields start after
    // the last ')'. Field 3 (state) is rest[0].
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let rest: Vec<&str> = tail.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if field(9)? & PF_KTHREAD != 0 && comm.starts_with("ksoftirqd") {
        return None;
    }
    Some(field(14)? + field(15)? + field(16)? + field(17)?)
}

/// The machine's steal time (the hypervisor ran someone else), in ticks.
fn steal() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()?
                .split_whitespace()
                .nth(8)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line() {
        let user = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 5 0 0";
        assert_eq!(cpu_ticks(user), Some(13));
        let softirq = "14 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 0 90 0 0 20 0 1 0 9 0 0";
        assert_eq!(cpu_ticks(softirq), None);
        let worker =
            "90 (kworker/u8:2-netns) I 2 0 0 0 -1 69238880 0 0 0 0 0 40 0 0 20 0 1 0 9 0 0";
        assert_eq!(cpu_ticks(worker), Some(40));
    }
}
