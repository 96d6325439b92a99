//! `cargo xtask test`: the full check CI runs (`.ci/run`), as numbered steps that stop
//! at the first failure. `--unit` runs only the unit tests, without root.

use std::{
    ffi::OsString,
    path::PathBuf,
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
        clean_leftovers();
        Ok(())
    })?;
    let tests = steps.run("tests", || cargo_test(args, &[]).env("SLB_BIN", &slb).run());
    // Also after failures: a failed test may leave namespaces and agents behind.
    clean_leftovers();
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

/// Best effort: stops the agents and removes the namespaces and scratch
/// directories (with their bpffs pins) of test runs that are gone, e.g.
/// killed mid-way; reports what it removed. A test bed that is still
/// running (a demo, another test run) keeps its own.
fn clean_leftovers() {
    for line in slb_tests::netns::remove_leftovers() {
        eprintln!("cleanup: {line}");
    }
}
