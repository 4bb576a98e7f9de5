//! What several formats derive from a summary in the same way: which trends to show and in what
//! order, the per-query table, threshold expressions as numbers, and how values are printed.
//! Keeping it here keeps the HTML and Markdown tables saying the same thing.

use std::collections::BTreeMap;

use crate::metrics::summary::{InstanceState, Summary, TrendStats};

/// The overall latency trends, most important first.
const PRIMARY_TRENDS: [&str; 2] = ["query_duration", "event_latency"];

/// Trend names in reading order: the overall trend, its per-query sub-metrics, then the rest.
pub(crate) fn trend_names(summary: &Summary) -> Vec<String> {
    let mut names: Vec<&String> = summary
        .metrics
        .iter()
        .filter(|(_, m)| matches!(m, crate::metrics::summary::Metric::Trend(_)))
        .map(|(n, _)| n)
        .filter(|n| !is_statistic(n))
        .collect();
    names.sort_by_key(|n| (trend_rank(n), n.to_string()));
    names.into_iter().cloned().collect()
}

/// Sort key: primary trends and their sub-metrics first, then other trends.
fn trend_rank(name: &str) -> usize {
    let base = base_name(name);
    PRIMARY_TRENDS
        .iter()
        .position(|p| *p == base)
        .unwrap_or(PRIMARY_TRENDS.len())
}

/// Whether a trend is known by its moments only (`server_time`, from `pg_stat_statements`):
/// it has no percentiles to chart or tabulate; the server section shows it.
pub(crate) fn is_statistic(name: &str) -> bool {
    base_name(name) == "server_time"
}

/// How a fleet instance ended, as the reports print it.
pub(crate) fn instance_state(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Finished => "finished",
        InstanceState::Interrupted => "interrupted",
        InstanceState::Lost => "lost",
    }
}

/// An optional measurement, or a dash where it was not measured.
pub(crate) fn maybe(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), number)
}

/// `query_duration{query:tenant}` → `query_duration`.
pub(crate) fn base_name(name: &str) -> &str {
    name.split('{').next().unwrap_or(name)
}

/// `query_duration{query:tenant}` → `Some("tenant")`.
pub(crate) fn query_of(name: &str) -> Option<&str> {
    name.split_once("{query:")
        .and_then(|(_, rest)| rest.strip_suffix('}'))
}

/// Whether a trend is one query's latency by outcome
/// (`query_duration{query:NAME,expected_response:true}`): a table row, not a chart of its own.
pub(crate) fn is_outcome_split(name: &str) -> bool {
    query_of(name).is_some() && name.contains(",expected_response:")
}

/// The trend every run has one of: `query_duration`, or `event_latency` for a gateway run.
pub(crate) fn primary_trend(summary: &Summary) -> Option<(&'static str, &TrendStats)> {
    PRIMARY_TRENDS
        .iter()
        .find_map(|n| summary.trend(n).map(|t| (*n, t)))
}

/// One row of the per-query table.
pub(crate) struct QueryRow<'a> {
    /// Query name, or `all queries` for the overall row.
    pub label: String,
    pub trend: &'a TrendStats,
    pub errors: u64,
    pub errors_by_class: BTreeMap<String, u64>,
}

/// The per-query table: one row per `query_duration{query:NAME}` and a last `all queries` row.
pub(crate) fn query_rows(summary: &Summary) -> Vec<QueryRow<'_>> {
    let mut rows = Vec::new();
    for name in summary.query_names() {
        let Some(trend) = summary.trend(&format!("query_duration{{query:{name}}}")) else {
            continue;
        };
        let errors = summary.counter(&format!("query_errors{{query:{name}}}"));
        rows.push(QueryRow {
            label: name,
            trend,
            errors: errors.map_or(0, |c| c.count),
            errors_by_class: errors.map(|c| c.by_class.clone()).unwrap_or_default(),
        });
    }
    if let Some(trend) = summary.trend("query_duration") {
        let errors = summary.counter("query_errors");
        rows.push(QueryRow {
            label: "all queries".to_owned(),
            trend,
            errors: errors.map_or(0, |c| c.count),
            errors_by_class: errors.map(|c| c.by_class.clone()).unwrap_or_default(),
        });
    }
    rows
}

/// A row of the per-scenario table of a multi-scenario run (or a scenario with a feeder).
pub(crate) struct ScenarioRow<'a> {
    pub name: &'a str,
    pub executor: &'a str,
    pub start_s: f64,
    pub end_s: f64,
    pub ending: String,
    pub iterations: u64,
    pub errors: u64,
    pub vus_max: Option<f64>,
    pub trend: Option<&'a TrendStats>,
}

/// One row per scenario: when it ran, how it ended and its `{scenario:NAME}` numbers.
pub(crate) fn scenario_rows(summary: &Summary) -> Vec<ScenarioRow<'_>> {
    let count = |m: &str, name: &str| {
        summary
            .counter(&format!("{m}{{scenario:{name}}}"))
            .map_or(0, |c| c.count)
    };
    summary
        .scenarios
        .iter()
        .map(|r| ScenarioRow {
            name: &r.name,
            executor: &r.executor,
            start_s: r.start_s,
            end_s: r.end_s,
            ending: r.ending.replace('_', " "),
            iterations: match count("iterations", &r.name) {
                0 if summary.scenarios.len() == 1 => {
                    summary.counter("iterations").map_or(0, |c| c.count)
                }
                n => n,
            },
            errors: count("query_errors", &r.name) + count("connection_errors", &r.name),
            vus_max: match summary.metrics.get(&format!("vus{{scenario:{}}}", r.name)) {
                Some(crate::metrics::summary::Metric::Gauge(g)) => Some(g.max),
                _ => None,
            },
            trend: summary
                .trend(&format!("query_duration{{scenario:{}}}", r.name))
                .or_else(|| {
                    (summary.scenarios.len() == 1)
                        .then(|| summary.trend("query_duration"))
                        .flatten()
                }),
        })
        .collect()
}

/// A threshold expression taken apart: `p(99) < 10` → aggregation `p(99)`, value 10.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ThresholdLine {
    pub aggregation: String,
    pub op: String,
    pub value: f64,
}

/// Parses `AGG OP VALUE` (`p(99) < 10`, `rate>0.99`, `count == 0`); `None` for anything else.
pub(crate) fn parse_threshold(expression: &str) -> Option<ThresholdLine> {
    let op_start = expression.find(['<', '>', '=', '!'])?;
    let aggregation = expression[..op_start].trim();
    let rest = &expression[op_start..];
    let op_len = rest
        .chars()
        .take_while(|c| matches!(c, '<' | '>' | '=' | '!'))
        .count();
    let value = rest[op_len..].trim().parse::<f64>().ok()?;
    if aggregation.is_empty() || !value.is_finite() {
        return None;
    }
    Some(ThresholdLine {
        aggregation: aggregation.replace(' ', ""),
        op: rest[..op_len].to_owned(),
        value,
    })
}

/// Whether a threshold aggregation reads a duration (and so is in milliseconds).
pub(crate) fn is_latency_aggregation(aggregation: &str) -> bool {
    aggregation.starts_with("p(") || matches!(aggregation, "avg" | "med" | "min" | "max")
}

/// Microseconds as milliseconds with about three significant digits: `0.123`, `4.56`, `78.9`,
/// `1234`.
pub(crate) fn ms(us: f64) -> String {
    number(us / 1000.0)
}

/// A number with about three significant digits and no trailing noise.
pub(crate) fn number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_owned()
    } else if v.fract() == 0.0 && a < 1e15 {
        format!("{v:.0}")
    } else if a < 1.0 {
        format!("{v:.3}")
    } else if a < 10.0 {
        format!("{v:.2}")
    } else if a < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A trend value in its display unit: milliseconds for `us` trends, the raw value otherwise.
pub(crate) fn trend_value(trend: &TrendStats, value: f64) -> String {
    if trend.unit == "us" {
        ms(value)
    } else {
        number(value)
    }
}

/// The display unit of a trend.
pub(crate) fn trend_unit(trend: &TrendStats) -> &str {
    if trend.unit == "us" {
        "ms"
    } else {
        &trend.unit
    }
}

/// Seconds as `1h 02m 03s`, `2m 05s`, `12.3 s`.
pub(crate) fn duration(s: f64) -> String {
    if s < 60.0 {
        return format!("{} s", number(s));
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {sec:02}s")
    } else {
        format!("{m}m {sec:02}s")
    }
}

/// Integer with thousands separators: `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `08P01: 3, timeout: 1`.
pub(crate) fn classes(by_class: &BTreeMap<String, u64>) -> String {
    by_class
        .iter()
        .map(|(k, v)| format!("{k}: {}", count(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_thresholds() {
        let t = parse_threshold("p(99) < 10").unwrap();
        assert_eq!(
            (t.aggregation.as_str(), t.op.as_str(), t.value),
            ("p(99)", "<", 10.0)
        );
        let t = parse_threshold("rate>=0.99").unwrap();
        assert_eq!(
            (t.aggregation.as_str(), t.op.as_str(), t.value),
            ("rate", ">=", 0.99)
        );
        assert_eq!(parse_threshold("count == 0").unwrap().value, 0.0);
        assert!(parse_threshold("p(99)").is_none());
        assert!(parse_threshold("< 3").is_none());
        assert!(parse_threshold("avg < fast").is_none());
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(ms(123.0), "0.123");
        assert_eq!(ms(4_560.0), "4.56");
        assert_eq!(ms(78_900.0), "78.9");
        assert_eq!(ms(1_234_000.0), "1234");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(number(4.0), "4");
        assert_eq!(number(4.5), "4.50");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(125.0), "2m 05s");
        assert_eq!(duration(3723.0), "1h 02m 03s");
    }

    #[test]
    fn names_queries() {
        assert_eq!(query_of("query_duration{query:tenant}"), Some("tenant"));
        assert_eq!(query_of("query_duration"), None);
        assert_eq!(base_name("service_time{query:x}"), "service_time");
    }
}

/// Summaries the format tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::metrics::summary::{InstanceState, InstanceStats, Summary};

    /// Three instances: one saturated, one lost, one with a hostile host name.
    pub(crate) fn fleet() -> Summary {
        let line = |segment: &str, host: &str, state, queries, saturated| InstanceStats {
            segment: segment.to_owned(),
            host: host.to_owned(),
            state,
            iterations: queries / 2,
            queries,
            errors: 1,
            p99_us: 12_500,
            start_offset_ms: 3.5,
            cpu_percent: Some(if saturated { 97.0 } else { 40.0 }),
            max_rss_mb: Some(48.0),
            saturated,
        };
        let mut s = Summary::empty();
        s.scenario.name = "steady".into();
        s.instances = vec![
            line("0/3", "gen-a", InstanceState::Finished, 1000, false),
            line(
                "1/3",
                "<script>alert(1)</script>",
                InstanceState::Finished,
                900,
                true,
            ),
            InstanceStats {
                segment: "2/3".into(),
                state: InstanceState::Lost,
                ..InstanceStats::default()
            },
        ];
        s
    }
}
