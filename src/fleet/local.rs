//! `thumper fleet --local N`: a fleet of N worker processes on this machine. The coordinator
//! (this process) resolves the target and migrates and seeds it once; the workers only load it,
//! each its `--segment I/N`; the coordinator merges their reports into one and judges the fleet.
//! Start skew (the spread of the workers' load start times) is measured and can carry a
//! threshold (`fleet_start_skew = ["max < 50"]`, ms).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::merge::{combine, judge};
use super::Segment;
use crate::metrics::summary::{GaugeStats, Metric, Summary, Verdict};
use crate::run::target::{prepare_target, resolve_target, Target};
use crate::run::{self, load_plan, write_reports, RunError, RunOptions, RunResult};

/// Runs the scenario of `opts` as `workers` local processes and returns the fleet's result.
pub async fn run(
    opts: &RunOptions,
    workers: u32,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    if workers == 0 {
        return Err(RunError::BadInput(
            "--local 0: a fleet needs at least one worker".into(),
        ));
    }
    let plan = load_plan(opts)?;
    let target = resolve_target(&plan, opts).await?;
    let result = coordinate(opts, &plan, &target, workers, interrupt).await;
    if let Some(s) = target.owned_stack {
        if let Err(e) = s.stop().await {
            eprintln!("thumper: stopping the embedded stack: {e}");
        }
    }
    result
}

async fn coordinate(
    opts: &RunOptions,
    plan: &crate::scenario::Plan,
    target: &Target,
    workers: u32,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    // Set-up once, here: the workers are given no owner URL, so they never migrate or seed.
    prepare_target(plan, opts, target, &interrupt).await?;
    let started_at = time::OffsetDateTime::now_utc();
    let folder = run::report_folder(
        &opts.report_dir,
        &format!("{}-fleet", plan.name),
        started_at,
    );
    std::fs::create_dir_all(&folder)
        .map_err(|e| RunError::Failed(format!("{}: {e}", folder.display())))?;
    let me = std::env::current_exe()
        .map_err(|e| RunError::Failed(format!("cannot locate the thumper binary: {e}")))?;
    let mut children = Vec::with_capacity(workers as usize);
    for index in 0..workers {
        let segment = Segment {
            index,
            count: workers,
        };
        let dir = folder.join(format!("instance-{index}"));
        let log = std::fs::File::create(folder.join(format!("instance-{index}.log")))
            .map_err(|e| RunError::Failed(format!("{}: {e}", folder.display())))?;
        let mut cmd = worker_command(&me, opts, plan, target, segment, &dir);
        cmd.stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| RunError::Failed(e.to_string()))?,
            )
            .stderr(log)
            // Its own process group: the coordinator decides when workers stop.
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| RunError::Failed(format!("starting worker {segment}: {e}")))?;
        children.push((segment, dir, child));
    }
    let pids: Vec<u32> = children.iter().filter_map(|(_, _, c)| c.id()).collect();
    let mut stopped = false;
    let mut outcomes = Vec::with_capacity(children.len());
    for (segment, dir, mut child) in children {
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = interrupt.cancelled(), if !stopped => {
                    stopped = true;
                    // Every worker stops and writes its reports, as a single run does.
                    for pid in &pids {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(*pid as i32),
                            nix::sys::signal::Signal::SIGINT,
                        );
                    }
                }
            }
        };
        outcomes.push((segment, dir, status));
    }
    let mut summaries = Vec::new();
    let mut missing = Vec::new();
    for (segment, dir, status) in &outcomes {
        let code = status.as_ref().ok().and_then(|s| s.code());
        match read_instance(dir) {
            Some(s) if matches!(code, Some(0 | 99 | 130 | 143)) => summaries.push(s),
            _ => missing.push(format!(
                "worker {segment} ended with {} and left no report (see {}.log)",
                code.map_or("a signal".to_owned(), |c| format!("exit {c}")),
                dir.display()
            )),
        }
    }
    if summaries.is_empty() {
        return Err(RunError::Failed(format!(
            "no worker finished: {}",
            missing.join("; ")
        )));
    }
    let mut summary = combine(&summaries).map_err(|e| RunError::Failed(e.to_string()))?;
    add_start_skew(&mut summary, &summaries);
    summary.notes.insert(
        0,
        format!(
            "a fleet of {workers} local workers; each one's reports are in {}",
            folder.display()
        ),
    );
    // A worker that died is never a silent pass.
    summary.notes.extend(missing.iter().cloned());
    let interrupted = !missing.is_empty()
        || interrupt.is_cancelled()
        || summaries.iter().any(|s| s.verdict == Verdict::Interrupted);
    if !missing.is_empty() {
        summary.stop_reason = Some(missing.join("; "));
    } else if interrupt.is_cancelled() {
        summary.stop_reason = Some(crate::signals::stop_reason());
    }
    judge(&mut summary, &plan.thresholds, interrupted);
    write_reports(&summary, &folder, opts.summary_md.as_deref())?;
    Ok(RunResult {
        summary,
        report_dir: folder,
    })
}

/// The `thumper run` a worker runs: the same scenario and timeline, the target as a plain
/// application-role URL, its segment, its own report folder.
fn worker_command(
    me: &Path,
    opts: &RunOptions,
    plan: &crate::scenario::Plan,
    target: &Target,
    segment: Segment,
    dir: &Path,
) -> Command {
    let mut cmd = Command::new(me);
    cmd.arg("run")
        .arg(&opts.scenario)
        .args(["--target", &target.url])
        .args(["--segment", &segment.to_string()])
        .arg("--report-dir")
        .arg(dir)
        .arg("--quiet")
        .env_remove("ADMIN_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env_remove("PGBOUNCER_ADMIN_URL");
    if let Some(admin) = &target.pgbouncer_admin_url {
        cmd.args(["--pgbouncer-admin", admin]);
    }
    if let Some(f) = opts.time_scale {
        cmd.args(["--time-scale", &f.to_string()]);
    }
    if opts.quick {
        cmd.arg("--quick");
    }
    // The embedded stack is what the plan's [stack.pgbouncer] made it; another target is what
    // --pool-mode said.
    let pooling = match (&opts.target, run::stack_options(plan)) {
        (None, Ok(stack)) => Some(stack.pgbouncer.pool_mode),
        _ => opts.pool_mode,
    };
    let pool_mode = pooling.map_or("none", crate::stack::PoolMode::as_str);
    cmd.args(["--pool-mode", pool_mode]);
    cmd
}

fn read_instance(dir: &Path) -> Option<Summary> {
    let folder: PathBuf = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("summary.json").is_file())?;
    crate::report::read_summary(&folder.join("summary.json")).ok()
}

/// The spread of the workers' load start times, in milliseconds, as the gauge
/// `fleet_start_skew`; a threshold on it is judged with the others.
fn add_start_skew(summary: &mut Summary, instances: &[Summary]) {
    let starts: Vec<time::OffsetDateTime> = instances
        .iter()
        .filter_map(|s| {
            time::OffsetDateTime::parse(
                &s.started_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        })
        .collect();
    let (Some(first), Some(last)) = (starts.iter().min(), starts.iter().max()) else {
        return;
    };
    let skew_ms = (*last - *first).as_seconds_f64() * 1e3;
    summary.metrics.insert(
        "fleet_start_skew".into(),
        Metric::Gauge(GaugeStats {
            last: skew_ms,
            min: skew_ms,
            max: skew_ms,
            samples: 1,
        }),
    );
    summary.notes.push(format!(
        "workers started their load within {skew_ms:.1} ms of each other"
    ));
}
