//! `report.html`: one self-contained page (inline CSS and SVG, no script, a Content-Security-Policy
//! that forbids any network request) that opens from disk or a CI artifact.
//!
//! The page chrome and CSS are a template (`templates/report.html`); the sections are rendered
//! here from the summary. All text from the scenario or the run goes through [`Escaped`]. Numeric
//! table cells carry their exact value in `data-v` so tests and scrapers need not parse the
//! rounded display.
//!
//! Order follows what a reader needs: verdict, thresholds, per-query table, charts, then every
//! metric's totals.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;

use super::model::{self, number};
use super::svg::{percentile_x, Chart, RefLine, Series, XAxis};
use super::{Escaped, ReportError, ReportFormat};
use crate::metrics::codec;
use crate::metrics::summary::{Interval, Metric, Summary, TrendStats};

const TEMPLATE: &str = include_str!("templates/report.html");

pub(crate) struct Html;

impl ReportFormat for Html {
    fn file_name(&self) -> &'static str {
        "report.html"
    }

    fn render(&self, summary: &Summary) -> Result<Vec<u8>, ReportError> {
        Ok(render(summary).into_bytes())
    }
}

/// Fills `{{name}}` placeholders; each value is already markup.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let key = &after[..end];
        match values.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn render(s: &Summary) -> String {
    let mut warnings = Vec::new();
    let charts = charts(s, &mut warnings);
    let mut body = String::new();
    header(s, &mut body);
    tiles(s, &mut body);
    thresholds(s, &mut body);
    queries(s, &mut body);
    other_trends(s, &mut body);

    body.push_str("<section id=\"charts\"><h2>Charts</h2>\n");
    if charts.is_empty() {
        body.push_str("<p>The run recorded no time series.</p>\n");
    }
    for w in &warnings {
        let _ = writeln!(body, "<p class=\"callout\">{}</p>", Escaped(w));
    }
    body.push_str("<div class=\"charts\">\n");
    for chart in &charts {
        chart.render(&mut body);
    }
    body.push_str("</div></section>\n");

    totals(s, &mut body);
    if !s.notes.is_empty() {
        body.push_str("<section id=\"notes\"><h2>Notes</h2><ul class=\"notes\">");
        for n in &s.notes {
            let _ = write!(body, "<li>{}</li>", Escaped(n));
        }
        body.push_str("</ul></section>\n");
    }

    let title = format!("thumper: {} — {}", s.scenario.name, s.verdict.as_str());
    let generator = format!("thumper {}", s.thumper_version);
    fill(
        TEMPLATE,
        &[
            ("title", &Escaped(&title).to_string()),
            ("generator", &Escaped(&generator).to_string()),
            ("body", &body),
        ],
    )
}

fn header(s: &Summary, out: &mut String) {
    let v = s.verdict.as_str();
    let _ = writeln!(
        out,
        r#"<header id="header"><h1>{} <span class="verdict {v}" id="verdict">{v}</span></h1>"#,
        Escaped(&s.scenario.name)
    );
    if !s.scenario.description.is_empty() {
        let _ = writeln!(
            out,
            r#"<p class="description">{}</p>"#,
            Escaped(&s.scenario.description)
        );
    }
    out.push_str(r#"<dl class="meta">"#);
    let ran = format!(
        "{} (planned {})",
        model::duration(s.duration_s),
        model::duration(s.planned_duration_s)
    );
    let version = format!("thumper {}", s.thumper_version);
    let mut rows = vec![
        ("Target", s.target.as_str()),
        ("Started", s.started_at.as_str()),
        ("Duration", ran.as_str()),
        ("Executor", s.scenario.executor.as_str()),
    ];
    if !s.scenario.file.is_empty() {
        rows.push(("Scenario file", s.scenario.file.as_str()));
    }
    rows.push(("Version", version.as_str()));
    for (k, v) in rows {
        let _ = write!(out, "<dt>{k}</dt><dd>{}</dd>", Escaped(v));
    }
    out.push_str("</dl>\n");
    if let Some(reason) = &s.stop_reason {
        let _ = writeln!(
            out,
            r#"<p class="callout" id="stop-reason"><strong>Stopped early:</strong> {}</p>"#,
            Escaped(reason)
        );
    }
    out.push_str("</header>\n");
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

fn tiles(s: &Summary, out: &mut String) {
    let mut tiles: Vec<(String, String)> = Vec::new();
    if let Some((name, t)) = model::primary_trend(s) {
        let what = if name == "query_duration" {
            "Queries"
        } else {
            "Samples"
        };
        let unit = model::trend_unit(t);
        tiles.push((what.to_owned(), model::count(t.count)));
        tiles.push((
            "Throughput".to_owned(),
            format!("{} /s", number(t.rate_per_s)),
        ));
        tiles.push((
            "p50".to_owned(),
            format!("{} {unit}", model::trend_value(t, t.p50_us as f64)),
        ));
        tiles.push((
            "p95".to_owned(),
            format!("{} {unit}", model::trend_value(t, t.p95_us as f64)),
        ));
        tiles.push((
            "p99".to_owned(),
            format!("{} {unit}", model::trend_value(t, t.p99_us as f64)),
        ));
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
    tiles.push(("Errors".to_owned(), model::count(errors)));
    if let Some(Metric::Rate(r)) = s.metrics.get("success_rate") {
        tiles.push(("Success".to_owned(), format!("{:.2} %", r.rate * 100.0)));
    }
    out.push_str(r#"<div class="tiles" id="tiles">"#);
    for (k, v) in tiles {
        let _ = write!(
            out,
            r#"<div class="tile"><div class="k">{k}</div><div class="v">{}</div></div>"#,
            Escaped(&v)
        );
    }
    out.push_str("</div>\n");
}

fn thresholds(s: &Summary, out: &mut String) {
    out.push_str(r#"<section id="thresholds"><h2>Thresholds</h2>"#);
    if s.thresholds.is_empty() {
        out.push_str("<p>The scenario sets no thresholds.</p></section>\n");
        return;
    }
    out.push_str(
        r#"<div class="scroll"><table><thead><tr><th>Metric</th><th class="text">Expression</th><th>Observed</th><th class="text">Result</th></tr></thead><tbody>"#,
    );
    for t in &s.thresholds {
        let observed = t.observed.map_or_else(|| "no samples".to_owned(), number);
        let data_v = t.observed.map_or_else(String::new, |v| v.to_string());
        let _ = write!(
            out,
            r#"<tr class="{}" data-metric="{}" data-ok="{}"><td class="text">{}</td><td class="text"><code>{}</code></td><td data-v="{data_v}">{observed}</td><td class="text">{}{}</td></tr>"#,
            if t.ok { "passed" } else { "failed" },
            Escaped(&t.metric),
            t.ok,
            Escaped(&t.metric),
            Escaped(&t.expression),
            if t.ok {
                r#"<span class="ok">✔ pass</span>"#
            } else {
                r#"<span class="bad">✘ fail</span>"#
            },
            if t.abort_on_fail {
                r#" <span class="tag">aborts run</span>"#
            } else {
                ""
            },
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// `<td>` cells for a trend's count, rate and percentiles.
fn trend_cells(t: &TrendStats, out: &mut String) {
    let _ = write!(
        out,
        r#"<td data-v="{}">{}</td><td data-v="{}">{}</td>"#,
        t.count,
        model::count(t.count),
        t.rate_per_s,
        number(t.rate_per_s)
    );
    for v in [
        t.min_us, t.p50_us, t.p90_us, t.p95_us, t.p99_us, t.p999_us, t.max_us,
    ] {
        let _ = write!(
            out,
            r#"<td data-v="{v}">{}</td>"#,
            model::trend_value(t, v as f64)
        );
    }
}

const PERCENTILE_HEADS: &str =
    "<th>Count</th><th>Rate /s</th><th>min</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th>";

fn queries(s: &Summary, out: &mut String) {
    let rows = model::query_rows(s);
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        r#"<section id="queries"><h2>Queries <small>(latency in ms)</small></h2><div class="scroll"><table><thead><tr><th>Query</th>{PERCENTILE_HEADS}<th>Errors</th><th class="text">Errors by class</th></tr></thead><tbody>"#
    );
    for r in &rows {
        let total = r.label == "all queries";
        let _ = write!(
            out,
            r#"<tr{} data-query="{}"><td class="text">{}</td>"#,
            if total { r#" class="total""# } else { "" },
            Escaped(&r.label),
            Escaped(&r.label)
        );
        trend_cells(r.trend, out);
        let _ = write!(
            out,
            r#"<td data-v="{}">{}</td><td class="text">{}</td></tr>"#,
            r.errors,
            model::count(r.errors),
            Escaped(&model::classes(&r.errors_by_class))
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn other_trends(s: &Summary, out: &mut String) {
    let names: Vec<String> = model::trend_names(s)
        .into_iter()
        .filter(|n| model::base_name(n) != "query_duration")
        .collect();
    if names.is_empty() {
        return;
    }
    let _ = write!(
        out,
        r#"<section id="trends"><h2>Other latency trends</h2><div class="scroll"><table><thead><tr><th>Trend</th><th>Unit</th>{PERCENTILE_HEADS}</tr></thead><tbody>"#
    );
    for n in names {
        let Some(t) = s.trend(&n) else { continue };
        let _ = write!(
            out,
            r#"<tr data-trend="{}"><td class="text">{}</td><td>{}</td>"#,
            Escaped(&n),
            Escaped(&n),
            Escaped(model::trend_unit(t))
        );
        trend_cells(t, out);
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn totals(s: &Summary, out: &mut String) {
    let mut counters = String::new();
    let mut rates = String::new();
    let mut gauges = String::new();
    for (name, m) in &s.metrics {
        match m {
            Metric::Counter(c) => {
                let _ = write!(
                    counters,
                    r#"<tr data-counter="{}"><td class="text">{}</td><td data-v="{}">{}</td><td data-v="{}">{}</td><td class="text">{}</td></tr>"#,
                    Escaped(name),
                    Escaped(name),
                    c.count,
                    model::count(c.count),
                    c.rate_per_s,
                    number(c.rate_per_s),
                    Escaped(&model::classes(&c.by_class))
                );
            }
            Metric::Rate(r) => {
                let _ = write!(
                    rates,
                    r#"<tr data-rate="{}"><td class="text">{}</td><td data-v="{}">{:.3} %</td><td>{}</td><td>{}</td></tr>"#,
                    Escaped(name),
                    Escaped(name),
                    r.rate,
                    r.rate * 100.0,
                    model::count(r.passes),
                    model::count(r.fails)
                );
            }
            Metric::Gauge(g) => {
                let _ = write!(
                    gauges,
                    r#"<tr data-gauge="{}"><td class="text">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    Escaped(name),
                    Escaped(name),
                    number(g.last),
                    number(g.min),
                    number(g.max),
                    model::count(g.samples)
                );
            }
            Metric::Trend(_) => {}
        }
    }
    out.push_str(r#"<section id="metrics"><h2>All metrics</h2>"#);
    for (rows, heads) in [
        (
            &counters,
            "<th>Counter</th><th>Total</th><th>Rate /s</th><th class=\"text\">By class</th>",
        ),
        (
            &rates,
            "<th>Rate</th><th>Value</th><th>Passes</th><th>Fails</th>",
        ),
        (
            &gauges,
            "<th>Gauge</th><th>Last</th><th>Min</th><th>Max</th><th>Samples</th>",
        ),
    ] {
        if !rows.is_empty() {
            let _ = write!(
                out,
                r#"<div class="scroll"><table><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table></div>"#
            );
        }
    }
    out.push_str("</section>\n");
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
const GAUGE_GROUPS: [(&str, &str, &str, &[&str]); 7] = [
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

fn charts(s: &Summary, warnings: &mut Vec<String>) -> Vec<Chart> {
    let mut used = HashSet::new();
    let mut charts = Vec::new();
    let series = &s.time_series;

    if !series.is_empty() {
        charts.push(time_chart(
            slug("chart-", "vus", &mut used),
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
                slug("chart-", "throughput", &mut used),
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
                slug("chart-latency-", &name, &mut used),
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
            (matches!(m, Metric::Counter(_)) && !n.contains('{') && !is_work_counter(n))
                .then_some(n)
        }));
        if !error_names.is_empty() {
            charts.push(time_chart(
                slug("chart-", "errors", &mut used),
                "Errors and disruptions over time".to_owned(),
                "per second",
                error_names
                    .iter()
                    .map(|n| time_series(s, n, per_second(n)))
                    .collect(),
            ));
        }
    }

    charts.extend(distribution_charts(s, &mut used, warnings));

    if !series.is_empty() {
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
                slug("chart-", id, &mut used),
                title.to_owned(),
                unit,
                present
                    .iter()
                    .map(|m| time_series(s, m, gauge(m)))
                    .collect(),
            ));
        }
        for name in gauge_names {
            if grouped.contains(name.as_str()) {
                continue;
            }
            charts.push(time_chart(
                slug("chart-gauge-", name, &mut used),
                name.clone(),
                gauge_unit(name),
                vec![time_series(s, name, gauge(name))],
            ));
        }
    }

    for curve in &s.curves {
        charts.push(Chart {
            id: slug("chart-curve-", &curve.name, &mut used),
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

    charts.retain(|c| c.point_count() > 0);
    charts
}

/// Trends that appear in the time series, in the report's trend order.
fn interval_trend_names(s: &Summary) -> Vec<String> {
    let seen: BTreeSet<&String> = s.time_series.iter().flat_map(|i| i.trends.keys()).collect();
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
        points.push((percentile_x(q), h.value_at_quantile(q) as f64 / scale));
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
        if t.histogram.is_empty() || t.count == 0 {
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

    #[test]
    fn fills_placeholders_and_keeps_unknown_ones() {
        assert_eq!(fill("a{{x}}b{{y}}c", &[("x", "1")]), "a1b{{y}}c");
        assert!(!fill(TEMPLATE, &[("title", ""), ("body", ""), ("generator", "")]).contains("{{"));
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
