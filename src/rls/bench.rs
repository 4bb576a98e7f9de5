//! `thumper rls-bench`: what row-level security costs per tenant-scoped statement as the
//! profiles table grows.
//!
//! For each table size the embedded stack is seeded with the existing seeder (100 profiles per
//! community, so a tenant's rows stay the same and only the table grows), and three queries
//! (`tenant`: a tenant's first profiles by wallet, `lookup`: one profile by community and
//! wallet, `write`: an audit row inserted) are measured each way:
//!
//! - `rls`: as `arrakis_app` under the shipped policies, the tenant set transaction-locally;
//! - `bypass`: the baseline, as a role with `BYPASSRLS` and the tenant filter written in the SQL,
//!   in the same transaction shape (so the only difference is the policy);
//! - `seed-or` (`--seed-or`): the reads on a copy of `profiles` under the seed's single policy
//!   `community_id = tenant OR is_admin`.
//!
//! Each way gets two measurements: latency at a fixed arrival rate (the open-model executor,
//! latency from the scheduled start), and server time from `EXPLAIN (ANALYZE, BUFFERS, TIMING
//! OFF)` per statement (planning + execution, a 10 % trimmed mean) with the shared buffers it
//! touched. The RLS overhead is the server-time difference to the baseline, in µs and %.
//!
//! Both roles connect to PostgreSQL directly, not through PgBouncer: the pooler adds the same
//! cost to both and its noise would swamp microseconds (the bypass role is not in PgBouncer's
//! auth file either). Everything lands in one [`Summary`]: latency as
//! `query_duration{query:QUERY/SIZE/WAY}` (so the per-query tables of every report show it),
//! the rest as gauges (`rls_server_us`, `rls_buffers`, `rls_overhead_us`, `rls_overhead_pct`,
//! `rls_latency_overhead_us`), the overhead against table size as curves, and thresholds on
//! any of them through the ordinary gate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::dataset::DatasetSpec;
use crate::gate::{self, MetricKind, Threshold};
use crate::metrics::server::ServerBreakdown;
use crate::metrics::summary::{
    CounterStats, Curve, Ending, GaugeStats, Metric, ScenarioInfo, Summary,
};
use crate::run::{self, RunError, RunResult};
use crate::stack::{Stack, StackOptions};

/// Profiles per community in every size: a tenant's rows stay fixed while the table grows.
const PROFILES_PER_COMMUNITY: u32 = 100;
/// The baseline role: `BYPASSRLS`, created on the embedded stack.
const BYPASS_ROLE: &str = "thumper_bench_bypass";
/// The copy of `profiles` under the seed's policy.
const SEED_OR_TABLE: &str = "rls_bench_profiles_seed_or";
const QUERIES: [&str; 3] = ["tenant", "lookup", "write"];

/// One way of running the queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// As the application role under the shipped policies.
    Rls,
    /// As a `BYPASSRLS` role with the tenant filter in the SQL: the baseline.
    Bypass,
    /// On a copy of `profiles` under the seed's `tenant OR admin` policy.
    SeedOr,
}

impl Way {
    /// The way's name in metric tags and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Rls => "rls",
            Way::Bypass => "bypass",
            Way::SeedOr => "seed-or",
        }
    }
}

/// What `thumper rls-bench` measures, from the command line.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Profile counts, ascending.
    pub sizes: Vec<u64>,
    /// Arrival rate of the latency phase, iterations per second over the three queries (the
    /// `seed-or` way, with two, runs at two thirds of it).
    pub rate: u32,
    /// Length of each latency phase.
    pub duration: Duration,
    /// `EXPLAIN ANALYZE` samples per query and way (a tenth of it for `seed-or`).
    pub samples: u32,
    /// Also measure the `seed-or` way (`--seed-or`).
    pub seed_or: bool,
    /// Thresholds on the `rls_*` gauges.
    pub thresholds: Vec<Threshold>,
    /// Folder the summary and reports are written to.
    pub report_dir: PathBuf,
    /// File the Markdown summary is also appended to.
    pub summary_md: Option<PathBuf>,
    /// Print no progress.
    pub quiet: bool,
}

/// `10k` → 10,000; `1m` → 1,000,000; plain numbers as they are. At least 1,000 and a multiple
/// of 100 (the profiles per community).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, factor) = match t.strip_suffix('k') {
        Some(d) => (d, 1_000),
        None => match t.strip_suffix('m') {
            Some(d) => (d, 1_000_000),
            None => (t.as_str(), 1),
        },
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("size \"{text}\": expected a number of profiles such as 10k, 100k, 1m or 250000")
    })?;
    let n = n * factor;
    if n < 1_000 || !n.is_multiple_of(u64::from(PROFILES_PER_COMMUNITY)) || n > 100_000_000 {
        return Err(format!(
            "size \"{text}\": must be between 1k and 100m profiles and a multiple of {PROFILES_PER_COMMUNITY} (profiles per community)"
        ));
    }
    Ok(n)
}

/// `--sizes 10k,100k,1m` → ascending, distinct sizes.
pub fn parse_sizes(text: &str) -> Result<Vec<u64>, String> {
    let mut sizes = text
        .split(',')
        .map(parse_size)
        .collect::<Result<Vec<_>, _>>()?;
    sizes.sort_unstable();
    if sizes.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("--sizes {text}: a size is given twice"));
    }
    Ok(sizes)
}

/// 10000 → `10k`, 1000000 → `1m`, 2500 → `2500`.
pub fn size_label(n: u64) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// The metrics of a bench, with their kinds (also listed in the gate's `KNOWN_METRICS`).
pub const METRICS: [(&str, MetricKind); 5] = [
    ("rls_server_us", MetricKind::Gauge),
    ("rls_buffers", MetricKind::Gauge),
    ("rls_overhead_us", MetricKind::Gauge),
    ("rls_overhead_pct", MetricKind::Gauge),
    ("rls_latency_overhead_us", MetricKind::Gauge),
];

/// Parses `--threshold 'METRIC{tags}: EXPR'` (k6's expression syntax) and checks the tags name
/// a query, size and way of this bench. Tags come out in the order `query`, `size`, `policy`.
pub fn parse_threshold(text: &str, sizes: &[u64], seed_or: bool) -> Result<Threshold, String> {
    let (metric, expression) = text.rsplit_once(':').filter(|(m, _)| !m.is_empty()).ok_or_else(|| {
        format!("--threshold \"{text}\": expected METRIC: EXPRESSION, e.g. \"rls_overhead_pct{{query:lookup}}: max < 20\"")
    })?;
    let (name, _) = gate::split_metric_key(metric).map_err(|e| format!("--threshold: {e}"))?;
    let kind = gate::metric_kind(&name)
        .ok_or_else(|| format!("--threshold \"{text}\": unknown metric `{name}`"))?;
    let (aggregation, op, value) = gate::parse_expression(expression, kind)
        .map_err(|e| format!("--threshold \"{text}\": {e}"))?;
    let ways: Vec<&str> = if seed_or {
        vec!["rls", "bypass", "seed-or"]
    } else {
        vec!["rls", "bypass"]
    };
    let labels: Vec<String> = sizes.iter().map(|s| size_label(*s)).collect();
    let mut tags: BTreeMap<usize, String> = BTreeMap::new();
    if let Some((_, rest)) = metric.split_once('{') {
        for tag in rest.trim_end().trim_end_matches('}').split(',') {
            let (k, v) = tag.split_once(':').unwrap_or((tag, ""));
            let (k, v) = (k.trim(), v.trim());
            let (rank, known): (usize, Vec<String>) = match (k, name.as_str()) {
                ("query", "query_duration" | "query_errors" | "server_time") => {
                    let mut names = Vec::new();
                    for s in &labels {
                        for q in QUERIES {
                            for w in &ways {
                                names.push(format!("{q}/{s}/{w}"));
                            }
                        }
                    }
                    (0, names)
                }
                ("query", _) => (0, QUERIES.iter().map(|q| q.to_string()).collect()),
                ("size", _) => (1, labels.clone()),
                ("policy", _) => (2, ways.iter().map(|w| w.to_string()).collect()),
                _ => {
                    return Err(format!(
                        "--threshold \"{text}\": unknown tag `{k}`; rls-bench metrics take query, size and policy"
                    ))
                }
            };
            if !known.iter().any(|n| n == v) {
                return Err(format!(
                    "--threshold \"{text}\": {k} `{v}` is not measured; expected one of {}",
                    known.join(", ")
                ));
            }
            tags.insert(rank, format!("{k}:{v}"));
        }
    }
    let key = if tags.is_empty() {
        name
    } else {
        format!(
            "{name}{{{}}}",
            tags.into_values().collect::<Vec<_>>().join(",")
        )
    };
    Ok(Threshold {
        metric: key,
        expression: expression.trim().to_owned(),
        aggregation,
        op,
        value,
        abort_on_fail: false,
        delay_abort_eval: Duration::ZERO,
    })
}

/// Thresholds used when none is given: isolation holds and nothing failed.
pub fn default_thresholds() -> Vec<Threshold> {
    ["tenant_violations: count == 0", "query_errors: count == 0"]
        .iter()
        .map(|t| parse_threshold(t, &[], false).expect("valid default threshold"))
        .collect()
}

/// One query of the bench, as a way runs it.
struct BenchQuery {
    name: &'static str,
    sql: String,
    /// `$1` is the community id, `$2` (when present) the wallet.
    wallet: bool,
}

fn queries(way: Way) -> Vec<BenchQuery> {
    let table = if way == Way::SeedOr {
        SEED_OR_TABLE
    } else {
        "profiles"
    };
    let tenant_filter = if way == Way::Bypass {
        "WHERE community_id = $1 "
    } else {
        ""
    };
    let mut q = vec![
        BenchQuery {
            name: "tenant",
            sql: format!(
                "SELECT community_id, wallet_address, discord_user_id FROM {table} {tenant_filter}ORDER BY wallet_address LIMIT 10"
            ),
            wallet: false,
        },
        BenchQuery {
            name: "lookup",
            sql: format!(
                "SELECT community_id, id, discord_user_id FROM {table} WHERE community_id = $1 AND wallet_address = $2"
            ),
            wallet: true,
        },
    ];
    if way != Way::SeedOr {
        q.push(BenchQuery {
            name: "write",
            sql: "INSERT INTO audit_logs (community_id, actor, action) VALUES ($1, 'thumper', 'bench.write') RETURNING community_id".to_owned(),
            wallet: false,
        });
    }
    q
}

/// The latency phase as a scenario: constant arrival rate, each query tenant-scoped.
fn scenario_text(way: Way, opts: &BenchOptions, spec: &DatasetSpec) -> String {
    // Every query gets the same share of the rate whichever way runs fewer of them.
    let rate = (u64::from(opts.rate) * queries(way).len() as u64 / QUERIES.len() as u64).max(1);
    let mut s = format!(
        "name = \"rls-bench\"\nexecutor = \"constant-arrival-rate\"\nrate = {}\ntime_unit = \"1s\"\n\
         duration = \"{}ms\"\npre_allocated_vus = 8\nmax_vus = 32\nprotocol = \"extended\"\n\
         [dataset]\nseed = {}\ncommunities = {}\nprofiles_per_community = {}\n",
        rate,
        opts.duration.as_millis(),
        spec.seed,
        spec.communities,
        spec.profiles_per_community
    );
    for q in queries(way) {
        debug_assert!(!q.sql.contains('"'));
        let params = if way == Way::Bypass || q.name != "tenant" {
            if q.wallet {
                "[\"community_id\", \"wallet\"]"
            } else {
                "[\"community_id\"]"
            }
        } else {
            "[]"
        };
        let _ = write!(
            s,
            "[[queries]]\nname = \"{}\"\nsql = \"{}\"\nparams = {params}\ntenant_scoped = true\n",
            q.name, q.sql
        );
    }
    s
}

fn spec_for(size: u64) -> DatasetSpec {
    DatasetSpec {
        communities: u32::try_from(size / u64::from(PROFILES_PER_COMMUNITY)).unwrap_or(u32::MAX),
        profiles_per_community: PROFILES_PER_COMMUNITY,
        ..DatasetSpec::default()
    }
}

/// Server-side cost of one statement: time and buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerSample {
    /// Planning time, in milliseconds.
    pub planning_ms: f64,
    /// Execution time, in milliseconds.
    pub execution_ms: f64,
    /// Shared buffers hit and read by the plan's root.
    pub buffers: f64,
}

/// Planning and execution time and the shared buffers (hit + read) of the plan's root, from
/// `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` output.
pub fn server_sample(explain: &serde_json::Value) -> Option<ServerSample> {
    let top = explain.as_array()?.first()?;
    let plan = top.get("Plan")?;
    let f = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    Some(ServerSample {
        planning_ms: f(top, "Planning Time").unwrap_or(0.0),
        execution_ms: f(top, "Execution Time")?,
        buffers: f(plan, "Shared Hit Blocks").unwrap_or(0.0)
            + f(plan, "Shared Read Blocks").unwrap_or(0.0),
    })
}

/// Mean of the middle 80 %.
pub fn trimmed_mean(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let cut = values.len() / 10;
    let kept = &values[cut..values.len() - cut];
    kept.iter().sum::<f64>() / kept.len() as f64
}

fn push_gauge(metrics: &mut BTreeMap<String, Metric>, key: String, value: f64) {
    if !value.is_finite() {
        return;
    }
    let mut stats = match metrics.remove(&key) {
        Some(Metric::Gauge(g)) => Some(g),
        _ => None,
    };
    GaugeStats::record(&mut stats, value);
    if let Some(g) = stats {
        metrics.insert(key, Metric::Gauge(g));
    }
}

fn add_counter(metrics: &mut BTreeMap<String, Metric>, key: &str, c: &CounterStats) {
    let entry = metrics
        .entry(key.to_owned())
        .or_insert_with(|| Metric::Counter(CounterStats::default()));
    if let Metric::Counter(total) = entry {
        total.count += c.count;
        for (class, n) in &c.by_class {
            *total.by_class.entry(class.clone()).or_default() += n;
        }
    }
}

/// `postgres://user:pw@pgbouncer/db` with the host, port and database of `direct`.
fn direct_url(app: &str, direct: &str) -> String {
    match (app.rsplit_once('@'), direct.rsplit_once('@')) {
        (Some((creds, _)), Some((_, endpoint))) => format!("{creds}@{endpoint}"),
        _ => app.to_owned(),
    }
}

async fn connect(url: &str) -> Result<Client, RunError> {
    crate::db::connect(url, std::time::Duration::from_secs(15))
        .await
        .map_err(|e| RunError::Failed(e.to_string()))
}

fn failed(what: &str) -> impl Fn(tokio_postgres::Error) -> RunError + '_ {
    move |e| RunError::Failed(format!("{what}: {}", crate::workload::describe(&e)))
}

/// Creates the baseline role (superuser) and grants it what the queries read and write (owner).
async fn create_bypass_role(stack: &Stack, password: &str) -> Result<(), RunError> {
    let su = connect(&stack.superuser_url()).await?;
    su.batch_execute(&format!(
        "SET password_encryption = 'md5'; \
         CREATE ROLE {BYPASS_ROLE} LOGIN BYPASSRLS PASSWORD '{password}'; \
         GRANT CONNECT ON DATABASE arrakis TO {BYPASS_ROLE};"
    ))
    .await
    .map_err(failed("creating the BYPASSRLS baseline role"))?;
    let owner = connect(&stack.urls().admin_database_url).await?;
    owner
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA public TO {BYPASS_ROLE}; \
             GRANT SELECT ON communities, profiles TO {BYPASS_ROLE}; \
             GRANT SELECT, INSERT ON audit_logs TO {BYPASS_ROLE};"
        ))
        .await
        .map_err(failed("granting the baseline role its privileges"))
}

/// (Re)builds the copy of `profiles` under the seed's single `tenant OR admin` policy.
async fn build_seed_or_copy(admin_url: &str) -> Result<(), RunError> {
    let owner = connect(admin_url).await?;
    owner
        .batch_execute(&format!(
            "BEGIN;
             SELECT set_tenant_context(NULL, true);
             DROP TABLE IF EXISTS {SEED_OR_TABLE};
             CREATE TABLE {SEED_OR_TABLE} (LIKE profiles INCLUDING ALL);
             INSERT INTO {SEED_OR_TABLE} SELECT * FROM profiles;
             ALTER TABLE {SEED_OR_TABLE} ENABLE ROW LEVEL SECURITY;
             ALTER TABLE {SEED_OR_TABLE} FORCE ROW LEVEL SECURITY;
             CREATE POLICY tenant_isolation ON {SEED_OR_TABLE} FOR ALL TO PUBLIC
                 USING (community_id = (SELECT app_current_tenant()) OR (SELECT app_is_admin()))
                 WITH CHECK (community_id = (SELECT app_current_tenant()) OR (SELECT app_is_admin()));
             GRANT SELECT ON {SEED_OR_TABLE} TO arrakis_app;
             COMMIT;
             ANALYZE {SEED_OR_TABLE};"
        ))
        .await
        .map_err(failed("building the copy of profiles under the seed's policy"))
}

/// `EXPLAIN ANALYZE` samples of every query of a way, each in its own rolled-back transaction
/// with the tenant set; random tenants and profiles.
async fn server_phase(
    url: &str,
    way: Way,
    spec: &DatasetSpec,
    samples: u32,
) -> Result<BTreeMap<&'static str, Vec<ServerSample>>, RunError> {
    let client = connect(url).await?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(u64::from(spec.communities));
    let mut out = BTreeMap::new();
    for q in queries(way) {
        let sql = format!(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {}",
            q.sql
        );
        let mut got = Vec::with_capacity(samples as usize);
        // One unmeasured execution first: plans of the functions and catalog caches warm up.
        for i in 0..=samples {
            let c = rng.random_range(0..spec.communities);
            let p = rng.random_range(0..spec.profiles_per_community);
            let community = spec.community_id(c);
            let wallet = spec.wallet(c, p);
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT set_tenant_context('{community}'::uuid, false)"
                ))
                .await
                .map_err(failed("setting the tenant"))?;
            let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::new();
            if way == Way::Bypass || q.name != "tenant" {
                params.push((&community, Type::UUID));
            }
            if q.wallet {
                params.push((&wallet, Type::TEXT));
            }
            let rows = client.query_typed(&sql, &params).await;
            let _ = client.batch_execute("ROLLBACK").await;
            let rows = rows.map_err(|e| {
                RunError::Failed(format!(
                    "EXPLAIN ANALYZE of {}/{}: {}",
                    q.name,
                    way.as_str(),
                    crate::workload::describe(&e)
                ))
            })?;
            let plan: serde_json::Value = rows
                .first()
                .and_then(|r| r.try_get(0).ok())
                .unwrap_or_default();
            let sample = server_sample(&plan).ok_or_else(|| {
                RunError::Failed(format!(
                    "EXPLAIN ANALYZE of {}: no timing in the plan",
                    q.name
                ))
            })?;
            if i > 0 {
                got.push(sample);
            }
        }
        out.insert(q.name, got);
    }
    Ok(out)
}

/// Curve name → series name → points (log10 of the size, µs).
type Curves = BTreeMap<&'static str, BTreeMap<String, Vec<(f64, f64)>>>;

/// One way at one size: latency trends and counters, server time and buffers per query.
struct WayResult {
    latency_p50_us: BTreeMap<&'static str, f64>,
    server_us: BTreeMap<&'static str, f64>,
    /// `pg_stat_statements` over the latency phase: execution + planning µs per call, calls.
    stat_us: BTreeMap<&'static str, (f64, u64)>,
    /// The phase's decomposition, its rows named `QUERY/SIZE/WAY`.
    server: Option<ServerBreakdown>,
    /// The phase's notes on the server's statistics (why they are missing, call mismatches).
    server_notes: Vec<String>,
    /// The latency phase's planned length, in seconds.
    planned_s: f64,
}

/// Runs the bench on an embedded stack and returns its summary and report folder.
pub async fn run(opts: &BenchOptions, interrupt: CancellationToken) -> Result<RunResult, RunError> {
    // Bad output paths are bad input before the stack starts and seeds up to 1M rows.
    run::check_report_paths(&opts.report_dir, opts.summary_md.as_deref())?;
    eprintln!("thumper: starting PostgreSQL + PgBouncer ...");
    let stack = Stack::start(&StackOptions {
        migrations_dir: run::default_migrations_dir(),
        ..StackOptions::default()
    })
    .await
    .map_err(|e| RunError::Failed(format!("the embedded stack did not start: {e}")))?;
    let result = run_on_stack(&stack, opts, interrupt).await;
    if let Err(e) = stack.stop().await {
        eprintln!("thumper: stopping the embedded stack: {e}");
    }
    result
}

async fn run_on_stack(
    stack: &Stack,
    opts: &BenchOptions,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let password = uuid::Uuid::new_v4().simple().to_string();
    create_bypass_role(stack, &password).await?;
    let urls = stack.urls();
    let rls_url = direct_url(&urls.database_url, &urls.admin_database_url);
    let bypass_url = direct_url(
        &format!("postgres://{BYPASS_ROLE}:{password}@x"),
        &urls.admin_database_url,
    );
    let mut ways = vec![Way::Bypass, Way::Rls];
    if opts.seed_or {
        ways.push(Way::SeedOr);
    }

    let mut metrics: BTreeMap<String, Metric> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut curves = Curves::new();
    let mut server: Option<ServerBreakdown> = None;
    let mut planned_s = 0.0;
    'sizes: for &size in &opts.sizes {
        let label = size_label(size);
        let spec = spec_for(size);
        let seeding = Instant::now();
        if !opts.quiet {
            eprintln!("thumper: seeding {label} profiles ...");
        }
        crate::dataset::seed::seed(&urls.admin_database_url, &spec)
            .await
            .map_err(|e| RunError::Failed(format!("seeding {label} profiles: {e}")))?;
        if opts.seed_or {
            build_seed_or_copy(&urls.admin_database_url).await?;
        }
        tracing::info!(elapsed = ?seeding.elapsed(), size = %label, "dataset ready");
        let mut results: BTreeMap<&str, WayResult> = BTreeMap::new();
        for &way in &ways {
            if interrupt.is_cancelled() {
                break 'sizes;
            }
            if !opts.quiet {
                eprintln!("thumper: {label} profiles, {}: measuring ...", way.as_str());
            }
            let url = if way == Way::Bypass {
                &bypass_url
            } else {
                &rls_url
            };
            let Some(result) =
                measure_way(url, way, opts, &spec, &label, &mut metrics, &interrupt).await?
            else {
                break 'sizes;
            };
            planned_s += result.planned_s;
            merge_server(&mut server, &mut notes, &result);
            results.insert(way.as_str(), result);
        }
        record_overheads(&results, size, &mut metrics, &mut curves, &mut notes);
    }

    let interrupted = interrupt.is_cancelled();
    let measured = Measured {
        rls_url: &rls_url,
        started,
        started_at,
        planned_s,
        interrupted,
    };
    let mut summary = bench_summary(opts, measured, metrics, notes, curves);
    summary.server = server;
    summary.ending = if interrupted {
        Ending::Interrupted
    } else {
        Ending::RanToPlan
    };
    summary.thresholds = gate::evaluate(&opts.thresholds, &summary);
    summary.verdict = gate::verdict(&summary.thresholds, summary.ending);
    let to = run::ReportTo {
        dir: &opts.report_dir,
        name: "rls-bench",
        summary_md: opts.summary_md.as_deref(),
    };
    run::finish(summary, to, started_at)
}

/// What the bench's phases leave for its summary besides the metrics.
struct Measured<'a> {
    rls_url: &'a str,
    started: Instant,
    started_at: time::OffsetDateTime,
    planned_s: f64,
    interrupted: bool,
}

/// The bench's summary before it is judged: its description, metrics, notes and curves.
fn bench_summary(
    opts: &BenchOptions,
    m: Measured<'_>,
    metrics: BTreeMap<String, Metric>,
    notes: Vec<String>,
    curves: Curves,
) -> Summary {
    let sizes: Vec<String> = opts.sizes.iter().map(|s| size_label(*s)).collect();
    Summary {
        scenario: ScenarioInfo {
            name: "rls-bench".to_owned(),
            description: format!(
                "RLS overhead per tenant-scoped statement at {} profiles: shipped policy vs a BYPASSRLS baseline{}; {} iterations/s for {:?} per way, {} EXPLAIN ANALYZE samples per query",
                sizes.join(", "),
                if opts.seed_or { " vs the seed's OR policy" } else { "" },
                opts.rate,
                opts.duration,
                opts.samples
            ),
            file: String::new(),
            executor: "constant-arrival-rate".to_owned(),
        },
        target: crate::redact::redact(m.rls_url),
        started_at: m.started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        duration_s: m.started.elapsed().as_secs_f64(),
        planned_duration_s: m.planned_s,
        stop_reason: m.interrupted.then(|| "interrupted by the user (Ctrl-C)".to_owned()),
        metrics,
        notes,
        curves: curves
            .into_iter()
            .map(|(name, series)| Curve {
                name: name.to_owned(),
                x_label: "profiles, log10 (4 = 10k, 5 = 100k, 6 = 1m)".to_owned(),
                y_label: "µs".to_owned(),
                series,
            })
            .collect(),
        ..Summary::empty()
    }
}

/// One way at one size: its latency phase through the spine's measure step, then its
/// `EXPLAIN ANALYZE` samples; `None` when an interrupt came between the two.
async fn measure_way(
    url: &str,
    way: Way,
    opts: &BenchOptions,
    spec: &crate::dataset::DatasetSpec,
    label: &str,
    metrics: &mut BTreeMap<String, Metric>,
    interrupt: &CancellationToken,
) -> Result<Option<WayResult>, RunError> {
    let text = scenario_text(way, opts, spec);
    let plan = crate::scenario::parse(&text, std::path::Path::new("rls-bench"))?;
    let target = run::target::Target::existing(url.to_owned());
    let no_outputs = crate::output::OutputOptions::default();
    let quiet = run::database::Measure {
        segment: crate::scenario::Segment::WHOLE,
        quiet: true,
        outputs: &no_outputs,
        notes: Vec::new(),
        watchers: Vec::new(),
    };
    let (phase, _) = run::database::measure(&plan, &target, quiet, interrupt.clone()).await?;
    let latency_p50_us = record_phase(&phase, way, label, metrics);
    let (stat_us, breakdown) = phase_server(&phase, way, label);
    let server_notes = phase
        .notes
        .iter()
        .filter(|n| n.contains("server"))
        .map(|n| format!("{label}/{}: {n}", way.as_str()))
        .collect();
    if interrupt.is_cancelled() {
        return Ok(None);
    }
    let samples = if way == Way::SeedOr {
        (opts.samples / 10).max(5)
    } else {
        opts.samples
    };
    let server = server_phase(url, way, spec, samples).await?;
    let mut server_us = BTreeMap::new();
    for (q, s) in &server {
        let mut total: Vec<f64> = s
            .iter()
            .map(|x| (x.planning_ms + x.execution_ms) * 1e3)
            .collect();
        let mut buffers: Vec<f64> = s.iter().map(|x| x.buffers).collect();
        let us = trimmed_mean(&mut total);
        let tags = format!("query:{q},size:{label},policy:{}", way.as_str());
        push_gauge(metrics, format!("rls_server_us{{{tags}}}"), us);
        push_gauge(
            metrics,
            format!("rls_buffers{{{tags}}}"),
            trimmed_mean(&mut buffers),
        );
        server_us.insert(*q, us);
    }
    Ok(Some(WayResult {
        latency_p50_us,
        server_us,
        stat_us,
        server: breakdown,
        server_notes,
        planned_s: plan.load.duration().as_secs_f64(),
    }))
}

/// The latency phase's server time per call from `pg_stat_statements` (execution + planning,
/// as `EXPLAIN ANALYZE` counts, the tenant statement apart) and its decomposition, renamed.
fn phase_server(
    phase: &Summary,
    way: Way,
    label: &str,
) -> (BTreeMap<&'static str, (f64, u64)>, Option<ServerBreakdown>) {
    let mut stat_us = BTreeMap::new();
    let Some(mut server) = phase.server.clone() else {
        return (stat_us, None);
    };
    for row in &mut server.queries {
        if let Some(q) = QUERIES.iter().find(|q| **q == row.query) {
            if row.server_calls > 0 {
                stat_us.insert(*q, (row.exec_mean_us + row.plan_mean_us, row.server_calls));
            }
            row.query = format!("{q}/{label}/{}", way.as_str());
        }
    }
    (stat_us, Some(server))
}

/// Adds a phase's decomposition to the bench's: its rows, its waits and database counters
/// summed; its notes once each.
fn merge_server(total: &mut Option<ServerBreakdown>, notes: &mut Vec<String>, r: &WayResult) {
    const MISSING: &str = "no server-side decomposition";
    for n in &r.server_notes {
        // Why the statistics are missing is the same for every phase: said once.
        if !n.contains(MISSING) || !notes.iter().any(|m| m.contains(MISSING)) {
            notes.push(n.clone());
        }
    }
    let Some(part) = &r.server else {
        return;
    };
    let Some(t) = total else {
        *total = Some(part.clone());
        return;
    };
    t.queries.extend(part.queries.iter().cloned());
    t.samples += part.samples;
    for w in &part.waits {
        match t
            .waits
            .iter_mut()
            .find(|x| x.wait_event_type == w.wait_event_type && x.wait_event == w.wait_event)
        {
            Some(x) => x.samples += w.samples,
            None => t.waits.push(w.clone()),
        }
    }
    t.waits.sort_by_key(|w| std::cmp::Reverse(w.samples));
    let (d, p) = (&mut t.database, &part.database);
    d.commits += p.commits;
    d.rollbacks += p.rollbacks;
    d.deadlocks += p.deadlocks;
    d.temp_bytes += p.temp_bytes;
    d.blocks_read += p.blocks_read;
}

/// The latency phase's numbers under the way's and size's tags; each query's p50.
fn record_phase(
    phase: &Summary,
    way: Way,
    label: &str,
    metrics: &mut BTreeMap<String, Metric>,
) -> BTreeMap<&'static str, f64> {
    let mut latency_p50_us = BTreeMap::new();
    for q in queries(way) {
        let tag = format!("{}/{label}/{}", q.name, way.as_str());
        if let Some(t) = phase.trend(&format!("query_duration{{query:{}}}", q.name)) {
            latency_p50_us.insert(q.name, t.p50_us as f64);
            metrics.insert(
                format!("query_duration{{query:{tag}}}"),
                Metric::Trend(t.clone()),
            );
        }
        if let Some(t) = phase.trend(&format!("server_time{{query:{}}}", q.name)) {
            metrics.insert(
                format!("server_time{{query:{tag}}}"),
                Metric::Trend(t.clone()),
            );
        }
        if let Some(c) = phase.counter(&format!("query_errors{{query:{}}}", q.name)) {
            add_counter(metrics, &format!("query_errors{{query:{tag}}}"), c);
        }
    }
    for name in [
        "query_errors",
        "connection_errors",
        "tenant_violations",
        "dropped_iterations",
        "iterations",
    ] {
        if let Some(c) = phase.counter(name) {
            add_counter(metrics, name, c);
        }
    }
    latency_p50_us
}

/// Overheads of the shipped policy (and the seed's) against the baseline at one size: gauges by
/// query and size, by query (one sample per size, ascending), overall; curves; one note each.
fn record_overheads(
    results: &BTreeMap<&str, WayResult>,
    size: u64,
    metrics: &mut BTreeMap<String, Metric>,
    curves: &mut Curves,
    notes: &mut Vec<String>,
) {
    let label = size_label(size);
    let Some(base) = results.get("bypass") else {
        return;
    };
    let x = (size as f64).log10();
    for (way, suffix, curve) in [
        (
            Way::Rls,
            "",
            "RLS overhead by table size, shipped policy (server µs per statement)",
        ),
        (
            Way::SeedOr,
            ",policy:seed-or",
            "RLS overhead by table size, the seed's OR policy (server µs per statement)",
        ),
    ] {
        let Some(r) = results.get(way.as_str()) else {
            continue;
        };
        for q in QUERIES {
            let (Some(b), Some(v)) = (base.server_us.get(q), r.server_us.get(q)) else {
                continue;
            };
            let us = v - b;
            let pct = 100.0 * us / b;
            for key in [
                format!("{{query:{q},size:{label}{suffix}}}"),
                format!("{{query:{q}{suffix}}}"),
            ] {
                push_gauge(metrics, format!("rls_overhead_us{key}"), us);
                push_gauge(metrics, format!("rls_overhead_pct{key}"), pct);
            }
            if way == Way::Rls {
                push_gauge(metrics, "rls_overhead_us".to_owned(), us);
                push_gauge(metrics, "rls_overhead_pct".to_owned(), pct);
            }
            let latency = match (base.latency_p50_us.get(q), r.latency_p50_us.get(q)) {
                (Some(b), Some(v)) => v - b,
                _ => f64::NAN,
            };
            push_gauge(
                metrics,
                format!("rls_latency_overhead_us{{query:{q},size:{label}{suffix}}}"),
                latency,
            );
            curves
                .entry(curve)
                .or_default()
                .entry(q.to_owned())
                .or_default()
                .push((x, us));
            let stat = match (base.stat_us.get(q), r.stat_us.get(q)) {
                (Some((b, _)), Some((v, calls))) => format!(
                    "; under load (pg_stat_statements) {v:.1} µs vs {b:.1} µs per call over {calls} calls"
                ),
                _ => "; no pg_stat_statements figures".to_owned(),
            };
            notes.push(format!(
                "{q} at {label} profiles, {}: server {:.1} µs vs {:.1} µs without RLS: {:+.1} µs ({:+.1} %); p50 latency {:+.0} µs{stat}",
                if way == Way::Rls { "shipped policy" } else { "seed's OR policy" },
                v,
                b,
                us,
                pct,
                latency
            ));
        }
    }
}

/// The overhead table for the terminal: one line per query and size.
pub fn table(summary: &Summary) -> String {
    let mut out =
        String::from("\n  RLS overhead per statement (server time, planning + execution: EXPLAIN ANALYZE samples; under load: pg_stat_statements over the latency phase)\n");
    for n in &summary.notes {
        let _ = writeln!(out, "    {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes_and_refuse_nonsense() {
        assert_eq!(
            parse_sizes("100k,10k,1M").unwrap(),
            [10_000, 100_000, 1_000_000]
        );
        assert_eq!(parse_size("2500").unwrap(), 2_500);
        assert!(parse_size("10x").unwrap_err().contains("expected a number"));
        assert!(parse_size("150").unwrap_err().contains("between 1k"));
        assert!(parse_size("1050").is_err());
        assert!(parse_sizes("10k,10k").unwrap_err().contains("twice"));
        assert_eq!(size_label(10_000), "10k");
        assert_eq!(size_label(1_000_000), "1m");
        assert_eq!(size_label(2_500), "2500");
    }

    #[test]
    fn thresholds_name_known_queries_sizes_and_ways() {
        let sizes = [10_000, 100_000];
        let t = parse_threshold(
            "rls_overhead_pct{size:10k, query:lookup}: max < 20",
            &sizes,
            false,
        )
        .unwrap();
        assert_eq!(t.metric, "rls_overhead_pct{query:lookup,size:10k}");
        assert_eq!(t.expression, "max < 20");
        let t = parse_threshold(
            "query_duration{query:tenant/100k/rls}: p(99) < 5",
            &sizes,
            false,
        )
        .unwrap();
        assert_eq!(t.metric, "query_duration{query:tenant/100k/rls}");
        let t = parse_threshold(
            "server_time{query:lookup/10k/bypass}: avg < 5",
            &sizes,
            false,
        )
        .unwrap();
        assert_eq!(t.metric, "server_time{query:lookup/10k/bypass}");
        for (bad, why) in [
            ("rls_overhead_pct{query:nope}: max < 20", "not measured"),
            ("rls_overhead_pct{size:1m}: max < 20", "not measured"),
            ("rls_overhead_pct{policy:seed-or}: max < 20", "not measured"),
            ("rls_overhead_pct{tenant:x}: max < 20", "unknown tag"),
            ("rls_overhead_pct: p(99) < 20", "does not apply"),
            ("rls_overhed_pct: max < 20", "unknown metric"),
            ("rls_overhead_pct max < 20", "expected METRIC: EXPRESSION"),
        ] {
            let e = parse_threshold(bad, &sizes, false).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(
            parse_threshold("rls_overhead_pct{policy:seed-or}: max < 1e9", &sizes, true).is_ok()
        );
    }

    #[test]
    fn reads_server_time_and_buffers_from_a_real_plan() {
        let plan: serde_json::Value =
            serde_json::from_str(include_str!("fixtures/analyze_lookup.json")).unwrap();
        let s = server_sample(&plan).unwrap();
        assert_eq!(s.execution_ms, 0.385);
        assert_eq!(s.planning_ms, 0.277);
        assert_eq!(s.buffers, 3.0);
        assert!(server_sample(&serde_json::json!([{"Plan": {}}])).is_none());
    }

    #[test]
    fn trimmed_mean_drops_the_tails() {
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        v[9] = 1000.0;
        assert_eq!(trimmed_mean(&mut v), 5.5);
        assert!(trimmed_mean(&mut []).is_nan());
    }

    #[test]
    fn scenarios_parse_and_keep_the_filter_out_of_the_rls_tenant_read() {
        let opts = BenchOptions {
            sizes: vec![10_000],
            rate: 100,
            duration: Duration::from_secs(2),
            samples: 10,
            seed_or: true,
            thresholds: vec![],
            report_dir: PathBuf::new(),
            summary_md: None,
            quiet: true,
        };
        let spec = spec_for(10_000);
        assert_eq!(spec.communities, 100);
        for way in [Way::Rls, Way::Bypass, Way::SeedOr] {
            let plan = crate::scenario::parse(&scenario_text(way, &opts, &spec), "x".as_ref())
                .unwrap_or_else(|e| panic!("{way:?}: {e}"));
            let tenant = &plan.queries[0];
            assert_eq!(
                tenant.sql.contains("WHERE community_id"),
                way == Way::Bypass
            );
            assert_eq!(plan.queries.len(), if way == Way::SeedOr { 2 } else { 3 });
        }
    }

    #[test]
    fn direct_urls_keep_the_credentials() {
        assert_eq!(
            direct_url(
                "postgres://app:pw@127.0.0.1:6432/arrakis",
                "postgres://owner:x@127.0.0.1:5432/arrakis"
            ),
            "postgres://app:pw@127.0.0.1:5432/arrakis"
        );
    }
}
