//! `cargo xtask setup`: idempotent bootstrap of everything the build and the tests need.
//!
//! Every step first checks cheaply and only acts when something is missing, so the
//! no-op case takes well under a second; `build`, `run` and `test` call [`ensure`].

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{self, Cmd};

#[derive(clap::Args)]
pub struct Args {
    /// Reinstall bpf-linker even if the installed one works.
    #[arg(long)]
    force_bpf_linker: bool,
}

/// How to treat system parts (Debian packages, bpffs) that need root to fix.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Missing pieces are an error (explicit `setup`, integration tests).
    Require,
    /// As root fix them; otherwise only warn (build/run do not need them).
    BestEffort,
}

/// Debian packages used by the integration tests, demo and bench.
const PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "bpftool",
    "nftables",
    "tcpdump",
    "wrk",
    "iperf3",
    "netsniff-ng",
    "curl",
    "iputils-ping",
    "nginx",
    "haproxy",
];

/// Provide `cc` (host linker for rustc) when it is missing.
const LINKER_PACKAGES: &[&str] = &["gcc", "libc6-dev"];

/// Packages whose postinst starts a system service we do not want running.
const SERVICES: &[&str] = &["nginx", "haproxy"];

/// Components required on the nightly toolchain (eBPF build and eBPF clippy).
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];

/// Components required on the default toolchain (fmt and clippy steps of `test`).
const DEFAULT_COMPONENTS: &[&str] = &["rustfmt", "clippy"];

const BPFFS: &str = "/sys/fs/bpf";

pub fn run(args: Args) -> Result<()> {
    ensure(System::Require, args.force_bpf_linker)?;
    println!("setup: ok");
    Ok(())
}

/// Checks everything and installs what is missing; prints only when it changes something.
pub fn ensure(system: System, force_bpf_linker: bool) -> Result<()> {
    ensure_nightly().context("setup: nightly toolchain")?;
    ensure_components().context("setup: rustup components")?;
    let llvm = NightlyLlvm::find().context("setup: locating nightly's libLLVM")?;
    let prefix = llvm_prefix(&llvm).context("setup: LLVM prefix for bpf-linker")?;
    ensure_bpf_linker(&llvm, &prefix, force_bpf_linker).context("setup: bpf-linker")?;
    ensure_system(system).context("setup: system packages / bpffs")?;
    Ok(())
}

fn note(msg: impl std::fmt::Display) {
    eprintln!("setup: {msg}");
}

// ---------------------------------------------------------------------------
// Rust toolchains

fn ensure_nightly() -> Result<()> {
    let list = Cmd::new("rustup")
        .args(["toolchain", "list"])
        .read()
        .context("rustup is required (https://rustup.rs)")?;
    // Lines look like "nightly-x86_64-unknown-linux-gnu (default)"; dated
    // "nightly-2025-01-01-<host>" toolchains are not what `+nightly` selects.
    let present = list.lines().any(|line| {
        line.split_whitespace()
            .next()
            .and_then(|name| name.strip_prefix("nightly-"))
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    });
    if !present {
        note("installing the nightly toolchain");
        Cmd::new("rustup")
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .run()?;
    }
    Ok(())
}

fn ensure_components() -> Result<()> {
    for (toolchain, wanted) in [
        (Some("nightly"), NIGHTLY_COMPONENTS),
        (None, DEFAULT_COMPONENTS),
    ] {
        let mut list = Cmd::new("rustup").args(["component", "list", "--installed"]);
        if let Some(toolchain) = toolchain {
            list = list.args(["--toolchain", toolchain]);
        }
        let installed = list.read()?;
        // Installed names are "rust-src" or "<name>-<host triple>".
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|name| {
                !installed.lines().map(str::trim).any(|line| {
                    line == *name
                        || line
                            .strip_prefix(name)
                            .is_some_and(|rest| rest.starts_with('-'))
                })
            })
            .collect();
        if missing.is_empty() {
            continue;
        }
        let which = toolchain.unwrap_or("the default toolchain");
        note(format!("adding {} to {which}", missing.join(", ")));
        let mut add = Cmd::new("rustup").args(["component", "add"]).args(&missing);
        if let Some(toolchain) = toolchain {
            add = add.args(["--toolchain", toolchain]);
        }
        add.run()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// bpf-linker built against nightly's own libLLVM

/// The libLLVM shared library shipped in the nightly sysroot.
struct NightlyLlvm {
    /// The real file, e.g. `<sysroot>/lib/libLLVM.so.22.1-rust-1.97.0-nightly`.
    file: PathBuf,
    /// Its file name (= its SONAME, what bpf-linker's DT_NEEDED names).
    name: String,
    /// LLVM major version, selects bpf-linker's `llvm-<major>` feature.
    major: u32,
}

impl NightlyLlvm {
    fn find() -> Result<Self> {
        let sysroot = Cmd::new("rustc")
            .args(["+nightly", "--print", "sysroot"])
            .read()?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let mut candidates: Vec<String> = fs::read_dir(&lib)
            .with_context(|| format!("cannot list {}", lib.display()))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("libLLVM.so.") && name.contains("-rust-"))
            .collect();
        candidates.sort();
        let name = match candidates.as_slice() {
            [one] => one.clone(),
            [] => bail!(
                "no libLLVM.so.<version>-rust-<version> in {}; is this a rustup nightly?",
                lib.display()
            ),
            many => bail!(
                "several libLLVM candidates in {}: {}",
                lib.display(),
                many.join(", ")
            ),
        };
        let major = llvm_major(&name)
            .with_context(|| format!("cannot read the LLVM major version from {name}"))?;
        Ok(Self {
            file: lib.join(&name),
            name,
            major,
        })
    }
}

/// `libLLVM.so.22.1-rust-…` or `libLLVM-22.so…` -> 22.
fn llvm_major(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("libLLVM.so.")
        .or_else(|| name.strip_prefix("libLLVM-"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `$HOME/.cache/slb/llvm-nightly` with `lib/` symlinks to nightly's libLLVM. bpf-linker
/// links `-lLLVM` (needs `libLLVM.so`) and records the prefix's `lib/` as RUNPATH and the
/// versioned file name as DT_NEEDED, so both links must exist for it to run.
fn llvm_prefix(llvm: &NightlyLlvm) -> Result<PathBuf> {
    let home = cmd::home_dir().context("HOME is not set")?;
    let prefix = home.join(".cache/slb/llvm-nightly");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;

    let mut changed = false;
    for link in ["libLLVM.so", llvm.name.as_str()] {
        changed |= ensure_symlink(&lib.join(link), &llvm.file)?;
    }
    // Links to libLLVMs of older nightlies point at deleted files; drop them so a
    // bpf-linker built against one of them fails its check and gets rebuilt.
    for entry in fs::read_dir(&lib).with_context(|| format!("cannot list {}", lib.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let stale = name != "libLLVM.so"
            && name.to_str() != Some(llvm.name.as_str())
            && entry.file_type()?.is_symlink();
        if stale {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            changed = true;
        }
    }
    if changed {
        note(format!(
            "linked {} -> {}",
            lib.display(),
            llvm.file.display()
        ));
    }
    Ok(prefix)
}

/// Makes `link` a symlink to `target`; returns whether it had to change anything.
fn ensure_symlink(link: &Path, target: &Path) -> Result<bool> {
    match fs::read_link(link) {
        Ok(current) if current == target => return Ok(false),
        Ok(_) => fs::remove_file(link)?,
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(_) => fs::remove_file(link)
            .with_context(|| format!("{} exists and is not a symlink", link.display()))?,
    }
    symlink(target, link).with_context(|| format!("cannot create symlink {}", link.display()))?;
    Ok(true)
}

fn ensure_bpf_linker(llvm: &NightlyLlvm, prefix: &Path, force: bool) -> Result<()> {
    let bin = cmd::cargo_home()
        .context("neither CARGO_HOME nor HOME is set")?
        .join("bin/bpf-linker");
    let reason = if force {
        "--force-bpf-linker".to_owned()
    } else {
        match bpf_linker_problem(&bin, llvm) {
            None => return Ok(()),
            Some(problem) => problem,
        }
    };
    note(format!(
        "installing bpf-linker for LLVM {} ({reason}); this takes about a minute",
        llvm.major
    ));
    Cmd::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--locked",
            "--force",
        ])
        .args(["--features", &format!("llvm-{}", llvm.major)])
        .env("LLVM_PREFIX", prefix)
        .run()
        .with_context(|| {
            format!(
                "building bpf-linker against {} failed (does bpf-linker support LLVM {} yet?)",
                llvm.file.display(),
                llvm.major
            )
        })?;
    if let Some(problem) = bpf_linker_problem(&bin, llvm) {
        bail!("bpf-linker was installed but is still unusable: {problem}");
    }
    Ok(())
}

/// Why the bpf-linker at `bin` is unusable, or None if it runs and uses nightly's LLVM.
fn bpf_linker_problem(bin: &Path, llvm: &NightlyLlvm) -> Option<String> {
    if !bin.exists() {
        return Some(format!("{} not installed", bin.display()));
    }
    if !Cmd::new(bin).arg("--version").probe() {
        return Some(format!(
            "`{} --version` fails, probably its libLLVM is gone",
            bin.display()
        ));
    }
    let needed = match elf_needed(bin) {
        Ok(needed) => needed,
        Err(err) => return Some(format!("cannot read {}: {err:#}", bin.display())),
    };
    let majors: Vec<u32> = needed.iter().filter_map(|lib| llvm_major(lib)).collect();
    if majors.contains(&llvm.major) {
        None
    } else if majors.is_empty() {
        Some("it does not link a shared libLLVM (LLVM version unknown)".to_owned())
    } else {
        Some(format!(
            "it links LLVM {majors:?} but nightly uses LLVM {}",
            llvm.major
        ))
    }
}

/// DT_NEEDED entries of a 64-bit little-endian ELF executable.
fn elf_needed(path: &Path) -> Result<Vec<String>> {
    const SHT_DYNAMIC: u64 = 6;
    const DT_NULL: u64 = 0;
    const DT_NEEDED: u64 = 1;

    let data = fs::read(path)?;
    let bytes = |at: u64, len: u64| -> Result<&[u8]> {
        usize::try_from(at)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(at, len)| data.get(at..at.checked_add(len)?))
            .context("truncated ELF file")
    };
    let u16_at =
        |at: u64| -> Result<u64> { Ok(u16::from_le_bytes(bytes(at, 2)?.try_into()?).into()) };
    let u32_at =
        |at: u64| -> Result<u64> { Ok(u32::from_le_bytes(bytes(at, 4)?.try_into()?).into()) };
    let u64_at = |at: u64| -> Result<u64> { Ok(u64::from_le_bytes(bytes(at, 8)?.try_into()?)) };

    if bytes(0, 6)? != b"\x7fELF\x02\x01" {
        bail!("not a 64-bit little-endian ELF file");
    }
    let (shoff, shentsize, shnum) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?);
    // Section header fields: sh_type @4, sh_offset @0x18, sh_size @0x20, sh_link @0x28.
    let section = |index: u64| -> Result<(u64, u64, u64, u64)> {
        let at = shoff + index * shentsize;
        Ok((
            u32_at(at + 4)?,
            u64_at(at + 0x18)?,
            u64_at(at + 0x20)?,
            u32_at(at + 0x28)?,
        ))
    };
    let mut needed = Vec::new();
    for index in 0..shnum {
        let (kind, offset, size, link) = section(index)?;
        if kind != SHT_DYNAMIC {
            continue;
        }
        let (_, strtab, strtab_size, _) = section(link)?;
        let strings = bytes(strtab, strtab_size)?;
        for entry in (offset..offset + size).step_by(16) {
            match u64_at(entry)? {
                DT_NULL => break,
                DT_NEEDED => {
                    let name = usize::try_from(u64_at(entry + 8)?)
                        .ok()
                        .and_then(|start| strings.get(start..))
                        .and_then(|s| s.split(|&b| b == 0).next())
                        .context("bad DT_NEEDED string offset")?;
                    needed.push(String::from_utf8_lossy(name).into_owned());
                }
                _ => {}
            }
        }
    }
    Ok(needed)
}

// ---------------------------------------------------------------------------
// Debian packages and bpffs (need root to fix)

fn ensure_system(mode: System) -> Result<()> {
    let root = cmd::is_root();
    let mut needs_root = Vec::new();

    match missing_packages() {
        Ok(missing) if missing.is_empty() => {}
        Ok(missing) if root => install_packages(&missing)?,
        Ok(missing) => needs_root.push(format!(
            "missing Debian packages: {} (apt-get install {})",
            missing.join(" "),
            missing.join(" ")
        )),
        Err(err) if mode == System::Require => return Err(err),
        Err(err) => note(format!("warning: {err:#}")),
    }

    if !bpffs_mounted()? {
        if root {
            note(format!("mounting bpffs on {BPFFS}"));
            fs::create_dir_all(BPFFS).with_context(|| format!("cannot create {BPFFS}"))?;
            Cmd::new("mount").args(["-t", "bpf", "bpf", BPFFS]).run()?;
        } else {
            needs_root.push(format!(
                "{BPFFS} is not mounted as bpffs (mount -t bpf bpf {BPFFS})"
            ));
        }
    }

    if !needs_root.is_empty() {
        let msg = format!(
            "{}; fixing this needs root: run `cargo xtask setup` as root",
            needs_root.join("; ")
        );
        match mode {
            System::Require => bail!(msg),
            System::BestEffort => note(format!("warning: {msg}")),
        }
    }
    Ok(())
}

fn missing_packages() -> Result<Vec<&'static str>> {
    if cmd::find_in_path("dpkg-query").is_none() {
        bail!(
            "dpkg-query not found: package setup supports Debian/Ubuntu only; install by hand: {}",
            PACKAGES.join(" ")
        );
    }
    // Exits 1 when some package is unknown to dpkg; what it prints is still valid.
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\n"])
        .args(PACKAGES)
        .args(LINKER_PACKAGES)
        .output()
        .context("cannot run dpkg-query")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let installed = |pkg: &str| {
        listing.lines().any(|line| {
            line.split_once('\t')
                .is_some_and(|(name, status)| name == pkg && status == "install ok installed")
        })
    };
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !installed(pkg))
        .collect();
    // Rust links host binaries with `cc`; a bare machine with only rustup lacks it.
    if cmd::find_in_path("cc").is_none() {
        missing.extend(LINKER_PACKAGES.iter().filter(|pkg| !installed(pkg)));
    }
    Ok(missing)
}

fn install_packages(missing: &[&str]) -> Result<()> {
    note(format!("installing Debian packages: {}", missing.join(" ")));
    crate::apt_lock::wait_until_free(crate::apt_lock::APT_LOCKS, crate::apt_lock::WAIT)?;
    Cmd::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    Cmd::new("apt-get")
        .args([
            "-o",
            &format!(
                "DPkg::Lock::Timeout={}",
                crate::apt_lock::DPKG_LOCK_TIMEOUT_S
            ),
        ])
        .args(["install", "-y", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    // The packages' postinst may have started their daemons; the tests, demo and
    // bench run their own instances, so stop (and, with systemd, disable) them.
    let systemd = Path::new("/run/systemd/system").exists();
    for service in SERVICES.iter().filter(|s| missing.contains(s)) {
        if systemd {
            let _ = Cmd::new("systemctl")
                .args(["disable", "--now", service])
                .probe();
        } else {
            let _ = Cmd::new("service").args([service, "stop"]).probe();
        }
    }
    Ok(())
}

fn bpffs_mounted() -> Result<bool> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    // Fields: source, mount point, fs type, ...; the last mount on a path wins.
    Ok(mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (point == BPFFS).then_some(fstype == "bpf")
        })
        .next_back()
        .unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_from_names() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM-21.so.1"), Some(21));
        assert_eq!(llvm_major("libLLVM.so"), None);
        assert_eq!(llvm_major("libc.so.6"), None);
    }

    #[test]
    fn needed_of_running_binary() -> Result<()> {
        let exe = std::env::current_exe()?;
        let needed = elf_needed(&exe)?;
        assert!(
            needed.iter().any(|lib| lib.starts_with("libc.so")),
            "{needed:?}"
        );
        Ok(())
    }
}
