//! Waiting for another apt or dpkg to finish before `cargo xtask setup`
//! installs packages. On a freshly booted Debian machine
//! unattended-upgrades often holds apt's locks for minutes, and
//! `apt-get update` gives up at once when its lists lock is taken
//! (`DPkg::Lock::Timeout` covers only the dpkg locks), which would fail a
//! CI run for nothing.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use nix::{
    fcntl::{fcntl, FcntlArg},
    libc,
};

/// The locks apt and dpkg take (fcntl write locks on these files).
pub const APT_LOCKS: &[&str] = &[
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
];

/// How long to wait for another package manager: longer than an
/// unattended upgrade of a fresh image usually takes.
pub const WAIT: Duration = Duration::from_secs(600);

/// Also given to `apt-get install` (seconds): the locks can be taken again
/// between the wait and the install.
pub const DPKG_LOCK_TIMEOUT_S: u64 = 600;

/// The process holding a write lock on `path`, if one does (`Some(0)`
/// when the kernel does not say which). A missing or unreadable file is
/// not locked.
///
/// An open-file-description query (`F_OFD_GETLK`) sees apt's classic
/// fcntl locks (with their pid) and open-file-description locks (without).
pub fn holder(path: &Path) -> Option<i32> {
    let file = File::open(path).ok()?;
    // SAFETY: plain-old-data C struct; all-zero is a valid value.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = libc::F_WRLCK as libc::c_short;
    query.l_whence = libc::SEEK_SET as libc::c_short;
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut query)).ok()?;
    (query.l_type != libc::F_UNLCK as libc::c_short).then_some(query.l_pid.max(0))
}

/// The first of `locks` that is held, with its holder.
fn first_held<'a>(locks: &[&'a str]) -> Option<(&'a str, i32)> {
    locks
        .iter()
        .find_map(|l| holder(Path::new(l)).map(|pid| (*l, pid)))
}

/// Waits until none of `locks` is held, saying once who holds one; fails
/// after `wait`.
pub fn wait_until_free(locks: &[&str], wait: Duration) -> Result<()> {
    let start = Instant::now();
    let mut told = false;
    while let Some((lock, pid)) = first_held(locks) {
        if start.elapsed() >= wait {
            bail!(
                "{lock} is still held by {} after {} s; wait for it to finish, or stop it, \
                 then run `cargo xtask setup` again",
                who(pid),
                wait.as_secs()
            );
        }
        if !told {
            eprintln!(
                "xtask: waiting for {} to release {lock} (up to {} s)",
                who(pid),
                wait.as_secs()
            );
            told = true;
        }
        thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}

/// "pid N (command line)" of a lock holder.
fn who(pid: i32) -> String {
    if pid <= 0 {
        return "another process".into();
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    if cmdline.is_empty() {
        format!("pid {pid}")
    } else {
        format!("pid {pid} ({cmdline})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds a write lock on `file`. An open-file-description lock: a
    /// classic one (apt's) would be released by `holder` closing its own
    /// descriptor of the file, as every close in the holding process does.
    /// (The query sees both kinds; another process's classic lock comes
    /// with its pid.)
    fn lock(file: &File) {
        // SAFETY: as in `holder`.
        let mut l: libc::flock = unsafe { std::mem::zeroed() };
        l.l_type = libc::F_WRLCK as libc::c_short;
        l.l_whence = libc::SEEK_SET as libc::c_short;
        fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&l)).unwrap();
    }

    #[test]
    fn a_held_lock_is_seen_with_its_holder_and_waited_for() {
        let dir = std::env::temp_dir().join(format!("xtask-aptlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let held = File::create(&path).unwrap();
        assert_eq!(holder(&path), None);
        assert_eq!(holder(&dir.join("missing")), None);

        lock(&held);
        // An OFD lock has no owning pid.
        assert_eq!(holder(&path), Some(0));
        let p = path.to_str().unwrap();
        let e = wait_until_free(&[p], Duration::ZERO).unwrap_err();
        assert!(
            e.to_string().contains("still held by another process"),
            "{e}"
        );

        // Closing the file releases the lock.
        drop(held);
        assert_eq!(holder(&path), None);
        wait_until_free(&[p], Duration::ZERO).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
