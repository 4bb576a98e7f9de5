//! `thumper compare BASELINE CURRENT`: is the current run slower than the baseline by more than
//! the allowed margin? [`compare`] is a pure function over two summaries; [`run_cli`] reads the
//! files, prints [`comparison_markdown`] and returns the exit code.
//!
//! What is compared: for every latency trend both runs have (`query_duration`, each
//! `query_duration{query:NAME}`, `service_time…`, `event_latency…`; not `scheduling_lag`, which
//! measures the load generator), its p50, p95 and p99, and its throughput (samples per second).
//!
//! Noise handling, in order:
//! 1. **Refusal.** When either run's main trend has fewer than [`MIN_SAMPLES`] samples, or the
//!    runs are of different scenarios, nothing is judged ([`Comparison::refused`]); the CLI exits
//!    with [`EXIT_REFUSED`], distinct from a regression.
//! 2. **Too few samples for a statistic.** A percentile is judged only when both runs have at
//!    least [`MIN_TAIL_SAMPLES`] samples at or beyond it (p99 needs 1,000 samples, p95 200, p50
//!    20); throughput needs [`MIN_TAIL_SAMPLES`] samples. Otherwise the row is
//!    [`Change::Insufficient`] and never fails the gate.
//! 3. **Absolute floor.** A latency change smaller than [`LATENCY_FLOOR_US`] (0.2 ms), or a
//!    throughput change smaller than [`THROUGHPUT_FLOOR_PER_S`], is within noise whatever its
//!    percentage, so microsecond jitter on a fast query never fails a gate.
//! 4. **Relative limit.** Beyond the floor, a change worse than `max_regression_pct` percent
//!    (latency up, throughput down) is a regression; better by as much is an improvement...
//! 5. **...if it is not sampling noise.** A percentile estimated from n samples is uncertain: the
//!    sample at rank n·q moves by about √(n·q·(1−q)) ranks between runs of the same system. Each
//!    run's percentile gets a distribution-free 95 % confidence interval from its full-run
//!    histogram (the values at ranks n·q ± 1.96·√(n·q·(1−q))), and a change counts only when the
//!    two intervals do not overlap. Without this a p99 from 1,500 samples moves 15 % between two
//!    runs of the same code. Throughput has no interval; the floor and the limit judge it.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use super::markdown::escape;
use super::{model, read_summary};
use crate::metrics::codec;
use crate::metrics::summary::{Summary, TrendStats, Verdict};

/// Exit code for a regression beyond the limit (the same as a failed threshold).
pub const EXIT_REGRESSION: u8 = 99;
/// Exit code when the runs cannot be compared (too few samples, different scenarios): distinct
/// from a regression so a CI job can tell "slower" from "no verdict".
pub const EXIT_REFUSED: u8 = 98;
/// Exit code when a summary cannot be read (missing file, bad JSON, other schema version).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when the Markdown file cannot be written.
pub const EXIT_FAILED: u8 = 1;
/// `--max-regression` when not given, in percent.
pub const DEFAULT_MAX_REGRESSION_PCT: f64 = 10.0;
/// Samples the main trend of each run needs before anything is judged.
pub const MIN_SAMPLES: u64 = 1_000;
/// Samples at or beyond a percentile (and samples for a throughput) needed to judge it.
pub const MIN_TAIL_SAMPLES: f64 = 10.0;
/// z for the two-sided 95 % confidence interval of a percentile.
pub const CONFIDENCE_Z: f64 = 1.96;
/// Latency changes smaller than this (µs) are noise.
pub const LATENCY_FLOOR_US: f64 = 200.0;
/// Throughput changes smaller than this (per second) are noise.
pub const THROUGHPUT_FLOOR_PER_S: f64 = 1.0;

/// The verdict on one statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Improved,
    Regressed,
    WithinNoise,
    Insufficient,
}

impl Change {
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
    P50,
    P95,
    P99,
    Throughput,
}

impl Stat {
    pub fn label(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::Throughput => "throughput",
        }
    }

    /// Samples a run needs for this statistic to mean something.
    pub fn samples_needed(self) -> u64 {
        let beyond = match self {
            Stat::P50 => 0.5,
            Stat::P95 => 0.05,
            Stat::P99 => 0.01,
            Stat::Throughput => 1.0,
        };
        (MIN_TAIL_SAMPLES / beyond).ceil() as u64
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

/// A statistic of one run with its 95 % confidence interval (`low == high == value` when there is
/// none: throughput, or a trend without a histogram).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
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

    /// The statistic of a trend, with the interval read from its histogram when it has one.
    pub fn of(stat: Stat, t: &TrendStats) -> Estimate {
        let (value, q) = match stat {
            Stat::P50 => (t.p50_us as f64, 0.5),
            Stat::P95 => (t.p95_us as f64, 0.95),
            Stat::P99 => (t.p99_us as f64, 0.99),
            Stat::Throughput => return Estimate::exact(t.rate_per_s),
        };
        let Ok(h) = codec::decode(&t.histogram) else {
            return Estimate::exact(value);
        };
        let n = h.len() as f64;
        if n == 0.0 {
            return Estimate::exact(value);
        }
        let spread = CONFIDENCE_Z * (q * (1.0 - q) / n).sqrt();
        Estimate {
            value,
            low: (h.value_at_quantile((q - spread).max(0.0)) as f64).min(value),
            high: (h.value_at_quantile((q + spread).min(1.0)) as f64).max(value),
        }
    }
}

/// One metric and statistic, both runs' values (µs for percentiles, per second for throughput).
#[derive(Debug, Clone, PartialEq)]
pub struct ComparisonRow {
    pub metric: String,
    pub stat: Stat,
    pub baseline: Estimate,
    pub current: Estimate,
    /// (current − baseline) / baseline in percent; `None` when the baseline is 0.
    pub change_pct: Option<f64>,
    pub verdict: Change,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub rows: Vec<ComparisonRow>,
    /// Some row regressed beyond the limit (never true when refused).
    pub regressed: bool,
    /// Why the runs were not judged at all.
    pub refused: Option<String>,
    /// Things a reader should know that do not change the verdict.
    pub notes: Vec<String>,
    pub max_regression_pct: f64,
}

impl Comparison {
    /// 0, [`EXIT_REGRESSION`] or [`EXIT_REFUSED`].
    pub fn exit_code(&self) -> u8 {
        if self.refused.is_some() {
            EXIT_REFUSED
        } else if self.regressed {
            EXIT_REGRESSION
        } else {
            0
        }
    }
}

/// The verdict on one statistic: the criterion-style pure function behind every row.
pub fn judge(stat: Stat, baseline: Estimate, current: Estimate, max_regression_pct: f64) -> Change {
    let delta = current.value - baseline.value;
    if delta.abs() < stat.floor() || delta == 0.0 {
        return Change::WithinNoise;
    }
    let worse = if stat.higher_is_better() {
        -delta
    } else {
        delta
    };
    // The intervals must not overlap for the change to be more than sampling noise.
    let separated = current.low > baseline.high || current.high < baseline.low;
    if !separated {
        return Change::WithinNoise;
    }
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
    match (
        model::primary_trend(baseline),
        model::primary_trend(current),
    ) {
        (Some((bn, bt)), Some((cn, ct))) if bn == cn => {
            for (which, t) in [("baseline", bt), ("current run", ct)] {
                if t.count < MIN_SAMPLES {
                    c.refused = Some(format!(
                        "the {which} has {} `{bn}` samples; at least {} are needed to judge a p99 \
                         (run longer, or at a higher rate)",
                        model::count(t.count),
                        model::count(MIN_SAMPLES)
                    ));
                    return c;
                }
            }
        }
        _ => {
            c.refused = Some(
                "the runs do not share a latency trend (`query_duration` or `event_latency`)"
                    .to_owned(),
            );
            return c;
        }
    }

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
            let needed = stat.samples_needed();
            let verdict = if b.count < needed || cur.count < needed {
                Change::Insufficient
            } else {
                judge(stat, bv, cv, max_regression_pct)
            };
            c.rows.push(ComparisonRow {
                metric: name.clone(),
                stat,
                baseline: bv,
                current: cv,
                change_pct: (bv.value > 0.0).then(|| (cv.value - bv.value) / bv.value * 100.0),
                verdict,
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
    c
}

fn value(stat: Stat, e: Estimate) -> String {
    match stat {
        Stat::Throughput => format!("{} /s", model::number(e.value)),
        _ if e.low == e.high => format!("{} ms", model::ms(e.value)),
        _ => format!(
            "{} ms ({}–{})",
            model::ms(e.value),
            model::ms(e.low),
            model::ms(e.high)
        ),
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
        return md;
    }
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
/// `markdown` when given) and returns the exit code: 0, [`EXIT_REGRESSION`], [`EXIT_REFUSED`],
/// [`EXIT_BAD_INPUT`] for an unreadable summary, [`EXIT_FAILED`] when the Markdown file cannot be
/// written.
pub fn run_cli(
    baseline: &Path,
    current: &Path,
    max_regression_pct: f64,
    markdown: Option<&Path>,
) -> u8 {
    let read = |p: &Path| {
        read_summary(p).map_err(|e| {
            eprintln!("thumper compare: {e}");
            EXIT_BAD_INPUT
        })
    };
    let (b, c) = match (read(baseline), read(current)) {
        (Ok(b), Ok(c)) => (b, c),
        _ => return EXIT_BAD_INPUT,
    };
    let comparison = compare(&b, &c, max_regression_pct);
    let md = comparison_markdown(&comparison);
    print!("{md}");
    if let Some(path) = markdown {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("thumper compare: {}: {e}", path.display());
            return EXIT_FAILED;
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
    fn samples_needed_per_stat() {
        assert_eq!(Stat::P99.samples_needed(), 1_000);
        assert_eq!(Stat::P95.samples_needed(), 200);
        assert_eq!(Stat::P50.samples_needed(), 20);
        assert_eq!(Stat::Throughput.samples_needed(), 10);
    }
}
