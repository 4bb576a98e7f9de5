//! One scenario run from start to finish: plan → target (embedded stack or `--target`) →
//! execute → gate → reports. Reports are written whatever happens once load has started.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dataset;
use crate::executor::{self, Connector, RunContext};
use crate::gate;
use crate::metrics::aggregator::{Aggregator, AggregatorConfig, Watcher};
use crate::metrics::summary::{Metric, ScenarioInfo, Summary, Verdict};
use crate::redact::redact;
use crate::report;
use crate::scenario::{self, Plan, Protocol, Topology};
use crate::stack::{self, Stack, StackOptions};
use crate::workload::Workload;

/// What the server in front of the database pools by, for refusing `protocol = "prepared"`
/// where named statements cannot survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolMode {
    /// PgBouncer in transaction mode (the Arrakis setting, and the embedded stack's).
    Transaction,
    /// PgBouncer in session mode.
    Session,
    /// PostgreSQL itself, no pooler.
    None,
}

/// Settings of one run, from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: PathBuf,
    pub time_scale: Option<f64>,
    pub quick: bool,
    /// Application-role URL of an existing PgBouncer/PostgreSQL.
    pub target: Option<String>,
    /// Owner-role URL for migrations and seeding with `--target` (optional).
    pub admin_url: Option<String>,
    /// PgBouncer admin console URL, polled once a second during the run.
    pub pgbouncer_admin_url: Option<String>,
    pub pool_mode: PoolMode,
    pub report_dir: PathBuf,
    pub summary_md: Option<PathBuf>,
    pub quiet: bool,
    /// `--out`, `--out-interval`, `--out-required`, `--tag`.
    pub outputs: crate::output::OutputOptions,
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario or the flags are wrong (exit code 2).
    #[error("{0}")]
    BadInput(String),
    /// The run could not be carried out (exit code 1).
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C or SIGTERM came before there was anything to report (exit code 130 or 143).
    #[error("{0}")]
    Interrupted(String),
}

impl From<scenario::ScenarioError> for RunError {
    fn from(e: scenario::ScenarioError) -> Self {
        RunError::BadInput(e.to_string())
    }
}

/// A finished run: its summary and where its reports went.
pub struct RunResult {
    pub summary: Summary,
    pub report_dir: PathBuf,
}

/// Reads a scenario and applies `--quick`/`--time-scale`, after checking that every output path
/// can be written: bad input is found before any stack starts, not after the load.
pub fn load_plan(opts: &RunOptions) -> Result<Plan, RunError> {
    check_outputs(opts)?;
    let mut plan = scenario::load(&opts.scenario)?;
    if let Some(f) = opts.time_scale {
        if !(f > 0.0 && f.is_finite()) {
            return Err(RunError::BadInput(format!(
                "--time-scale {f}: must be a positive number, e.g. 0.1 for a tenth of the time"
            )));
        }
        plan.scale_time(f);
    }
    if opts.quick {
        plan.quick();
    }
    if plan.protocol == Protocol::Prepared {
        if opts.pool_mode == PoolMode::Transaction {
            return Err(RunError::BadInput(format!(
                "{}: protocol = \"prepared\" cannot work through PgBouncer in transaction mode: a named prepared statement lives on one server connection, and the next transaction may run on another (\"prepared statement does not exist\"). Use protocol = \"extended\" (unnamed statements) or \"simple\", or pass --pool-mode session|none if the target is not a transaction pooler.",
                opts.scenario.display()
            )));
        }
        if plan.connection.topology == Topology::Pooled {
            return Err(RunError::BadInput(format!(
                "{}: protocol = \"prepared\" is supported with topology = \"per-vu\" only",
                opts.scenario.display()
            )));
        }
    }
    Ok(plan)
}

/// Creates the report folder and opens `--summary-md` for appending, so a path that cannot be
/// written is bad input now (exit 2) rather than a failure once the run is over.
pub fn check_outputs(opts: &RunOptions) -> Result<(), RunError> {
    let dir = &opts.report_dir;
    std::fs::create_dir_all(dir).map_err(|e| {
        RunError::BadInput(format!(
            "--report-dir {}: cannot create the folder ({e}); pass a folder thumper may write to",
            dir.display()
        ))
    })?;
    let probe = dir.join(format!(".thumper-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            RunError::BadInput(format!(
                "--report-dir {}: cannot write into the folder ({e}); pass a folder thumper may write to",
                dir.display()
            ))
        })?;
    if let Some(path) = opts
        .summary_md
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                RunError::BadInput(format!(
                    "--summary-md {}: cannot open the file for appending ({e})",
                    path.display()
                ))
            })?;
    }
    crate::output::check(&opts.outputs).map_err(RunError::BadInput)?;
    Ok(())
}

/// Where the load goes, and the stack to stop afterwards if this run started one.
pub(crate) struct Target {
    pub(crate) url: String,
    admin_url: Option<String>,
    pgbouncer_admin_url: Option<String>,
    pub(crate) owned_stack: Option<Stack>,
}

impl Target {
    /// A target used as it is: no migrations, no seeding, no PgBouncer console.
    pub(crate) fn existing(url: String) -> Target {
        Target {
            url,
            admin_url: None,
            pgbouncer_admin_url: None,
            owned_stack: None,
        }
    }
}

pub(crate) async fn resolve_target(plan: &Plan, opts: &RunOptions) -> Result<Target, RunError> {
    if let Some(url) = &opts.target {
        return Ok(Target {
            url: url.clone(),
            admin_url: opts.admin_url.clone(),
            pgbouncer_admin_url: opts.pgbouncer_admin_url.clone(),
            owned_stack: None,
        });
    }
    if let Some(urls) = stack::running() {
        eprintln!("thumper: using the stack that is up (`thumper stack down` stops it)");
        return Ok(Target {
            url: urls.database_url,
            admin_url: Some(urls.admin_database_url),
            pgbouncer_admin_url: Some(urls.pgbouncer_admin_url),
            owned_stack: None,
        });
    }
    let options = stack_options(plan)?;
    eprintln!("thumper: starting PostgreSQL + PgBouncer ...");
    let s = Stack::start(&options)
        .await
        .map_err(|e| RunError::Failed(format!("the embedded stack did not start: {e}")))?;
    Ok(Target {
        url: s.urls().database_url.clone(),
        admin_url: Some(s.urls().admin_database_url.clone()),
        pgbouncer_admin_url: Some(s.urls().pgbouncer_admin_url.clone()),
        owned_stack: Some(s),
    })
}

/// Stack options from the scenario's `[stack]` table.
pub fn stack_options(plan: &Plan) -> Result<StackOptions, RunError> {
    let mut options = StackOptions {
        migrations_dir: default_migrations_dir(),
        ..StackOptions::default()
    };
    if let Some(table) = &plan.stack {
        for (key, value) in table {
            match key.as_str() {
                "pgbouncer" => {
                    options.pgbouncer = value.clone().try_into().map_err(|e| {
                        RunError::BadInput(format!("{}: [stack.pgbouncer]: {e}", plan.file))
                    })?
                }
                other => {
                    return Err(RunError::BadInput(format!(
                        "{}: [stack]: unknown key `{other}`; expected [stack.pgbouncer]",
                        plan.file
                    )))
                }
            }
        }
    }
    Ok(options)
}

/// `migrations/` next to the scenarios: the working directory's, else the source tree's.
pub fn default_migrations_dir() -> PathBuf {
    let here = PathBuf::from("migrations");
    if here.is_dir() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
    }
}

/// Checks the target answers as the application role before load starts, so a wrong URL is
/// one clear error rather than thousands of counted ones.
pub(crate) async fn preflight(url: &str, plan: &Plan) -> Result<Vec<String>, RunError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| RunError::BadInput(format!("target URL {}: {e}", redact(url))))?;
    config.connect_timeout(Duration::from_secs(10));
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(15),
        config.connect(tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| RunError::Failed(format!("target {} did not answer within 15 s", redact(url))))?
    .map_err(|e| {
        RunError::Failed(format!(
            "cannot log in to target {}: {}",
            redact(url),
            crate::workload::describe(&e)
        ))
    })?;
    tokio::spawn(conn);
    let mut notes = Vec::new();
    let first = plan.dataset.community_id(0).to_string();
    match client
        .simple_query(&format!(
            "SELECT 1 FROM communities WHERE id = '{first}'::uuid"
        ))
        .await
    {
        Ok(rows) => {
            if !rows
                .iter()
                .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            {
                notes.push(format!(
                    "the target has no community {first}: it was not seeded with this scenario's dataset (seed {}), so lookups find nothing",
                    plan.dataset.seed
                ));
            }
        }
        Err(e) => notes.push(format!(
            "could not check the dataset on the target: {}",
            crate::workload::describe(&e)
        )),
    }
    Ok(notes)
}

/// Runs a scenario end to end. `interrupt` is cancelled on Ctrl-C or SIGTERM.
pub async fn run(opts: &RunOptions, interrupt: CancellationToken) -> Result<RunResult, RunError> {
    let plan = load_plan(opts)?;
    let target = resolve_target(&plan, opts).await?;
    let result = run_on_target(&plan, opts, &target, interrupt).await;
    if let Some(s) = target.owned_stack {
        if let Err(e) = s.stop().await {
            eprintln!("thumper: stopping the embedded stack: {e}");
        }
    }
    result
}

async fn run_on_target(
    plan: &Plan,
    opts: &RunOptions,
    target: &Target,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    prepare_target(plan, opts, target, &interrupt).await?;
    let mut notes = preflight(&target.url, plan).await?;
    // A target thumper migrated is checked for policies that defeat the tenant index.
    if target.admin_url.is_some() && plan.queries.iter().any(|q| q.tenant_scoped) {
        notes.extend(crate::rls::check::run_notes(&target.url, &plan.queries, plan.dataset).await);
    }
    let (summary, started_at) = measure(plan, opts, target, notes, interrupt).await?;
    let report_dir = report_folder(&opts.report_dir, &plan.name, started_at);
    write_reports(&summary, &report_dir, opts.summary_md.as_deref())?;
    Ok(RunResult {
        summary,
        report_dir,
    })
}

/// Applies the migrations (to a `--target` given with `--admin-url`) and seeds the dataset. An
/// interrupt stops it there: a large seed can take minutes, and nothing has been measured yet.
pub(crate) async fn prepare_target(
    plan: &Plan,
    opts: &RunOptions,
    target: &Target,
    interrupt: &CancellationToken,
) -> Result<(), RunError> {
    tokio::select! {
        prepared = migrate_and_seed(plan, opts, target) => prepared,
        _ = interrupt.cancelled() => Err(RunError::Interrupted(
            "interrupted while preparing the target, before any load: nothing was measured".into(),
        )),
    }
}

async fn migrate_and_seed(plan: &Plan, opts: &RunOptions, target: &Target) -> Result<(), RunError> {
    if let Some(admin) = &target.admin_url {
        if opts.target.is_some() {
            crate::migrate::apply(admin, &default_migrations_dir())
                .await
                .map_err(|e| RunError::Failed(format!("applying migrations: {e}")))?;
        }
        let started = Instant::now();
        dataset::seed::seed(admin, &plan.dataset)
            .await
            .map_err(|e| RunError::Failed(format!("seeding the dataset: {e}")))?;
        tracing::info!(elapsed = ?started.elapsed(), "dataset ready");
    }
    Ok(())
}

/// What follows a run as it goes: the progress line, the `abort_on_fail` check.
fn watchers(plan: &Plan, quiet: bool) -> Vec<Box<dyn Watcher>> {
    let mut watchers: Vec<Box<dyn Watcher>> = Vec::new();
    if crate::console::progress_wanted(quiet) {
        watchers.push(Box::new(crate::console::ProgressLine::default()));
    }
    if let Some(check) = gate::LiveCheck::new(&plan.thresholds) {
        watchers.push(Box::new(check));
    }
    watchers
}

/// Drives the plan's load against the target and returns the gated summary.
pub(crate) async fn measure(
    plan: &Plan,
    opts: &RunOptions,
    target: &Target,
    mut notes: Vec<String>,
    interrupt: CancellationToken,
) -> Result<(Summary, time::OffsetDateTime), RunError> {
    let workload = Workload::new(&plan.queries, plan.dataset, plan.protocol);
    let connector =
        Connector::new(&target.url, plan).map_err(|e| RunError::BadInput(e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let vus = Arc::new(AtomicU64::new(0));
    let stop = interrupt.child_token();
    let abort = CancellationToken::new();
    let open_model = matches!(plan.load, scenario::LoadShape::Open { .. });
    let report_name = report_folder(Path::new(""), &plan.name, started_at);
    let labels = crate::output::RunLabels::new(
        &opts.outputs,
        &plan.name,
        &report_name.to_string_lossy(),
        started_at,
    );
    let (outputs, output_watchers) = crate::output::Outputs::start(&opts.outputs, &labels);
    let mut watchers = watchers(plan, opts.quiet);
    watchers.extend(output_watchers);
    let aggregator = Aggregator::new(AggregatorConfig {
        start,
        interval: Duration::from_secs(1),
        planned: plan.load.duration(),
        query_names: plan.queries.iter().map(|q| q.name.clone()).collect(),
        open_model,
        vus: vus.clone(),
        watchers,
        abort: abort.clone(),
    });
    let aggregator = tokio::spawn(aggregator.run(rx));
    let poll_stop = CancellationToken::new();
    let poller = target.pgbouncer_admin_url.clone().map(|admin| {
        let database = target
            .url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_owned));
        tokio::spawn(crate::pgbouncer::poll(
            admin,
            database,
            start,
            Duration::from_secs(1),
            tx.clone(),
            poll_stop.clone(),
        ))
    });
    let ctx = Arc::new(RunContext {
        start,
        workload,
        connector,
        think_time: plan.think_time,
        min_backoff: plan.min_backoff,
        max_backoff: plan.max_backoff,
        samples: tx,
    });
    let exec_stop = stop.clone();
    let abort_watch = abort.clone();
    let relay = tokio::spawn(async move {
        abort_watch.cancelled().await;
        exec_stop.cancel();
    });
    executor::execute(plan, ctx, vus, stop.clone()).await;
    relay.abort();
    poll_stop.cancel();
    if let Some(p) = poller {
        let _ = p.await;
    }
    let aggregated = aggregator
        .await
        .map_err(|e| RunError::Failed(format!("metrics aggregation failed: {e}")))?;
    let duration_s = start.elapsed().as_secs_f64();
    // The watchers are gone with the aggregator: the outputs deliver their last batch.
    let delivered = outputs.finish().await;
    notes.extend(delivered.notes);

    let interrupted = interrupt.is_cancelled();
    let stop_reason = if let Some(reason) = &aggregated.aborted_by {
        Some(reason.clone())
    } else if interrupted {
        Some(crate::signals::stop_reason())
    } else {
        None
    };
    if let Some(Metric::Gauge(wait)) = aggregated.metrics.get("pgbouncer_maxwait") {
        if wait.max >= 5.0 {
            notes.push(format!(
                "clients waited up to {:.1} s for a PgBouncer server connection. A wait near server_login_retry (15 s by default) is PgBouncer pausing after a failed server login: a PAUSE with min_pool_size > 0, or PostgreSQL restarting (see the README's PgBouncer findings)",
                wait.max
            ));
        }
    }
    if aggregated.late_samples > 0 {
        notes.push(format!(
            "{} samples arrived after their interval closed (a stalled VU); they are in the totals and the interval counts, not in that interval's percentiles",
            aggregated.late_samples
        ));
    }
    let mut summary = Summary {
        scenario: ScenarioInfo {
            name: plan.name.clone(),
            description: plan.description.clone(),
            file: plan.file.clone(),
            executor: plan.executor.clone(),
        },
        target: redact(&target.url),
        started_at: started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        duration_s,
        planned_duration_s: plan.load.duration().as_secs_f64(),
        stop_reason,
        metrics: aggregated.metrics,
        time_series: aggregated.time_series,
        notes,
        ..Summary::empty()
    };
    summary.thresholds = gate::evaluate(&plan.thresholds, &summary);
    // `--out-required`: an output that could not deliver fails the run like a threshold.
    let output_failed = delivered.failure.is_some();
    summary.notes.extend(delivered.failure);
    summary.verdict = if aggregated.aborted_by.is_some() || output_failed {
        Verdict::Fail
    } else {
        gate::verdict(&summary.thresholds, interrupted)
    };
    Ok((summary, started_at))
}

/// Options of `thumper gateway` beyond a run's.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// An existing NATS server; without it thumper starts `nats-server`.
    pub nats_url: Option<String>,
}

/// Runs a gateway scenario: the fake Discord server drives the real gateway binary, whose
/// envelopes thumper receives from NATS.
pub async fn run_gateway(
    opts: &RunOptions,
    gateway: &GatewayOptions,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    use crate::gateway_load::{self, GatewayRunConfig, GatewayWorkload};
    let original = scenario::load(&opts.scenario)?.load.duration();
    let plan = load_plan(opts)?;
    let factor = plan.load.duration().as_secs_f64() / original.as_secs_f64();
    let table = plan.gateway.clone().ok_or_else(|| {
        RunError::BadInput(format!(
            "{}: not a gateway scenario (it has no [gateway] table); see scenarios/gateway.toml",
            plan.file
        ))
    })?;
    let mut workload: GatewayWorkload = table
        .try_into()
        .map_err(|e| RunError::BadInput(format!("{}: [gateway]: {e}", plan.file)))?;
    workload
        .validate()
        .map_err(|e| RunError::BadInput(format!("{}: [gateway]: {e}", plan.file)))?;
    // Faults happen at points of the timeline: scale them with it.
    for f in &mut workload.faults {
        f.at = Duration::from_secs_f64(f.at.as_secs_f64() * factor);
    }
    let scenario::LoadShape::Open { stages, .. } = &plan.load else {
        return Err(RunError::BadInput(format!(
            "{}: a gateway scenario drives events at a rate: use executor = \"ramping-arrival-rate\" or \"constant-arrival-rate\" (targets are events per second)",
            plan.file
        )));
    };
    if !opts.outputs.specs.is_empty() {
        return Err(RunError::BadInput(
            "--out is not supported by `thumper gateway` yet (its metrics do not go through the aggregator's watchers)".into(),
        ));
    }
    let rate_stages = stages.iter().map(|s| (s.duration, s.target)).collect();
    let gateway_bin = gateway_binary().await?;
    let started_at = time::OffsetDateTime::now_utc();
    let outcome = gateway_load::run(GatewayRunConfig {
        workload,
        rate_stages,
        nats_url: gateway.nats_url.clone(),
        gateway_bin,
        cancel: interrupt.clone(),
        // The gateway's own JSON log is for debugging the harness: THUMPER_GATEWAY_LOG=1.
        quiet: opts.quiet || std::env::var_os("THUMPER_GATEWAY_LOG").is_none(),
    })
    .await
    .map_err(|e| RunError::Failed(format!("gateway run: {e:#}")))?;
    let interrupted = interrupt.is_cancelled();
    let mut summary = Summary {
        scenario: ScenarioInfo {
            name: plan.name.clone(),
            description: plan.description.clone(),
            file: plan.file.clone(),
            executor: plan.executor.clone(),
        },
        target: gateway
            .nats_url
            .clone()
            .unwrap_or_else(|| "gateway → embedded nats-server".to_owned()),
        started_at: started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        duration_s: outcome.duration_s,
        planned_duration_s: plan.load.duration().as_secs_f64(),
        stop_reason: outcome
            .stop_reason
            .or_else(|| interrupted.then(crate::signals::stop_reason)),
        metrics: outcome.metrics,
        time_series: outcome.time_series,
        notes: outcome.notes,
        ..Summary::empty()
    };
    summary.thresholds = gate::evaluate(&plan.thresholds, &summary);
    summary.verdict = gate::verdict(&summary.thresholds, interrupted);
    let report_dir = report_folder(&opts.report_dir, &plan.name, started_at);
    write_reports(&summary, &report_dir, opts.summary_md.as_deref())?;
    Ok(RunResult {
        summary,
        report_dir,
    })
}

/// The gateway binary next to thumper's own. Under `cargo run` it may not be built yet (cargo
/// builds only the binary it runs): then it is built with the same cargo and profile.
async fn gateway_binary() -> Result<PathBuf, RunError> {
    let me = std::env::current_exe()
        .map_err(|e| RunError::Failed(format!("cannot locate the thumper binary: {e}")))?;
    let dir = me.parent().unwrap_or(Path::new("."));
    let bin = dir.join("gateway");
    if bin.is_file() {
        return Ok(bin);
    }
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Err(RunError::Failed(format!(
            "the gateway binary is not at {}; build it with `cargo build --release --bin gateway`",
            bin.display()
        )));
    };
    let release = dir.file_name().is_some_and(|n| n == "release");
    eprintln!("thumper: building the gateway binary (first run only) ...");
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.args(["build", "--bin", "gateway"])
        .current_dir(manifest);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| RunError::Failed(format!("cannot run cargo to build the gateway: {e}")))?;
    if !status.success() || !bin.is_file() {
        return Err(RunError::Failed(format!(
            "building the gateway binary failed ({status}); try `cargo build --release --bin gateway`"
        )));
    }
    Ok(bin)
}

/// `DIR/<scenario>-<UTC timestamp>`.
pub(crate) fn report_folder(dir: &Path, name: &str, started_at: time::OffsetDateTime) -> PathBuf {
    let stamp = started_at
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    dir.join(format!("{name}-{stamp}"))
}

/// Writes every report format, and the Markdown summary to `--summary-md` if asked.
pub fn write_reports(
    summary: &Summary,
    dir: &Path,
    summary_md: Option<&Path>,
) -> Result<(), RunError> {
    report::write_all(summary, dir)
        .map_err(|e| RunError::Failed(format!("writing reports: {e}")))?;
    // An empty path is an unset variable (`--summary-md "$GITHUB_STEP_SUMMARY"` outside CI).
    if let Some(path) = summary_md.filter(|p| !p.as_os_str().is_empty()) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| RunError::Failed(format!("--summary-md {}: {e}", path.display())))?;
        f.write_all(report::render_markdown(summary).as_bytes())
            .map_err(|e| RunError::Failed(format!("--summary-md {}: {e}", path.display())))?;
    }
    Ok(())
}
