//! Ctrl-C for commands that build test beds (`demo`): the default action of
//! SIGINT ends the process at once, so no destructor runs and its network
//! namespaces, scratch directories and agents stay behind. Instead a
//! handler records the signal and a thread stops this process's agents, so
//! whatever the main thread waits for ends soon; the main thread checks
//! [`check`] between steps and returns an error, and the test bed's
//! destructors tear everything down as on any failure. (A handler, not a
//! blocked mask and `sigwait`: child processes inherit the mask, and
//! agents that cannot receive SIGTERM cannot be stopped.)

use std::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nix::{
    libc::c_int,
    sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
    unistd::Pid,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Signals received; the handler only touches atomics (async-signal-safe).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

/// Takes over SIGINT (Ctrl-C), SIGTERM (`kill`) and SIGHUP (a closed
/// terminal). Exec resets caught signals to their default, so child
/// processes keep the usual behaviour.
pub fn catch() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: `on_signal` only uses atomics, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("catching {sig}"))?;
    }
    thread::Builder::new()
        .name("signals".into())
        .spawn(watch)
        .context("starting the signal thread")?;
    Ok(())
}

fn watch() {
    let mut seen = 0;
    let mut first: Option<Instant> = None;
    loop {
        thread::sleep(Duration::from_millis(50));
        let received = RECEIVED.load(Ordering::SeqCst);
        if received == seen {
            continue;
        }
        seen = received;
        match first {
            // `timeout` signals its child, then the whole process group:
            // one event, two signals.
            Some(at) if at.elapsed() < Duration::from_secs(1) => {}
            Some(_) => {
                eprintln!(
                    "\nxtask: interrupted again: exiting without cleaning up; the next \
                     `cargo xtask demo` or `cargo xtask test` removes what is left"
                );
                std::process::exit(130);
            }
            None => {
                first = Some(Instant::now());
                eprintln!(
                    "\nxtask: interrupted: stopping and removing everything the demo created"
                );
                stop_agents();
            }
        }
    }
}

/// Whether a signal arrived since [`catch`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once a signal arrived, so `?` unwinds to the destructors.
pub fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// SIGTERM to this process's `slb` children: a wait for one of their log
/// lines then ends at once. (Ctrl-C reaches them anyway, as members of the
/// terminal's foreground process group; `kill -INT <pid>` does not.)
fn stop_agents() {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "<pid> (<comm>) <state> <ppid> ..."; comm may contain ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(me) && head.ends_with("(slb") {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}
