//! The only module that talks to aya: loading the XDP object, pinning and
//! adopting its maps, attaching to interfaces, typed map writes, counters.
mod attach;
mod batch;
mod bpffs;
mod connections;
mod counters;
mod journal;
mod load;
pub mod object;
mod tables;

pub use attach::{AttachMode, Attachment};
pub use connections::Connection;
pub use journal::Checkpoint;

pub use load::{Dataplane, DataplaneOptions};
pub use tables::AclEntry;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("pin path {path}: {reason}")]
    PinPath { path: PathBuf, reason: String },
    #[error(
        "another `slb run` is using the pinned state in {path}; stop it first (nothing was changed)"
    )]
    Busy { path: PathBuf },
    #[error(
        "pinned state in {path} is incompatible: {reason}; start with the settings it was \
         created with, or remove {path} to start afresh (established flows are then lost)"
    )]
    Incompatible { path: PathBuf, reason: String },
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
