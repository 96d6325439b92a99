//! Lookup tables that the XDP program uses to schedule new flows.
//!
//! Why the tables are built here and not in the dataplane: the XDP program
//! must decide per packet in a bounded number of instructions, so it cannot
//! run a scheduler. It only does `table[hash % len]` (Maglev) or
//! `table[counter % len]` (WRR). All of the weighing, ordering and
//! consistency work happens once per configuration or health change, here,
//! in plain Rust that can be unit-tested without a kernel.
//!
//! Why this module is pure (no aya, tokio or I/O): the tables must be a
//! deterministic function of the configuration alone. Two LB nodes with the
//! same configuration must produce byte-identical Maglev tables, or a flow
//! that moves between nodes (ECMP rehash, node failure) lands on a different
//! backend. Keeping the builders free of map handles, clocks and randomness
//! makes that property checkable by tests and keeps the map-writing code
//! (which swaps the live and the spare table of a listener) separate.

pub mod maglev;
pub mod wrr;

pub use maglev::{stable_hash, MaglevBackend, MAX_TABLE_SIZE};
pub use slb_common::limits::{DEFAULT_RING_SIZE, NO_BACKEND};

/// Why a scheduling table could not be built. These are configuration
/// errors: the agent reports them instead of loading a table the dataplane
/// would misuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// Maglev needs a prime table size: the permutations
    /// `offset + j * skip (mod size)` are only guaranteed to visit every slot
    /// when `size` is prime.
    #[error("Maglev table size {0} is not prime")]
    SizeNotPrime(u32),
    /// The table would not fit the dataplane map (and would take too long to
    /// build).
    #[error("Maglev table size {size} exceeds the maximum of {max}")]
    SizeTooLarge { size: u32, max: u32 },
    /// `u32::MAX` marks an empty slot, so no backend may use it as its id.
    #[error("backend id {0:#x} is reserved for empty table slots")]
    ReservedId(u32),
    /// Two backends with the same identity would compete for exactly the
    /// same slots, and which one wins would depend on input order.
    #[error("duplicate backend key {0:?}")]
    DuplicateKey(String),
    /// Every table has `size` slots of the lookup-table map. A `wrr`
    /// sequence has at least one entry per backend, so with more backends
    /// it would run into the neighbouring table (another listener's live
    /// one); a Maglev table would silently leave backends out.
    #[error("{backends} backends do not fit a table of {size} slots")]
    TooManyBackends { backends: usize, size: u32 },
}
