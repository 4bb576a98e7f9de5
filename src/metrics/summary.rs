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
    pub schema_version: u32,
    pub thumper_version: String,
    pub scenario: ScenarioInfo,
    /// Target address with any password removed.
    pub target: String,
    /// RFC 3339 UTC time the load started.
    pub started_at: String,
    /// Seconds of load actually applied.
    pub duration_s: f64,
    /// Seconds the scenario's stages add up to (after `--time-scale`/`--quick`).
    pub planned_duration_s: f64,
    pub verdict: Verdict,
    /// Why the run stopped early (Ctrl-C, threshold abort, dead target); `None` when it ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The scenario file, as given on the command line.
    #[serde(default)]
    pub file: String,
    /// Executor name in k6's spelling (`ramping-vus`, `constant-arrival-rate`, ...).
    pub executor: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Interrupted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdResult {
    /// Metric name with its tag filter, as written in the scenario: `query_duration{query:tenant}`.
    pub metric: String,
    /// The expression as written: `p(99) < 10`.
    pub expression: String,
    /// The value the expression's aggregation produced, in the expression's unit (milliseconds
    /// for durations); `None` when the metric had no samples (which fails the threshold).
    pub observed: Option<f64>,
    pub ok: bool,
    #[serde(default)]
    pub abort_on_fail: bool,
}

/// One metric's run totals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Metric {
    Trend(TrendStats),
    Counter(CounterStats),
    Rate(RateStats),
    Gauge(GaugeStats),
}

/// A distribution of durations (or other values) in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrendStats {
    pub count: u64,
    /// Samples per second over the run's duration.
    pub rate_per_s: f64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CounterStats {
    pub count: u64,
    pub rate_per_s: f64,
    /// Counts per class (SQLSTATE or error kind) where the counter counts errors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_class: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RateStats {
    /// passes / (passes + fails); 0 when there were no samples.
    pub rate: f64,
    pub passes: u64,
    pub fails: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GaugeStats {
    pub last: f64,
    pub min: f64,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IntervalTrend {
    pub count: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// base64 HdrHistogram V2 deflate encoding of this interval's samples (for `latency.hlog`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub histogram: String,
}

/// A named x/y series, e.g. arrival rate against p99 from `thumper capacity`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Curve {
    pub name: String,
    pub x_label: String,
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

    /// Query names that have a `query_duration{query:NAME}` trend, in name order.
    pub fn query_names(&self) -> Vec<String> {
        self.metrics
            .keys()
            .filter_map(|k| {
                k.strip_prefix("query_duration{query:")
                    .and_then(|rest| rest.strip_suffix('}'))
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
            thresholds: Vec::new(),
            metrics: BTreeMap::new(),
            time_series: Vec::new(),
            notes: Vec::new(),
            curves: Vec::new(),
        }
    }
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
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
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
            p50_us: h.value_at_quantile(0.5),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
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
