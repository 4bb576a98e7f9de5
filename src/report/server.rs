//! "Where the time went": each query's client time beside the server's (`pg_stat_statements`),
//! PgBouncer's wait and the remainder, and what the server's backends waited on. One model
//! ([`Section`]) for the HTML section (`templates/server.html`), the Markdown table and the
//! terminal's lines, so the three say the same thing.

use std::fmt::Write;

use super::model::{count, ms, number};
use crate::metrics::server::{QueryServerTime, ServerBreakdown};
use crate::metrics::summary::Summary;

/// Colours of the bar's parts: server execution, planning and tenant statement, PgBouncer's
/// wait, the remainder.
const PARTS: [(&str, &str); 4] = [
    ("server", "#1f5fa8"),
    ("planning + tenant", "#6c9bd2"),
    ("PgBouncer wait", "#d08c1a"),
    ("network, driver, generator", "#b8bec9"),
];

/// One query's row, formatted for display.
pub(crate) struct Row {
    pub query: String,
    pub calls: String,
    pub client_calls: String,
    pub client_p50: String,
    pub client_mean: String,
    pub client_p99: String,
    pub exec: String,
    pub exec_stddev: String,
    pub exec_max: String,
    pub plan_tenant: String,
    pub server: String,
    pub pgbouncer: String,
    pub remainder: String,
    pub rows: String,
    pub hit: String,
    pub read: String,
    pub temp: String,
    /// The stacked bar: (label, µs shown, width in percent of the widest client mean, colour).
    pub bar: Vec<(&'static str, String, String, &'static str)>,
}

/// A wait event's row.
pub(crate) struct WaitRow {
    pub kind: String,
    pub event: String,
    pub samples: String,
    /// Busy backends on it on average over the samples.
    pub mean: String,
}

/// The section's context.
pub(crate) struct Section {
    pub rows: Vec<Row>,
    pub waits: Vec<WaitRow>,
    pub samples: String,
    pub database: Vec<(&'static str, String)>,
    pub legend: Vec<(&'static str, &'static str)>,
}

impl Section {
    /// The section of a summary that has a server breakdown.
    pub(crate) fn of(s: &Summary) -> Option<Section> {
        let b = s.server.as_ref()?;
        let widest = b
            .queries
            .iter()
            .map(|q| q.client_mean_us.max(q.server_us + q.pgbouncer_wait_us))
            .fold(0.0, f64::max);
        Some(Section {
            rows: b.queries.iter().map(|q| row(q, widest)).collect(),
            waits: waits(b),
            samples: count(b.samples),
            database: vec![
                ("commits", number(b.database.commits)),
                ("rollbacks", number(b.database.rollbacks)),
                ("deadlocks", number(b.database.deadlocks)),
                ("blocks read", number(b.database.blocks_read)),
                ("temp bytes", number(b.database.temp_bytes)),
            ],
            legend: PARTS.to_vec(),
        })
    }
}

/// The four parts of a query's client mean, in µs.
fn parts(q: &QueryServerTime) -> [f64; 4] {
    let exec = q.exec_mean_us;
    [
        exec,
        (q.server_us - exec).max(0.0),
        q.pgbouncer_wait_us,
        q.remainder_us,
    ]
}

fn row(q: &QueryServerTime, widest: f64) -> Row {
    let bar = parts(q)
        .iter()
        .zip(PARTS)
        .map(|(us, (label, colour))| {
            let width = if widest > 0.0 {
                us / widest * 100.0
            } else {
                0.0
            };
            (label, ms(*us), format!("{width:.2}"), colour)
        })
        .collect();
    Row {
        query: q.query.clone(),
        calls: count(q.server_calls),
        client_calls: count(q.client_calls),
        client_p50: ms(q.client_p50_us),
        client_mean: ms(q.client_mean_us),
        client_p99: ms(q.client_p99_us),
        exec: ms(q.exec_mean_us),
        exec_stddev: ms(q.exec_stddev_us),
        exec_max: q.exec_max_us.map_or_else(|| "—".to_owned(), ms),
        plan_tenant: ms(q.plan_mean_us + q.tenant_context_us),
        server: ms(q.server_us),
        pgbouncer: ms(q.pgbouncer_wait_us),
        remainder: ms(q.remainder_us),
        rows: number(q.rows_per_call),
        hit: number(q.blocks_hit_per_call),
        read: number(q.blocks_read_per_call),
        temp: number(q.temp_blocks_per_call),
        bar,
    }
}

fn waits(b: &ServerBreakdown) -> Vec<WaitRow> {
    b.waits
        .iter()
        .map(|w| WaitRow {
            kind: w.wait_event_type.clone(),
            event: w.wait_event.clone(),
            samples: count(w.samples),
            mean: number(w.samples as f64 / b.samples.max(1) as f64),
        })
        .collect()
}

/// The Markdown table (text escaped by `escape`).
pub(crate) fn markdown(md: &mut String, s: &Summary, escape: impl Fn(&str) -> String) {
    let Some(section) = Section::of(s) else {
        return;
    };
    let _ = writeln!(
        md,
        "**Where the time went** (means per call, ms; server from pg_stat_statements)\n\n\
         | Query | Client p50 | Client mean | Client p99 | Server exec | Planning + tenant | PgBouncer wait | Remainder | Server calls | thumper calls |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &section.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            escape(&r.query),
            r.client_p50,
            r.client_mean,
            r.client_p99,
            r.exec,
            r.plan_tenant,
            r.pgbouncer,
            r.remainder,
            r.calls,
            r.client_calls
        );
    }
    if !section.waits.is_empty() {
        let _ = write!(
            md,
            "\nServer waits (busy backends, {} samples):",
            section.samples
        );
        for w in section.waits.iter().take(5) {
            let _ = write!(
                md,
                " {}/{} {}",
                escape(&w.kind),
                escape(&w.event),
                w.samples
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
}

/// The terminal's lines: one per query.
pub(crate) fn console(out: &mut String, s: &Summary) {
    let Some(section) = Section::of(s) else {
        return;
    };
    let _ = writeln!(
        out,
        "\n  where the time went (mean per call, ms: client = server + planning/tenant + PgBouncer wait + rest)"
    );
    for r in &section.rows {
        let _ = writeln!(
            out,
            "    {:<20} client {} (p50 {}, p99 {}) = server {} + {} + {} + {}   [{} server calls, {} by thumper]",
            r.query,
            r.client_mean,
            r.client_p50,
            r.client_p99,
            r.exec,
            r.plan_tenant,
            r.pgbouncer,
            r.remainder,
            r.calls,
            r.client_calls
        );
    }
    if !section.waits.is_empty() {
        let waits: Vec<String> = section
            .waits
            .iter()
            .take(5)
            .map(|w| format!("{}/{} {}", w.kind, w.event, w.samples))
            .collect();
        let _ = writeln!(
            out,
            "    server waits over {} samples: {}",
            section.samples,
            waits.join(", ")
        );
    }
}
