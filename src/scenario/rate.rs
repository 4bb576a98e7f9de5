//! Arrival-rate timetables: k6-style stages, each ramping linearly from the previous target to
//! its own, turned into "how many iterations are due by time t" and its inverse, "when is
//! iteration k due". The open-model executor starts iterations by it and the fake Discord server
//! paces its events by it, so both follow the same shape.
//!
//! Iteration *k* is due when the integral of the rate reaches *k*. Stepping `t += 1 / rate(t)`
//! instead goes wrong wherever the rate changes: from a rate of 0 the first step is infinite (a
//! ramp from 0 offers nothing until it ends), and on any slope every step uses the rate at its
//! start. Within a linear stage the integral is a quadratic in the time since the stage began,
//! solved here exactly, so a ramp offers exactly its area.

use std::time::Duration;

use super::Stage;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start_s: f64,
    len_s: f64,
    from_rate: f64,
    to_rate: f64,
    /// Iterations due before this segment starts.
    before: f64,
}

impl Segment {
    /// Iterations due `tau` seconds into the segment, counted from its start.
    fn due_within(&self, tau: f64) -> f64 {
        let slope = (self.to_rate - self.from_rate) / self.len_s;
        self.from_rate * tau + slope * tau * tau / 2.0
    }

    fn total(&self) -> f64 {
        (self.from_rate + self.to_rate) / 2.0 * self.len_s
    }

    /// Seconds into the segment at which `n` iterations (0 ≤ n ≤ total) have come due: the root
    /// of `from·τ + slope·τ²/2 = n`, in the form that stays exact as the slope goes to 0 and is
    /// stable for either sign.
    fn time_of(&self, n: f64) -> f64 {
        if n <= 0.0 {
            return 0.0;
        }
        let slope = (self.to_rate - self.from_rate) / self.len_s;
        let root = (self.from_rate * self.from_rate + 2.0 * slope * n)
            .max(0.0)
            .sqrt();
        let denominator = self.from_rate + root;
        if denominator <= 0.0 {
            return self.len_s;
        }
        (2.0 * n / denominator).min(self.len_s)
    }
}

/// A rate (iterations per second) over time, piecewise linear.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateSchedule {
    segments: Vec<Segment>,
}

impl RateSchedule {
    /// A schedule that starts at `start_rate` and moves linearly to each stage's target, rates in
    /// iterations per `time_unit`. Zero-length stages jump to their target.
    pub fn new(start_rate: u32, stages: &[Stage], time_unit: Duration) -> Self {
        let unit = time_unit.as_secs_f64();
        let stages: Vec<(Duration, f64)> = stages
            .iter()
            .map(|s| (s.duration, f64::from(s.target) / unit))
            .collect();
        Self::per_second(f64::from(start_rate) / unit, &stages)
    }

    /// A schedule from `(duration, target per second)` stages starting at `start_per_s`.
    pub fn per_second(start_per_s: f64, stages: &[(Duration, f64)]) -> Self {
        let mut segments = Vec::with_capacity(stages.len());
        let mut start_s = 0.0;
        let mut before = 0.0;
        let mut from_rate = start_per_s;
        for &(len, to_rate) in stages {
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

    /// The same shape with every rate multiplied by `share` (one shard's or instance's part).
    pub fn scaled(mut self, share: f64) -> Self {
        for s in &mut self.segments {
            s.from_rate *= share;
            s.to_rate *= share;
            s.before *= share;
        }
        self
    }

    /// How long the stages last.
    pub fn duration(&self) -> Duration {
        self.segments
            .last()
            .map(|s| Duration::from_secs_f64(s.start_s + s.len_s))
            .unwrap_or_default()
    }

    /// Iterations due in the whole schedule (the integral of the rate).
    pub fn total(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.before + s.total())
    }

    /// Target rate (per second) at `t`.
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

    /// Iterations due by `t` (fractional; the whole part is what may have started).
    pub fn due(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        match self.segment_at_time(t) {
            Some(s) => s.before + s.due_within((t - s.start_s).min(s.len_s)),
            None => 0.0,
        }
    }

    /// The earliest time at which `k` iterations are due; `None` past the schedule's end.
    pub fn due_time(&self, k: f64) -> Option<Duration> {
        let seg = self
            .segments
            .iter()
            .find(|s| k <= s.before + s.total() + 1e-9)?;
        let tau = seg.time_of((k - seg.before).max(0.0));
        Some(Duration::from_secs_f64(seg.start_s + tau))
    }

    /// The due times of iterations 0, 1, 2, ... in order: iteration `i` starts when `i` are due
    /// (the first at the first instant of the schedule).
    pub fn arrivals(&self) -> Arrivals<'_> {
        self.arrivals_from(0, 1)
    }

    /// The due times of iterations `first`, `first + step`, `first + 2·step`, ...: one
    /// instance's share of a fleet's timetable, without computing the others'.
    pub fn arrivals_from(&self, first: u64, step: u64) -> Arrivals<'_> {
        Arrivals {
            schedule: self,
            next: first,
            step: step.max(1),
        }
    }

    /// Poisson arrivals at the schedule's rate (pgbench `-R`: exponential gaps, mean 1/rate),
    /// iterations `first`, `first + step`, ...: the unit-rate Poisson process of seed `seed`
    /// mapped through the due count, so a ramp is followed too and every instance of a fleet
    /// draws the same process and takes its share of it.
    pub fn poisson_arrivals(&self, seed: u64, first: u64, step: u64) -> PoissonArrivals<'_> {
        PoissonArrivals {
            schedule: self,
            rng: crate::workload::pgbench::Prng::seed(seed),
            due: 0.0,
            index: 0,
            first,
            step: step.max(1),
        }
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

/// The due times of a schedule's iterations, as offsets from its start.
#[derive(Debug, Clone)]
pub struct Arrivals<'a> {
    schedule: &'a RateSchedule,
    next: u64,
    step: u64,
}

impl Iterator for Arrivals<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let k = self.next as f64;
        // Iteration k needs k due before it and is itself the (k+1)-th: the schedule offers
        // ceil(total) iterations, the last one once the integral passes total - 1.
        if k >= self.schedule.total() {
            return None;
        }
        self.next += self.step;
        self.schedule.due_time(k)
    }
}

/// See [`RateSchedule::poisson_arrivals`].
pub struct PoissonArrivals<'a> {
    schedule: &'a RateSchedule,
    rng: crate::workload::pgbench::Prng,
    /// Iterations due so far on the unit-rate process.
    due: f64,
    index: u64,
    first: u64,
    step: u64,
}

impl Iterator for PoissonArrivals<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            // pgbench's getPoissonRand: -ln(u), u uniform in (0, 1].
            self.due += -(1.0 - self.rng.double()).ln();
            let index = self.index;
            self.index += 1;
            if self.due >= self.schedule.total() {
                return None;
            }
            if index >= self.first && (index - self.first).is_multiple_of(self.step) {
                return self.schedule.due_time(self.due);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(secs: u64, target: u32) -> Stage {
        Stage {
            duration: Duration::from_secs(secs),
            target,
        }
    }

    #[test]
    fn poisson_arrivals_keep_the_rate_with_exponential_gaps() {
        let schedule = RateSchedule::new(100, &[stage(200, 100)], Duration::from_secs(1));
        let times: Vec<f64> = schedule
            .poisson_arrivals(7, 0, 1)
            .map(|d| d.as_secs_f64())
            .collect();
        // 20,000 expected, standard deviation √20,000 ≈ 141.
        assert!((19_500..=20_500).contains(&times.len()), "{}", times.len());
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential gaps: the standard deviation equals the mean (evenly spaced: zero).
        assert!((0.0095..0.0105).contains(&mean), "{mean}");
        assert!(
            (0.9..1.1).contains(&(var.sqrt() / mean)),
            "{}",
            var.sqrt() / mean
        );
        // Two instances of a fleet take every other arrival of the same process.
        let even: Vec<_> = schedule.poisson_arrivals(7, 0, 2).collect();
        let odd: Vec<_> = schedule.poisson_arrivals(7, 1, 2).collect();
        assert_eq!(even.len() + odd.len(), times.len());
        assert!((even[1].as_secs_f64() - times[2]).abs() < 1e-9);
    }

    /// Iterations due in each whole second of the timetable.
    fn per_second(arrivals: Arrivals<'_>, seconds: usize) -> Vec<u64> {
        let mut counts = vec![0u64; seconds];
        for at in arrivals {
            let s = at.as_secs_f64().floor() as usize;
            counts[s.min(seconds - 1)] += 1;
        }
        counts
    }

    /// The integral of a piecewise-linear rate over [a, b).
    fn planned_between(start: f64, stages: &[(f64, f64)], a: f64, b: f64) -> f64 {
        let mut total = 0.0;
        let mut t0 = 0.0;
        let mut from = start;
        for &(len, to) in stages {
            let t1 = t0 + len;
            let rate = |t: f64| from + (to - from) * (t - t0) / len;
            let lo = a.max(t0);
            let hi = b.min(t1);
            if hi > lo {
                total += (rate(lo) + rate(hi)) / 2.0 * (hi - lo);
            }
            t0 = t1;
            from = to;
        }
        total
    }

    /// Each second's count is within 2 % + 1 of the rate's integral over that second.
    fn assert_follows(start: u32, stages: &[Stage], unit: Duration) {
        let total_s = stages.iter().map(|s| s.duration.as_secs()).sum::<u64>() as usize;
        let per_unit = unit.as_secs_f64();
        let shape: Vec<(f64, f64)> = stages
            .iter()
            .map(|s| (s.duration.as_secs_f64(), f64::from(s.target) / per_unit))
            .collect();
        let counts = per_second(RateSchedule::new(start, stages, unit).arrivals(), total_s);
        for (s, &got) in counts.iter().enumerate() {
            let want = planned_between(
                f64::from(start) / per_unit,
                &shape,
                s as f64,
                s as f64 + 1.0,
            );
            assert!(
                (got as f64 - want).abs() <= want * 0.02 + 1.0,
                "second {s}: {got} iterations, planned {want:.1} (all: {counts:?})"
            );
        }
    }

    #[test]
    fn a_ramp_from_zero_starts_at_once_and_follows_its_slope() {
        // The defect: 0 → 1,000/s over 20 s offered one iteration, then nothing for 19 s.
        assert_follows(
            0,
            &[stage(20, 1000), stage(5, 1000)],
            Duration::from_secs(1),
        );
        let schedule = RateSchedule::new(0, &[stage(20, 1000)], Duration::from_secs(1));
        assert_eq!(schedule.total(), 10_000.0);
        assert_eq!(schedule.arrivals().count(), 10_000);
    }

    #[test]
    fn ramps_between_rates_and_down_to_zero_follow_their_shape() {
        assert_follows(
            200,
            &[stage(10, 50), stage(10, 800), stage(5, 0)],
            Duration::from_secs(1),
        );
        assert_follows(500, &[stage(10, 0)], Duration::from_secs(1));
    }

    #[test]
    fn a_time_unit_other_than_a_second_scales_the_rate() {
        // 600 per minute is 10/s; 0 → 3,000 per minute is a ramp to 50/s.
        assert_follows(
            600,
            &[stage(10, 600), stage(20, 3000)],
            Duration::from_secs(60),
        );
        // 5 per 100 ms is 50/s.
        assert_follows(5, &[stage(4, 5)], Duration::from_millis(100));
    }

    #[test]
    fn a_stage_held_at_zero_offers_nothing_and_the_next_one_resumes() {
        // A zero-length stage jumps to its target: 10/s for 2 s, 0 for 4 s, 10/s for 2 s.
        let stages = [
            stage(2, 10),
            stage(0, 0),
            stage(4, 0),
            stage(0, 10),
            stage(2, 10),
        ];
        let times: Vec<f64> = RateSchedule::new(10, &stages, Duration::from_secs(1))
            .arrivals()
            .map(|d| d.as_secs_f64())
            .collect();
        // Iteration 20 is due the instant the first hold ends (the integral reaches 20 there).
        assert!(times.iter().all(|&t| t <= 2.0 || t > 6.0), "{times:?}");
        assert_eq!(times.len(), 40, "{times:?}");
        assert!(times.iter().any(|&t| t > 6.0 && t < 6.2), "{times:?}");
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "due times are ordered"
        );
    }

    #[test]
    fn strided_arrivals_are_every_nth_of_the_whole() {
        let schedule = RateSchedule::new(0, &[stage(5, 200)], Duration::from_secs(1));
        let whole: Vec<Duration> = schedule.arrivals().collect();
        let mut parts: Vec<Duration> = (0..3)
            .flat_map(|i| schedule.arrivals_from(i, 3).collect::<Vec<_>>())
            .collect();
        parts.sort();
        assert_eq!(parts, whole);
        assert_eq!(schedule.arrivals_from(1, 3).next(), whole.get(1).copied());
    }

    #[test]
    fn a_constant_rate_is_evenly_spaced_from_time_zero() {
        let times: Vec<Duration> = RateSchedule::new(4, &[stage(1, 4)], Duration::from_secs(1))
            .arrivals()
            .collect();
        assert_eq!(
            times,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn ramp_then_hold_counts_the_area_under_the_rate() {
        let sched = RateSchedule::per_second(0.0, &[(secs(10.0), 1000.0), (secs(30.0), 1000.0)]);
        assert_eq!(sched.duration(), secs(40.0));
        assert!((sched.due(secs(10.0)) - 5_000.0).abs() < 1e-6);
        assert!((sched.due(secs(20.0)) - 15_000.0).abs() < 1e-6);
        assert!((sched.total() - 35_000.0).abs() < 1e-6);
        assert!((sched.rate_at(secs(5.0)) - 500.0).abs() < 1e-6);
        assert!((sched.due(secs(100.0)) - 35_000.0).abs() < 1e-6);
    }

    #[test]
    fn due_time_inverts_due() {
        let sched = RateSchedule::per_second(
            0.0,
            &[(secs(2.0), 400.0), (secs(3.0), 100.0), (secs(1.0), 100.0)],
        )
        .scaled(0.5);
        for k in [1.0, 10.0, 99.5, 200.0, 333.0, sched.total()] {
            let t = sched.due_time(k).unwrap();
            assert!((sched.due(t) - k).abs() < 1e-6, "k={k} t={t:?}");
        }
        assert!(sched.due_time(sched.total() + 1.0).is_none());
    }

    #[test]
    fn empty_schedule_has_nothing_due() {
        let sched = RateSchedule::per_second(0.0, &[]);
        assert_eq!(sched.due(secs(3.0)), 0.0);
        assert_eq!(sched.due_time(1.0), None);
        assert_eq!(sched.duration(), Duration::ZERO);
    }
}
