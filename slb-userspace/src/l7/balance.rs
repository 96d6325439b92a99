//! Schedulers of the proxy: which backend of a group gets a request.
//!
//! * `wrr` — smooth weighted round robin (as nginx): over any run of
//!   requests each backend's share follows its weight, interleaved.
//! * `wlc` — weighted least in-flight requests: the lowest
//!   `in_flight / weight`; ties are broken by weighted round robin so that
//!   an idle group still follows the weights.
//! * `hash` — consistent hashing on a request key (weighted rendezvous
//!   hashing): the same key goes to the same backend while it is usable;
//!   removing a backend moves only the keys it had. A request without the
//!   key falls back to round robin (as HAProxy's `balance hdr()` does).
//!
//! Weight 0 drains: such a backend gets no new request from any scheduler
//! (persistence may still send its clients there). Pure: the caller says
//! which backends are usable (healthy, not tried yet) and how many requests
//! each has in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Which scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Wrr,
    Wlc,
    Hash,
}

#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    weights: Vec<u32>,
    /// Per-backend seed of the rendezvous hash (from its address), so that
    /// two proxies with the same configuration agree.
    seeds: Vec<u64>,
    /// Smooth-WRR running weights.
    current: Mutex<Vec<i64>>,
    /// Rotates the fallback when the WRR state lock is poisoned.
    fallback: AtomicUsize,
}

impl Balancer {
    /// `backends`: a stable name (the address) and the weight of each.
    pub fn new(algorithm: Algorithm, backends: &[(String, u32)]) -> Self {
        Self {
            algorithm,
            weights: backends.iter().map(|(_, w)| *w).collect(),
            seeds: backends
                .iter()
                .map(|(n, _)| hash_bytes(n.as_bytes()))
                .collect(),
            current: Mutex::new(vec![0; backends.len()]),
            fallback: AtomicUsize::new(0),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Picks a backend among those with `usable[i]` (and weight > 0).
    /// `in_flight[i]`: requests in progress (for `wlc`); `key`: the hash of
    /// the request's hash key (for `hash`; `None` when the request has none).
    pub fn pick(&self, usable: &[bool], in_flight: &[usize], key: Option<u64>) -> Option<usize> {
        self.pick_by(
            &|i| usable.get(i).copied().unwrap_or(false),
            &|i| in_flight.get(i).copied().unwrap_or(0),
            key,
        )
    }

    /// [`Balancer::pick`] with the usable backends and their requests in
    /// progress given as functions of the backend's index.
    pub fn pick_by(
        &self,
        usable: &dyn Fn(usize) -> bool,
        in_flight: &dyn Fn(usize) -> usize,
        key: Option<u64>,
    ) -> Option<usize> {
        let ok = |i: usize| self.weights[i] > 0 && usable(i);
        match self.algorithm {
            Algorithm::Wrr => self.wrr(&ok),
            Algorithm::Hash => match key {
                Some(k) => self.rendezvous(k, &ok),
                None => self.wrr(&ok),
            },
            Algorithm::Wlc => {
                // One snapshot: the counts move while requests run.
                let loads: Vec<u128> = (0..self.len()).map(|i| in_flight(i) as u128).collect();
                let load = |i: usize| loads[i];
                // The least in_flight/weight, compared without division.
                let best = (0..self.len()).filter(|&i| ok(i)).min_by(|&a, &b| {
                    (load(a) * u128::from(self.weights[b]))
                        .cmp(&(load(b) * u128::from(self.weights[a])))
                })?;
                let tied = |i: usize| {
                    ok(i)
                        && load(i) * u128::from(self.weights[best])
                            == load(best) * u128::from(self.weights[i])
                };
                self.wrr(&tied)
            }
        }
    }

    /// Smooth weighted round robin over the backends `ok` admits.
    fn wrr(&self, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let Ok(mut current) = self.current.lock() else {
            // Only a panic while holding the lock poisons it; rotate.
            let n = self.len().max(1);
            let start = self.fallback.fetch_add(1, Ordering::Relaxed);
            return (0..n).map(|j| (start + j) % n).find(|&i| ok(i));
        };
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for i in 0..self.len() {
            if !ok(i) {
                continue;
            }
            let w = i64::from(self.weights[i]);
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }

    /// Weighted rendezvous hashing: the highest `w / -ln(u)`, with `u`
    /// uniform in (0, 1) from the key and the backend's seed.
    fn rendezvous(&self, key: u64, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(f64, usize)> = None;
        for i in 0..self.len() {
            if !ok(i) {
                continue;
            }
            let h = mix(key ^ self.seeds[i]);
            // 53 random bits, offset by half a step so that u is never 0 or 1.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = f64::from(self.weights[i]) / -u.ln();
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

/// FNV-1a, finished with [`mix`]: a stable 64-bit hash of a request key.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// The splitmix64 finalizer: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[u32]) -> Vec<(String, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("10.0.0.{}:80", i + 1), *w))
            .collect()
    }

    fn counts(b: &Balancer, usable: &[bool], n: usize) -> Vec<usize> {
        let mut c = vec![0; b.len()];
        for _ in 0..n {
            c[b.pick(usable, &vec![0; b.len()], None).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn wrr_follows_weights_and_interleaves() {
        let b = Balancer::new(Algorithm::Wrr, &backends(&[5, 1, 1]));
        let all = [true; 3];
        let seq: Vec<usize> = (0..7)
            .map(|_| b.pick(&all, &[0; 3], None).unwrap())
            .collect();
        // nginx's smooth WRR for {5,1,1}: a a b a c a a.
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, &all, 700), [500, 100, 100]);
    }

    #[test]
    fn weight_zero_and_unusable_get_nothing() {
        let b = Balancer::new(Algorithm::Wrr, &backends(&[1, 0, 1]));
        assert_eq!(counts(&b, &[true; 3], 100), [50, 0, 50]);
        assert_eq!(counts(&b, &[false, true, true], 10), [0, 0, 10]);
        assert_eq!(b.pick(&[false, true, false], &[0; 3], None), None);
    }

    #[test]
    fn wlc_prefers_least_loaded_per_weight() {
        let b = Balancer::new(Algorithm::Wlc, &backends(&[1, 2, 1]));
        let all = [true; 3];
        // 2 in flight on a weight-2 backend equals 1 on a weight-1 one.
        assert_eq!(b.pick(&all, &[1, 2, 0], None), Some(2));
        assert_eq!(b.pick(&all, &[3, 4, 5], None), Some(1));
        // Idle: ties follow the weights.
        let mut c = [0; 3];
        for _ in 0..400 {
            c[b.pick(&all, &[0; 3], None).unwrap()] += 1;
        }
        assert_eq!(c, [100, 200, 100]);
        // Draining (weight 0) or down backends are skipped even when idle.
        let d = Balancer::new(Algorithm::Wlc, &backends(&[0, 1]));
        assert_eq!(d.pick(&[true, true], &[0, 50], None), Some(1));
        assert_eq!(d.pick(&[true, false], &[0, 0], None), None);
    }

    #[test]
    fn hash_is_sticky_and_moves_little() {
        let b = Balancer::new(Algorithm::Hash, &backends(&[1, 1, 1, 1]));
        let all = [true; 4];
        let keys: Vec<u64> = (0..2000)
            .map(|i| hash_bytes(format!("user{i}").as_bytes()))
            .collect();
        let first: Vec<usize> = keys
            .iter()
            .map(|k| b.pick(&all, &[0; 4], Some(*k)).unwrap())
            .collect();
        let again: Vec<usize> = keys
            .iter()
            .map(|k| b.pick(&all, &[0; 4], Some(*k)).unwrap())
            .collect();
        assert_eq!(first, again);
        let mut share = [0; 4];
        for &i in &first {
            share[i] += 1;
        }
        assert!(share.iter().all(|&s| (400..600).contains(&s)), "{share:?}");
        // Backend 2 down: only its keys move.
        let some = [true, true, false, true];
        for (k, &before) in keys.iter().zip(&first) {
            let after = b.pick(&some, &[0; 4], Some(*k)).unwrap();
            if before != 2 {
                assert_eq!(after, before);
            } else {
                assert_ne!(after, 2);
            }
        }
        // Same config elsewhere: same answers.
        let other = Balancer::new(Algorithm::Hash, &backends(&[1, 1, 1, 1]));
        assert_eq!(other.pick(&all, &[0; 4], Some(keys[7])), Some(first[7]));
    }

    #[test]
    fn hash_follows_weights_and_falls_back_without_key() {
        let b = Balancer::new(Algorithm::Hash, &backends(&[3, 1]));
        let mut share = [0; 2];
        for i in 0..4000 {
            let k = hash_bytes(format!("k{i}").as_bytes());
            share[b.pick(&[true; 2], &[0; 2], Some(k)).unwrap()] += 1;
        }
        assert!((2800..3200).contains(&share[0]), "{share:?}");
        // No key: round robin.
        let c = counts(&b, &[true; 2], 8);
        assert_eq!(c, [6, 2]);
    }
}
