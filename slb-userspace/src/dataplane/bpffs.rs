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

/// What [`ensure`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinFs {
    /// `dir` was on a bpffs already (or its parent was).
    Found,
    /// A bpffs was mounted at `dir`, visible to the whole system.
    Mounted,
    /// A bpffs was mounted at `dir` in a mount namespace of this process's
    /// own (`ip netns exec` gives every command one): it goes away with
    /// the process, and the pins with it.
    MountedPrivately,
}

/// Whether this process has a mount namespace of its own: another than
/// its parent's (`ip netns exec` makes one for the command it runs, as
/// does a systemd unit with mount sandboxing), or failing that than
/// init's. `false` when neither can be read: a warning is then missed,
/// never given wrongly.
fn private_mount_namespace() -> bool {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let Some(own) = ns("self") else {
        return false;
    };
    let parent = nix::unistd::getppid().to_string();
    match ns(&parent).or_else(|| ns("1")) {
        Some(other) => own != other,
        None => false,
    }
}

/// Creates `dir` on a bpffs: when its parent is not on one, a bpffs is
/// mounted at `dir` itself (SPEC §6: `ip netns exec` hides /sys/fs/bpf, a
/// path such as /run/slb/bpf survives it once mounted there outside).
pub fn ensure(dir: &Path) -> Result<PinFs, DataplaneError> {
    let io = |what: &str, e: std::io::Error| DataplaneError::PinPath {
        path: dir.to_owned(),
        reason: format!("{what}: {e}"),
    };
    if dir.exists() && is_bpffs(dir) {
        return Ok(PinFs::Found);
    }
    if let Some(parent) = dir.parent() {
        if parent.exists() && is_bpffs(parent) {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
            return Ok(PinFs::Found);
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
    Ok(if private_mount_namespace() {
        PinFs::MountedPrivately
    } else {
        PinFs::Mounted
    })
}
