//! A cheap coarse clock: `CLOCK_MONOTONIC_COARSE`, which the kernel updates
//! once per tick (1–10 ms) and which is read without touching the hardware
//! clock, for timestamps that need no precision (pool idle times) and to
//! tell whether a precise reading is worth taking again (the idle clock).

use std::sync::OnceLock;
use std::time::Duration;

use nix::time::{clock_getres, clock_gettime, ClockId};

/// The coarse clock in nanoseconds (0 if it cannot be read, which Linux
/// always can).
pub fn coarse_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| Duration::from(t).as_nanos() as u64)
        .unwrap_or(0)
}

/// The coarse clock in milliseconds.
pub fn coarse_ms() -> u64 {
    coarse_ns() / 1_000_000
}

/// How far the coarse clock may lag behind the precise one (its tick).
pub fn resolution() -> Duration {
    static RES: OnceLock<Duration> = OnceLock::new();
    *RES.get_or_init(|| {
        clock_getres(ClockId::CLOCK_MONOTONIC_COARSE)
            .map(Duration::from)
            .unwrap_or(Duration::from_millis(10))
            .clamp(Duration::from_millis(1), Duration::from_millis(10))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_follows_the_monotonic_clock() {
        let a = coarse_ns();
        std::thread::sleep(Duration::from_millis(30));
        let b = coarse_ns();
        assert!(
            b >= a + 30_000_000 - resolution().as_nanos() as u64,
            "{a} {b}"
        );
        assert!(resolution() <= Duration::from_millis(10));
    }
}
