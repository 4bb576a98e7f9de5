//! `thumper compare BASELINE CURRENT`: is the current run slower than the baseline by more than
//! the allowed margin? [`compare`] is a pure function over two summaries; [`run_cli`] reads the
//! files, prints [`comparison_markdown`] and returns the exit code.
//!
//! What is compared: for every latency trend both runs have (`query_duration`, each
//! `query_duration{query:NAME}`, `service_time…`, `event_latency…`; not `scheduling_lag`, which
//! measures the load generator), its p50, p95 and p99, and its throughput (samples per second);
//! then the success rate and each error counter (`failure_rows`): failures that end fast pull
//! latency down, and were once called an improvement.
//!
//! Noise handling, in order:
//! 1. **Sampling noise.** A percentile estimated from n samples is uncertain: the sample at rank
//!    n·q moves by about √(n·q·(1−q)) ranks between runs of the same system. Each run's
//!    percentile gets a distribution-free 95 % confidence interval from its full-run histogram
//!    (the samples at the binomial ranks of [`interval_ranks`]), widened by a block bootstrap
//!    over the run's seconds (`bootstrap`: latencies come in correlated bursts, which the
//!    binomial ranks, taking every sample as independent, do not see), and a change counts only
//!    when the two intervals do not overlap. Without this a p99 from 1,500 samples moves 15 %
//!    between two runs of the same code. There is no minimum sample count: where no sample
//!    bounds an end (a p99 from fewer than 368 samples has no upper bound) that end is open, and
//!    intervals
//!    still separate when their other ends do, so a collapse from 0.9 ms to 5.7 s on 367 samples
//!    is judged. Overlapping intervals are [`Change::WithinNoise`] when both are bounded and
//!    [`Change::Insufficient`] when one is open; neither fails the gate. Throughput has no
//!    interval: a drop beyond the floor and the limit is a regression at any sample count.
//! 2. **Absolute floor.** A latency change smaller than [`LATENCY_FLOOR_US`] (0.2 ms), or a
//!    throughput change smaller than [`THROUGHPUT_FLOOR_PER_S`], is within noise whatever its
//!    percentage, so microsecond jitter on a fast query never fails a gate.
//! 3. **Relative limit.** Beyond the floor, a change worse than `max_regression_pct` percent
//!    (latency up, throughput down) is a regression; better by as much is an improvement.
//! 4. **Refusal.** When the runs are of different scenarios or share no latency trend, or when
//!    nothing regressed and a percentile of the main trend cannot be told (its row is
//!    [`Change::Insufficient`]), the comparison is refused ([`Comparison::refused`]); the CLI
//!    exits with [`exit::NOT_JUDGED`], distinct from a regression. A regression is never refused,
//!    and an untold percentile of a single query's trend only marks its row.
//! 5. **Failures.** The success rate and error shares carry a Wilson interval ([`Estimate::share`]).
//!    A success rate that dropped beyond it and [`SUCCESS_FLOOR`], or errors of a kind where the
//!    baseline had none, regress whatever `max_regression_pct` is (15 % of queries failing is
//!    never "within 20 %"); an error share that grew beyond its interval and the limit regresses.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use super::markdown::escape;
use super::{model, read_summary};
use crate::exit;
use crate::metrics::codec;
use crate::metrics::summary::{
    percentile_rank, value_at_rank, Metric, Summary, TrendStats, Verdict,
};

/// `--max-regression` when not given, in percent.
pub const DEFAULT_MAX_REGRESSION_PCT: f64 = 10.0;
/// Two-sided confidence of a percentile's interval.
pub const CONFIDENCE: f64 = 0.95;
/// z for [`CONFIDENCE`], used in place of the exact binomial beyond [`EXACT_INTERVAL_SAMPLES`].
const CONFIDENCE_Z: f64 = 1.96;
/// Up to this many samples the interval's ranks come from the binomial distribution itself (one
/// pass over 0..n); beyond it the normal approximation, within a rank or two there, keeps a long
/// run's comparison quick.
const EXACT_INTERVAL_SAMPLES: u64 = 100_000;
/// Latency changes smaller than this (µs) are noise.
pub const LATENCY_FLOOR_US: f64 = 200.0;
/// Throughput changes smaller than this (per second) are noise.
pub const THROUGHPUT_FLOOR_PER_S: f64 = 1.0;

/// The verdict on one statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Better than the baseline beyond the floor and the limit.
    Improved,
    /// Worse than the baseline beyond the floor and the limit: fails the gate.
    Regressed,
    /// A change inside the confidence intervals, the floor or the limit.
    WithinNoise,
    /// The confidence intervals overlap and one of them is unbounded: too few samples to tell.
    Insufficient,
}

impl Change {
    /// The text the report's verdict column shows.
    pub fn label(self) -> &'static str {
        match self {
            Change::Improved => "improved",
            Change::Regressed => "regressed",
            Change::WithinNoise => "within noise",
            Change::Insufficient => "too few samples",
        }
    }
}

/// The statistic a row compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stat {
    /// Median latency.
    P50,
    /// 95th-percentile latency.
    P95,
    /// 99th-percentile latency.
    P99,
    /// Samples per second.
    Throughput,
    /// The share of operations that succeeded (`success_rate`).
    Success,
    /// An error counter: its count, judged as a share of all operations.
    Errors,
}

impl Stat {
    /// The statistic's column label.
    pub fn label(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::Throughput => "throughput",
            Stat::Success => "success rate",
            Stat::Errors => "errors",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Stat::Throughput | Stat::Success)
    }

    /// The percentile a latency statistic reads, in percent.
    fn percentile(self) -> Option<f64> {
        match self {
            Stat::P50 => Some(50.0),
            Stat::P95 => Some(95.0),
            Stat::P99 => Some(99.0),
            _ => None,
        }
    }

    fn floor(self) -> f64 {
        if self == Stat::Throughput {
            THROUGHPUT_FLOOR_PER_S
        } else {
            LATENCY_FLOOR_US
        }
    }
}

/// A statistic of one run with its 95 % confidence interval (`low == high == value` for an exact
/// value: throughput). An end the samples cannot bound is infinite: `low` is −∞ when the lower
/// rank falls before the first sample, `high` +∞ when the upper rank falls past the last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The point estimate.
    pub value: f64,
    /// Lower end of the confidence interval (−∞ when unbounded).
    pub low: f64,
    /// Upper end of the confidence interval (+∞ when unbounded).
    pub high: f64,
}

impl Estimate {
    /// A value without an interval.
    pub fn exact(value: f64) -> Estimate {
        Estimate {
            value,
            low: value,
            high: value,
        }
    }

    /// A value about which nothing is known: no samples, or no histogram to read an interval from.
    pub fn unbounded(value: f64) -> Estimate {
        Estimate {
            value,
            low: f64::NEG_INFINITY,
            high: f64::INFINITY,
        }
    }

    /// Both ends of the interval are bounded by samples.
    pub fn is_bounded(&self) -> bool {
        self.low.is_finite() && self.high.is_finite()
    }

    /// The statistic of a trend, with the order-statistic interval read from its full-run
    /// histogram; throughput (and the statistics that are not a trend's) is exact.
    pub fn of(stat: Stat, t: &TrendStats) -> Estimate {
        let (value, q) = match stat {
            Stat::P50 => (t.p50_us as f64, 0.5),
            Stat::P95 => (t.p95_us as f64, 0.95),
            Stat::P99 => (t.p99_us as f64, 0.99),
            Stat::Throughput | Stat::Success | Stat::Errors => {
                return Estimate::exact(t.rate_per_s)
            }
        };
        let Ok(h) = codec::decode(&t.histogram) else {
            return Estimate::unbounded(value);
        };
        let n = h.len();
        if n == 0 {
            return Estimate::unbounded(value);
        }
        let (low, high) = interval_ranks(n, q);
        let at = |r: u64| value_at_rank(&h, r) as f64;
        Estimate {
            value,
            low: low.map_or(f64::NEG_INFINITY, |r| at(r).min(value)),
            high: high.map_or(f64::INFINITY, |r| at(r).max(value)),
        }
    }

    /// The interval stretched to cover `low..=high` as well (a bootstrap's); an open end stays
    /// open.
    pub fn widened(self, (low, high): (f64, f64)) -> Estimate {
        Estimate {
            value: self.value,
            low: self.low.min(low),
            high: self.high.max(high),
        }
    }

    /// The share `k / n` with its Wilson score interval at [`CONFIDENCE`], which stays inside
    /// 0..=1 and is not empty at 0 or at `n` (0 of 1,000 is "below 0.4 %", not "exactly 0").
    pub fn share(k: u64, n: u64) -> Estimate {
        if n == 0 {
            return Estimate::unbounded(0.0);
        }
        let (nf, z2) = (n as f64, CONFIDENCE_Z * CONFIDENCE_Z);
        let p = k as f64 / nf;
        let centre = (p + z2 / (2.0 * nf)) / (1.0 + z2 / nf);
        let half =
            CONFIDENCE_Z / (1.0 + z2 / nf) * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
        Estimate {
            value: p,
            low: (centre - half).clamp(0.0, p),
            high: (centre + half).clamp(p, 1.0),
        }
    }
}

/// Resamples of the block bootstrap; with a fixed seed the verdict is the same on every run.
const BOOTSTRAP_RESAMPLES: usize = 400;
/// The bootstrap's seed.
const BOOTSTRAP_SEED: u64 = 0x0074_6875_6d70_6572;
/// The run's seconds are merged into at most this many blocks, keeping a long run's comparison
/// quick (the blocks are then longer than a second, which only widens what they capture).
const MAX_BLOCKS: usize = 120;
/// Fewer blocks with samples than this make no bootstrap: the order-statistic interval alone.
const MIN_BLOCKS: usize = 5;

/// A trend's samples by block of the run: each block sparse over the run's distinct values.
struct Blocks {
    /// Distinct values (the highest of each histogram bucket), ascending.
    values: Vec<u64>,
    /// Per block, (index into `values`, count).
    blocks: Vec<Vec<(usize, u64)>>,
}

impl Blocks {
    /// The trend's per-interval histograms from the time series; `None` when an interval with
    /// samples has no readable histogram or there are too few blocks.
    fn of(s: &Summary, name: &str) -> Option<Blocks> {
        let mut seconds = Vec::new();
        for i in &s.time_series {
            let Some(t) = i.trends.get(name).filter(|t| t.count > 0) else {
                continue;
            };
            let h = codec::decode(&t.histogram).ok()?;
            let pairs: Vec<(u64, u64)> = h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect();
            seconds.push(pairs);
        }
        if seconds.len() < MIN_BLOCKS {
            return None;
        }
        let per_block = seconds.len().div_ceil(MAX_BLOCKS);
        let mut values: Vec<u64> = seconds.iter().flatten().map(|(v, _)| *v).collect();
        values.sort_unstable();
        values.dedup();
        let index = |v: u64| values.binary_search(&v).expect("collected above");
        let blocks = seconds
            .chunks(per_block)
            .map(|chunk| {
                let mut merged: Vec<(usize, u64)> = chunk
                    .iter()
                    .flatten()
                    .map(|(v, c)| (index(*v), *c))
                    .collect();
                merged.sort_unstable();
                merged.dedup_by(|a, b| {
                    a.0 == b.0 && {
                        b.1 += a.1;
                        true
                    }
                });
                merged
            })
            .collect();
        Some(Blocks { values, blocks })
    }
}

/// A 95 % interval for each of `percentiles` (ascending) of trend `name`, from a block bootstrap
/// over the run's seconds: whole seconds are drawn with replacement, merged, and the percentile
/// read; the interval spans the middle 95 % of the resampled percentiles. Latencies come in
/// correlated bursts (a checkpoint, a pool wait), so the order-statistic interval, which takes
/// every sample as independent, is far too narrow for a tail percentile; drawing whole seconds
/// keeps each burst together and puts run-to-run noise inside the interval. `None` without a
/// time series of histograms (the order-statistic interval stands alone then).
fn bootstrap(s: &Summary, name: &str, percentiles: &[f64]) -> Option<Vec<(f64, f64)>> {
    let Blocks { values, blocks } = Blocks::of(s, name)?;
    let mut rng = SplitMix(BOOTSTRAP_SEED);
    let mut counts = vec![0u64; values.len()];
    let mut draws: Vec<Vec<u64>> = vec![Vec::with_capacity(BOOTSTRAP_RESAMPLES); percentiles.len()];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        counts.iter_mut().for_each(|c| *c = 0);
        let mut n = 0;
        for _ in 0..blocks.len() {
            for (i, c) in &blocks[rng.below(blocks.len())] {
                counts[*i] += c;
                n += c;
            }
        }
        let (mut k, mut below) = (0, 0);
        for (p, out) in percentiles.iter().zip(&mut draws) {
            let rank = percentile_rank(*p, n);
            while below + counts[k] < rank {
                below += counts[k];
                k += 1;
            }
            out.push(values[k]);
        }
    }
    let tail = ((1.0 - CONFIDENCE) / 2.0 * BOOTSTRAP_RESAMPLES as f64).floor() as usize;
    Some(
        draws
            .into_iter()
            .map(|mut d| {
                d.sort_unstable();
                (d[tail] as f64, d[d.len() - 1 - tail] as f64)
            })
            .collect(),
    )
}

/// A small deterministic generator (SplitMix64): the bootstrap needs reproducible draws, not a
/// cryptographic or portable-across-crate-versions stream.
struct SplitMix(u64);

impl SplitMix {
    /// A draw in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((u128::from(z) * n as u128) >> 64) as usize
    }
}

/// Ranks (1 = the smallest of `n` samples) of the samples that bound the `q`-quantile with
/// [`CONFIDENCE`], `None` for an end no sample bounds.
///
/// Distribution-free: the number of samples below the true quantile is Binomial(n, q), so the
/// sample at rank l lies below it with probability P(Bin ≥ l) and the one at rank u above it
/// with probability P(Bin ≤ u − 1). The interval takes the largest l and the smallest u for which
/// each is at least 97.5 %. Exact, because the normal approximation (n·q ± 1.96·√(n·q·(1−q)))
/// is too narrow in a tail with a handful of samples: it would take the 49th of 50 samples for a
/// 97.5 % lower bound of the p99, which it is only 91 % of the time.
pub fn interval_ranks(n: u64, q: f64) -> (Option<u64>, Option<u64>) {
    let tail = (1.0 - CONFIDENCE) / 2.0;
    if n == 0 || q <= 0.0 || q >= 1.0 {
        return (None, None);
    }
    if n > EXACT_INTERVAL_SAMPLES {
        let nf = n as f64;
        let half = CONFIDENCE_Z * (nf * q * (1.0 - q)).sqrt();
        let low = (nf * q - half).floor();
        let high = (nf * q + half).ceil() + 1.0;
        return (
            (low >= 1.0).then_some(low as u64),
            (high <= nf).then_some(high as u64),
        );
    }
    let (ln_q, ln_p) = (q.ln(), (1.0 - q).ln());
    let (mut ln_choose, mut cdf) = (0.0_f64, 0.0_f64);
    let mut low = None;
    for k in 0..n {
        if k > 0 {
            // ln C(n, k) from ln C(n, k − 1).
            ln_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        // cdf = P(Bin ≤ k).
        cdf += (ln_choose + k as f64 * ln_q + (n - k) as f64 * ln_p).exp();
        if cdf <= tail {
            low = Some(k + 1);
        }
        if cdf >= 1.0 - tail {
            return (low, Some(k + 1));
        }
    }
    (low, None)
}

/// One metric and statistic, both runs' values (µs for percentiles, per second for throughput).
#[derive(Debug, Clone, PartialEq)]
pub struct ComparisonRow {
    /// Trend name (`query_duration{query:NAME}`, ...).
    pub metric: String,
    /// Which statistic of the trend.
    pub stat: Stat,
    /// The baseline run's estimate.
    pub baseline: Estimate,
    /// The current run's estimate.
    pub current: Estimate,
    /// (current − baseline) / baseline in percent; `None` when the baseline is 0.
    pub change_pct: Option<f64>,
    /// An error row's counts (baseline, current); its estimates are shares of all operations.
    pub counts: Option<(u64, u64)>,
    /// What the row says about the change.
    pub verdict: Change,
}

/// The outcome of comparing two runs: one row per trend and statistic, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Rows in report order.
    pub rows: Vec<ComparisonRow>,
    /// Some row regressed beyond the limit (never true when refused).
    pub regressed: bool,
    /// Why the runs were not judged; the rows are kept when there are any.
    pub refused: Option<String>,
    /// Things a reader should know that do not change the verdict.
    pub notes: Vec<String>,
    /// The relative limit judged against, in percent.
    pub max_regression_pct: f64,
}

impl Comparison {
    /// 0, [`exit::THRESHOLD`] or [`exit::NOT_JUDGED`].
    pub fn exit_code(&self) -> u8 {
        if self.refused.is_some() {
            exit::NOT_JUDGED
        } else if self.regressed {
            exit::THRESHOLD
        } else {
            0
        }
    }
}

/// The verdict on one statistic: the criterion-style pure function behind every row.
pub fn judge(stat: Stat, baseline: Estimate, current: Estimate, max_regression_pct: f64) -> Change {
    // The intervals must not overlap for the change to be more than sampling noise. When they
    // overlap and one reaches past its samples, the truth could be anywhere beyond: cannot tell.
    let separated = current.low > baseline.high || current.high < baseline.low;
    if !separated {
        return if baseline.is_bounded() && current.is_bounded() {
            Change::WithinNoise
        } else {
            Change::Insufficient
        };
    }
    let delta = current.value - baseline.value;
    if delta.abs() < stat.floor() || delta == 0.0 {
        return Change::WithinNoise;
    }
    let worse = if stat.higher_is_better() {
        -delta
    } else {
        delta
    };
    // Beyond the floor from nothing, the direction is all there is to judge.
    let beyond_limit =
        baseline.value <= 0.0 || (worse / baseline.value * 100.0).abs() > max_regression_pct;
    match (beyond_limit, worse > 0.0) {
        (false, _) => Change::WithinNoise,
        (true, true) => Change::Regressed,
        (true, false) => Change::Improved,
    }
}

/// The statistics compared for each latency trend, in report order.
const TREND_STATS: [Stat; 4] = [Stat::P50, Stat::P95, Stat::P99, Stat::Throughput];

/// A trend's [`TREND_STATS`] in one run: each percentile's order-statistic interval widened by
/// the block `bootstrap` over the run's seconds, where the run has them.
fn estimates(s: &Summary, name: &str, t: &TrendStats) -> Vec<Estimate> {
    let percentiles: Vec<f64> = TREND_STATS.iter().filter_map(|s| s.percentile()).collect();
    let boot = bootstrap(s, name, &percentiles);
    TREND_STATS
        .iter()
        .map(|stat| {
            let e = Estimate::of(*stat, t);
            match (
                &boot,
                percentiles
                    .iter()
                    .position(|p| Some(*p) == stat.percentile()),
            ) {
                (Some(b), Some(i)) => e.widened(b[i]),
                _ => e,
            }
        })
        .collect()
}

/// Error counters compared; a row appears when either run counted some.
const ERROR_COUNTERS: [&str; 5] = [
    "connection_errors",
    "query_errors",
    "incomplete_iterations",
    "tenant_violations",
    "errors",
];
/// A success-rate change smaller than this (a fraction: 0.1 percentage point) is noise.
pub const SUCCESS_FLOOR: f64 = 0.001;

/// Operations a run judged (passes + fails of `success_rate`), or `None` without the metric.
fn operations(s: &Summary) -> Option<u64> {
    match s.metrics.get("success_rate") {
        Some(Metric::Rate(r)) if r.passes + r.fails > 0 => Some(r.passes + r.fails),
        _ => None,
    }
}

/// Rows for what latency does not show: the success rate and each error counter. Failures
/// that end fast make latency look better, so these are judged alongside it.
fn failure_rows(c: &mut Comparison, baseline: &Summary, current: &Summary) {
    let (Some(bn), Some(cn)) = (operations(baseline), operations(current)) else {
        return;
    };
    let passes = |s: &Summary| match s.metrics.get("success_rate") {
        Some(Metric::Rate(r)) => r.passes,
        _ => 0,
    };
    let (bs, cs) = (
        Estimate::share(passes(baseline), bn),
        Estimate::share(passes(current), cn),
    );
    c.rows.push(ComparisonRow {
        metric: "success_rate".to_owned(),
        stat: Stat::Success,
        baseline: bs,
        current: cs,
        change_pct: (bs.value > 0.0).then(|| (cs.value - bs.value) / bs.value * 100.0),
        counts: None,
        verdict: judge_failures(Stat::Success, bs, cs, None, c.max_regression_pct),
    });
    for name in ERROR_COUNTERS {
        let count = |s: &Summary| s.counter(name).map_or(0, |c| c.count);
        let (bk, ck) = (count(baseline), count(current));
        if bk == 0 && ck == 0 {
            continue;
        }
        let (be, ce) = (Estimate::share(bk, bn), Estimate::share(ck, cn));
        c.rows.push(ComparisonRow {
            metric: name.to_owned(),
            stat: Stat::Errors,
            baseline: be,
            current: ce,
            change_pct: (be.value > 0.0).then(|| (ce.value - be.value) / be.value * 100.0),
            counts: Some((bk, ck)),
            verdict: judge_failures(Stat::Errors, be, ce, Some((bk, ck)), c.max_regression_pct),
        });
    }
}

/// The verdict on a success rate or an error share (`counts` for an error row). A success rate
/// that dropped beyond its interval and [`SUCCESS_FLOOR`] is a regression whatever the limit
/// (15 % failing is never "within 20 %"); errors where the baseline had none are one; a grown
/// error share is one when the intervals separate and it grew beyond the limit.
pub fn judge_failures(
    stat: Stat,
    baseline: Estimate,
    current: Estimate,
    counts: Option<(u64, u64)>,
    max_regression_pct: f64,
) -> Change {
    if let Some((0, k)) = counts {
        return if k > 0 {
            Change::Regressed
        } else {
            Change::WithinNoise
        };
    }
    let separated = current.low > baseline.high || current.high < baseline.low;
    let delta = current.value - baseline.value;
    let worse = if stat.higher_is_better() {
        -delta
    } else {
        delta
    };
    let beyond = match stat {
        Stat::Success => delta.abs() >= SUCCESS_FLOOR,
        _ => baseline.value > 0.0 && (delta / baseline.value * 100.0).abs() > max_regression_pct,
    };
    match (separated && beyond, worse > 0.0) {
        (false, _) => Change::WithinNoise,
        (true, true) => Change::Regressed,
        (true, false) => Change::Improved,
    }
}

/// Latency trends `compare` looks at.
fn compared(name: &str) -> bool {
    matches!(
        model::base_name(name),
        "query_duration" | "service_time" | "event_latency"
    )
}

/// Compares two runs. Pure: the CLI reads the files and prints the result.
pub fn compare(baseline: &Summary, current: &Summary, max_regression_pct: f64) -> Comparison {
    let mut c = Comparison {
        rows: Vec::new(),
        regressed: false,
        refused: None,
        notes: Vec::new(),
        max_regression_pct,
    };

    if baseline.scenario.name != current.scenario.name {
        c.refused = Some(format!(
            "the baseline is scenario `{}` and the current run is `{}`; compare runs of the same scenario",
            baseline.scenario.name, current.scenario.name
        ));
        return c;
    }
    let primary = match (
        model::primary_trend(baseline),
        model::primary_trend(current),
    ) {
        (Some((bn, bt)), Some((cn, ct))) if bn == cn => (bn, bt.count, ct.count),
        _ => {
            c.refused = Some(
                "the runs do not share a latency trend (`query_duration` or `event_latency`)"
                    .to_owned(),
            );
            return c;
        }
    };

    for (which, s) in [("baseline", baseline), ("current run", current)] {
        if s.verdict == Verdict::Interrupted || s.stop_reason.is_some() {
            c.notes.push(format!(
                "The {which} stopped early ({}); its numbers cover {:.0} s of {:.0} s planned.",
                s.stop_reason.as_deref().unwrap_or("interrupted"),
                s.duration_s,
                s.planned_duration_s
            ));
        }
    }

    let base_names: BTreeSet<String> = model::trend_names(baseline)
        .into_iter()
        .filter(|n| compared(n))
        .collect();
    for name in model::trend_names(current)
        .into_iter()
        .filter(|n| compared(n))
    {
        let (Some(b), Some(cur)) = (baseline.trend(&name), current.trend(&name)) else {
            c.notes.push(format!("`{name}` is new in the current run."));
            continue;
        };
        let (be, ce) = (
            estimates(baseline, &name, b),
            estimates(current, &name, cur),
        );
        for (stat, (bv, cv)) in TREND_STATS.into_iter().zip(be.into_iter().zip(ce)) {
            c.rows.push(ComparisonRow {
                metric: name.clone(),
                stat,
                baseline: bv,
                current: cv,
                change_pct: (bv.value > 0.0).then(|| (cv.value - bv.value) / bv.value * 100.0),
                counts: None,
                verdict: judge(stat, bv, cv, max_regression_pct),
            });
        }
    }
    failure_rows(&mut c, baseline, current);
    for name in base_names {
        if current.trend(&name).is_none() {
            c.notes.push(format!(
                "`{name}` is in the baseline but not in the current run."
            ));
        }
    }
    c.regressed = c.rows.iter().any(|r| r.verdict == Change::Regressed);
    let (name, base_n, cur_n) = primary;
    let untold: Vec<&str> = c
        .rows
        .iter()
        .filter(|r| r.metric == name && r.verdict == Change::Insufficient)
        .map(|r| r.stat.label())
        .collect();
    if !c.regressed && !untold.is_empty() {
        c.refused = Some(format!(
            "`{name}` {} cannot be told apart: with {} samples in the baseline and {} in the \
             current run the 95 % confidence intervals overlap and reach past the samples (run \
             longer, or at a higher rate)",
            untold.join(", "),
            model::count(base_n),
            model::count(cur_n)
        ));
    }
    c
}

/// A share as a percentage with its interval: `85.0 % (84.2–85.8)`.
fn percent(e: Estimate) -> String {
    let pct = |v: f64| {
        let v = v * 100.0;
        // Close to 100 % the digits that matter are the last ones.
        if v > 99.0 && v < 100.0 {
            format!("{v:.3}")
        } else {
            model::number(v)
        }
    };
    if e.low == e.high {
        return format!("{} %", pct(e.value));
    }
    format!("{} % ({}–{})", pct(e.value), pct(e.low), pct(e.high))
}

fn value(stat: Stat, e: Estimate, count: Option<u64>) -> String {
    let v = model::ms(e.value);
    match (e.low.is_finite(), e.high.is_finite()) {
        _ if stat == Stat::Throughput => format!("{} /s", model::number(e.value)),
        _ if stat == Stat::Success => percent(e),
        _ if stat == Stat::Errors => {
            format!("{} ({})", model::count(count.unwrap_or(0)), percent(e))
        }
        _ if e.low == e.high => format!("{v} ms"),
        (true, true) => format!("{v} ms ({}–{})", model::ms(e.low), model::ms(e.high)),
        (true, false) => format!("{v} ms (≥ {})", model::ms(e.low)),
        (false, true) => format!("{v} ms (≤ {})", model::ms(e.high)),
        (false, false) => format!("{v} ms (no interval)"),
    }
}

/// The comparison as Markdown, for a PR comment or a job summary.
pub fn comparison_markdown(c: &Comparison) -> String {
    let mut md = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let floor = model::ms(LATENCY_FLOOR_US);
    if let Some(reason) = &c.refused {
        let _ = writeln!(md, "### ⚠️ thumper compare: not judged\n");
        let _ = writeln!(md, "{}\n", escape(reason));
        if c.rows.is_empty() {
            return md;
        }
    } else {
        let _ = writeln!(
            md,
            "### {} thumper compare: {}\n",
            if c.regressed { "❌" } else { "✅" },
            if c.regressed {
                "regression"
            } else {
                "no regression"
            }
        );
    }
    let _ = writeln!(
        md,
        "Limit: {}% worse · noise floor {floor} ms (latency), {} /s (throughput) · a change \
         counts only when the 95 % confidence intervals (in brackets) do not overlap · a success \
         rate that dropped, or errors where there were none, fail whatever the limit\n",
        model::number(c.max_regression_pct),
        model::number(THROUGHPUT_FLOOR_PER_S),
    );
    let tally: Vec<String> = [
        Change::Regressed,
        Change::Improved,
        Change::WithinNoise,
        Change::Insufficient,
    ]
    .iter()
    .filter_map(|v| {
        let n = c.rows.iter().filter(|r| r.verdict == *v).count();
        (n > 0).then(|| format!("{n} {}", v.label()))
    })
    .collect();
    let _ = writeln!(md, "**{}**\n", tally.join(" · "));
    let _ = writeln!(
        md,
        "| Metric | Stat | Baseline | Current | Change | Verdict |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|");
    for r in &c.rows {
        let change = r
            .change_pct
            .map_or_else(|| "–".to_owned(), |p| format!("{p:+.1}%"));
        let verdict = match r.verdict {
            Change::Regressed => "❌ regressed".to_owned(),
            Change::Improved => "🟢 improved".to_owned(),
            v => v.label().to_owned(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {change} | {verdict} |",
            escape(&r.metric),
            r.stat.label(),
            value(r.stat, r.baseline, r.counts.map(|c| c.0)),
            value(r.stat, r.current, r.counts.map(|c| c.1)),
        );
    }
    let _ = writeln!(md);
    for n in &c.notes {
        let _ = writeln!(md, "- {}", escape(n));
    }
    if !c.notes.is_empty() {
        let _ = writeln!(md);
    }
    md
}

/// `thumper compare`: reads both summaries, prints the Markdown comparison on stdout (and to
/// `markdown` when given) and returns the exit code: 0, [`exit::THRESHOLD`], [`exit::NOT_JUDGED`],
/// [`exit::BAD_INPUT`] for an unreadable summary, [`exit::FAILED`] when the Markdown file cannot be
/// written.
pub fn run_cli(
    baseline: &Path,
    current: &Path,
    max_regression_pct: f64,
    markdown: Option<&Path>,
) -> u8 {
    // An output that cannot be written is bad input, found before any work.
    if let Some(path) = markdown {
        if let Err(e) = std::fs::File::create(path) {
            eprintln!(
                "thumper compare: --markdown {}: cannot create the file ({e})",
                path.display()
            );
            return exit::BAD_INPUT;
        }
    }
    let read = |p: &Path| {
        read_summary(p).map_err(|e| {
            eprintln!("thumper compare: {e}");
            exit::BAD_INPUT
        })
    };
    let (b, c) = match (read(baseline), read(current)) {
        (Ok(b), Ok(c)) => (b, c),
        _ => return exit::BAD_INPUT,
    };
    let comparison = compare(&b, &c, max_regression_pct);
    let md = comparison_markdown(&comparison);
    print!("{md}");
    if let Some(path) = markdown {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("thumper compare: {}: {e}", path.display());
            return exit::FAILED;
        }
    }
    if let Some(reason) = &comparison.refused {
        eprintln!("thumper compare: not judged: {reason}");
    }
    comparison.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::codec::new_latency_histogram;
    use crate::metrics::summary::{Metric, TrendStats};

    /// A run of scenario `steady` whose `query_duration` holds `n` samples spread evenly over
    /// `low_us..high_us`, recorded over `duration_s`.
    fn run(n: u64, low_us: u64, high_us: u64, duration_s: f64) -> Summary {
        let mut h = new_latency_histogram();
        for i in 0..n {
            // A fixed stride through the range: every value class gets its share.
            let at = (i * 7_919) % n;
            h.record(low_us + (high_us - low_us) * at / n.max(1))
                .unwrap();
        }
        let mut s = Summary::empty();
        s.scenario.name = "steady".to_owned();
        s.duration_s = duration_s;
        s.planned_duration_s = duration_s;
        s.metrics.insert(
            "query_duration".to_owned(),
            Metric::Trend(TrendStats::from_histogram(&h, duration_s, true)),
        );
        s
    }

    fn rows(c: &Comparison) -> Vec<(Stat, Change)> {
        c.rows.iter().map(|r| (r.stat, r.verdict)).collect()
    }

    #[test]
    fn a_collapse_is_a_regression_with_the_samples_there_are() {
        // The case: a quick steady run (18k queries, p50 0.9 ms) against one whose
        // policy was rewritten into a per-row OR (367 queries, p50 5.7 s).
        let baseline = run(18_000, 600, 1_200, 30.0);
        let collapsed = run(367, 5_000_000, 6_400_000, 30.0);
        let c = compare(&baseline, &collapsed, 10.0);
        assert_eq!(c.refused, None);
        assert_eq!(
            c.exit_code(),
            exit::THRESHOLD,
            "{}",
            comparison_markdown(&c)
        );
        assert_eq!(
            rows(&c),
            [
                (Stat::P50, Change::Regressed),
                (Stat::P95, Change::Regressed),
                (Stat::P99, Change::Regressed),
                (Stat::Throughput, Change::Regressed),
            ]
        );
    }

    #[test]
    fn a_throughput_drop_is_a_regression_at_any_sample_count() {
        // Latency unchanged, but a tenth of the queries: 5/s → 0.5/s.
        let c = compare(&run(50, 900, 1_100, 10.0), &run(5, 900, 1_100, 10.0), 10.0);
        assert_eq!(
            c.exit_code(),
            exit::THRESHOLD,
            "{}",
            comparison_markdown(&c)
        );
        assert_eq!(rows(&c)[3], (Stat::Throughput, Change::Regressed));
        // Five samples cannot pin a percentile down: those rows say so and do not fail.
        assert!(rows(&c)[..3]
            .iter()
            .all(|(_, v)| *v == Change::Insufficient));
    }

    #[test]
    fn tiny_runs_whose_intervals_cannot_tell_are_not_judged() {
        // 5 samples each, the current run 30 % slower, the same throughput: no interval is
        // bounded at both ends, and they overlap.
        let c = compare(&run(5, 800, 1_500, 4.0), &run(5, 1_040, 1_950, 4.0), 10.0);
        assert_eq!(
            c.exit_code(),
            exit::NOT_JUDGED,
            "{}",
            comparison_markdown(&c)
        );
        assert!(!c.regressed);
        assert_eq!(
            rows(&c),
            [
                (Stat::P50, Change::Insufficient),
                (Stat::P95, Change::Insufficient),
                (Stat::P99, Change::Insufficient),
                (Stat::Throughput, Change::WithinNoise),
            ]
        );
        let reason = c.refused.as_deref().unwrap();
        assert!(
            reason.contains("`query_duration` p50, p95, p99"),
            "{reason}"
        );
        // The table is still shown under the refusal.
        assert!(comparison_markdown(&c).contains("| query\\_duration | p50 |"));
    }

    #[test]
    fn an_untold_p99_of_the_main_trend_is_not_passed_silently() {
        // 100 samples bound the median (within noise here) but not the p99.
        let c = compare(&run(100, 800, 1_500, 4.0), &run(100, 820, 1_550, 4.0), 10.0);
        assert_eq!(rows(&c)[0], (Stat::P50, Change::WithinNoise));
        assert_eq!(rows(&c)[2], (Stat::P99, Change::Insufficient));
        assert_eq!(
            c.exit_code(),
            exit::NOT_JUDGED,
            "{}",
            comparison_markdown(&c)
        );
    }

    #[test]
    fn tiny_runs_far_apart_are_judged() {
        // 8 samples are enough to bound a median: 1 ms against 5 s is a regression.
        let c = compare(
            &run(8, 800, 1_500, 4.0),
            &run(8, 5_000_000, 6_000_000, 4.0),
            10.0,
        );
        assert_eq!(
            c.exit_code(),
            exit::THRESHOLD,
            "{}",
            comparison_markdown(&c)
        );
        assert_eq!(rows(&c)[0], (Stat::P50, Change::Regressed));
    }

    /// A run of scenario `steady` from its seconds' samples (µs), with the time series of
    /// per-second histograms a real run writes, and `fails` failed queries of SQLSTATE 22012.
    fn seconds(samples: &[Vec<u64>], fails: u64) -> Summary {
        let mut total = new_latency_histogram();
        let mut s = Summary::empty();
        s.scenario.name = "steady".to_owned();
        s.duration_s = samples.len() as f64;
        s.planned_duration_s = s.duration_s;
        for (k, second) in samples.iter().enumerate() {
            let mut h = new_latency_histogram();
            second.iter().for_each(|v| h.record(*v).unwrap());
            total.add(&h).unwrap();
            let mut i = crate::metrics::summary::Interval {
                t_s: k as f64 + 1.0,
                len_s: 1.0,
                vus: 10,
                ..Default::default()
            };
            i.trends.insert(
                "query_duration".to_owned(),
                crate::metrics::summary::IntervalTrend::from_histogram(&h),
            );
            s.time_series.push(i);
        }
        s.metrics.insert(
            "query_duration".to_owned(),
            Metric::Trend(TrendStats::from_histogram(&total, s.duration_s, true)),
        );
        let passes = total.len() - fails;
        s.metrics.insert(
            "success_rate".to_owned(),
            Metric::Rate(crate::metrics::summary::RateStats {
                rate: passes as f64 / total.len() as f64,
                passes,
                fails,
            }),
        );
        let by_class = if fails > 0 {
            [("22012".to_owned(), fails)].into()
        } else {
            Default::default()
        };
        s.metrics.insert(
            "query_errors".to_owned(),
            Metric::Counter(crate::metrics::summary::CounterStats {
                count: fails,
                rate_per_s: fails as f64 / s.duration_s,
                by_class,
            }),
        );
        s
    }

    /// `n` samples a second for `secs` seconds: `base_us` plus an exponential tail of `tail_us`,
    /// every latency of a second in `slow` multiplied by `factor` (a burst: a checkpoint, a
    /// pool wait, another process on the CPU).
    fn bursty(seed: u64, secs: usize, n: usize, slow: &[usize], factor: f64) -> Vec<Vec<u64>> {
        let mut rng = SplitMix(seed);
        let mut u = move || (rng.below(1 << 30) as f64 + 0.5) / (1u64 << 30) as f64;
        (0..secs)
            .map(|k| {
                let f = if slow.contains(&k) { factor } else { 1.0 };
                (0..n)
                    .map(|_| ((1_000.0 - 300.0 * u().ln()) * f) as u64)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn failures_that_end_fast_are_a_regression_not_an_improvement() {
        // The case: 15 % of the queries fail fast with 22012 (division by zero), which
        // pulls the latency percentiles down; judged at --max-regression 20.
        let base = seconds(&bursty(1, 15, 400, &[], 1.0), 0);
        let mut failing = bursty(2, 15, 400, &[], 1.0);
        for second in &mut failing {
            second.iter_mut().take(60).for_each(|v| *v = 150);
        }
        let current = seconds(&failing, 15 * 60);
        let c = compare(&base, &current, 20.0);
        let md = comparison_markdown(&c);
        assert_eq!(c.exit_code(), exit::THRESHOLD, "{md}");
        let verdict = |metric: &str| {
            c.rows
                .iter()
                .find(|r| r.metric == metric)
                .map(|r| (r.stat, r.verdict))
        };
        assert_eq!(
            verdict("success_rate"),
            Some((Stat::Success, Change::Regressed))
        );
        assert_eq!(
            verdict("query_errors"),
            Some((Stat::Errors, Change::Regressed))
        );
        assert!(
            md.contains("| query\\_errors | errors | 0 (0 % (0–0.064)) | 900 (15"),
            "{md}"
        );
        // The same run against itself judges nothing.
        assert_eq!(compare(&current, &current, 20.0).exit_code(), 0);
    }

    #[test]
    fn an_error_share_that_grew_beyond_noise_and_the_limit_regressed() {
        let share = |k, n| Estimate::share(k, n);
        let j = |b, c, counts| judge_failures(Stat::Errors, b, c, Some(counts), 10.0);
        // 1 % to 3 % of 10,000: the intervals separate, +200 %.
        assert_eq!(
            j(share(100, 10_000), share(300, 10_000), (100, 300)),
            Change::Regressed
        );
        // 100 to 110 of 10,000: +10 %, inside the intervals.
        assert_eq!(
            j(share(100, 10_000), share(110, 10_000), (100, 110)),
            Change::WithinNoise
        );
        assert_eq!(
            j(share(300, 10_000), share(100, 10_000), (300, 100)),
            Change::Improved
        );
        // Errors where there were none.
        assert_eq!(
            j(share(0, 10_000), share(1, 10_000), (0, 1)),
            Change::Regressed
        );
        // A success rate 0.05 points lower on a million is beyond its interval but under the
        // floor; 0.5 points lower is a regression whatever the limit.
        let s = |k| Estimate::share(k, 1_000_000);
        let js = |b, c| judge_failures(Stat::Success, b, c, None, 50.0);
        assert_eq!(js(s(1_000_000), s(999_500)), Change::WithinNoise);
        assert_eq!(js(s(1_000_000), s(995_000)), Change::Regressed);
        let w = Estimate::share(0, 1_000);
        assert!(w.low == 0.0 && (0.003..0.005).contains(&w.high), "{w:?}");
    }

    #[test]
    fn run_to_run_bursts_are_noise_and_a_collapse_is_not() {
        // Two runs of one system whose seconds are now and then twice as slow (a burst), 2 and
        // 5 of 30 seconds: every sample independent, the p99s look far apart.
        let a = seconds(&bursty(3, 30, 1_000, &[4, 17], 2.0), 0);
        let b = seconds(&bursty(4, 30, 1_000, &[2, 9, 15, 22, 27], 2.0), 0);
        let t = |s: &Summary| s.trend("query_duration").unwrap().clone();
        let old = judge(
            Stat::P95,
            Estimate::of(Stat::P95, &t(&a)),
            Estimate::of(Stat::P95, &t(&b)),
            10.0,
        );
        assert_eq!(old, Change::Regressed, "the order statistics alone");
        let c = compare(&a, &b, 10.0);
        assert_eq!(c.exit_code(), 0, "{}", comparison_markdown(&c));
        // Deterministic: the same verdicts and intervals every time.
        assert_eq!(compare(&a, &b, 10.0), c);
        // The same system 60 % slower throughout is still a regression.
        let scaled: Vec<Vec<u64>> = bursty(5, 30, 1_000, &[6, 20], 2.0)
            .into_iter()
            .map(|sec| sec.into_iter().map(|v| v * 16 / 10).collect())
            .collect();
        let slow = seconds(&scaled, 0);
        let c = compare(&a, &slow, 10.0);
        assert_eq!(
            c.exit_code(),
            exit::THRESHOLD,
            "{}",
            comparison_markdown(&c)
        );
        assert_eq!(rows(&c)[0], (Stat::P50, Change::Regressed));
    }

    fn j(stat: Stat, b: f64, c: f64) -> Change {
        judge(stat, Estimate::exact(b), Estimate::exact(c), 10.0)
    }

    #[test]
    fn judges_relative_change_beyond_the_floor() {
        assert_eq!(j(Stat::P99, 10_000.0, 12_000.0), Change::Regressed);
        assert_eq!(j(Stat::P99, 10_000.0, 10_900.0), Change::WithinNoise);
        assert_eq!(j(Stat::P99, 10_000.0, 8_000.0), Change::Improved);
        // 100% slower, but only 150 µs: noise.
        assert_eq!(j(Stat::P50, 150.0, 300.0), Change::WithinNoise);
        assert_eq!(j(Stat::Throughput, 1000.0, 800.0), Change::Regressed);
        assert_eq!(j(Stat::Throughput, 1000.0, 1200.0), Change::Improved);
        assert_eq!(j(Stat::Throughput, 5.0, 4.5), Change::WithinNoise);
        assert_eq!(j(Stat::P99, 0.0, 5_000.0), Change::Regressed);
    }

    #[test]
    fn overlapping_intervals_are_noise() {
        let base = Estimate {
            value: 10_000.0,
            low: 8_000.0,
            high: 14_000.0,
        };
        let slower = |low| Estimate {
            value: 13_000.0,
            low,
            high: 16_000.0,
        };
        assert_eq!(
            judge(Stat::P99, base, slower(11_000.0), 10.0),
            Change::WithinNoise
        );
        assert_eq!(
            judge(Stat::P99, base, slower(14_500.0), 10.0),
            Change::Regressed
        );
    }

    #[test]
    fn an_unbounded_interval_that_overlaps_cannot_tell() {
        let base = Estimate {
            value: 1_000.0,
            low: 900.0,
            high: 1_100.0,
        };
        let wide = |low, high| Estimate {
            value: 1_500.0,
            low,
            high,
        };
        // Could be anywhere above 1,050 µs: maybe the same, maybe far worse.
        assert_eq!(
            judge(Stat::P99, base, wide(1_050.0, f64::INFINITY), 10.0),
            Change::Insufficient
        );
        // Above 1,200 µs for sure: worse, however far the upper end reaches.
        assert_eq!(
            judge(Stat::P99, base, wide(1_200.0, f64::INFINITY), 10.0),
            Change::Regressed
        );
        assert_eq!(
            judge(Stat::P99, base, Estimate::unbounded(1_500.0), 10.0),
            Change::Insufficient
        );
    }

    #[test]
    fn interval_ranks_are_the_binomial_ones() {
        // The median of 6: min and max cover it with 1 − 2/64 = 96.9 %; of 5, only 93.8 %.
        assert_eq!(interval_ranks(6, 0.5), (Some(1), Some(6)));
        assert_eq!(interval_ranks(5, 0.5), (None, None));
        // The textbook median interval of 100 samples: ranks 40 and 61.
        assert_eq!(interval_ranks(100, 0.5), (Some(40), Some(61)));
        // p99 of 50: the 48th sample is below it with 98.6 % (the 49th with only 91 %), and no
        // sample is above it with 97.5 %; the max is, from 1 − 0.99^n ≥ 97.5 %, i.e. n ≥ 368.
        assert_eq!(interval_ranks(50, 0.99), (Some(48), None));
        assert_eq!(interval_ranks(367, 0.99).1, None);
        assert_eq!(interval_ranks(368, 0.99).1, Some(368));
        // Beyond the exact range the normal approximation takes over, close to the exact ranks.
        let (exact, approx) = (interval_ranks(100_000, 0.99), interval_ranks(100_001, 0.99));
        let (l, h) = (exact.0.unwrap(), exact.1.unwrap());
        assert!(
            (98_930..=98_940).contains(&l) && (99_060..=99_070).contains(&h),
            "{exact:?}"
        );
        assert!(approx.0.unwrap().abs_diff(l) <= 2 && approx.1.unwrap().abs_diff(h) <= 2);
    }

    #[test]
    fn intervals_are_unbounded_where_no_sample_bounds_them() {
        let t = |n| {
            run(n, 1_000, 2_000, 1.0)
                .trend("query_duration")
                .unwrap()
                .clone()
        };
        assert!(Estimate::of(Stat::P99, &t(367)).high.is_infinite());
        assert!(Estimate::of(Stat::P99, &t(367)).low.is_finite());
        assert!(Estimate::of(Stat::P99, &t(400)).is_bounded());
        assert!(!Estimate::of(Stat::P50, &t(5)).is_bounded());
        let six = Estimate::of(Stat::P50, &t(6));
        assert!(six.is_bounded() && six.low < six.value && six.value < six.high);
        // No samples: nothing is known.
        let empty = TrendStats::default();
        assert!(!Estimate::of(Stat::P50, &empty).low.is_finite());
        assert_eq!(Estimate::of(Stat::Throughput, &t(7)), Estimate::exact(7.0));
    }
}
