//! The only module that talks to aya: loading the XDP object, pinning and
//! adopting its maps, attaching to interfaces, typed map writes, counters.
mod attach;
mod batch;
mod bpffs;
mod clock;
mod connections;
mod counters;
mod journal;
mod load;
mod memory;
pub mod object;
mod tables;

pub use attach::{AttachMode, Attachment};
pub use connections::{Census, Connection, FlowTables};
pub use journal::Checkpoint;

pub use load::{Dataplane, DataplaneOptions};
pub use memory::{human_bytes, MapMemory};
pub use tables::AclEntry;

use std::path::PathBuf;

/// What starting afresh over pinned state this build cannot adopt does:
/// a start with an empty connection table is a failover to a standby
/// (README, "Failover to a standby"), so the operator can judge what it
/// costs rather than being told that every flow is lost.
fn afresh(path: &std::path::Path) -> String {
    format!(
        "remove {} and start again: the previous program is detached and this build starts \
         with an empty connection table; flows of maglev and sh listeners carry on (rebuilt \
         from their next packet, as on a standby), those of wrr and wlc listeners may move to \
         another backend and be reset",
        path.display()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("pin path {path}: {reason}")]
    PinPath { path: PathBuf, reason: String },
    #[error(
        "another `slb run` is using the pinned state in {path}; stop it first (nothing was changed)"
    )]
    Busy { path: PathBuf },
    #[error(
        "pinned state in {path} was created with {setting} = {pinned}, this configuration \
         has {wanted}; start with {pinned} (the size changes only with a fresh start), or {}",
        afresh(.path)
    )]
    Incompatible {
        path: PathBuf,
        setting: &'static str,
        pinned: u32,
        wanted: u32,
    },
    #[error(
        "pinned state in {path} was created by a build with map layout version {found}; this \
         build uses {ours} and cannot adopt it (a dataplane the previous build left running \
         goes on forwarding meanwhile, without health checks). To switch to this build, {}",
        afresh(.path)
    )]
    LayoutVersion {
        path: PathBuf,
        found: u32,
        ours: u32,
    },
    #[error("pinned state in {path}: {name}: {reason}")]
    PinnedMap {
        path: PathBuf,
        name: &'static str,
        reason: String,
    },
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    #[error("map id {id}: {reason}")]
    MapInfo { id: u32, reason: String },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("interface {name}: {reason}")]
    Interface { name: String, reason: String },
    #[error("the eBPF object was not built into this binary (AYA_BUILD_SKIP was set)")]
    NotBuilt,
}

/// Shorthand for map-call errors.
pub(crate) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}
