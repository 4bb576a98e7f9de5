//! The aggregator: the one task that receives the VUs' sample batches and merges them into
//! per-interval and run-total HDR histograms and counters. Ingestion only: what watches the run
//! as it goes (the live progress line, the `abort_on_fail` check, live outputs) is a [`Watcher`]
//! told at every tick.
//!
//! Metrics are addressed by ids fixed when the aggregator is built from the plan's query names
//! ([`Catalog`]); names appear only when an interval closes or the summary is built, so a sample
//! costs index arithmetic, not string lookups.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::codec::new_latency_histogram;
use super::recorder::{Sample, SampleBuffer, SampleKind, SetupStep};
use super::summary::{
    CounterStats, GaugeStats, Interval, IntervalTrend, Metric, RateStats, TrendStats,
};
use crate::db::ErrorKind;

/// Intervals stay open this long after they end, for samples that arrive late.
const GRACE_US: u64 = 1_500_000;

/// How often the recorders' buffers are drained: well within an interval's grace period.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// What the aggregator needs to know about the run.
pub struct AggregatorConfig {
    /// When the run started: sample times and interval boundaries count from here.
    pub start: Instant,
    /// Length of one time-series interval.
    pub interval: Duration,
    /// How long the scenario's stages add up to (for progress and reports).
    pub planned: Duration,
    /// The plan's query names; a sample's query id indexes this list.
    pub query_names: Vec<String>,
    /// Open model: response time differs from service time, and scheduling lag exists.
    pub open_model: bool,
    /// Current active VUs, written by the executor.
    pub vus: Arc<AtomicU64>,
    /// Told at every tick, in order; the first to ask for a stop stops the run.
    pub watchers: Vec<Box<dyn Watcher>>,
    /// Cancelled when a watcher asks the run to stop.
    pub abort: CancellationToken,
}

/// Metrics a run measures beyond the database's (`thumper gateway`: `event_latency`,
/// `events_delivered`, ...), named when the aggregator is built and addressed by their index in
/// these lists ([`SampleKind::Trend`], [`SampleKind::Count`]), so a sample costs index
/// arithmetic like the database's own.
#[derive(Debug, Clone, Default)]
pub struct ExtraMetrics {
    /// Trend names; a [`SampleKind::Trend`]'s id indexes this list.
    pub trends: Vec<String>,
    /// Counter names; a [`SampleKind::Count`]'s id indexes this list.
    pub counters: Vec<String>,
    /// The run applies no database load: the database's metrics (`query_duration`, `queries`,
    /// `success_rate`, ...) are left out of its metrics instead of being listed as zeros.
    pub without_database: bool,
}

/// Something that follows the run while it goes: told once per interval tick what has been
/// measured so far. Returns a reason to stop the run now, or `None` to let it go on.
pub trait Watcher: Send {
    /// Called once per interval tick; `Some(reason)` stops the run.
    fn tick(&mut self, run: &RunView<'_>) -> Option<String>;
    /// The run is over (the last interval is closed).
    fn finish(&mut self, _run: &RunView<'_>) {}
}

/// What a [`Watcher`] sees: the closed intervals and the run totals so far.
pub struct RunView<'a> {
    agg: &'a Aggregator,
    /// Microseconds since the run started.
    pub now_us: u64,
    /// Active VUs now.
    pub vus: u64,
}

impl RunView<'_> {
    /// The intervals closed so far, oldest first.
    pub fn intervals(&self) -> &[Interval] {
        &self.agg.series
    }

    /// The run's planned length.
    pub fn planned(&self) -> Duration {
        self.agg.cfg.planned
    }

    /// Connection and query errors so far.
    pub fn errors(&self) -> u64 {
        self.agg.totals.counters[counter::CONNECTION_ERRORS].count
            + self.agg.totals.counters[counter::QUERY_ERRORS].count
    }

    /// Run totals so far as summary metrics; trends for which `with_histogram` says so carry
    /// their encoded histogram (a threshold's exact percentile needs it).
    pub fn metrics(&self, with_histogram: impl Fn(&str) -> bool) -> BTreeMap<String, Metric> {
        self.agg.metrics(self.now_us as f64 / 1e6, with_histogram)
    }
}

/// What the aggregator hands back at the end.
pub struct Aggregated {
    /// Run totals by metric name.
    pub metrics: BTreeMap<String, Metric>,
    /// The closed intervals, oldest first.
    pub time_series: Vec<Interval>,
    /// Why a watcher stopped the run (a failed `abort_on_fail` threshold), if one did.
    pub aborted_by: Option<String>,
    /// Samples that arrived after their interval closed (counted in totals and interval counts,
    /// not in that interval's percentiles).
    pub late_samples: u64,
}

/// Trend ids shared by every run; per-query trends follow them.
mod trend {
    pub const QUERY_DURATION: usize = 0;
    pub const SERVICE_TIME: usize = 1;
    pub const SCHEDULING_LAG: usize = 2;
    pub const CONNECT_DURATION: usize = 3;
    pub const POOL_WAIT: usize = 4;
    pub const EXPECTED_DURATION: usize = 5;
    pub const NAMES: [&str; 6] = [
        "query_duration",
        "service_time",
        "scheduling_lag",
        "connect_duration",
        "pool_wait",
        "query_duration{expected_response:true}",
    ];
}

/// Counter ids shared by every run; per-query error counters follow them.
mod counter {
    pub const ITERATIONS: usize = 0;
    pub const QUERIES: usize = 1;
    pub const CONNECTION_ERRORS: usize = 2;
    pub const QUERY_ERRORS: usize = 3;
    pub const TENANT_VIOLATIONS: usize = 4;
    pub const INCOMPLETE: usize = 5;
    pub const DROPPED: usize = 6;
    pub const NAMES: [&str; 7] = [
        "iterations",
        "queries",
        "connection_errors",
        "query_errors",
        "tenant_violations",
        "incomplete_iterations",
        "dropped_iterations",
    ];
}

/// The counters a multi-scenario run also keeps per scenario, in this order.
const SCENARIO_COUNTERS: [usize; 6] = [
    counter::ITERATIONS,
    counter::QUERIES,
    counter::CONNECTION_ERRORS,
    counter::QUERY_ERRORS,
    counter::INCOMPLETE,
    counter::DROPPED,
];

/// The run's metric names by id, fixed when the aggregator is built.
pub struct Catalog {
    trends: Vec<String>,
    counters: Vec<String>,
    queries: usize,
    /// Scenarios of a multi-scenario run (0 otherwise): their `{scenario:NAME}` metrics.
    scenarios: usize,
    open_model: bool,
    /// Id of the first extra trend (they follow the per-query ones).
    extra_trends_from: usize,
    /// Extra counters, counted apart from the database's ([`ExtraMetrics`]).
    extra_counters: Vec<String>,
    database: bool,
}

impl Catalog {
    fn new(query_names: &[String], open_model: bool, scenarios: &[String]) -> Catalog {
        let mut trends: Vec<String> = trend::NAMES.iter().map(|n| (*n).to_owned()).collect();
        trends.extend(
            query_names
                .iter()
                .map(|q| format!("query_duration{{query:{q}}}")),
        );
        trends.extend(
            query_names
                .iter()
                .map(|q| format!("service_time{{query:{q}}}")),
        );
        // Each query's latency split by outcome, as k6 tags every sample `expected_response`:
        // the successes (a sub-metric of the summary) and the failures (intervals only, so that
        // outputs can write the two as a partition of the query's samples).
        for outcome in ["true", "false"] {
            trends.extend(
                query_names
                    .iter()
                    .map(|q| format!("query_duration{{query:{q},expected_response:{outcome}}}")),
            );
        }
        trends.extend(
            scenarios
                .iter()
                .map(|s| format!("query_duration{{scenario:{s}}}")),
        );
        let mut counters: Vec<String> = counter::NAMES.iter().map(|n| (*n).to_owned()).collect();
        for s in scenarios {
            counters.extend(
                SCENARIO_COUNTERS
                    .iter()
                    .map(|id| format!("{}{{scenario:{s}}}", counter::NAMES[*id])),
            );
        }
        counters.extend(
            query_names
                .iter()
                .map(|q| format!("query_errors{{query:{q}}}")),
        );
        Catalog {
            extra_trends_from: trends.len(),
            trends,
            counters,
            queries: query_names.len(),
            scenarios: scenarios.len(),
            open_model,
            extra_counters: Vec::new(),
            database: true,
        }
    }

    /// Registers a run's extra metrics after the database's.
    fn with_extras(mut self, extras: ExtraMetrics) -> Catalog {
        self.extra_trends_from = self.trends.len();
        self.trends.extend(extras.trends);
        self.extra_counters = extras.counters;
        self.database = !extras.without_database;
        self
    }

    /// The trend id of extra trend `id`, if registered.
    fn extra_trend(&self, id: u16) -> Option<usize> {
        let id = self.extra_trends_from + usize::from(id);
        (id < self.trends.len()).then_some(id)
    }

    fn query_duration(&self, query: u16) -> usize {
        trend::NAMES.len() + usize::from(query)
    }

    fn query_service(&self, query: u16) -> usize {
        trend::NAMES.len() + self.queries + usize::from(query)
    }

    fn query_expected(&self, query: u16) -> usize {
        trend::NAMES.len() + 2 * self.queries + usize::from(query)
    }

    fn query_unexpected(&self, query: u16) -> usize {
        trend::NAMES.len() + 3 * self.queries + usize::from(query)
    }

    /// The trend of a scenario's latency.
    fn scenario_duration(&self, scenario: u16) -> usize {
        trend::NAMES.len() + 4 * self.queries + usize::from(scenario)
    }

    /// The counter of a scenario's `SCENARIO_COUNTERS[k]`.
    fn scenario_counter(&self, scenario: u16, k: usize) -> usize {
        counter::NAMES.len() + usize::from(scenario) * SCENARIO_COUNTERS.len() + k
    }

    /// Counters kept per interval as well as in the totals: the run's and the scenarios'.
    fn interval_counters(&self) -> usize {
        counter::NAMES.len() + self.scenarios * SCENARIO_COUNTERS.len()
    }

    /// Whether a trend is kept per interval only: each query's failures, which the summary
    /// has as the difference of `query_duration{query:Q}` and its `expected_response:true`.
    fn interval_only(&self, id: usize) -> bool {
        (self.query_unexpected(0)..self.query_unexpected(0) + self.queries).contains(&id)
    }

    fn query_errors(&self, query: u16) -> usize {
        self.interval_counters() + usize::from(query)
    }

    /// Whether the summary lists a trend even without samples: the run's latency and each
    /// query's (all and successes), so a threshold on them fails for lack of samples instead
    /// of disappearing.
    fn trend_always_listed(&self, id: usize) -> bool {
        if id >= self.extra_trends_from {
            return true;
        }
        self.database
            && (id == trend::QUERY_DURATION
                || id == trend::EXPECTED_DURATION
                || (trend::NAMES.len()..self.query_service(0)).contains(&id)
                || (self.query_expected(0)..self.query_unexpected(0)).contains(&id)
                || (self.scenario_duration(0)..self.extra_trends_from).contains(&id))
    }

    /// Whether the summary lists a counter: all of them, but dropped iterations only where
    /// iterations can be dropped (the open model).
    fn counter_listed(&self, id: usize) -> bool {
        let scenario_dropped = (counter::NAMES.len()..self.interval_counters()).contains(&id)
            && (id - counter::NAMES.len()) % SCENARIO_COUNTERS.len() == SCENARIO_COUNTERS.len() - 1;
        self.database && ((id != counter::DROPPED && !scenario_dropped) || self.open_model)
    }
}

/// Histograms by trend id, created on a trend's first sample.
struct Trends(Vec<Option<Histogram<u64>>>);

impl Trends {
    fn new(len: usize) -> Trends {
        Trends((0..len).map(|_| None).collect())
    }

    fn record(&mut self, id: usize, v: u64) {
        self.0[id]
            .get_or_insert_with(new_latency_histogram)
            .saturating_record(v);
    }
}

/// One interval still open for samples.
struct IntervalAcc {
    trends: Trends,
    counters: Vec<u64>,
    /// Extra counters by id; empty (no allocation) for a database run.
    extra_counters: Vec<u64>,
    gauges: BTreeMap<&'static str, f64>,
}

impl IntervalAcc {
    fn new(catalog: &Catalog) -> IntervalAcc {
        IntervalAcc {
            trends: Trends::new(catalog.trends.len()),
            counters: vec![0; catalog.interval_counters()],
            extra_counters: vec![0; catalog.extra_counters.len()],
            gauges: BTreeMap::new(),
        }
    }
}

struct Totals {
    trends: Trends,
    counters: Vec<CounterStats>,
    extra_counters: Vec<u64>,
    passes: u64,
    fails: u64,
    gauges: BTreeMap<&'static str, GaugeStats>,
}

/// Merges sample batches into per-interval and run-total histograms and counters.
pub struct Aggregator {
    cfg: AggregatorConfig,
    catalog: Catalog,
    open: BTreeMap<u64, IntervalAcc>,
    series: Vec<Interval>,
    finalized_through: u64,
    totals: Totals,
    late: u64,
    aborted_by: Option<String>,
    /// Every live recorder's buffer (and those of gone ones until drained).
    buffers: Vec<Arc<SampleBuffer>>,
    /// Reused between drains.
    scratch: Vec<Sample>,
}

impl Aggregator {
    /// An aggregator for one run; metric ids are fixed here from `cfg.query_names`.
    pub fn new(cfg: AggregatorConfig) -> Aggregator {
        Aggregator::with_extras(cfg, ExtraMetrics::default())
    }

    /// An aggregator that measures `extras` as well; their ids are fixed here too.
    pub fn with_extras(cfg: AggregatorConfig, extras: ExtraMetrics) -> Aggregator {
        let catalog = Catalog::new(&cfg.query_names, cfg.open_model, &[]).with_extras(extras);
        Aggregator::build(cfg, catalog)
    }

    /// An aggregator of a multi-scenario run: each recorder's samples (tagged with its
    /// scenario's index in `scenarios`) also count in that scenario's `{scenario:NAME}` metrics.
    pub fn with_scenarios(cfg: AggregatorConfig, scenarios: &[String]) -> Aggregator {
        let catalog = Catalog::new(&cfg.query_names, cfg.open_model, scenarios);
        Aggregator::build(cfg, catalog)
    }

    fn build(cfg: AggregatorConfig, catalog: Catalog) -> Aggregator {
        let totals = Totals {
            trends: Trends::new(catalog.trends.len()),
            counters: vec![CounterStats::default(); catalog.counters.len()],
            extra_counters: vec![0; catalog.extra_counters.len()],
            passes: 0,
            fails: 0,
            gauges: BTreeMap::new(),
        };
        Aggregator {
            cfg,
            catalog,
            open: BTreeMap::new(),
            series: Vec::new(),
            finalized_through: 0,
            totals,
            late: 0,
            aborted_by: None,
            buffers: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Collects recorders' buffers until every recorder is gone, draining them every
    /// [`DRAIN_EVERY`] and ticking once per interval.
    pub async fn run(mut self, mut rx: UnboundedReceiver<Arc<SampleBuffer>>) -> Aggregated {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::from_std(self.cfg.start + self.cfg.interval),
            self.cfg.interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                buffer = rx.recv() => match buffer {
                    Some(buffer) => self.buffers.push(buffer),
                    None => break,
                },
                _ = drain.tick() => self.drain(),
                _ = tick.tick() => {
                    self.drain();
                    self.on_tick();
                }
            }
        }
        // Every recorder is gone: its last samples are in its buffer.
        self.drain();
        self.finish()
    }

    /// Takes every recorder's buffered samples; forgets buffers whose recorder is gone.
    fn drain(&mut self) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut buffers = std::mem::take(&mut self.buffers);
        buffers.retain(|b| {
            // Checked before draining: with no recorder left, nothing can follow the drain.
            let orphan = Arc::strong_count(b) == 1;
            b.drain_into(&mut scratch);
            self.ingest_in(b.scenario(), scratch.drain(..));
            !orphan
        });
        self.buffers = buffers;
        self.scratch = scratch;
    }

    fn interval_us(&self) -> u64 {
        self.cfg.interval.as_micros() as u64
    }

    /// Merges samples into the intervals and totals.
    pub fn ingest(&mut self, batch: impl IntoIterator<Item = Sample>) {
        self.ingest_in(None, batch);
    }

    /// [`Aggregator::ingest`] of samples from a VU of `scenario`.
    fn ingest_in(&mut self, scenario: Option<u16>, batch: impl IntoIterator<Item = Sample>) {
        let iv = self.interval_us();
        for s in batch {
            let idx = s.at_us / iv;
            if idx < self.finalized_through {
                self.late += 1;
                record(&mut self.totals, None, &self.catalog, &s);
                record_scenario(&mut self.totals, None, &self.catalog, scenario, &s);
                // Keep the interval's counts right even though its percentiles are closed.
                if let Some(point) = self.series.get_mut(idx as usize) {
                    match s.kind {
                        SampleKind::Count { id, by } => {
                            count_extra_late(point, &self.catalog, id, by)
                        }
                        _ => count_only(point, &s),
                    }
                }
            } else {
                let catalog = &self.catalog;
                let acc = self
                    .open
                    .entry(idx)
                    .or_insert_with(|| IntervalAcc::new(catalog));
                record(&mut self.totals, Some(&mut *acc), catalog, &s);
                record_scenario(&mut self.totals, Some(acc), catalog, scenario, &s);
            }
        }
    }

    fn on_tick(&mut self) {
        let now_us = self.cfg.start.elapsed().as_micros() as u64;
        let vus = self.cfg.vus.load(Ordering::Relaxed);
        // Every interval gets a VU reading at its end, even one without samples.
        let current = now_us / self.interval_us();
        if current > 0 {
            let catalog = &self.catalog;
            let acc = self
                .open
                .entry(current - 1)
                .or_insert_with(|| IntervalAcc::new(catalog));
            acc.gauges.insert("vus", vus as f64);
        }
        record_gauge(&mut self.totals, "vus", vus as f64);
        self.finalize_until(now_us.saturating_sub(GRACE_US));
        self.tell_watchers(now_us, vus);
    }

    /// Tells every watcher what has been measured; stops the run on the first that asks.
    fn tell_watchers(&mut self, now_us: u64, vus: u64) {
        let mut watchers = std::mem::take(&mut self.cfg.watchers);
        let view = RunView {
            agg: self,
            now_us,
            vus,
        };
        let mut stop = None;
        for w in &mut watchers {
            if let Some(reason) = w.tick(&view) {
                stop.get_or_insert(reason);
            }
        }
        self.cfg.watchers = watchers;
        if let (Some(reason), None) = (stop, &self.aborted_by) {
            self.aborted_by = Some(reason);
            self.cfg.abort.cancel();
        }
    }

    /// Closes every interval that ended before `until_us` (microseconds since the start).
    pub fn finalize_until(&mut self, until_us: u64) {
        let iv = self.interval_us();
        while (self.finalized_through + 1) * iv <= until_us {
            let idx = self.finalized_through;
            let len_s = self.cfg.interval.as_secs_f64();
            let t_s = (idx + 1) as f64 * len_s;
            self.close(idx, t_s, len_s);
        }
    }

    fn close(&mut self, idx: u64, t_s: f64, len_s: f64) {
        let acc = self
            .open
            .remove(&idx)
            .unwrap_or_else(|| IntervalAcc::new(&self.catalog));
        let point = close_interval(acc, &self.catalog, t_s, len_s, &self.series);
        self.series.push(point);
        self.finalized_through += 1;
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
        for (id, h) in self.totals.trends.0.iter().enumerate() {
            if self.catalog.interval_only(id) {
                continue;
            }
            let name = &self.catalog.trends[id];
            let stats = match h {
                Some(h) => TrendStats::from_histogram(h, duration_s, with_histogram(name)),
                None if self.catalog.trend_always_listed(id) => TrendStats::default(),
                None => continue,
            };
            out.insert(name.clone(), Metric::Trend(stats));
        }
        for (id, c) in self.totals.counters.iter().enumerate() {
            if !self.catalog.counter_listed(id) {
                continue;
            }
            let mut c = c.clone();
            c.rate_per_s = per_s(c.count);
            out.insert(self.catalog.counters[id].clone(), Metric::Counter(c));
        }
        let total = self.totals.passes + self.totals.fails;
        if self.catalog.database {
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
        }
        for (name, count) in self
            .catalog
            .extra_counters
            .iter()
            .zip(&self.totals.extra_counters)
        {
            out.insert(
                name.clone(),
                Metric::Counter(CounterStats {
                    count: *count,
                    rate_per_s: per_s(*count),
                    by_class: BTreeMap::new(),
                }),
            );
        }
        for (name, g) in &self.totals.gauges {
            out.insert((*name).to_owned(), Metric::Gauge(g.clone()));
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
            let start_s = idx as f64 * self.cfg.interval.as_secs_f64();
            let end_s = ((idx + 1) as f64 * self.cfg.interval.as_secs_f64())
                .min(now_us as f64 / 1e6)
                .max(start_s + 1e-3);
            self.close(idx, end_s, end_s - start_s);
        }
        let mut watchers = std::mem::take(&mut self.cfg.watchers);
        let view = RunView {
            agg: &self,
            now_us,
            vus: 0,
        };
        for w in &mut watchers {
            w.finish(&view);
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

fn record_gauge(totals: &mut Totals, name: &'static str, value: f64) {
    let mut g = totals.gauges.remove(name);
    GaugeStats::record(&mut g, value);
    totals.gauges.insert(name, g.expect("recorded above"));
}

fn bump_total(totals: &mut Totals, id: usize, class: Option<&str>, by: u64) {
    let c = &mut totals.counters[id];
    c.count += by;
    if let Some(class) = class {
        match c.by_class.get_mut(class) {
            Some(n) => *n += by,
            None => {
                c.by_class.insert(class.to_owned(), by);
            }
        }
    }
}

/// Adds one sample to the totals and (unless late) to its interval.
/// Records `v` in trend `id`, in the totals and the open interval.
fn trend(totals: &mut Totals, acc: &mut Option<&mut IntervalAcc>, id: usize, v: u64) {
    totals.trends.record(id, v);
    if let Some(a) = acc.as_deref_mut() {
        a.trends.record(id, v);
    }
}

/// Records a finished query's time, whatever its outcome: in the run's and the query's
/// latency, and (open model, if it was sent) in their service time.
fn latency(
    totals: &mut Totals,
    acc: &mut Option<&mut IntervalAcc>,
    catalog: &Catalog,
    query: u16,
    response_us: u64,
    service_us: Option<u64>,
) {
    trend(totals, acc, trend::QUERY_DURATION, response_us);
    trend(totals, acc, catalog.query_duration(query), response_us);
    if let (true, Some(service)) = (catalog.open_model, service_us) {
        trend(totals, acc, trend::SERVICE_TIME, service);
        trend(totals, acc, catalog.query_service(query), service);
    }
}

/// Records a failed or unfinished query's time in its interval's `expected_response:false`
/// series (not in the totals: see [`Catalog::interval_only`]).
fn failed_latency(
    acc: &mut Option<&mut IntervalAcc>,
    catalog: &Catalog,
    query: Option<u16>,
    us: u64,
) {
    if let (Some(q), Some(a)) = (query, acc.as_deref_mut()) {
        a.trends.record(catalog.query_unexpected(q), us);
    }
}

/// Adds `by` to counter `id` (with its error class), in the totals and the open interval.
fn count(
    totals: &mut Totals,
    acc: &mut Option<&mut IntervalAcc>,
    id: usize,
    class: Option<&str>,
    by: u64,
) {
    bump_total(totals, id, class, by);
    if let Some(a) = acc.as_deref_mut() {
        if let Some(c) = a.counters.get_mut(id) {
            *c += by;
        }
    }
}

fn record(totals: &mut Totals, mut acc: Option<&mut IntervalAcc>, catalog: &Catalog, s: &Sample) {
    let acc = &mut acc;
    match &s.kind {
        SampleKind::Query {
            query,
            response_us,
            service_us,
            lag_us,
            tenant_violations,
        } => {
            latency(
                totals,
                acc,
                catalog,
                *query,
                *response_us,
                Some(*service_us),
            );
            trend(totals, acc, trend::EXPECTED_DURATION, *response_us);
            trend(totals, acc, catalog.query_expected(*query), *response_us);
            if let (true, Some(lag)) = (catalog.open_model, lag_us) {
                trend(totals, acc, trend::SCHEDULING_LAG, *lag);
            }
            count(totals, acc, counter::QUERIES, None, 1);
            if *tenant_violations > 0 {
                count(
                    totals,
                    acc,
                    counter::TENANT_VIOLATIONS,
                    None,
                    u64::from(*tenant_violations),
                );
                totals.fails += 1;
            } else {
                totals.passes += 1;
            }
        }
        SampleKind::Error {
            query,
            kind,
            class,
            response_us,
            service_us,
        } => {
            let id = match kind {
                ErrorKind::Connection => counter::CONNECTION_ERRORS,
                ErrorKind::Query => counter::QUERY_ERRORS,
            };
            count(totals, acc, id, Some(class), 1);
            if let (Some(q), ErrorKind::Query) = (query, kind) {
                bump_total(totals, catalog.query_errors(*q), Some(class), 1);
            }
            // A failed query took its time too: it stays in the latency (k6).
            if let (Some(q), Some(us)) = (query, response_us) {
                latency(totals, acc, catalog, *q, *us, *service_us);
                failed_latency(acc, catalog, Some(*q), *us);
            }
            totals.fails += 1;
        }
        SampleKind::Iteration => count(totals, acc, counter::ITERATIONS, None, 1),
        SampleKind::Dropped => count(totals, acc, counter::DROPPED, None, 1),
        SampleKind::Incomplete { query, waited_us } => {
            // The answer never came: its latency is at least what it waited, and it failed.
            trend(totals, acc, trend::QUERY_DURATION, *waited_us);
            if let Some(q) = query {
                trend(totals, acc, catalog.query_duration(*q), *waited_us);
            }
            failed_latency(acc, catalog, *query, *waited_us);
            count(totals, acc, counter::INCOMPLETE, None, 1);
            totals.fails += 1;
        }
        SampleKind::Setup { step, us } => {
            let id = match step {
                SetupStep::Connect => trend::CONNECT_DURATION,
                SetupStep::PoolWait => trend::POOL_WAIT,
            };
            trend(totals, acc, id, *us);
        }
        SampleKind::Gauge { name, value } => {
            record_gauge(totals, name, *value);
            if let Some(a) = acc.as_deref_mut() {
                a.gauges.insert(name, *value);
            }
        }
        SampleKind::Trend { id, value } => {
            if let Some(id) = catalog.extra_trend(*id) {
                trend(totals, acc, id, *value);
            }
        }
        SampleKind::Count { id, by } => count_extra(totals, acc, usize::from(*id), *by),
    }
}

/// Adds a sample of a multi-scenario run to its scenario's `{scenario:NAME}` metrics.
fn record_scenario(
    totals: &mut Totals,
    mut acc: Option<&mut IntervalAcc>,
    catalog: &Catalog,
    scenario: Option<u16>,
    s: &Sample,
) {
    let Some(sc) = scenario.filter(|sc| usize::from(*sc) < catalog.scenarios) else {
        return;
    };
    let acc = &mut acc;
    let (k, us) = match &s.kind {
        SampleKind::Query { response_us, .. } => (1, Some(*response_us)),
        SampleKind::Error {
            kind: ErrorKind::Connection,
            response_us,
            ..
        } => (2, *response_us),
        SampleKind::Error { response_us, .. } => (3, *response_us),
        SampleKind::Iteration => (0, None),
        SampleKind::Incomplete { waited_us, .. } => (4, Some(*waited_us)),
        SampleKind::Dropped => (5, None),
        _ => return,
    };
    count(totals, acc, catalog.scenario_counter(sc, k), None, 1);
    if let Some(us) = us {
        trend(totals, acc, catalog.scenario_duration(sc), us);
    }
}

/// Adds `by` to extra counter `id`, in the totals and the open interval; an id that was not
/// registered is ignored.
fn count_extra(totals: &mut Totals, acc: &mut Option<&mut IntervalAcc>, id: usize, by: u64) {
    if let Some(c) = totals.extra_counters.get_mut(id) {
        *c += by;
    }
    if let Some(c) = acc
        .as_deref_mut()
        .and_then(|a| a.extra_counters.get_mut(id))
    {
        *c += by;
    }
}

/// Keeps a closed interval's extra counts right for a late [`SampleKind::Count`].
fn count_extra_late(point: &mut Interval, catalog: &Catalog, id: u16, by: u64) {
    if let Some(name) = catalog.extra_counters.get(usize::from(id)) {
        *point.counters.entry(name.clone()).or_default() += by;
    }
}

fn count_only(point: &mut Interval, s: &Sample) {
    let id = match &s.kind {
        SampleKind::Query { .. } => counter::QUERIES,
        SampleKind::Error {
            kind: ErrorKind::Connection,
            ..
        } => counter::CONNECTION_ERRORS,
        SampleKind::Error { .. } => counter::QUERY_ERRORS,
        SampleKind::Iteration => counter::ITERATIONS,
        SampleKind::Dropped => counter::DROPPED,
        SampleKind::Incomplete { .. } => counter::INCOMPLETE,
        SampleKind::Gauge { .. }
        | SampleKind::Setup { .. }
        | SampleKind::Trend { .. }
        | SampleKind::Count { .. } => return,
    };
    *point
        .counters
        .entry(counter::NAMES[id].to_owned())
        .or_default() += 1;
}

fn close_interval(
    acc: IntervalAcc,
    catalog: &Catalog,
    t_s: f64,
    len_s: f64,
    previous: &[Interval],
) -> Interval {
    let trends = acc
        .trends
        .0
        .iter()
        .enumerate()
        .filter_map(|(id, h)| {
            h.as_ref()
                .map(|h| (catalog.trends[id].clone(), IntervalTrend::from_histogram(h)))
        })
        .collect();
    // An interval lists the counts it saw (a reader takes a missing one as 0).
    let mut counters: BTreeMap<String, u64> = acc
        .counters
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(id, n)| (catalog.counters[id].clone(), *n))
        .collect();
    counters.extend(
        catalog
            .extra_counters
            .iter()
            .zip(&acc.extra_counters)
            .filter(|(_, n)| **n > 0)
            .map(|(name, n)| (name.clone(), *n)),
    );
    let mut gauges: BTreeMap<String, f64> = acc
        .gauges
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    // VUs are sampled at interval ends; carry the previous reading over a missed tick.
    let vus = match gauges.remove("vus") {
        Some(v) => v as u64,
        None => previous.last().map_or(0, |p| p.vus),
    };
    Interval {
        t_s,
        len_s,
        vus,
        counters,
        trends,
        gauges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{self, Aggregation, Op, Threshold};
    use crate::metrics::summary::Summary;

    fn aggregator(abort_thresholds: Vec<Threshold>) -> Aggregator {
        let watchers: Vec<Box<dyn Watcher>> = gate::LiveCheck::new(&abort_thresholds)
            .map(|c| Box::new(c) as Box<dyn Watcher>)
            .into_iter()
            .collect();
        Aggregator::new(AggregatorConfig {
            start: Instant::now(),
            interval: Duration::from_secs(1),
            planned: Duration::from_secs(10),
            query_names: vec!["q".into()],
            open_model: false,
            vus: Arc::new(AtomicU64::new(0)),
            watchers,
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
        agg.tell_watchers(2_000_000, 0);
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
        agg.tell_watchers(2_000_000, 0);
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
    fn extra_metrics_are_counted_like_the_database_ones() {
        let mut agg = Aggregator::with_extras(
            aggregator(Vec::new()).cfg,
            ExtraMetrics {
                trends: vec!["event_latency".into()],
                counters: vec!["events_sent".into(), "events_lost".into()],
                without_database: true,
            },
        );
        let count = |at_us, by| Sample {
            at_us,
            kind: SampleKind::Count { id: 0, by },
        };
        let latency = Sample {
            at_us: 10,
            kind: SampleKind::Trend { id: 0, value: 700 },
        };
        agg.ingest(vec![count(10, 5), latency, count(1_500_000, 2)]);
        agg.finalize_until(2_000_000);
        // A late count lands in its closed interval; an unregistered id is ignored.
        agg.ingest(vec![
            count(20, 1),
            Sample {
                at_us: 20,
                kind: SampleKind::Count { id: 9, by: 1 },
            },
        ]);
        let done = agg.finish();
        assert_eq!(done.time_series[0].counters["events_sent"], 6);
        assert_eq!(done.time_series[1].counters["events_sent"], 2);
        assert_eq!(done.time_series[0].trends["event_latency"].count, 1);
        let Some(Metric::Counter(sent)) = done.metrics.get("events_sent") else {
            panic!("no events_sent");
        };
        assert_eq!(sent.count, 8);
        assert!(
            matches!(done.metrics.get("events_lost"), Some(Metric::Counter(c)) if c.count == 0)
        );
        for name in ["query_duration", "queries", "success_rate"] {
            assert!(!done.metrics.contains_key(name), "{name}");
        }
    }

    #[test]
    fn a_failed_query_keeps_its_time_and_successes_have_their_own_view() {
        let mut agg = aggregator(Vec::new());
        let failed = Sample {
            at_us: 2_100_000,
            kind: SampleKind::Error {
                query: Some(0),
                kind: ErrorKind::Query,
                class: "22012 division_by_zero".into(),
                response_us: Some(2_000_000),
                service_us: Some(2_000_000),
            },
        };
        agg.ingest(vec![query(10, 1_000), query(20, 3_000), failed]);
        agg.finalize_until(3_000_000);
        let done = agg.finish();
        let trend = |name: &str| match done.metrics.get(name) {
            Some(Metric::Trend(t)) => t.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(trend("query_duration").count, 3);
        assert!(trend("query_duration").max_us >= 1_999_000);
        assert_eq!(trend("query_duration{query:q}").count, 3);
        let ok = trend("query_duration{expected_response:true}");
        assert_eq!(ok.count, 2);
        assert!(ok.max_us < 4_000, "{}", ok.max_us);
        assert_eq!(
            trend("query_duration{query:q,expected_response:true}").count,
            2
        );
        assert!(!done
            .metrics
            .contains_key("query_duration{query:q,expected_response:false}"));
        // Per interval, the two outcomes partition the query's samples (what outputs write).
        let third = &done.time_series[2].trends;
        assert_eq!(
            third["query_duration{query:q,expected_response:false}"].count,
            1
        );
        assert!(!third.contains_key("query_duration{query:q,expected_response:true}"));
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
