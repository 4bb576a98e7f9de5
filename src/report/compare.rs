//! `thumper compare BASELINE CURRENT`: is the current run slower than the baseline by more than
//! the allowed margin? [`compare`] is a pure function over two summaries; [`run_cli`] reads the
//! files, prints [`comparison_markdown`] and returns the exit code.
//!
//! What is compared: for every latency trend both runs have (`query_duration`, each
//! `query_duration{query:NAME}`, `service_time…`, `event_latency…`; not `scheduling_lag`, which
//! measures the load generator), its p50, p95 and p99, and its throughput (samples per second).
//!
//! Noise handling, in order:
//! 1. **Sampling noise.** A percentile estimated from n samples is uncertain: the sample at rank
//!    n·q moves by about √(n·q·(1−q)) ranks between runs of the same system. Each run's
//!    percentile gets a distribution-free 95 % confidence interval from its full-run histogram
//!    (the samples at the binomial ranks of [`interval_ranks`]), and a change counts only when
//!    the two intervals do not overlap. Without this a p99 from 1,500 samples moves 15 % between
//!    two runs of the same code. There is no minimum sample count: where no sample bounds an end
//!    (a p99 from fewer than 368 samples has no upper bound) that end is open, and intervals
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

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use super::markdown::escape;
use super::{model, read_summary};
use crate::exit;
use crate::metrics::codec;
use crate::metrics::summary::{Summary, TrendStats, Verdict};

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
}

impl Stat {
    /// The statistic's column label.
    pub fn label(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::Throughput => "throughput",
        }
    }

    fn higher_is_better(self) -> bool {
        self == Stat::Throughput
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

    /// The statistic of a trend, with the interval read from its histogram.
    pub fn of(stat: Stat, t: &TrendStats) -> Estimate {
        let (value, q) = match stat {
            Stat::P50 => (t.p50_us as f64, 0.5),
            Stat::P95 => (t.p95_us as f64, 0.95),
            Stat::P99 => (t.p99_us as f64, 0.99),
            Stat::Throughput => return Estimate::exact(t.rate_per_s),
        };
        let Ok(h) = codec::decode(&t.histogram) else {
            return Estimate::unbounded(value);
        };
        let n = h.len();
        if n == 0 {
            return Estimate::unbounded(value);
        }
        let (low, high) = interval_ranks(n, q);
        // The sample at rank r (1 = the smallest): the quantile half a rank below it.
        let at = |r: u64| h.value_at_quantile((r as f64 - 0.5) / n as f64) as f64;
        Estimate {
            value,
            low: low.map_or(f64::NEG_INFINITY, |r| at(r).min(value)),
            high: high.map_or(f64::INFINITY, |r| at(r).max(value)),
        }
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
        for stat in [Stat::P50, Stat::P95, Stat::P99, Stat::Throughput] {
            let (bv, cv) = (Estimate::of(stat, b), Estimate::of(stat, cur));
            c.rows.push(ComparisonRow {
                metric: name.clone(),
                stat,
                baseline: bv,
                current: cv,
                change_pct: (bv.value > 0.0).then(|| (cv.value - bv.value) / bv.value * 100.0),
                verdict: judge(stat, bv, cv, max_regression_pct),
            });
        }
    }
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

fn value(stat: Stat, e: Estimate) -> String {
    let v = model::ms(e.value);
    match (e.low.is_finite(), e.high.is_finite()) {
        _ if stat == Stat::Throughput => format!("{} /s", model::number(e.value)),
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
         counts only when the 95 % confidence intervals (in brackets) do not overlap\n",
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
            value(r.stat, r.baseline),
            value(r.stat, r.current),
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
