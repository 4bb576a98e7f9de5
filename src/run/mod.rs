//! The pipeline every command shares: options → plan (every input and output checked) →
//! target → measure → one judged summary → reports. [`database`] runs a scenario against
//! PostgreSQL, [`capacity`] searches for the highest sustainable rate with the same steps, and the
//! gateway pipeline (`gateway_load::run`) ends in the same summary builder and reports.

pub mod capacity;
pub mod database;
pub mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::gate;
use crate::metrics::summary::{Interval, Metric, ScenarioInfo, Summary, Verdict};
use crate::report;
use crate::scenario::{self, Plan, Protocol, Topology};
use crate::stack::PoolMode;

pub use database::run;
pub use target::{default_migrations_dir, stack_options};

/// Settings of one run, from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// `--time-scale`: every stage duration multiplied by this.
    pub time_scale: Option<f64>,
    /// `--quick`: the timeline squeezed into 30 seconds.
    pub quick: bool,
    /// Application-role URL of an existing PgBouncer/PostgreSQL.
    pub target: Option<String>,
    /// Owner-role URL for migrations and seeding with `--target` (optional).
    pub admin_url: Option<String>,
    /// PgBouncer admin console URL, polled once a second during the run.
    pub pgbouncer_admin_url: Option<String>,
    /// What `--target` pools by: PgBouncer's mode, or `None` for PostgreSQL itself. The
    /// embedded stack's own mode comes from the scenario's `[stack.pgbouncer]`.
    pub pool_mode: Option<PoolMode>,
    /// Folder under which the run's report folder is made.
    pub report_dir: PathBuf,
    /// File the Markdown summary is also appended to.
    pub summary_md: Option<PathBuf>,
    /// No live progress line.
    pub quiet: bool,
    /// This instance's share of a fleet run (`--segment I/N`).
    pub segment: crate::fleet::Segment,
    /// `--fleet-nats`: this run is a worker of the coordinated fleet on that NATS server.
    pub fleet_nats: Option<String>,
    /// `--fleet-id`: which fleet on the NATS server.
    pub fleet_id: String,
    /// `--ready-timeout`: how long either side of a fleet's barrier waits for the other.
    pub ready_timeout: std::time::Duration,
    /// `--out`, `--out-interval`, `--out-required`, `--tag`.
    pub outputs: crate::output::OutputOptions,
}

impl RunOptions {
    /// How this run's side of a fleet reaches the other over the NATS server at `nats`.
    pub fn fleet_link(&self, nats: &str) -> crate::fleet::FleetLink {
        crate::fleet::FleetLink {
            nats: nats.to_owned(),
            id: self.fleet_id.clone(),
            ready_timeout: self.ready_timeout,
        }
    }
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
    /// The run's summary, as written to `summary.json`.
    pub summary: Summary,
    /// The folder the reports were written to.
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
    crate::fleet::segment::apply(&mut plan, opts.segment);
    if plan.protocol == Protocol::Prepared {
        // The embedded stack's PgBouncer runs in the scenario's mode; another target is what
        // --pool-mode says it is.
        let pooling = if opts.target.is_none() && crate::stack::running().is_none() {
            Some(stack_options(&plan)?.pgbouncer.pool_mode)
        } else {
            opts.pool_mode
        };
        if matches!(pooling, Some(PoolMode::Transaction | PoolMode::Statement)) {
            return Err(RunError::BadInput(format!(
                "{}: protocol = \"prepared\" cannot work through PgBouncer in transaction mode (nor in statement mode): a named prepared statement lives on one server connection, and the next transaction may run on another (\"prepared statement does not exist\"). Use protocol = \"extended\" (unnamed statements) or \"simple\", or pass --pool-mode session|none if the target is not a transaction pooler (for the embedded stack: pool_mode = \"session\" in [stack.pgbouncer]).",
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

/// Refuses thresholds this run can never judge (exit 2), before any stack starts or login: a
/// console is polled with `--pgbouncer-admin`, with a stack thumper knows, and in a fleet (its
/// coordinator polls it).
pub(crate) fn check_judgeable(plan: &Plan, opts: &RunOptions) -> Result<(), RunError> {
    let can = gate::Judgeable {
        open_model: matches!(plan.load, scenario::LoadShape::Open { .. }),
        pooled: plan.connection.topology == Topology::Pooled,
        pgbouncer_console: opts.target.is_none()
            || opts.pgbouncer_admin_url.is_some()
            || opts.fleet_nats.is_some(),
    };
    match gate::unjudgeable(&plan.thresholds, &can) {
        Some(why) => Err(RunError::BadInput(format!("{}: {why}", plan.file))),
        None => Ok(()),
    }
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

/// What a pipeline measured, for [`judged_summary`].
pub(crate) struct Measured {
    pub duration_s: f64,
    pub stop_reason: Option<String>,
    /// An `abort_on_fail` threshold stopped the run.
    pub aborted: bool,
    /// Ctrl-C or SIGTERM stopped the run.
    pub interrupted: bool,
    /// `--out-required` and an output could not deliver: the run fails as on a threshold.
    pub output_failed: bool,
    pub metrics: BTreeMap<String, Metric>,
    pub time_series: Vec<Interval>,
    pub notes: Vec<String>,
}

/// The run's summary with every threshold evaluated and its verdict: the one place a summary is
/// built, whichever pipeline measured it.
pub(crate) fn judged_summary(
    plan: &Plan,
    target: String,
    started_at: time::OffsetDateTime,
    measured: Measured,
) -> Summary {
    let mut summary = Summary {
        scenario: ScenarioInfo {
            name: plan.name.clone(),
            description: plan.description.clone(),
            file: plan.file.clone(),
            executor: plan.executor.clone(),
        },
        target,
        started_at: started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        duration_s: measured.duration_s,
        planned_duration_s: plan.load.duration().as_secs_f64(),
        stop_reason: measured.stop_reason,
        metrics: measured.metrics,
        time_series: measured.time_series,
        notes: measured.notes,
        ..Summary::empty()
    };
    // A generator that ran out of CPU measured its own queueing too.
    summary
        .notes
        .extend(crate::metrics::process::saturation_note(
            &summary.time_series,
        ));
    summary.thresholds = gate::evaluate(&plan.thresholds, &summary);
    summary.verdict = if measured.aborted || measured.output_failed {
        Verdict::Fail
    } else {
        gate::verdict(&summary.thresholds, measured.interrupted)
    };
    summary
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
