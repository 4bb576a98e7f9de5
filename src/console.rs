//! The end-of-run summary on the terminal, in k6's manner: thresholds first, then metrics.

use std::fmt::Write;

use crate::metrics::summary::{Metric, Summary};

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
    let _ = writeln!(out, "\n  thresholds");
    for t in &summary.thresholds {
        let observed = t
            .observed
            .map_or("no samples".to_owned(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "    {} {:<40} {:<16} observed {}",
            if t.ok { "✓" } else { "✗" },
            t.metric,
            t.expression,
            observed
        );
    }
    let _ = writeln!(out, "\n  metrics");
    for (name, m) in &summary.metrics {
        let line = match m {
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
            Metric::Gauge(g) => format!("last={} min={} max={}", g.last, g.min, g.max),
        };
        let dots = ".".repeat(44usize.saturating_sub(name.len()).max(2));
        let _ = writeln!(out, "    {name} {dots} {line}");
    }
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
