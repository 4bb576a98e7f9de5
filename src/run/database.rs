//! The database run: a scenario's load against PostgreSQL (through PgBouncer), from the target
//! to the judged summary and its reports.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::target::{preflight, prepare_target, resolve_target, Target};
use super::{load_plan, report_folder, write_reports, RunError, RunOptions, RunResult};
use crate::executor::{self, Connector, RunContext};
use crate::fleet::worker::Worker;
use crate::gate;
use crate::metrics::aggregator::{Aggregator, AggregatorConfig, Watcher};
use crate::metrics::summary::{Metric, Summary};
use crate::redact::redact;
use crate::scenario::{self, Plan};
use crate::workload::Workload;

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
    // A fleet worker leaves the set-up to its coordinator and waits for it.
    let mut worker = match &opts.fleet_nats {
        Some(nats) => {
            let mut w = Worker::join(&opts.fleet_link(nats), opts.segment).await?;
            w.wait_for_setup(&interrupt).await?;
            Some(w)
        }
        None => {
            prepare_target(plan, opts, target, &interrupt).await?;
            None
        }
    };
    let mut notes = match preflight(&target.url, plan).await {
        Ok(notes) => notes,
        Err(e) => {
            if let Some(w) = &worker {
                w.fail(&e.to_string()).await;
            }
            return Err(e);
        }
    };
    // A target thumper migrated is checked for policies that defeat the tenant index.
    if target.admin_url.is_some()
        && worker.is_none()
        && plan.queries.iter().any(|q| q.tenant_scoped)
    {
        notes.extend(crate::rls::check::run_notes(&target.url, &plan.queries, plan.dataset).await);
    }
    let (interrupt, extra) = match worker.as_mut() {
        Some(w) => {
            w.ready_and_wait_for_start(&interrupt).await?;
            (w.fleet_interrupt(&interrupt), vec![w.streamer()])
        }
        None => (interrupt, Vec::new()),
    };
    let (mut summary, started_at) = measure(plan, opts, target, notes, interrupt, extra).await?;
    if let Some(reason) = worker.as_ref().and_then(Worker::fleet_stop_reason) {
        if crate::signals::received().is_none() {
            summary.stop_reason = Some(reason);
        }
    }
    let report_dir = report_folder(&opts.report_dir, &plan.name, started_at);
    write_reports(&summary, &report_dir, opts.summary_md.as_deref())?;
    if let Some(w) = worker {
        if let Some(note) = w.finish(&summary).await {
            eprintln!("thumper: {note}");
        }
    }
    Ok(RunResult {
        summary,
        report_dir,
    })
}

/// What follows a run as it goes: the progress line, the `abort_on_fail` check.
fn watchers(plan: &Plan, quiet: bool) -> Vec<Box<dyn Watcher>> {
    let mut watchers: Vec<Box<dyn Watcher>> = Vec::new();
    if crate::report::console::progress_wanted(quiet) {
        watchers.push(Box::new(crate::report::console::ProgressLine::default()));
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
    extra_watchers: Vec<Box<dyn Watcher>>,
) -> Result<(Summary, time::OffsetDateTime), RunError> {
    if opts.segment != crate::fleet::Segment::WHOLE {
        notes.push(format!(
            "instance {} of a fleet run: this report holds its share of the scenario; `thumper merge` judges the fleet",
            opts.segment
        ));
    }
    let workload = Workload::new(&plan.queries, plan.dataset, plan.protocol);
    let connector =
        Connector::new(&target.url, plan).map_err(|e| RunError::BadInput(e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    // Pre-allocated connections open before the clock: t = 0 is the schedule's first instant.
    let warm = executor::warm_up(plan, &connector).await;
    let start = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let vus = Arc::new(AtomicU64::new(0));
    let stop = interrupt.child_token();
    let abort = CancellationToken::new();
    let open_model = matches!(plan.load, scenario::LoadShape::Open { .. });
    let report_name = report_folder(std::path::Path::new(""), &plan.name, started_at);
    let labels = crate::output::RunLabels::new(
        &opts.outputs,
        &plan.name,
        &report_name.to_string_lossy(),
        started_at,
    );
    let (outputs, output_watchers) = crate::output::Outputs::start(&opts.outputs, &labels);
    let mut watchers = watchers(plan, opts.quiet);
    watchers.extend(output_watchers);
    watchers.extend(extra_watchers);
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
        tokio::spawn(crate::metrics::pgbouncer::poll(
            admin,
            database,
            start,
            Duration::from_secs(1),
            tx.clone(),
            poll_stop.clone(),
        ))
    });
    // The generator's own CPU and memory (src/metrics/process.rs), stopped with the poller.
    let self_sampler = tokio::spawn(crate::metrics::process::poll(
        start,
        Duration::from_secs(1),
        tx.clone(),
        poll_stop.clone(),
    ));
    let ctx = Arc::new(RunContext {
        start,
        workload,
        connector,
        think_time: plan.think_time,
        min_backoff: plan.min_backoff,
        max_backoff: plan.max_backoff,
        samples: tx,
        segment: opts.segment,
        warm,
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
    let _ = self_sampler.await;
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
    // `--out-required`: an output that could not deliver fails the run like a threshold.
    notes.extend(delivered.failure.clone());
    let summary = super::judged_summary(
        plan,
        redact(&target.url),
        started_at,
        super::Measured {
            duration_s,
            stop_reason,
            aborted: aggregated.aborted_by.is_some(),
            interrupted,
            output_failed: delivered.failure.is_some(),
            metrics: aggregated.metrics,
            time_series: aggregated.time_series,
            notes,
        },
    );
    Ok((summary, started_at))
}
