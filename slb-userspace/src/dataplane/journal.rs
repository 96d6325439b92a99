//! Undoing configuration writes.
//!
//! The maps are shared with the running program and, under
//! `--keep-dataplane`, with the previous and the next agent. A change that
//! fails partway (a map update refused, a restart that cannot attach after
//! its tables were written) must not leave the program forwarding by a
//! configuration that was never accepted. While a checkpoint is open, every
//! configuration write records what it replaced; rolling back writes those
//! values back in reverse order, so the program passes through the same
//! intermediate states as the writes did, backwards (each of them one the
//! write order already made safe).
//!
//! Lookup-table slots (`RING`) are not recorded: a table is only ever
//! written into a half that no listener entry points at (see
//! `planner::Rings`), so once the listener entries are back the program
//! reads none of them. Whoever rolls back must forget what it believed
//! those halves hold.
use super::{map_err, tables::AclEntry, Dataplane, DataplaneError};
use aya::maps::{MapError, PerCpuValues};
use slb_common::{Addr, Backend, DestSlot, Listener, Settings, SnatPool, Stats, VipKey};

/// What one write replaced.
pub(super) enum Undo {
    /// The listener entry under the key (`None`: there was none).
    Listener(VipKey, Option<Listener>),
    Backend(u32, Backend),
    Dest(u32, DestSlot),
    Settings(Settings),
    SnatPool(SnatPool),
    SnatV4(u32, Addr),
    SnatV6(u32, Addr),
    /// An ACL entry that was absent (`false`) or present (`true`).
    Acl(AclEntry, bool),
    ListenerStats(u32, PerCpuValues<Stats>),
    BackendStats(u32, PerCpuValues<Stats>),
    Active(u32, u32),
}

/// A point to roll back to, from [`Dataplane::checkpoint`]. Used once:
/// by [`Dataplane::roll_back`] or [`Dataplane::release`].
#[must_use = "a checkpoint is released or rolled back"]
#[derive(Debug)]
pub struct Checkpoint {
    at: usize,
    /// This checkpoint started the recording (no outer one was open).
    outermost: bool,
}

/// An absent key reads as `None`: for a read, no old value to put back;
/// for a delete, its goal (absent) is reached.
pub(super) fn optional<T>(r: Result<T, MapError>) -> Result<Option<T>, MapError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Dataplane {
    /// Starts recording configuration writes (or marks a point within an
    /// open recording): everything written from here on can be undone
    /// with [`Dataplane::roll_back`].
    pub fn checkpoint(&mut self) -> Checkpoint {
        match &self.journal {
            Some(j) => Checkpoint {
                at: j.len(),
                outermost: false,
            },
            None => {
                self.journal = Some(Vec::new());
                Checkpoint {
                    at: 0,
                    outermost: true,
                }
            }
        }
    }

    /// Keeps what was written since `cp`. Releasing the outermost
    /// checkpoint stops recording.
    /// Map entries written since `cp` (what rolling back to it would put
    /// back).
    pub fn written_since(&self, cp: &Checkpoint) -> usize {
        self.journal
            .as_ref()
            .map_or(0, |j| j.len().saturating_sub(cp.at))
    }

    pub fn release(&mut self, cp: Checkpoint) {
        if cp.outermost {
            self.journal = None;
        }
    }

    /// Puts back everything written since `cp`, most recent first. Every
    /// value is attempted even when one fails; the first failure is
    /// returned.
    pub fn roll_back(&mut self, cp: Checkpoint) -> Result<(), DataplaneError> {
        let undo = match self.journal.as_mut() {
            Some(j) => j.split_off(cp.at.min(j.len())),
            None => Vec::new(),
        };
        if cp.outermost {
            self.journal = None;
        }
        let mut first = None;
        for u in undo.into_iter().rev() {
            if let Err(e) = self.undo(u) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Whether writes are being recorded (a reading of the old value is
    /// then worth its system call).
    pub(super) fn recording(&self) -> bool {
        self.journal.is_some()
    }

    pub(super) fn record(&mut self, u: Undo) {
        if let Some(j) = self.journal.as_mut() {
            j.push(u);
        }
    }

    fn undo(&mut self, u: Undo) -> Result<(), DataplaneError> {
        match u {
            Undo::Listener(key, l) => self.put_listener(key, l),
            Undo::Backend(id, b) => self.put_backend(id, b),
            Undo::Dest(i, d) => self.set_dest(i, d),
            Undo::Settings(s) => self.settings.set(0, s, 0).map_err(map_err("SETTINGS")),
            Undo::SnatPool(p) => self.snat_pool.set(0, p, 0).map_err(map_err("SNAT_POOL")),
            Undo::SnatV4(i, a) => self.snat_v4.set(i, a, 0).map_err(map_err("SNAT_V4")),
            Undo::SnatV6(i, a) => self.snat_v6.set(i, a, 0).map_err(map_err("SNAT_V6")),
            Undo::Acl(e, true) => self
                .acl
                .insert(&super::tables::acl_key(&e), 1, 0)
                .map_err(map_err("ACL")),
            Undo::Acl(e, false) => optional(self.acl.remove(&super::tables::acl_key(&e)))
                .map(drop)
                .map_err(map_err("ACL")),
            Undo::ListenerStats(id, v) => self
                .listener_stats
                .set(id, v, 0)
                .map_err(map_err("LISTENER_STATS")),
            Undo::BackendStats(id, v) => self
                .backend_stats
                .set(id, v, 0)
                .map_err(map_err("BACKEND_STATS")),
            Undo::Active(id, n) => self.active.set(id, n, 0).map_err(map_err("ACTIVE")),
        }
    }
}
