//! The load generator's own CPU and memory, read from `/proc/self` once per interval and sent as
//! gauges (`generator_cpu_percent`, `generator_rss_mb`) the way the PgBouncer poller sends its
//! own: a generator whose CPU is the bottleneck measures its own queueing, not the target's, and
//! the report must say so ([`saturated`], [`saturation_note`]).
//!
//! CPU is a share of the cores the process may use, so 100 % means every one of them was busy,
//! on a laptop or in a pod limited to half a core alike. The cores are the CPUs of its affinity
//! mask, capped by its cgroup's CPU quota read as a fraction ([`cpu_limit`]):
//! `available_parallelism` rounds a 0.5-core quota up to 1 (the gauge then tops out near 50 %
//! and saturation is never flagged) and a 1.5-core one down to 1.

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

/// The CPU quota of a cgroup v2 `cpu.max` (`"50000 100000"`: 0.5 cores); `None` for no limit
/// (`"max 100000"`) or a file that does not read as one.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period: f64 = fields.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" || fields.next().is_some() {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// The CPU quota of cgroup v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us`; `None` for no
/// limit (a quota of -1) or unreadable values.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// This process's cgroup path for `controller` from `/proc/self/cgroup`: the v2 line (`0::/a/b`)
/// for `None`, the v1 line listing the controller (`4:cpu,cpuacct:/a/b`) otherwise.
pub fn cgroup_path<'a>(proc_cgroup: &'a str, controller: Option<&str>) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match controller {
            None => id == "0" && controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        wanted.then_some(path)
    })
}

/// The tightest CPU quota from the cgroup at `path` under `root` up to `root` itself (a parent's
/// limit binds its children), read by `quota_at` from one directory; `None` when none is set.
/// Levels that do not exist are skipped: without a cgroup namespace `/proc/self/cgroup` names a
/// path of the host's tree, while the container sees its own cgroup at the root.
pub fn tightest_limit(
    root: &std::path::Path,
    path: &str,
    quota_at: impl Fn(&std::path::Path) -> Option<f64>,
) -> Option<f64> {
    let mut dir = root.join(path.trim_start_matches('/'));
    let mut limit: Option<f64> = None;
    loop {
        if let Some(q) = quota_at(&dir) {
            limit = Some(limit.map_or(q, |l| l.min(q)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return limit;
        }
    }
}

/// The CPU quota of this process's cgroup in cores (v2's `cpu.max`, else v1's CFS quota);
/// `None` when there is none or it cannot be read.
pub fn cpu_limit() -> Option<f64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    let root = std::path::Path::new("/sys/fs/cgroup");
    if let Some(path) = cgroup_path(&cgroups, None) {
        let v2 = tightest_limit(root, path, |d| parse_cpu_max(&read(d.join("cpu.max"))?));
        if v2.is_some() {
            return v2;
        }
    }
    let path = cgroup_path(&cgroups, Some("cpu"))?;
    tightest_limit(&root.join("cpu"), path, |d| {
        parse_cfs_quota(
            &read(d.join("cpu.cfs_quota_us"))?,
            &read(d.join("cpu.cfs_period_us"))?,
        )
    })
}

/// The CPUs of an affinity list such as `Cpus_allowed_list` of `/proc/self/status` (`0-3,8`).
pub fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => part.trim().parse::<usize>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

/// The cores a process may use: its `cpus`, capped by a cgroup quota `limit` when there is one.
pub fn cores_from(limit: Option<f64>, cpus: usize) -> f64 {
    let cpus = cpus.max(1) as f64;
    match limit {
        Some(l) if l > 0.0 => l.min(cpus),
        _ => cpus,
    }
}

/// The cores this process may use: its affinity mask capped by its cgroup quota, as a fraction.
pub fn cores_allowed() -> f64 {
    // available_parallelism rounds the quota; it stands in only when the mask cannot be read.
    let cpus = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(parse_cpu_list)
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cores_from(cpu_limit(), cpus)
}

/// One `/proc` reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// Resident set size, in MiB (`VmRSS` / 1024).
    pub rss_mb: f64,
    /// CPU use since the previous reading, in percent of the sampler's cores; `None` on the
    /// first reading.
    pub cpu_percent: Option<f64>,
}

/// Reads one process's memory and CPU time from `/proc`: the one reader of the generator's own
/// gauges (`generator_*`) and the gateway's under test (`gateway_*`). Each reading after the
/// first gives the CPU use since the one before.
#[derive(Debug)]
pub struct ProcSampler {
    /// `/proc/self` or `/proc/<pid>`.
    dir: String,
    ticks_per_s: f64,
    cores: f64,
    last: Option<(Instant, u64)>,
}

impl ProcSampler {
    /// This process; CPU in percent of the cores it may use ([`cores_allowed`]: its affinity
    /// capped by its cgroup quota, as a fraction).
    pub fn this_process() -> ProcSampler {
        ProcSampler::at("/proc/self".to_owned(), cores_allowed())
    }

    /// Process `pid`; CPU in percent of one core, as `top` shows it.
    pub fn of_pid(pid: u32) -> ProcSampler {
        ProcSampler::at(format!("/proc/{pid}"), 1.0)
    }

    fn at(dir: String, cores: f64) -> ProcSampler {
        // USER_HZ is 100 on every Linux ABI; sysconf tells the truth where it is not.
        let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .map_or(100.0, |t| t as f64);
        ProcSampler {
            dir,
            ticks_per_s,
            cores,
            last: None,
        }
    }

    /// Reads memory and CPU time at `now`; `None` once the process is gone (or where `/proc`
    /// cannot be read: not Linux).
    pub fn sample(&mut self, now: Instant) -> Option<ProcSample> {
        // Reading procfs is a syscall into the kernel's own memory, never a disk wait: a plain
        // read does not block the runtime.
        let status = std::fs::read_to_string(format!("{}/status", self.dir)).ok()?;
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir)).ok()?;
        let rss_kb = parse_vm_rss_kb(&status)?;
        let ticks = parse_cpu_ticks(&stat)?;
        let cpu = self.last.map(|(at, before)| {
            let wall = now.saturating_duration_since(at).as_secs_f64();
            cpu_percent(
                ticks.saturating_sub(before),
                self.ticks_per_s,
                wall,
                self.cores,
            )
        });
        self.last = Some((now, ticks));
        Some(ProcSample {
            rss_mb: rss_kb as f64 / 1024.0,
            cpu_percent: cpu,
        })
    }

    /// The generator's gauges of one reading of this process: RSS always, CPU from the second
    /// reading on.
    pub fn generator_gauges(&mut self, now: Instant) -> Vec<(&'static str, f64)> {
        let Some(s) = self.sample(now) else {
            return Vec::new();
        };
        let mut gauges = vec![(RSS_GAUGE, s.rss_mb)];
        gauges.extend(s.cpu_percent.map(|c| (CPU_GAUGE, c)));
        gauges
    }
}

/// Samples this process every `every` until `stop`, sending its gauges as samples.
pub async fn poll(start: Instant, every: Duration, samples: Samples, stop: CancellationToken) {
    let mut recorder = Recorder::new(start, samples);
    let mut sampler = ProcSampler::this_process();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let now = Instant::now();
        for (name, value) in sampler.generator_gauges(now) {
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
    fn a_fractional_cgroup_quota_is_a_fraction_of_a_core() {
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000"), None);
        for bad in [
            "",
            "fifty 100000",
            "50000 0",
            "50000 x",
            "0 100000",
            "1 2 3",
        ] {
            assert_eq!(parse_cpu_max(bad), None, "{bad:?}");
        }
        assert_eq!(parse_cfs_quota("50000\n", "100000\n"), Some(0.5));
        assert_eq!(parse_cfs_quota("-1", "100000"), None);
        assert_eq!(parse_cfs_quota("x", "100000"), None);
        // Half a core on a two-CPU machine is half a core, not one; 1.5 is not rounded down.
        assert_eq!(cores_from(Some(0.5), 2), 0.5);
        assert_eq!(cores_from(Some(1.5), 2), 1.5);
        assert_eq!(cores_from(Some(8.0), 2), 2.0);
        assert_eq!(cores_from(None, 4), 4.0);
        // A half-core pod busy for the whole second is saturated.
        assert_eq!(cpu_percent(50, 100.0, 1.0, cores_from(Some(0.5), 2)), 100.0);
    }

    #[test]
    fn the_cgroup_and_its_parents_set_the_limit() {
        let v2 = "0::/kubepods/pod1/ctr\n";
        let hybrid = "4:memory:/x\n1:cpu,cpuacct:/docker/abc\n0::/\n";
        assert_eq!(cgroup_path(v2, None), Some("/kubepods/pod1/ctr"));
        assert_eq!(cgroup_path(v2, Some("cpu")), None);
        assert_eq!(cgroup_path(hybrid, Some("cpu")), Some("/docker/abc"));
        assert_eq!(cgroup_path(hybrid, None), Some("/"));

        let root = tempfile::tempdir().unwrap();
        let ctr = root.path().join("kubepods/pod1/ctr");
        std::fs::create_dir_all(&ctr).unwrap();
        let write = |dir: &std::path::Path, text: &str| {
            std::fs::write(dir.join("cpu.max"), text).unwrap();
        };
        let read =
            |d: &std::path::Path| parse_cpu_max(&std::fs::read_to_string(d.join("cpu.max")).ok()?);
        write(&ctr, "max 100000");
        assert_eq!(
            tightest_limit(root.path(), "/kubepods/pod1/ctr", read),
            None
        );
        write(&root.path().join("kubepods/pod1"), "150000 100000");
        write(root.path(), "200000 100000");
        assert_eq!(
            tightest_limit(root.path(), "/kubepods/pod1/ctr", read),
            Some(1.5)
        );
        // A path of the host's tree that this namespace does not have: the root's limit.
        assert_eq!(tightest_limit(root.path(), "/docker/abc", read), Some(2.0));
    }

    #[test]
    fn affinity_lists_count_cpus() {
        assert_eq!(parse_cpu_list("\t0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }

    #[test]
    fn samples_this_process() {
        let mut me = ProcSampler::this_process();
        let first: BTreeMap<_, _> = me.generator_gauges(Instant::now()).into_iter().collect();
        assert!(first[RSS_GAUGE] > 0.0);
        assert!(!first.contains_key(CPU_GAUGE));
        let second: BTreeMap<_, _> = me.generator_gauges(Instant::now()).into_iter().collect();
        assert!(second[CPU_GAUGE] >= 0.0);
    }

    #[test]
    fn samples_another_process_by_pid() {
        let mut it = ProcSampler::of_pid(std::process::id());
        let first = it.sample(Instant::now()).unwrap();
        assert!(first.rss_mb > 0.0);
        assert!(first.cpu_percent.is_none());
        assert!(it.sample(Instant::now()).unwrap().cpu_percent.is_some());
        assert!(ProcSampler::of_pid(u32::MAX)
            .sample(Instant::now())
            .is_none());
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
