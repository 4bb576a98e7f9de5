//! `thumper compare BASELINE CURRENT`: is the current run slower than the baseline by more than
//! the allowed margin? Pure functions over two summaries; the CLI prints
//! [`comparison_markdown`] and exits with [`Comparison::exit_code`].
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
//!    (latency up, throughput down) is a regression; better by as much is an improvement.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::markdown::escape;
use super::model;
use crate::metrics::summary::{Summary, TrendStats, Verdict};

/// Exit code for a regression beyond the limit (the same as a failed threshold).
pub const EXIT_REGRESSION: i32 = 99;
/// Exit code when the runs cannot be compared (too few samples, different scenarios).
pub const EXIT_REFUSED: i32 = 98;
/// `--max-regression` when not given, in percent.
pub const DEFAULT_MAX_REGRESSION_PCT: f64 = 10.0;
/// Samples the main trend of each run needs before anything is judged.
pub const MIN_SAMPLES: u64 = 1_000;
/// Samples at or beyond a percentile (and samples for a throughput) needed to judge it.
pub const MIN_TAIL_SAMPLES: f64 = 10.0;
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

    fn of(self, t: &TrendStats) -> f64 {
        match self {
            Stat::P50 => t.p50_us as f64,
            Stat::P95 => t.p95_us as f64,
            Stat::P99 => t.p99_us as f64,
            Stat::Throughput => t.rate_per_s,
        }
    }
}

/// One metric and statistic, both runs' values (µs for percentiles, per second for throughput).
#[derive(Debug, Clone, PartialEq)]
pub struct ComparisonRow {
    pub metric: String,
    pub stat: Stat,
    pub baseline: f64,
    pub current: f64,
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
    pub fn exit_code(&self) -> i32 {
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
pub fn judge(stat: Stat, baseline: f64, current: f64, max_regression_pct: f64) -> Change {
    let delta = current - baseline;
    if delta.abs() < stat.floor() || delta == 0.0 {
        return Change::WithinNoise;
    }
    let worse = if stat.higher_is_better() {
        -delta
    } else {
        delta
    };
    if baseline <= 0.0 {
        // Beyond the floor from nothing: the direction is all there is to judge.
        return if worse > 0.0 {
            Change::Regressed
        } else {
            Change::Improved
        };
    }
    let pct = worse / baseline * 100.0;
    if pct > max_regression_pct {
        Change::Regressed
    } else if pct < -max_regression_pct {
        Change::Improved
    } else {
        Change::WithinNoise
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
                        t.count, MIN_SAMPLES
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
            let (bv, cv) = (stat.of(b), stat.of(cur));
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
                change_pct: (bv > 0.0).then(|| (cv - bv) / bv * 100.0),
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

fn value(stat: Stat, v: f64) -> String {
    match stat {
        Stat::Throughput => format!("{} /s", model::number(v)),
        _ => format!("{} ms", model::ms(v)),
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
        "Limit: {}% worse · noise floor {floor} ms (latency), {} /s (throughput) · percentiles \
         need {} samples beyond them\n",
        model::number(c.max_regression_pct),
        model::number(THROUGHPUT_FLOOR_PER_S),
        MIN_TAIL_SAMPLES
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_relative_change_beyond_the_floor() {
        assert_eq!(
            judge(Stat::P99, 10_000.0, 12_000.0, 10.0),
            Change::Regressed
        );
        assert_eq!(
            judge(Stat::P99, 10_000.0, 10_900.0, 10.0),
            Change::WithinNoise
        );
        assert_eq!(judge(Stat::P99, 10_000.0, 8_000.0, 10.0), Change::Improved);
        // 100% slower, but only 150 µs: noise.
        assert_eq!(judge(Stat::P50, 150.0, 300.0, 10.0), Change::WithinNoise);
        assert_eq!(
            judge(Stat::Throughput, 1000.0, 800.0, 10.0),
            Change::Regressed
        );
        assert_eq!(
            judge(Stat::Throughput, 1000.0, 1200.0, 10.0),
            Change::Improved
        );
        assert_eq!(judge(Stat::Throughput, 5.0, 4.5, 5.0), Change::WithinNoise);
        assert_eq!(judge(Stat::P99, 0.0, 5_000.0, 10.0), Change::Regressed);
    }

    #[test]
    fn samples_needed_per_stat() {
        assert_eq!(Stat::P99.samples_needed(), 1_000);
        assert_eq!(Stat::P95.samples_needed(), 200);
        assert_eq!(Stat::P50.samples_needed(), 20);
        assert_eq!(Stat::Throughput.samples_needed(), 10);
    }
}
