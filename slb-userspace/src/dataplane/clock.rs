//! The fast path's clock (`CLOCK`), advanced by a thread of its own.
//!
//! The fast path trusts a cached flow entry only while it was seen within
//! a second of this clock; a clock that stands still sends every packet to
//! the slow path. Written from the agent's main loop, it stood still
//! whenever the loop was busy (a `wlc` recount of a large table, a reload
//! planning many Maglev tables), so the dataplane slowed down exactly when
//! the agent had work. The thread has nothing else to do and its own
//! handle of the map; it stops with the process, so the rule the program
//! relies on — no agent, no clock: the fast path steps aside — still holds.
use super::{map_err, DataplaneError};
use aya::maps::{Array, MapData};
use std::{os::fd::OwnedFd, sync::mpsc, thread::JoinHandle, time::Duration};

/// How often the clock is advanced: well within the second the fast path
/// allows (`limits::REFRESH_NS`).
pub const TICK: Duration = Duration::from_millis(250);

/// The thread advancing `CLOCK`; stopped (and waited for) when dropped.
pub struct ClockTicker {
    /// Dropped to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ClockTicker {
    /// Starts advancing the `CLOCK` map `fd` refers to, every [`TICK`],
    /// first at once.
    pub(super) fn start(fd: OwnedFd) -> Result<ClockTicker, DataplaneError> {
        let mut clock: Array<MapData, u64> = MapData::from_fd(fd)
            .and_then(aya::maps::Map::from_map_data)
            .and_then(TryFrom::try_from)
            .map_err(map_err("CLOCK"))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("slb-clock".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let now = super::connections::monotonic_coarse_ns();
                    match clock.set(0, now, 0) {
                        // Once per failure, not four times a second.
                        Err(e) if !failing => {
                            tracing::warn!("advancing the dataplane clock: {e}");
                            failing = true;
                        }
                        Err(_) => {}
                        Ok(()) => failing = false,
                    }
                    // A message or a dropped sender both mean stop.
                    if stopped.recv_timeout(TICK) != Err(mpsc::RecvTimeoutError::Timeout) {
                        return;
                    }
                }
            })
            .map_err(|e| {
                map_err("CLOCK")(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "spawning the clock thread",
                    io_error: e,
                }))
            })?;
        Ok(ClockTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ClockTicker {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
