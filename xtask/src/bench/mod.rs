//! `cargo xtask bench`: performance, measured side by side in one run and
//! reported as ratios (never asserted by tests). Each part returns a
//! markdown section; the run prints them and records them, with the date
//! and machine, in `BENCHMARKS.md`.
//!
//! Parts: `xdp` (per-packet cost of the attached program from the kernel's
//! own accounting, against trivial XDP_TX / XDP_PASS programs on the same
//! traffic), `e2e` (connections/s and bulk throughput through the VIP vs
//! directly vs an nftables DNAT VIP), `l7` (the proxy vs nginx and HAProxy
//! with wrk).
mod e2e;
mod l7;
mod report;
mod xdp;

use anyhow::{bail, Result};

use crate::{
    build,
    cmd::is_root,
    setup::{self, System},
};

/// One part's results.
pub struct Section {
    /// Heading in BENCHMARKS.md, e.g. "XDP per-packet cost".
    pub title: String,
    /// Markdown body: tables, the ratio lines, how it was measured.
    pub markdown: String,
}

/// What every part gets.
pub struct Ctx {
    /// The release `slb` binary; the XDP objects `slb-xdp-pass.o` and
    /// `slb-xdp-tx.o` are next to it.
    pub slb: std::path::PathBuf,
    /// Repetitions per measurement (median and range are reported).
    pub repeat: usize,
    /// Shorter runs for a quick look (seconds per measurement).
    pub seconds: u64,
    /// `xdp`: record a `perf` CPU profile of every case into this directory.
    pub perf: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Xdp,
    E2e,
    L7,
}

#[derive(clap::Args)]
pub struct Args {
    /// Parts to run (default: all).
    #[arg(value_enum)]
    parts: Vec<Part>,
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Print only; do not update BENCHMARKS.md.
    #[arg(long)]
    no_record: bool,
    /// `xdp`: record a CPU profile of every case (`perf record -e cpu-clock
    /// -g` on the CPU that runs the program) into DIR, one file per program,
    /// case and repetition. Profiling slows the traffic: use it to find
    /// where the time goes, not for the numbers (implies --no-record).
    #[arg(long, value_name = "DIR")]
    perf: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if !is_root() {
        bail!("the benchmark creates network namespaces and attaches XDP: run it as root");
    }
    setup::ensure(System::Require, false)?;
    let slb = build::slb(true)?;
    std::env::set_var("SLB_BIN", &slb);
    slb_tests::netns::remove_leftovers();
    let ctx = Ctx {
        slb,
        repeat: args.repeat.max(1),
        seconds: args.seconds.max(1),
        perf: args.perf.clone(),
    };
    let parts = if args.parts.is_empty() {
        vec![Part::Xdp, Part::E2e, Part::L7]
    } else {
        args.parts
    };
    let mut sections = Vec::new();
    for part in parts {
        let section = match part {
            Part::Xdp => xdp::run(&ctx)?,
            Part::E2e => e2e::run(&ctx)?,
            Part::L7 => l7::run(&ctx)?,
        };
        println!("\n## {}\n\n{}", section.title, section.markdown);
        sections.push(section);
    }
    if !args.no_record && args.perf.is_none() {
        report::record(&sections)?;
    }
    Ok(())
}
