//! Developer tasks for SLB, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Developers and CI (`.ci/run`) use the same commands, so all logic lives here.
//!
//! Adding a command: write `src/<name>.rs` exposing
//!
//! ```ignore
//! #[derive(clap::Args)]
//! pub struct Args { /* flags */ }
//! pub fn run(args: Args) -> anyhow::Result<()>;
//! ```
//!
//! declare it with `mod <name>;` below and add one line to the `commands!` list.
//! The doc comment on that line becomes the command's `--help` text.

mod apt_lock;
mod bench;
mod build;
mod cmd;
mod demo;
mod interrupt;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::Parser;

/// Declares the `Command` enum (one variant per module) and dispatches to `<module>::run`.
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident => $module:ident,)+) => {
        #[derive(clap::Subcommand)]
        enum Command {
            $($(#[$doc])* $variant($module::Args),)+
        }

        impl Command {
            fn run(self) -> anyhow::Result<()> {
                match self {
                    $(Command::$variant(args) => $module::run(args),)+
                }
            }
        }
    };
}

commands! {
    /// Install or verify everything the build and tests need (idempotent).
    Setup => setup,
    /// Build the `slb` agent (and its XDP object) and print the binary's path.
    Build => build,
    /// Build `slb`, then run it as root with the arguments after `--`.
    Run => run,
    /// Format check, lints, build and the full test suite (needs root unless --unit).
    Test => test,
    /// Run slb on a built-in topology with traffic and show where it went (root).
    Demo => demo,
    /// Measure the dataplane and the proxy side by side; record BENCHMARKS.md (root).
    Bench => bench,
}

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "SLB developer tasks",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::prepare_env();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
