//! Test beds for SLB: network namespaces joined by veth pairs, tiny
//! backends that answer with their name, and a runner for the `slb` agent.
//! Shared by the integration tests, `cargo xtask demo` and `cargo xtask
//! bench`, so all three exercise the same topology.
pub mod agent;
pub mod config;
pub mod netns;
pub mod servers;
pub mod topology;

pub use agent::Agent;
pub use netns::Netns;
pub use topology::Topology;

use std::path::PathBuf;

/// The `slb` binary under test: `$SLB_BIN`, else `target/debug/slb` of this
/// workspace.
pub fn slb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLB_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/slb")
}

/// The pass-everything XDP object that build.rs puts next to `slb`.
pub fn pass_object() -> PathBuf {
    slb_bin().with_file_name("slb-xdp-pass.o")
}

/// Runs a command, failing with its output when it does not succeed.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running {program}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
