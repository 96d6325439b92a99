//! Turns the desired state (configuration + health) into the contents of
//! the dataplane maps. Pure: no aya, no I/O, so every decision here is
//! unit-tested without a kernel.
//!
//! - `ids` gives listeners and backends stable map indexes across reloads,
//!   so an unchanged backend keeps its id and its flows.
//! - `tables` builds each listener's lookup table for its scheduler.
//! - `retired` keeps the reply translation of backends that stopped being
//!   `nat` backends while their flows may still run.
//! - `rings` tracks the two table halves of each listener, so a new table
//!   is written beside the live one and switched to in one update.
mod dests;
mod ids;
mod plan;
mod retired;
mod rings;
mod tables;

pub use dests::{dest_table, DestTableFull};
pub use ids::{BackendKey, BackendSlot, Ids};
pub use plan::{
    backups_serve, plan, plan_cached, vip_key, BackendPlan, Health, ListenerPlan, Plan, PlanError,
};
pub use retired::{Kept, RetiredNat};
pub use rings::{RingSwap, Rings};
pub use tables::{Table, TableCache};
