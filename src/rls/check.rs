//! The RLS plan check against a live database: reads which tables have row-level security
//! and what their policies call, then `EXPLAIN`s every tenant-scoped query of a scenario as the
//! application role with a tenant set (transaction-local, as the application does, rolled back
//! afterwards) and judges the plans with [`super::plan`].
//!
//! It runs as `thumper rls-check`, at the start of a scenario run against a target thumper
//! migrated (findings become notes in the run's report), and in `thumper health --rls`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::plan::{self, Finding, RlsTable};
use crate::dataset::DatasetSpec;
use crate::metrics::server::{CumulativeTime, ServerQuery};
use crate::migrate::DbError;
use crate::scenario::{ParamKind, QueryDef};

/// The column every tenant table's policy compares with the tenant.
pub const DEFAULT_TENANT_COLUMN: &str = "community_id";

/// What to check, and where.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Application-role URL (through PgBouncer or directly).
    pub target: String,
    /// The scenario's queries; the tenant-scoped ones are explained.
    pub queries: Vec<QueryDef>,
    /// Parameters and the tenant are drawn from community 0 of this dataset.
    pub dataset: DatasetSpec,
    /// The column the policies compare with the tenant (`community_id`).
    pub tenant_column: String,
    /// Limit for the whole check.
    pub timeout: Duration,
}

/// The outcome: what was looked at and what was found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Tables with row-level security.
    pub tables: Vec<String>,
    /// Tenant-scoped queries explained.
    pub queries: Vec<String>,
    /// What looks wrong.
    pub findings: Vec<Finding>,
    /// The explained queries' server time from `pg_stat_statements`: what the load that already
    /// ran cost on the server, since the statistics were last reset (the check runs nothing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server: Vec<CumulativeTime>,
    /// Why there is no server time (the extension missing or not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_missing: Option<String>,
    /// How long the check took, in milliseconds.
    pub elapsed_ms: f64,
}

impl CheckReport {
    /// True when nothing was found.
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Why the check could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The target URL does not parse.
    #[error("target URL is not valid: {0}")]
    BadUrl(String),
    /// The login to the target failed.
    #[error("cannot log in to the target: {0}")]
    Connect(String),
    /// A catalogue or setup statement failed.
    #[error("{what}: {source}")]
    Db {
        /// What was being done.
        what: String,
        /// The database's error.
        #[source]
        source: DbError,
    },
    /// A query's plan could not be obtained or read.
    #[error("query `{query}`: {source}")]
    Plan {
        /// The scenario query's name.
        query: String,
        /// Why.
        #[source]
        source: plan::PlanError,
    },
    /// The target has no RLS tables to check.
    #[error("no table in the search path has row-level security: nothing to check (is this the Arrakis database, migrated?)")]
    NoRlsTables,
    /// The whole check took longer than its timeout.
    #[error("the check did not finish within {0:?}")]
    Timeout(Duration),
}

fn db(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> CheckError {
    let what = what.into();
    move |e| CheckError::Db {
        what,
        source: DbError(e),
    }
}

/// Runs the check.
pub async fn run(opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    match tokio::time::timeout(opts.timeout, run_unbounded(opts)).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Timeout(opts.timeout)),
    }
}

async fn run_unbounded(opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    let config: tokio_postgres::Config = opts
        .target
        .parse()
        .map_err(|e: tokio_postgres::Error| CheckError::BadUrl(e.to_string()))?;
    let (client, conn) = config
        .connect(NoTls)
        .await
        .map_err(|e| CheckError::Connect(crate::workload::describe(&e)))?;
    tokio::spawn(conn);
    let tables = rls_tables(&client, &opts.tenant_column).await?;
    if tables.is_empty() {
        return Err(CheckError::NoRlsTables);
    }
    let mut findings = plan::check_tables(&tables, &opts.tenant_column);
    findings.extend(plan::check_policies(
        &tables,
        &not_immutable(&client, &tables).await?,
    ));
    let mut queries = Vec::new();
    for q in opts.queries.iter().filter(|q| q.tenant_scoped) {
        let explained = explain(&client, q, &opts.dataset).await?;
        let root = plan::parse(&explained).map_err(|source| CheckError::Plan {
            query: q.name.clone(),
            source,
        })?;
        findings.extend(plan::analyze(&root, &q.name, &tables, &opts.tenant_column));
        queries.push(q.name.clone());
    }
    let role = config.get_user().unwrap_or_default();
    let (server, server_missing) = match server_times(&client, role, &opts.queries).await {
        Ok(times) => (times, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    Ok(CheckReport {
        tables: tables.into_iter().map(|t| t.name).collect(),
        queries,
        findings,
        server,
        server_missing,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// The tenant-scoped queries' cumulative server time, as the connected role ran them.
async fn server_times(
    client: &Client,
    role: &str,
    queries: &[QueryDef],
) -> Result<Vec<CumulativeTime>, String> {
    let queries: Vec<ServerQuery> = queries
        .iter()
        .filter(|q| q.tenant_scoped)
        .map(|q| ServerQuery {
            name: q.name.clone(),
            sql: q.sql.clone(),
            tenant_scoped: true,
        })
        .collect();
    crate::metrics::server::cumulative(client, role, &queries, crate::workload::SET_TENANT_SQL)
        .await
}

/// One query's server time: `tenant: 0.120 ms execution + 0.010 ms planning (+ 0.020 ms
/// set_tenant_context) per call over 1,234 calls`.
fn server_line(t: &CumulativeTime) -> String {
    if t.calls == 0 {
        return format!(
            "{}: no calls by this role since the statistics were last reset (these are the server's figures of the load that ran, not the check's: run the load first)",
            t.query
        );
    }
    let tenant = if t.tenant_context_us > 0.0 {
        format!(
            " (+ {:.3} ms set_tenant_context)",
            t.tenant_context_us / 1e3
        )
    } else {
        String::new()
    };
    format!(
        "{}: {:.3} ms execution + {:.3} ms planning{tenant} per call over {} calls",
        t.query,
        t.exec_mean_us / 1e3,
        t.plan_mean_us / 1e3,
        t.calls
    )
}

/// Tables with RLS in the search path, their indexes on the tenant column, and the functions
/// the policies that apply to the connected role call.
async fn rls_tables(client: &Client, tenant_column: &str) -> Result<Vec<RlsTable>, CheckError> {
    let rows = client
        .query(
            "SELECT c.relname::text,
                    c.relforcerowsecurity,
                    EXISTS (SELECT 1 FROM pg_attribute a
                            WHERE a.attrelid = c.oid AND a.attname = $1 AND NOT a.attisdropped),
                    ARRAY(SELECT i.relname::text
                                 || CASE WHEN x.indpred IS NOT NULL THEN ' (partial)' ELSE '' END
                          FROM pg_index x
                          JOIN pg_class i ON i.oid = x.indexrelid
                          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = x.indkey[0]
                          WHERE x.indrelid = c.oid AND a.attname = $1
                          ORDER BY 1),
                    COALESCE((SELECT json_agg(json_build_object(
                                  'name', p.polname,
                                  'permissive', p.polpermissive,
                                  'command', CASE p.polcmd WHEN 'r' THEN 'SELECT'
                                                 WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                                 WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                                  'using', pg_get_expr(p.polqual, p.polrelid),
                                  'with_check', pg_get_expr(p.polwithcheck, p.polrelid))
                                  ORDER BY p.polname)
                              FROM pg_policy p
                              WHERE p.polrelid = c.oid
                                AND EXISTS (SELECT 1 FROM unnest(p.polroles) r
                                            WHERE r = 0 OR pg_has_role(current_user, r, 'MEMBER'))),
                             '[]'::json)
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relrowsecurity AND c.relkind IN ('r', 'p')
               AND n.nspname = ANY (current_schemas(false))
             ORDER BY c.relname",
            &[&tenant_column],
        )
        .await
        .map_err(db("reading the tables with row-level security"))?;
    let mut tables = Vec::new();
    let mut all_calls = BTreeSet::new();
    for row in rows {
        let name: String = row.get(0);
        // The JSON is this query's own shape: it cannot fail to read short of a bug.
        let policies: Vec<plan::Policy> = serde_json::from_value(row.get(4)).unwrap_or_else(|e| {
            tracing::warn!(table = %name, error = %e, "unreadable policies");
            Vec::new()
        });
        let calls: BTreeSet<String> = policies
            .iter()
            .flat_map(|p| [&p.using, &p.with_check])
            .flatten()
            .flat_map(|e| plan::called_functions(e))
            .collect();
        all_calls.extend(calls.iter().cloned());
        tables.push(RlsTable {
            name,
            forced: row.get(1),
            has_tenant_column: row.get(2),
            tenant_indexes: row.get(3),
            policy_functions: calls,
            policies,
        });
    }
    // SQL functions are inlined by the planner: what they call is what a filter shows.
    let names: Vec<String> = all_calls.into_iter().collect();
    let bodies = client
        .query(
            "SELECT p.proname::text, p.prosrc FROM pg_proc p
             JOIN pg_language l ON l.oid = p.prolang
             WHERE l.lanname = 'sql' AND p.proname = ANY ($1)",
            &[&names],
        )
        .await
        .map_err(db("reading the policies' SQL functions"))?;
    for row in bodies {
        let name: String = row.get(0);
        let inner = plan::called_functions(row.get::<_, &str>(1));
        for t in &mut tables {
            if t.policy_functions.contains(&name) {
                t.policy_functions.extend(inner.iter().cloned());
            }
        }
    }
    Ok(tables)
}

/// Which of the functions the policies call are not IMMUTABLE: evaluated per row unless wrapped
/// in a scalar subquery.
async fn not_immutable(
    client: &Client,
    tables: &[RlsTable],
) -> Result<BTreeSet<String>, CheckError> {
    let names: Vec<String> = tables
        .iter()
        .flat_map(|t| t.policy_functions.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = client
        .query(
            "SELECT DISTINCT lower(p.proname::text) FROM pg_proc p
             WHERE lower(p.proname::text) = ANY ($1) AND p.provolatile <> 'i'",
            &[&names],
        )
        .await
        .map_err(db("reading the volatility of the policies' functions"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Parameters of a query, for community 0, profile 0 of the dataset.
struct Params {
    community: uuid::Uuid,
    guild: i64,
    profile: uuid::Uuid,
    discord_user: i64,
    wallet: String,
    /// A feeder column has no value here: EXPLAIN it with NULL, its type left to the server.
    column: Option<String>,
}

impl Params {
    fn new(spec: &DatasetSpec) -> Params {
        Params {
            community: spec.community_id(0),
            guild: spec.guild_id(0),
            profile: spec.profile_id(0, 0),
            discord_user: spec.discord_user_id(0, 0),
            wallet: spec.wallet(0, 0),
            column: None,
        }
    }

    fn value(&self, kind: ParamKind) -> (&(dyn ToSql + Sync), Type) {
        match kind {
            ParamKind::CommunityId => (&self.community, Type::UUID),
            ParamKind::GuildId => (&self.guild, Type::INT8),
            ParamKind::ProfileId => (&self.profile, Type::UUID),
            ParamKind::DiscordUserId => (&self.discord_user, Type::INT8),
            ParamKind::Wallet => (&self.wallet, Type::TEXT),
            ParamKind::Column(_) => (&self.column, Type::UNKNOWN),
        }
    }
}

/// `EXPLAIN (FORMAT JSON)` of one query as the application runs it: in a transaction with the
/// tenant set, rolled back. Sequential scans are disabled so that a small table's seq scan does
/// not hide whether an index can serve the tenant predicate.
async fn explain(
    client: &Client,
    q: &QueryDef,
    spec: &DatasetSpec,
) -> Result<serde_json::Value, CheckError> {
    let params = Params::new(spec);
    let what = || format!("explaining query `{}`", q.name);
    client
        .batch_execute(&format!(
            "BEGIN; SELECT set_tenant_context('{}'::uuid, false); \
             SET LOCAL enable_seqscan = off; SET LOCAL jit = off",
            params.community
        ))
        .await
        .map_err(db(what()))?;
    let values: Vec<(&(dyn ToSql + Sync), Type)> =
        q.params.iter().map(|k| params.value(*k)).collect();
    let result = client
        .query_typed(&format!("EXPLAIN (FORMAT JSON) {}", q.sql), &values)
        .await;
    let _ = client.batch_execute("ROLLBACK").await;
    let rows = result.map_err(db(what()))?;
    let row = rows.first().ok_or_else(|| CheckError::Plan {
        query: q.name.clone(),
        source: plan::PlanError::empty(),
    })?;
    row.try_get(0).map_err(db(what()))
}

/// Human-readable lines.
pub fn render(report: &CheckReport) -> String {
    let mut out = format!(
        "RLS plan check: {} tables with row-level security ({}), {} tenant-scoped queries explained ({})\n",
        report.tables.len(),
        report.tables.join(", "),
        report.queries.len(),
        report.queries.join(", ")
    );
    match &report.server_missing {
        Some(why) => out.push_str(&format!("server time per query not shown: {why}\n")),
        None => {
            out.push_str("server time per query (pg_stat_statements, since its last reset):\n");
            for t in &report.server {
                out.push_str(&format!("  {}\n", server_line(t)));
            }
        }
    }
    for f in &report.findings {
        out.push_str(&format!("{}\n", one_line(f)));
        if let Some(t) = report
            .server
            .iter()
            .find(|t| f.query.as_ref() == Some(&t.query))
        {
            out.push_str(&format!("        server time: {}\n", server_line(t)));
        }
    }
    if report.clean() {
        out.push_str(
            "clean: every tenant predicate can use an index, policies run once per statement\n",
        );
    } else {
        out.push_str(&format!("{} finding(s)\n", report.findings.len()));
    }
    out
}

/// `FINDING seq_scan profiles (query tenant): Seq Scan on ...  — advice`.
fn one_line(f: &Finding) -> String {
    let query = f
        .query
        .as_ref()
        .map(|q| format!(" (query {q})"))
        .unwrap_or_default();
    format!(
        "FINDING {} {}{query}: {}\n        {}",
        f.kind.as_str(),
        f.table,
        f.evidence,
        f.advice
    )
}

/// The check as notes for a run's report: one per finding, or one saying it could not run.
pub async fn run_notes(target: &str, queries: &[QueryDef], dataset: DatasetSpec) -> Vec<String> {
    let opts = CheckOptions {
        target: target.to_owned(),
        queries: queries.to_vec(),
        dataset,
        tenant_column: DEFAULT_TENANT_COLUMN.to_owned(),
        timeout: Duration::from_secs(15),
    };
    match run(&opts).await {
        Ok(report) => report
            .findings
            .iter()
            .map(|f| {
                format!(
                    "RLS plan check: {}",
                    one_line(f).replace("\n        ", " — ")
                )
            })
            .collect(),
        Err(e) => vec![format!("RLS plan check could not run: {e}")],
    }
}

/// The check as one `thumper health --rls` check.
pub async fn health_check(
    target: &str,
    queries: &[QueryDef],
    dataset: DatasetSpec,
    timeout: Duration,
) -> crate::health::Check {
    let opts = CheckOptions {
        target: target.to_owned(),
        queries: queries.to_vec(),
        dataset,
        tenant_column: DEFAULT_TENANT_COLUMN.to_owned(),
        timeout,
    };
    let started = Instant::now();
    let (ok, detail) = match run(&opts).await {
        Ok(r) if r.clean() => (
            true,
            format!(
                "{} RLS tables, {} tenant-scoped queries: every plan uses a tenant index",
                r.tables.len(),
                r.queries.len()
            ),
        ),
        Ok(r) => (
            false,
            r.findings
                .iter()
                .map(|f| one_line(f).replace("\n        ", " — "))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(e) => (false, e.to_string()),
    };
    crate::health::Check {
        name: "rls_plans",
        ok,
        detail,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

/// `thumper rls-check`'s input.
#[derive(Debug, Clone)]
pub struct CommandOptions {
    /// The scenario whose tenant-scoped queries are checked.
    pub scenario: std::path::PathBuf,
    /// Application-role URL; without it the stack that is up, else an embedded one.
    pub target: Option<String>,
    /// The column the policies compare with the tenant.
    pub tenant_column: String,
}

/// `thumper rls-check`: loads the scenario, finds or starts the target, runs the check.
pub async fn command(opts: &CommandOptions) -> Result<CheckReport, crate::run::RunError> {
    use crate::run::RunError;
    let plan = crate::scenario::load(&opts.scenario)?;
    if !plan.queries.iter().any(|q| q.tenant_scoped) {
        return Err(RunError::BadInput(format!(
            "{}: no query has tenant_scoped = true: nothing to explain",
            plan.file
        )));
    }
    if opts.tenant_column.is_empty()
        || !opts
            .tenant_column
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(RunError::BadInput(format!(
            "--tenant-column {:?}: expected a column name such as community_id",
            opts.tenant_column
        )));
    }
    let mut owned = None;
    let target = match (&opts.target, crate::stack::running()) {
        (Some(t), _) => t.clone(),
        (None, Some(urls)) => {
            eprintln!("thumper: using the stack that is up (`thumper stack down` stops it)");
            urls.database_url
        }
        (None, None) => {
            eprintln!("thumper: starting PostgreSQL + PgBouncer (migrations applied) ...");
            let stack = crate::stack::Stack::start(&crate::stack::StackOptions {
                migrations_dir: crate::run::default_migrations_dir(),
                ..Default::default()
            })
            .await
            .map_err(|e| RunError::Failed(format!("the embedded stack did not start: {e}")))?;
            let url = stack.urls().database_url.clone();
            owned = Some(stack);
            url
        }
    };
    let result = run(&CheckOptions {
        target,
        queries: plan.queries.clone(),
        dataset: plan.dataset,
        tenant_column: opts.tenant_column.clone(),
        timeout: Duration::from_secs(60),
    })
    .await;
    if let Some(stack) = owned {
        if let Err(e) = stack.stop().await {
            eprintln!("thumper: stopping the embedded stack: {e}");
        }
    }
    result.map_err(|e| match e {
        CheckError::BadUrl(m) => RunError::BadInput(format!("--target: {m}")),
        e => RunError::Failed(format!("rls-check: {e}")),
    })
}
