//! `cargo xtask run [--release] -- <slb args>`: build, then exec `slb` as root
//! (through sudo when not root).

use std::ffi::OsString;

use anyhow::{bail, Result};

use crate::{
    build,
    cmd::{self, Cmd},
    setup::{self, System},
};

#[derive(clap::Args)]
pub struct Args {
    /// Build and run the release profile.
    #[arg(long)]
    release: bool,
    /// Arguments for `slb` (put them after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "SLB_ARGS"
    )]
    args: Vec<OsString>,
}

pub fn run(args: Args) -> Result<()> {
    setup::ensure(System::BestEffort, false)?;
    let bin = build::slb(args.release)?;
    eprintln!("==> {} (as root)", bin.display());
    let err = if cmd::is_root() {
        Cmd::new(&bin).args(&args.args).exec()
    } else if cmd::find_in_path("sudo").is_some() {
        // sudo resets the environment; RUST_LOG etc. must be passed as slb options
        // or via `sudo env RUST_LOG=… <path>`.
        Cmd::new("sudo").arg("--").arg(&bin).args(&args.args).exec()
    } else {
        bail!(
            "slb needs root and sudo is not installed; run as root: {}",
            bin.display()
        );
    };
    Err(err)
}
