//! `--out prometheus-rw=URL`: Prometheus remote write (protobuf, snappy, HTTP POST) with k6's
//! metric names, so dashboards built on k6's output find thumper's data.
//!
//! - Counters are run totals, `k6_<name>_total` (`k6_iterations_total`, `k6_queries_total`,
//!   `k6_query_errors_total{class}`, ...); `success_rate` is the gauge `k6_success_rate`; `vus`
//!   is `k6_vus`; PgBouncer's pool gauges are `thumper_pgbouncer_*`.
//! - Each latency trend is a cumulative native histogram `k6_<name>_seconds`, built from the
//!   intervals' HDR histograms with schema 5 (buckets 2^(1/32) ≈ 2.2 % wide, so
//!   `histogram_quantile` is within 2.2 % of the exact percentile), plus k6's trend-stat gauges
//!   (`k6_query_duration_p99`, ... in seconds, over the samples since the previous push), chosen
//!   as k6 chooses them with `K6_PROMETHEUS_RW_TREND_STATS` (default `p(99)`).
//! - Every series carries `testid`, `scenario`, the `--tag`s, and `query` where the summary's
//!   name has it.
//!
//! A push that fails is not retried: the next one carries the cumulative state, so a counter
//! or histogram loses only resolution. Failures are counted and warned about once.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::prompb;
use super::{exported_trend, split_name, Batch, Delivery, FailureSlot, RunLabels};
use crate::metrics::codec::{decode, new_latency_histogram};
use crate::metrics::summary::{value_at_percentile, Interval, Metric};

/// Native histogram schema: bucket boundaries at powers of 2^(2^-SCHEMA).
pub const SCHEMA: i32 = 5;
/// Classic histograms (for a receiver without native ones) have a boundary at every
/// `CLASSIC_STEP`th native boundary, 2^(1/4) apart (19 % wide buckets), from 2^(CLASSIC_FROM/4)
/// s = 61 µs to 2^(CLASSIC_TO/4) s = 32 s: 77 `le` values and `+Inf`.
pub const CLASSIC_STEP: i32 = 8;
const CLASSIC_FROM: i32 = -56;
const CLASSIC_TO: i32 = 20;

/// The `le` label of classic boundary `j`: 2^(j/4) seconds.
fn classic_le(j: i32) -> String {
    format!("{}", 2f64.powf(f64::from(j) / 4.0))
}

/// One push may take this long before it counts as failed.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// k6's environment variable for the trend-stat gauges.
pub const TREND_STATS_ENV: &str = "K6_PROMETHEUS_RW_TREND_STATS";

/// One trend statistic written as a gauge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrendStat {
    /// The mean (`avg`).
    Avg,
    /// The smallest value (`min`).
    Min,
    /// The median (`med`).
    Med,
    /// The largest value (`max`).
    Max,
    /// The number of values (`count`).
    Count,
    /// Their sum (`sum`).
    Sum,
    /// A percentile, 0 to 100 (`p(99)`).
    Percentile(f64),
}

impl TrendStat {
    /// k6's spelling: `avg`, `min`, `med`, `max`, `count`, `sum`, `p(N)`.
    pub fn parse(text: &str) -> Result<TrendStat, String> {
        Ok(match text.trim() {
            "avg" => TrendStat::Avg,
            "min" => TrendStat::Min,
            "med" => TrendStat::Med,
            "max" => TrendStat::Max,
            "count" => TrendStat::Count,
            "sum" => TrendStat::Sum,
            other => {
                let n = other
                    .strip_prefix("p(")
                    .and_then(|r| r.strip_suffix(')'))
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|n| (0.0..=100.0).contains(n))
                    .ok_or_else(|| {
                        format!("`{other}`: expected avg, min, med, max, count, sum or p(N)")
                    })?;
                TrendStat::Percentile(n)
            }
        })
    }

    /// The metric name's suffix, as k6 writes it: `p99`, `p999`, `avg`, ...
    pub fn suffix(self) -> String {
        match self {
            TrendStat::Avg => "avg".into(),
            TrendStat::Min => "min".into(),
            TrendStat::Med => "med".into(),
            TrendStat::Max => "max".into(),
            TrendStat::Count => "count".into(),
            TrendStat::Sum => "sum".into(),
            TrendStat::Percentile(n) => format!("p{}", n.to_string().replace('.', "")),
        }
    }

    /// The statistic of a microsecond histogram, in seconds (or a count).
    fn of(self, h: &Histogram<u64>) -> f64 {
        let s = |us: f64| us / 1e6;
        match self {
            TrendStat::Avg => s(h.mean()),
            TrendStat::Min => s(h.min() as f64),
            TrendStat::Med => s(value_at_percentile(h, 50.0) as f64),
            TrendStat::Max => s(h.max() as f64),
            TrendStat::Count => h.len() as f64,
            TrendStat::Sum => s(h.mean() * h.len() as f64),
            TrendStat::Percentile(n) => s(value_at_percentile(h, n) as f64),
        }
    }
}

/// The trend stats to write as gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendStats(pub Vec<TrendStat>);

impl TrendStats {
    /// From `K6_PROMETHEUS_RW_TREND_STATS` (comma-separated), else `p(99)`.
    pub fn parse(text: Option<&str>) -> Result<TrendStats, String> {
        match text.filter(|t| !t.trim().is_empty()) {
            None => Ok(TrendStats(vec![TrendStat::Percentile(99.0)])),
            Some(t) => t
                .split(',')
                .map(TrendStat::parse)
                .collect::<Result<_, _>>()
                .map(TrendStats)
                .map_err(|e| format!("{TREND_STATS_ENV}: {e}")),
        }
    }

    /// As [`TrendStats::parse`] reads the environment; bad values were refused by
    /// [`super::check`], so this falls back to the default.
    pub fn from_env() -> TrendStats {
        let text = std::env::var(TREND_STATS_ENV).ok();
        TrendStats::parse(text.as_deref())
            .unwrap_or_else(|_| TrendStats(vec![TrendStat::Percentile(99.0)]))
    }
}

/// The index of the native-histogram bucket holding `v` (> 0): bucket `i` is
/// (2^((i-1)/2^schema), 2^(i/2^schema)].
pub fn bucket_index(v: f64, schema: i32) -> i32 {
    (v.log2() * f64::from(1 << schema)).ceil() as i32
}

/// A cumulative native histogram of one series.
#[derive(Debug, Default, Clone)]
pub struct NativeHistogram {
    buckets: BTreeMap<i32, u64>,
    zero: u64,
    count: u64,
    sum: f64,
}

impl NativeHistogram {
    /// Adds an HDR histogram of microseconds, as seconds.
    pub fn add(&mut self, h: &Histogram<u64>) {
        for v in h.iter_recorded() {
            let n = v.count_at_value();
            // HDR's highest equivalent value: the value its percentiles report.
            let us = v.value_iterated_to();
            self.count += n;
            if us == 0 {
                self.zero += n;
                continue;
            }
            let secs = us as f64 / 1e6;
            self.sum += secs * n as f64;
            *self.buckets.entry(bucket_index(secs, SCHEMA)).or_default() += n;
        }
    }

    /// The remote-write form: spans of consecutive buckets and delta-encoded counts.
    pub fn to_proto(&self, timestamp: i64) -> prompb::Histogram {
        let mut spans: Vec<prompb::BucketSpan> = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.len());
        let (mut prev_index, mut prev_count) = (None::<i32>, 0i64);
        for (&i, &n) in &self.buckets {
            match prev_index {
                Some(p) if i == p + 1 => spans.last_mut().expect("a span is open").length += 1,
                Some(p) => spans.push(prompb::BucketSpan {
                    offset: i - p - 1,
                    length: 1,
                }),
                None => spans.push(prompb::BucketSpan {
                    offset: i,
                    length: 1,
                }),
            }
            deltas.push(n as i64 - prev_count);
            prev_count = n as i64;
            prev_index = Some(i);
        }
        prompb::Histogram {
            count_int: self.count,
            sum: self.sum,
            schema: SCHEMA,
            zero_threshold: 0.0,
            zero_count_int: self.zero,
            positive_spans: spans,
            positive_deltas: deltas,
            timestamp,
        }
    }
}

/// The remote-write request builder: cumulative state across pushes.
pub struct Series {
    labels: RunLabels,
    stats: TrendStats,
    histograms: BTreeMap<String, NativeHistogram>,
    /// Each trend's samples since the previous push, for the trend-stat gauges.
    window: BTreeMap<String, Histogram<u64>>,
    last_ts: i64,
    /// Classic `_bucket` series instead of native histograms (a receiver without them).
    pub classic: bool,
}

impl Series {
    /// Series of one run, labelled with `labels`, with the trend-stat gauges `stats`.
    pub fn new(labels: RunLabels, stats: TrendStats) -> Series {
        Series {
            labels,
            stats,
            histograms: BTreeMap::new(),
            window: BTreeMap::new(),
            last_ts: i64::MIN,
            classic: false,
        }
    }

    fn labels(&self, name: &str, extra: &[(&str, &str)]) -> Vec<prompb::Label> {
        let mut all: BTreeMap<&str, &str> = self
            .labels
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend(extra.iter().copied());
        all.insert("__name__", name);
        // Remote write wants labels sorted by name.
        all.into_iter()
            .map(|(name, value)| prompb::Label {
                name: name.to_owned(),
                value: value.to_owned(),
            })
            .collect()
    }

    fn sample(
        &self,
        name: &str,
        extra: &[(&str, &str)],
        value: f64,
        ts: i64,
    ) -> prompb::TimeSeries {
        prompb::TimeSeries {
            labels: self.labels(name, extra),
            samples: vec![prompb::Sample {
                value,
                timestamp: ts,
            }],
            histograms: Vec::new(),
        }
    }

    /// Folds a batch into the cumulative histograms and returns the request to push.
    pub fn request(&mut self, batch: &Batch) -> prompb::WriteRequest {
        // Every series of a push gets one timestamp, later than the previous push's: a sample
        // Prometheus already has for a time is refused as out of order.
        let ts = self.labels.epoch_ms(batch.at_us).max(self.last_ts + 1);
        self.last_ts = ts;
        let mut window: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
        for interval in &batch.intervals {
            for (name, t) in &interval.trends {
                if t.count == 0 || !exported_trend(name) {
                    continue;
                }
                let Ok(h) = decode(&t.histogram) else {
                    continue;
                };
                self.histograms.entry(name.clone()).or_default().add(&h);
                let w = window
                    .entry(name.clone())
                    .or_insert_with(new_latency_histogram);
                let _ = w.add(&h);
            }
        }
        self.window = window;
        self.rebuild(batch)
    }

    /// The request for the batch [`Series::request`] last folded in, built again (after a
    /// switch to classic histograms).
    pub fn rebuild(&self, batch: &Batch) -> prompb::WriteRequest {
        let ts = self.last_ts;
        let mut series = Vec::new();
        for (name, h) in &self.histograms {
            let (base, tags) = split_name(name);
            let metric = format!("k6_{base}_seconds");
            if self.classic {
                self.classic_buckets(&mut series, &metric, &tags, h, ts);
                continue;
            }
            series.push(prompb::TimeSeries {
                labels: self.labels(&metric, &tags),
                samples: Vec::new(),
                histograms: vec![h.to_proto(ts)],
            });
        }
        for (name, h) in &self.window {
            let (base, tags) = split_name(name);
            for stat in &self.stats.0 {
                let metric = format!("k6_{base}_{}", stat.suffix());
                series.push(self.sample(&metric, &tags, stat.of(h), ts));
            }
        }
        if let Some(totals) = &batch.totals {
            self.totals(&mut series, totals, ts);
        }
        if let Some(last) = batch.intervals.last() {
            self.gauges(&mut series, last, ts);
        }
        prompb::WriteRequest { timeseries: series }
    }

    /// `METRIC_bucket{le}`, `METRIC_count`, `METRIC_sum`: the classic form of a cumulative
    /// histogram, with boundaries at every [`CLASSIC_STEP`]th native boundary, so each `le`
    /// count is exact.
    fn classic_buckets(
        &self,
        series: &mut Vec<prompb::TimeSeries>,
        metric: &str,
        tags: &[(&str, &str)],
        h: &NativeHistogram,
        ts: i64,
    ) {
        let bucket = format!("{metric}_bucket");
        let mut below = h.zero;
        let mut native = h.buckets.iter().peekable();
        for j in CLASSIC_FROM..=CLASSIC_TO {
            let index = j * CLASSIC_STEP;
            while let Some((_, n)) = native.next_if(|(&i, _)| i <= index) {
                below += n;
            }
            let le = classic_le(j);
            let mut with_le = tags.to_vec();
            with_le.push(("le", &le));
            series.push(self.sample(&bucket, &with_le, below as f64, ts));
        }
        let mut with_le = tags.to_vec();
        with_le.push(("le", "+Inf"));
        series.push(self.sample(&bucket, &with_le, h.count as f64, ts));
        series.push(self.sample(&format!("{metric}_count"), tags, h.count as f64, ts));
        series.push(self.sample(&format!("{metric}_sum"), tags, h.sum, ts));
    }

    fn totals(
        &self,
        series: &mut Vec<prompb::TimeSeries>,
        totals: &BTreeMap<String, Metric>,
        ts: i64,
    ) {
        for (name, m) in totals {
            let (base, tags) = split_name(name);
            // A multi-scenario run's counts go per scenario (its `scenario` label in place of
            // the run's), not also as their sum: adding the series up counts each once.
            let per_scenario = totals
                .keys()
                .any(|k| k.starts_with(base) && k[base.len()..].starts_with("{scenario:"));
            match m {
                Metric::Counter(c) if matches!(tags.as_slice(), [("scenario", _)]) => {
                    let name = format!("k6_{base}_total");
                    series.push(self.sample(&name, &tags, c.count as f64, ts));
                }
                // Errors by class over all queries; the per-query counters would sum twice.
                Metric::Counter(_) if !tags.is_empty() => {}
                Metric::Counter(_) if per_scenario => {}
                Metric::Counter(c) if c.by_class.is_empty() => {
                    series.push(self.sample(&format!("k6_{base}_total"), &[], c.count as f64, ts));
                }
                Metric::Counter(c) => {
                    for (class, n) in &c.by_class {
                        series.push(self.sample(
                            &format!("k6_{base}_total"),
                            &[("class", class.as_str())],
                            *n as f64,
                            ts,
                        ));
                    }
                }
                Metric::Rate(r) => {
                    series.push(self.sample(&format!("k6_{base}"), &tags, r.rate, ts));
                }
                Metric::Trend(_) | Metric::Gauge(_) => {}
            }
        }
        // The closed model drops nothing, and says so: a dashboard's panel shows 0, not no data.
        if !totals.contains_key("dropped_iterations") {
            series.push(self.sample("k6_dropped_iterations_total", &[], 0.0, ts));
        }
    }

    fn gauges(&self, series: &mut Vec<prompb::TimeSeries>, last: &Interval, ts: i64) {
        series.push(self.sample("k6_vus", &[], last.vus as f64, ts));
        for (name, v) in &last.gauges {
            let (base, tags) = split_name(name);
            series.push(self.sample(&format!("thumper_{base}"), &tags, *v, ts));
        }
    }
}

/// The snappy-compressed protobuf body of a request.
pub fn encode(request: &prompb::WriteRequest) -> Vec<u8> {
    let raw = request.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any buffer")
}

/// Starts the pusher on the runtime.
pub fn spawn(
    url: String,
    labels: RunLabels,
    stats: TrendStats,
    mut rx: mpsc::Receiver<Batch>,
    failure: FailureSlot,
) -> JoinHandle<Delivery> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(PUSH_TIMEOUT)
            .user_agent(concat!("thumper/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                while rx.recv().await.is_some() {}
                return Delivery {
                    line: format!("prometheus-rw: no HTTP client ({e})"),
                    failure: Some(format!("no HTTP client ({e})")),
                };
            }
        };
        let shown = super::OutSpec::PrometheusRw(url.clone()).describe();
        let mut series = Series::new(labels, stats);
        let (mut pushed, mut failed) = (0u64, 0u64);
        let mut last_error = None;
        let (mut building, mut intervals) = (Duration::ZERO, 0usize);
        while let Some(batch) = rx.recv().await {
            let started = std::time::Instant::now();
            let body = encode(&series.request(&batch));
            building += started.elapsed();
            intervals += batch.intervals.len();
            let mut result = push(&client, &url, body).await;
            if !series.classic
                && result
                    .as_ref()
                    .is_err_and(|e| e.contains("native histograms"))
            {
                eprintln!(
                    "thumper: warning: {shown} does not take native histograms (Prometheus needs --enable-feature=native-histograms); sending classic _bucket series instead"
                );
                series.classic = true;
                result = push(&client, &url, encode(&series.rebuild(&batch))).await;
            }
            match result {
                Ok(()) => pushed += 1,
                Err(e) => {
                    if failed == 0 {
                        eprintln!(
                            "thumper: warning: {shown}: push failed ({e}); the run goes on, failed pushes are counted"
                        );
                    }
                    failed += 1;
                    failure.set(e.clone());
                    last_error = Some(e);
                }
            }
        }
        tracing::info!(
            output = %shown,
            pushes = pushed + failed,
            intervals,
            us_per_push = building.as_secs_f64() * 1e6 / (pushed + failed).max(1) as f64,
            us_per_interval = building.as_secs_f64() * 1e6 / intervals.max(1) as f64,
            "time building and compressing remote-write requests"
        );
        let line = format!(
            "{shown}: {pushed} push(es) delivered, {failed} failed{}{}",
            if series.classic {
                ", histograms as classic _bucket series (the receiver has no native histograms)"
            } else {
                ""
            },
            last_error
                .as_ref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        );
        Delivery {
            line,
            failure: last_error.map(|e| format!("{failed} push(es) failed, the last with: {e}")),
        }
    })
}

async fn push(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), String> {
    let response = client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .map_err(|e| describe_error(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(format!("HTTP {status}: {}", text.trim()))
}

fn describe_error(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::summary::{CounterStats, IntervalTrend, RateStats};

    #[test]
    fn bucket_bounds_are_powers_of_two_to_the_1_32nd() {
        assert_eq!(bucket_index(1.0, SCHEMA), 0);
        assert_eq!(bucket_index(1.01, SCHEMA), 1);
        assert_eq!(bucket_index(2.0, SCHEMA), 32);
        assert_eq!(bucket_index(0.5, SCHEMA), -32);
        let v: f64 = 0.00123;
        let i = bucket_index(v, SCHEMA);
        let upper = 2f64.powf(f64::from(i) / 32.0);
        let lower = 2f64.powf(f64::from(i - 1) / 32.0);
        assert!(lower < v && v <= upper);
        assert!((upper - lower) / lower < 0.022);
    }

    #[test]
    fn spans_and_deltas_encode_sparse_buckets() {
        let h = NativeHistogram {
            buckets: [(3, 2), (4, 5), (7, 1)].into(),
            count: 8,
            ..Default::default()
        };
        let p = h.to_proto(1);
        assert_eq!(
            p.positive_spans,
            vec![
                prompb::BucketSpan {
                    offset: 3,
                    length: 2
                },
                prompb::BucketSpan {
                    offset: 2,
                    length: 1
                }
            ]
        );
        assert_eq!(p.positive_deltas, vec![2, 3, -4]);
    }

    fn labels() -> RunLabels {
        RunLabels::new(
            &Default::default(),
            "steady",
            "steady-x",
            time::macros::datetime!(2025-01-01 0:00 UTC),
        )
    }

    fn interval(t_s: f64, latencies_us: &[u64]) -> Interval {
        let mut h = new_latency_histogram();
        for v in latencies_us {
            h.record(*v).unwrap();
        }
        Interval {
            t_s,
            len_s: 1.0,
            vus: 4,
            trends: [
                (
                    "query_duration".to_owned(),
                    IntervalTrend::from_histogram(&h),
                ),
                (
                    "query_duration{query:lookup}".to_owned(),
                    IntervalTrend::from_histogram(&h),
                ),
                (
                    "query_duration{query:lookup,expected_response:true}".to_owned(),
                    IntervalTrend::from_histogram(&h),
                ),
            ]
            .into(),
            gauges: [("pgbouncer_cl_waiting".to_owned(), 1.0)].into(),
            ..Interval::default()
        }
    }

    fn find<'a>(r: &'a prompb::WriteRequest, name: &str) -> Vec<&'a prompb::TimeSeries> {
        r.timeseries
            .iter()
            .filter(|s| {
                s.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
            })
            .collect()
    }

    fn label<'a>(s: &'a prompb::TimeSeries, name: &str) -> Option<&'a str> {
        s.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    #[test]
    fn a_request_has_k6_names_labels_and_cumulative_histograms() {
        let mut series = Series::new(labels(), TrendStats::parse(Some("p(99),avg")).unwrap());
        let totals: BTreeMap<String, Metric> = [
            (
                "iterations".to_owned(),
                Metric::Counter(CounterStats {
                    count: 9,
                    ..Default::default()
                }),
            ),
            (
                "query_errors".to_owned(),
                Metric::Counter(CounterStats {
                    count: 3,
                    by_class: [("22012".to_owned(), 3)].into(),
                    ..Default::default()
                }),
            ),
            (
                "success_rate".to_owned(),
                Metric::Rate(RateStats {
                    rate: 0.75,
                    passes: 9,
                    fails: 3,
                }),
            ),
        ]
        .into();
        let first = series.request(&Batch {
            intervals: vec![interval(1.0, &[1_000, 2_000])],
            totals: Some(totals.clone()),
            at_us: 1_000_000,
        });
        let second = series.request(&Batch {
            intervals: vec![interval(2.0, &[4_000])],
            totals: Some(totals),
            at_us: 1_000_000,
        });
        let hist = find(&second, "k6_query_duration_seconds");
        assert_eq!(hist.len(), 1, "only the per-query series");
        assert_eq!(label(hist[0], "query"), Some("lookup"));
        assert_eq!(label(hist[0], "testid"), Some("steady-x"));
        assert_eq!(label(hist[0], "scenario"), Some("steady"));
        let h = &hist[0].histograms[0];
        assert_eq!(h.count_int, 3, "cumulative over both pushes");
        assert!((h.sum - 0.007).abs() < 0.0001, "{}", h.sum);
        let first_ts = find(&first, "k6_vus")[0].samples[0].timestamp;
        assert!(h.timestamp > first_ts, "timestamps move forward");
        // The trend stats cover the samples since the previous push.
        let p99 = find(&second, "k6_query_duration_p99");
        assert!((p99[0].samples[0].value - 0.004).abs() < 0.0001);
        assert_eq!(find(&second, "k6_query_duration_avg").len(), 1);
        assert_eq!(
            find(&second, "k6_iterations_total")[0].samples[0].value,
            9.0
        );
        let errors = find(&second, "k6_query_errors_total");
        assert_eq!(label(errors[0], "class"), Some("22012"));
        assert_eq!(find(&second, "k6_success_rate")[0].samples[0].value, 0.75);
        assert_eq!(find(&second, "k6_vus")[0].samples[0].value, 4.0);
        assert_eq!(find(&second, "thumper_pgbouncer_cl_waiting").len(), 1);
        for s in &second.timeseries {
            let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "labels sorted");
        }
        // The body is snappy over protobuf and decodes back.
        let body = encode(&second);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(
            prompb::WriteRequest::decode(raw.as_slice()).unwrap(),
            second
        );
    }

    #[test]
    fn a_multi_scenario_run_counts_per_scenario_not_also_the_sum() {
        let mut series = Series::new(labels(), TrendStats(Vec::new()));
        let count = |n| {
            Metric::Counter(CounterStats {
                count: n,
                ..Default::default()
            })
        };
        let totals: BTreeMap<String, Metric> = [
            ("iterations".to_owned(), count(9)),
            ("iterations{scenario:reads}".to_owned(), count(5)),
            ("iterations{scenario:writes}".to_owned(), count(4)),
            ("queries".to_owned(), count(7)),
        ]
        .into();
        let r = series.request(&Batch {
            intervals: vec![interval(1.0, &[1_000])],
            totals: Some(totals),
            at_us: 1_000_000,
        });
        let mut got: Vec<(Option<&str>, f64)> = find(&r, "k6_iterations_total")
            .into_iter()
            .map(|s| (label(s, "scenario"), s.samples[0].value))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, [(Some("reads"), 5.0), (Some("writes"), 4.0)]);
        // A counter with no split keeps the run's own scenario label.
        let queries = find(&r, "k6_queries_total");
        assert_eq!(label(queries[0], "scenario"), Some("steady"));
        assert_eq!(queries[0].samples[0].value, 7.0);
    }

    #[test]
    fn classic_buckets_count_exactly_below_each_le() {
        let mut series = Series::new(labels(), TrendStats(Vec::new()));
        series.classic = true;
        // 1 ms, 1.1 ms and 3 ms: le = 2^(-39/4) s ≈ 1.19 ms holds two, 2^(-33/4) ≈ 3.36 ms all.
        let r = series.request(&Batch {
            intervals: vec![interval(1.0, &[1_000, 1_100, 3_000])],
            totals: None,
            at_us: 1_000_000,
        });
        assert!(find(&r, "k6_query_duration_seconds").is_empty());
        let buckets = find(&r, "k6_query_duration_seconds_bucket");
        assert_eq!(buckets.len(), 78);
        let at = |le: &str| {
            buckets
                .iter()
                .find(|s| label(s, "le") == Some(le))
                .unwrap_or_else(|| panic!("no le {le}"))
                .samples[0]
                .value
        };
        assert_eq!(at(&classic_le(-40)), 0.0, "≈ 0.97 ms");
        assert_eq!(at(&classic_le(-39)), 2.0);
        assert_eq!(at(&classic_le(-34)), 2.0, "≈ 2.8 ms");
        assert_eq!(at(&classic_le(-33)), 3.0);
        assert_eq!(at("+Inf"), 3.0);
        assert_eq!(
            find(&r, "k6_query_duration_seconds_count")[0].samples[0].value,
            3.0
        );
    }

    #[test]
    fn trend_stats_parse_as_k6_names_them() {
        let s = TrendStats::parse(Some("p(99.9), med,max")).unwrap();
        let suffixes: Vec<String> = s.0.iter().map(|t| t.suffix()).collect();
        assert_eq!(suffixes, ["p999", "med", "max"]);
        assert_eq!(
            TrendStats::parse(None).unwrap().0,
            vec![TrendStat::Percentile(99.0)]
        );
        assert!(TrendStats::parse(Some("p99")).is_err());
    }
}
