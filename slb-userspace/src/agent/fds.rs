//! The open-file limit. Every client connection of the proxy holds two
//! descriptors (client and backend), so the default soft limit of 1024
//! caps it at about 500 connections; the agent raises the soft limit to
//! the hard one at start, as HAProxy does (nginx needs
//! `worker_rlimit_nofile` for the same).
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft open-file limit to the hard limit. Returns the limit
/// before and after.
pub fn raise_open_files() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard.max(soft)))
}
