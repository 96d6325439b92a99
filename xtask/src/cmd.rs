//! Running external commands with errors that say which command failed and how,
//! plus small process/environment helpers shared by all xtask commands.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs, io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// A command line being built; every failure names the full command.
pub struct Cmd {
    inner: Command,
    shown: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            inner: Command::new(program),
            shown: quote(program),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&quote(arg));
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.inner.env(key, value);
        self
    }

    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.inner.current_dir(dir);
        self
    }

    /// Runs with inherited stdio; fails unless the command exits successfully.
    pub fn run(mut self) -> Result<()> {
        let status = self.inner.status().map_err(|e| self.spawn_error(e))?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.shown);
        }
        Ok(())
    }

    /// Runs capturing stdout (returned) and stderr (quoted in the error on failure).
    pub fn read(mut self) -> Result<String> {
        let out = self
            .inner
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!(
                "`{}` failed ({}): {}",
                self.shown,
                out.status,
                stderr.trim()
            );
        }
        String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", self.shown))
    }

    /// Runs silently; true only if the command could be started and exited successfully.
    pub fn probe(mut self) -> bool {
        self.inner
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Replaces the current process with the command; only returns on failure.
    pub fn exec(mut self) -> anyhow::Error {
        let err = self.inner.exec();
        self.spawn_error(err)
    }

    fn spawn_error(&self, err: io::Error) -> anyhow::Error {
        let program = quote(self.inner.get_program());
        if err.kind() == io::ErrorKind::NotFound {
            anyhow!("cannot run `{}`: `{program}` not found on PATH", self.shown)
        } else {
            anyhow!("cannot run `{}`: {err}", self.shown)
        }
    }
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+:,@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Adjusts this process's environment (inherited by every child) once, at startup:
///
/// * `$CARGO_HOME/bin` goes first on PATH, so the build finds the `bpf-linker` that
///   `setup` installs there and `cargo +nightly` reaches the rustup proxy.
/// * Variables `cargo run` set for xtask itself are removed; e.g. a leaked `CARGO`
///   (the stable cargo binary) would make `cargo +nightly clippy` run stable cargo.
pub fn prepare_env() {
    let cargo_bin = cargo_home().map(|home| home.join("bin"));
    let old_path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&old_path).collect();
    if let Some(cargo_bin) = cargo_bin {
        if dirs.first() != Some(&cargo_bin) {
            dirs.insert(0, cargo_bin);
        }
    }
    // join_paths only fails on a ':' inside a dir name; then the old PATH is kept.
    if let Ok(path) = env::join_paths(dirs) {
        env::set_var("PATH", path);
    }

    let leaked: Vec<OsString> = env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| {
            key.to_str().is_some_and(|k| {
                matches!(
                    k,
                    "CARGO"
                        | "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_BIN_NAME"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                ) || k.starts_with("CARGO_PKG_")
            })
        })
        .collect();
    for key in leaked {
        env::remove_var(key);
    }
}

/// `$CARGO_HOME`, defaulting to `$HOME/.cargo` like cargo and rustup do.
pub fn cargo_home() -> Option<PathBuf> {
    match env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home)),
        _ => home_dir().map(|home| home.join(".cargo")),
    }
}

pub fn home_dir() -> Option<PathBuf> {
    env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}

/// The workspace root (parent of the `xtask` package directory).
pub fn workspace_root() -> &'static Path {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Invariant: xtask/Cargo.toml lives one level below the workspace root.
    xtask_dir.parent().unwrap_or(xtask_dir)
}

/// Cargo's target directory for the workspace (honours CARGO_TARGET_DIR and config).
pub fn target_dir() -> Result<PathBuf> {
    let metadata = Cmd::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .dir(workspace_root())
        .read()?;
    json_string_field(&metadata, "target_directory")
        .map(PathBuf::from)
        .context("`cargo metadata` output has no target_directory")
}

/// Value of the first `"key":"value"` string field in compact JSON (no serde needed).
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut value = String::new();
    let mut chars = json[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // "Uid:\t<real>\t<effective>\t<saved>\t<fs>" in /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1))
                .map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Full path of `program` if it is an executable file in a PATH directory.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|file| {
            fs::metadata(file)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field() {
        let json = r#"{"packages":[],"target_directory":"/w/t\"a\\b","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some(r#"/w/t"a\b"#)
        );
        assert_eq!(json_string_field(json, "missing"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(OsStr::new("-D")), "-D");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
    }
}
