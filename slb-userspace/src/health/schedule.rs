//! When each target is probed: once per `interval`, the first probes of a
//! batch of targets spread evenly over one interval so that 1000 backends
//! are not all probed at the same instant. Probes of one target run at
//! ticks (multiples of the interval from its first probe) and never
//! overlap: after a probe longer than the interval, the next one waits
//! for the next tick after it ended.

use std::time::Duration;

/// Delay before the first probe of target `index` of `count` started
/// together: `index · interval / count`.
pub fn first_offset(index: usize, count: usize, interval: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let index = index.min(count - 1) as u128;
    let nanos = interval.as_nanos() * index / count as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The tick of the probe after one that ran at tick `previous` (tick
/// `k` is `k · interval` after the first probe) and ended `elapsed` after
/// the first probe: the first tick not before its end, and at least
/// `previous + 1`.
pub fn next_tick(previous: u64, elapsed: Duration, interval: Duration) -> u64 {
    let interval = interval.as_nanos().max(1);
    let after_end = u64::try_from(elapsed.as_nanos().div_ceil(interval)).unwrap_or(u64::MAX);
    after_end.max(previous.saturating_add(1))
}

/// How long after the first probe tick `tick` comes.
pub fn tick_offset(tick: u64, interval: Duration) -> Duration {
    let nanos = interval.as_nanos().saturating_mul(u128::from(tick));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_probe_waits_for_the_next_tick_after_a_slow_one() {
        let i = Duration::from_secs(2);
        let ms = Duration::from_millis;
        // A fast probe: the next tick.
        assert_eq!(next_tick(0, ms(10), i), 1);
        assert_eq!(next_tick(3, ms(6010), i), 4);
        // A late wake-up still moves on by one tick at least.
        assert_eq!(next_tick(3, ms(6000), i), 4);
        // Probe at tick 0 ending after 2.5 s (timeout 5 s > interval):
        // tick 2 (4 s), not at once at 2.5 s.
        assert_eq!(next_tick(0, ms(2500), i), 2);
        assert_eq!(tick_offset(2, i), ms(4000));
        // Ending exactly at a tick: that tick.
        assert_eq!(next_tick(0, ms(4000), i), 2);
        assert_eq!(next_tick(1, ms(7000), i), 4);
    }

    #[test]
    fn offsets_spread_over_one_interval() {
        let i = Duration::from_secs(2);
        assert_eq!(first_offset(0, 4, i), Duration::ZERO);
        assert_eq!(first_offset(1, 4, i), Duration::from_millis(500));
        assert_eq!(first_offset(3, 4, i), Duration::from_millis(1500));
        assert_eq!(first_offset(0, 1, i), Duration::ZERO);
        assert_eq!(first_offset(0, 0, i), Duration::ZERO);
    }

    #[test]
    fn thousand_targets_are_evenly_spaced() {
        let i = Duration::from_secs(2);
        let offsets: Vec<_> = (0..1000).map(|n| first_offset(n, 1000, i)).collect();
        assert!(offsets
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_millis(2)));
        assert!(*offsets.last().unwrap() < i);
    }
}
