//! The load generator's own CPU and memory, read from `/proc/self` once per interval and sent as
//! gauges (`generator_cpu_percent`, `generator_rss_mb`) the way the PgBouncer poller sends its
//! own: a generator whose CPU is the bottleneck measures its own queueing, not the target's, and
//! the report must say so ([`saturated`], [`saturation_note`]).
//!
//! CPU is a share of the cores the process may use (`available_parallelism`, which honours CPU
//! affinity and cgroup quotas), so 100 % means every one of them was busy, on a laptop or in a
//! pod limited to half a core alike.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::recorder::{Recorder, SampleKind, Samples};
use crate::metrics::summary::Interval;

/// The gauge of the generator's CPU use, in percent of the cores it may use.
pub const CPU_GAUGE: &str = "generator_cpu_percent";
/// The gauge of the generator's resident memory, in MB (MiB, as `gateway_rss_mb`).
pub const RSS_GAUGE: &str = "generator_rss_mb";

/// CPU use above which an interval counts as saturated.
pub const SATURATION_PERCENT: f64 = 90.0;
/// Loaded intervals with a CPU reading needed before a run can be called saturated: one or two
/// busy seconds (start-up, a GC-like burst of connection set-up) are not a finding.
pub const MIN_SATURATION_INTERVALS: usize = 3;

/// How every saturation note starts, so a fleet merge can tell them from other notes.
const NOTE_START: &str = "the generator's own CPU stayed above";

/// utime + stime (fields 14 and 15 of `/proc/<pid>/stat`), in clock ticks. They are counted
/// after the last `)`: the command name (field 2) may hold spaces and parentheses.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After `)` come field 3 (state) onwards; utime is field 14, i.e. the 12th here.
    let mut fields = after_comm.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of `/proc/<pid>/status`, in kB.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU use in percent of `cores`: `ticks` of CPU time over `wall_s` seconds.
pub fn cpu_percent(ticks: u64, ticks_per_s: f64, wall_s: f64, cores: f64) -> f64 {
    if wall_s <= 0.0 || cores <= 0.0 || ticks_per_s <= 0.0 {
        return 0.0;
    }
    100.0 * (ticks as f64 / ticks_per_s) / (wall_s * cores)
}

/// Reads this process's CPU time and memory; each reading after the first gives the CPU use
/// since the one before.
#[derive(Debug)]
pub struct SelfSampler {
    ticks_per_s: f64,
    cores: f64,
    last: Option<(Instant, u64)>,
}

impl Default for SelfSampler {
    fn default() -> Self {
        SelfSampler::new()
    }
}

impl SelfSampler {
    /// A sampler of `/proc/self`; its first reading has no CPU figure.
    pub fn new() -> SelfSampler {
        // USER_HZ is 100 on every Linux ABI; sysconf tells the truth where it is not.
        let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .map_or(100.0, |t| t as f64);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        SelfSampler {
            ticks_per_s,
            cores,
            last: None,
        }
    }

    /// The gauges of one reading at `now`: RSS always, CPU from the second reading on. Empty
    /// where `/proc` cannot be read (not Linux).
    pub fn sample(&mut self, now: Instant) -> Vec<(&'static str, f64)> {
        // Reading procfs is a syscall into the kernel's own memory, never a disk wait: a plain
        // read does not block the runtime.
        let mut gauges = Vec::with_capacity(2);
        if let Some(kb) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(parse_vm_rss_kb)
        {
            gauges.push((RSS_GAUGE, kb as f64 / 1024.0));
        }
        if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_cpu_ticks)
        {
            if let Some((at, before)) = self.last {
                let wall = now.saturating_duration_since(at).as_secs_f64();
                gauges.push((
                    CPU_GAUGE,
                    cpu_percent(
                        ticks.saturating_sub(before),
                        self.ticks_per_s,
                        wall,
                        self.cores,
                    ),
                ));
            }
            self.last = Some((now, ticks));
        }
        gauges
    }
}

/// Samples this process every `every` until `stop`, sending its gauges as samples.
pub async fn poll(start: Instant, every: Duration, samples: Samples, stop: CancellationToken) {
    let mut recorder = Recorder::new(start, samples);
    let mut sampler = SelfSampler::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let now = Instant::now();
        for (name, value) in sampler.sample(now) {
            recorder.push(now, SampleKind::Gauge { name, value });
        }
    }
}

/// The intervals of the load: from the first with virtual users to the last. Ramp-up and
/// ramp-down stay in; the set-up before and the drain after do not. An open-model interval that
/// happens to end with no busy VU inside the span still counts.
pub fn load_intervals(time_series: &[Interval]) -> &[Interval] {
    let first = time_series.iter().position(|i| i.vus > 0);
    let last = time_series.iter().rposition(|i| i.vus > 0);
    match (first, last) {
        (Some(a), Some(b)) => &time_series[a..=b],
        _ => &[],
    }
}

/// The generator's CPU readings over the load, in order.
pub fn load_cpu(time_series: &[Interval]) -> Vec<f64> {
    load_intervals(time_series)
        .iter()
        .filter_map(|i| i.gauges.get(CPU_GAUGE).copied())
        .filter(|v| v.is_finite())
        .collect()
}

/// Whether the generator was saturated: of the load's intervals with a CPU reading (at least
/// [`MIN_SATURATION_INTERVALS`]), more than half were above [`SATURATION_PERCENT`] — the median
/// reading was above it. A majority rather than the mean: a few idle seconds do not hide a
/// generator pinned for the rest, and one busy burst does not condemn an idle one.
pub fn saturated(time_series: &[Interval]) -> bool {
    let cpu = load_cpu(time_series);
    let above = cpu.iter().filter(|v| **v > SATURATION_PERCENT).count();
    cpu.len() >= MIN_SATURATION_INTERVALS && 2 * above > cpu.len()
}

/// A note for the summary of a run whose generator was [saturated], `None` otherwise.
pub fn saturation_note(time_series: &[Interval]) -> Option<String> {
    if !saturated(time_series) {
        return None;
    }
    let cpu = load_cpu(time_series);
    let above = cpu.iter().filter(|v| **v > SATURATION_PERCENT).count();
    let mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
    Some(format!(
        "{NOTE_START} {SATURATION_PERCENT:.0} % ({above} of {} loaded seconds, mean {mean:.0} % of the cores it may use): its latencies include its own queueing; give it more CPU or split the load over a fleet (`thumper fleet`)",
        cpu.len()
    ))
}

/// Whether `note` is one [`saturation_note`] wrote.
pub fn is_saturation_note(note: &str) -> bool {
    note.starts_with(NOTE_START)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_last_parenthesis() {
        // A command name with spaces and parentheses, as `prctl(PR_SET_NAME)` allows.
        let stat = "4242 (thumper (worker) 1) R 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 2000000 3000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(
            parse_cpu_ticks("1 (a) S 0 1 1 0 -1 0 0 0 0 0 7 3 0 0"),
            Some(10)
        );
        assert_eq!(parse_cpu_ticks("1 (a) S 0 1"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tthumper\nVmPeak:\t 90000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kb(status), Some(51200));
        assert_eq!(parse_vm_rss_kb("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn cpu_is_a_share_of_the_cores_it_may_use() {
        // 2 s of CPU in 1 s of wall time on 4 cores is half of them.
        assert_eq!(cpu_percent(200, 100.0, 1.0, 4.0), 50.0);
        assert_eq!(cpu_percent(50, 100.0, 1.0, 0.5), 100.0);
        assert_eq!(cpu_percent(10, 100.0, 0.0, 4.0), 0.0);
    }

    #[test]
    fn samples_this_process() {
        let mut me = SelfSampler::new();
        let first: BTreeMap<_, _> = me.sample(Instant::now()).into_iter().collect();
        assert!(first[RSS_GAUGE] > 0.0);
        assert!(!first.contains_key(CPU_GAUGE));
        let second: BTreeMap<_, _> = me.sample(Instant::now()).into_iter().collect();
        assert!(second[CPU_GAUGE] >= 0.0);
    }

    fn series(points: &[(u64, Option<f64>)]) -> Vec<Interval> {
        points
            .iter()
            .enumerate()
            .map(|(k, (vus, cpu))| Interval {
                t_s: k as f64 + 1.0,
                len_s: 1.0,
                vus: *vus,
                gauges: cpu
                    .map(|c| BTreeMap::from([(CPU_GAUGE.to_owned(), c)]))
                    .unwrap_or_default(),
                ..Interval::default()
            })
            .collect()
    }

    #[test]
    fn a_majority_of_busy_loaded_seconds_is_saturation() {
        // Idle set-up and drain around five loaded seconds, three of them pinned.
        let s = series(&[
            (0, Some(99.0)),
            (10, Some(95.0)),
            (10, Some(97.0)),
            (10, Some(40.0)),
            (10, Some(93.0)),
            (10, Some(50.0)),
            (0, Some(99.0)),
        ]);
        assert!(saturated(&s));
        let note = saturation_note(&s).unwrap();
        assert!(note.contains("3 of 5"), "{note}");
        assert!(is_saturation_note(&note));
    }

    #[test]
    fn half_or_fewer_busy_seconds_is_not() {
        let s = series(&[
            (10, Some(95.0)),
            (10, Some(97.0)),
            (10, Some(40.0)),
            (10, Some(30.0)),
        ]);
        assert!(!saturated(&s));
        assert_eq!(saturation_note(&s), None);
    }

    #[test]
    fn too_few_readings_or_none_is_not() {
        assert!(!saturated(&series(&[(10, Some(99.0)), (10, Some(99.0))])));
        assert!(!saturated(&series(&[(10, None), (10, None), (10, None)])));
        assert!(!saturated(&[]));
        // Busy only while no VU ran (set-up, drain): not the load's doing.
        assert!(!saturated(&series(&[
            (0, Some(99.0)),
            (0, Some(99.0)),
            (0, Some(99.0)),
            (1, Some(10.0)),
        ])));
    }

    #[test]
    fn an_interval_without_busy_vus_inside_the_load_still_counts() {
        let s = series(&[(5, Some(95.0)), (0, Some(96.0)), (5, Some(97.0)), (0, None)]);
        assert_eq!(load_cpu(&s), vec![95.0, 96.0, 97.0]);
        assert!(saturated(&s));
    }
}
