//! The aggregator: the one task that receives the VUs' sample batches, merges them into
//! per-interval and run-total HDR histograms and counters, prints the live progress line, and
//! checks `abort_on_fail` thresholds while the run goes on.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::codec::new_latency_histogram;
use super::recorder::{Sample, SampleKind};
use super::summary::{
    CounterStats, GaugeStats, Interval, IntervalTrend, Metric, RateStats, TrendStats,
};
use crate::gate::{self, Threshold};
use crate::workload::ErrorKind;

/// Intervals stay open this long after they end, for samples that arrive late.
const GRACE_US: u64 = 1_500_000;

/// What the aggregator needs to know about the run.
pub struct AggregatorConfig {
    pub start: Instant,
    pub interval: Duration,
    pub planned: Duration,
    pub query_names: Vec<String>,
    /// Open model: response time differs from service time, and scheduling lag exists.
    pub open_model: bool,
    /// Current active VUs, written by the executor.
    pub vus: Arc<AtomicU64>,
    pub progress: bool,
    /// Thresholds with `abort_on_fail`, checked once per interval.
    pub abort_thresholds: Vec<Threshold>,
    /// Cancelled when an `abort_on_fail` threshold fails.
    pub abort: CancellationToken,
}

/// What the aggregator hands back at the end.
pub struct Aggregated {
    pub metrics: BTreeMap<String, Metric>,
    pub time_series: Vec<Interval>,
    /// The threshold that aborted the run, if one did.
    pub aborted_by: Option<String>,
    /// Samples that arrived after their interval closed (counted in totals and interval counts,
    /// not in that interval's percentiles).
    pub late_samples: u64,
}

#[derive(Default)]
struct Trends {
    map: BTreeMap<String, Histogram<u64>>,
}

impl Trends {
    fn record(&mut self, name: &str, v: u64) {
        if let Some(h) = self.map.get_mut(name) {
            h.saturating_record(v);
        } else {
            let mut h = new_latency_histogram();
            h.saturating_record(v);
            self.map.insert(name.to_owned(), h);
        }
    }
}

#[derive(Default)]
struct IntervalAcc {
    trends: Trends,
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
}

struct Totals {
    trends: Trends,
    counters: BTreeMap<String, CounterStats>,
    passes: u64,
    fails: u64,
    gauges: BTreeMap<String, GaugeStats>,
}

/// Precomputed metric names per query, so the hot loop formats nothing.
struct QueryKeys {
    duration: String,
    service: String,
    errors: String,
}

pub struct Aggregator {
    cfg: AggregatorConfig,
    keys: Vec<QueryKeys>,
    open: BTreeMap<u64, IntervalAcc>,
    series: Vec<Interval>,
    finalized_through: u64,
    totals: Totals,
    late: u64,
    aborted_by: Option<String>,
    last_progress_len: usize,
}

impl Aggregator {
    pub fn new(cfg: AggregatorConfig) -> Aggregator {
        let keys: Vec<QueryKeys> = cfg
            .query_names
            .iter()
            .map(|q| QueryKeys {
                duration: format!("query_duration{{query:{q}}}"),
                service: format!("service_time{{query:{q}}}"),
                errors: format!("query_errors{{query:{q}}}"),
            })
            .collect();
        let mut counters = BTreeMap::new();
        for name in [
            "iterations",
            "queries",
            "connection_errors",
            "query_errors",
            "tenant_violations",
            "incomplete_iterations",
        ] {
            counters.insert(name.to_owned(), CounterStats::default());
        }
        if cfg.open_model {
            counters.insert("dropped_iterations".into(), CounterStats::default());
        }
        // A query without errors has an error count of 0, not no count at all: a threshold
        // `query_errors{query:NAME} = ["count == 0"]` must pass on it.
        for k in &keys {
            counters.insert(k.errors.clone(), CounterStats::default());
        }
        Aggregator {
            cfg,
            keys,
            open: BTreeMap::new(),
            series: Vec::new(),
            finalized_through: 0,
            totals: Totals {
                trends: Trends::default(),
                counters,
                passes: 0,
                fails: 0,
                gauges: BTreeMap::new(),
            },
            late: 0,
            aborted_by: None,
            last_progress_len: 0,
        }
    }

    /// Receives batches until every sender is gone, ticking once per interval.
    pub async fn run(mut self, mut rx: UnboundedReceiver<Vec<Sample>>) -> Aggregated {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::from_std(self.cfg.start + self.cfg.interval),
            self.cfg.interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => self.ingest(batch),
                    None => break,
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.finish()
    }

    fn interval_us(&self) -> u64 {
        self.cfg.interval.as_micros() as u64
    }

    /// Merges one batch of samples into the intervals and totals.
    pub fn ingest(&mut self, batch: Vec<Sample>) {
        let iv = self.interval_us();
        for s in batch {
            let idx = s.at_us / iv;
            let late = idx < self.finalized_through;
            if late {
                self.late += 1;
            }
            let acc = if late {
                None
            } else {
                Some(self.open.entry(idx).or_default())
            };
            record(&mut self.totals, acc, &self.keys, &s, self.cfg.open_model);
            if late {
                // Keep the interval's counts right even though its percentiles are closed.
                if let Some(point) = self.series.get_mut(idx as usize) {
                    count_only(point, &s);
                }
            }
        }
    }

    fn on_tick(&mut self) {
        let now_us = self.cfg.start.elapsed().as_micros() as u64;
        let vus = self.cfg.vus.load(Ordering::Relaxed);
        // Every interval gets a VU reading at its end, even one without samples.
        let current = now_us / self.interval_us();
        if current > 0 {
            let acc = self.open.entry(current - 1).or_default();
            acc.gauges.insert("vus".into(), vus as f64);
        }
        record_gauge(&mut self.totals, "vus", vus as f64);
        self.finalize_until(now_us.saturating_sub(GRACE_US));
        if self.cfg.progress {
            self.print_progress(now_us, vus);
        }
        self.check_abort(now_us);
    }

    /// Closes every interval that ended before `until_us` (microseconds since the start).
    pub fn finalize_until(&mut self, until_us: u64) {
        let iv = self.interval_us();
        while (self.finalized_through + 1) * iv <= until_us {
            let idx = self.finalized_through;
            let acc = self.open.remove(&idx).unwrap_or_default();
            let len_s = self.cfg.interval.as_secs_f64();
            let t_s = (idx + 1) as f64 * len_s;
            let point = close_interval(acc, t_s, len_s, &self.series);
            self.series.push(point);
            self.finalized_through += 1;
        }
    }

    fn print_progress(&mut self, now_us: u64, vus: u64) {
        let Some(last) = self.series.last() else {
            return;
        };
        let qps = last.counters.get("queries").copied().unwrap_or(0) as f64 / last.len_s;
        let (p50, p99) = last
            .trends
            .get("query_duration")
            .map(|t| (t.p50_us as f64 / 1e3, t.p99_us as f64 / 1e3))
            .unwrap_or((0.0, 0.0));
        let errors = self.totals.counters["connection_errors"].count
            + self.totals.counters["query_errors"].count;
        let line = format!(
            "[{:>5.0}s/{:.0}s] vus {:>4}  queries/s {:>7.0}  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            now_us as f64 / 1e6,
            self.cfg.planned.as_secs_f64(),
            vus,
            qps,
            p50,
            p99,
            errors
        );
        let pad = self.last_progress_len.saturating_sub(line.len());
        self.last_progress_len = line.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}{}", " ".repeat(pad));
        let _ = err.flush();
    }

    fn check_abort(&mut self, now_us: u64) {
        if self.aborted_by.is_some() || self.cfg.abort_thresholds.is_empty() {
            return;
        }
        let elapsed = Duration::from_micros(now_us);
        let due: Vec<&Threshold> = self
            .cfg
            .abort_thresholds
            .iter()
            .filter(|t| elapsed >= t.delay_abort_eval)
            .collect();
        if due.is_empty() {
            return;
        }
        // The same evaluation as the final verdict's, on the same kind of numbers: the trends
        // these thresholds read carry their histograms, so p(97) is p(97), not a stored p99.
        let wanted: Vec<&str> = due.iter().map(|t| t.metric.as_str()).collect();
        let snapshot = crate::metrics::summary::Summary {
            metrics: self.metrics(elapsed.as_secs_f64(), |name| wanted.contains(&name)),
            ..crate::metrics::summary::Summary::empty()
        };
        for t in due {
            let result = &gate::evaluate(std::slice::from_ref(t), &snapshot)[0];
            // A metric without samples yet is not a reason to abort.
            if result.observed.is_some() && !result.ok {
                self.aborted_by = Some(format!(
                    "threshold {t} failed (observed {:.3}) and has abort_on_fail",
                    result.observed.unwrap_or_default()
                ));
                self.cfg.abort.cancel();
                return;
            }
        }
    }

    /// Run totals as summary metrics; trends for which `with_histogram` says so carry their
    /// encoded histogram.
    fn metrics(
        &self,
        duration_s: f64,
        with_histogram: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, Metric> {
        let mut out = BTreeMap::new();
        let per_s = |n: u64| {
            if duration_s > 0.0 {
                n as f64 / duration_s
            } else {
                0.0
            }
        };
        for (name, h) in &self.totals.trends.map {
            out.insert(
                name.clone(),
                Metric::Trend(TrendStats::from_histogram(
                    h,
                    duration_s,
                    with_histogram(name),
                )),
            );
        }
        // Every query has a trend, even one that never succeeded: its threshold then fails
        // for lack of samples instead of disappearing.
        for k in &self.keys {
            out.entry(k.duration.clone())
                .or_insert_with(|| Metric::Trend(TrendStats::default()));
        }
        if !out.contains_key("query_duration") {
            out.insert(
                "query_duration".into(),
                Metric::Trend(TrendStats::default()),
            );
        }
        for (name, c) in &self.totals.counters {
            let mut c = c.clone();
            c.rate_per_s = per_s(c.count);
            out.insert(name.clone(), Metric::Counter(c));
        }
        let total = self.totals.passes + self.totals.fails;
        out.insert(
            "success_rate".into(),
            Metric::Rate(RateStats {
                rate: if total > 0 {
                    self.totals.passes as f64 / total as f64
                } else {
                    0.0
                },
                passes: self.totals.passes,
                fails: self.totals.fails,
            }),
        );
        for (name, g) in &self.totals.gauges {
            out.insert(name.clone(), Metric::Gauge(g.clone()));
        }
        out
    }

    fn finish(mut self) -> Aggregated {
        let now_us = self.cfg.start.elapsed().as_micros() as u64;
        let iv = self.interval_us();
        // Close everything, the last (partial) interval included.
        let last_idx = self
            .open
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(now_us / iv);
        while self.finalized_through <= last_idx {
            let idx = self.finalized_through;
            let acc = self.open.remove(&idx).unwrap_or_default();
            let start_s = idx as f64 * self.cfg.interval.as_secs_f64();
            let end_s = ((idx + 1) as f64 * self.cfg.interval.as_secs_f64())
                .min(now_us as f64 / 1e6)
                .max(start_s + 1e-3);
            let point = close_interval(acc, end_s, end_s - start_s, &self.series);
            self.series.push(point);
            self.finalized_through += 1;
        }
        if self.cfg.progress && self.last_progress_len > 0 {
            eprintln!();
        }
        let duration_s = now_us as f64 / 1e6;
        Aggregated {
            metrics: self.metrics(duration_s, |_| true),
            time_series: self.series,
            aborted_by: self.aborted_by,
            late_samples: self.late,
        }
    }
}

fn bump(map: &mut BTreeMap<String, u64>, name: &str, by: u64) {
    if let Some(v) = map.get_mut(name) {
        *v += by;
    } else {
        map.insert(name.to_owned(), by);
    }
}

fn bump_total(totals: &mut Totals, name: &str, class: Option<&str>, by: u64) {
    let c = match totals.counters.get_mut(name) {
        Some(c) => c,
        None => totals.counters.entry(name.to_owned()).or_default(),
    };
    c.count += by;
    if let Some(class) = class {
        *c.by_class.entry(class.to_owned()).or_default() += by;
    }
}

fn record_gauge(totals: &mut Totals, name: &str, value: f64) {
    let mut g = totals.gauges.remove(name);
    GaugeStats::record(&mut g, value);
    totals
        .gauges
        .insert(name.to_owned(), g.expect("recorded above"));
}

/// Adds one sample to the totals and (unless late) to its interval.
fn record(
    totals: &mut Totals,
    mut acc: Option<&mut IntervalAcc>,
    keys: &[QueryKeys],
    s: &Sample,
    open_model: bool,
) {
    match &s.kind {
        SampleKind::Query {
            query,
            response_us,
            service_us,
            lag_us,
            tenant_violations,
        } => {
            let k = &keys[*query as usize];
            let mut trend = |name: &str, v: u64| {
                totals.trends.record(name, v);
                if let Some(a) = acc.as_deref_mut() {
                    a.trends.record(name, v);
                }
            };
            trend("query_duration", *response_us);
            trend(&k.duration, *response_us);
            if open_model {
                trend("service_time", *service_us);
                trend(&k.service, *service_us);
                if let Some(lag) = lag_us {
                    trend("scheduling_lag", *lag);
                }
            }
            bump_total(totals, "queries", None, 1);
            if *tenant_violations > 0 {
                bump_total(
                    totals,
                    "tenant_violations",
                    None,
                    u64::from(*tenant_violations),
                );
                totals.fails += 1;
            } else {
                totals.passes += 1;
            }
            if let Some(a) = acc {
                bump(&mut a.counters, "queries", 1);
                if *tenant_violations > 0 {
                    bump(
                        &mut a.counters,
                        "tenant_violations",
                        u64::from(*tenant_violations),
                    );
                }
            }
        }
        SampleKind::Error { query, kind, class } => {
            let counter = match kind {
                ErrorKind::Connection => "connection_errors",
                ErrorKind::Query => "query_errors",
            };
            bump_total(totals, counter, Some(class), 1);
            if let (Some(q), ErrorKind::Query) = (query, kind) {
                bump_total(totals, &keys[*q as usize].errors, Some(class), 1);
            }
            totals.fails += 1;
            if let Some(a) = acc {
                bump(&mut a.counters, counter, 1);
            }
        }
        SampleKind::Iteration => {
            bump_total(totals, "iterations", None, 1);
            if let Some(a) = acc {
                bump(&mut a.counters, "iterations", 1);
            }
        }
        SampleKind::Dropped => {
            bump_total(totals, "dropped_iterations", None, 1);
            if let Some(a) = acc {
                bump(&mut a.counters, "dropped_iterations", 1);
            }
        }
        SampleKind::Incomplete { query, waited_us } => {
            // The answer never came: its latency is at least what it waited, and it failed.
            let key = query.map(|q| keys[q as usize].duration.as_str());
            totals.trends.record("query_duration", *waited_us);
            if let Some(k) = key {
                totals.trends.record(k, *waited_us);
            }
            bump_total(totals, "incomplete_iterations", None, 1);
            totals.fails += 1;
            if let Some(a) = acc {
                a.trends.record("query_duration", *waited_us);
                if let Some(k) = key {
                    a.trends.record(k, *waited_us);
                }
                bump(&mut a.counters, "incomplete_iterations", 1);
            }
        }
        SampleKind::Setup { step, us } => {
            totals.trends.record(step.metric(), *us);
            if let Some(a) = acc {
                a.trends.record(step.metric(), *us);
            }
        }
        SampleKind::Gauge { name, value } => {
            record_gauge(totals, name, *value);
            if let Some(a) = acc {
                a.gauges.insert((*name).to_owned(), *value);
            }
        }
    }
}

fn count_only(point: &mut Interval, s: &Sample) {
    let name = match &s.kind {
        SampleKind::Query { .. } => "queries",
        SampleKind::Error {
            kind: ErrorKind::Connection,
            ..
        } => "connection_errors",
        SampleKind::Error { .. } => "query_errors",
        SampleKind::Iteration => "iterations",
        SampleKind::Dropped => "dropped_iterations",
        SampleKind::Incomplete { .. } => "incomplete_iterations",
        SampleKind::Gauge { .. } | SampleKind::Setup { .. } => return,
    };
    *point.counters.entry(name.to_owned()).or_default() += 1;
}

fn close_interval(acc: IntervalAcc, t_s: f64, len_s: f64, previous: &[Interval]) -> Interval {
    let trends = acc
        .trends
        .map
        .iter()
        .map(|(name, h)| (name.clone(), IntervalTrend::from_histogram(h)))
        .collect();
    let mut gauges = acc.gauges;
    // VUs are sampled at interval ends; carry the previous reading over a missed tick.
    let vus = match gauges.remove("vus") {
        Some(v) => v as u64,
        None => previous.last().map_or(0, |p| p.vus),
    };
    Interval {
        t_s,
        len_s,
        vus,
        counters: acc.counters,
        trends,
        gauges,
    }
}

/// Whether the live progress line should be shown (stderr is a terminal and not `--quiet`).
pub fn progress_wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{Aggregation, Op};
    use crate::metrics::summary::Summary;

    fn aggregator(abort_thresholds: Vec<Threshold>) -> Aggregator {
        Aggregator::new(AggregatorConfig {
            start: Instant::now(),
            interval: Duration::from_secs(1),
            planned: Duration::from_secs(10),
            query_names: vec!["q".into()],
            open_model: false,
            vus: Arc::new(AtomicU64::new(0)),
            progress: false,
            abort_thresholds,
            abort: CancellationToken::new(),
        })
    }

    fn query(at_us: u64, response_us: u64) -> Sample {
        Sample {
            at_us,
            kind: SampleKind::Query {
                query: 0,
                response_us,
                service_us: response_us,
                lag_us: None,
                tenant_violations: 0,
            },
        }
    }

    fn p97_below_5ms() -> Threshold {
        Threshold {
            metric: "query_duration".into(),
            expression: "p(97) < 5".into(),
            aggregation: Aggregation::Percentile(97.0),
            op: Op::Lt,
            value: 5.0,
            abort_on_fail: true,
            delay_abort_eval: Duration::ZERO,
        }
    }

    /// 97 % of queries at 1 ms, 3 % at 100 ms: p(97) is 1 ms, p(99) 100 ms.
    fn skewed() -> Vec<Sample> {
        (0..1000)
            .map(|i| query(100_000 + i, if i < 970 { 1_000 } else { 100_000 }))
            .collect()
    }

    #[test]
    fn the_live_abort_check_judges_the_percentile_the_threshold_names() {
        let mut agg = aggregator(vec![p97_below_5ms()]);
        agg.ingest(skewed());
        agg.check_abort(2_000_000);
        assert_eq!(
            agg.aborted_by, None,
            "p(97) is 1 ms; a stored p99 must not stand in"
        );
        assert!(!agg.cfg.abort.is_cancelled());
        // The final verdict reads the same number.
        let done = agg.finish();
        let summary = Summary {
            metrics: done.metrics,
            ..Summary::empty()
        };
        let result = &gate::evaluate(&[p97_below_5ms()], &summary)[0];
        assert!(result.ok, "{result:?}");
        assert!((result.observed.unwrap() - 1.0).abs() < 0.01, "{result:?}");
    }

    #[test]
    fn the_live_abort_check_aborts_on_what_the_final_verdict_fails() {
        let mut threshold = p97_below_5ms();
        threshold.expression = "p(99) < 5".into();
        threshold.aggregation = Aggregation::Percentile(99.0);
        let mut agg = aggregator(vec![threshold]);
        agg.ingest(skewed());
        agg.check_abort(2_000_000);
        let reason = agg.aborted_by.clone().expect("p(99) is 100 ms: abort");
        assert!(reason.contains("p(99) < 5"), "{reason}");
        assert!(agg.cfg.abort.is_cancelled());
    }

    #[test]
    fn a_late_sample_counts_in_totals_and_its_interval_but_not_its_percentiles() {
        let mut agg = aggregator(Vec::new());
        agg.ingest(vec![query(500_000, 1_000)]);
        agg.finalize_until(2_000_000);
        assert_eq!(agg.series.len(), 2);
        // A VU that stalled hands in a sample of the first second after it closed.
        agg.ingest(vec![query(700_000, 900_000)]);
        assert_eq!(agg.late, 1);
        let done = agg.finish();
        assert_eq!(done.late_samples, 1);
        let first = &done.time_series[0];
        assert_eq!(first.counters["queries"], 2);
        assert_eq!(first.trends["query_duration"].count, 1);
        assert_eq!(first.trends["query_duration"].max_us, 1_000);
        let Some(Metric::Trend(total)) = done.metrics.get("query_duration") else {
            panic!("no query_duration trend");
        };
        assert_eq!(total.count, 2);
        assert!(total.max_us >= 899_000);
    }

    #[test]
    fn intervals_close_in_order_and_quiet_ones_are_kept_empty() {
        let mut agg = aggregator(Vec::new());
        agg.ingest(vec![query(3_500_000, 2_000), query(500_000, 1_000)]);
        // Within its grace period an interval stays open: nothing closes before its end.
        agg.finalize_until(999_999);
        assert!(agg.series.is_empty());
        agg.finalize_until(4_000_000);
        let ends: Vec<f64> = agg.series.iter().map(|i| i.t_s).collect();
        assert_eq!(ends, [1.0, 2.0, 3.0, 4.0]);
        let counts: Vec<u64> = agg
            .series
            .iter()
            .map(|i| i.counters.get("queries").copied().unwrap_or(0))
            .collect();
        assert_eq!(counts, [1, 0, 0, 1]);
        assert_eq!(agg.late, 0);
    }

    #[test]
    fn a_query_without_errors_counts_zero_errors() {
        let mut agg = aggregator(Vec::new());
        agg.ingest(vec![query(10, 500)]);
        let summary = Summary {
            metrics: agg.finish().metrics,
            ..Summary::empty()
        };
        let (aggregation, op, value) =
            gate::parse_expression("count == 0", gate::MetricKind::Counter).unwrap();
        let threshold = Threshold {
            metric: "query_errors{query:q}".into(),
            expression: "count == 0".into(),
            aggregation,
            op,
            value,
            abort_on_fail: false,
            delay_abort_eval: Duration::ZERO,
        };
        let result = &gate::evaluate(&[threshold], &summary)[0];
        assert!(result.ok, "{result:?}");
        assert_eq!(result.observed, Some(0.0));
    }

    #[test]
    fn setup_times_are_trends_of_their_own() {
        use crate::metrics::recorder::SetupStep;
        let mut agg = aggregator(Vec::new());
        agg.ingest(vec![
            Sample {
                at_us: 10,
                kind: SampleKind::Setup {
                    step: SetupStep::Connect,
                    us: 3_000,
                },
            },
            Sample {
                at_us: 20,
                kind: SampleKind::Setup {
                    step: SetupStep::PoolWait,
                    us: 40,
                },
            },
            query(30, 500),
        ]);
        let done = agg.finish();
        let trend = |name: &str| match done.metrics.get(name) {
            Some(Metric::Trend(t)) => t.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(trend("connect_duration").count, 1);
        assert_eq!(trend("pool_wait").max_us, 40);
        assert_eq!(trend("query_duration").count, 1, "setup is not a query");
    }
}
