//! Weighted round-robin sequences (nginx's "smooth" WRR).
//!
//! Why a precomputed sequence: the XDP program has no lock and no shared
//! scheduler state; it walks this table with a per-CPU counter
//! (`table[counter++ % len]`). Each CPU therefore sees the exact weighted
//! proportions over one period, and the overall mix is the sum of the CPUs.
//!
//! Why *smooth* WRR rather than "w copies of each backend": for weights
//! A=5, B=1, C=1 the naive sequence `AAAAABC` sends a burst of new
//! connections to A; the smooth one is `AABACAA`. Bursts matter because the
//! per-CPU counters run independently, so many CPUs can be inside the same
//! burst at once.
//!
//! Why not plain nginx SWRR: it can put a backend with less than half of
//! the weight twice in a row, and usually does so across the end of the
//! period, which the per-CPU counter walks through like any other step (for
//! all weight vectors of up to 5 backends with weights 1..=12: 6 % repeat
//! inside the period, 78 % at the wrap). The builder keeps nginx's credit
//! rule but adds per-period quotas and a no-repeat constraint; measured, a
//! backend is never more than about one entry ahead of or behind its ideal
//! share at any point of the sequence.
//!
//! Why the period is reduced by the gcd and capped: the sequence lives in a
//! fixed-size map slice, and a shorter period means every CPU hits the exact
//! proportions sooner.

/// Longest sequence ever built; a larger `max_len` is treated as this.
/// Far above any dataplane table, and it keeps the credit arithmetic of the
/// builder inside `i64` (|credit| ≤ length · weight ≤ 2^48).
pub const MAX_LEN: u32 = 1 << 24;

/// Builds one period of the smooth weighted round-robin sequence.
///
/// `backends` are `(id, weight)` pairs; weight 0 = absent. The length is
/// `Σw / gcd(w)`. If that exceeds `max_len` (itself capped at [`MAX_LEN`]),
/// weights are scaled down proportionally (rounding down, never below 1)
/// so the length fits.
///
/// Guarantees, over one period walked cyclically: every backend appears
/// exactly as often as its (reduced, possibly scaled) weight; a backend
/// with at most half of the total weight never appears twice in a row, the
/// wrap from the last entry to the first included. Ties are broken by input
/// order, so the result is deterministic.
///
/// If more than `max_len` backends have a non-zero weight, no backend is
/// dropped: each appears exactly once and the sequence is longer than
/// `max_len`. Configuration validation keeps backend counts below table
/// sizes, so a caller seeing this should treat it as an error rather than
/// silently serving a subset of the backends.
///
/// No backend with non-zero weight → empty sequence.
pub fn build(backends: &[(u32, u32)], max_len: u32) -> Vec<u32> {
    let live: Vec<(u32, u64)> = backends
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|&(id, w)| (id, u64::from(w)))
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let mut weights: Vec<u64> = live.iter().map(|&(_, w)| w).collect();
    reduce(&mut weights);
    let max_len = u64::from(max_len.min(MAX_LEN));
    if weights.iter().sum::<u64>() > max_len {
        weights = scale(&weights, max_len.max(weights.len() as u64));
        reduce(&mut weights);
    }
    let total: u64 = weights.iter().sum();

    smooth(&weights, total)
        .into_iter()
        .map(|i| live[i].0)
        .collect()
}

/// One period of smooth WRR over `weights` (reduced, summing to `total`),
/// as indices into `weights`.
///
/// nginx's rule: every step, each backend's credit grows by its weight; the
/// one with the most credit is picked and pays `total`. Two additions (see
/// the module comment for why):
///
/// * A backend may only be picked as often as its weight per period (its
///   quota), so the counts are exact by construction.
/// * A backend whose weight is at most half the total is never picked twice
///   in a row, counting the wrap from the last entry to the first. Among the
///   backends with quota left, the one with the most credit is picked unless
///   that would repeat the previous pick or leave a remainder that cannot be
///   arranged without repeats; then the next in credit order is taken.
///
/// Whether the remainder can be arranged is decided in O(1) per candidate:
/// a constrained backend with `r` entries left among `R` positions fits
/// without neighbours iff `2r ≤ R + 1`, minus one for each end it may not
/// take (the first of the remainder if it is the previous pick, the last if
/// it is the first entry of the period). Should the check ever find no
/// candidate (the exhaustive test says it does not), the plain credit
/// winner with quota left is taken, so counts stay exact regardless.
///
/// Cost: one pass over the backends per entry, O(len · n), as in nginx.
fn smooth(weights: &[u64], total: u64) -> Vec<usize> {
    let n = weights.len();
    // At most one backend can weigh more than half; it must repeat.
    let constrained: Vec<bool> = weights.iter().map(|&w| 2 * w <= total).collect();
    let mut quota: Vec<u64> = weights.to_vec();
    // credit_i = step · w_i - total · picks_i with picks_i ≤ w_i ≤ total,
    // so |credit| ≤ total · max(w). Either total ≤ MAX_LEN = 2^24 (and so is
    // every weight), or there are more than 2^24 backends and every weight
    // was scaled to 1: i64 cannot overflow.
    let w64: Vec<i64> = weights
        .iter()
        .map(|&w| i64::try_from(w).unwrap_or(i64::MAX))
        .collect();
    let mut credit = vec![0i64; n];
    let mut seq: Vec<usize> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let total_i = i64::try_from(total).unwrap_or(i64::MAX);
    for step in 0..total {
        // One pass: grow the credits, and note the three largest quotas of
        // constrained backends (enough to know the largest one outside the
        // at most two special backends of the feasibility check) and the
        // four highest credits with quota left (the pick is almost always
        // among them; ties keep input order).
        let mut top_quota: [Option<(u64, usize)>; 3] = [None; 3];
        let mut top_credit: [Option<(i64, usize)>; 4] = [None; 4];
        for (i, (c, &w)) in credit.iter_mut().zip(&w64).enumerate() {
            *c += w;
            if quota[i] == 0 {
                continue;
            }
            if constrained[i] {
                insert_top(&mut top_quota, (quota[i], i));
            }
            insert_top(&mut top_credit, (*c, i));
        }
        // Positions left after this pick.
        let left = total_i - i64::try_from(step).unwrap_or(i64::MAX) - 1;
        let prev = seq.last().copied();
        let first = seq.first().copied();
        let feasible = |i: usize| -> bool {
            if constrained[i] && prev == Some(i) {
                return false;
            }
            let f = first.unwrap_or(i);
            // 2r' ≤ left + 1 - (cannot start) - (cannot end) for every
            // constrained backend; after this pick, `i` cannot start the
            // remainder and `f` cannot end it.
            let fits = |j: usize, r: u64| {
                let ends = i64::from(j == i) + i64::from(j == f);
                let r = i64::try_from(r).unwrap_or(i64::MAX);
                !constrained[j] || 2 * r <= left + 1 - ends
            };
            if !fits(i, quota[i] - 1) || (f != i && !fits(f, quota[f])) {
                return false;
            }
            top_quota
                .iter()
                .flatten()
                .find(|(_, j)| *j != i && *j != f)
                .is_none_or(|&(q, j)| fits(j, q))
        };
        let pick = top_credit
            .iter()
            .flatten()
            .map(|&(_, i)| i)
            .find(|&i| feasible(i))
            .or_else(|| {
                // Rare: scan everyone for the best feasible credit.
                let mut best: Option<usize> = None;
                for i in (0..n).filter(|&i| quota[i] > 0) {
                    if best.is_none_or(|b| credit[i] > credit[b]) && feasible(i) {
                        best = Some(i);
                    }
                }
                best
            })
            .or(top_credit[0].map(|(_, i)| i));
        // Σquota = total - step > 0, so top_credit[0] is always set.
        let Some(pick) = pick else {
            break;
        };
        quota[pick] -= 1;
        credit[pick] -= total_i;
        seq.push(pick);
    }
    seq
}

/// Inserts `item` into `top`, kept sorted by descending key. Equal keys keep
/// their arrival order, so earlier backends win ties.
fn insert_top<T: Copy + PartialOrd, const K: usize>(
    top: &mut [Option<(T, usize)>; K],
    item: (T, usize),
) {
    // Fast path: most items do not make the list.
    if top
        .last()
        .is_some_and(|s| s.is_some_and(|(k, _)| item.0 <= k))
    {
        return;
    }
    let mut cand = Some(item);
    for slot in top.iter_mut() {
        let Some(c) = cand else {
            return;
        };
        if slot.is_none_or(|(k, _)| c.0 > k) {
            cand = slot.replace(c);
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Divides all weights by their gcd (all weights are ≥ 1).
fn reduce(weights: &mut [u64]) {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w));
    if g > 1 {
        weights.iter_mut().for_each(|w| *w /= g);
    }
}

/// Scales weights (all ≥ 1, sum > budget ≥ count) so their sum is at most
/// `budget`, each proportional to the original rounded down, but at least 1.
/// Backends whose share would round to 0 are pinned to 1 and the remaining
/// budget is shared among the others, repeated until nothing rounds to 0.
fn scale(weights: &[u64], budget: u64) -> Vec<u64> {
    let mut out = vec![0u64; weights.len()];
    let mut budget = budget;
    loop {
        let rest: u64 = weights
            .iter()
            .zip(&out)
            .filter(|(_, &o)| o == 0)
            .map(|(&w, _)| w)
            .sum();
        if rest == 0 {
            return out;
        }
        let mut pinned = false;
        for (w, o) in weights.iter().zip(out.iter_mut()) {
            // Both factors are below 2^64: their product fits u128.
            if *o == 0 && u128::from(*w) * u128::from(budget) < u128::from(rest) {
                *o = 1;
                budget -= 1;
                pinned = true;
            }
        }
        if !pinned {
            for (w, o) in weights.iter().zip(out.iter_mut()) {
                if *o == 0 {
                    // ≥ 1 by the check above; ≤ budget since w ≤ rest.
                    *o = (u128::from(*w) * u128::from(budget) / u128::from(rest)) as u64;
                }
            }
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn counts(seq: &[u32]) -> HashMap<u32, u64> {
        let mut m = HashMap::new();
        for &id in seq {
            *m.entry(id).or_insert(0) += 1;
        }
        m
    }

    /// No id appears twice in a row, also across the wrap-around (the XDP
    /// program walks the sequence cyclically).
    fn no_repeats_for(seq: &[u32], id: u32) -> bool {
        (0..seq.len()).all(|i| !(seq[i] == id && seq[(i + 1) % seq.len()] == id) || seq.len() == 1)
    }

    struct Rng(u64);
    impl Rng {
        fn range(&mut self, lo: u32, hi: u32) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            lo + (self.0 % u64::from(hi - lo + 1)) as u32
        }
    }

    #[test]
    fn nginx_example() {
        // The example from nginx's commit introducing smooth WRR.
        let seq = build(&[(1, 5), (2, 1), (3, 1)], 1000);
        assert_eq!(seq, [1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn exact_counts_per_period() {
        let b = [(10, 4), (11, 0), (12, 6), (13, 2)];
        let seq = build(&b, 1000);
        // gcd 2: period 2 + 3 + 1.
        assert_eq!(seq.len(), 6);
        let c = counts(&seq);
        assert_eq!(c.get(&10), Some(&2));
        assert_eq!(c.get(&12), Some(&3));
        assert_eq!(c.get(&13), Some(&1));
        assert!(!c.contains_key(&11));

        let mut rng = Rng(0x1234_5678);
        for _ in 0..200 {
            let n = rng.range(1, 20);
            let b: Vec<(u32, u32)> = (0..n).map(|i| (i, rng.range(0, 50))).collect();
            let seq = build(&b, 1_000_000);
            let live: Vec<u64> = b.iter().filter(|b| b.1 > 0).map(|b| b.1.into()).collect();
            let g = live.iter().fold(0, |g, &w| gcd(g, w));
            let total: u64 = live.iter().sum();
            assert_eq!(seq.len() as u64, total.checked_div(g).unwrap_or(0));
            let c = counts(&seq);
            for &(id, w) in &b {
                let want = if w == 0 { 0 } else { u64::from(w) / g };
                assert_eq!(c.get(&id).copied().unwrap_or(0), want, "{b:?}");
            }
        }
    }

    #[test]
    fn interleaved_not_bursty() {
        let mut rng = Rng(99);
        for _ in 0..300 {
            let n = rng.range(2, 12);
            let b: Vec<(u32, u32)> = (0..n).map(|i| (i, rng.range(1, 40))).collect();
            let seq = build(&b, 1_000_000);
            let total: u32 = b.iter().map(|b| b.1).sum();
            for &(id, w) in &b {
                if 2 * w <= total {
                    assert!(
                        no_repeats_for(&seq, id),
                        "{id} repeats in {seq:?} for {b:?}"
                    );
                }
            }
        }
        // Equal weights: plain round robin.
        assert_eq!(build(&[(7, 3), (8, 3), (9, 3)], 100), [7, 8, 9]);
    }

    /// Largest |entries of i among the first t| - t·w_i/Σw| over all
    /// prefixes of two periods: how far the sequence strays from the ideal
    /// proportions at any moment.
    fn max_lag(seq: &[u32], b: &[(u32, u32)]) -> f64 {
        let total: f64 = b.iter().map(|b| f64::from(b.1)).sum();
        let mut seen: HashMap<u32, f64> = HashMap::new();
        let mut worst = 0f64;
        for (t, id) in seq.iter().chain(seq).enumerate() {
            *seen.entry(*id).or_insert(0.0) += 1.0;
            for &(j, w) in b {
                let ideal = (t + 1) as f64 * f64::from(w) / total;
                let got = seen.get(&j).copied().unwrap_or(0.0);
                worst = worst.max((got - ideal).abs());
            }
        }
        worst
    }

    #[test]
    fn exhaustive_small() {
        // Every weight vector of up to 4 backends with weights 1..=8.
        let mut worst_lag = 0f64;
        for n in 1..=4u32 {
            let mut w = vec![1u32; n as usize];
            loop {
                let b: Vec<(u32, u32)> = (0..n).zip(w.iter().copied()).collect();
                let seq = build(&b, 1_000_000);
                let g = w.iter().fold(0, |g, &x| gcd(g, x.into()));
                let total: u64 = w.iter().map(|&x| u64::from(x)).sum::<u64>() / g;
                assert_eq!(seq.len() as u64, total);
                let c = counts(&seq);
                for &(id, wi) in &b {
                    assert_eq!(c[&id], u64::from(wi) / g, "{b:?}");
                    if 2 * u64::from(wi) / g <= total {
                        assert!(no_repeats_for(&seq, id), "{id} repeats in {seq:?}");
                    }
                }
                worst_lag = worst_lag.max(max_lag(&seq, &b));
                // Next vector, odometer style.
                let Some(pos) = w.iter().position(|&x| x < 8) else {
                    break;
                };
                w[pos] += 1;
                w[..pos].iter_mut().for_each(|x| *x = 1);
            }
        }
        println!(
            "wrr exhaustive (n<=4, w<=8): max lag behind/ahead of ideal = {worst_lag:.3} entries"
        );
        assert!(worst_lag < 2.0, "{worst_lag}");
    }

    #[test]
    fn larger_random() {
        let mut rng = Rng(0xfeed);
        let mut worst_lag = 0f64;
        for _ in 0..30 {
            let n = rng.range(2, 40);
            let b: Vec<(u32, u32)> = (0..n).map(|i| (i, rng.range(1, 100))).collect();
            let seq = build(&b, 1_000_000);
            let total: u32 = b.iter().map(|b| b.1).sum();
            for &(id, w) in &b {
                if 2 * w <= total {
                    assert!(no_repeats_for(&seq, id), "{id} repeats for {b:?}");
                }
            }
            worst_lag = worst_lag.max(max_lag(&seq, &b));
        }
        println!("wrr random (n<=40, w<=100): max lag = {worst_lag:.3} entries");
        assert!(worst_lag < 3.0, "{worst_lag}");
    }

    #[test]
    fn empty_inputs() {
        assert!(build(&[], 100).is_empty());
        assert!(build(&[(1, 0), (2, 0)], 100).is_empty());
        assert_eq!(build(&[(5, 1000)], 100), [5]);
    }

    #[test]
    fn capping() {
        // Σw = 1000 + 999 (coprime) > 100: scaled to 50 + 49... after floor.
        let seq = build(&[(1, 1000), (2, 999)], 100);
        assert!(seq.len() <= 100 && seq.len() >= 98, "{}", seq.len());
        let c = counts(&seq);
        assert!(c[&1].abs_diff(c[&2]) <= 1);

        // Tiny weights are kept at 1 instead of vanishing.
        let b = [(1, 1_000_000), (2, 1), (3, 1), (4, 3)];
        let seq = build(&b, 10);
        assert!(seq.len() <= 10);
        let c = counts(&seq);
        assert_eq!(c.len(), 4);
        assert_eq!(c[&2], 1);
        assert_eq!(c[&3], 1);
        assert_eq!(c[&4], 1);
        assert_eq!(c[&1], 7);

        // Proportions survive scaling: never above the ideal share by more
        // than the pinned minimum of 1, and heavier stays at least as heavy.
        let mut rng = Rng(5);
        for _ in 0..100 {
            let n = rng.range(1, 30);
            let max_len = rng.range(n, 500);
            let b: Vec<(u32, u32)> = (0..n).map(|i| (i, rng.range(1, 100_000))).collect();
            let seq = build(&b, max_len);
            assert!(seq.len() as u32 <= max_len, "{} > {max_len}", seq.len());
            let c = counts(&seq);
            assert_eq!(c.len() as u32, n);
            let total: f64 = b.iter().map(|b| f64::from(b.1)).sum();
            for &(id, w) in &b {
                let ideal = f64::from(w) * f64::from(max_len) / total;
                assert!(
                    c[&id] as f64 <= ideal + 1.0,
                    "id {id} w {w}: {} > {ideal:.1} + 1",
                    c[&id]
                );
                for &(id2, w2) in &b {
                    if w >= w2 {
                        assert!(c[&id] >= c[&id2], "{b:?} cap {max_len}");
                    }
                }
            }
        }
        // Without a gcd left after scaling, the budget is used up to the
        // rounding loss of under one entry per backend.
        let seq = build(&[(1, 70_001), (2, 20_000), (3, 10_000)], 1000);
        assert_eq!(counts(&seq)[&1], 700);
        assert_eq!(counts(&seq)[&2], 199);
        assert_eq!(counts(&seq)[&3], 99);

        // More live backends than room: nobody is dropped.
        let seq = build(&[(1, 5), (2, 5), (3, 5)], 2);
        assert_eq!(seq.len(), 3);
        let seq = build(&[(1, 5)], 0);
        assert_eq!(seq, [1]);
    }

    /// `cargo test --release -p slb-userspace --lib sched -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; meaningful in release"]
    fn build_time() {
        for n in [100u32, 1000, 4096] {
            let mut rng = Rng(u64::from(n) + 1);
            let b: Vec<(u32, u32)> = (0..n).map(|i| (i, rng.range(1, 100))).collect();
            let start = std::time::Instant::now();
            let seq = build(&b, 65537);
            println!(
                "wrr build {n} backends, {} entries: {:?}",
                seq.len(),
                start.elapsed()
            );
        }
    }
}
