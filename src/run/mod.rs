//! The pipeline every command shares: options → plan (every input and output checked) →
//! target → measure → one judged summary → reports. [`database`] runs a scenario against
//! PostgreSQL, [`capacity`] searches for the highest sustainable rate with the same steps, and the
//! gateway pipeline (`gateway_load::run`) ends in the same summary builder and reports.

pub mod capacity;
pub mod database;
pub mod finish;
pub mod scenarios;
pub mod target;

use std::path::PathBuf;

use crate::gate;
use crate::metrics::summary::Summary;
use crate::scenario::{self, Plan, Protocol, Topology};
use crate::stack::PoolMode;

pub use finish::{finish, judged_summary, report_folder, write_reports, Measured, ReportTo};
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
    pub segment: crate::scenario::Segment,
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
    /// Where a run of `name` writes its reports: `--report-dir`, `--summary-md`.
    pub fn report_to<'a>(&'a self, name: &'a str) -> ReportTo<'a> {
        ReportTo {
            dir: &self.report_dir,
            name,
            summary_md: self.summary_md.as_deref(),
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
    crate::scenario::segment::apply(&mut plan, opts.segment);
    check_protocol(&plan, opts)?;
    Ok(plan)
}

/// Refuses `protocol = "prepared"` where it cannot work, for every scenario of the plan.
pub fn check_protocol(plan: &Plan, opts: &RunOptions) -> Result<(), RunError> {
    for part in plan.parts() {
        check_prepared(plan, part, opts)?;
    }
    Ok(())
}

/// `protocol = "prepared"` where named statements can live: not through a transaction pooler,
/// not from shared pools.
fn check_prepared(plan: &Plan, part: &Plan, opts: &RunOptions) -> Result<(), RunError> {
    if part.protocol == Protocol::Prepared {
        // The embedded stack's PgBouncer runs in the scenario's mode; another target is what
        // --pool-mode says it is.
        let pooling = if opts.target.is_none() && crate::stack::running().is_none() {
            Some(stack_options(plan)?.pgbouncer.pool_mode)
        } else {
            opts.pool_mode
        };
        if matches!(pooling, Some(PoolMode::Transaction | PoolMode::Statement)) {
            return Err(RunError::BadInput(format!(
                "{}: protocol = \"prepared\" cannot work through PgBouncer in transaction mode (nor in statement mode): a named prepared statement lives on one server connection, and the next transaction may run on another (\"prepared statement does not exist\"). Use protocol = \"extended\" (unnamed statements) or \"simple\", or pass --pool-mode session|none if the target is not a transaction pooler (for the embedded stack: pool_mode = \"session\" in [stack.pgbouncer]).",
                plan.file
            )));
        }
        if part.connection.topology == Topology::Pooled {
            return Err(RunError::BadInput(format!(
                "{}: protocol = \"prepared\" is supported with topology = \"per-vu\" only",
                plan.file
            )));
        }
    }
    Ok(())
}

/// Refuses thresholds this run can never judge (exit 2), before any stack starts or login: a
/// console is polled with `--pgbouncer-admin`, with a stack thumper knows, and in a fleet (its
/// coordinator polls it).
pub fn check_judgeable(plan: &Plan, opts: &RunOptions) -> Result<(), RunError> {
    let can = gate::Judgeable {
        open_model: plan.any_open(),
        pooled: plan
            .parts()
            .iter()
            .any(|p| p.connection.topology == Topology::Pooled),
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
    check_report_paths(&opts.report_dir, opts.summary_md.as_deref())?;
    crate::output::check(&opts.outputs).map_err(RunError::BadInput)
}

/// Checks that the report folder can be made and written and that `--summary-md` can be
/// opened for appending: every command calls it before it starts anything.
pub fn check_report_paths(
    dir: &std::path::Path,
    summary_md: Option<&std::path::Path>,
) -> Result<(), RunError> {
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
    if let Some(path) = summary_md.filter(|p| !p.as_os_str().is_empty()) {
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
    Ok(())
}
