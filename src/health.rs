//! The deep health check: what `pg_isready` misses. `pg_isready` never logs in, so it calls a
//! PgBouncer healthy while the database behind it is down. This check logs in through
//! PgBouncer as the application role, runs a query that needs a server connection, runs a
//! tenant-scoped query under row-level security, and reads the pool's waiting clients, longest
//! wait and server connections from the admin console. Every step has a timeout: PgBouncer can
//! queue a client for `query_wait_timeout` (120 s by default).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::metrics::pgbouncer;
use crate::workload::describe;

/// Limits for the console checks.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// Application-role URL through PgBouncer.
    pub target: String,
    /// PgBouncer admin console URL; `None` skips the pool checks.
    pub admin: Option<String>,
    /// Time allowed for each check.
    pub timeout: Duration,
    /// Most clients allowed to wait for a server connection (`cl_waiting`).
    pub max_waiting: f64,
    /// Longest allowed client wait for a server connection (`maxwait`), in seconds.
    pub max_wait_s: f64,
}

/// One step of the health check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name of the step.
    pub name: &'static str,
    /// Whether the step passed.
    pub ok: bool,
    /// What was seen, or why the step failed.
    pub detail: String,
    /// How long the step took, in milliseconds.
    pub elapsed_ms: f64,
}

/// Every check's outcome: what `thumper health` prints.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// True when every check passed.
    pub healthy: bool,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl HealthReport {
    /// The first failing check's name.
    pub fn failing(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }
}

async fn timed<F, T>(timeout: Duration, f: F) -> (Result<T, String>, f64)
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    let r = match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    (r, started.elapsed().as_secs_f64() * 1e3)
}

/// Runs every check; stops after the first failing database check (the later ones depend on it).
pub async fn check(opts: &HealthOptions) -> HealthReport {
    let mut checks = Vec::new();
    let t = opts.timeout;
    if let Some(client) = login(opts, &mut checks).await {
        database_checks(&client, t, &mut checks).await;
    }
    if let Some(admin) = &opts.admin {
        pgbouncer_checks(opts, admin, &mut checks).await;
    }
    HealthReport {
        healthy: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// A real login as the application role.
async fn login(opts: &HealthOptions, checks: &mut Vec<Check>) -> Option<Client> {
    let (login, ms) = timed(opts.timeout, async {
        crate::db::connect(&opts.target, opts.timeout)
            .await
            .map_err(|e| match e {
                crate::db::ConnectError::Login { reason, .. } => reason,
                other => other.to_string(),
            })
    })
    .await;
    let (ok, detail) = match &login {
        Ok(_) => (true, "logged in as the application role".to_owned()),
        Err(e) => (false, e.clone()),
    };
    checks.push(Check {
        name: "login",
        ok,
        detail,
        elapsed_ms: ms,
    });
    login.ok()
}

/// A query PostgreSQL answers (a login through PgBouncer needs no server connection; a query
/// does), then a tenant's read under RLS.
async fn database_checks(client: &Client, t: Duration, checks: &mut Vec<Check>) {
    let (r, ms) = timed(t, async {
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| describe(&e))
    })
    .await;
    let query_ok = r.is_ok();
    checks.push(Check {
        name: "query",
        ok: query_ok,
        detail: r
            .map(|_| "SELECT 1 answered by PostgreSQL".into())
            .unwrap_or_else(|e| e),
        elapsed_ms: ms,
    });
    if query_ok {
        let (r, ms) = timed(t, tenant_rls(client)).await;
        checks.push(Check {
            name: "tenant_rls",
            ok: r.is_ok(),
            detail: r.unwrap_or_else(|e| e),
            elapsed_ms: ms,
        });
    }
}

/// The first community's view of `profiles` under RLS: none of another tenant's rows.
async fn tenant_rls(client: &Client) -> Result<String, String> {
    let msgs = client
        .simple_query("SELECT id::text FROM communities ORDER BY id LIMIT 1")
        .await
        .map_err(|e| describe(&e))?;
    let tenant = msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    let Some(tenant) = tenant else {
        return Ok("no communities yet: RLS not exercised".to_owned());
    };
    let msgs = client
        .simple_query(&format!(
            "BEGIN; SELECT set_tenant_context('{tenant}'::uuid, false); \
             SELECT count(*) FILTER (WHERE community_id <> '{tenant}'::uuid), count(*) FROM profiles; COMMIT"
        ))
        .await
        .map_err(|e| describe(&e))?;
    let counts: Vec<(i64, i64)> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.len() == 2 => Some((
                r.get(0).and_then(|v| v.parse().ok()).unwrap_or(-1),
                r.get(1).and_then(|v| v.parse().ok()).unwrap_or(-1),
            )),
            _ => None,
        })
        .collect();
    match counts.first() {
        Some((0, n)) => Ok(format!(
            "tenant {tenant} sees {n} profiles, none of another tenant"
        )),
        Some((foreign, _)) => Err(format!(
            "tenant {tenant} sees {foreign} rows of other tenants: RLS is not isolating"
        )),
        None => Err("tenant query returned no result".into()),
    }
}

/// PgBouncer's pools: clients waiting, the longest wait, server connections.
async fn pgbouncer_checks(opts: &HealthOptions, admin: &str, checks: &mut Vec<Check>) {
    let t = opts.timeout;
    let database = opts
        .target
        .parse::<tokio_postgres::Config>()
        .ok()
        .and_then(|c| c.get_dbname().map(str::to_owned));
    let (r, ms) = timed(t, async {
        let c = pgbouncer::connect(admin, t).await?;
        pgbouncer::snapshot(&c, database.as_deref()).await
    })
    .await;
    match r {
        Err(e) => checks.push(Check {
            name: "pgbouncer_console",
            ok: false,
            detail: e,
            elapsed_ms: ms,
        }),
        Ok(s) => {
            checks.push(Check {
                name: "pool_waiting",
                ok: s.cl_waiting <= opts.max_waiting && s.maxwait_s <= opts.max_wait_s,
                detail: format!(
                    "{} clients waiting (limit {}), longest wait {:.3} s (limit {} s)",
                    s.cl_waiting, opts.max_waiting, s.maxwait_s, opts.max_wait_s
                ),
                elapsed_ms: ms,
            });
            let servers = s.sv_active + s.sv_idle + s.sv_used;
            checks.push(Check {
                name: "server_connections",
                ok: !(servers == 0.0 && s.cl_waiting > 0.0),
                detail: format!(
                    "{} active, {} idle, {} used, {} logging in",
                    s.sv_active, s.sv_idle, s.sv_used, s.sv_login
                ),
                elapsed_ms: ms,
            });
        }
    }
}

/// Human-readable report lines.
pub fn render(report: &HealthReport) -> String {
    let mut out = String::new();
    for c in &report.checks {
        out.push_str(&format!(
            "{} {:<20} {:>8.1} ms  {}\n",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.elapsed_ms,
            c.detail
        ));
    }
    match report.failing() {
        None => out.push_str("healthy\n"),
        Some(c) => out.push_str(&format!("unhealthy: {} failed: {}\n", c.name, c.detail)),
    }
    out
}
