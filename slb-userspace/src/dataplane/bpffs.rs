//! Making sure the pin directory lives on a bpffs.
use super::DataplaneError;
use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};
use std::path::Path;

/// True when `path` is on a bpf filesystem.
fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Creates `dir` on a bpffs: when its parent is not on one, a bpffs is
/// mounted at `dir` itself (SPEC §6: `ip netns exec` hides /sys/fs/bpf, a
/// path such as /run/slb/bpf survives it).
pub fn ensure(dir: &Path) -> Result<(), DataplaneError> {
    let io = |what: &str, e: std::io::Error| DataplaneError::PinPath {
        path: dir.to_owned(),
        reason: format!("{what}: {e}"),
    };
    if dir.exists() && is_bpffs(dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if parent.exists() && is_bpffs(parent) {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
            return Ok(());
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
    mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| io("mount bpffs", std::io::Error::from(e)))?;
    Ok(())
}
