//! The terminal: the live progress line while a run goes on, and the end-of-run summary in
//! k6's manner (thresholds first, then metrics).

use std::fmt::Write;
use std::io::{IsTerminal, Write as _};

use crate::metrics::aggregator::{RunView, Watcher};

use crate::metrics::summary::{InstanceState, Metric, Summary};
use crate::report::model::number;

/// Renders the end-of-run text.
pub fn render(summary: &Summary, report_dir: &std::path::Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n  scenario: {} ({}, {:.1}s of {:.1}s planned)\n  target:   {}",
        summary.scenario.name,
        summary.scenario.executor,
        summary.duration_s,
        summary.planned_duration_s,
        summary.target
    );
    if let Some(reason) = &summary.stop_reason {
        let _ = writeln!(out, "  stopped:  {reason}");
    }
    scenarios(&mut out, summary);
    let _ = writeln!(out, "\n  thresholds");
    for t in &summary.thresholds {
        let observed = t
            .observed
            .map_or("no samples".to_owned(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "    {} {:<40} {:<16} observed {}{}",
            match (&t.not_judged, t.ok) {
                (Some(_), _) => "–",
                (None, true) => "✓",
                (None, false) => "✗",
            },
            t.metric,
            t.expression,
            observed,
            if t.not_judged.is_some() {
                " (not judged here: fleet-wide)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out, "\n  metrics");
    for (name, m) in &summary.metrics {
        let line = match m {
            // The server's statistics: moments only, no percentiles.
            Metric::Trend(t) if crate::report::model::is_statistic(name) => format!(
                "count={} avg={:.2}ms max={:.2}ms",
                t.count,
                t.mean_us / 1e3,
                t.max_us as f64 / 1e3
            ),
            Metric::Trend(t) if t.count > 0 && t.unit == "us" => format!(
                "count={} avg={:.2}ms min={:.2}ms p50={:.2}ms p90={:.2}ms p95={:.2}ms p99={:.2}ms max={:.2}ms",
                t.count,
                t.mean_us / 1e3,
                t.min_us as f64 / 1e3,
                t.p50_us as f64 / 1e3,
                t.p90_us as f64 / 1e3,
                t.p95_us as f64 / 1e3,
                t.p99_us as f64 / 1e3,
                t.max_us as f64 / 1e3
            ),
            Metric::Trend(t) => format!("count={}", t.count),
            Metric::Counter(c) => {
                let mut s = format!("{} ({:.1}/s)", c.count, c.rate_per_s);
                for (class, n) in &c.by_class {
                    let _ = write!(s, " [{class}: {n}]");
                }
                s
            }
            Metric::Rate(r) => format!(
                "{:.4}% ({} passes, {} fails)",
                r.rate * 100.0,
                r.passes,
                r.fails
            ),
            // About three significant digits, as the reports show them: a CPU share is not
            // known to fifteen decimals.
            Metric::Gauge(g) => format!(
                "last={} min={} max={}",
                number(g.last),
                number(g.min),
                number(g.max)
            ),
        };
        let dots = ".".repeat(44usize.saturating_sub(name.len()).max(2));
        let _ = writeln!(out, "    {name} {dots} {line}");
    }
    crate::report::server::console(&mut out, summary);
    instances(&mut out, summary);
    for note in &summary.notes {
        let _ = writeln!(out, "\n  note: {note}");
    }
    let _ = writeln!(
        out,
        "\n  verdict: {}\n  reports: {}",
        summary.verdict.as_str().to_uppercase(),
        report_dir.display()
    );
    out
}

/// A fleet's generators, one line each; nothing for a single run.
fn instances(out: &mut String, summary: &Summary) {
    if summary.instances.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n  instances\n    {:<8} {:<16} {:<11} {:>10} {:>10} {:>7} {:>9} {:>9} {:>6} {:>7}",
        "segment",
        "host",
        "state",
        "iterations",
        "queries",
        "errors",
        "p99 ms",
        "start ms",
        "cpu %",
        "rss MB"
    );
    let maybe = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    for i in &summary.instances {
        // A host name comes from the worker: no control character reaches the terminal.
        let host: String = i
            .host
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let state = match i.state {
            InstanceState::Finished => "finished",
            InstanceState::Interrupted => "interrupted",
            InstanceState::Lost => "LOST",
        };
        let _ = writeln!(
            out,
            "    {:<8} {:<16} {:<11} {:>10} {:>10} {:>7} {:>9.2} {:>9.1} {:>6} {:>7}{}",
            i.segment,
            if host.is_empty() { "-" } else { &host },
            state,
            i.iterations,
            i.queries,
            i.errors,
            i.p99_us as f64 / 1e3,
            i.start_offset_ms,
            maybe(i.cpu_percent),
            maybe(i.max_rss_mb),
            if i.saturated { "  saturated" } else { "" }
        );
    }
}

/// Whether the live progress line should be shown (stderr is a terminal and not `--quiet`).
pub fn progress_wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// What a progress line shows: the active workers, one counter per second, one trend's p50 and
/// p99, and a running tally.
#[derive(Debug, Clone, Copy)]
pub struct ProgressColumns {
    /// What the active count is called (`vus`, `shards`).
    pub active: &'static str,
    /// The counter shown per second, and its label (`queries`, `queries/s`).
    pub rate: (&'static str, &'static str),
    /// The trend whose p50 and p99 are shown.
    pub latency: &'static str,
    /// The running tally: `None` for the database's errors, or a counter and its label.
    pub tally: Option<(&'static str, &'static str)>,
}

impl ProgressColumns {
    /// A database run's: VUs, queries/s, `query_duration`, errors.
    pub const DATABASE: ProgressColumns = ProgressColumns {
        active: "vus",
        rate: ("queries", "queries/s"),
        latency: "query_duration",
        tally: None,
    };
    /// A gateway run's: connected shards, delivered events/s, `event_latency`, reconnects.
    pub const GATEWAY: ProgressColumns = ProgressColumns {
        active: "shards",
        rate: ("events_delivered", "events/s"),
        latency: "event_latency",
        tally: Some(("reconnects", "reconnects")),
    };
}

impl Default for ProgressColumns {
    fn default() -> Self {
        ProgressColumns::DATABASE
    }
}

/// The live progress line on stderr, rewritten once a second from the last closed interval.
#[derive(Default)]
pub struct ProgressLine {
    last_len: usize,
    columns: ProgressColumns,
    /// The tally counter summed over the intervals seen so far, and how many those are.
    tally: (u64, usize),
}

impl ProgressLine {
    /// A progress line showing `columns`.
    pub fn new(columns: ProgressColumns) -> ProgressLine {
        ProgressLine {
            columns,
            ..ProgressLine::default()
        }
    }

    fn tally(&mut self, run: &RunView<'_>) -> (u64, &'static str) {
        let Some((counter, label)) = self.columns.tally else {
            return (run.errors(), "errors");
        };
        let all = run.intervals();
        for i in &all[self.tally.1.min(all.len())..] {
            self.tally.0 += i.counters.get(counter).copied().unwrap_or(0);
        }
        self.tally.1 = all.len();
        (self.tally.0, label)
    }
}

impl Watcher for ProgressLine {
    fn tick(&mut self, run: &RunView<'_>) -> Option<String> {
        let last = run.intervals().last()?;
        let c = self.columns;
        let rate = last.counters.get(c.rate.0).copied().unwrap_or(0) as f64 / last.len_s;
        let (p50, p99) = last
            .trends
            .get(c.latency)
            .map(|t| (t.p50_us as f64 / 1e3, t.p99_us as f64 / 1e3))
            .unwrap_or((0.0, 0.0));
        let (tally, tally_label) = self.tally(run);
        let line = format!(
            "[{:>5.0}s/{:.0}s] {} {:>4}  {} {:>7.0}  p50 {:>6.2} ms  p99 {:>6.2} ms  {tally_label} {tally}",
            run.now_us as f64 / 1e6,
            run.planned().as_secs_f64(),
            c.active,
            run.vus,
            c.rate.1,
            rate,
            p50,
            p99,
        );
        let pad = self.last_len.saturating_sub(line.len());
        self.last_len = line.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}{}", " ".repeat(pad));
        let _ = err.flush();
        None
    }

    fn finish(&mut self, _run: &RunView<'_>) {
        if self.last_len > 0 {
            eprintln!();
        }
    }
}

/// A multi-scenario run's scenarios, one line each: when it ran, how it ended, its numbers.
fn scenarios(out: &mut String, summary: &Summary) {
    let rows = super::model::scenario_rows(summary);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n  scenarios");
    for r in rows {
        let p99 = r.trend.map_or("-".to_owned(), |t| {
            format!("{:.2}ms", t.p99_us as f64 / 1e3)
        });
        let _ = writeln!(
            out,
            "    {:<16} {:<22} {:>6.1}s–{:<6.1}s {:<12} iterations={} errors={} p99={p99}",
            r.name, r.executor, r.start_s, r.end_s, r.ending, r.iterations, r.errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_cannot_drive_the_terminal() {
        let mut s = crate::report::model::fixtures::fleet();
        s.instances[0].host = "pod\u{1b}[2J\r".into();
        let out = render(&s, std::path::Path::new("r"));
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
        assert!(out.contains("pod?[2J?"));
    }

    #[test]
    fn gauges_are_rounded_like_the_other_metrics() {
        let mut s = Summary::empty();
        s.metrics.insert(
            "generator_cpu_percent".into(),
            Metric::Gauge(crate::metrics::summary::GaugeStats {
                last: 4.000084945803909,
                min: 0.3333333333333333,
                max: 97.12345,
                samples: 3,
            }),
        );
        s.metrics.insert(
            "pgbouncer_cl_active".into(),
            Metric::Gauge(crate::metrics::summary::GaugeStats {
                last: 12.0,
                min: 0.0,
                max: 1234.4,
                samples: 3,
            }),
        );
        let out = render(&s, std::path::Path::new("r"));
        assert!(out.contains("last=4.00 min=0.333 max=97.1\n"), "{out}");
        assert!(out.contains("last=12 min=0 max=1234\n"), "{out}");
    }

    #[test]
    fn fleet_instances_follow_the_metrics() {
        let out = render(
            &crate::report::model::fixtures::fleet(),
            std::path::Path::new("r"),
        );
        let table = &out[out.find("  instances").expect("a table")..];
        assert!(out.find("  metrics").unwrap() < out.find("  instances").unwrap());
        let lines: Vec<&str> = table.lines().skip(2).take(3).collect();
        assert!(lines[0].trim_start().starts_with("0/3      gen-a"), "{out}");
        assert!(lines[1].ends_with("saturated"), "{out}");
        assert!(lines[2].contains("LOST"), "{out}");
        assert!(!render(&Summary::empty(), std::path::Path::new("r")).contains("instances"));
    }
}
