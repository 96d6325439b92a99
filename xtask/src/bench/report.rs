//! Recording results in BENCHMARKS.md: one dated entry per run, newest
//! first, each section under its own heading.
use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::Section;
use crate::cmd::{workspace_root, Cmd};

/// The machine, as a line: CPU model, cores, kernel.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = Cmd::new("uname").arg("-r").read().unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

pub fn record(sections: &[Section]) -> Result<()> {
    let path = workspace_root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let head = "# SLB benchmarks\n\nProduced by `cargo xtask bench` (newest first). Ratios compare runs made side by side in the same invocation on the same machine.\n";
    let previous = old.strip_prefix(head).unwrap_or(&old);
    let date = Cmd::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .read()
        .unwrap_or_default();
    let mut entry = String::new();
    let _ = writeln!(entry, "\n## Run of {} — {}\n", date.trim(), machine());
    for s in sections {
        let _ = writeln!(entry, "### {}\n\n{}\n", s.title, s.markdown.trim_end());
    }
    std::fs::write(&path, format!("{head}{entry}{previous}"))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nrecorded in {}", path.display());
    Ok(())
}
