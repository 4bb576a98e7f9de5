//! `report.html`: one self-contained page (inline CSS and SVG, no script, a Content-Security-Policy
//! that forbids any network request) that opens from disk or a CI artifact.
//!
//! The page is askama templates (`templates/report.html` and one file per section it includes)
//! filled from a [`Page`] built here from the summary: one context struct per section, holding
//! text and numbers already formatted for display. askama escapes every value the templates print
//! (with [`HtmlEscaper`](super::HtmlEscaper), see `askama.toml`) and no template marks one safe,
//! so text from the scenario or the run cannot become markup; the charts are laid out by
//! [`svg`](super::svg) and drawn by `templates/chart.html` under the same rule. Numeric table
//! cells carry their exact value in `data-v` so tests and scrapers need not parse the rounded
//! display.
//!
//! Order follows what a reader needs: verdict, thresholds, per-query table, charts, then every
//! metric's totals.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use askama::Template;

use super::model::{self, number};
use super::svg::{
    percentile_x, BarChart, BarChartView, Chart, ChartView, RefLine, Segment, Series, XAxis,
};
use super::{ReportError, ReportFormat};
use crate::metrics::codec;
use crate::metrics::summary::{
    value_at_percentile, InstanceState, InstanceStats, Interval, Metric, Summary, ThresholdResult,
    TrendStats,
};

pub(crate) struct Html;

impl ReportFormat for Html {
    fn file_name(&self) -> &'static str {
        "report.html"
    }

    fn render(&self, summary: &Summary) -> Result<Vec<u8>, ReportError> {
        let charts = charts(summary);
        let page = Page::new(summary, &charts);
        page.render()
            .map(String::into_bytes)
            .map_err(|e| ReportError::Render {
                file: "report.html",
                message: e.to_string(),
            })
    }
}

/// The whole page's context: one field per section of `templates/report.html`.
#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    title: String,
    generator: String,
    header: Header<'a>,
    tiles: Vec<Tile>,
    thresholds: Vec<ThresholdRow<'a>>,
    scenarios: Vec<ScenarioRow<'a>>,
    queries: Vec<QueryRow>,
    trends: Vec<TrendRow<'a>>,
    instances: Instances<'a>,
    charts: Vec<ChartView<'a>>,
    chart_warnings: &'a [String],
    metrics: Totals<'a>,
    notes: &'a [String],
    server: Option<super::server::Section>,
}

impl<'a> Page<'a> {
    fn new(s: &'a Summary, charts: &'a Charts) -> Page<'a> {
        Page {
            title: format!("thumper: {} — {}", s.scenario.name, s.verdict.as_str()),
            generator: format!("thumper {}", s.thumper_version),
            header: Header::new(s),
            tiles: tiles(s),
            thresholds: s.thresholds.iter().map(ThresholdRow::new).collect(),
            scenarios: model::scenario_rows(s)
                .into_iter()
                .map(ScenarioRow::new)
                .collect(),
            queries: model::query_rows(s)
                .into_iter()
                .map(QueryRow::new)
                .collect(),
            trends: trend_rows(s),
            instances: Instances::new(&s.instances),
            charts: charts.charts.iter().map(Chart::view).collect(),
            chart_warnings: &charts.warnings,
            metrics: Totals::new(s),
            notes: &s.notes,
            server: super::server::Section::of(s),
        }
    }
}

/// A number as a table cell shows it (`shown`) and its exact value (`data-v`).
struct NumberCell {
    v: String,
    shown: String,
}

impl NumberCell {
    fn count(n: u64) -> NumberCell {
        NumberCell {
            v: n.to_string(),
            shown: model::count(n),
        }
    }

    fn number(v: f64) -> NumberCell {
        NumberCell {
            v: v.to_string(),
            shown: number(v),
        }
    }
}

/// `templates/header.html`.
struct Header<'a> {
    name: &'a str,
    verdict: &'static str,
    description: &'a str,
    /// Label and value of each fact about the run (target, start, duration, ...).
    facts: Vec<(&'static str, String)>,
    stop_reason: Option<&'a str>,
}

impl<'a> Header<'a> {
    fn new(s: &'a Summary) -> Header<'a> {
        let mut facts = vec![
            ("Target", s.target.clone()),
            ("Started", s.started_at.clone()),
            (
                "Duration",
                format!(
                    "{} (planned {})",
                    model::duration(s.duration_s),
                    model::duration(s.planned_duration_s)
                ),
            ),
            ("Executor", s.scenario.executor.clone()),
        ];
        if !s.scenario.file.is_empty() {
            facts.push(("Scenario file", s.scenario.file.clone()));
        }
        facts.push(("Version", format!("thumper {}", s.thumper_version)));
        Header {
            name: &s.scenario.name,
            verdict: s.verdict.as_str(),
            description: &s.scenario.description,
            facts,
            stop_reason: s.stop_reason.as_deref(),
        }
    }
}

/// Is a counter a kind of failure (summed in the errors tile)?
fn is_error_counter(name: &str) -> bool {
    ["error", "violation", "dropped", "lost", "duplicated"]
        .iter()
        .any(|w| name.contains(w))
}

/// Counters of work done, drawn in the throughput chart; every other counter (errors, dropped or
/// incomplete iterations, reconnects, ...) goes in the errors and disruptions chart.
const WORK_COUNTERS: [&str; 4] = ["iterations", "queries", "events_sent", "events_delivered"];

fn is_work_counter(name: &str) -> bool {
    WORK_COUNTERS.contains(&name)
}

/// One of the headline numbers in `templates/tiles.html`.
struct Tile {
    key: &'static str,
    value: String,
}

fn tiles(s: &Summary) -> Vec<Tile> {
    let tile = |key, value| Tile { key, value };
    let mut tiles = Vec::new();
    if let Some((name, t)) = model::primary_trend(s) {
        let what = if name == "query_duration" {
            "Queries"
        } else {
            "Samples"
        };
        let unit = model::trend_unit(t);
        let latency = |us: u64| format!("{} {unit}", model::trend_value(t, us as f64));
        tiles.push(tile(what, model::count(t.count)));
        tiles.push(tile("Throughput", format!("{} /s", number(t.rate_per_s))));
        tiles.push(tile("p50", latency(t.p50_us)));
        tiles.push(tile("p95", latency(t.p95_us)));
        tiles.push(tile("p99", latency(t.p99_us)));
    }
    let errors: u64 = s
        .metrics
        .iter()
        .filter(|(n, _)| !n.contains('{') && is_error_counter(n))
        .filter_map(|(_, m)| match m {
            Metric::Counter(c) => Some(c.count),
            _ => None,
        })
        .sum();
    tiles.push(tile("Errors", model::count(errors)));
    if let Some(Metric::Rate(r)) = s.metrics.get("success_rate") {
        tiles.push(tile("Success", format!("{:.2} %", r.rate * 100.0)));
    }
    tiles
}

/// A row of `templates/thresholds.html`.
struct ThresholdRow<'a> {
    metric: &'a str,
    expression: &'a str,
    observed: NumberCell,
    ok: bool,
    /// A fleet-wide count or rate on one instance's share: shown, not judged.
    not_judged: bool,
    abort_on_fail: bool,
}

impl<'a> ThresholdRow<'a> {
    fn new(t: &'a ThresholdResult) -> ThresholdRow<'a> {
        ThresholdRow {
            metric: &t.metric,
            expression: &t.expression,
            observed: NumberCell {
                v: t.observed.map_or_else(String::new, |v| v.to_string()),
                shown: t.observed.map_or_else(|| "no samples".to_owned(), number),
            },
            ok: t.ok,
            not_judged: t.not_judged.is_some(),
            abort_on_fail: t.abort_on_fail,
        }
    }
}

/// A trend's count, rate and percentiles, in the order of `templates/percentile_heads.html`.
fn trend_cells(t: &TrendStats) -> Vec<NumberCell> {
    let mut cells = vec![NumberCell::count(t.count), NumberCell::number(t.rate_per_s)];
    cells.extend(
        [
            t.min_us, t.p50_us, t.p90_us, t.p95_us, t.p99_us, t.p999_us, t.max_us,
        ]
        .map(|v| NumberCell {
            v: v.to_string(),
            shown: model::trend_value(t, v as f64),
        }),
    );
    cells
}

/// A row of `templates/scenarios.html`.
struct ScenarioRow<'a> {
    name: &'a str,
    executor: &'a str,
    start: String,
    end: String,
    ending: String,
    iterations: NumberCell,
    vus: String,
    cells: Vec<NumberCell>,
    errors: NumberCell,
}

impl<'a> ScenarioRow<'a> {
    fn new(r: model::ScenarioRow<'a>) -> ScenarioRow<'a> {
        ScenarioRow {
            name: r.name,
            executor: r.executor,
            start: format!("{:.1}", r.start_s),
            end: format!("{:.1}", r.end_s),
            ending: r.ending,
            iterations: NumberCell::count(r.iterations),
            vus: model::maybe(r.vus_max),
            cells: r.trend.map(trend_cells).unwrap_or_default(),
            errors: NumberCell::count(r.errors),
        }
    }
}

/// A row of `templates/queries.html`.
struct QueryRow {
    label: String,
    /// The all-queries row, set apart at the bottom.
    total: bool,
    cells: Vec<NumberCell>,
    errors: NumberCell,
    classes: String,
}

impl QueryRow {
    fn new(r: model::QueryRow<'_>) -> QueryRow {
        QueryRow {
            total: r.label == "all queries",
            cells: trend_cells(r.trend),
            errors: NumberCell::count(r.errors),
            classes: model::classes(&r.errors_by_class),
            label: r.label,
        }
    }
}

/// A row of `templates/trends.html`.
struct TrendRow<'a> {
    name: String,
    unit: &'a str,
    cells: Vec<NumberCell>,
}

fn trend_rows(s: &Summary) -> Vec<TrendRow<'_>> {
    model::trend_names(s)
        .into_iter()
        // Latency is in the per-query table; its successes-only view is listed here.
        .filter(|n| model::base_name(n) != "query_duration" || n.contains("expected_response:"))
        .filter_map(|name| {
            let t = s.trend(&name)?;
            Some(TrendRow {
                unit: model::trend_unit(t),
                cells: trend_cells(t),
                name,
            })
        })
        .collect()
}

/// `templates/metrics.html`: every counter, rate and gauge of the run.
struct Totals<'a> {
    counters: Vec<CounterRow<'a>>,
    rates: Vec<RateRow<'a>>,
    gauges: Vec<GaugeRow<'a>>,
}

struct CounterRow<'a> {
    name: &'a str,
    total: NumberCell,
    rate: NumberCell,
    classes: String,
}

struct RateRow<'a> {
    name: &'a str,
    value: NumberCell,
    passes: String,
    fails: String,
}

struct GaugeRow<'a> {
    name: &'a str,
    last: String,
    min: String,
    max: String,
    samples: String,
}

impl<'a> Totals<'a> {
    fn new(s: &'a Summary) -> Totals<'a> {
        let mut totals = Totals {
            counters: Vec::new(),
            rates: Vec::new(),
            gauges: Vec::new(),
        };
        for (name, m) in &s.metrics {
            match m {
                Metric::Counter(c) => totals.counters.push(CounterRow {
                    name,
                    total: NumberCell::count(c.count),
                    rate: NumberCell::number(c.rate_per_s),
                    classes: model::classes(&c.by_class),
                }),
                Metric::Rate(r) => totals.rates.push(RateRow {
                    name,
                    value: NumberCell {
                        v: r.rate.to_string(),
                        shown: format!("{:.3} %", r.rate * 100.0),
                    },
                    passes: model::count(r.passes),
                    fails: model::count(r.fails),
                }),
                Metric::Gauge(g) => totals.gauges.push(GaugeRow {
                    name,
                    last: number(g.last),
                    min: number(g.min),
                    max: number(g.max),
                    samples: model::count(g.samples),
                }),
                Metric::Trend(_) => {}
            }
        }
        totals
    }
}

/// `templates/instances.html`: a fleet's generators, empty for a single run.
struct Instances<'a> {
    rows: Vec<InstanceRow<'a>>,
    /// Whether any generator saturated (the section then says what that means).
    saturated: bool,
    charts: Vec<BarChartView>,
}

/// A row of the instances table: segment, host and state, then iterations, queries, errors,
/// p99 (ms), start offset (ms), CPU (%) and largest RSS (MB).
struct InstanceRow<'a> {
    segment: &'a str,
    host: &'a str,
    state: &'static str,
    lost: bool,
    cells: Vec<NumberCell>,
    saturated: bool,
}

impl<'a> Instances<'a> {
    fn new(instances: &'a [InstanceStats]) -> Instances<'a> {
        let measured = |v: Option<f64>| NumberCell {
            v: v.map_or_else(String::new, |v| v.to_string()),
            shown: model::maybe(v),
        };
        let rows = instances
            .iter()
            .map(|i| InstanceRow {
                segment: &i.segment,
                host: &i.host,
                state: model::instance_state(i.state),
                lost: i.state == InstanceState::Lost,
                cells: vec![
                    NumberCell::count(i.iterations),
                    NumberCell::count(i.queries),
                    NumberCell::count(i.errors),
                    NumberCell {
                        v: i.p99_us.to_string(),
                        shown: model::ms(i.p99_us as f64),
                    },
                    NumberCell::number(i.start_offset_ms),
                    measured(i.cpu_percent),
                    measured(i.max_rss_mb),
                ],
                saturated: i.saturated,
            })
            .collect();
        let chart = |id: &str, title: &str, y_label: &str, f: fn(&InstanceStats) -> f64| {
            BarChart {
                id: id.to_owned(),
                title: title.to_owned(),
                x_label: "instance".to_owned(),
                y_label: y_label.to_owned(),
                bars: instances
                    .iter()
                    .map(|i| (i.segment.clone(), f(i), i.saturated))
                    .collect(),
                marked_label: "saturated generator".to_owned(),
            }
            .view()
        };
        let charts = if instances.is_empty() {
            Vec::new()
        } else {
            vec![
                chart(
                    "chart-instance-queries",
                    "Queries per instance",
                    "queries",
                    |i| i.queries as f64,
                ),
                chart("chart-instance-p99", "p99 per instance", "ms", |i| {
                    i.p99_us as f64 / 1000.0
                }),
            ]
        };
        Instances {
            rows,
            saturated: instances.iter().any(|i| i.saturated),
            charts,
        }
    }
}

/// A DOM id from a metric name, unique within the page.
fn slug(prefix: &str, name: &str, used: &mut HashSet<String>) -> String {
    let mut id = String::from(prefix);
    let mut dash = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            id.push(c.to_ascii_lowercase());
            dash = false;
        } else if !dash {
            id.push('-');
            dash = true;
        }
    }
    while id.ends_with('-') {
        id.pop();
    }
    let mut unique = id.clone();
    let mut n = 2;
    while !used.insert(unique.clone()) {
        unique = format!("{id}-{n}");
        n += 1;
    }
    unique
}

/// Gauges drawn together, with their axis label. Gauges not listed get a chart each.
const GAUGE_GROUPS: [(&str, &str, &str, &[&str]); 9] = [
    (
        "pgbouncer-clients",
        "PgBouncer client connections",
        "connections",
        &["pgbouncer_cl_active", "pgbouncer_cl_waiting"],
    ),
    (
        "pgbouncer-servers",
        "PgBouncer server connections",
        "connections",
        &["pgbouncer_sv_active", "pgbouncer_sv_idle"],
    ),
    (
        "pgbouncer-rates",
        "PgBouncer transactions and queries",
        "per second",
        &["pgbouncer_xact_per_s", "pgbouncer_query_per_s"],
    ),
    (
        "pgbouncer-maxwait",
        "PgBouncer longest client wait",
        "seconds",
        &["pgbouncer_maxwait"],
    ),
    (
        "pgbouncer-avg-wait",
        "PgBouncer average client wait",
        "µs",
        &["pgbouncer_avg_wait_us"],
    ),
    (
        "gateway-memory",
        "Gateway memory",
        "MB",
        &["gateway_rss_mb", "gateway_rss_mb_per_1k_guilds"],
    ),
    ("gateway-cpu", "Gateway CPU", "%", &["gateway_cpu_percent"]),
    (
        "generator-cpu",
        "Load generator CPU (of the cores it may use)",
        "%",
        &["generator_cpu_percent"],
    ),
    (
        "generator-memory",
        "Load generator memory",
        "MB",
        &["generator_rss_mb"],
    ),
];

/// The server's gauges (src/metrics/server.rs), grouped by name: per-query ones have a name
/// per query, so these groups are by prefix.
type GaugeFilter = fn(&str) -> bool;
const SERVER_GROUPS: [(&str, &str, &str, GaugeFilter); 5] = [
    (
        "server-waits",
        "Server backends by wait event type (application role, busy)",
        "backends",
        |n| n.starts_with("server_waits_") || n == "server_active_backends",
    ),
    (
        "server-time",
        "Server time per query (mean of each second)",
        "µs",
        |n| n.starts_with("server_time{"),
    ),
    ("server-rows", "Server rows per call", "rows", |n| {
        n.starts_with("server_rows{")
    }),
    (
        "server-blocks",
        "Server blocks read per call",
        "blocks",
        |n| n.starts_with("server_blocks_read{"),
    ),
    ("server-xacts", "Server transactions", "per second", |n| {
        n == "server_commits_per_s" || n == "server_rollbacks_per_s"
    }),
];

fn gauge_unit(name: &str) -> &'static str {
    if name.ends_with("_mb") {
        "MB"
    } else if name.ends_with("_percent") {
        "%"
    } else if name.ends_with("_us") {
        "µs"
    } else if name.ends_with("_per_s") {
        "per second"
    } else {
        "value"
    }
}

fn time_series<F: Fn(&Interval) -> Option<f64>>(s: &Summary, name: &str, f: F) -> Series {
    Series {
        name: name.to_owned(),
        points: s
            .time_series
            .iter()
            .map(|i| (i.t_s, f(i).unwrap_or(f64::NAN)))
            .collect(),
    }
}

fn time_chart(id: String, title: String, y_label: &str, series: Vec<Series>) -> Chart {
    Chart {
        id,
        title,
        x_label: "time since start (s)".to_owned(),
        y_label: y_label.to_owned(),
        x_axis: XAxis::Linear,
        series,
        ref_lines: Vec::new(),
    }
}

/// Threshold lines for a trend, in its display unit (thresholds on durations are in ms).
fn threshold_lines(s: &Summary, metric: &str) -> Vec<RefLine> {
    s.thresholds
        .iter()
        .filter(|t| t.metric == metric)
        .filter_map(|t| {
            let line = model::parse_threshold(&t.expression)?;
            model::is_latency_aggregation(&line.aggregation).then(|| RefLine {
                label: t.expression.clone(),
                y: line.value,
            })
        })
        .collect()
}

/// The charts with data, and why any was left out.
struct Charts {
    charts: Vec<Chart>,
    warnings: Vec<String>,
}

fn charts(s: &Summary) -> Charts {
    let mut warnings = Vec::new();
    let mut used = HashSet::new();
    let mut charts = Vec::new();
    if !s.time_series.is_empty() {
        charts.extend(activity_charts(s, &mut used));
    }
    charts.extend(distribution_charts(s, &mut used, &mut warnings));
    if !s.time_series.is_empty() {
        charts.extend(gauge_charts(s, &mut used));
    }
    charts.extend(curve_charts(s, &mut used));
    charts.retain(|c| c.point_count() > 0);
    Charts { charts, warnings }
}

/// VUs, throughput, latency over time per trend, and errors over time.
fn activity_charts(s: &Summary, used: &mut HashSet<String>) -> Vec<Chart> {
    let mut charts = Vec::new();
    let series = &s.time_series;
    charts.push(time_chart(
        slug("chart-", "vus", used),
        "Active virtual users".to_owned(),
        "virtual users",
        vec![time_series(s, "VUs", |i| Some(i.vus as f64))],
    ));

    // Untagged counters seen in any interval, split into work done and failures.
    let counter_names: BTreeSet<&String> = series
        .iter()
        .flat_map(|i| i.counters.keys())
        .filter(|n| !n.contains('{'))
        .collect();
    let per_second = |name: &str| {
        let name = name.to_owned();
        move |i: &Interval| {
            let n = i.counters.get(&name).copied().unwrap_or(0) as f64;
            Some(if i.len_s > 0.0 { n / i.len_s } else { n })
        }
    };
    let work: Vec<Series> = counter_names
        .iter()
        .filter(|n| is_work_counter(n))
        .map(|n| time_series(s, n, per_second(n)))
        .collect();
    if !work.is_empty() {
        charts.push(time_chart(
            slug("chart-", "throughput", used),
            "Throughput".to_owned(),
            "per second",
            work,
        ));
    }

    for name in interval_trend_names(s) {
        let unit = s
            .trend(&name)
            .map_or("ms", |t| model::trend_unit(t))
            .to_owned();
        let scale = if unit == "ms" { 1000.0 } else { 1.0 };
        let pick = |f: fn(&crate::metrics::summary::IntervalTrend) -> u64| {
            let name = name.clone();
            move |i: &Interval| {
                i.trends
                    .get(&name)
                    .filter(|t| t.count > 0)
                    .map(|t| f(t) as f64 / scale)
            }
        };
        let mut chart = time_chart(
            slug("chart-latency-", &name, used),
            format!("Latency over time: {name}"),
            &unit,
            vec![
                time_series(s, "p50", pick(|t| t.p50_us)),
                time_series(s, "p95", pick(|t| t.p95_us)),
                time_series(s, "p99", pick(|t| t.p99_us)),
            ],
        );
        if unit == "ms" {
            chart.ref_lines = threshold_lines(s, &name);
        }
        charts.push(chart);
    }

    // Every other counter the run knows, zero where an interval has none.
    let mut error_names: BTreeSet<&String> = counter_names
        .iter()
        .copied()
        .filter(|n| !is_work_counter(n))
        .collect();
    error_names.extend(s.metrics.iter().filter_map(|(n, m)| {
        (matches!(m, Metric::Counter(_)) && !n.contains('{') && !is_work_counter(n)).then_some(n)
    }));
    if !error_names.is_empty() {
        charts.push(time_chart(
            slug("chart-", "errors", used),
            "Errors and disruptions over time".to_owned(),
            "per second",
            error_names
                .iter()
                .map(|n| time_series(s, n, per_second(n)))
                .collect(),
        ));
    }
    charts
}

/// The gauges over time: the known groups together, each other gauge alone.
fn gauge_charts(s: &Summary, used: &mut HashSet<String>) -> Vec<Chart> {
    let mut charts = Vec::new();
    let series = &s.time_series;
    let gauge_names: BTreeSet<&String> = series
        .iter()
        .flat_map(|i| i.gauges.keys())
        .filter(|n| n.as_str() != "vus")
        .collect();
    let mut grouped = HashSet::new();
    let gauge = |n: &str| {
        let n = n.to_owned();
        move |i: &Interval| i.gauges.get(&n).copied()
    };
    for (id, title, unit, members) in GAUGE_GROUPS {
        let present: Vec<&str> = members
            .iter()
            .copied()
            .filter(|m| gauge_names.iter().any(|g| g.as_str() == *m))
            .collect();
        if present.is_empty() {
            continue;
        }
        grouped.extend(present.iter().map(|m| m.to_string()));
        charts.push(time_chart(
            slug("chart-", id, used),
            title.to_owned(),
            unit,
            present
                .iter()
                .map(|m| time_series(s, m, gauge(m)))
                .collect(),
        ));
    }
    for (id, title, unit, wanted) in SERVER_GROUPS {
        let present: Vec<&String> = gauge_names
            .iter()
            .copied()
            .filter(|n| wanted(n) && !grouped.contains(n.as_str()))
            .collect();
        grouped.extend(present.iter().map(|n| n.to_string()));
        // A wait type no backend was ever seen on is a flat zero: left out of the chart.
        let drawn: Vec<Series> = present
            .iter()
            .filter(|n| {
                series
                    .iter()
                    .any(|i| i.gauges.get(n.as_str()).is_some_and(|v| *v != 0.0))
            })
            .map(|n| time_series(s, n, gauge(n)))
            .collect();
        if !drawn.is_empty() {
            charts.push(time_chart(
                slug("chart-", id, used),
                title.to_owned(),
                unit,
                drawn,
            ));
        }
    }
    for name in gauge_names {
        if grouped.contains(name.as_str()) {
            continue;
        }
        charts.push(time_chart(
            slug("chart-gauge-", name, used),
            name.clone(),
            gauge_unit(name),
            vec![time_series(s, name, gauge(name))],
        ));
    }
    charts
}

/// A run's named x/y curves (a capacity search's rate curve).
fn curve_charts(s: &Summary, used: &mut HashSet<String>) -> Vec<Chart> {
    let mut charts = Vec::new();
    for curve in &s.curves {
        charts.push(Chart {
            id: slug("chart-curve-", &curve.name, used),
            title: curve.name.clone(),
            x_label: curve.x_label.clone(),
            y_label: curve.y_label.clone(),
            x_axis: XAxis::Linear,
            series: curve
                .series
                .iter()
                .map(|(name, points)| Series {
                    name: name.clone(),
                    points: points.clone(),
                })
                .collect(),
            ref_lines: Vec::new(),
        });
    }
    charts
}

/// Trends that appear in the time series, in the report's trend order.
fn interval_trend_names(s: &Summary) -> Vec<String> {
    let seen: BTreeSet<&String> = s
        .time_series
        .iter()
        .flat_map(|i| i.trends.keys())
        .filter(|n| !model::is_outcome_split(n))
        .collect();
    let mut names: Vec<String> = model::trend_names(s)
        .into_iter()
        .filter(|n| seen.contains(n))
        .collect();
    // Trends only in the time series (not in the totals) still get a chart, after the others.
    for n in seen {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// Quantiles for the distribution plot: ten per decade of the log axis, up to what the sample
/// count resolves.
fn distribution_points(h: &hdrhistogram::Histogram<u64>, scale: f64) -> Vec<(f64, f64)> {
    let limit = (h.len() as f64).log10();
    let mut points = Vec::new();
    for k in 0..=60 {
        let x = f64::from(k) / 10.0;
        if x > limit {
            break;
        }
        let q = 1.0 - 10f64.powf(-x);
        points.push((
            percentile_x(q),
            value_at_percentile(h, q * 100.0) as f64 / scale,
        ));
    }
    points.push((limit, h.max() as f64 / scale));
    points
}

/// One percentile-distribution chart per latency family (`query_duration` and its queries,
/// `service_time`, `event_latency`, ...), from the full-run histograms.
fn distribution_charts(
    s: &Summary,
    used: &mut HashSet<String>,
    warnings: &mut Vec<String>,
) -> Vec<Chart> {
    let mut families: BTreeMap<String, Vec<Series>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for name in model::trend_names(s) {
        let Some(t) = s.trend(&name) else { continue };
        if t.histogram.is_empty() || t.count == 0 || model::is_outcome_split(&name) {
            continue;
        }
        let h = match codec::decode(&t.histogram) {
            Ok(h) => h,
            Err(e) => {
                warnings.push(format!("The histogram of {name} could not be read ({e}); it is left out of the distribution chart."));
                continue;
            }
        };
        let scale = if t.unit == "us" { 1000.0 } else { 1.0 };
        let base = model::base_name(&name).to_owned();
        let label = model::query_of(&name).map_or_else(
            || {
                if name == base {
                    "all".to_owned()
                } else {
                    name.clone()
                }
            },
            str::to_owned,
        );
        if !families.contains_key(&base) {
            order.push(base.clone());
        }
        families.entry(base).or_default().push(Series {
            name: label,
            points: distribution_points(&h, scale),
        });
    }
    order
        .into_iter()
        .map(|base| {
            let unit = s
                .trend(&base)
                .map_or("ms", |t| model::trend_unit(t))
                .to_owned();
            let primary = model::primary_trend(s).is_some_and(|(p, _)| p == base);
            Chart {
                id: if primary {
                    slug("chart-", "distribution", used)
                } else {
                    slug("chart-distribution-", &base, used)
                },
                title: format!("Latency distribution: {base}"),
                x_label: "percentile (log scale)".to_owned(),
                y_label: unit.clone(),
                x_axis: XAxis::Percentile,
                ref_lines: if unit == "ms" {
                    threshold_lines(s, &base)
                } else {
                    Vec::new()
                },
                series: families.remove(&base).unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// askama escapes every value unless a template opts out; none may, since the page's text
    /// comes from the scenario and the run.
    #[test]
    fn no_template_opts_out_of_escaping() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/report/templates");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap().replace(' ', "");
            for opt_out in ["|safe", "|e(", "|escape(", "filter"] {
                assert!(!text.contains(opt_out), "{}: {opt_out}", path.display());
            }
            seen += 1;
        }
        assert!(seen >= 2, "templates not found in {dir}");
    }

    #[test]
    fn fleet_instances_are_a_table_and_charts_with_hosts_escaped() {
        let s = model::fixtures::fleet();
        let html = String::from_utf8(Html.render(&s).unwrap()).unwrap();
        assert!(html.contains(r#"<section id="instances">"#));
        assert_eq!(html.matches("<tr class=").count(), 3, "{html}");
        assert!(html.contains(r#"data-instance="1/3" data-state="finished" data-saturated="true""#));
        assert!(html.contains(r#"class="failed" data-instance="2/3" data-state="lost""#));
        assert!(html.contains(r#"<td data-v="1000">1,000</td>"#), "{html}");
        assert!(html.contains(r#"<td data-v="12500">12.5</td>"#));
        assert!(
            html.contains(r#"<td data-v="">—</td>"#),
            "unmeasured CPU of the lost one"
        );
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains(r#"id="chart-instance-queries""#));
        assert!(html.contains(r#"id="chart-instance-p99""#));
        assert_eq!(html.matches("<rect").count(), 6);
        // A single run has no such section.
        let single = String::from_utf8(Html.render(&Summary::empty()).unwrap()).unwrap();
        assert!(!single.contains(r#"id="instances""#));
    }

    #[test]
    fn generator_gauges_get_their_charts() {
        let mut s = Summary::empty();
        s.time_series = (1..=3)
            .map(|t| Interval {
                t_s: f64::from(t),
                len_s: 1.0,
                vus: 1,
                gauges: BTreeMap::from([
                    ("generator_cpu_percent".to_owned(), 50.0),
                    ("generator_rss_mb".to_owned(), 30.0),
                ]),
                ..Interval::default()
            })
            .collect();
        let html = String::from_utf8(Html.render(&s).unwrap()).unwrap();
        assert!(html.contains(r#"id="chart-generator-cpu""#));
        assert!(html.contains(r#"id="chart-generator-memory""#));
    }

    #[test]
    fn slugs_are_unique() {
        let mut used = HashSet::new();
        assert_eq!(
            slug("chart-latency-", "query_duration{query:a b}", &mut used),
            "chart-latency-query_duration-query-a-b"
        );
        assert_eq!(
            slug("chart-latency-", "query_duration{query:a-b}", &mut used),
            "chart-latency-query_duration-query-a-b-2"
        );
    }
}
