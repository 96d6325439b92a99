//! When each target is probed: once per `interval`, the first probes of a
//! batch of targets spread evenly over one interval so that 1000 backends
//! are not all probed at the same instant.

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

#[cfg(test)]
mod tests {
    use super::*;

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
