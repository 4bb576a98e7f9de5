//! Report formats and `compare`, checked on summaries built here from recorded histograms (the
//! same shape a run produces) and on the committed fixture `tests/fixtures/steady.summary.json`.
//!
//! Golden files live in `tests/fixtures/golden/`; after an intended change, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test --test reports` and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use thumper::metrics::codec::{self, new_latency_histogram};
use thumper::metrics::summary::*;
use thumper::report::compare::{self, Change, Stat};
use thumper::report::{self, ReportError};

// ---------------------------------------------------------------------------------------------
// A small builder: record latencies per interval, aggregate like a run does, encode histograms.

struct QuerySpec {
    name: &'static str,
    per_interval: u64,
    base_us: f64,
    spread_us: f64,
}

struct Run {
    scenario: &'static str,
    description: &'static str,
    queries: Vec<QuerySpec>,
    intervals: usize,
    /// Multiplies every latency (1.3 = 30 % slower).
    slowdown: f64,
    /// Multiplies the number of samples per interval.
    load: f64,
    seed: u64,
    pgbouncer: bool,
}

impl Run {
    fn steady() -> Run {
        Run {
            scenario: "steady",
            description: "Steady read/write mix at 20 VUs.",
            queries: vec![
                QuerySpec {
                    name: "tenant_lookup",
                    per_interval: 120,
                    base_us: 900.0,
                    spread_us: 600.0,
                },
                QuerySpec {
                    name: "insert_message",
                    per_interval: 60,
                    base_us: 4_000.0,
                    spread_us: 3_000.0,
                },
                QuerySpec {
                    name: "health",
                    per_interval: 2,
                    base_us: 150.0,
                    spread_us: 40.0,
                },
            ],
            intervals: 30,
            slowdown: 1.0,
            load: 1.0,
            seed: 7,
            pgbouncer: true,
        }
    }
}

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn trend_stats(h: &Histogram<u64>, duration_s: f64) -> TrendStats {
    TrendStats {
        count: h.len(),
        rate_per_s: h.len() as f64 / duration_s,
        min_us: h.min(),
        mean_us: (h.mean() * 10.0).round() / 10.0,
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p95_us: h.value_at_quantile(0.95),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        histogram: codec::encode(h),
        unit: "us".to_owned(),
    }
}

fn build(run: &Run) -> Summary {
    let mut rng = Lcg(run.seed);
    let duration_s = run.intervals as f64;
    let mut total = new_latency_histogram();
    let mut per_query: BTreeMap<&str, Histogram<u64>> = run
        .queries
        .iter()
        .map(|q| (q.name, new_latency_histogram()))
        .collect();
    let mut errors_by_query: BTreeMap<&str, u64> = BTreeMap::new();
    let mut time_series = Vec::new();
    let mut total_errors = 0;
    let mut timeouts = 0;

    for i in 0..run.intervals {
        let t_s = (i + 1) as f64;
        // Ramp up over the first fifth, down over the last fifth.
        let ramp = ((i + 1) as f64 / (run.intervals as f64 / 5.0))
            .min((run.intervals - i) as f64 / (run.intervals as f64 / 5.0))
            .min(1.0);
        let vus = (20.0 * ramp).round() as u64;
        let mut interval = Interval {
            t_s,
            len_s: 1.0,
            vus,
            ..Interval::default()
        };
        let mut interval_total = new_latency_histogram();
        let mut queries = 0;
        let mut errors = 0;
        for q in &run.queries {
            let n = (q.per_interval as f64 * ramp * run.load).round() as u64;
            let mut h = new_latency_histogram();
            for _ in 0..n {
                let u = rng.next();
                let mut v = q.base_us + q.spread_us * -(1.0 - u).ln();
                if rng.next() < 0.004 {
                    v *= 8.0;
                }
                h.record((v * run.slowdown).round().max(1.0) as u64)
                    .unwrap();
            }
            // One error in the insert path now and then, of two classes.
            if q.name == "insert_message" && i % 7 == 3 {
                *errors_by_query.entry(q.name).or_default() += 1;
                errors += 1;
                if i % 14 == 3 {
                    timeouts += 1;
                }
            }
            queries += n;
            interval_total.add(&h).unwrap();
            per_query.get_mut(q.name).unwrap().add(&h).unwrap();
            interval.trends.insert(
                format!("query_duration{{query:{}}}", q.name),
                IntervalTrend::from_histogram(&h),
            );
        }
        total_errors += errors;
        total.add(&interval_total).unwrap();
        interval.trends.insert(
            "query_duration".to_owned(),
            IntervalTrend::from_histogram(&interval_total),
        );
        interval.counters.insert("queries".to_owned(), queries);
        interval
            .counters
            .insert("iterations".to_owned(), queries / 3);
        interval.counters.insert("query_errors".to_owned(), errors);
        interval.counters.insert("connection_errors".to_owned(), 0);
        if run.pgbouncer {
            let g = &mut interval.gauges;
            g.insert("pgbouncer_cl_active".to_owned(), vus as f64);
            g.insert(
                "pgbouncer_cl_waiting".to_owned(),
                if (12..15).contains(&i) { 4.0 } else { 0.0 },
            );
            g.insert("pgbouncer_sv_active".to_owned(), (vus as f64 / 2.0).ceil());
            g.insert(
                "pgbouncer_sv_idle".to_owned(),
                10.0 - (vus as f64 / 2.0).ceil(),
            );
            g.insert("pgbouncer_maxwait".to_owned(), 0.0);
            g.insert("pgbouncer_avg_wait_us".to_owned(), 35.0 * ramp);
            g.insert("pgbouncer_xact_per_s".to_owned(), queries as f64 / 3.0);
            g.insert("pgbouncer_query_per_s".to_owned(), queries as f64);
        }
        time_series.push(interval);
    }

    let mut metrics = BTreeMap::new();
    metrics.insert(
        "query_duration".to_owned(),
        Metric::Trend(trend_stats(&total, duration_s)),
    );
    for (name, h) in &per_query {
        metrics.insert(
            format!("query_duration{{query:{name}}}"),
            Metric::Trend(trend_stats(h, duration_s)),
        );
    }
    let queries: u64 = total.len();
    let counter = |count: u64, by_class: &[(&str, u64)]| {
        Metric::Counter(CounterStats {
            count,
            rate_per_s: count as f64 / duration_s,
            by_class: by_class
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        })
    };
    metrics.insert("queries".to_owned(), counter(queries, &[]));
    metrics.insert("iterations".to_owned(), counter(queries / 3, &[]));
    metrics.insert(
        "query_errors".to_owned(),
        counter(
            total_errors,
            &[("40001", total_errors - timeouts), ("timeout", timeouts)],
        ),
    );
    for (q, n) in &errors_by_query {
        metrics.insert(
            format!("query_errors{{query:{q}}}"),
            counter(*n, &[("40001", *n - timeouts), ("timeout", timeouts)]),
        );
    }
    metrics.insert("connection_errors".to_owned(), counter(0, &[]));
    metrics.insert("tenant_violations".to_owned(), counter(0, &[]));
    metrics.insert(
        "success_rate".to_owned(),
        Metric::Rate(RateStats {
            rate: (queries - total_errors) as f64 / queries as f64,
            passes: queries - total_errors,
            fails: total_errors,
        }),
    );
    metrics.insert(
        "vus".to_owned(),
        Metric::Gauge(GaugeStats {
            last: 0.0,
            min: 0.0,
            max: 20.0,
            samples: run.intervals as u64,
        }),
    );

    let ms = |us: u64| us as f64 / 1000.0;
    let insert = &per_query["insert_message"];
    let thresholds = vec![
        ThresholdResult {
            metric: "query_duration".to_owned(),
            expression: "p(95) < 10".to_owned(),
            observed: Some(ms(total.value_at_quantile(0.95))),
            ok: ms(total.value_at_quantile(0.95)) < 10.0,
            abort_on_fail: false,
            not_judged: None,
        },
        ThresholdResult {
            metric: "query_duration{query:insert_message}".to_owned(),
            expression: "p(99) < 12".to_owned(),
            observed: Some(ms(insert.value_at_quantile(0.99))),
            ok: ms(insert.value_at_quantile(0.99)) < 12.0,
            abort_on_fail: true,
            not_judged: None,
        },
        ThresholdResult {
            metric: "query_errors".to_owned(),
            expression: "count < 3".to_owned(),
            observed: Some(total_errors as f64),
            ok: total_errors < 3,
            abort_on_fail: false,
            not_judged: None,
        },
    ];
    let verdict = if thresholds.iter().all(|t| t.ok) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    Summary {
        schema_version: SCHEMA_VERSION,
        thumper_version: "0.1.0".to_owned(),
        scenario: ScenarioInfo {
            name: run.scenario.to_owned(),
            description: run.description.to_owned(),
            file: format!("scenarios/{}.toml", run.scenario),
            executor: "ramping-vus".to_owned(),
        },
        target: "postgres://thumper@127.0.0.1:6432/arrakis".to_owned(),
        started_at: "2025-01-15T10:30:00Z".to_owned(),
        duration_s,
        planned_duration_s: duration_s,
        verdict,
        stop_reason: None,
        ending: Default::default(),
        thresholds,
        metrics,
        time_series,
        notes: vec!["PgBouncer had waiting clients for 3 s (t = 13–15 s).".to_owned()],
        curves: Vec::new(),
        instances: Vec::new(),
        server: None,
        scenarios: Vec::new(),
    }
}

/// A gateway run: no queries, `event_latency`, gateway gauges and a capacity curve.
fn gateway_summary() -> Summary {
    let mut s = build(&Run {
        scenario: "gateway-fanout",
        description: "",
        pgbouncer: false,
        intervals: 10,
        ..Run::steady()
    });
    s.notes.clear();
    s.verdict = Verdict::Pass;
    s.target = "ws://127.0.0.1:9100 (fake Discord)".to_owned();
    s.scenario.executor = "constant-arrival-rate".to_owned();
    // Re-label the latency trends as event latency and drop the query metrics.
    let mut metrics = BTreeMap::new();
    if let Some(Metric::Trend(t)) = s.metrics.remove("query_duration") {
        metrics.insert("event_latency".to_owned(), Metric::Trend(t));
    }
    for (name, m) in &s.metrics {
        if matches!(m, Metric::Counter(_)) && !name.contains('{') {
            let name = name.replace("queries", "events_delivered");
            metrics.insert(name, m.clone());
        }
    }
    s.metrics = metrics;
    for (k, i) in s.time_series.iter_mut().enumerate() {
        let t = i.trends.remove("query_duration").unwrap();
        i.trends.clear();
        i.trends.insert("event_latency".to_owned(), t);
        let delivered = i.counters.remove("queries").unwrap();
        i.counters.insert("events_delivered".to_owned(), delivered);
        i.gauges
            .insert("gateway_rss_mb".to_owned(), 120.0 + k as f64);
        i.gauges.insert("gateway_cpu_percent".to_owned(), 35.0);
        i.gauges
            .insert("gateway_rss_mb_per_1k_guilds".to_owned(), 2.5);
    }
    s.thresholds = vec![ThresholdResult {
        metric: "event_latency".to_owned(),
        expression: "p(99) < 50".to_owned(),
        observed: Some(12.0),
        ok: true,
        abort_on_fail: false,
        not_judged: None,
    }];
    s.curves = vec![Curve {
        name: "Capacity: p99 by arrival rate".to_owned(),
        x_label: "arrivals per second".to_owned(),
        y_label: "p99 (ms)".to_owned(),
        series: BTreeMap::from([(
            "p99".to_owned(),
            vec![(100.0, 3.0), (200.0, 3.4), (400.0, 5.0), (800.0, 21.0)],
        )]),
    }];
    s
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Compares with a golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn golden(name: &str, actual: &str) {
    let path = fixtures().join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the rendered output:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn render(file: &str, s: &Summary) -> String {
    let format = report::formats()
        .into_iter()
        .find(|f| f.file_name() == file)
        .unwrap();
    String::from_utf8(format.render(s).unwrap()).unwrap()
}

/// The markup of the element with `id`, up to the end of its `<figure>`.
fn figure<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("no chart with id {id}"));
    let end = html[start..].find("</figure>").unwrap();
    &html[start..start + end]
}

/// The `data-points` count of the chart's `<svg>`.
fn data_points(figure: &str) -> usize {
    let at = figure
        .find("data-points=\"")
        .expect("chart has data-points")
        + 13;
    figure[at..].split('"').next().unwrap().parse().unwrap()
}

/// The markup of the table row opened by `<tr ... attr="value"`.
fn row<'a>(html: &'a str, attr: &str, value: &str) -> &'a str {
    let needle = format!(r#"{attr}="{value}""#);
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no row with {needle}"));
    let end = html[start..].find("</tr>").unwrap();
    &html[start..start + end]
}

/// The steady run, built once (building takes a few hundred ms in a debug build).
fn steady() -> Summary {
    static STEADY: std::sync::OnceLock<Summary> = std::sync::OnceLock::new();
    STEADY.get_or_init(|| build(&Run::steady())).clone()
}

/// Equal up to the last bit of a float: serde_json parses some floats one ULP off unless its
/// `float_roundtrip` feature is on.
fn assert_same(a: &Summary, b: &Summary) {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-12 * x.abs().max(1.0),
                    "{at}: {x} != {y}"
                );
            }
            (Array(x), Array(y)) => {
                assert_eq!(x.len(), y.len(), "{at}");
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    walk(x, y, &format!("{at}[{i}]"));
                }
            }
            (Object(x), Object(y)) => {
                assert_eq!(
                    x.keys().collect::<Vec<_>>(),
                    y.keys().collect::<Vec<_>>(),
                    "{at}"
                );
                for (k, x) in x {
                    walk(x, &y[k], &format!("{at}.{k}"));
                }
            }
            (x, y) => assert_eq!(x, y, "{at}"),
        }
    }
    walk(
        &serde_json::to_value(a).unwrap(),
        &serde_json::to_value(b).unwrap(),
        "summary",
    );
}

// ---------------------------------------------------------------------------------------------
// The committed fixture

#[test]
fn the_committed_fixture_is_what_the_builder_makes() {
    let path = fixtures().join("steady.summary.json");
    let built = render("summary.json", &steady());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &built).unwrap();
    }
    let read = report::read_summary(&path).unwrap();
    assert_same(&read, &steady());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), built);
}

// ---------------------------------------------------------------------------------------------
// HTML

#[test]
fn html_has_every_chart_with_data() {
    let s = steady();
    let html = render("report.html", &s);
    let mut ids = vec![
        "chart-vus".to_owned(),
        "chart-throughput".to_owned(),
        "chart-errors".to_owned(),
        "chart-distribution".to_owned(),
        "chart-latency-query_duration".to_owned(),
        "chart-pgbouncer-clients".to_owned(),
        "chart-pgbouncer-servers".to_owned(),
        "chart-pgbouncer-rates".to_owned(),
        "chart-pgbouncer-maxwait".to_owned(),
        "chart-pgbouncer-avg-wait".to_owned(),
    ];
    for q in s.query_names() {
        ids.push(format!("chart-latency-query_duration-query-{q}"));
    }
    for id in &ids {
        let fig = figure(&html, id);
        assert!(data_points(fig) > 0, "{id} has no data points");
        assert!(
            fig.contains("<polyline") || fig.contains("<circle"),
            "{id} draws nothing"
        );
        assert!(fig.contains(r#"class="label""#), "{id} has no axis labels");
    }
    assert_eq!(html.matches("<figure class=\"chart\"").count(), ids.len());

    // Thresholds on a latency metric are drawn on its chart.
    let insert = figure(&html, "chart-latency-query_duration-query-insert_message");
    assert!(insert.contains(r#"class="threshold""#) && insert.contains("p(99) &lt; 12"));
    assert!(figure(&html, "chart-latency-query_duration").contains("p(95) &lt; 10"));
    // The distribution has a series per query plus the total, on a percentile axis.
    let dist = figure(&html, "chart-distribution");
    assert_eq!(dist.matches(r#"<g class="series""#).count(), 4);
    assert!(dist.contains(">99.9%<"));
    // The per-interval latency series has one point per interval with samples, per percentile.
    let total = figure(&html, "chart-latency-query_duration");
    assert_eq!(data_points(total), 3 * s.time_series.len());
}

#[test]
fn html_tables_hold_the_summary_numbers() {
    let s = steady();
    let html = render("report.html", &s);
    let thresholds = html.find(r#"id="thresholds""#).unwrap();
    assert!(thresholds < html.find(r#"id="queries""#).unwrap());
    assert!(html.find(r#"id="verdict""#).unwrap() < thresholds);

    for t in &s.thresholds {
        let r = row(&html, "data-metric", &t.metric);
        assert!(r.contains(&format!(r#"data-ok="{}""#, t.ok)));
        assert!(r.contains(&format!(r#"data-v="{}""#, t.observed.unwrap())));
    }
    for q in s
        .query_names()
        .into_iter()
        .chain(["all queries".to_owned()])
    {
        let metric = if q == "all queries" {
            "query_duration".to_owned()
        } else {
            format!("query_duration{{query:{q}}}")
        };
        let t = s.trend(&metric).unwrap();
        let r = row(&html, "data-query", &q);
        for v in [
            t.count, t.min_us, t.p50_us, t.p90_us, t.p95_us, t.p99_us, t.p999_us, t.max_us,
        ] {
            assert!(r.contains(&format!(r#"data-v="{v}""#)), "{q}: {v} missing");
        }
    }
    let insert = row(&html, "data-query", "insert_message");
    let errors = s.counter("query_errors{query:insert_message}").unwrap();
    assert!(insert.contains(&format!(r#"data-v="{}""#, errors.count)));
    assert!(insert.contains("40001: "));
    assert!(html.contains(r#"class="verdict fail""#));
}

#[test]
fn html_makes_no_network_request() {
    for s in [steady(), gateway_summary()] {
        let html = render("report.html", &s);
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("@import"));
        for attr in ["src=", "href=", "url("] {
            for (at, _) in html.match_indices(attr) {
                let value = html[at + attr.len()..].trim_start_matches(['"', '\'']);
                assert!(
                    !value.starts_with("//") && !value.starts_with("http"),
                    "remote reference at {}",
                    &html[at..at + 40]
                );
            }
        }
        assert!(html.contains("Content-Security-Policy"));
        assert!(html.contains("@media print") && html.contains("name=\"viewport\""));
    }
}

#[test]
fn html_escapes_text_from_the_scenario() {
    let mut s = steady();
    s.scenario.name = "<script>alert('name')</script>".to_owned();
    s.scenario.description = "a & b <img src=x onerror=alert(1)>".to_owned();
    s.notes
        .push("</li><script>alert('note')</script>".to_owned());
    s.stop_reason = Some("<b>ctrl-c</b>".to_owned());
    let evil = "query_duration{query:<script>q</script>}".to_owned();
    let t = s.trend("query_duration{query:health}").unwrap().clone();
    s.metrics.insert(evil.clone(), Metric::Trend(t));
    let first = s.time_series[0].trends["query_duration{query:health}"].clone();
    s.time_series[0].trends.insert(evil, first);
    let html = render("report.html", &s);
    assert!(!html.contains("<script"), "unescaped script");
    assert!(!html.contains("<img") && !html.contains("<b>ctrl"));
    assert!(html.contains("&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;"));
    assert!(html.contains("a &amp; b &lt;img"));
    let md = report::render_markdown(&s);
    assert!(!md.contains("<script") && md.contains("&lt;script&gt;"));
    let junit = render("junit.xml", &s);
    assert!(!junit.contains("<script") && !junit.contains("<b>"));
}

/// `BASE{query:health TEXT}`.
fn health_saying(base: &str, text: &str) -> String {
    format!("{base}{{query:health {text}}}")
}

/// The `health` query renamed to `health TEXT` in a map keyed by metric name.
fn renamed<V>(map: &mut BTreeMap<String, V>, text: &str) {
    *map = std::mem::take(map)
        .into_iter()
        .map(|(k, v)| match k.strip_suffix("{query:health}") {
            Some(base) => (health_saying(base, text), v),
            None => (k, v),
        })
        .collect();
}

/// The steady run with `text` in every place the page shows text from the scenario or the run:
/// scenario name, description, file and executor, target, notes, stop reason, the `health`
/// query's name (tables, charts, thresholds), a threshold's expression, an error class and a
/// gauge's name.
fn steady_saying(text: &str) -> Summary {
    let mut s = steady();
    s.scenario.name = format!("name {text}");
    s.scenario.description = format!("description {text}");
    s.scenario.file = format!("file {text}");
    s.scenario.executor = format!("executor {text}");
    s.target = format!("target {text}");
    s.notes.push(format!("note {text}"));
    s.stop_reason = Some(format!("stopped {text}"));
    renamed(&mut s.metrics, text);
    s.metrics.insert(
        format!("gauge {text}"),
        Metric::Gauge(GaugeStats {
            last: 1.0,
            min: 1.0,
            max: 1.0,
            samples: 30,
        }),
    );
    for i in &mut s.time_series {
        renamed(&mut i.trends, text);
        i.gauges.insert(format!("gauge {text}"), 1.0);
    }
    s.thresholds.push(ThresholdResult {
        metric: health_saying("query_duration", text),
        expression: "p(99) < 5".to_owned(),
        observed: Some(1.0),
        ok: true,
        abort_on_fail: false,
        not_judged: None,
    });
    s.thresholds.push(ThresholdResult {
        metric: "query_errors".to_owned(),
        expression: format!("count < 3 {text}"),
        observed: Some(4.0),
        ok: false,
        abort_on_fail: false,
        not_judged: None,
    });
    let Some(Metric::Counter(errors)) = s.metrics.get_mut("query_errors{query:insert_message}")
    else {
        panic!("the steady run counts insert_message errors");
    };
    errors.by_class.insert(format!("class {text}"), 1);
    s
}

#[test]
fn html_shows_hostile_text_only_escaped() {
    let hostile = r#"<script>alert(1)</script>"'><img src=x onerror=alert(2)>"#;
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&gt;&lt;img src=x \
                   onerror=alert(2)&gt;";
    let html = render("report.html", &steady_saying(hostile));
    let plain = render("report.html", &steady_saying("plain"));
    assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("alert(2)>"));
    // Not one markup character more than the same page with harmless text: nothing the scenario
    // or the run says opens a tag or leaves an attribute.
    for c in ['<', '>', '"', '\''] {
        assert_eq!(html.matches(c).count(), plain.matches(c).count(), "{c}");
    }
    for shown in [
        format!("<title>thumper: name {escaped} — fail</title>"),
        format!(r#"<h1>name {escaped} <span class="verdict fail""#),
        format!(r#"<p class="description">description {escaped}</p>"#),
        format!("<dd>file {escaped}</dd>"),
        format!("<dd>executor {escaped}</dd>"),
        format!("<dd>target {escaped}</dd>"),
        format!("<li>note {escaped}</li>"),
        format!("<strong>Stopped early:</strong> stopped {escaped}</p>"),
        format!(r#"<tr data-query="health {escaped}"><td class="text">health {escaped}</td>"#),
        format!(r#"data-metric="query_duration{{query:health {escaped}}}""#),
        format!(
            "<figcaption>Latency over time: query_duration{{query:health {escaped}}}</figcaption>"
        ),
        format!(r#"<g class="series" data-name="health {escaped}""#),
        format!("<title>health {escaped}</title>"),
        format!("class {escaped}: 1"),
        format!("<code>count &lt; 3 {escaped}</code>"),
        format!(r#"<tr data-gauge="gauge {escaped}"><td class="text">gauge {escaped}</td>"#),
        format!(r#"<figcaption>gauge {escaped}</figcaption>"#),
    ] {
        assert!(html.contains(&shown), "report.html lacks {shown}");
    }
}

#[test]
fn html_charts_a_gateway_run_and_its_capacity_curve() {
    let html = render("report.html", &gateway_summary());
    for id in [
        "chart-vus",
        "chart-throughput",
        "chart-latency-event_latency",
        "chart-distribution",
        "chart-errors",
        "chart-gateway-memory",
        "chart-gateway-cpu",
        "chart-curve-capacity-p99-by-arrival-rate",
    ] {
        assert!(data_points(figure(&html, id)) > 0, "{id}");
    }
    assert!(figure(&html, "chart-latency-event_latency").contains("p(99) &lt; 50"));
    assert!(!html.contains("chart-pgbouncer"));
    assert!(!html.contains(r#"id="queries""#));
    assert!(html.contains(r#"data-trend="event_latency""#));
}

// ---------------------------------------------------------------------------------------------
// JUnit and Markdown against golden files

#[test]
fn junit_matches_golden() {
    let s = steady();
    let xml = render("junit.xml", &s);
    golden("junit.xml", &xml);
    assert_eq!(xml.matches("<testcase ").count(), s.thresholds.len());
    assert_eq!(
        xml.matches("<failure ").count(),
        s.thresholds.iter().filter(|t| !t.ok).count()
    );
}

#[test]
fn junit_reports_an_interrupted_run_as_an_error() {
    let mut s = steady();
    s.verdict = Verdict::Interrupted;
    s.stop_reason = Some("Ctrl-C".to_owned());
    s.duration_s = 12.0;
    let xml = render("junit.xml", &s);
    golden("junit-interrupted.xml", &xml);
    assert!(xml.contains(r#"errors="1""#) && xml.contains("Ctrl-C"));
}

#[test]
fn markdown_matches_golden() {
    let s = steady();
    let md = report::render_markdown(&s);
    assert_eq!(md, render("summary.md", &s));
    golden("summary.md", &md);
    golden(
        "summary-gateway.md",
        &report::render_markdown(&gateway_summary()),
    );
}

// ---------------------------------------------------------------------------------------------
// HDR interval log

#[test]
fn hlog_reads_back_with_the_counts_of_every_interval() {
    let s = steady();
    let log = render("latency.hlog", &s);
    assert!(log.contains("#[Histogram log format version 1.3]"));
    assert!(log.contains("#[StartTime: 1736937000.000"));

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut starts = Vec::new();
    for entry in IntervalLogIterator::new(log.as_bytes()) {
        let LogEntry::Interval(i) = entry.unwrap() else {
            continue;
        };
        let tag = i
            .tag()
            .map_or("query_duration".to_owned(), |t| t.as_str().to_owned());
        if tag == "query_duration" {
            starts.push(i.start_timestamp().as_secs_f64());
        }
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            i.encoded_histogram(),
        )
        .unwrap();
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        assert!((i.max() - h.max() as f64 / 1000.0).abs() < 0.01);
        *counts.entry(tag.clone()).or_default() += h.len();
        *lines.entry(tag).or_default() += 1;
    }
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in &s.time_series {
        for (name, t) in &i.trends {
            if t.count > 0 {
                *expected.entry(name.clone()).or_default() += t.count;
            }
        }
    }
    assert_eq!(counts, expected);
    assert_eq!(
        counts["query_duration"],
        s.trend("query_duration").unwrap().count
    );
    assert_eq!(lines["query_duration"], s.time_series.len());
    assert_eq!(starts.first(), Some(&0.0));
}

// ---------------------------------------------------------------------------------------------
// write_all and read_summary

#[test]
fn write_all_writes_every_format_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/report");
    let s = steady();
    let written = report::write_all(&s, &out).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "summary.json",
            "report.html",
            "junit.xml",
            "summary.md",
            "latency.hlog"
        ]
    );
    assert_same(
        &report::read_summary(&out.join("summary.json")).unwrap(),
        &s,
    );
}

#[test]
fn write_all_keeps_going_when_a_format_fails() {
    let mut s = steady();
    s.time_series[3]
        .trends
        .get_mut("query_duration")
        .unwrap()
        .histogram = "bm90IGEgaGlzdG9ncmFt".to_owned();
    let dir = tempfile::tempdir().unwrap();
    match report::write_all(&s, dir.path()) {
        Err(ReportError::Incomplete { written, failed }) => {
            assert_eq!(written.len(), 4);
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].0, "latency.hlog");
            assert!(failed[0].1.to_string().contains("query_duration at t=4 s"));
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert!(dir.path().join("report.html").exists());
}

#[test]
fn read_summary_names_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let e = report::read_summary(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.json"), "{e}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"schema_version\": 1,\n  oops\n}").unwrap();
    let e = report::read_summary(&bad).unwrap_err();
    assert!(matches!(e, ReportError::Json { line: 3, .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("{}:3:", bad.display())));

    let future = dir.path().join("future.json");
    std::fs::write(&future, r#"{"schema_version": 99, "renamed": true}"#).unwrap();
    let e = report::read_summary(&future).unwrap_err();
    assert!(
        matches!(e, ReportError::SchemaVersion { found: 99, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("future.json"));

    let shape = dir.path().join("shape.json");
    std::fs::write(&shape, "{\"schema_version\": 1,\n\"thumper_version\": 3}").unwrap();
    let e = report::read_summary(&shape).unwrap_err();
    assert!(matches!(e, ReportError::Json { line: 2, .. }), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// compare

fn verdicts(c: &compare::Comparison, metric: &str) -> Vec<(Stat, Change)> {
    c.rows
        .iter()
        .filter(|r| r.metric == metric)
        .map(|r| (r.stat, r.verdict))
        .collect()
}

#[test]
fn compare_finds_a_regression() {
    let baseline = steady();
    let current = build(&Run {
        slowdown: 1.3,
        seed: 8,
        ..Run::steady()
    });
    let c = compare::compare(&baseline, &current, 10.0);
    assert!(c.regressed && c.refused.is_none());
    assert_eq!(c.exit_code(), thumper::exit::THRESHOLD);
    let total = verdicts(&c, "query_duration");
    assert_eq!(
        total[..3].iter().map(|v| v.1).collect::<Vec<_>>(),
        [Change::Regressed; 3]
    );
    // 1,500 samples pin p50 and p95 down, but their p99 rests on 15 samples: 30 % slower is
    // inside its confidence interval, so it is not called a regression.
    let insert = verdicts(&c, "query_duration{query:insert_message}");
    assert_eq!(
        insert[..3].iter().map(|v| v.1).collect::<Vec<_>>(),
        [Change::Regressed, Change::Regressed, Change::WithinNoise]
    );
    // Throughput did not change.
    assert_eq!(insert[3], (Stat::Throughput, Change::WithinNoise));
    // `health` is fast (0.2 ms): 30 % of it is under the noise floor, and it has too few
    // samples for a p99.
    let health = verdicts(&c, "query_duration{query:health}");
    assert_eq!(health[0], (Stat::P50, Change::WithinNoise));
    assert_eq!(health[2], (Stat::P99, Change::Insufficient));
    let md = compare::comparison_markdown(&c);
    golden("compare-regression.md", &md);
    assert!(md.contains("❌ regressed"));
}

#[test]
fn compare_finds_an_improvement() {
    let baseline = steady();
    let current = build(&Run {
        slowdown: 0.7,
        load: 1.4,
        seed: 9,
        ..Run::steady()
    });
    let c = compare::compare(&baseline, &current, 10.0);
    assert!(!c.regressed);
    assert_eq!(c.exit_code(), 0);
    let total = verdicts(&c, "query_duration");
    assert!(
        total.iter().all(|(_, v)| *v == Change::Improved),
        "{total:?}"
    );
}

#[test]
fn compare_calls_small_changes_noise() {
    let baseline = steady();
    let current = build(&Run {
        slowdown: 1.03,
        seed: 10,
        ..Run::steady()
    });
    let c = compare::compare(&baseline, &current, 10.0);
    assert!(!c.regressed, "{}", compare::comparison_markdown(&c));
    assert!(verdicts(&c, "query_duration")
        .iter()
        .all(|(_, v)| *v == Change::WithinNoise));
}

#[test]
fn compare_judges_a_short_run_with_the_samples_it_has() {
    // Five seconds, three times slower: under a thousand samples, which once meant "not judged".
    let baseline = steady();
    let short = build(&Run {
        intervals: 5,
        slowdown: 3.0,
        ..Run::steady()
    });
    let c = compare::compare(&baseline, &short, 10.0);
    assert_eq!(
        c.exit_code(),
        thumper::exit::THRESHOLD,
        "{}",
        compare::comparison_markdown(&c)
    );
    assert_eq!(
        verdicts(&c, "query_duration")[..3],
        [
            (Stat::P50, Change::Regressed),
            (Stat::P95, Change::Regressed),
            (Stat::P99, Change::Regressed),
        ]
    );
    // The other way round every percentile improved, judged as well (and throughput, higher in
    // the short run that spends less of its time ramping, regressed).
    let c = compare::compare(&short, &baseline, 10.0);
    assert!(c.refused.is_none(), "{}", compare::comparison_markdown(&c));
    assert!(verdicts(&c, "query_duration")[..3]
        .iter()
        .all(|(_, v)| *v == Change::Improved));
}

#[test]
fn compare_refuses_what_the_intervals_cannot_tell() {
    // One second at a few per cent of the load: five samples a run, the same throughput.
    let tiny = |seed| {
        build(&Run {
            intervals: 1,
            load: 0.025,
            seed,
            ..Run::steady()
        })
    };
    let (a, b) = (tiny(1), tiny(2));
    assert_eq!(a.trend("query_duration").unwrap().count, 5);
    let c = compare::compare(&a, &b, 10.0);
    assert_eq!(c.exit_code(), thumper::exit::NOT_JUDGED);
    assert!(!c.regressed && !c.rows.is_empty());
    assert!(verdicts(&c, "query_duration")[..3]
        .iter()
        .all(|(_, v)| *v == Change::Insufficient));
    golden("compare-refused.md", &compare::comparison_markdown(&c));

    let baseline = steady();
    let mut other = steady();
    other.scenario.name = "spike".to_owned();
    let c = compare::compare(&baseline, &other, 10.0);
    assert_eq!(c.exit_code(), thumper::exit::NOT_JUDGED);
    assert!(c.refused.unwrap().contains("spike") && c.rows.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Both fixture runs, written whole. For eyes as well:
// `THUMPER_REPORT_DIR=/tmp/r cargo test --test reports write_fixture_reports` leaves them there
// to open in a browser (otherwise they go to a temporary folder).

#[test]
fn write_fixture_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir =
        std::env::var_os("THUMPER_REPORT_DIR").map_or_else(|| tmp.path().to_owned(), PathBuf::from);
    for (name, s) in [("steady", steady()), ("gateway", gateway_summary())] {
        let out = dir.join(name);
        let written = report::write_all(&s, &out).unwrap();
        assert_eq!(
            written.len(),
            report::formats().len(),
            "{name}: {written:?}"
        );
        for path in &written {
            let len = std::fs::metadata(path).unwrap().len();
            assert!(len > 0, "{} is empty", path.display());
        }
        assert_same(
            &report::read_summary(&out.join("summary.json")).unwrap(),
            &s,
        );
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert!(
            html.contains(&s.scenario.name),
            "{name}: the HTML does not name its run"
        );
    }
}

#[test]
fn compare_cli_reads_files_and_returns_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, s: &Summary| {
        let p = dir.path().join(name);
        std::fs::write(&p, render("summary.json", s)).unwrap();
        p
    };
    let base = write("base.json", &steady());
    let slow = write(
        "slow.json",
        &build(&Run {
            slowdown: 1.5,
            seed: 11,
            ..Run::steady()
        }),
    );
    let md = dir.path().join("compare.md");
    assert_eq!(compare::run_cli(&base, &slow, 10.0, Some(&md)), 99);
    assert!(std::fs::read_to_string(&md).unwrap().contains("regression"));
    assert_eq!(compare::run_cli(&base, &base, 10.0, None), 0);
    assert_eq!(
        compare::run_cli(&base, &dir.path().join("nope.json"), 10.0, None),
        2
    );
}

#[test]
fn an_empty_run_still_gets_every_format() {
    let mut s = steady();
    s.metrics.clear();
    s.time_series.clear();
    s.thresholds.clear();
    s.notes.clear();
    s.verdict = Verdict::Interrupted;
    s.stop_reason = Some("the target refused every connection".to_owned());
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(report::write_all(&s, dir.path()).unwrap().len(), 5);
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("recorded no time series") && html.contains("refused every connection"));
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert!(junit.contains(r#"tests="1""#) && junit.contains("<error "));
}
