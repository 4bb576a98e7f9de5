//! `thumper pgbench`'s closing lines in pgbench 15's words, so that scripts which parse
//! "number of transactions actually processed", "latency average" or "tps = " keep working;
//! then what pgbench cannot give: the percentiles of the transaction and of every statement.

use std::fmt::Write;

use crate::metrics::codec;
use crate::metrics::summary::{Summary, TrendStats};

/// What the summary does not hold and pgbench prints: the command line's settings.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// Each script's title (`<builtin: TPC-B (sort of)>` or its file), in order.
    pub scripts: Vec<String>,
    /// Each script's weight.
    pub weights: Vec<u32>,
    /// Each script's name in the metrics (`iteration_duration{script:NAME}`).
    pub names: Vec<String>,
    /// Each script's SQL commands: line and first line of text.
    pub statements: Vec<Vec<(usize, String)>>,
    /// `:scale` as the scripts saw it.
    pub scale: i64,
    /// simple, extended or prepared.
    pub protocol: String,
    /// `-c`.
    pub clients: u32,
    /// `-j`.
    pub threads: u32,
    /// `-T`.
    pub duration_s: Option<u64>,
    /// `-t` (also pgbench's default of 10).
    pub transactions: Option<u64>,
    /// `-R`.
    pub rate: Option<f64>,
    /// `-L`, in milliseconds.
    pub latency_limit_ms: Option<f64>,
    /// `-r`.
    pub per_command: bool,
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// The standard deviation of a trend, from its histogram (µs).
fn stddev_us(t: &TrendStats) -> Option<f64> {
    codec::decode(&t.histogram).ok().map(|h| h.stdev())
}

/// Samples above `limit_us`, from the histogram.
fn above(t: &TrendStats, limit_us: u64) -> Option<u64> {
    let h = codec::decode(&t.histogram).ok()?;
    Some(h.len() - h.count_between(0, limit_us))
}

/// The lines pgbench prints after a run, then the percentiles.
pub fn render(summary: &Summary, facts: &RunFacts) -> String {
    let mut out = String::new();
    let iteration = summary
        .trend("iteration_duration")
        .cloned()
        .unwrap_or_default();
    let failed = summary.counter("failed_iterations").map_or(0, |c| c.count);
    let done = iteration.count.saturating_sub(failed);
    let _ = writeln!(
        out,
        "pgbench (thumper {}; pgbench 15's script language)",
        env!("CARGO_PKG_VERSION")
    );
    if let [only] = facts.scripts.as_slice() {
        let _ = writeln!(out, "transaction type: {only}");
    } else {
        let _ = writeln!(out, "transaction type: multiple scripts");
    }
    let _ = writeln!(out, "scaling factor: {}", facts.scale);
    let _ = writeln!(out, "query mode: {}", facts.protocol);
    let _ = writeln!(out, "number of clients: {}", facts.clients);
    let _ = writeln!(out, "number of threads: {}", facts.threads);
    let _ = writeln!(out, "maximum number of tries: 1");
    match (facts.duration_s, facts.transactions) {
        (Some(t), _) => {
            let _ = writeln!(out, "duration: {t} s");
            let _ = writeln!(out, "number of transactions actually processed: {done}");
        }
        (None, Some(n)) => {
            let _ = writeln!(out, "number of transactions per client: {n}");
            let planned = n * u64::from(facts.clients);
            let _ = writeln!(
                out,
                "number of transactions actually processed: {done}/{planned}"
            );
        }
        (None, None) => {}
    }
    let pct = |n: u64| 100.0 * n as f64 / iteration.count.max(1) as f64;
    let _ = writeln!(
        out,
        "number of failed transactions: {failed} ({:.3}%)",
        pct(failed)
    );
    if let Some(limit) = facts.latency_limit_ms {
        if let Some(n) = above(&iteration, (limit * 1000.0) as u64) {
            let _ = writeln!(
                out,
                "number of transactions above the {limit:.1} ms latency limit: {n}/{} ({:.3}%)",
                iteration.count,
                pct(n)
            );
        }
    }
    let _ = writeln!(out, "latency average = {:.3} ms", ms(iteration.mean_us));
    if facts.rate.is_some() || facts.latency_limit_ms.is_some() {
        if let Some(sd) = stddev_us(&iteration) {
            let _ = writeln!(out, "latency stddev = {:.3} ms", ms(sd));
        }
    }
    if facts.rate.is_some() {
        if let Some(lag) = summary.trend("scheduling_lag") {
            let _ = writeln!(
                out,
                "rate limit schedule lag: avg {:.3} (max {:.3}) ms",
                ms(lag.mean_us),
                ms(lag.max_us as f64)
            );
        }
    }
    if let Some(c) = summary.trend("connect_duration") {
        let _ = writeln!(out, "initial connection time = {:.3} ms", ms(c.mean_us));
    }
    if let Some(reason) = &summary.stop_reason {
        // pgbench has no such line: a run it did not finish prints nothing at all.
        let _ = writeln!(
            out,
            "run stopped after {:.1} s: {reason}",
            summary.duration_s
        );
    }
    let tps = done as f64 / summary.duration_s.max(1e-9);
    let _ = writeln!(out, "tps = {tps:.6} (without initial connection time)");
    if facts.scripts.len() > 1 || facts.per_command {
        per_script(&mut out, summary, facts);
    }
    let _ = writeln!(
        out,
        "latency percentiles (ms): p50 = {:.3}, p90 = {:.3}, p95 = {:.3}, p99 = {:.3}, p99.9 = {:.3}, max = {:.3}",
        ms(iteration.p50_us as f64),
        ms(iteration.p90_us as f64),
        ms(iteration.p95_us as f64),
        ms(iteration.p99_us as f64),
        ms(iteration.p999_us as f64),
        ms(iteration.max_us as f64)
    );
    out
}

/// pgbench's per-script block (several scripts) and, with `-r`, each statement's latency and
/// failures, with its percentiles beside.
fn per_script(out: &mut String, summary: &Summary, facts: &RunFacts) {
    let names = &facts.names;
    let total: u64 = summary.trend("iteration_duration").map_or(0, |t| t.count);
    let weights: u32 = facts.weights.iter().sum();
    for (i, (title, name)) in facts.scripts.iter().zip(names).enumerate() {
        let t = summary
            .trend(&format!("iteration_duration{{script:{name}}}"))
            .cloned()
            .unwrap_or_default();
        let failed = summary
            .counter(&format!("failed_iterations{{script:{name}}}"))
            .map_or(0, |c| c.count);
        let done = t.count.saturating_sub(failed);
        if facts.scripts.len() > 1 {
            let w = facts.weights.get(i).copied().unwrap_or(1);
            let _ = writeln!(out, "SQL script {}: {title}", i + 1);
            let _ = writeln!(
                out,
                " - weight: {w} (targets {:.1}% of total)",
                100.0 * f64::from(w) / f64::from(weights.max(1))
            );
            let _ = writeln!(
                out,
                " - {done} transactions ({:.1}% of total, tps = {:.6})",
                100.0 * done as f64 / total.max(1) as f64,
                done as f64 / summary.duration_s.max(1e-9)
            );
            let _ = writeln!(
                out,
                " - number of failed transactions: {failed} ({:.3}%)",
                100.0 * failed as f64 / t.count.max(1) as f64
            );
            let _ = writeln!(out, " - latency average = {:.3} ms", ms(t.mean_us));
            if let Some(sd) = stddev_us(&t) {
                let _ = writeln!(out, " - latency stddev = {:.3} ms", ms(sd));
            }
        }
        if facts.per_command {
            statements(
                out,
                summary,
                name,
                facts.statements.get(i).map_or(&[], Vec::as_slice),
            );
        }
    }
}

fn statements(out: &mut String, summary: &Summary, script: &str, texts: &[(usize, String)]) {
    let _ = writeln!(
        out,
        "statement latencies in milliseconds and failures (with thumper's p50 and p99):"
    );
    for (line, text) in texts {
        let q = format!("{script}/{line}");
        let t = summary
            .trend(&format!("query_duration{{query:{q}}}"))
            .cloned()
            .unwrap_or_default();
        let errors = summary
            .counter(&format!("query_errors{{query:{q}}}"))
            .map_or(0, |c| c.count);
        let _ = writeln!(
            out,
            "  {:>10.3}  {:>10}  {:>10.3}  {:>10.3}  {text}",
            ms(t.mean_us),
            errors,
            ms(t.p50_us as f64),
            ms(t.p99_us as f64)
        );
    }
}

/// pgbench's `-P SEC`: every SEC seconds, a line on stderr about the transactions of those
/// seconds, in pgbench's words (`progress: 5.0 s, 1234.5 tps, lat 0.812 ms stddev 0.120, 0
/// failed`, and `, lag ...` under `-R`).
pub struct Progress {
    every_s: f64,
    printed_s: f64,
    seen: usize,
    rate: bool,
}

impl Progress {
    /// A line every `every_s` seconds; `rate` adds the schedule lag (`-R`).
    pub fn new(every_s: u64, rate: bool) -> Progress {
        Progress {
            every_s: every_s.max(1) as f64,
            printed_s: 0.0,
            seen: 0,
            rate,
        }
    }

    /// The line for the intervals since the last one.
    fn line(&self, intervals: &[crate::metrics::summary::Interval]) -> Option<String> {
        let last = intervals.last()?;
        let mut latency = codec::new_latency_histogram();
        let mut lag = codec::new_latency_histogram();
        let mut failed = 0;
        for i in intervals {
            for (name, into) in [
                ("iteration_duration", &mut latency),
                ("scheduling_lag", &mut lag),
            ] {
                if let Some(h) = i
                    .trends
                    .get(name)
                    .and_then(|t| codec::decode(&t.histogram).ok())
                {
                    let _ = into.add(&h);
                }
            }
            failed += i.counters.get("failed_iterations").copied().unwrap_or(0);
        }
        let span = last.t_s - self.printed_s;
        let done = latency.len().saturating_sub(failed);
        let mut line = format!(
            "progress: {:.1} s, {:.1} tps, lat {:.3} ms stddev {:.3}, {failed} failed",
            last.t_s,
            done as f64 / span.max(1e-9),
            ms(latency.mean()),
            ms(latency.stdev())
        );
        if self.rate {
            let _ = write!(line, ", lag {:.3} ms", ms(lag.mean()));
        }
        Some(line)
    }
}

impl crate::metrics::aggregator::Watcher for Progress {
    fn tick(&mut self, run: &crate::metrics::aggregator::RunView<'_>) -> Option<String> {
        let intervals = run.intervals();
        let due = intervals
            .last()
            .is_some_and(|i| i.t_s - self.printed_s >= self.every_s - 1e-6);
        if due {
            if let Some(line) = self.line(&intervals[self.seen..]) {
                eprintln!("{line}");
            }
            self.seen = intervals.len();
            self.printed_s = intervals.last().map_or(0.0, |i| i.t_s);
        }
        None
    }

    fn finish(&mut self, run: &crate::metrics::aggregator::RunView<'_>) {
        // The intervals closed at the end: their seconds get their line too.
        let intervals = run.intervals();
        while self.seen < intervals.len() {
            let upto = intervals[self.seen..]
                .iter()
                .position(|i| i.t_s - self.printed_s >= self.every_s - 1e-6)
                .map_or(intervals.len(), |p| self.seen + p + 1);
            if intervals[upto - 1].t_s - self.printed_s < self.every_s / 2.0 {
                // The run's last fraction of a second: not a progress period of its own.
                break;
            }
            if let Some(line) = self.line(&intervals[self.seen..upto]) {
                eprintln!("{line}");
            }
            self.printed_s = intervals[upto - 1].t_s;
            self.seen = upto;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_run_says_so_beside_pgbench_lines() {
        let mut s = Summary::empty();
        s.duration_s = 8.0;
        let facts = RunFacts {
            duration_s: Some(20),
            ..RunFacts::default()
        };
        assert!(!render(&s, &facts).contains("run stopped"));
        s.stop_reason = Some("interrupted by Ctrl-C".into());
        let text = render(&s, &facts);
        assert!(text.contains("duration: 20 s"), "{text}");
        assert!(
            text.contains("run stopped after 8.0 s: interrupted by Ctrl-C"),
            "{text}"
        );
    }
}
