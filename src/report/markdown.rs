//! `summary.md`: the verdict, thresholds and per-query table in compact Markdown, for a CI job
//! summary (`--summary-md "$GITHUB_STEP_SUMMARY"`) or a pull-request comment.

use std::fmt::Write;

use super::model::{self, number};
use super::{ReportError, ReportFormat};
use crate::metrics::process;
use crate::metrics::summary::{InstanceState, Metric, Summary, Verdict};

pub(crate) struct Markdown;

impl ReportFormat for Markdown {
    fn file_name(&self) -> &'static str {
        "summary.md"
    }

    fn render(&self, summary: &Summary) -> Result<Vec<u8>, ReportError> {
        Ok(render_markdown(summary).into_bytes())
    }
}

/// Text that renders as itself in GitHub-flavoured Markdown, table cells included.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            // GitHub renders inline HTML, so angle brackets become entities.
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn verdict_mark(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "✅",
        Verdict::Fail => "❌",
        Verdict::Interrupted => "⚠️",
    }
}

/// The Markdown summary (also written as `summary.md`).
pub fn render_markdown(s: &Summary) -> String {
    let mut md = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        md,
        "### {} thumper {}: {}\n",
        verdict_mark(s.verdict),
        escape(&s.scenario.name),
        s.verdict.as_str()
    );
    let _ = writeln!(
        md,
        "{} · {} · started {} · ran {} of {} planned · thumper {}\n",
        escape(&s.scenario.executor),
        escape(&s.target),
        escape(&s.started_at),
        model::duration(s.duration_s),
        model::duration(s.planned_duration_s),
        escape(&s.thumper_version)
    );
    if let Some(reason) = &s.stop_reason {
        let _ = writeln!(md, "> **Stopped early:** {}\n", escape(reason));
    }

    thresholds_table(&mut md, s);
    scenarios_table(&mut md, s);
    queries_table(&mut md, s);
    super::server::markdown(&mut md, s, escape);
    instances_table(&mut md, s);
    generator_line(&mut md, s);

    for note in &s.notes {
        let _ = writeln!(md, "- {}", escape(note));
    }
    if !s.notes.is_empty() {
        let _ = writeln!(md);
    }
    md
}

/// The scenarios of the run: when each ran, how it ended, its numbers.
fn scenarios_table(md: &mut String, s: &Summary) {
    let rows = model::scenario_rows(s);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "| Scenario | Executor | Start s | End s | Ending | Iterations | VUs max | p50 ms | p99 ms | Errors |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let (p50, p99) = r.trend.map_or(("-".into(), "-".into()), |t| {
            (model::ms(t.p50_us as f64), model::ms(t.p99_us as f64))
        });
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} | {p50} | {p99} | {} |",
            escape(r.name),
            escape(r.executor),
            r.start_s,
            r.end_s,
            escape(&r.ending),
            model::count(r.iterations),
            model::maybe(r.vus_max),
            model::count(r.errors),
        );
    }
    let _ = writeln!(md);
}

/// Every threshold with its observed value and result.
fn thresholds_table(md: &mut String, s: &Summary) {
    if s.thresholds.is_empty() {
        let _ = writeln!(md, "No thresholds were set.\n");
    } else {
        let _ = writeln!(md, "| Threshold | Observed | Result |");
        let _ = writeln!(md, "|---|---:|:---|");
        for t in &s.thresholds {
            let _ = writeln!(
                md,
                "| {} {} | {} | {} |",
                escape(&t.metric),
                escape(&t.expression),
                t.observed.map_or_else(|| "no samples".to_owned(), number),
                match (&t.not_judged, t.ok) {
                    (Some(_), _) => "➖ not judged here (fleet-wide)",
                    (None, true) => "✅ pass",
                    (None, false) => "❌ fail",
                }
            );
        }
        let _ = writeln!(md);
    }
}

/// The per-query table, or the main trend's line when there are no queries.
fn queries_table(md: &mut String, s: &Summary) {
    let rows = model::query_rows(s);
    if !rows.is_empty() {
        let _ = writeln!(
            md,
            "| Query | Count | Rate /s | p50 ms | p95 ms | p99 ms | max ms | Errors |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|");
        for r in &rows {
            let t = r.trend;
            let errors = if r.errors_by_class.is_empty() {
                model::count(r.errors)
            } else {
                format!(
                    "{} ({})",
                    model::count(r.errors),
                    escape(&model::classes(&r.errors_by_class))
                )
            };
            let label = if r.label == "all queries" {
                "**all queries**".to_owned()
            } else {
                escape(&r.label)
            };
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} | {} | {errors} |",
                model::count(t.count),
                number(t.rate_per_s),
                model::ms(t.p50_us as f64),
                model::ms(t.p95_us as f64),
                model::ms(t.p99_us as f64),
                model::ms(t.max_us as f64),
            );
        }
        let _ = writeln!(md);
    } else if let Some((name, t)) = model::primary_trend(s) {
        let unit = model::trend_unit(t);
        let _ = writeln!(
            md,
            "{}: {} samples, p50 {} {unit}, p95 {} {unit}, p99 {} {unit}, max {} {unit}\n",
            escape(name),
            model::count(t.count),
            model::trend_value(t, t.p50_us as f64),
            model::trend_value(t, t.p95_us as f64),
            model::trend_value(t, t.p99_us as f64),
            model::trend_value(t, t.max_us as f64),
        );
    }
}

/// A fleet's generators one by one; nothing for a single run.
fn instances_table(md: &mut String, s: &Summary) {
    if s.instances.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "| Instance | Host | State | Iterations | Queries | Errors | p99 ms | Start +ms | CPU % | Max RSS MB | Generator |"
    );
    let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for i in &s.instances {
        let state = match i.state {
            InstanceState::Lost => "❌ lost".to_owned(),
            state => model::instance_state(state).to_owned(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {state} | {} | {} | {} | {} | {} | {} | {} | {} |",
            escape(&i.segment),
            escape(&i.host),
            model::count(i.iterations),
            model::count(i.queries),
            model::count(i.errors),
            model::ms(i.p99_us as f64),
            number(i.start_offset_ms),
            model::maybe(i.cpu_percent),
            model::maybe(i.max_rss_mb),
            if i.saturated { "⚠️ saturated" } else { "" },
        );
    }
    let _ = writeln!(md);
}

/// The load generator's own CPU and memory, when they were measured.
fn generator_line(md: &mut String, s: &Summary) {
    let gauge = |name: &str| match s.metrics.get(name) {
        Some(Metric::Gauge(g)) if g.samples > 0 => Some(g.max),
        _ => None,
    };
    let (cpu, rss) = (gauge(process::CPU_GAUGE), gauge(process::RSS_GAUGE));
    if cpu.is_none() && rss.is_none() {
        return;
    }
    let mut parts = Vec::new();
    if let Some(cpu) = cpu {
        parts.push(format!("CPU max {} % of its cores", number(cpu)));
    }
    if let Some(rss) = rss {
        parts.push(format!("RSS max {} MB", number(rss)));
    }
    let _ = writeln!(md, "Load generator: {}\n", parts.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_table_breakers_and_html() {
        assert_eq!(escape("a|b <script>"), "a\\|b &lt;script&gt;");
        assert_eq!(escape("query_duration"), "query\\_duration");
        assert_eq!(escape("two\nlines"), "two lines");
    }

    #[test]
    fn fleet_instances_are_a_table_with_hosts_escaped() {
        let md = render_markdown(&model::fixtures::fleet());
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert!(rows[0].starts_with("| Instance | Host | State |"), "{md}");
        assert_eq!(
            rows[1],
            "| 0/3 | gen-a | finished | 500 | 1,000 | 1 | 12.5 | 3.50 | 40 | 48 |  |"
        );
        assert_eq!(
            rows[2],
            "| 1/3 | &lt;script&gt;alert(1)&lt;/script&gt; | finished | 450 | 900 | 1 | 12.5 | 3.50 | 97 | 48 | ⚠️ saturated |"
        );
        assert_eq!(
            rows[3],
            "| 2/3 |  | ❌ lost | 0 | 0 | 0 | 0 | 0 | — | — |  |"
        );
        assert!(!md.contains("<script>"));
        assert!(!render_markdown(&Summary::empty()).contains("| Instance |"));
    }
}
