//! Execution segments: instance *I* of *N* runs its share of a scenario, so that N instances
//! together offer exactly the scenario's load (k6's execution segments).
//!
//! - A count (VUs at a stage boundary, pre-allocated VUs) splits by k6's `ScaleInt64` rule:
//!   instance I gets `floor(n·(I+1)/N) − floor(n·I/N)`. The parts always sum to `n`, at every
//!   stage boundary, and differ by at most one.
//! - In the open model instance I starts iteration *k* of the global timetable when
//!   `k mod N = I`: the fleet's arrivals are the scenario's, interleaved.
//! - Random draws are seeded with the instance, so instances do not replay each other's tenants.

use std::fmt;
use std::str::FromStr;

/// Instance `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// This instance's position, `0..count`.
    pub index: u32,
    /// How many instances share the run (at least 1).
    pub count: u32,
}

impl Segment {
    /// The whole run: one instance.
    pub const WHOLE: Segment = Segment { index: 0, count: 1 };

    /// This instance's share of `n` (VUs, pre-allocated VUs, any count).
    pub fn scale(&self, n: u32) -> u32 {
        let n = u64::from(n);
        let (i, count) = (u64::from(self.index), u64::from(self.count));
        (n * (i + 1) / count - n * i / count) as u32
    }

    /// Whether iteration `k` (from 0) of the global open-model timetable is this instance's.
    pub fn owns(&self, k: u64) -> bool {
        k % u64::from(self.count) == u64::from(self.index)
    }

    /// Mixes the instance into a random seed, so that instances draw different tenants.
    pub fn seed(&self, seed: u64) -> u64 {
        if *self == Segment::WHOLE {
            return seed;
        }
        seed ^ (u64::from(self.index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Gives instance `segment` its share of the plan's VUs. Arrival rates stay the scenario's: the
/// open-model executor starts only the iterations the segment [owns](Segment::owns).
pub fn apply(plan: &mut crate::scenario::Plan, segment: Segment) {
    for part in plan.parts_mut() {
        apply_one(part, segment);
    }
}

fn apply_one(plan: &mut crate::scenario::Plan, segment: Segment) {
    use crate::scenario::LoadShape;
    match &mut plan.load {
        LoadShape::Closed {
            start_vus, stages, ..
        } => {
            *start_vus = segment.scale(*start_vus);
            for stage in stages {
                stage.target = segment.scale(stage.target);
            }
        }
        LoadShape::Open {
            pre_allocated_vus,
            max_vus,
            ..
        } => {
            // Every instance needs a VU to start its iterations on.
            *pre_allocated_vus = segment.scale(*pre_allocated_vus).max(1);
            *max_vus = segment.scale(*max_vus).max(*pre_allocated_vus);
        }
    }
}

impl Default for Segment {
    fn default() -> Self {
        Segment::WHOLE
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Segment {
    type Err = String;

    /// `I/N`, with `0 <= I < N`.
    fn from_str(text: &str) -> Result<Segment, String> {
        let bad = || {
            format!(
                "\"{text}\": a segment is I/N, instance I (from 0) of N, e.g. 0/3 (JOB_COMPLETION_INDEX/parallelism)"
            )
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(format!(
                "\"{text}\": the instance must be below the count (0/{count} to {}/{count})",
                count.saturating_sub(1)
            ));
        }
        Ok(Segment { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(count: u32) -> Vec<Segment> {
        (0..count).map(|index| Segment { index, count }).collect()
    }

    #[test]
    fn parts_sum_to_the_whole_for_every_count_and_fleet_size() {
        for count in 1..=12 {
            for n in (0..=250).chain([999, 1000, 1001, 12_345]) {
                let parts: Vec<u32> = all(count).iter().map(|s| s.scale(n)).collect();
                assert_eq!(parts.iter().sum::<u32>(), n, "{n} over {count}: {parts:?}");
                let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
                assert!(hi - lo <= 1, "{n} over {count}: {parts:?}");
            }
        }
    }

    #[test]
    fn every_stage_boundary_sums_to_the_scenario() {
        // steady: 0 → 100 → 100 → 0 VUs; spike: 50 → 200 → 200 → 50.
        for targets in [[0u32, 100, 100, 0], [50, 200, 200, 50]] {
            for count in [2, 3, 7] {
                for t in targets {
                    let sum: u32 = all(count).iter().map(|s| s.scale(t)).sum();
                    assert_eq!(sum, t);
                }
            }
        }
    }

    #[test]
    fn the_fleet_owns_each_iteration_exactly_once() {
        for count in 1..=5 {
            for k in 0..1000u64 {
                let owners = all(count).iter().filter(|s| s.owns(k)).count();
                assert_eq!(owners, 1, "iteration {k} of {count}");
            }
        }
    }

    #[test]
    fn parses_i_of_n_and_refuses_nonsense() {
        assert_eq!("2/5".parse(), Ok(Segment { index: 2, count: 5 }));
        assert_eq!("0/1".parse(), Ok(Segment::WHOLE));
        for bad in ["5/5", "1/0", "x/3", "3", "-1/3"] {
            let e = bad.parse::<Segment>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn instances_draw_with_different_seeds_and_the_whole_keeps_its_own() {
        assert_eq!(Segment::WHOLE.seed(42), 42);
        let seeds: std::collections::HashSet<u64> = all(8).iter().map(|s| s.seed(42)).collect();
        assert_eq!(seeds.len(), 8);
    }
}
