//! One listener's lookup table for its scheduler.
use crate::config::Scheduler;
use crate::sched::{maglev, wrr, MaglevBackend, SchedError};
use std::{collections::BTreeMap, sync::Arc};

/// A listener's lookup table (backend id per slot), shared rather than
/// copied between the plan, the cache and the record of what each table
/// half holds (the applier's state is cloned for every change, to roll
/// back to).
pub type Table = Arc<Vec<u32>>;

/// A backend that may receive new flows (up, weight > 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u32,
    pub key: String,
    pub weight: u32,
}

/// The table the XDP program indexes for new flows: Maglev (`maglev`, and
/// `sh` with a source-address hash) has exactly `ring_size` slots; `wrr`
/// is one period of the smooth weighted sequence (at most `ring_size`);
/// `wlc` lists each live backend once (the program compares their active
/// flows per weight).
pub fn build(
    scheduler: Scheduler,
    live: &[Candidate],
    ring_size: u32,
) -> Result<Vec<u32>, SchedError> {
    // Configuration validation refuses this; checked here as well because
    // the agent writes the table at a fixed offset with no bound of its
    // own, and an overlong one would corrupt another listener's table.
    if live.len() > ring_size as usize {
        return Err(SchedError::TooManyBackends {
            backends: live.len(),
            size: ring_size,
        });
    }
    match scheduler {
        Scheduler::Maglev | Scheduler::Sh => {
            let backends: Vec<MaglevBackend> = live
                .iter()
                .map(|c| MaglevBackend {
                    id: c.id,
                    key: c.key.clone(),
                    weight: c.weight,
                })
                .collect();
            maglev::build(&backends, ring_size)
        }
        Scheduler::Wrr => {
            let pairs: Vec<(u32, u32)> = live.iter().map(|c| (c.id, c.weight)).collect();
            Ok(wrr::build(&pairs, ring_size))
        }
        Scheduler::Wlc => Ok(live.iter().map(|c| c.id).collect()),
    }
}

/// Everything a table is built from: [`build`] is a function of it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Input {
    scheduler: Scheduler,
    ring_size: u32,
    live: Vec<Candidate>,
}

/// The tables of the last plan by listener id, with what each was built
/// from. A Maglev table takes milliseconds to build (65537 slots by
/// default), and every health change and reload plans every listener: a
/// listener whose backends, weights and health did not change gets its
/// table from here instead of having it built again.
#[derive(Clone, Debug, Default)]
pub struct TableCache {
    tables: BTreeMap<u32, (Input, Table)>,
    /// Listener ids whose table the plan that made this cache built.
    built: Vec<u32>,
}

impl TableCache {
    /// Listener ids whose table had to be built by the plan that made this
    /// cache (the others were unchanged).
    pub fn built(&self) -> &[u32] {
        &self.built
    }

    /// The table of listener `id` for `live` backends: the cached one when
    /// it was built from the same input, else a new one. `next` collects
    /// the tables of this plan (the cache of the next one).
    pub(super) fn table(
        &self,
        next: &mut TableCache,
        id: u32,
        scheduler: Scheduler,
        live: Vec<Candidate>,
        ring_size: u32,
    ) -> Result<Table, SchedError> {
        let input = Input {
            scheduler,
            ring_size,
            live,
        };
        let table = match self.tables.get(&id) {
            Some((old, table)) if *old == input => table.clone(),
            _ => {
                next.built.push(id);
                Arc::new(build(scheduler, &input.live, ring_size)?)
            }
        };
        next.tables.insert(id, (input, table.clone()));
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::NO_BACKEND;

    fn candidates(n: u32) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                id: i,
                key: format!("10.1.{}.{}:80", i / 256, i % 256),
                weight: 1,
            })
            .collect()
    }

    /// Each table has `ring_size` slots of the lookup-table map: a longer
    /// one would be written over the neighbouring half (another
    /// listener's live table), and a Maglev table would silently leave
    /// backends out.
    #[test]
    fn more_backends_than_slots_is_an_error() {
        let over = candidates(1022);
        for s in [Scheduler::Maglev, Scheduler::Sh, Scheduler::Wrr] {
            assert_eq!(
                build(s, &over, 1021),
                Err(SchedError::TooManyBackends {
                    backends: 1022,
                    size: 1021
                }),
                "{s:?}"
            );
            let fits = build(s, &candidates(1021), 1021).expect("fits");
            assert!(fits.len() <= 1021);
            assert!(!fits.contains(&NO_BACKEND));
        }
    }
}
