//! PgBouncer's admin console: pool and traffic statistics (`SHOW POOLS`, `SHOW STATS`), read
//! once a second during a run and turned into gauges for the time series and thresholds.
//!
//! The console speaks only the simple query protocol. `SHOW STATS` carries running totals;
//! its averages refresh only every `stats_period` (60 s by default), so rates are computed here
//! from the deltas of the totals.

use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

use crate::metrics::recorder::{Recorder, SampleKind, Samples};

/// One reading of the console, summed over the pools of one database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSnapshot {
    /// Clients linked to a server connection.
    pub cl_active: f64,
    /// Clients queued for a server connection: the sign of pool starvation.
    pub cl_waiting: f64,
    /// Server connections linked to a client.
    pub sv_active: f64,
    /// Server connections idle and ready for a client.
    pub sv_idle: f64,
    /// Server connections idle for too long, due a `server_check_query` before reuse.
    pub sv_used: f64,
    /// Server connections still logging in.
    pub sv_login: f64,
    /// Longest current client wait, in seconds.
    pub maxwait_s: f64,
    /// Transactions pooled since PgBouncer started (a running total).
    pub total_xact_count: f64,
    /// Queries pooled since PgBouncer started (a running total).
    pub total_query_count: f64,
    /// Total time clients spent waiting for a server, in microseconds.
    pub total_wait_time_us: f64,
}

/// Connects to the console (`postgres://admin:pw@host:port/pgbouncer`).
pub async fn connect(admin_url: &str, timeout: Duration) -> Result<Client, String> {
    crate::db::connect(admin_url, timeout)
        .await
        .map_err(|e| format!("PgBouncer console: {e}"))
}

fn rows(messages: Vec<SimpleQueryMessage>) -> Vec<tokio_postgres::SimpleQueryRow> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn num(row: &tokio_postgres::SimpleQueryRow, column: &str) -> f64 {
    row.columns()
        .iter()
        .position(|c| c.name() == column)
        .and_then(|i| row.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn text<'a>(row: &'a tokio_postgres::SimpleQueryRow, column: &str) -> Option<&'a str> {
    row.columns()
        .iter()
        .position(|c| c.name() == column)
        .and_then(|i| row.get(i))
}

/// Reads `SHOW POOLS` and `SHOW STATS` for `database` (all databases but the console's own
/// when `None`).
pub async fn snapshot(client: &Client, database: Option<&str>) -> Result<PoolSnapshot, String> {
    let wanted = |row: &tokio_postgres::SimpleQueryRow| {
        let db = text(row, "database").unwrap_or("");
        db != "pgbouncer" && database.is_none_or(|d| d == db)
    };
    let mut s = PoolSnapshot::default();
    let pools = client
        .simple_query("SHOW POOLS")
        .await
        .map_err(|e| format!("SHOW POOLS: {}", crate::db::describe(&e)))?;
    for row in rows(pools).iter().filter(|r| wanted(r)) {
        s.cl_active += num(row, "cl_active");
        s.cl_waiting += num(row, "cl_waiting");
        s.sv_active += num(row, "sv_active");
        s.sv_idle += num(row, "sv_idle");
        s.sv_used += num(row, "sv_used");
        s.sv_login += num(row, "sv_login");
        let wait = num(row, "maxwait") + num(row, "maxwait_us") / 1e6;
        s.maxwait_s = s.maxwait_s.max(wait);
    }
    let stats = client
        .simple_query("SHOW STATS")
        .await
        .map_err(|e| format!("SHOW STATS: {}", crate::db::describe(&e)))?;
    for row in rows(stats).iter().filter(|r| wanted(r)) {
        s.total_xact_count += num(row, "total_xact_count");
        s.total_query_count += num(row, "total_query_count");
        s.total_wait_time_us += num(row, "total_wait_time");
    }
    Ok(s)
}

/// Gauges from two consecutive snapshots `dt` apart.
pub fn gauges(prev: &PoolSnapshot, cur: &PoolSnapshot, dt: f64) -> Vec<(&'static str, f64)> {
    let per_s = |a: f64, b: f64| {
        if dt > 0.0 {
            ((b - a) / dt).max(0.0)
        } else {
            0.0
        }
    };
    let xacts = (cur.total_xact_count - prev.total_xact_count).max(0.0);
    let avg_wait = if xacts > 0.0 {
        (cur.total_wait_time_us - prev.total_wait_time_us).max(0.0) / xacts
    } else {
        0.0
    };
    vec![
        ("pgbouncer_cl_active", cur.cl_active),
        ("pgbouncer_cl_waiting", cur.cl_waiting),
        ("pgbouncer_sv_active", cur.sv_active),
        ("pgbouncer_sv_idle", cur.sv_idle),
        ("pgbouncer_maxwait", cur.maxwait_s),
        (
            "pgbouncer_xact_per_s",
            per_s(prev.total_xact_count, cur.total_xact_count),
        ),
        (
            "pgbouncer_query_per_s",
            per_s(prev.total_query_count, cur.total_query_count),
        ),
        ("pgbouncer_avg_wait_us", avg_wait),
    ]
}

/// Polls the console every `every` until `stop`, sending gauges as samples. A console that
/// stops answering (PgBouncer restarting) is reconnected; the gap shows in the series.
pub async fn poll(
    admin_url: String,
    database: Option<String>,
    start: Instant,
    every: Duration,
    samples: Samples,
    stop: CancellationToken,
) {
    let mut recorder = Recorder::new(start, samples);
    let mut client: Option<Client> = None;
    let mut prev: Option<(Instant, PoolSnapshot)> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect(&admin_url, every.max(Duration::from_secs(1)))
                .await
                .ok();
            prev = None;
        }
        let Some(c) = &client else { continue };
        let snap = tokio::time::timeout(
            every.max(Duration::from_secs(1)),
            snapshot(c, database.as_deref()),
        )
        .await;
        let now = Instant::now();
        match snap {
            Ok(Ok(cur)) => {
                if let Some((t, p)) = &prev {
                    for (name, value) in gauges(p, &cur, (now - *t).as_secs_f64()) {
                        recorder.push(now, SampleKind::Gauge { name, value });
                    }
                }
                prev = Some((now, cur));
            }
            _ => {
                client = None;
                prev = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_deltas_of_totals() {
        let a = PoolSnapshot {
            total_xact_count: 1000.0,
            total_query_count: 3000.0,
            total_wait_time_us: 10_000.0,
            ..Default::default()
        };
        let b = PoolSnapshot {
            cl_waiting: 7.0,
            total_xact_count: 1500.0,
            total_query_count: 4000.0,
            total_wait_time_us: 60_000.0,
            ..Default::default()
        };
        let g: std::collections::HashMap<_, _> = gauges(&a, &b, 0.5).into_iter().collect();
        assert_eq!(g["pgbouncer_xact_per_s"], 1000.0);
        assert_eq!(g["pgbouncer_query_per_s"], 2000.0);
        assert_eq!(g["pgbouncer_avg_wait_us"], 100.0);
        assert_eq!(g["pgbouncer_cl_waiting"], 7.0);
        // A restarted PgBouncer resets its totals: no negative rates.
        let g: std::collections::HashMap<_, _> = gauges(&b, &a, 1.0).into_iter().collect();
        assert_eq!(g["pgbouncer_xact_per_s"], 0.0);
    }
}
