//! The two lookup-table halves of each listener.
//!
//! The XDP program reads slot `ring_base + hash % ring_size` of `RING`. Rewriting
//! the live table in place would expose a half-written table to packets;
//! instead the new table goes into the spare half, then one listener-entry
//! update points `ring_base` at it. The next change reuses the other half.
use std::collections::BTreeMap;

use super::Table;
use slb_common::limits::RINGS_PER_LISTENER;

#[derive(Clone, Debug, Default)]
struct Halves {
    live: usize,
    /// What each half holds, as far as this process wrote it (`None` =
    /// unknown, e.g. adopted from a previous run: written in full).
    content: [Option<Table>; 2],
}

#[derive(Clone, Debug, Default)]
pub struct Rings {
    by_listener: BTreeMap<u32, Halves>,
}

/// What to write for one listener's table change.
#[derive(Debug, PartialEq, Eq)]
pub struct RingSwap {
    /// The half to write (0 or 1).
    pub half: usize,
    /// First slot of the half to write.
    pub base: u32,
    /// What that half held before (write only the differences), if known.
    pub previous: Option<Table>,
}

impl Rings {
    /// Slot offset of `half` of listener `id` with tables of `ring_size`.
    pub fn base(id: u32, half: usize, ring_size: u32) -> u32 {
        (id * RINGS_PER_LISTENER + half as u32) * ring_size
    }

    /// The live table of listener `id`, if it was written by this process.
    pub fn live(&self, id: u32) -> Option<(u32, &[u32])> {
        let h = self.by_listener.get(&id)?;
        h.content[h.live]
            .as_deref()
            .map(|c| (h.live as u32, c.as_slice()))
    }

    /// Where to write `table` for listener `id`: `None` when the live half
    /// already holds exactly this table.
    pub fn prepare(&self, id: u32, table: &[u32], ring_size: u32) -> Option<RingSwap> {
        let h = self.by_listener.get(&id);
        if let Some(h) = h {
            if h.content[h.live].as_deref().map(Vec::as_slice) == Some(table) {
                return None;
            }
        }
        // With no live table known, half 0 is free; an adopted listener
        // has its live half recorded (content unknown) and gets the other.
        let spare = h.map_or(0, |h| 1 - h.live);
        Some(RingSwap {
            half: spare,
            base: Self::base(id, spare, ring_size),
            previous: h.and_then(|h| h.content[spare].clone()),
        })
    }

    /// Records that `table` was written to `half` and made live.
    pub fn committed(&mut self, id: u32, half: usize, table: Table) {
        let h = self.by_listener.entry(id).or_default();
        h.content[half] = Some(table);
        h.live = half;
    }

    /// Records the live half of a listener found in adopted pinned state
    /// (its content unknown), so the first write goes to the other half.
    pub fn adopt(&mut self, id: u32, live_half: usize) {
        self.by_listener.insert(
            id,
            Halves {
                live: live_half,
                content: [None, None],
            },
        );
    }

    /// Current `ring_base` of listener `id`.
    pub fn live_base(&self, id: u32, ring_size: u32) -> u32 {
        let half = self.by_listener.get(&id).map_or(0, |h| h.live);
        Self::base(id, half, ring_size)
    }

    /// Forgets what the spare halves hold: after a change was rolled back,
    /// they may hold the tables it wrote (the next table written there is
    /// then written in full).
    pub fn forget_spares(&mut self) {
        for h in self.by_listener.values_mut() {
            h.content[1 - h.live] = None;
        }
    }

    pub fn forget(&mut self, id: u32) {
        self.by_listener.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn alternates_halves_and_skips_identical_tables() {
        let mut r = Rings::default();
        let s = r.prepare(3, &[1, 2, 3], 7).unwrap();
        assert_eq!(
            s,
            RingSwap {
                half: 0,
                base: 42,
                previous: None
            }
        );
        r.committed(3, s.half, Arc::new(vec![1, 2, 3]));
        assert_eq!(r.live_base(3, 7), 42);
        assert!(r.prepare(3, &[1, 2, 3], 7).is_none());
        let s = r.prepare(3, &[1, 1, 3], 7).unwrap();
        assert_eq!(
            s,
            RingSwap {
                half: 1,
                base: 49,
                previous: None
            }
        );
        r.committed(3, s.half, Arc::new(vec![1, 1, 3]));
        assert_eq!(r.live_base(3, 7), 49);
        // Back to the first half, which still holds the first table.
        let s = r.prepare(3, &[2, 2, 2], 7).unwrap();
        assert_eq!(
            s,
            RingSwap {
                half: 0,
                base: 42,
                previous: Some(Arc::new(vec![1, 2, 3]))
            }
        );
    }

    #[test]
    fn adopted_listener_writes_the_other_half_first() {
        let mut r = Rings::default();
        r.adopt(1, 0);
        let s = r.prepare(1, &[5], 7).unwrap();
        assert_eq!(
            s,
            RingSwap {
                half: 1,
                base: 21,
                previous: None
            }
        );
    }
}
