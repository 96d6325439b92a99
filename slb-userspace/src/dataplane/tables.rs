//! Typed writes of the configuration maps.
use super::journal::{optional, Undo};
use super::{map_err, Dataplane, DataplaneError};
use aya::maps::lpm_trie::Key;
use aya::maps::MapError;
use slb_common::{
    limits::{MAX_SNAT_ADDRS, RING_CHUNK},
    Addr, Backend, Listener, RingChunk, SnatPool, VipKey,
};
use slb_common::{AclKey, DestSlot, Settings};
use std::collections::{BTreeMap, BTreeSet};

impl Dataplane {
    /// Writes a listener entry, unless it already holds `listener`: every
    /// apply (a health change too) goes over all of them.
    pub fn set_listener(
        &mut self,
        key: &VipKey,
        listener: &Listener,
    ) -> Result<(), DataplaneError> {
        let old = self.listeners_now.get(key).copied();
        if old == Some(*listener) {
            return Ok(());
        }
        self.record(Undo::Listener(*key, old));
        self.put_listener(*key, Some(*listener))
    }

    pub fn remove_listener(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        let old = self.listeners_now.get(key).copied();
        self.record(Undo::Listener(*key, old));
        self.put_listener(*key, None)
    }

    /// Makes the listener map hold `entry` under `key` (none: no entry),
    /// and the copy say so.
    pub(super) fn put_listener(
        &mut self,
        key: VipKey,
        entry: Option<Listener>,
    ) -> Result<(), DataplaneError> {
        match entry {
            Some(l) => {
                self.listeners
                    .insert(key, l, 0)
                    .map_err(map_err("LISTENERS"))?;
                self.listeners_now.insert(key, l);
            }
            None => {
                optional(self.listeners.remove(&key)).map_err(map_err("LISTENERS"))?;
                self.listeners_now.remove(&key);
            }
        }
        Ok(())
    }

    /// Entries currently in the listener map (including ones adopted from
    /// a previous run).
    pub fn listener_entries(&self) -> Vec<(VipKey, Listener)> {
        self.listeners_now.iter().map(|(k, l)| (*k, *l)).collect()
    }

    /// Writes a backend entry, unless it already holds `backend`: every
    /// apply goes over all of them (4096 at most, two system calls each
    /// while the change is recorded), and a health change alters one.
    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError> {
        let old = self.backend(id)?;
        if old == *backend {
            return Ok(());
        }
        self.record(Undo::Backend(id, old));
        self.put_backend(id, *backend)
    }

    /// Writes a backend entry and the copy.
    pub(super) fn put_backend(&mut self, id: u32, backend: Backend) -> Result<(), DataplaneError> {
        self.backends
            .set(id, backend, 0)
            .map_err(map_err("BACKENDS"))?;
        if let Some(now) = self.backends_now.get_mut(id as usize) {
            *now = backend;
        }
        Ok(())
    }

    /// A backend entry as the program reads it (from the copy: the program
    /// never writes the map).
    pub fn backend(&self, id: u32) -> Result<Backend, DataplaneError> {
        self.backends_now
            .get(id as usize)
            .copied()
            .ok_or(DataplaneError::Map {
                name: "BACKENDS",
                source: MapError::OutOfBounds {
                    index: id,
                    max_entries: self.backends_now.len() as u32,
                },
            })
    }

    /// Writes a lookup table at slot `base`, `RING_CHUNK` slots to a
    /// system call. Only elements holding slots that differ from
    /// `previous` (what the caller knows is there) are written: a weight
    /// change on a 65537-slot table touches a few hundred slots, not all.
    /// The elements at either end are shared with the neighbouring tables
    /// (a table's size is prime): read first, their other slots written
    /// back as they were, so a concurrent reader sees them unchanged.
    pub fn write_ring(
        &mut self,
        base: u32,
        slots: &[u32],
        previous: Option<&[u32]>,
    ) -> Result<(), DataplaneError> {
        let end = base + slots.len() as u32;
        let mut element = base / RING_CHUNK;
        while element * RING_CHUNK < end {
            let (lo, hi) = (element * RING_CHUNK, (element + 1) * RING_CHUNK);
            let (from, to) = (lo.max(base), hi.min(end));
            let ours = (from - base) as usize..(to - base) as usize;
            let unchanged =
                previous.and_then(|p| p.get(ours.clone())) == Some(&slots[ours.clone()]);
            if !unchanged {
                let mut value = if from > lo || to < hi {
                    self.ring.get(&element, 0).map_err(map_err("RING"))?
                } else {
                    RingChunk::default()
                };
                value.slots[(from - lo) as usize..(to - lo) as usize].copy_from_slice(&slots[ours]);
                self.ring.set(element, value, 0).map_err(map_err("RING"))?;
            }
            element += 1;
        }
        Ok(())
    }

    /// `len` slots of the lookup tables from slot `base`, as the program
    /// reads them.
    pub fn ring_slots(&self, base: u32, len: u32) -> Result<Vec<u32>, DataplaneError> {
        (base..base + len)
            .map(|i| {
                let element = self
                    .ring
                    .get(&(i / RING_CHUNK), 0)
                    .map_err(map_err("RING"))?;
                Ok(element.slots[(i % RING_CHUNK) as usize])
            })
            .collect()
    }

    /// Makes the destination table hold `table` (`DEST_SLOTS` slots, see
    /// `planner::dest_table`). Slots that get an address are written before
    /// slots are emptied, so every probe sequence stays intact meanwhile.
    pub fn write_dest_table(&mut self, table: &[DestSlot]) -> Result<(), DataplaneError> {
        for pass_fills in [true, false] {
            for (i, want) in table.iter().enumerate() {
                let old = self.dests_now.get(i).copied().unwrap_or_default();
                if (want.flags != 0) != pass_fills || old == *want {
                    continue;
                }
                self.record(Undo::Dest(i as u32, old));
                self.set_dest(i as u32, *want)?;
            }
        }
        Ok(())
    }

    /// Writes one slot of the destination table, and what it now holds.
    pub(super) fn set_dest(&mut self, i: u32, slot: DestSlot) -> Result<(), DataplaneError> {
        self.dests.set(i, slot, 0).map_err(map_err("DESTS"))?;
        if let Some(now) = self.dests_now.get_mut(i as usize) {
            *now = slot;
        }
        Ok(())
    }

    /// The destination table as the program sees it now.
    pub fn dest_entries(&self) -> Result<Vec<DestSlot>, DataplaneError> {
        self.dests
            .iter()
            .map(|r| r.map_err(map_err("DESTS")))
            .collect()
    }

    /// Writes the FULLNAT source pools. Addresses are written before the
    /// counts grow, so the program never indexes an unwritten slot.
    pub fn set_snat_pool(&mut self, v4: &[Addr], v6: &[Addr]) -> Result<(), DataplaneError> {
        let too_many = v4.len() > MAX_SNAT_ADDRS as usize || v6.len() > MAX_SNAT_ADDRS as usize;
        if too_many {
            return Err(DataplaneError::Map {
                name: "SNAT_POOL",
                source: MapError::OutOfBounds {
                    index: v4.len().max(v6.len()) as u32,
                    max_entries: MAX_SNAT_ADDRS,
                },
            });
        }
        // Only what differs is written (and recorded): every apply comes
        // here, and the pool rarely changes.
        for (i, a) in v4.iter().enumerate() {
            let i = i as u32;
            let old = self.snat_v4.get(&i, 0).map_err(map_err("SNAT_V4"))?;
            if old != *a {
                self.record(Undo::SnatV4(i, old));
                self.snat_v4.set(i, a, 0).map_err(map_err("SNAT_V4"))?;
            }
        }
        for (i, a) in v6.iter().enumerate() {
            let i = i as u32;
            let old = self.snat_v6.get(&i, 0).map_err(map_err("SNAT_V6"))?;
            if old != *a {
                self.record(Undo::SnatV6(i, old));
                self.snat_v6.set(i, a, 0).map_err(map_err("SNAT_V6"))?;
            }
        }
        let pool = SnatPool {
            v4_count: v4.len() as u32,
            v6_count: v6.len() as u32,
        };
        let old = self.snat_pool.get(&0, 0).map_err(map_err("SNAT_POOL"))?;
        if old == pool {
            return Ok(());
        }
        self.record(Undo::SnatPool(old));
        self.snat_pool.set(0, pool, 0).map_err(map_err("SNAT_POOL"))
    }
}

/// One ACL entry: listener id, prefix length of the address (0..=128 on
/// the IPv4-mapped form), address.
pub type AclEntry = (u32, u32, Addr);

/// The trie key of an ACL entry (the listener id takes the first 32 bits).
pub(super) fn acl_key((listener, len, addr): &AclEntry) -> Key<AclKey> {
    Key::new(
        32 + len,
        AclKey {
            listener_id_be: listener.to_be(),
            addr: *addr,
        },
    )
}

impl Dataplane {
    pub fn set_settings(&mut self, s: &Settings) -> Result<(), DataplaneError> {
        let old = self.settings.get(&0, 0).map_err(map_err("SETTINGS"))?;
        if old == *s {
            return Ok(());
        }
        self.record(Undo::Settings(old));
        self.settings.set(0, s, 0).map_err(map_err("SETTINGS"))
    }

    /// The entries of the ACL trie.
    pub fn acl_entries(&self) -> BTreeSet<AclEntry> {
        self.acl
            .keys()
            .filter_map(Result::ok)
            .map(|k| {
                let d = k.data();
                (u32::from_be(d.listener_id_be), k.prefix_len() - 32, d.addr)
            })
            .collect()
    }

    /// Puts `entries` into the ACL trie (they are not in it).
    pub fn insert_acl<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a AclEntry>,
    ) -> Result<(), DataplaneError> {
        for e in entries {
            self.record(Undo::Acl(*e, false));
            self.acl.insert(&acl_key(e), 1, 0).map_err(map_err("ACL"))?;
        }
        Ok(())
    }

    /// Takes `entries` out of the ACL trie (they are in it).
    pub fn remove_acl<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a AclEntry>,
    ) -> Result<(), DataplaneError> {
        for e in entries {
            self.record(Undo::Acl(*e, true));
            optional(self.acl.remove(&acl_key(e)))
                .map(drop)
                .map_err(map_err("ACL"))?;
        }
        Ok(())
    }

    /// Overwrites the active-flow counts the `wlc` scheduler reads.
    pub fn set_active(
        &mut self,
        counts: &BTreeMap<u32, u64>,
        ids: impl Iterator<Item = u32>,
    ) -> Result<(), DataplaneError> {
        for id in ids {
            let n = counts
                .get(&id)
                .copied()
                .unwrap_or(0)
                .min(u64::from(u32::MAX)) as u32;
            self.active.set(id, n, 0).map_err(map_err("ACTIVE"))?;
        }
        Ok(())
    }
}

impl Dataplane {
    /// Advances the fast path's clock (`CLOCK`) to now, once. Without
    /// that, four times a second, the fast path hands every packet to the
    /// slow path once the clock is a second behind: the agent has a
    /// thread do it ([`Dataplane::start_clock`]).
    pub fn tick(&mut self) -> Result<(), DataplaneError> {
        let now = super::connections::monotonic_coarse_ns();
        self.clock.set(0, now, 0).map_err(map_err("CLOCK"))
    }

    /// Starts the thread that advances the fast path's clock every
    /// `clock::TICK` until this dataplane is dropped, whatever the
    /// agent's main loop is busy with (a no-op once started).
    pub fn start_clock(&mut self) -> Result<(), DataplaneError> {
        if self.ticker.is_none() {
            let fd = self.clock_fd.try_clone().map_err(|e| {
                map_err("CLOCK")(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "dup",
                    io_error: e,
                }))
            })?;
            self.ticker = Some(super::clock::ClockTicker::start(fd)?);
        }
        Ok(())
    }
}
