//! Stable ids for listeners and backends.
//!
//! The XDP program addresses listeners and backends by index (stats,
//! lookup tables, flow entries). A reload must not renumber what did not
//! change: a flow remembers its backend id, and a renumbered backend would
//! silently receive another backend's flows. A new listener or backend
//! gets an id never handed out before (lowest first) while there is one;
//! only then are freed ids reused, least recently freed first, so what the
//! dataplane still holds under an id (flows of a removed backend running
//! until idle) goes to a new owner as late as possible. A reused backend
//! id gets a new generation so flows still pinned to its previous owner
//! are re-scheduled instead of following the id, and every id handed to a
//! new owner is reported by [`Ids::fresh`] so its counters can be zeroed.
use slb_common::{
    limits::{MAX_BACKENDS, MAX_LISTENERS},
    VipKey,
};
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::SocketAddr,
};

/// A backend as health checks and `slb status` name it: its listener's
/// name and its address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub listener: String,
    pub addr: SocketAddr,
}

/// What a backend id belongs to in the dataplane: its listener's
/// `LISTENERS` key (VIP, port, protocol) and its address. Ids are keyed
/// like LVS keys a real server, by its virtual service: a listener's name
/// is only a label, so renaming a listener keeps every id, and with them
/// every established flow, counter and table slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackendSlot {
    pub service: VipKey,
    pub addr: SocketAddr,
}

/// The ids of one kind (listeners or backends) ever handed out, and which
/// of them are free again.
#[derive(Clone, Debug)]
struct Pool {
    max: u32,
    /// Every id below this one has been handed out at some point.
    never_below: u32,
    ever: BTreeSet<u32>,
    /// Free ids that were handed out before, least recently freed first.
    freed: VecDeque<u32>,
}

impl Pool {
    fn new(max: u32) -> Pool {
        Pool {
            max,
            never_below: 0,
            ever: BTreeSet::new(),
            freed: VecDeque::new(),
        }
    }

    /// `id` is in use (handed out now, or kept from adopted state).
    fn take_id(&mut self, id: u32) {
        self.ever.insert(id);
        self.freed.retain(|&f| f != id);
        while self.ever.contains(&self.never_below) {
            self.never_below += 1;
        }
    }

    /// `id` is no longer in use.
    fn free(&mut self, id: u32) {
        self.ever.insert(id);
        self.freed.retain(|&f| f != id);
        self.freed.push_back(id);
    }

    /// The next id for a new owner.
    fn next(&mut self) -> Option<u32> {
        let id = if self.never_below < self.max {
            self.never_below
        } else {
            *self.freed.front()?
        };
        self.take_id(id);
        Some(id)
    }
}

#[derive(Clone, Debug)]
pub struct Ids {
    listeners: BTreeMap<VipKey, u32>,
    backends: BTreeMap<BackendSlot, u32>,
    /// Generation of each backend id ever handed out.
    generations: BTreeMap<u32, u32>,
    listener_pool: Pool,
    backend_pool: Pool,
    /// Ids handed to a new owner whose counters were not zeroed yet.
    fresh_listeners: BTreeSet<u32>,
    fresh_backends: BTreeSet<u32>,
    /// Backend ids freed (and not handed out again) whose dataplane entry
    /// was not marked retired yet (see [`Ids::retired_backends`]).
    retired_backends: BTreeSet<u32>,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            listeners: BTreeMap::new(),
            backends: BTreeMap::new(),
            generations: BTreeMap::new(),
            listener_pool: Pool::new(MAX_LISTENERS),
            backend_pool: Pool::new(MAX_BACKENDS),
            fresh_listeners: BTreeSet::new(),
            fresh_backends: BTreeSet::new(),
            retired_backends: BTreeSet::new(),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("more than {0} L4 listeners")]
    Listeners(u32),
    #[error("more than {0} backends in all")]
    Backends(u32),
}

impl Ids {
    /// Assigns ids for exactly these listeners and backends, keeping the
    /// ids of those seen before and forgetting the rest.
    pub fn assign(
        &mut self,
        listeners: &[VipKey],
        backends: &[BackendSlot],
    ) -> Result<(), IdError> {
        let keep_l: BTreeSet<&VipKey> = listeners.iter().collect();
        let pool = &mut self.listener_pool;
        self.listeners.retain(|k, id| {
            let keep = keep_l.contains(k);
            if !keep {
                pool.free(*id);
            }
            keep
        });
        for key in listeners {
            if !self.listeners.contains_key(key) {
                let id = self
                    .listener_pool
                    .next()
                    .ok_or(IdError::Listeners(MAX_LISTENERS))?;
                self.listeners.insert(*key, id);
                self.fresh_listeners.insert(id);
            }
        }

        let keep_b: BTreeSet<&BackendSlot> = backends.iter().collect();
        let pool = &mut self.backend_pool;
        let retired = &mut self.retired_backends;
        self.backends.retain(|k, id| {
            let keep = keep_b.contains(k);
            if !keep {
                pool.free(*id);
                retired.insert(*id);
            }
            keep
        });
        for key in backends {
            if !self.backends.contains_key(key) {
                let id = self
                    .backend_pool
                    .next()
                    .ok_or(IdError::Backends(MAX_BACKENDS))?;
                self.backends.insert(*key, id);
                self.fresh_backends.insert(id);
                self.retired_backends.remove(&id);
                // A fresh owner of this id: bump its generation.
                *self.generations.entry(id).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    pub fn listener(&self, key: &VipKey) -> Option<u32> {
        self.listeners.get(key).copied()
    }

    /// Every backend id in use.
    pub fn backend_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.backends.values().copied()
    }

    pub fn backend(&self, key: &BackendSlot) -> Option<(u32, u32)> {
        let id = *self.backends.get(key)?;
        Some((id, self.generations.get(&id).copied().unwrap_or(1)))
    }

    /// Listener and backend ids handed to a new owner since the last
    /// [`Ids::counted_afresh`]: their counters may still hold a previous
    /// owner's numbers (of this run, or of a run whose pinned maps were
    /// adopted), which the new owner must not show.
    pub fn fresh(&self) -> (Vec<u32>, Vec<u32>) {
        (
            self.fresh_listeners.iter().copied().collect(),
            self.fresh_backends.iter().copied().collect(),
        )
    }

    /// Backend ids that lost their backend (removed by a reload, or not
    /// configured any more when pinned state was adopted) and whose
    /// dataplane entry still describes it as taking new flows. Its flows
    /// run on until idle (as IPVS keeps a deleted real server's
    /// connections), but nothing may send it new ones: a source-IP
    /// persistence pin would. The applier marks them drained.
    pub fn retired_backends(&self) -> Vec<u32> {
        self.retired_backends.iter().copied().collect()
    }

    /// The entries of the ids [`Ids::retired_backends`] returned were
    /// marked drained.
    pub fn retirement_written(&mut self) {
        self.retired_backends.clear();
    }

    /// The counters of the ids [`Ids::fresh`] returned were zeroed.
    pub fn counted_afresh(&mut self) {
        self.fresh_listeners.clear();
        self.fresh_backends.clear();
    }

    /// Generation to start from for an id, when adopting pinned state
    /// written by a previous run: keeps generations increasing. The id
    /// counts as used before (and free, unless preassigned).
    pub fn seed_generation(&mut self, id: u32, generation: u32) {
        let g = self.generations.entry(id).or_insert(0);
        *g = (*g).max(generation);
        if !self.backends.values().any(|&b| b == id) {
            self.backend_pool.free(id);
            self.retired_backends.insert(id);
        }
    }

    /// Keeps the id a listener had in adopted pinned state (the next
    /// `assign` frees it if the listener is no longer configured).
    pub fn preassign_listener(&mut self, key: VipKey, id: u32) {
        self.listener_pool.take_id(id);
        self.listeners.insert(key, id);
    }

    /// Keeps the id and generation a backend had in adopted pinned state,
    /// so its flows stay pinned to it across an agent restart.
    pub fn preassign_backend(&mut self, key: BackendSlot, id: u32, generation: u32) {
        self.backend_pool.take_id(id);
        self.backends.insert(key, id);
        self.generations.insert(id, generation);
        // Seeded as free a moment ago: it is kept, not retired.
        self.retired_backends.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of a listener on port `port` of one VIP.
    fn vk(port: u16) -> VipKey {
        VipKey {
            port,
            ..VipKey::default()
        }
    }

    fn bk(port: u16, a: &str) -> BackendSlot {
        BackendSlot {
            service: vk(port),
            addr: a.parse().unwrap(),
        }
    }

    #[test]
    fn unchanged_entries_keep_their_ids() {
        let mut ids = Ids::default();
        let b = [
            bk(80, "10.0.1.1:80"),
            bk(80, "10.0.1.2:80"),
            bk(80, "10.0.1.3:80"),
        ];
        ids.assign(&[vk(80), vk(53)], &b).unwrap();
        let before: Vec<_> = b.iter().map(|k| ids.backend(k).unwrap()).collect();
        // Remove the middle backend, add a new one and a listener.
        let b2 = [
            bk(80, "10.0.1.1:80"),
            bk(80, "10.0.1.3:80"),
            bk(80, "10.0.1.4:80"),
        ];
        ids.assign(&[vk(53), vk(80), vk(8080)], &b2).unwrap();
        assert_eq!(ids.backend(&b2[0]).unwrap(), before[0]);
        assert_eq!(ids.backend(&b2[1]).unwrap(), before[2]);
        assert_eq!(ids.listener(&vk(80)), Some(0));
        assert_eq!(ids.listener(&vk(53)), Some(1));
        assert_eq!(ids.listener(&vk(8080)), Some(2));
        // The new backend gets an id never used, not the freed one.
        assert_eq!(ids.backend(&b2[2]).unwrap(), (3, 1));
    }

    #[test]
    fn freed_ids_are_reused_last_least_recently_freed_first() {
        let mut ids = Ids {
            backend_pool: Pool::new(4),
            ..Ids::default()
        };
        let all: Vec<_> = (1..=4).map(|i| bk(80, &format!("10.0.1.{i}:80"))).collect();
        ids.assign(&[vk(80)], &all).unwrap();
        // Free 2, then 0 (a later reload).
        ids.assign(&[vk(80)], &[all[0], all[1], all[3]]).unwrap();
        ids.assign(&[vk(80)], &[all[1], all[3]]).unwrap();
        let new: Vec<_> = (5..=6).map(|i| bk(80, &format!("10.0.1.{i}:80"))).collect();
        ids.assign(&[vk(80)], &[all[1], all[3], new[0]]).unwrap();
        assert_eq!(ids.backend(&new[0]), Some((2, 2)), "freed first");
        let mut keys = vec![all[1], all[3], new[0], new[1]];
        ids.assign(&[vk(80)], &keys).unwrap();
        assert_eq!(ids.backend(&new[1]), Some((0, 2)));
        keys.push(bk(80, "10.0.1.7:80"));
        assert_eq!(
            ids.assign(&[vk(80)], &keys),
            Err(IdError::Backends(MAX_BACKENDS))
        );
    }

    #[test]
    fn removed_backends_are_reported_until_their_retirement_is_written() {
        let mut ids = Ids {
            backend_pool: Pool::new(2),
            ..Ids::default()
        };
        let a = bk(80, "10.0.1.1:80");
        let b = bk(80, "10.0.1.2:80");
        ids.assign(&[vk(80)], &[a, b]).unwrap();
        assert!(ids.retired_backends().is_empty());
        ids.assign(&[vk(80)], &[a]).unwrap();
        assert_eq!(ids.retired_backends(), vec![1]);
        ids.retirement_written();
        assert!(ids.retired_backends().is_empty());
        // Freed, then handed to a new backend before the applier wrote it:
        // the new owner's entry is written, not retired.
        ids.assign(&[vk(80)], &[]).unwrap();
        assert_eq!(ids.retired_backends(), vec![0]);
        let (c, d) = (bk(80, "10.0.1.3:80"), bk(80, "10.0.1.4:80"));
        ids.assign(&[vk(80)], &[c]).unwrap();
        assert_eq!(ids.backend(&c).map(|(id, _)| id), Some(1));
        assert_eq!(ids.retired_backends(), vec![0]);
        ids.assign(&[vk(80)], &[c, d]).unwrap();
        assert_eq!(ids.retired_backends(), Vec::<u32>::new());
    }

    #[test]
    fn ids_handed_to_new_owners_are_reported_until_counted_afresh() {
        let mut ids = Ids::default();
        let a = bk(80, "10.0.1.1:80");
        ids.assign(&[vk(80)], std::slice::from_ref(&a)).unwrap();
        assert_eq!(ids.fresh(), (vec![0], vec![0]));
        ids.counted_afresh();
        ids.assign(&[vk(80)], std::slice::from_ref(&a)).unwrap();
        assert_eq!(ids.fresh(), (vec![], vec![]));
        ids.assign(&[vk(80), vk(53)], &[a, bk(53, "10.0.1.1:53")])
            .unwrap();
        assert_eq!(ids.fresh(), (vec![1], vec![1]));
    }

    #[test]
    fn preassigned_ids_survive_assignment() {
        let mut ids = Ids::default();
        ids.seed_generation(0, 7);
        ids.seed_generation(9, 3);
        ids.preassign_listener(vk(80), 5);
        // A listener of the previous run that is no longer configured.
        ids.preassign_listener(vk(81), 1);
        ids.preassign_backend(bk(80, "10.0.1.2:80"), 9, 4);
        ids.assign(
            &[vk(80), vk(53)],
            &[bk(80, "10.0.1.1:80"), bk(80, "10.0.1.2:80")],
        )
        .unwrap();
        assert_eq!(ids.listener(&vk(80)), Some(5));
        assert_eq!(ids.backend(&bk(80, "10.0.1.2:80")), Some((9, 4)));
        // Ids the previous run used are not handed out while others are
        // free; kept ones are not reported for zeroing.
        assert_eq!(ids.listener(&vk(53)), Some(0));
        assert_eq!(ids.backend(&bk(80, "10.0.1.1:80")), Some((1, 1)));
        assert_eq!(ids.fresh(), (vec![0], vec![1]));
        // The kept backend is not drained; the one not configured any more
        // is.
        assert_eq!(ids.retired_backends(), vec![0]);
    }

    #[test]
    fn limits_are_enforced() {
        let mut ids = Ids::default();
        let keys: Vec<VipKey> = (0..=MAX_LISTENERS).map(|i| vk(i as u16)).collect();
        assert_eq!(
            ids.assign(&keys, &[]),
            Err(IdError::Listeners(MAX_LISTENERS))
        );
    }
}
