//! One listener's lookup table for its scheduler.
use crate::config::Scheduler;
use crate::sched::{maglev, wrr, MaglevBackend, SchedError};

/// A backend that may receive new flows (up, weight > 0).
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
