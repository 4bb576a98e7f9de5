//! The run summary: the one serialisable report model that `summary.json` holds and every report
//! format (HTML, JUnit, Markdown, HDR log) and the threshold gate read.
//!
//! The model follows k6's: every metric has a name and a type (trend, counter, rate, gauge), and a
//! tagged sub-metric is a metric of its own under the name `metric{tag:value}`, e.g.
//! `query_duration{query:tenant}`. Latency trends are kept in microseconds; the full-run HDR
//! histogram of each trend travels with it (base64 of HdrHistogram's compressed V2 encoding) so a
//! summary can be re-rendered and any percentile re-computed without the raw samples.
//!
//! Schema versioning: `schema_version` is bumped on any change that removes or renames a key.
//! Adding keys is not a breaking change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Current `summary.json` schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// A finished (or interrupted) run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Version of this schema the file was written with ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Version of thumper that wrote the summary.
    pub thumper_version: String,
    /// Which scenario ran.
    pub scenario: ScenarioInfo,
    /// Target address with any password removed.
    pub target: String,
    /// RFC 3339 UTC time the load started.
    pub started_at: String,
    /// Seconds of load actually applied.
    pub duration_s: f64,
    /// Seconds the scenario's stages add up to (after `--time-scale`/`--quick`).
    pub planned_duration_s: f64,
    /// Pass, fail (a threshold failed) or interrupted.
    pub verdict: Verdict,
    /// Why the run stopped early (Ctrl-C, threshold abort, dead target); `None` when it ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// How the run ended; the verdict is decided from it and the thresholds in one place
    /// (`gate::verdict`). Absent in `summary.json` when it ran to plan.
    #[serde(default, skip_serializing_if = "Ending::is_ran_to_plan")]
    pub ending: Ending,
    /// Every threshold with its observed value, in scenario order.
    pub thresholds: Vec<ThresholdResult>,
    /// Run totals by metric name (tagged sub-metrics under `name{tag:value}`).
    pub metrics: BTreeMap<String, Metric>,
    /// One point per aggregation interval (one second by default).
    pub time_series: Vec<Interval>,
    /// Free-form findings worth a reader's attention (e.g. "PgBouncer paused for 15 s").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Extra named series that are not per-interval, such as a capacity search's rate curve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curves: Vec<Curve>,
    /// A fleet run's generators one by one (empty for a single run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStats>,
    /// Where each query's time went: client, PgBouncer and server side by side
    /// (`pg_stat_statements`), and what the server's backends waited on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<super::server::ServerBreakdown>,
    /// The scenarios of a multi-scenario run (or of a scenario with a feeder), when each
    /// started and ended and why; their numbers are the `{scenario:NAME}` metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<ScenarioRun>,
}

/// One scenario of a run, on the run's clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ScenarioRun {
    /// Its name (the `scenario` tag).
    pub name: String,
    /// Its executor, in k6's spelling.
    pub executor: String,
    /// Seconds after the run's start it started (it had not when `ending` is `not_started`).
    pub start_s: f64,
    /// Seconds after the run's start it ended.
    pub end_s: f64,
    /// `ran_to_plan`, `rows_ran_out` (its queue or shuffle feeder had no rows left: not an
    /// error), `stopped` (the run was stopped: Ctrl-C, a threshold abort) or `not_started`.
    pub ending: String,
}

/// One generator of a fleet run, as the fleet's report breaks it down: what it drove, how it
/// ended, and whether its own CPU was the bottleneck (then its latencies include its queueing).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceStats {
    /// Its segment, `I/N`.
    pub segment: String,
    /// Where it ran (host name, or pod name on Kubernetes); empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// How it ended.
    pub state: InstanceState,
    /// Iterations it completed.
    pub iterations: u64,
    /// Queries it completed.
    pub queries: u64,
    /// Its connection and query errors.
    pub errors: u64,
    /// Its own `query_duration` p99, in microseconds (0 without samples).
    pub p99_us: u64,
    /// Its load start, in milliseconds after the fleet's earliest.
    pub start_offset_ms: f64,
    /// Its mean CPU use while loading, in percent of the cores it may use; `None` when unmeasured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Its largest resident memory, in MB; `None` when unmeasured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rss_mb: Option<f64>,
    /// Its CPU stayed above the saturation level: its numbers include its own queueing.
    #[serde(default)]
    pub saturated: bool,
}

/// How a fleet instance ended.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// It ran its share to the end (or to the fleet's stop) and reported.
    #[default]
    Finished,
    /// It stopped early on its own (a signal, its target gone) and reported what it measured.
    Interrupted,
    /// Its process died or it went silent: only what it streamed before is counted.
    Lost,
}

/// The scenario a summary was produced from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioInfo {
    /// The scenario's name.
    pub name: String,
    /// The scenario's free-text description (empty when it has none).
    #[serde(default)]
    pub description: String,
    /// The scenario file, as given on the command line.
    #[serde(default)]
    pub file: String,
    /// Executor name in k6's spelling (`ramping-vus`, `constant-arrival-rate`, ...).
    pub executor: String,
}

/// The run's outcome.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every threshold held.
    Pass,
    /// At least one threshold failed.
    Fail,
    /// Stopped by Ctrl-C or SIGTERM before its end (a threshold abort is a `Fail`).
    Interrupted,
}

impl Verdict {
    /// The lowercase name used in `summary.json` and the reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Interrupted => "interrupted",
        }
    }
}

/// How a run ended. A run that did not run to plan cannot pass: a threshold abort or an output
/// that failed is a `Fail`, the others are `Interrupted`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// It ran its plan to the end (or a fleet's instances all did).
    #[default]
    RanToPlan,
    /// An `abort_on_fail` threshold stopped it.
    Threshold,
    /// Ctrl-C or SIGTERM stopped it, or its fleet's coordinator did.
    Interrupted,
    /// `--out-required` and an output could not deliver.
    OutputFailed,
    /// A fleet lost a worker (it died or went silent): only what it streamed is counted.
    WorkerLost,
    /// It stopped before its plan without saying why (a fleet instance that ended early).
    ShortOfPlan,
}

impl Ending {
    /// Serde's test for leaving the default out of `summary.json`.
    pub fn is_ran_to_plan(&self) -> bool {
        *self == Ending::RanToPlan
    }

    /// The snake_case name used in `summary.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::RanToPlan => "ran_to_plan",
            Ending::Threshold => "threshold",
            Ending::Interrupted => "interrupted",
            Ending::OutputFailed => "output_failed",
            Ending::WorkerLost => "worker_lost",
            Ending::ShortOfPlan => "short_of_plan",
        }
    }
}

/// One threshold and how the run fared against it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdResult {
    /// Metric name with its tag filter, as written in the scenario: `query_duration{query:tenant}`.
    pub metric: String,
    /// The expression as written: `p(99) < 10`.
    pub expression: String,
    /// The value the expression's aggregation produced, in the expression's unit (milliseconds
    /// for durations); `None` when the metric had no samples (which fails the threshold).
    pub observed: Option<f64>,
    /// Whether the threshold held.
    pub ok: bool,
    /// Whether a failure of this threshold stops the run as soon as it is seen.
    #[serde(default)]
    pub abort_on_fail: bool,
    /// Why it was not judged here (a fleet-wide count or rate on one instance's share: `thumper
    /// merge` or the coordinator judges it on the fleet's totals). Not judged counts as held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_judged: Option<String>,
}

/// One metric's run totals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Metric {
    /// A distribution (latencies), with percentiles.
    Trend(TrendStats),
    /// A count of events (iterations, errors, ...).
    Counter(CounterStats),
    /// A share of checks that passed.
    Rate(RateStats),
    /// A sampled value (PgBouncer pool statistics, gateway RSS, ...).
    Gauge(GaugeStats),
}

/// A distribution of durations (or other values) in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrendStats {
    /// Number of samples.
    pub count: u64,
    /// Samples per second over the run's duration.
    pub rate_per_s: f64,
    /// Smallest sample.
    pub min_us: u64,
    /// Mean sample.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// base64 of the HdrHistogram V2 deflate encoding of all samples (microseconds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub histogram: String,
    /// Unit of the values: `us` for durations; trends of other quantities name theirs.
    #[serde(default = "default_unit")]
    pub unit: String,
}

fn default_unit() -> String {
    "us".to_owned()
}

/// Run totals of a counter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CounterStats {
    /// Events over the whole run.
    pub count: u64,
    /// Events per second over the run's duration.
    pub rate_per_s: f64,
    /// Counts per class (SQLSTATE or error kind) where the counter counts errors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_class: BTreeMap<String, u64>,
}

/// Run totals of a pass/fail rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RateStats {
    /// passes / (passes + fails); 0 when there were no samples.
    pub rate: f64,
    /// Samples that passed.
    pub passes: u64,
    /// Samples that failed.
    pub fails: u64,
}

/// Run totals of a sampled value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GaugeStats {
    /// The most recent sample.
    pub last: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// Number of samples taken; a gauge with none has no value.
    pub samples: u64,
}

/// One aggregation interval of the time series.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    /// Seconds since the run started, at the end of this interval.
    pub t_s: f64,
    /// Interval length in seconds (the last one may be shorter).
    pub len_s: f64,
    /// Active virtual users at the end of the interval.
    pub vus: u64,
    /// Counts within this interval: `iterations`, `queries`, `connection_errors`,
    /// `query_errors`, `dropped_iterations`, `tenant_violations`, ...
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Latency within this interval per trend name (`query_duration`,
    /// `query_duration{query:health}`, ...).
    #[serde(default)]
    pub trends: BTreeMap<String, IntervalTrend>,
    /// Sampled values at the end of the interval (`pgbouncer_cl_waiting`, `gateway_rss_mb`, ...).
    #[serde(default)]
    pub gauges: BTreeMap<String, f64>,
}

/// One trend's statistics within one interval, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IntervalTrend {
    /// Samples in the interval.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// base64 HdrHistogram V2 deflate encoding of this interval's samples (for `latency.hlog`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub histogram: String,
}

/// A named x/y series, e.g. arrival rate against p99 from `thumper capacity`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Curve {
    /// The curve's name (a chart title).
    pub name: String,
    /// What the x values are, with their unit.
    pub x_label: String,
    /// What the y values are, with their unit.
    pub y_label: String,
    /// Series name → points (x, y).
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Summary {
    /// A trend by name (`query_duration`, `query_duration{query:tenant}`).
    pub fn trend(&self, name: &str) -> Option<&TrendStats> {
        match self.metrics.get(name) {
            Some(Metric::Trend(t)) => Some(t),
            _ => None,
        }
    }

    /// A counter by name.
    pub fn counter(&self, name: &str) -> Option<&CounterStats> {
        match self.metrics.get(name) {
            Some(Metric::Counter(c)) => Some(c),
            _ => None,
        }
    }

    /// Query names that have a `query_duration{query:NAME}` trend, in name order (not its
    /// sub-metrics such as `query_duration{query:NAME,expected_response:true}`).
    pub fn query_names(&self) -> Vec<String> {
        self.metrics
            .keys()
            .filter_map(|k| {
                k.strip_prefix("query_duration{query:")
                    .and_then(|rest| rest.strip_suffix('}'))
                    .filter(|name| !name.contains(",expected_response:"))
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl Summary {
    /// A summary with nothing in it, for building one field by field.
    pub fn empty() -> Summary {
        Summary {
            schema_version: SCHEMA_VERSION,
            thumper_version: env!("CARGO_PKG_VERSION").to_owned(),
            scenario: ScenarioInfo {
                name: String::new(),
                description: String::new(),
                file: String::new(),
                executor: String::new(),
            },
            target: String::new(),
            started_at: String::new(),
            duration_s: 0.0,
            planned_duration_s: 0.0,
            verdict: Verdict::Pass,
            stop_reason: None,
            ending: Ending::RanToPlan,
            thresholds: Vec::new(),
            metrics: BTreeMap::new(),
            time_series: Vec::new(),
            notes: Vec::new(),
            curves: Vec::new(),
            instances: Vec::new(),
            server: None,
            scenarios: Vec::new(),
        }
    }
}

/// Millionths of a percent: the resolution a percentile is read at, so `p(99.9)` is the exact
/// fraction 999/1000 rather than the float 0.999000…01.
const PERCENTILE_SCALE: u128 = 100_000_000;

/// The rank (1 = the smallest) of the `p`-th percentile of `n` samples: the smallest `r` with
/// `r ≥ p·n/100`, counted in integers. Every percentile thumper reads goes through here (the
/// summary, the threshold gate, intervals, compare), so a threshold and the summary never
/// disagree: in floating point `99.9 / 100 · 1000` is 999.0000000000001 and its ceiling the
/// 1,000th sample, one rank too high. `p` is taken to a millionth of a percent and clamped to
/// 0..=100; 0 for no samples.
pub fn percentile_rank(p: f64, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    let scaled = (p * (PERCENTILE_SCALE / 100) as f64).round() as u128;
    let rank = (scaled * u128::from(n)).div_ceil(PERCENTILE_SCALE);
    (rank as u64).clamp(1, n)
}

/// The sample at `rank` (1 = the smallest) of a histogram, as the highest value its bucket holds;
/// 0 for an empty histogram.
pub fn value_at_rank(h: &hdrhistogram::Histogram<u64>, rank: u64) -> u64 {
    let n = h.len();
    if n == 0 {
        return 0;
    }
    // Half a rank below it: the histogram's ceil(q·n) is then `rank` whatever the rounding.
    h.value_at_quantile((rank.clamp(1, n) as f64 - 0.5) / n as f64)
}

/// The `p`-th percentile (0..=100) of a histogram, at [`percentile_rank`].
pub fn value_at_percentile(h: &hdrhistogram::Histogram<u64>, p: f64) -> u64 {
    value_at_rank(h, percentile_rank(p, h.len()))
}

impl TrendStats {
    /// Run totals of a microsecond histogram over `duration_s`; `with_histogram` embeds the
    /// encoded histogram (what `summary.json` carries; a live abort check does without).
    pub fn from_histogram(
        h: &hdrhistogram::Histogram<u64>,
        duration_s: f64,
        with_histogram: bool,
    ) -> TrendStats {
        if h.is_empty() {
            return TrendStats::default();
        }
        TrendStats {
            count: h.len(),
            rate_per_s: if duration_s > 0.0 {
                h.len() as f64 / duration_s
            } else {
                0.0
            },
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: value_at_percentile(h, 50.0),
            p90_us: value_at_percentile(h, 90.0),
            p95_us: value_at_percentile(h, 95.0),
            p99_us: value_at_percentile(h, 99.0),
            p999_us: value_at_percentile(h, 99.9),
            max_us: h.max(),
            histogram: if with_histogram {
                super::codec::encode(h)
            } else {
                String::new()
            },
            unit: default_unit(),
        }
    }
}

impl IntervalTrend {
    /// One interval's statistics and encoded histogram (empty for an empty histogram).
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> IntervalTrend {
        IntervalTrend {
            count: h.len(),
            p50_us: value_at_percentile(h, 50.0),
            p95_us: value_at_percentile(h, 95.0),
            p99_us: value_at_percentile(h, 99.0),
            max_us: h.max(),
            histogram: if h.is_empty() {
                String::new()
            } else {
                super::codec::encode(h)
            },
        }
    }
}

impl GaugeStats {
    /// Adds a sample to `stats`, starting it on the first one.
    pub fn record(stats: &mut Option<GaugeStats>, value: f64) {
        let g = stats.get_or_insert(GaugeStats {
            last: value,
            min: value,
            max: value,
            samples: 0,
        });
        g.last = value;
        g.min = g.min.min(value);
        g.max = g.max.max(value);
        g.samples += 1;
    }
}
