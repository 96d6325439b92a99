//! Stable ids for listeners and backends.
//!
//! The XDP program addresses listeners and backends by index (stats,
//! lookup tables, flow entries). A reload must not renumber what did not
//! change: a flow remembers its backend id, and a renumbered backend would
//! silently receive another backend's flows. Freed ids are reused only
//! after every other free id (lowest first), and a reused backend id gets
//! a new generation so flows still pinned to its previous owner are
//! re-scheduled instead of following the id.
use slb_common::limits::{MAX_BACKENDS, MAX_LISTENERS};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

/// A backend's identity: its listener's name and its address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub listener: String,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, Default)]
pub struct Ids {
    listeners: BTreeMap<String, u32>,
    backends: BTreeMap<BackendKey, u32>,
    /// Generation of each backend id ever handed out.
    generations: BTreeMap<u32, u32>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("more than {0} L4 listeners")]
    Listeners(u32),
    #[error("more than {0} backends in all")]
    Backends(u32),
}

fn lowest_free(used: &BTreeSet<u32>, max: u32) -> Option<u32> {
    (0..max).find(|i| !used.contains(i))
}

impl Ids {
    /// Assigns ids for exactly these listeners and backends, keeping the
    /// ids of those seen before and forgetting the rest.
    pub fn assign(&mut self, listeners: &[String], backends: &[BackendKey]) -> Result<(), IdError> {
        let keep_l: BTreeSet<&String> = listeners.iter().collect();
        self.listeners.retain(|k, _| keep_l.contains(k));
        let mut used: BTreeSet<u32> = self.listeners.values().copied().collect();
        for name in listeners {
            if !self.listeners.contains_key(name) {
                let id =
                    lowest_free(&used, MAX_LISTENERS).ok_or(IdError::Listeners(MAX_LISTENERS))?;
                used.insert(id);
                self.listeners.insert(name.clone(), id);
            }
        }

        let keep_b: BTreeSet<&BackendKey> = backends.iter().collect();
        self.backends.retain(|k, _| keep_b.contains(k));
        let mut used: BTreeSet<u32> = self.backends.values().copied().collect();
        for key in backends {
            if !self.backends.contains_key(key) {
                let id = lowest_free(&used, MAX_BACKENDS).ok_or(IdError::Backends(MAX_BACKENDS))?;
                used.insert(id);
                self.backends.insert(key.clone(), id);
                // A fresh owner of this id: bump its generation.
                *self.generations.entry(id).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    pub fn listener(&self, name: &str) -> Option<u32> {
        self.listeners.get(name).copied()
    }

    /// Every backend id in use.
    pub fn backend_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.backends.values().copied()
    }

    pub fn backend(&self, key: &BackendKey) -> Option<(u32, u32)> {
        let id = *self.backends.get(key)?;
        Some((id, self.generations.get(&id).copied().unwrap_or(1)))
    }

    /// Generation to start from for an id, when adopting pinned state
    /// written by a previous run: keeps generations increasing.
    pub fn seed_generation(&mut self, id: u32, generation: u32) {
        let g = self.generations.entry(id).or_insert(0);
        *g = (*g).max(generation);
    }

    /// Keeps the id a listener had in adopted pinned state.
    pub fn preassign_listener(&mut self, name: &str, id: u32) {
        self.listeners.insert(name.to_owned(), id);
    }

    /// Keeps the id and generation a backend had in adopted pinned state,
    /// so its flows stay pinned to it across an agent restart.
    pub fn preassign_backend(&mut self, key: BackendKey, id: u32, generation: u32) {
        self.backends.insert(key, id);
        self.generations.insert(id, generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bk(l: &str, a: &str) -> BackendKey {
        BackendKey {
            listener: l.into(),
            addr: a.parse().unwrap(),
        }
    }

    #[test]
    fn unchanged_entries_keep_their_ids() {
        let mut ids = Ids::default();
        let b = [
            bk("web", "10.0.1.1:80"),
            bk("web", "10.0.1.2:80"),
            bk("web", "10.0.1.3:80"),
        ];
        ids.assign(&["web".into(), "dns".into()], &b).unwrap();
        let before: Vec<_> = b.iter().map(|k| ids.backend(k).unwrap()).collect();
        // Remove the middle backend, add a new one and a listener.
        let b2 = [
            bk("web", "10.0.1.1:80"),
            bk("web", "10.0.1.3:80"),
            bk("web", "10.0.1.4:80"),
        ];
        ids.assign(&["dns".into(), "web".into(), "new".into()], &b2)
            .unwrap();
        assert_eq!(ids.backend(&b2[0]).unwrap(), before[0]);
        assert_eq!(ids.backend(&b2[1]).unwrap(), before[2]);
        assert_eq!(ids.listener("web"), Some(0));
        assert_eq!(ids.listener("dns"), Some(1));
        assert_eq!(ids.listener("new"), Some(2));
        // The new backend reuses the freed id with a new generation.
        let (id, gen) = ids.backend(&b2[2]).unwrap();
        assert_eq!(id, before[1].0);
        assert_eq!(gen, before[1].1 + 1);
    }

    #[test]
    fn preassigned_ids_survive_assignment() {
        let mut ids = Ids::default();
        ids.seed_generation(0, 7);
        ids.preassign_listener("web", 5);
        ids.preassign_backend(bk("web", "10.0.1.2:80"), 9, 4);
        ids.assign(
            &["web".into()],
            &[bk("web", "10.0.1.1:80"), bk("web", "10.0.1.2:80")],
        )
        .unwrap();
        assert_eq!(ids.listener("web"), Some(5));
        assert_eq!(ids.backend(&bk("web", "10.0.1.2:80")), Some((9, 4)));
        // A new backend on a previously used id continues its generations.
        assert_eq!(ids.backend(&bk("web", "10.0.1.1:80")), Some((0, 8)));
    }

    #[test]
    fn limits_are_enforced() {
        let mut ids = Ids::default();
        let names: Vec<String> = (0..=MAX_LISTENERS).map(|i| format!("l{i}")).collect();
        assert_eq!(
            ids.assign(&names, &[]),
            Err(IdError::Listeners(MAX_LISTENERS))
        );
    }
}
