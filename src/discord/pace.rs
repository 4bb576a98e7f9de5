//! Pacing of the fake's member events: k6-style ramping stages turned into "how many events are
//! due by time t" and its inverse, "when was event k due".
//!
//! Each event is stamped with the time it was *due*, not the time it left, so a fake that falls
//! behind (or a session that is down and buffering) shows up as latency rather than hiding it:
//! the coordinated-omission correction that oha applies to requests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in microseconds, the clock of `sent_us` marks and envelope timestamps.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start_s: f64,
    len_s: f64,
    from_rate: f64,
    to_rate: f64,
    /// Events due before this segment starts.
    before: f64,
}

impl Segment {
    /// Events due `tau` seconds into the segment, counted from its start.
    fn due_within(&self, tau: f64) -> f64 {
        let slope = (self.to_rate - self.from_rate) / self.len_s;
        self.from_rate * tau + slope * tau * tau / 2.0
    }

    fn total(&self) -> f64 {
        self.due_within(self.len_s)
    }
}

/// Arrival-rate stages: each ramps linearly from the previous target (0 before the first) to its
/// own target over its duration, as k6's `ramping-arrival-rate` does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateSchedule {
    segments: Vec<Segment>,
}

impl RateSchedule {
    /// Builds the schedule from `(duration, target events per second)` stages, scaled by `share`
    /// (a shard's part of the total rate). Zero-length stages jump to their target.
    pub fn new(stages: &[(Duration, u32)], share: f64) -> Self {
        let mut segments = Vec::with_capacity(stages.len());
        let mut start_s = 0.0;
        let mut before = 0.0;
        let mut from_rate = 0.0;
        for &(len, target) in stages {
            let to_rate = f64::from(target) * share;
            let len_s = len.as_secs_f64();
            if len_s > 0.0 {
                let seg = Segment {
                    start_s,
                    len_s,
                    from_rate,
                    to_rate,
                    before,
                };
                before += seg.total();
                start_s += len_s;
                segments.push(seg);
            }
            from_rate = to_rate;
        }
        RateSchedule { segments }
    }

    /// How long the stages last.
    pub fn duration(&self) -> Duration {
        self.segments
            .last()
            .map(|s| Duration::from_secs_f64(s.start_s + s.len_s))
            .unwrap_or_default()
    }

    /// Events due in the whole schedule.
    pub fn total_events(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.before + s.total())
    }

    /// Target rate (events per second) at `t`.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        match self.segment_at_time(t) {
            Some(s) => {
                let tau = (t - s.start_s).min(s.len_s);
                s.from_rate + (s.to_rate - s.from_rate) * tau / s.len_s
            }
            None => 0.0,
        }
    }

    /// Events due by `t` (fractional; the whole part is what may be sent).
    pub fn due(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        match self.segment_at_time(t) {
            Some(s) => s.before + s.due_within((t - s.start_s).min(s.len_s)),
            None => 0.0,
        }
    }

    /// When the `k`-th event (counting from 1) became due; `None` past the schedule's end.
    pub fn due_time(&self, k: f64) -> Option<Duration> {
        let seg = self
            .segments
            .iter()
            .find(|s| k <= s.before + s.total() + 1e-9)?;
        let remaining = (k - seg.before).max(0.0);
        let slope = (seg.to_rate - seg.from_rate) / seg.len_s;
        // Solve from·τ + slope·τ²/2 = remaining in the form that is stable for any slope sign.
        let disc = (seg.from_rate * seg.from_rate + 2.0 * slope * remaining).max(0.0);
        let denom = seg.from_rate + disc.sqrt();
        let tau = if denom > 0.0 {
            2.0 * remaining / denom
        } else {
            0.0
        };
        Some(Duration::from_secs_f64(seg.start_s + tau.min(seg.len_s)))
    }

    fn segment_at_time(&self, t: f64) -> Option<&Segment> {
        if t < 0.0 {
            return None;
        }
        self.segments
            .iter()
            .find(|s| t < s.start_s + s.len_s)
            .or(self.segments.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn ramp_then_hold_counts_the_area_under_the_rate() {
        let sched = RateSchedule::new(&[(secs(10.0), 1000), (secs(30.0), 1000)], 1.0);
        assert_eq!(sched.duration(), secs(40.0));
        assert!((sched.due(secs(10.0)) - 5_000.0).abs() < 1e-6);
        assert!((sched.due(secs(20.0)) - 15_000.0).abs() < 1e-6);
        assert!((sched.total_events() - 35_000.0).abs() < 1e-6);
        assert!((sched.rate_at(secs(5.0)) - 500.0).abs() < 1e-6);
        assert!((sched.due(secs(100.0)) - 35_000.0).abs() < 1e-6);
    }

    #[test]
    fn due_time_inverts_due() {
        let sched = RateSchedule::new(&[(secs(2.0), 400), (secs(3.0), 100), (secs(1.0), 100)], 0.5);
        for k in [1.0, 10.0, 99.5, 200.0, 333.0, sched.total_events()] {
            let t = sched.due_time(k).unwrap();
            assert!((sched.due(t) - k).abs() < 1e-6, "k={k} t={t:?}");
        }
        assert!(sched.due_time(sched.total_events() + 1.0).is_none());
    }

    #[test]
    fn empty_schedule_has_nothing_due() {
        let sched = RateSchedule::new(&[], 1.0);
        assert_eq!(sched.due(secs(3.0)), 0.0);
        assert_eq!(sched.due_time(1.0), None);
        assert_eq!(sched.duration(), Duration::ZERO);
    }
}
