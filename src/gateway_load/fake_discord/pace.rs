//! Pacing of the fake's member events along the scenario's rate stages (the same
//! [`RateSchedule`] the open-model executor follows).
//!
//! Each event is stamped with the time it was *due*, not the time it left, so a fake that falls
//! behind (or a session that is down and buffering) shows up as latency rather than hiding it:
//! the coordinated-omission correction that oha applies to requests.

use std::time::Duration;

pub use crate::gateway::unix_micros;
pub use crate::scenario::rate::RateSchedule;

/// The schedule of `(duration, events per second)` stages ramping from 0, scaled by `share`
/// (a shard's part of the total rate).
pub fn event_schedule(stages: &[(Duration, u32)], share: f64) -> RateSchedule {
    let stages: Vec<(Duration, f64)> = stages.iter().map(|&(d, r)| (d, f64::from(r))).collect();
    RateSchedule::per_second(0.0, &stages).scaled(share)
}
