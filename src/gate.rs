//! Thresholds: k6's expression syntax (`p(99) < 10`, `rate > 0.999`, `count == 0`), parsed once
//! from the scenario and evaluated against a [`Summary`] by a pure function.
//!
//! Durations are written in milliseconds, as in k6, while trends are stored in microseconds.
//! A threshold on a metric with no samples fails: it never passes silently.

use std::fmt;
use std::time::Duration;

use crate::metrics::codec;
use crate::metrics::summary::{
    value_at_percentile, Ending, Metric, Summary, ThresholdResult, TrendStats, Verdict,
};

/// The kind of value a metric holds, which decides the aggregations a threshold may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Latency and other distributions: percentiles, avg, min, max, med, count.
    Trend,
    /// Event counts: count and rate (per second).
    Counter,
    /// Pass/fail shares: rate.
    Rate,
    /// Sampled values: value (the last), min, max.
    Gauge,
    /// A distribution known only by its moments (the server's `pg_stat_statements`): avg,
    /// max, count; no percentiles, which the server does not keep.
    Statistic,
}

/// Every metric thumper produces, with its kind. Thresholds on other names are refused.
pub const KNOWN_METRICS: &[(&str, MetricKind)] = &[
    ("query_duration", MetricKind::Trend),
    ("service_time", MetricKind::Trend),
    ("scheduling_lag", MetricKind::Trend),
    ("connect_duration", MetricKind::Trend),
    ("fleet_start_skew", MetricKind::Gauge),
    ("pool_wait", MetricKind::Trend),
    ("success_rate", MetricKind::Rate),
    ("connection_errors", MetricKind::Counter),
    ("query_errors", MetricKind::Counter),
    ("tenant_violations", MetricKind::Counter),
    ("iterations", MetricKind::Counter),
    // runs with pgbench scripts (src/executor/script.rs); also tagged {script:NAME}
    ("iteration_duration", MetricKind::Trend),
    ("failed_iterations", MetricKind::Counter),
    // how skewed the drawn tenants were (src/workload): % of draws on the busiest communities
    ("tenant_share_top1pct", MetricKind::Gauge),
    ("tenant_share_top10pct", MetricKind::Gauge),
    ("queries", MetricKind::Counter),
    ("dropped_iterations", MetricKind::Counter),
    ("incomplete_iterations", MetricKind::Counter),
    ("vus", MetricKind::Gauge),
    ("pgbouncer_cl_active", MetricKind::Gauge),
    ("pgbouncer_cl_waiting", MetricKind::Gauge),
    ("pgbouncer_sv_active", MetricKind::Gauge),
    ("pgbouncer_sv_idle", MetricKind::Gauge),
    ("pgbouncer_maxwait", MetricKind::Gauge),
    ("pgbouncer_xact_per_s", MetricKind::Gauge),
    ("pgbouncer_query_per_s", MetricKind::Gauge),
    ("pgbouncer_avg_wait_us", MetricKind::Gauge),
    ("event_latency", MetricKind::Trend),
    ("events_sent", MetricKind::Counter),
    ("events_delivered", MetricKind::Counter),
    ("events_lost", MetricKind::Counter),
    ("events_duplicated", MetricKind::Counter),
    ("reconnects", MetricKind::Counter),
    ("resumes", MetricKind::Counter),
    ("gateway_rss_mb", MetricKind::Gauge),
    ("gateway_cpu_percent", MetricKind::Gauge),
    ("gateway_rss_mb_per_1k_guilds", MetricKind::Gauge),
    // the generator's own process (src/metrics/process.rs)
    ("generator_cpu_percent", MetricKind::Gauge),
    ("generator_rss_mb", MetricKind::Gauge),
    // thumper rls-bench (src/rls/bench.rs)
    ("rls_server_us", MetricKind::Gauge),
    ("rls_buffers", MetricKind::Gauge),
    ("rls_overhead_us", MetricKind::Gauge),
    ("rls_overhead_pct", MetricKind::Gauge),
    ("rls_latency_overhead_us", MetricKind::Gauge),
    // the server's side (src/metrics/server.rs): per query from pg_stat_statements ...
    ("server_time", MetricKind::Statistic),
    ("server_rows", MetricKind::Gauge),
    ("server_blocks_read", MetricKind::Gauge),
    // ... and sampled once a second from pg_stat_activity and pg_stat_database
    ("server_active_backends", MetricKind::Gauge),
    ("server_waits_running", MetricKind::Gauge),
    ("server_waits_lock", MetricKind::Gauge),
    ("server_waits_lwlock", MetricKind::Gauge),
    ("server_waits_io", MetricKind::Gauge),
    ("server_waits_client", MetricKind::Gauge),
    ("server_waits_ipc", MetricKind::Gauge),
    ("server_waits_timeout", MetricKind::Gauge),
    ("server_waits_bufferpin", MetricKind::Gauge),
    ("server_waits_activity", MetricKind::Gauge),
    ("server_waits_extension", MetricKind::Gauge),
    ("server_commits_per_s", MetricKind::Gauge),
    ("server_rollbacks_per_s", MetricKind::Gauge),
    ("server_deadlocks", MetricKind::Gauge),
    ("server_blocks_read_per_s", MetricKind::Gauge),
    ("server_temp_bytes_per_s", MetricKind::Gauge),
];

/// The metrics recorded per query as well, as sub-metrics `name{query:NAME}`.
pub const TAGGED_BY_QUERY: &[&str] = &[
    "query_duration",
    "service_time",
    "query_errors",
    "server_time",
    "server_rows",
    "server_blocks_read",
];

/// The metrics a multi-scenario run also records per scenario, as `name{scenario:NAME}`.
pub const TAGGED_BY_SCENARIO: &[&str] = &[
    "query_duration",
    "iterations",
    "queries",
    "query_errors",
    "connection_errors",
    "incomplete_iterations",
    "dropped_iterations",
    "vus",
];

/// The kind of a known metric name (without tags).
pub fn metric_kind(name: &str) -> Option<MetricKind> {
    KNOWN_METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
}

/// What a threshold computes from its metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    /// `p(N)`: the N-th percentile, in milliseconds.
    Percentile(f64),
    /// `avg`: the mean (milliseconds for durations).
    Avg,
    /// `min`: the smallest sample.
    Min,
    /// `max`: the largest sample.
    Max,
    /// `med`: the median.
    Med,
    /// `count`: the number of samples or events.
    Count,
    /// Counters: events per second; rates: the passing fraction.
    Rate,
    /// Gauges: the last value.
    Value,
}

/// A threshold's comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// One parsed threshold of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The metric key as written: `query_duration{query:tenant}`.
    pub metric: String,
    /// The expression as written: `p(99) < 10`.
    pub expression: String,
    /// What is computed from the metric.
    pub aggregation: Aggregation,
    /// How the computed value is compared with `value`.
    pub op: Op,
    /// The right-hand side, in the aggregation's unit (milliseconds for durations).
    pub value: f64,
    /// Stop the run as soon as this threshold fails (after `delay_abort_eval`).
    pub abort_on_fail: bool,
    /// How long into the run an `abort_on_fail` threshold is first judged.
    pub delay_abort_eval: Duration,
}

impl Threshold {
    /// A count or a rate of events (or the VUs): one instance of a fleet holds only its share
    /// of it, so only the fleet's totals can judge it. Percentiles, averages, success rates and
    /// shared gauges read the same on a share as on the whole.
    pub fn is_additive(&self) -> bool {
        let name = self.metric.split('{').next().unwrap_or_default();
        match metric_kind(name) {
            Some(MetricKind::Counter) => true,
            Some(MetricKind::Trend | MetricKind::Statistic) => {
                self.aggregation == Aggregation::Count
            }
            Some(MetricKind::Gauge) => name == "vus",
            Some(MetricKind::Rate) | None => false,
        }
    }
}

/// Whose numbers a summary holds: the whole run's, or one fleet instance's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A single run, a coordinator's or a merge's totals: every threshold is judged.
    Whole,
    /// One instance's share of a fleet run: counts and rates ([`Threshold::is_additive`]) are
    /// left to the fleet's totals.
    Share,
}

/// Why an additive threshold is not judged on an instance's share.
pub const NOT_JUDGED_ON_A_SHARE: &str =
    "a fleet-wide count or rate: judged on the fleet's totals (the coordinator, or `thumper merge`), not on this instance's share";

/// Why a PgBouncer threshold is not judged on an instance that does not poll the console.
pub const NOT_POLLED_ON_A_SHARE: &str =
    "PgBouncer's console is polled once for the fleet, by its coordinator (or `thumper merge` of instances that polled it)";

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.metric, self.expression)
    }
}

/// Splits `name{tag:value}` into the name and its canonical key (whitespace removed).
pub fn split_metric_key(key: &str) -> Result<(String, String), String> {
    let key = key.trim();
    match key.split_once('{') {
        None => Ok((key.to_owned(), key.to_owned())),
        Some((name, rest)) => {
            let tags = rest
                .strip_suffix('}')
                .ok_or_else(|| format!("tag filter in \"{key}\" lacks a closing '}}'"))?;
            let mut parts = Vec::new();
            for tag in tags.split(',') {
                let (k, v) = tag.split_once(':').ok_or_else(|| {
                    format!("tag \"{tag}\" in \"{key}\" must be written name:value, e.g. {{query:tenant}}")
                })?;
                parts.push(format!("{}:{}", k.trim(), v.trim()));
            }
            let name = name.trim();
            Ok((name.to_owned(), format!("{name}{{{}}}", parts.join(","))))
        }
    }
}

/// Parses `AGG OP VALUE` for a metric of the given kind.
pub fn parse_expression(
    expression: &str,
    kind: MetricKind,
) -> Result<(Aggregation, Op, f64), String> {
    let expr = expression.trim();
    let ops = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let (pos, len, op) = ops
        .iter()
        .filter_map(|(s, op)| expr.find(s).map(|p| (p, s.len(), *op)))
        .min_by_key(|(p, len, _)| (*p, usize::MAX - len))
        .ok_or_else(|| {
            format!("\"{expression}\" has no comparison; expected e.g. \"p(99) < 10\" (operators: < <= > >= == !=)")
        })?;
    let agg_text = expr[..pos].trim();
    let value_text = expr[pos + len..].trim();
    let value: f64 = value_text
        .parse()
        .map_err(|_| format!("\"{value_text}\" in \"{expression}\" is not a number"))?;
    let aggregation = match agg_text {
        "avg" => Aggregation::Avg,
        "min" => Aggregation::Min,
        "max" => Aggregation::Max,
        "med" => Aggregation::Med,
        "count" => Aggregation::Count,
        "rate" => Aggregation::Rate,
        "value" => Aggregation::Value,
        p if p.starts_with("p(") && p.ends_with(')') => {
            let n: f64 = p[2..p.len() - 1]
                .trim()
                .parse()
                .map_err(|_| format!("\"{p}\" in \"{expression}\": the percentile must be a number, e.g. p(99) or p(99.9)"))?;
            if !(0.0..=100.0).contains(&n) {
                return Err(format!(
                    "\"{p}\" in \"{expression}\": the percentile must be between 0 and 100"
                ));
            }
            Aggregation::Percentile(n)
        }
        other => {
            return Err(format!(
                "unknown aggregation \"{other}\" in \"{expression}\"; {}",
                allowed(kind)
            ))
        }
    };
    let fits = match kind {
        MetricKind::Trend => matches!(
            aggregation,
            Aggregation::Percentile(_)
                | Aggregation::Avg
                | Aggregation::Min
                | Aggregation::Max
                | Aggregation::Med
                | Aggregation::Count
        ),
        MetricKind::Counter => matches!(aggregation, Aggregation::Count | Aggregation::Rate),
        MetricKind::Rate => matches!(aggregation, Aggregation::Rate),
        MetricKind::Gauge => matches!(
            aggregation,
            Aggregation::Value | Aggregation::Min | Aggregation::Max
        ),
        MetricKind::Statistic => matches!(
            aggregation,
            Aggregation::Avg | Aggregation::Max | Aggregation::Count
        ),
    };
    if !fits {
        return Err(format!(
            "\"{agg_text}\" does not apply to this metric; {}",
            allowed(kind)
        ));
    }
    Ok((aggregation, op, value))
}

fn allowed(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Trend => "a trend takes p(N), avg, min, max, med or count (durations in ms)",
        MetricKind::Counter => "a counter takes count or rate (per second)",
        MetricKind::Rate => "a rate takes rate (a fraction between 0 and 1)",
        MetricKind::Gauge => "a gauge takes value (the last), min or max",
        MetricKind::Statistic => {
            "server_time takes avg, max or count (ms; pg_stat_statements keeps no percentiles)"
        }
    }
}

/// The value a threshold's aggregation gives on a summary; `None` when the metric has no samples.
pub fn observe(threshold: &Threshold, summary: &Summary) -> Option<f64> {
    match summary.metrics.get(&threshold.metric)? {
        Metric::Trend(t) => observe_trend(threshold.aggregation, t),
        Metric::Counter(c) => match threshold.aggregation {
            Aggregation::Count => Some(c.count as f64),
            Aggregation::Rate => Some(c.rate_per_s),
            _ => None,
        },
        Metric::Rate(r) => {
            (r.passes + r.fails > 0 && threshold.aggregation == Aggregation::Rate).then_some(r.rate)
        }
        Metric::Gauge(g) => {
            if g.samples == 0 {
                return None;
            }
            match threshold.aggregation {
                Aggregation::Value => Some(g.last),
                Aggregation::Min => Some(g.min),
                Aggregation::Max => Some(g.max),
                _ => None,
            }
        }
    }
}

fn observe_trend(aggregation: Aggregation, t: &TrendStats) -> Option<f64> {
    if aggregation == Aggregation::Count {
        return Some(t.count as f64);
    }
    if t.count == 0 {
        return None;
    }
    // Durations are stored in µs and written in ms; other units are taken as they are.
    let scale = if t.unit == "us" { 1e-3 } else { 1.0 };
    let v = match aggregation {
        Aggregation::Percentile(p) => quantile(t, p)?,
        Aggregation::Med => quantile(t, 50.0)?,
        Aggregation::Avg => t.mean_us,
        Aggregation::Min => t.min_us as f64,
        Aggregation::Max => t.max_us as f64,
        _ => return None,
    };
    Some(v * scale)
}

/// The exact `p`-th percentile, from the trend's histogram. A trend without one (a summary
/// written without histograms) answers only the percentiles it stores: any other would be a
/// neighbour's value, and a threshold judged on it could pass or fail on the wrong number.
fn quantile(t: &TrendStats, p: f64) -> Option<f64> {
    if !t.histogram.is_empty() {
        return codec::decode(&t.histogram)
            .ok()
            .map(|h| value_at_percentile(&h, p) as f64);
    }
    let stored = [
        (50.0, t.p50_us),
        (90.0, t.p90_us),
        (95.0, t.p95_us),
        (99.0, t.p99_us),
        (99.9, t.p999_us),
        (100.0, t.max_us),
    ];
    stored
        .iter()
        .find(|(q, _)| (*q - p).abs() < 1e-9)
        .map(|(_, v)| *v as f64)
}

/// Evaluates every threshold against a summary.
pub fn evaluate(thresholds: &[Threshold], summary: &Summary) -> Vec<ThresholdResult> {
    evaluate_in(thresholds, summary, Scope::Whole)
}

/// [`evaluate`] for a summary of the given scope: on a [`Scope::Share`] an additive threshold
/// is reported with its observed value but not judged (it holds, with the reason).
pub fn evaluate_in(
    thresholds: &[Threshold],
    summary: &Summary,
    scope: Scope,
) -> Vec<ThresholdResult> {
    thresholds
        .iter()
        .map(|t| {
            let observed = observe(t, summary);
            let not_judged = match scope {
                Scope::Share if t.is_additive() => Some(NOT_JUDGED_ON_A_SHARE.to_owned()),
                // A worker is not given the console: the fleet's coordinator polls it.
                Scope::Share if observed.is_none() && t.metric.starts_with("pgbouncer_") => {
                    Some(NOT_POLLED_ON_A_SHARE.to_owned())
                }
                _ => None,
            };
            ThresholdResult {
                metric: t.metric.clone(),
                expression: t.expression.clone(),
                observed,
                ok: not_judged.is_some() || observed.is_some_and(|v| t.op.holds(v, t.value)),
                abort_on_fail: t.abort_on_fail,
                not_judged,
            }
        })
        .collect()
}

/// The `abort_on_fail` thresholds, judged while the run goes on by the same [`evaluate`] as the
/// final verdict, on the same numbers: the trends they read carry their histograms, so `p(97)`
/// is the 97th percentile, not a stored neighbour.
pub struct LiveCheck {
    thresholds: Vec<Threshold>,
}

impl LiveCheck {
    /// The check of a plan's thresholds that carry `abort_on_fail`; `None` when none do.
    pub fn new(thresholds: &[Threshold]) -> Option<LiveCheck> {
        let thresholds: Vec<Threshold> = thresholds
            .iter()
            .filter(|t| t.abort_on_fail)
            .cloned()
            .collect();
        (!thresholds.is_empty()).then_some(LiveCheck { thresholds })
    }

    /// The live check of a summary of `scope`: on an instance's share, additive thresholds are
    /// left to the fleet ([`Threshold::is_additive`]).
    pub fn in_scope(thresholds: &[Threshold], scope: Scope) -> Option<LiveCheck> {
        let judged: Vec<Threshold> = thresholds
            .iter()
            .filter(|t| scope == Scope::Whole || !t.is_additive())
            .cloned()
            .collect();
        LiveCheck::new(&judged)
    }

    /// Whether a threshold of this check reads the metric `key` (`query_duration{query:tenant}`).
    pub fn reads(&self, key: &str) -> bool {
        self.thresholds.iter().any(|t| t.metric == key)
    }

    /// Why the run must stop now, if a due threshold fails. A metric without samples yet is
    /// not a reason to abort.
    pub fn judge(
        &self,
        elapsed: Duration,
        metrics: impl Fn(&dyn Fn(&str) -> bool) -> Summary,
    ) -> Option<String> {
        let due: Vec<&Threshold> = self
            .thresholds
            .iter()
            .filter(|t| elapsed >= t.delay_abort_eval)
            .collect();
        if due.is_empty() {
            return None;
        }
        let wanted = |name: &str| due.iter().any(|t| t.metric == name);
        let snapshot = metrics(&wanted);
        due.into_iter().find_map(|t| {
            let result = &evaluate(std::slice::from_ref(t), &snapshot)[0];
            match result.observed {
                Some(observed) if !result.ok => Some(format!(
                    "threshold {t} failed (observed {observed:.3}) and has abort_on_fail"
                )),
                _ => None,
            }
        })
    }
}

impl crate::metrics::aggregator::Watcher for LiveCheck {
    fn tick(&mut self, run: &crate::metrics::aggregator::RunView<'_>) -> Option<String> {
        self.judge(Duration::from_micros(run.now_us), |wanted| Summary {
            metrics: run.metrics(wanted),
            ..Summary::empty()
        })
    }
}

/// The run's verdict from how it ended and its threshold results: the one place a verdict is
/// decided. A run that did not run to plan cannot pass: stopped by a threshold or by a failed
/// output it fails; interrupted, short of plan or missing a worker it is interrupted.
pub fn verdict(results: &[ThresholdResult], ending: Ending) -> Verdict {
    match ending {
        Ending::Threshold | Ending::OutputFailed => Verdict::Fail,
        Ending::Interrupted | Ending::WorkerLost | Ending::ShortOfPlan => Verdict::Interrupted,
        Ending::RanToPlan if results.iter().all(|r| r.ok) => Verdict::Pass,
        Ending::RanToPlan => Verdict::Fail,
    }
}

/// What a run's configuration can measure, for [`unjudgeable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgeable {
    /// An arrival-rate executor: only it schedules iterations, so only it has
    /// `dropped_iterations` and `scheduling_lag`.
    pub open_model: bool,
    /// `topology = "pooled"`: only application-side pools have a checkout wait (`pool_wait`).
    pub pooled: bool,
    /// Someone polls a PgBouncer console during the run (`pgbouncer_*`): `--pgbouncer-admin`,
    /// a stack thumper knows, or a fleet's coordinator.
    pub pgbouncer_console: bool,
}

/// Why the thresholds name a metric this configuration never records, with what would make it
/// judgeable; `None` when every threshold can be judged. Such a threshold has no samples and
/// fails, but only once the whole run is over: this finds it at load instead.
pub fn unjudgeable(thresholds: &[Threshold], can: &Judgeable) -> Option<String> {
    let problems: Vec<String> = thresholds
        .iter()
        .filter_map(|t| {
            let name = t.metric.split('{').next().unwrap_or_default();
            let fix = match name {
                "dropped_iterations" | "scheduling_lag" if !can.open_model => {
                    "only an arrival-rate executor (constant-arrival-rate, ramping-arrival-rate) schedules iterations; use one, or remove the threshold"
                }
                "pool_wait" if !can.pooled => {
                    "only application-side pools have a checkout wait; set topology = \"pooled\" in [connection], or remove the threshold"
                }
                n if n.starts_with("pgbouncer_") && !can.pgbouncer_console => {
                    "no PgBouncer console is polled with --target; pass --pgbouncer-admin URL (e.g. postgres://pgbouncer@HOST:6432/pgbouncer), or remove the threshold"
                }
                _ => return None,
            };
            Some(format!("threshold {t} can never be judged in this run: {fix}"))
        })
        .collect();
    (!problems.is_empty()).then(|| problems.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::summary::{
        percentile_rank, CounterStats, GaugeStats, RateStats, ScenarioInfo,
    };
    use std::collections::BTreeMap;

    fn threshold(metric: &str, expression: &str) -> Threshold {
        let (name, key) = split_metric_key(metric).unwrap();
        let kind = metric_kind(&name).unwrap();
        let (aggregation, op, value) = parse_expression(expression, kind).unwrap();
        Threshold {
            metric: key,
            expression: expression.into(),
            aggregation,
            op,
            value,
            abort_on_fail: false,
            delay_abort_eval: Duration::ZERO,
        }
    }

    fn summary() -> Summary {
        let mut h = codec::new_latency_histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap(); // 10 µs .. 10 ms
        }
        let trend = TrendStats {
            count: h.len(),
            min_us: h.min(),
            max_us: h.max(),
            mean_us: h.mean(),
            p50_us: value_at_percentile(&h, 50.0),
            p99_us: value_at_percentile(&h, 99.0),
            histogram: codec::encode(&h),
            unit: "us".into(),
            ..TrendStats::default()
        };
        let mut metrics = BTreeMap::new();
        metrics.insert("query_duration".into(), Metric::Trend(trend.clone()));
        metrics.insert(
            "query_duration{query:tenant}".into(),
            Metric::Trend(TrendStats::default()),
        );
        metrics.insert(
            "success_rate".into(),
            Metric::Rate(RateStats {
                rate: 0.9995,
                passes: 9995,
                fails: 5,
            }),
        );
        metrics.insert(
            "connection_errors".into(),
            Metric::Counter(CounterStats {
                count: 0,
                ..Default::default()
            }),
        );
        metrics.insert(
            "vus".into(),
            Metric::Gauge(GaugeStats {
                last: 0.0,
                min: 0.0,
                max: 100.0,
                samples: 10,
            }),
        );
        Summary {
            schema_version: 1,
            thumper_version: "test".into(),
            scenario: ScenarioInfo {
                name: "t".into(),
                description: String::new(),
                file: String::new(),
                executor: "ramping-vus".into(),
            },
            target: String::new(),
            started_at: String::new(),
            duration_s: 10.0,
            planned_duration_s: 10.0,
            verdict: Verdict::Pass,
            stop_reason: None,
            ending: Default::default(),
            thresholds: vec![],
            metrics,
            time_series: vec![],
            notes: vec![],
            curves: vec![],
            instances: vec![],
            server: None,
            scenarios: vec![],
        }
    }

    #[test]
    fn percentile_is_in_milliseconds_from_the_histogram() {
        let s = summary();
        let pass = threshold("query_duration", "p(99) < 10.5");
        let fail = threshold("query_duration", "p(99) < 9");
        let r = evaluate(&[pass, fail], &s);
        assert!(r[0].ok, "{r:?}");
        assert!(!r[1].ok);
        let observed = r[0].observed.unwrap();
        assert!((9.8..=10.0).contains(&observed), "{observed}");
        // p(99.9) is computed from the histogram, not from a stored field.
        let p999 = observe(&threshold("query_duration", "p(99.9) < 100"), &s).unwrap();
        assert!(p999 > observed);
    }

    #[test]
    fn p999_of_a_thousand_samples_is_the_999th_in_the_gate_and_the_summary() {
        // 999 samples at 1 ms and one at 500 ms: p(99.9) is the 999th, 1 ms. In floating point
        // 99.9 / 100 · 1000 is 999.0000000000001, whose ceiling once made it the 1,000th.
        let mut h = codec::new_latency_histogram();
        h.record_n(1_000, 999).unwrap();
        h.record(500_000).unwrap();
        let mut s = summary();
        let trend = TrendStats::from_histogram(&h, 10.0, true);
        assert_eq!(trend.p999_us, 1_000);
        s.metrics
            .insert("query_duration".into(), Metric::Trend(trend.clone()));
        let r = evaluate(&[threshold("query_duration", "p(99.9) < 10")], &s);
        assert!(r[0].ok, "{r:?}");
        assert_eq!(r[0].observed, Some(trend.p999_us as f64 / 1e3));
        // The same ranks at other counts and percentiles, stored or not.
        for (n, p, rank) in [(1_000, 99.9, 999), (2_000, 99.9, 1_998), (100, 99.0, 99)] {
            assert_eq!(percentile_rank(p, n), rank, "p({p}) of {n}");
        }
        assert_eq!(percentile_rank(99.99, 10_000), 9_999);
        assert_eq!(percentile_rank(0.0, 10), 1);
        assert_eq!(percentile_rank(100.0, 10), 10);
        assert_eq!(percentile_rank(50.0, 1), 1);
    }

    #[test]
    fn without_a_histogram_only_stored_percentiles_answer() {
        let mut s = summary();
        if let Some(Metric::Trend(t)) = s.metrics.get_mut("query_duration") {
            t.histogram.clear();
        }
        let p99 = observe(&threshold("query_duration", "p(99) < 10"), &s).unwrap();
        assert!((9.8..=10.0).contains(&p99), "{p99}");
        // p(97) is not p(99): no neighbour stands in for a percentile that was not kept.
        assert_eq!(
            observe(&threshold("query_duration", "p(97) < 10"), &s),
            None
        );
    }

    #[test]
    fn rates_counters_and_gauges() {
        let s = summary();
        let r = evaluate(
            &[
                threshold("success_rate", "rate > 0.999"),
                threshold("success_rate", "rate > 0.9999"),
                threshold("connection_errors", "count < 10"),
                threshold("vus", "max >= 100"),
            ],
            &s,
        );
        assert_eq!(
            r.iter().map(|r| r.ok).collect::<Vec<_>>(),
            [true, false, true, true]
        );
    }

    #[test]
    fn a_metric_without_samples_fails() {
        let s = summary();
        let r = evaluate(
            &[threshold("query_duration{query:tenant}", "p(99) < 1000")],
            &s,
        );
        assert!(!r[0].ok);
        assert_eq!(r[0].observed, None);
        let r = evaluate(&[threshold("query_errors", "count < 10")], &s);
        assert!(!r[0].ok, "a metric absent from the summary must fail");
    }

    #[test]
    fn parses_k6_syntax_and_rejects_nonsense() {
        assert_eq!(
            parse_expression("p(99.9)<=5", MetricKind::Trend).unwrap(),
            (Aggregation::Percentile(99.9), Op::Le, 5.0)
        );
        assert_eq!(
            parse_expression("count == 0", MetricKind::Counter).unwrap(),
            (Aggregation::Count, Op::Eq, 0.0)
        );
        assert!(parse_expression("p99 < 10", MetricKind::Trend)
            .unwrap_err()
            .contains("unknown aggregation"));
        assert!(parse_expression("p(99) 10", MetricKind::Trend)
            .unwrap_err()
            .contains("no comparison"));
        assert!(parse_expression("rate > 0.9", MetricKind::Trend)
            .unwrap_err()
            .contains("does not apply"));
        assert!(parse_expression("p(120) < 1", MetricKind::Trend).is_err());
        assert!(parse_expression("count < ten", MetricKind::Counter)
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn tag_filters_are_canonical() {
        assert_eq!(
            split_metric_key("query_duration{ query : tenant }")
                .unwrap()
                .1,
            "query_duration{query:tenant}"
        );
        assert!(split_metric_key("query_duration{query:tenant").is_err());
        assert!(split_metric_key("query_duration{tenant}").is_err());
    }

    #[test]
    fn a_share_leaves_counts_and_rates_to_the_fleet() {
        let mut s = Summary::empty();
        s.metrics.insert(
            "queries".into(),
            Metric::Counter(CounterStats {
                count: 300,
                rate_per_s: 100.0,
                by_class: BTreeMap::new(),
            }),
        );
        let additive = threshold("queries", "rate > 150");
        assert!(additive.is_additive());
        assert!(!threshold("query_duration", "p(99) < 10").is_additive());
        assert!(threshold("query_duration", "count > 10").is_additive());
        assert!(!threshold("success_rate", "rate > 0.9").is_additive());
        let whole = evaluate_in(std::slice::from_ref(&additive), &s, Scope::Whole);
        assert!(!whole[0].ok && whole[0].not_judged.is_none());
        let share = evaluate_in(std::slice::from_ref(&additive), &s, Scope::Share);
        assert!(share[0].ok && share[0].not_judged.is_some());
        assert_eq!(share[0].observed, Some(100.0));
        let mut abort = additive.clone();
        abort.abort_on_fail = true;
        assert!(LiveCheck::in_scope(std::slice::from_ref(&abort), Scope::Share).is_none());
        assert!(LiveCheck::in_scope(&[abort], Scope::Whole).is_some());
    }

    #[test]
    fn verdicts() {
        let ok = ThresholdResult {
            metric: "m".into(),
            expression: "count == 0".into(),
            observed: Some(0.0),
            ok: true,
            abort_on_fail: false,
            not_judged: None,
        };
        let bad = ThresholdResult {
            ok: false,
            ..ok.clone()
        };
        let ran = Ending::RanToPlan;
        assert_eq!(verdict(std::slice::from_ref(&ok), ran), Verdict::Pass);
        assert_eq!(verdict(&[ok.clone(), bad], ran), Verdict::Fail);
        assert_eq!(
            verdict(std::slice::from_ref(&ok), Ending::Interrupted),
            Verdict::Interrupted
        );
        // Stopped early, it cannot pass, whatever its thresholds say.
        assert_eq!(
            verdict(std::slice::from_ref(&ok), Ending::Threshold),
            Verdict::Fail
        );
        assert_eq!(verdict(&[ok], Ending::ShortOfPlan), Verdict::Interrupted);
    }

    #[test]
    fn thresholds_the_configuration_never_records_are_named_with_the_fix() {
        let all = [
            threshold("dropped_iterations", "count == 0"),
            threshold("scheduling_lag", "p(99) < 5"),
            threshold("pool_wait", "p(99) < 5"),
            threshold("pgbouncer_cl_waiting", "max < 50"),
            threshold("query_duration{query:tenant}", "p(99) < 5"),
        ];
        let everything = Judgeable {
            open_model: true,
            pooled: true,
            pgbouncer_console: true,
        };
        assert_eq!(unjudgeable(&all, &everything), None);
        let closed = unjudgeable(
            &all,
            &Judgeable {
                open_model: false,
                ..everything
            },
        )
        .unwrap();
        assert_eq!(closed.lines().count(), 2, "{closed}");
        assert!(
            closed.contains("dropped_iterations: count == 0") && closed.contains("arrival-rate")
        );
        let per_vu = unjudgeable(
            &all,
            &Judgeable {
                pooled: false,
                ..everything
            },
        )
        .unwrap();
        assert!(per_vu.contains("pool_wait") && per_vu.contains("topology = \"pooled\""));
        let no_console = unjudgeable(
            &all,
            &Judgeable {
                pgbouncer_console: false,
                ..everything
            },
        )
        .unwrap();
        assert!(
            no_console.contains("pgbouncer_cl_waiting") && no_console.contains("--pgbouncer-admin")
        );
    }
}
