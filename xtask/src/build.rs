//! `cargo xtask build`: setup, then build the `slb` agent. slb-userspace's build.rs
//! compiles the XDP object (slb-ebpf) with nightly + bpf-linker via aya-build.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::{
    cmd::{self, Cmd},
    setup::{self, System},
};

#[derive(clap::Args)]
pub struct Args {
    /// Build with the release profile.
    #[arg(long)]
    release: bool,
}

pub fn run(args: Args) -> Result<()> {
    setup::ensure(System::BestEffort, false)?;
    let bin = slb(args.release)?;
    // The only stdout output, so `SLB=$(cargo xtask build)` works.
    println!("{}", bin.display());
    Ok(())
}

/// Builds slb-userspace (without running setup) and returns the absolute path of `slb`.
pub fn slb(release: bool) -> Result<PathBuf> {
    let mut build = Cmd::new("cargo")
        .args(["build", "-p", "slb-userspace"])
        .dir(cmd::workspace_root());
    if release {
        build = build.arg("--release");
    }
    build.run()?;
    let bin = cmd::target_dir()?
        .join(if release { "release" } else { "debug" })
        .join("slb");
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}
