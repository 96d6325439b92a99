//! Processes of the L7 benchmark: servers started inside the benchmark's
//! namespace, pinned to a CPU, stopped (with everything they forked) when
//! their guard drops, whatever happened; plus the scratch directory and the
//! per-CPU busy time from /proc/stat.
use std::{
    collections::HashMap,
    ffi::OsStr,
    fs,
    net::SocketAddr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use slb_tests::Netns;

/// A directory for configurations, pid files and logs; removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Result<Scratch> {
        let dir = slb_tests::agent::scratch_dir(tag)?;
        Ok(Scratch { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.path(name);
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The benchmark's network namespace. Children enter it through an open
/// descriptor of it (`nsenter --net=/proc/<xtask>/fd/<n>`), not its name:
/// a concurrent test run that removes leftover `slbt-` namespaces by name
/// cannot pull it from under a running benchmark.
pub struct Net {
    file: fs::File,
    /// `setpriv` is there: children get SIGTERM should xtask die without
    /// running its destructors (SIGKILL).
    setpriv: bool,
    /// Held for its drop, which deletes the namespace.
    _ns: Netns,
}

impl Net {
    pub fn new(tag: &str) -> Result<Net> {
        let ns = Netns::new(tag)?;
        let path = format!("/var/run/netns/{}", ns.name);
        let file = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(Net {
            file,
            setpriv: crate::cmd::find_in_path("setpriv").is_some(),
            _ns: ns,
        })
    }

    /// `program` inside the namespace, pinned to `cpu`.
    pub fn command(&self, cpu: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--net=/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
        .args(["taskset", "-c", &cpu.to_string()]);
        if self.setpriv {
            cmd.args(["setpriv", "--pdeathsig", "TERM"]);
        }
        cmd.arg(program);
        cmd
    }
}

/// A server running in the namespace (`nsenter`, `taskset` and `setpriv`
/// exec: the child is the server itself), pinned to a CPU. Dropping it sends
/// SIGTERM, waits a little, then SIGKILLs it and every process it forked
/// (nginx workers).
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

/// How a server is started.
pub struct Spec<'a> {
    pub name: &'a str,
    pub cpu: usize,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(&'a str, &'a str)>,
}

impl Proc {
    pub fn start(net: &Net, scratch: &Scratch, spec: Spec<'_>) -> Result<Proc> {
        let log = scratch.path(&format!("{}.out", spec.name));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = net.command(spec.cpu, spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        Ok(Proc {
            name: spec.name.to_owned(),
            child,
            log,
        })
    }

    /// Fails, quoting the server's output, when it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}):\n{}",
                self.name,
                fs::read_to_string(&self.log).unwrap_or_default().trim_end()
            );
        }
        Ok(())
    }

    /// Waits until a GET / through `addr` answers 200 with `body`,
    /// failing with the server's output after `timeout`.
    pub fn wait_serving(
        &mut self,
        net: &Net,
        cpu: usize,
        addr: SocketAddr,
        body: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let last = match get(net, cpu, addr) {
                Ok((200, b)) if b == body => return Ok(()),
                Ok((status, b)) => format!("answered {status} {b:?}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "{} does not serve on {addr} after {timeout:?} ({last}); its output:\n{}",
                    self.name,
                    fs::read_to_string(&self.log).unwrap_or_default().trim_end()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// CPU time (user, system) of the server and its children (nginx's
    /// worker), in seconds.
    pub fn cpu_time(&self) -> (f64, f64) {
        let pid = self.child.id();
        let mut user = 0;
        let mut sys = 0;
        for p in std::iter::once(pid).chain(descendants(pid)) {
            if let Some(f) = pid_stat(p) {
                // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
                user += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                sys += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        (user as f64 / USER_HZ, sys as f64 / USER_HZ)
    }
}

/// USER_HZ, the unit of /proc's CPU times: 100 in Linux's ABI.
pub const USER_HZ: f64 = 100.0;

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        let family = descendants(pid);
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in family {
            if is_alive(p) {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `pid`'s children, grandchildren, … (from the ppid field of /proc/*/stat).
fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(pp) = pid_stat(p).and_then(|f| f.get(1).and_then(|s| s.parse().ok())) {
                children.entry(pp).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// The fields of a /proc/PID/stat line after the command name: state,
/// ppid, ….
pub fn stat_fields(line: &str) -> Option<Vec<String>> {
    let rest = &line[line.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn pid_stat(pid: u32) -> Option<Vec<String>> {
    stat_fields(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn is_alive(pid: u32) -> bool {
    pid_stat(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// GET / with curl from inside the namespace: (status, body).
pub fn get(net: &Net, cpu: usize, addr: SocketAddr) -> Result<(u16, String)> {
    let out = net
        .command(cpu, "curl")
        .args([
            "-s",
            "-m",
            "2",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}/"),
        ])
        .stdin(Stdio::null())
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "curl failed ({}) {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = code
        .trim()
        .parse()
        .with_context(|| format!("curl printed {text:?}"))?;
    Ok((status, body.to_owned()))
}

/// Busy and total time of each CPU (USER_HZ ticks) from /proc/stat.
#[derive(Clone)]
pub struct CpuTimes(Vec<(u64, u64)>);

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let text = fs::read_to_string("/proc/stat").unwrap_or_default();
        let mut cpus = Vec::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let Some(name) = it.next() else { continue };
            if !name.starts_with("cpu") || name == "cpu" {
                continue;
            }
            // user nice system idle iowait irq softirq steal (guest is in user).
            let v: Vec<u64> = it.take(8).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            cpus.push((total - idle, total));
        }
        CpuTimes(cpus)
    }

    /// Busy and elapsed seconds of `cpu` since `earlier`.
    pub fn seconds_since(&self, earlier: &CpuTimes, cpu: usize) -> (f64, f64) {
        match (self.0.get(cpu), earlier.0.get(cpu)) {
            (Some(&(b1, t1)), Some(&(b0, t0))) => {
                ((b1 - b0) as f64 / USER_HZ, (t1 - t0) as f64 / USER_HZ)
            }
            _ => (f64::NAN, f64::NAN),
        }
    }

    /// Busy fraction of `cpu` since `earlier`.
    pub fn busy_since(&self, earlier: &CpuTimes, cpu: usize) -> f64 {
        match (self.0.get(cpu), earlier.0.get(cpu)) {
            (Some(&(b1, t1)), Some(&(b0, t0))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => f64::NAN,
        }
    }
}

/// First line of a program's version output (stdout or stderr, whatever
/// the exit status: `wrk -v` exits 1).
pub fn version(program: &str, arg: &str) -> String {
    match Command::new(program).arg(arg).stdin(Stdio::null()).output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("unknown")
                .to_owned()
        }
        Err(_) => format!("{program}: not found"),
    }
}
