//! `cargo xtask test`: the full check CI runs (`.ci/run`), as numbered steps that stop
//! at the first failure. `--unit` runs only the unit tests, without root.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{
    build,
    cmd::{self, Cmd},
    setup::{self, System},
};

#[derive(clap::Args)]
pub struct Args {
    /// Build and test with the release profile.
    #[arg(long)]
    release: bool,
    /// Only `cargo test --workspace --lib --bins` (no lints, no root-only tests).
    #[arg(long)]
    unit: bool,
    /// Extra arguments for `cargo test` (after `--`), e.g. `-- -p slb-tests --test lb -- --nocapture`.
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    extra: Vec<OsString>,
}

/// Prefix of the network namespaces the integration tests create.
const NETNS_PREFIX: &str = "slbt-";

pub fn run(args: Args) -> Result<()> {
    if !args.unit && !cmd::is_root() {
        bail!(
            "`cargo xtask test` needs root (network namespaces, XDP); \
             run it as root, or use `cargo xtask test --unit` for the unit tests only"
        );
    }
    let mut steps = Steps::default();
    let result = if args.unit {
        unit(&mut steps, &args)
    } else {
        full(&mut steps, &args)
    };
    steps.report(&result);
    result
}

fn unit(steps: &mut Steps, args: &Args) -> Result<()> {
    steps.run("setup", || setup::ensure(System::BestEffort, false))?;
    steps.run("unit tests", || {
        cargo_test(args, &["--lib", "--bins"]).run()
    })
}

fn full(steps: &mut Steps, args: &Args) -> Result<()> {
    let root = cmd::workspace_root();
    let ebpf = root.join("slb-ebpf");
    let mut target = PathBuf::new();
    steps.run("setup", || {
        setup::ensure(System::Require, false)?;
        target = cmd::target_dir()?;
        Ok(())
    })?;
    steps.run("fmt", || {
        Cmd::new("cargo")
            .args(["fmt", "--all", "--", "--check"])
            .dir(root)
            .run()?;
        // slb-ebpf is excluded from the workspace, so `--all` does not cover it.
        Cmd::new("cargo")
            .args(["fmt", "--all", "--", "--check"])
            .dir(&ebpf)
            .run()
    })?;
    steps.run("clippy", || {
        Cmd::new("cargo")
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .dir(root)
            .run()
    })?;
    steps.run("clippy slb-ebpf", || {
        // Checks the XDP crate for its real target; no linking, so no bpf-linker.
        // Separate target dir: its artifacts differ from aya-build's (release) ones.
        Cmd::new("cargo")
            .args(["+nightly", "clippy", "--manifest-path"])
            .arg(ebpf.join("Cargo.toml"))
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(target.join("slb-ebpf-clippy"))
            .args(["--", "-D", "warnings"])
            .dir(&ebpf)
            .run()
    })?;
    let mut slb = PathBuf::new();
    steps.run("build slb", || {
        slb = build::slb(args.release)?;
        Ok(())
    })?;
    steps.run("clean leftovers", || {
        clean_leftovers(&target);
        Ok(())
    })?;
    let tests = steps.run("tests", || cargo_test(args, &[]).env("SLB_BIN", &slb).run());
    // Also after failures: a failed test may leave namespaces and agents behind.
    clean_leftovers(&target);
    tests
}

/// `cargo test --workspace <scope> [--release] <extra>` in the workspace root;
/// without `--workspace` when the extra cargo args select packages (`-p`).
fn cargo_test(args: &Args, scope: &[&str]) -> Cmd {
    let selects_packages = args.extra.iter().take_while(|arg| *arg != "--").any(|arg| {
        arg == "-p" || arg == "--package" || arg.to_string_lossy().starts_with("--package=")
    });
    let mut test = Cmd::new("cargo").arg("test");
    if !selects_packages {
        test = test.arg("--workspace");
    }
    let mut test = test
        .args(scope)
        .dir(cmd::workspace_root())
        .env("RUST_BACKTRACE", "1");
    if args.release {
        test = test.arg("--release");
    }
    test.args(&args.extra)
}

/// Runs named steps, printing `==> name` before each and a summary at the end.
#[derive(Default)]
struct Steps {
    passed: Vec<(&'static str, Duration)>,
    failed: Option<&'static str>,
    started: Option<Instant>,
}

impl Steps {
    fn run(&mut self, name: &'static str, step: impl FnOnce() -> Result<()>) -> Result<()> {
        self.started.get_or_insert_with(Instant::now);
        eprintln!("==> {name}");
        let start = Instant::now();
        match step() {
            Ok(()) => {
                self.passed.push((name, start.elapsed()));
                Ok(())
            }
            Err(err) => {
                self.failed = Some(name);
                Err(err.context(format!("step `{name}` failed")))
            }
        }
    }

    fn report(&self, result: &Result<()>) {
        let total = self.started.map(|t| t.elapsed()).unwrap_or_default();
        let times: Vec<String> = self
            .passed
            .iter()
            .map(|(name, took)| format!("{name} {:.1}s", took.as_secs_f64()))
            .collect();
        match (result, self.failed) {
            (Ok(()), _) => eprintln!(
                "==> test: ok, {} steps passed in {:.0}s ({})",
                self.passed.len(),
                total.as_secs_f64(),
                times.join(", ")
            ),
            (Err(_), Some(step)) => eprintln!(
                "==> test: FAILED at step `{step}` after {:.0}s (passed: {})",
                total.as_secs_f64(),
                if times.is_empty() {
                    "none".to_owned()
                } else {
                    times.join(", ")
                }
            ),
            (Err(_), None) => eprintln!("==> test: FAILED"),
        }
    }
}

/// Best effort: kill `slb` agents started from `target` and delete `slbt-*` namespaces
/// left by crashed test runs. Never fails; reports what it removed.
fn clean_leftovers(target: &Path) {
    let mut killed = Vec::new();
    for pid in stray_agents(target) {
        if kill("TERM", &pid) {
            killed.push(pid);
        }
    }
    for pid in &killed {
        let deadline = Instant::now() + Duration::from_secs(3);
        while running(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        if running(pid) {
            kill("KILL", pid);
        }
        eprintln!("cleanup: killed stray slb (pid {pid})");
    }

    let Ok(list) = Cmd::new("ip").args(["netns", "list"]).read() else {
        return;
    };
    // Lines are "<name>" or "<name> (id: <n>)".
    for name in list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        if !name.starts_with(NETNS_PREFIX) {
            continue;
        }
        if Cmd::new("ip").args(["netns", "delete", name]).probe() {
            eprintln!("cleanup: deleted netns {name}");
        } else {
            eprintln!("cleanup: could not delete netns {name}");
        }
    }
}

/// Whether `pid` exists and is not a zombie (an orphan may wait a while to be reaped).
fn running(pid: &str) -> bool {
    // /proc/<pid>/stat is "<pid> (<comm>) <state> ..."; comm may contain ')'.
    fs::read_to_string(Path::new("/proc").join(pid).join("stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Sends a signal with the shell's `kill` builtin (procps may not be installed).
fn kill(signal: &str, pid: &str) -> bool {
    Cmd::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", signal, pid])
        .probe()
}

/// PIDs of running processes whose executable is `<target>/**/slb`.
fn stray_agents(target: &Path) -> Vec<String> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid = entry.file_name().into_string().ok()?;
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let exe = fs::read_link(entry.path().join("exe")).ok()?;
            // A rebuilt binary shows as "<path> (deleted)".
            let exe = exe.to_string_lossy();
            let exe = Path::new(exe.strip_suffix(" (deleted)").unwrap_or(&exe));
            (exe.file_name()? == "slb" && exe.starts_with(target)).then_some(pid)
        })
        .collect()
}
