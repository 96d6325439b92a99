//! `cargo xtask bench xdp --perf DIR`: a CPU profile of each case, to see
//! where a program's time goes (the kernel's accounting only gives the
//! total). `perf record` with the `cpu-clock` software event works where
//! no hardware counters are available (VMs); `-g` keeps the call chains,
//! so samples in map helpers show which BPF function called them.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result};

/// A running `perf record`; stopped (and its file written) on `finish`.
pub struct Recording {
    child: Child,
    file: PathBuf,
}

/// Starts recording CPU `cpu` into `dir/name.data`.
pub fn start(dir: &Path, name: &str, cpu: usize) -> Result<Recording> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("{name}.data"));
    let child = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-g", "-C"])
        .arg(cpu.to_string())
        .arg("-o")
        .arg(&file)
        .stdout(Stdio::null())
        .spawn()
        .context("starting `perf record` (is perf installed?)")?;
    // perf needs a moment to open its events; samples before that are lost.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(Recording { child, file })
}

impl Recording {
    /// Stops perf as Ctrl-C would (it then writes its file) and waits.
    pub fn finish(mut self) -> Result<PathBuf> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let status = self.child.wait().context("waiting for perf")?;
        anyhow::ensure!(
            status.success() || status.code() == Some(130) || status.code().is_none(),
            "perf record failed: {status}"
        );
        println!("xdp: profile written to {}", self.file.display());
        Ok(std::mem::take(&mut self.file))
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // Only reached when `finish` was not (an error in between).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
