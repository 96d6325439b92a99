//! Command-line interface (SPEC §1). Thin: each command calls a module.
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "slb",
    version,
    about = "SLB: XDP L4 load balancer with an L7 proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the agent in the foreground: load and attach the XDP dataplane,
    /// keep it in step with the configuration (SIGHUP reloads).
    Run {
        #[arg(short, long, default_value = "/etc/slb/slb.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and print every error with its key path.
    Validate {
        #[arg(short, long, default_value = "/etc/slb/slb.toml")]
        config: PathBuf,
        /// Print the effective configuration (defaults applied) as JSON.
        #[arg(long)]
        print: bool,
    },
}
