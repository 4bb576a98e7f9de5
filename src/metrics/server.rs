//! The server's side of a run: where each query's milliseconds went inside PostgreSQL
//! (`pg_stat_statements`), and what its backends waited on (`pg_stat_activity`,
//! `pg_stat_database`).
//!
//! Statement statistics are a snapshot before the load and one after, diffed by `queryid`,
//! never reset: a shared server's statistics belong to others too. Only the application role's
//! top-level statements in the application's database count. Each scenario query is matched to
//! its statements by their normalised text (constants and `$n` placeholders alike become `?`),
//! the tenant transaction's `set_tenant_context` call shared among the tenant-scoped queries by
//! their calls. Once a second, a sampler counts the application role's busy backends by wait
//! event type and turns `pg_stat_database`'s totals into rates, as gauges into the aggregator;
//! with the statistics readable, it also gives each query's server time in that second.
//!
//! Missing pieces never stop a run: without the extension, or without the right to read it,
//! the notes say why the decomposition is missing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::pgbouncer::PoolSnapshot;
use super::recorder::{Recorder, SampleKind, Samples};
use super::summary::{GaugeStats, Metric, TrendStats};

/// One scenario query as the server sees it.
#[derive(Debug, Clone)]
pub struct ServerQuery {
    /// The query's name (its `query` tag).
    pub name: String,
    /// Its SQL as the scenario gives it.
    pub sql: String,
    /// Run in a transaction after the tenant statement.
    pub tenant_scoped: bool,
}

/// Where the server's statistics are read, and what to match them with.
#[derive(Debug, Clone)]
pub struct ServerSource {
    /// A URL that may read every role's statistics (the admin URL), else the application's.
    pub stats_url: String,
    /// The role the load runs as (its statements and backends are the run's).
    pub app_role: String,
    /// PgBouncer's console, for its average wait over the run; `None` when unknown.
    pub pgbouncer_admin_url: Option<String>,
    /// The database name PgBouncer's pools are listed under.
    pub pgbouncer_database: Option<String>,
    /// The scenario's queries, in order.
    pub queries: Vec<ServerQuery>,
    /// The statement every tenant-scoped query runs first.
    pub tenant_sql: String,
}

/// The wait event types of PostgreSQL 15, each a gauge of the busy backends waiting on it;
/// `Running` is a busy backend with no wait event (on the CPU, or in an uninstrumented wait).
pub const WAIT_TYPES: [(&str, &str); 10] = [
    ("Running", "server_waits_running"),
    ("Lock", "server_waits_lock"),
    ("LWLock", "server_waits_lwlock"),
    ("IO", "server_waits_io"),
    ("Client", "server_waits_client"),
    ("IPC", "server_waits_ipc"),
    ("Timeout", "server_waits_timeout"),
    ("BufferPin", "server_waits_bufferpin"),
    ("Activity", "server_waits_activity"),
    ("Extension", "server_waits_extension"),
];

/// The per-query server metrics: `server_time{query:Q}` (a statistic: avg, min, max, count, in
/// ms), `server_rows{query:Q}` and `server_blocks_read{query:Q}` (gauges, per call).
pub const PER_QUERY: [&str; 3] = ["server_time", "server_rows", "server_blocks_read"];

/// The decomposition of a run's time, per query: the report model's `server` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerBreakdown {
    /// One row per scenario query, in scenario order.
    pub queries: Vec<QueryServerTime>,
    /// PgBouncer's average wait per transaction over the run, in µs; `None` without its console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgbouncer_wait_us: Option<f64>,
    /// What the application role's busy backends waited on, most sampled first.
    #[serde(default)]
    pub waits: Vec<WaitCount>,
    /// How many once-a-second activity samples the counts come from.
    pub samples: u64,
    /// `pg_stat_database` over the run.
    #[serde(default)]
    pub database: DatabaseTotals,
}

/// One query's time, client and server side by side. Times are means per call in µs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueryServerTime {
    /// The query's name.
    pub query: String,
    /// Successful executions thumper counted.
    pub client_calls: u64,
    /// Client-side latency: median, mean and 99th percentile (successful queries).
    pub client_p50_us: f64,
    /// Mean client-side latency.
    pub client_mean_us: f64,
    /// 99th percentile of the client-side latency.
    pub client_p99_us: f64,
    /// Calls the server counted for the query's own statement.
    pub server_calls: u64,
    /// `pg_stat_statements` entries matched (one unless the text was planned several ways).
    pub statements: u64,
    /// Mean execution time of the query's statement.
    pub exec_mean_us: f64,
    /// Standard deviation of its execution time over the run.
    pub exec_stddev_us: f64,
    /// Its largest execution time; `None` when the largest the server holds predates the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_max_us: Option<f64>,
    /// Mean planning time per call (0 when plans are cached).
    pub plan_mean_us: f64,
    /// The tenant statement's mean time, per call of a tenant-scoped query (0 otherwise).
    pub tenant_context_us: f64,
    /// Everything the server spent per call: execution, planning and the tenant statement.
    pub server_us: f64,
    /// PgBouncer's average wait per transaction over the run (the same for every query).
    pub pgbouncer_wait_us: f64,
    /// What is left of the client's mean: network, driver, PgBouncer's own work, the generator.
    pub remainder_us: f64,
    /// Rows per call.
    pub rows_per_call: f64,
    /// Shared buffer hits per call.
    pub blocks_hit_per_call: f64,
    /// Shared blocks read (from the OS) per call.
    pub blocks_read_per_call: f64,
    /// Temporary blocks read and written per call.
    pub temp_blocks_per_call: f64,
}

/// Busy backend samples on one wait event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WaitCount {
    /// `wait_event_type` (`Running` when none).
    pub wait_event_type: String,
    /// `wait_event` (empty when none).
    pub wait_event: String,
    /// Backends seen on it, summed over the samples (backend-seconds at one sample a second).
    pub samples: u64,
}

/// `pg_stat_database`'s totals over the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DatabaseTotals {
    /// Transactions committed.
    pub commits: f64,
    /// Transactions rolled back.
    pub rollbacks: f64,
    /// Deadlocks detected.
    pub deadlocks: f64,
    /// Bytes written to temporary files.
    pub temp_bytes: f64,
    /// Blocks read from the OS.
    pub blocks_read: f64,
}

impl DatabaseTotals {
    fn minus(&self, before: &DatabaseTotals) -> DatabaseTotals {
        let d = |a: f64, b: f64| (a - b).max(0.0);
        DatabaseTotals {
            commits: d(self.commits, before.commits),
            rollbacks: d(self.rollbacks, before.rollbacks),
            deadlocks: d(self.deadlocks, before.deadlocks),
            temp_bytes: d(self.temp_bytes, before.temp_bytes),
            blocks_read: d(self.blocks_read, before.blocks_read),
        }
    }
}

/// One statement's cumulative totals, as `pg_stat_statements` holds them (times in ms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatementTotals {
    /// The normalised text.
    pub text: String,
    /// Executions.
    pub calls: f64,
    /// Total execution time.
    pub exec_ms: f64,
    /// Total planning time.
    pub plan_ms: f64,
    /// Largest execution time.
    pub max_exec_ms: f64,
    /// Largest planning time.
    pub max_plan_ms: f64,
    /// Standard deviation of the execution time.
    pub stddev_exec_ms: f64,
    /// Rows returned or affected.
    pub rows: f64,
    /// Shared buffer hits.
    pub blks_hit: f64,
    /// Shared blocks read.
    pub blks_read: f64,
    /// Temporary blocks read and written.
    pub temp_blks: f64,
}

/// Statement totals by `queryid`.
pub type Statements = HashMap<i64, StatementTotals>;

/// A statement's totals over the run: `after` less `before` (absent before: all of `after`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatementDelta {
    /// Executions in the run.
    pub calls: f64,
    /// Execution time in the run, ms.
    pub exec_ms: f64,
    /// Planning time in the run, ms.
    pub plan_ms: f64,
    /// Sum of squared deviations of the run's execution times (ms²).
    pub m2: f64,
    /// The largest execution time of the run, ms; `None` when the server's predates it.
    pub max_exec_ms: Option<f64>,
    /// The largest planning time, ms (same caveat, taken as is).
    pub max_plan_ms: f64,
    /// Rows.
    pub rows: f64,
    /// Shared buffer hits.
    pub blks_hit: f64,
    /// Shared blocks read.
    pub blks_read: f64,
    /// Temporary blocks.
    pub temp_blks: f64,
}

impl StatementDelta {
    /// The run's share of a statement's totals. The variance of the run's calls comes from the
    /// two cumulative ones (Chan et al.'s merge, solved for the second part); the maximum is
    /// the run's only when it grew, or the statement is new.
    pub fn between(before: Option<&StatementTotals>, after: &StatementTotals) -> StatementDelta {
        let zero = StatementTotals::default();
        let b = before.unwrap_or(&zero);
        let calls = (after.calls - b.calls).max(0.0);
        let exec_ms = (after.exec_ms - b.exec_ms).max(0.0);
        let m2 = if calls > 0.0 && b.calls > 0.0 {
            let (mean_a, mean_b) = (b.exec_ms / b.calls, exec_ms / calls);
            let delta = mean_b - mean_a;
            let total = after.stddev_exec_ms.powi(2) * after.calls;
            let part_a = b.stddev_exec_ms.powi(2) * b.calls;
            (total - part_a - delta * delta * b.calls * calls / after.calls).max(0.0)
        } else {
            after.stddev_exec_ms.powi(2) * calls
        };
        let fresh = b.calls == 0.0 || after.max_exec_ms > b.max_exec_ms;
        StatementDelta {
            calls,
            exec_ms,
            plan_ms: (after.plan_ms - b.plan_ms).max(0.0),
            m2,
            max_exec_ms: fresh.then_some(after.max_exec_ms),
            max_plan_ms: after.max_plan_ms,
            rows: (after.rows - b.rows).max(0.0),
            blks_hit: (after.blks_hit - b.blks_hit).max(0.0),
            blks_read: (after.blks_read - b.blks_read).max(0.0),
            temp_blks: (after.temp_blks - b.temp_blks).max(0.0),
        }
    }

    /// Adds another statement's run totals (one query matched to several entries).
    fn add(&mut self, o: &StatementDelta) {
        self.calls += o.calls;
        self.exec_ms += o.exec_ms;
        self.plan_ms += o.plan_ms;
        self.m2 += o.m2;
        self.max_exec_ms = match (self.max_exec_ms, o.max_exec_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ if self.calls == o.calls => o.max_exec_ms,
            _ => None,
        };
        self.max_plan_ms = self.max_plan_ms.max(o.max_plan_ms);
        self.rows += o.rows;
        self.blks_hit += o.blks_hit;
        self.blks_read += o.blks_read;
        self.temp_blks += o.temp_blks;
    }

    /// Mean server time per call (execution and planning), ms.
    fn mean_ms(&self) -> f64 {
        if self.calls > 0.0 {
            (self.exec_ms + self.plan_ms) / self.calls
        } else {
            0.0
        }
    }
}

/// A statement's text reduced to what identifies it: literals and `$n` become `?`, runs of
/// whitespace one space, letters lower case, no trailing `;`. The scenario's SQL and the text
/// `pg_stat_statements` keeps (constants already replaced by `$n`) meet here.
pub fn normalise(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let word = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let prev_word = out.chars().last().is_some_and(word);
        if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' && chars.get(i + 1) == Some(&'\'') {
                    i += 2;
                } else if chars[i] == '\'' {
                    break;
                } else {
                    i += 1;
                }
            }
            out.push('?');
        } else if c == '$' && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            i += 1;
            while chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
            }
            out.push('?');
        } else if c.is_ascii_digit() && !prev_word {
            while chars
                .get(i + 1)
                .is_some_and(|d| d.is_ascii_digit() || *d == '.')
            {
                i += 1;
            }
            out.push('?');
        } else if c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.extend(c.to_lowercase());
        }
        i += 1;
    }
    // `true`, `false` and `NULL` are constants to the server too (`$n` in its text).
    let words: Vec<&str> = out
        .trim_end_matches([' ', ';'])
        .trim_start()
        .split_inclusive(|c: char| !word(c))
        .collect();
    words
        .iter()
        .map(|w| {
            let end = w.find(|c: char| !word(c)).unwrap_or(w.len());
            match &w[..end] {
                "true" | "false" | "null" => format!("?{}", &w[end..]),
                _ => (*w).to_owned(),
            }
        })
        .collect()
}

/// Which scenario query (or the tenant statement) a `queryid` is, learnt from its text once.
#[derive(Debug, Default)]
pub struct Matcher {
    /// Normalised text → query index (`queries.len()` for the tenant statement).
    texts: HashMap<String, usize>,
    /// Queries whose text another query of the scenario has too.
    pub ambiguous: Vec<String>,
    known: HashMap<i64, Option<usize>>,
}

impl Matcher {
    /// The matcher of `queries`, with the tenant statement as index `queries.len()`.
    pub fn new(queries: &[ServerQuery], tenant_sql: &str) -> Matcher {
        let mut m = Matcher::default();
        for (i, q) in queries.iter().enumerate() {
            if let Some(other) = m.texts.insert(normalise(&q.sql), i) {
                m.ambiguous
                    .push(format!("{} and {}", queries[other].name, q.name));
            }
        }
        m.texts.insert(normalise(tenant_sql), queries.len());
        m
    }

    /// The index a statement stands for, if any.
    pub fn index(&mut self, id: i64, text: &str) -> Option<usize> {
        *self
            .known
            .entry(id)
            .or_insert_with(|| self.texts.get(&normalise(text)).copied())
    }
}

/// Per-index run totals: each scenario query's, then the tenant statement's.
fn by_index(
    matcher: &mut Matcher,
    before: &Statements,
    after: &Statements,
    n: usize,
) -> Vec<(StatementDelta, u64)> {
    let mut out = vec![(StatementDelta::default(), 0u64); n + 1];
    for (id, totals) in after {
        let Some(i) = matcher.index(*id, &totals.text) else {
            continue;
        };
        let delta = StatementDelta::between(before.get(id), totals);
        if delta.calls > 0.0 {
            out[i].0.add(&delta);
            out[i].1 += 1;
        }
    }
    out
}

fn intern(name: String) -> &'static str {
    // Gauge names are `&'static str`; each distinct per-query name is leaked once per process.
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    names
        .entry(name)
        .or_insert_with_key(|k| Box::leak(k.clone().into_boxed_str()))
}

/// The statement statistics of the role `$1` in this database; `{view}` is the view, qualified
/// with the extension's schema.
const STATEMENTS_SQL: &str = "SELECT queryid, query, calls, total_exec_time, total_plan_time, \
     max_exec_time, max_plan_time, stddev_exec_time, rows, shared_blks_hit, shared_blks_read, \
     temp_blks_read + temp_blks_written \
     FROM {view} \
     WHERE toplevel AND queryid IS NOT NULL \
       AND userid = (SELECT oid FROM pg_roles WHERE rolname = $1) \
       AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// The schema the extension was created in, quoted: the embedded stack keeps it out of
/// `public` (`thumper_stats`), another server has it wherever its DBA put it.
async fn extension_schema(client: &Client) -> Result<String, String> {
    let row = client
        .query_opt(
            "SELECT quote_ident(n.nspname) FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'",
            &[],
        )
        .await
        .map_err(|e| crate::db::describe(&e))?;
    row.map(|r| r.get(0))
        .ok_or_else(|| "the pg_stat_statements extension is not created".to_owned())
}

/// The application role's top-level statements in this database.
pub async fn statements(client: &Client, role: &str) -> Result<Statements, String> {
    let view = format!("{}.pg_stat_statements", extension_schema(client).await?);
    let rows = client
        .query(&STATEMENTS_SQL.replace("{view}", &view), &[&role])
        .await
        .map_err(|e| crate::db::describe(&e))?;
    let f = |row: &tokio_postgres::Row, i: usize| row.get::<_, f64>(i);
    let n = |row: &tokio_postgres::Row, i: usize| row.get::<_, i64>(i) as f64;
    Ok(rows
        .iter()
        .map(|row| {
            let totals = StatementTotals {
                text: row.get::<_, Option<String>>(1).unwrap_or_default(),
                calls: n(row, 2),
                exec_ms: f(row, 3),
                plan_ms: f(row, 4),
                max_exec_ms: f(row, 5),
                max_plan_ms: f(row, 6),
                stddev_exec_ms: f(row, 7),
                rows: n(row, 8),
                blks_hit: n(row, 9),
                blks_read: n(row, 10),
                temp_blks: n(row, 11),
            };
            (row.get::<_, i64>(0), totals)
        })
        .collect())
}

/// One query's statement statistics as the server holds them since its last reset (no diff):
/// what `rls-check` shows beside its findings, the figures of the load that already ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CumulativeTime {
    /// The query's name.
    pub query: String,
    /// Calls of its statement (0: the role has not run it since the last reset).
    pub calls: u64,
    /// Mean execution time per call, µs.
    pub exec_mean_us: f64,
    /// Mean planning time per call, µs.
    pub plan_mean_us: f64,
    /// The tenant statement's mean time (tenant-scoped queries; 0 otherwise), µs.
    pub tenant_context_us: f64,
}

/// Each query's cumulative statistics for `role`, or why they cannot be read through `client`.
pub async fn cumulative(
    client: &Client,
    role: &str,
    queries: &[ServerQuery],
    tenant_sql: &str,
) -> Result<Vec<CumulativeTime>, String> {
    if let Some(why) = statements_unusable(client, role).await {
        return Err(why);
    }
    let all = statements(client, role).await?;
    let mut matcher = Matcher::new(queries, tenant_sql);
    let deltas = by_index(&mut matcher, &Statements::new(), &all, queries.len());
    let tenant_us = deltas[queries.len()].0.mean_ms() * 1e3;
    Ok(queries
        .iter()
        .zip(&deltas)
        .map(|(q, (d, _))| {
            let per_call = |v: f64| {
                if d.calls > 0.0 {
                    v / d.calls * 1e3
                } else {
                    0.0
                }
            };
            CumulativeTime {
                query: q.name.clone(),
                calls: d.calls as u64,
                exec_mean_us: per_call(d.exec_ms),
                plan_mean_us: per_call(d.plan_ms),
                tenant_context_us: if q.tenant_scoped { tenant_us } else { 0.0 },
            }
        })
        .collect())
}

/// Why the statement statistics cannot be read through `client`, if they cannot.
async fn statements_unusable(client: &Client, role: &str) -> Option<String> {
    let probe = client
        .query_one(
            "SELECT current_user::text, \
               EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'), \
               pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') \
                 OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await;
    let row = match probe {
        Ok(row) => row,
        Err(e) => {
            return Some(format!(
                "could not ask the server: {}",
                crate::db::describe(&e)
            ))
        }
    };
    let (user, created, reads_all): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if !created {
        return Some(
            "the pg_stat_statements extension is not created in the target database (load it with shared_preload_libraries = 'pg_stat_statements', restart, then CREATE EXTENSION pg_stat_statements as a superuser)".to_owned(),
        );
    }
    if user != role && !reads_all {
        return Some(format!(
            "role {user} may not read {role}'s statement statistics (GRANT pg_read_all_stats TO {user})"
        ));
    }
    match statements(client, role).await {
        Ok(_) => None,
        Err(e) if e.contains("shared_preload_libraries") => Some(
            "pg_stat_statements is not in the server's shared_preload_libraries (add it and restart PostgreSQL; thumper's embedded stack loads it unless [stack.postgres] pg_stat_statements = false)".to_owned(),
        ),
        Err(e) => Some(e),
    }
}

/// The server's side of one run: open before the load, [`Probe::finish`] after it.
pub struct Probe {
    source: ServerSource,
    client: Option<Client>,
    /// Why there is no decomposition (`None` while there can be one).
    missing: Option<String>,
    before: Statements,
    before_db: Option<DatabaseTotals>,
    before_pool: Option<PoolSnapshot>,
}

impl Probe {
    /// Connects and takes the snapshot before the load. Never fails: what is missing is kept
    /// for the notes.
    pub async fn begin(source: ServerSource) -> Probe {
        let mut probe = Probe {
            source,
            client: None,
            missing: None,
            before: Statements::new(),
            before_db: None,
            before_pool: None,
        };
        match crate::db::connect(&probe.source.stats_url, Duration::from_secs(10)).await {
            Ok(client) => {
                probe.missing = statements_unusable(&client, &probe.source.app_role).await;
                if probe.missing.is_none() {
                    match statements(&client, &probe.source.app_role).await {
                        Ok(s) => probe.before = s,
                        Err(e) => probe.missing = Some(e),
                    }
                }
                probe.before_db = database_totals(&client).await.ok();
                probe.client = Some(client);
            }
            Err(e) => probe.missing = Some(format!("could not connect to read them: {e}")),
        }
        probe.before_pool = probe.pool_snapshot().await;
        probe
    }

    async fn pool_snapshot(&self) -> Option<PoolSnapshot> {
        let url = self.source.pgbouncer_admin_url.as_ref()?;
        let client = super::pgbouncer::connect(url, Duration::from_secs(5))
            .await
            .ok()?;
        super::pgbouncer::snapshot(&client, self.source.pgbouncer_database.as_deref())
            .await
            .ok()
    }

    /// The once-a-second sampler beside the load (stopped by `stop`); it returns the wait
    /// counts for the report.
    pub fn sample(
        &self,
        start: Instant,
        samples: &Samples,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<Vec<WaitCount>> {
        let sampler = Sampler {
            url: self.source.stats_url.clone(),
            role: self.source.app_role.clone(),
            matcher: self
                .missing
                .is_none()
                .then(|| Matcher::new(&self.source.queries, &self.source.tenant_sql)),
            names: self.source.queries.iter().map(|q| q.name.clone()).collect(),
            tenant_scoped: self
                .source
                .queries
                .iter()
                .map(|q| q.tenant_scoped)
                .collect(),
        };
        tokio::spawn(sampler.run(start, samples.clone(), stop.clone()))
    }

    /// The snapshot after the load, diffed with the one before: the per-query metrics to add
    /// to the run's, the breakdown for the reports, and the notes.
    pub async fn finish(
        self,
        metrics: &BTreeMap<String, Metric>,
        waits: Vec<WaitCount>,
    ) -> (
        BTreeMap<String, Metric>,
        Option<ServerBreakdown>,
        Vec<String>,
    ) {
        let mut notes = Vec::new();
        let mut breakdown = ServerBreakdown::default();
        let (samples, waits) = split_sample_count(waits);
        breakdown.samples = samples;
        breakdown.waits = waits;
        if let (Some(client), Some(before)) = (&self.client, &self.before_db) {
            if let Ok(after) = database_totals(client).await {
                breakdown.database = after.minus(before);
            }
        }
        if let (Some(before), Some(after)) = (&self.before_pool, self.pool_snapshot().await) {
            let xacts = after.total_xact_count - before.total_xact_count;
            if xacts > 0.0 {
                breakdown.pgbouncer_wait_us =
                    Some((after.total_wait_time_us - before.total_wait_time_us).max(0.0) / xacts);
            }
        }
        let after = match (&self.missing, &self.client) {
            (None, Some(client)) => statements(client, &self.source.app_role)
                .await
                .map_err(|e| format!("reading them after the run failed: {e}")),
            (Some(why), _) => Err(why.clone()),
            (None, None) => Err("no connection".to_owned()),
        };
        let after = match after {
            Ok(after) => after,
            Err(why) => {
                notes.push(format!(
                    "no server-side decomposition (server time per query): {why}. The wait events and database counters are still sampled when the server answers"
                ));
                return (BTreeMap::new(), Some(breakdown), notes);
            }
        };
        let mut matcher = Matcher::new(&self.source.queries, &self.source.tenant_sql);
        for pair in &matcher.ambiguous {
            notes.push(format!(
                "queries {pair} are the same statement to the server: their server statistics are counted together"
            ));
        }
        let n = self.source.queries.len();
        let deltas = by_index(&mut matcher, &self.before, &after, n);
        let (rows, extra) = self.rows(metrics, &deltas, breakdown.pgbouncer_wait_us);
        notes.extend(call_notes(&rows, &self.source));
        breakdown.queries = rows;
        (extra, Some(breakdown), notes)
    }

    /// The per-query rows and metrics from the run's statement totals.
    fn rows(
        &self,
        metrics: &BTreeMap<String, Metric>,
        deltas: &[(StatementDelta, u64)],
        pgbouncer_wait_us: Option<f64>,
    ) -> (Vec<QueryServerTime>, BTreeMap<String, Metric>) {
        let n = self.source.queries.len();
        let tenant = &deltas[n].0;
        let mut extra = BTreeMap::new();
        let mut rows = Vec::new();
        for (q, (d, statements)) in self.source.queries.iter().zip(deltas) {
            let client = match metrics.get(&format!(
                "query_duration{{query:{},expected_response:true}}",
                q.name
            )) {
                Some(Metric::Trend(t)) => t.clone(),
                _ => TrendStats::default(),
            };
            let per_call = |v: f64| if d.calls > 0.0 { v / d.calls } else { 0.0 };
            let tenant_us = if q.tenant_scoped {
                tenant.mean_ms() * 1e3
            } else {
                0.0
            };
            let server_us = d.mean_ms() * 1e3 + tenant_us;
            let wait_us = pgbouncer_wait_us.unwrap_or(0.0);
            let row = QueryServerTime {
                query: q.name.clone(),
                client_calls: client.count,
                client_p50_us: client.p50_us as f64,
                client_mean_us: client.mean_us,
                client_p99_us: client.p99_us as f64,
                server_calls: d.calls as u64,
                statements: *statements,
                exec_mean_us: per_call(d.exec_ms) * 1e3,
                exec_stddev_us: per_call(d.m2).sqrt() * 1e3,
                exec_max_us: d.max_exec_ms.map(|m| m * 1e3),
                plan_mean_us: per_call(d.plan_ms) * 1e3,
                tenant_context_us: tenant_us,
                server_us,
                pgbouncer_wait_us: wait_us,
                remainder_us: (client.mean_us - server_us - wait_us).max(0.0),
                rows_per_call: per_call(d.rows),
                blocks_hit_per_call: per_call(d.blks_hit),
                blocks_read_per_call: per_call(d.blks_read),
                temp_blocks_per_call: per_call(d.temp_blks),
            };
            if d.calls > 0.0 {
                let max_ms = d.max_exec_ms.unwrap_or(0.0) + d.max_plan_ms;
                let statistic = TrendStats {
                    count: d.calls as u64,
                    mean_us: server_us,
                    max_us: (max_ms * 1e3 + tenant_us).round() as u64,
                    unit: "us".to_owned(),
                    ..TrendStats::default()
                };
                let gauge = |v: f64| {
                    let mut g = None;
                    GaugeStats::record(&mut g, v);
                    Metric::Gauge(g.unwrap_or_default())
                };
                let key = |m: &str| format!("{m}{{query:{}}}", q.name);
                extra.insert(key("server_time"), Metric::Trend(statistic));
                extra.insert(key("server_rows"), gauge(row.rows_per_call));
                extra.insert(key("server_blocks_read"), gauge(row.blocks_read_per_call));
            }
            rows.push(row);
        }
        (rows, extra)
    }
}

/// The sampler's first entry carries its sample count (see [`Sampler::run`]).
fn split_sample_count(mut waits: Vec<WaitCount>) -> (u64, Vec<WaitCount>) {
    match waits.first() {
        Some(w) if w.wait_event_type.is_empty() => {
            let n = w.samples;
            waits.remove(0);
            (n, waits)
        }
        _ => (0, waits),
    }
}

/// Where the server's count of a query differs from thumper's, and why that can be.
fn call_notes(rows: &[QueryServerTime], source: &ServerSource) -> Vec<String> {
    let role = &source.app_role;
    let mut notes = Vec::new();
    for (r, q) in rows.iter().zip(&source.queries) {
        if r.server_calls == r.client_calls {
            continue;
        }
        let control = normalise(&q.sql);
        if r.server_calls < r.client_calls
            && ["begin", "end", "commit", "rollback", "start transaction"]
                .contains(&control.as_str())
        {
            notes.push(format!(
                "query {}: the server counted {} calls, thumper {}: PostgreSQL 15's pg_stat_statements counts a transaction-control statement sent as a named prepared statement (protocol prepared) once per connection",
                r.query, r.server_calls, r.client_calls
            ));
            continue;
        }
        notes.push(if r.server_calls == 0 {
            format!(
                "query {}: the server has no statements of role {role} with its text in this run (a pooler logging in as another role, or pg_stat_statements.max evicting them); its server time is missing",
                r.query
            )
        } else {
            format!(
                "query {}: the server counted {} calls, thumper {} successful ones (another client of role {role} running the same statement, or entries evicted by pg_stat_statements.max)",
                r.query, r.server_calls, r.client_calls
            )
        });
    }
    notes
}

async fn database_totals(client: &Client) -> Result<DatabaseTotals, String> {
    let row = client
        .query_one(
            "SELECT xact_commit::float8, xact_rollback::float8, deadlocks::float8, \
               temp_bytes::float8, blks_read::float8 \
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| crate::db::describe(&e))?;
    Ok(DatabaseTotals {
        commits: row.get(0),
        rollbacks: row.get(1),
        deadlocks: row.get(2),
        temp_bytes: row.get(3),
        blocks_read: row.get(4),
    })
}

/// The once-a-second reader of the server's activity.
struct Sampler {
    url: String,
    role: String,
    /// With readable statement statistics: each query's server time per second too.
    matcher: Option<Matcher>,
    names: Vec<String>,
    tenant_scoped: Vec<bool>,
}

/// Busy backends of the role, by wait event (the sampler's own connection left out).
const ACTIVITY_SQL: &str =
    "SELECT coalesce(wait_event_type, 'Running'), coalesce(wait_event, ''), \
       count(*) \
     FROM pg_stat_activity \
     WHERE usename = $1 AND datname = current_database() AND state <> 'idle' \
       AND pid <> pg_backend_pid() \
     GROUP BY 1, 2";

impl Sampler {
    /// Samples until `stop`. The result's first entry (an empty type) carries the number of
    /// samples taken, the others the counts by wait event.
    async fn run(
        mut self,
        start: Instant,
        samples: Samples,
        stop: CancellationToken,
    ) -> Vec<WaitCount> {
        let mut recorder = Recorder::new(start, samples);
        let mut tally: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut taken = 0u64;
        let mut client: Option<Client> = None;
        let mut prev_db: Option<(Instant, DatabaseTotals)> = None;
        let mut first_db: Option<DatabaseTotals> = None;
        let mut prev_statements: Option<Statements> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = crate::db::connect(&self.url, Duration::from_secs(2))
                    .await
                    .ok();
                prev_db = None;
                prev_statements = None;
            }
            let Some(c) = &client else { continue };
            let now = Instant::now();
            let Ok(Ok(rows)) =
                tokio::time::timeout(Duration::from_secs(2), c.query(ACTIVITY_SQL, &[&self.role]))
                    .await
            else {
                client = None;
                continue;
            };
            taken += 1;
            let mut by_type: HashMap<String, f64> = HashMap::new();
            for row in &rows {
                let (kind, event, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
                *by_type.entry(kind.clone()).or_default() += n as f64;
                *tally.entry((kind, event)).or_default() += n as u64;
            }
            let busy: f64 = by_type.values().sum();
            recorder.push(
                now,
                SampleKind::Gauge {
                    name: "server_active_backends",
                    value: busy,
                },
            );
            for (kind, name) in WAIT_TYPES {
                let value = by_type.get(kind).copied().unwrap_or(0.0);
                recorder.push(now, SampleKind::Gauge { name, value });
            }
            if let Ok(db) = database_totals(c).await {
                let first = first_db.get_or_insert_with(|| db.clone());
                let run = db.minus(first);
                recorder.push(
                    now,
                    SampleKind::Gauge {
                        name: "server_deadlocks",
                        value: run.deadlocks,
                    },
                );
                if let Some((t, p)) = &prev_db {
                    for (name, value) in database_rates(p, &db, (now - *t).as_secs_f64()) {
                        recorder.push(now, SampleKind::Gauge { name, value });
                    }
                }
                prev_db = Some((now, db));
            }
            prev_statements = self
                .statements_tick(c, prev_statements, now, &mut recorder)
                .await;
        }
        let mut out = vec![WaitCount {
            samples: taken,
            ..Default::default()
        }];
        let mut counted: Vec<WaitCount> = tally
            .into_iter()
            .map(|((wait_event_type, wait_event), samples)| WaitCount {
                wait_event_type,
                wait_event,
                samples,
            })
            .collect();
        counted.sort_by_key(|w| std::cmp::Reverse(w.samples));
        out.extend(counted);
        out
    }
}

impl Sampler {
    /// Each query's server time in the last second, from the statements read a second ago;
    /// returns this second's reading for the next.
    async fn statements_tick(
        &mut self,
        c: &Client,
        prev: Option<Statements>,
        now: Instant,
        recorder: &mut Recorder,
    ) -> Option<Statements> {
        let matcher = self.matcher.as_mut()?;
        let cur = statements(c, &self.role).await.ok()?;
        if let Some(prev) = &prev {
            let d = by_index(matcher, prev, &cur, self.names.len());
            for (name, value) in per_second(&self.names, &self.tenant_scoped, &d) {
                recorder.push(now, SampleKind::Gauge { name, value });
            }
        }
        Some(cur)
    }
}

/// `pg_stat_database`'s rates between two readings `dt` seconds apart.
fn database_rates(a: &DatabaseTotals, b: &DatabaseTotals, dt: f64) -> Vec<(&'static str, f64)> {
    let d = b.minus(a);
    let per_s = |v: f64| if dt > 0.0 { v / dt } else { 0.0 };
    vec![
        ("server_commits_per_s", per_s(d.commits)),
        ("server_rollbacks_per_s", per_s(d.rollbacks)),
        ("server_blocks_read_per_s", per_s(d.blocks_read)),
        ("server_temp_bytes_per_s", per_s(d.temp_bytes)),
    ]
}

/// Each query's server time (µs), rows and blocks read per call within one second.
fn per_second(
    names: &[String],
    tenant_scoped: &[bool],
    d: &[(StatementDelta, u64)],
) -> Vec<(&'static str, f64)> {
    let tenant_ms = d[names.len()].0.mean_ms();
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let q = &d[i].0;
        if q.calls == 0.0 {
            continue;
        }
        let tenant = if tenant_scoped[i] { tenant_ms } else { 0.0 };
        let key = |m: &str| intern(format!("{m}{{query:{name}}}"));
        out.push((key("server_time"), (q.mean_ms() + tenant) * 1e3));
        out.push((key("server_rows"), q.rows / q.calls));
        out.push((key("server_blocks_read"), q.blks_read / q.calls));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_text_and_the_servers_meet_when_normalised() {
        assert_eq!(normalise("SELECT 1"), normalise("SELECT $1"));
        assert_eq!(
            normalise("SELECT pg_sleep(0.005);"),
            normalise("select  pg_sleep($1)")
        );
        assert_eq!(
            normalise("SELECT set_tenant_context('0f0e...'::uuid, false)"),
            normalise("SELECT set_tenant_context($1::uuid, $2)")
        );
        assert_ne!(normalise("SELECT falsehood"), normalise("SELECT $1"));
        assert_eq!(
            normalise("SELECT a FROM t1 WHERE x = 'it''s'\n  AND y = $2"),
            "select a from t1 where x = ? and y = ?"
        );
        assert_ne!(normalise("SELECT a FROM t1"), normalise("SELECT a FROM t2"));
    }

    fn totals(calls: f64, times: &[f64]) -> StatementTotals {
        let exec: f64 = times.iter().sum();
        let mean = exec / calls;
        let var = times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / calls;
        StatementTotals {
            calls,
            exec_ms: exec,
            stddev_exec_ms: var.sqrt(),
            max_exec_ms: times.iter().cloned().fold(0.0, f64::max),
            ..Default::default()
        }
    }

    #[test]
    fn the_runs_spread_comes_from_two_cumulative_snapshots() {
        let earlier = [1.0, 2.0, 3.0];
        let run = [10.0, 12.0, 14.0, 16.0];
        let all: Vec<f64> = earlier.iter().chain(&run).cloned().collect();
        let d = StatementDelta::between(Some(&totals(3.0, &earlier)), &totals(7.0, &all));
        assert_eq!(d.calls, 4.0);
        let stddev = (d.m2 / d.calls).sqrt();
        assert!((stddev - 5f64.sqrt()).abs() < 1e-9, "{stddev}");
        assert_eq!(d.max_exec_ms, Some(16.0));
        // A maximum that did not grow in the run is not the run's.
        let d = StatementDelta::between(Some(&totals(1.0, &[50.0])), &totals(2.0, &[50.0, 1.0]));
        assert_eq!(d.max_exec_ms, None);
    }
}
