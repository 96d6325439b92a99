//! Builds the XDP object from `slb-ebpf` with the nightly toolchain
//! (`-Z build-std=core`, target bpfel-unknown-none) and places it in
//! `OUT_DIR/slb`, where `dataplane::object` embeds it.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or_else(|| anyhow::anyhow!("slb-userspace has no parent directory"))?;
    let ebpf_dir = workspace.join("slb-ebpf");
    let common_dir = workspace.join("slb-common");
    println!("cargo::rerun-if-changed={}", common_dir.display());

    // AYA_BUILD_SKIP=1 lets host-only work (unit tests, clippy of pure
    // modules) run without the eBPF toolchain; the embedded object is then
    // empty and loading it fails with a clear error.
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if skip {
        let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
        for name in ["slb", "slb-pass", "slb-tx"] {
            if !out_dir.join(name).exists() {
                std::fs::write(out_dir.join(name), [])?;
            }
        }
    }
    // slb-ebpf is its own workspace (it builds only for the bpf target);
    // aya-build runs `cargo build --package slb-ebpf` in the current
    // directory, so run it from there.
    std::env::set_current_dir(&ebpf_dir)?;
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "slb-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )?;
    if !skip {
        copy_helper_objects()?;
    }
    Ok(())
}

/// Puts the pass-everything and the MAC-swap-`XDP_TX` objects next to the
/// `slb` binary (`target/<profile>/slb-xdp-pass.o`, `slb-xdp-tx.o`): the
/// namespace test harness, demo and benchmark attach them with `ip link set
/// ... xdp obj`, without linking against this crate.
fn copy_helper_objects() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return Ok(());
    };
    std::fs::copy(out_dir.join("slb-pass"), profile_dir.join("slb-xdp-pass.o"))?;
    std::fs::copy(out_dir.join("slb-tx"), profile_dir.join("slb-xdp-tx.o"))?;
    Ok(())
}
