//! `thumper fleet --local N`: a fleet of N worker processes on this machine, coordinated over
//! NATS exactly as on Kubernetes. This process is the coordinator ([`coordinator`]): it resolves
//! the target, migrates and seeds it once, starts the workers (each `thumper run --segment I/N
//! --fleet-nats URL`), and writes the fleet's one report above the workers' own folders.
//! Start skew (the spread of the workers' load start times) is measured and can carry a
//! threshold (`fleet_start_skew = ["max < 50"]`, ms).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::coordinator::{self, Coordination, WorkerExit};
use super::{FleetLink, Segment};
use crate::run::target::{with_target, Target};
use crate::run::{self, load_plan, write_reports, RunError, RunOptions, RunResult};
use crate::stack::nats::NatsServer;
use crate::stack::process::OwnedPid;

/// Runs the scenario of `opts` as `workers` local processes coordinated over NATS (`nats`, or
/// a `nats-server` started for the run) and returns the fleet's result.
pub async fn run(
    opts: &RunOptions,
    workers: u32,
    nats: Option<String>,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    if workers == 0 {
        return Err(RunError::BadInput(
            "--local 0: a fleet needs at least one worker".into(),
        ));
    }
    let plan = load_plan(opts)?;
    run::check_judgeable(&plan, opts)?;
    let (server, nats) = match nats {
        Some(url) => (None, url),
        None => {
            let server = NatsServer::start()
                .await
                .map_err(|e| RunError::Failed(format!("{e:#}")))?;
            let url = server.url().to_owned();
            (Some(server), url)
        }
    };
    let result = with_target(&plan, opts, async |target| {
        coordinate_local(opts, &plan, target, workers, &nats, interrupt).await
    })
    .await;
    if let Some(server) = server {
        server.stop().await;
    }
    result
}

async fn coordinate_local(
    opts: &RunOptions,
    plan: &crate::scenario::Plan,
    target: &Target,
    workers: u32,
    nats: &str,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
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
    // An id of its own, so two fleets on one NATS server never hear each other.
    let link = FleetLink {
        id: fleet_id(&plan.name, started_at),
        ..super::FleetLink::of(opts, nats)
    };
    let (exit_tx, exits) = mpsc::unbounded_channel();
    let mut owned = Vec::new();
    for index in 0..workers {
        let segment = Segment {
            index,
            count: workers,
        };
        let dir = folder.join(format!("instance-{index}"));
        let log_path = folder.join(format!("instance-{index}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| RunError::Failed(format!("{}: {e}", log_path.display())))?;
        let mut cmd = worker_command(&me, opts, plan, target, segment, &dir, &link);
        cmd.stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| RunError::Failed(e.to_string()))?,
            )
            .stderr(log)
            // Its own process group: the coordinator decides when workers stop.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| RunError::Failed(format!("starting worker {segment}: {e}")))?;
        // A second Ctrl-C stops them at once, with the servers.
        owned.push(OwnedPid::register(
            child.id().unwrap_or_default(),
            Signal::SIGKILL,
        ));
        let tx = exit_tx.clone();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    _ => status.to_string(),
                },
                Err(e) => e.to_string(),
            };
            let _ = tx.send(WorkerExit {
                index,
                how,
                log: Some(log_path),
            });
        });
    }
    drop(exit_tx);
    let mut summary = coordinator::coordinate(
        plan,
        opts,
        target,
        Coordination {
            workers,
            link,
            exits: Some(exits),
        },
        interrupt,
    )
    .await?;
    drop(owned);
    summary.notes.insert(
        0,
        format!(
            "{workers} local worker processes; each one's reports and log are in {}",
            folder.display()
        ),
    );
    write_reports(&summary, &folder, opts.summary_md.as_deref())?;
    Ok(RunResult {
        summary,
        report_dir: folder,
    })
}

/// A fleet id unique to this run, so two fleets on one NATS server never hear each other.
fn fleet_id(name: &str, at: time::OffsetDateTime) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{safe}-{}-{}", at.unix_timestamp(), std::process::id())
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
    link: &FleetLink,
) -> Command {
    let mut cmd = Command::new(me);
    cmd.arg("run")
        .arg(&opts.scenario)
        .args(["--target", &target.url])
        .args(["--segment", &segment.to_string()])
        .args(["--fleet-nats", &link.nats, "--fleet-id", &link.id])
        .args([
            "--ready-timeout",
            &format!("{}ms", link.ready_timeout.as_millis()),
        ])
        .arg("--report-dir")
        .arg(dir)
        .arg("--quiet")
        .env_remove("ADMIN_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env_remove("PGBOUNCER_ADMIN_URL")
        .env_remove("THUMPER_FLEET_NATS")
        .env_remove("THUMPER_FLEET_ID");
    // PgBouncer's console is polled once for the fleet, by the coordinator.
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
