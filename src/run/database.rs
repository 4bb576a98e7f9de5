//! The measuring step of a database run: a scenario's load against PostgreSQL (through
//! PgBouncer), its samples into the one aggregator with its watchers (progress line, live
//! `abort_on_fail`, `--out`, and what the caller adds), the gauge pollers beside it, and the
//! judged summary at the end. Acquiring the target before it and writing the reports after it
//! are the caller's steps ([`super::target`], [`super::finish`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::finish::{ending_of, judged_summary, report_folder, Measured};
use super::target::Target;
use super::{RunError, RunOptions};
use crate::executor;
use crate::gate::{self, Scope};
use crate::metrics::aggregator::{Aggregated, Aggregator, AggregatorConfig, Watcher};
use crate::metrics::recorder::Samples;
use crate::metrics::summary::{Metric, Summary};
use crate::output::OutputOptions;
use crate::redact::redact;
use crate::report::console::{ProgressColumns, ProgressLine};
use crate::scenario::{Plan, Segment};
use crate::workload::Workload;

/// What measuring needs besides the plan and the target.
pub struct Measure<'a> {
    /// This instance's share of a fleet run ([`Segment::WHOLE`] for a single run).
    pub segment: Segment,
    /// No progress line.
    pub quiet: bool,
    /// The live outputs (`--out`).
    pub outputs: &'a OutputOptions,
    /// Notes gathered before the load (preflight, the RLS lint).
    pub notes: Vec<String>,
    /// Watchers a role adds (a fleet worker's streamer).
    pub watchers: Vec<Box<dyn Watcher>>,
}

impl<'a> Measure<'a> {
    /// A run's measuring options from its command line.
    pub fn of(opts: &'a RunOptions, notes: Vec<String>) -> Measure<'a> {
        Measure {
            segment: opts.segment,
            quiet: opts.quiet,
            outputs: &opts.outputs,
            notes,
            watchers: Vec::new(),
        }
    }

    /// Whose numbers this run holds: a fleet instance judges its share's thresholds only.
    fn scope(&self) -> Scope {
        if self.segment == Segment::WHOLE {
            Scope::Whole
        } else {
            Scope::Share
        }
    }
}

/// What follows a run as it goes: the progress line (with the run's `columns`), the
/// `abort_on_fail` check. Every command that measures uses it, the gateway included.
pub fn watchers(
    plan: &Plan,
    quiet: bool,
    scope: Scope,
    columns: ProgressColumns,
) -> Vec<Box<dyn Watcher>> {
    let mut watchers: Vec<Box<dyn Watcher>> = Vec::new();
    if crate::report::console::progress_wanted(quiet) {
        watchers.push(Box::new(ProgressLine::new(columns)));
    }
    if let Some(check) = gate::LiveCheck::in_scope(&plan.thresholds, scope) {
        watchers.push(Box::new(check));
    }
    watchers
}

/// The live outputs of `--out`, labelled with the run, and the watchers that feed them.
pub fn start_outputs(
    plan: &Plan,
    outputs: &OutputOptions,
    started_at: time::OffsetDateTime,
) -> (crate::output::Outputs, Vec<Box<dyn Watcher>>) {
    let report_name = report_folder(std::path::Path::new(""), &plan.name, started_at);
    let labels = crate::output::RunLabels::new(
        outputs,
        &plan.name,
        &report_name.to_string_lossy(),
        started_at,
    );
    crate::output::Outputs::start(outputs, &labels)
}

/// The gauge sources beside the load: PgBouncer's console (when known) and the generator's own
/// CPU and memory, all into the aggregator's channel, all stopped by `stop`.
pub fn start_gauges(
    target: &Target,
    start: Instant,
    samples: &Samples,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(admin) = target.pgbouncer_admin_url.clone() {
        let database = target
            .url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_owned));
        tasks.push(tokio::spawn(crate::metrics::pgbouncer::poll(
            admin,
            database,
            start,
            Duration::from_secs(1),
            samples.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::metrics::process::poll(
        start,
        Duration::from_secs(1),
        samples.clone(),
        stop.clone(),
    )));
    tasks
}

/// Drives the plan's load against the target and returns the judged summary.
pub async fn measure(
    plan: &Plan,
    target: &Target,
    mut m: Measure<'_>,
    interrupt: CancellationToken,
) -> Result<(Summary, time::OffsetDateTime), RunError> {
    let scope = m.scope();
    if scope == Scope::Share {
        m.notes.push(format!(
            "instance {} of a fleet run: this report holds its share of the scenario; `thumper merge` judges the fleet",
            m.segment
        ));
    }
    // Pre-allocated connections open before the clock: t = 0 is the schedule's first instant.
    let parts = super::scenarios::prepare(plan, target, m.segment).await?;
    let workloads: Vec<Arc<Workload>> = parts.iter().map(|p| p.workload.clone()).collect();
    // The server's statistics before the load: read before the clock starts too.
    let server = server_probe(plan, target, scope).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let vus = Arc::new(AtomicU64::new(0));
    let abort = CancellationToken::new();
    let (outputs, output_watchers) = start_outputs(plan, m.outputs, started_at);
    let mut watchers = watchers(plan, m.quiet, scope, ProgressColumns::DATABASE);
    watchers.extend(output_watchers);
    watchers.append(&mut m.watchers);
    let config = AggregatorConfig {
        start,
        interval: Duration::from_secs(1),
        planned: plan.load.duration(),
        query_names: plan.query_names(),
        open_model: plan.any_open(),
        vus: vus.clone(),
        watchers,
        abort: abort.clone(),
    };
    let aggregator = tokio::spawn(aggregator_for(plan, config).run(rx));
    let gauges_stop = CancellationToken::new();
    let gauges = start_gauges(target, start, &tx, &gauges_stop);
    let server_sampler = server.as_ref().map(|p| p.sample(start, &tx, &gauges_stop));
    let drive = super::scenarios::Drive {
        run_start: start,
        samples: tx,
        vus,
        segment: m.segment,
    };
    let stop = interrupt.child_token();
    let relay = tokio::spawn({
        let (abort, stop) = (abort.clone(), stop.clone());
        async move {
            abort.cancelled().await;
            stop.cancel();
        }
    });
    let runs = super::scenarios::drive(parts, drive, stop).await;
    relay.abort();
    gauges_stop.cancel();
    for task in gauges {
        let _ = task.await;
    }
    let waits = match server_sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut aggregated = aggregator
        .await
        .map_err(|e| RunError::Failed(format!("metrics aggregation failed: {e}")))?;
    let mut breakdown = None;
    if let Some(probe) = server {
        let (metrics, server, notes) = probe.finish(&aggregated.metrics, waits).await;
        aggregated.metrics.extend(metrics);
        breakdown = server;
        m.notes.extend(notes);
    }
    let duration_s = start.elapsed().as_secs_f64();
    m.notes
        .extend(tenant_skew(&workloads, &mut aggregated.metrics));
    // The watchers are gone with the aggregator: the outputs deliver their last batch.
    let delivered = outputs.finish().await;
    m.notes.extend(delivered.notes);
    m.notes.extend(aggregation_notes(&aggregated));
    m.notes.extend(super::scenarios::notes(plan, &runs));
    // `--out-required`: an output that could not deliver fails the run like a threshold.
    m.notes.extend(delivered.failure.clone());
    let interrupted = interrupt.is_cancelled();
    let ending = ending_of(
        aggregated.aborted_by.as_deref(),
        interrupted,
        delivered.failure.is_some(),
    );
    let stop_reason = match &aggregated.aborted_by {
        Some(reason) => Some(reason.clone()),
        None => interrupted.then(crate::signals::stop_reason),
    };
    let measured = Measured {
        duration_s,
        stop_reason,
        ending,
        scope,
        metrics: aggregated.metrics,
        time_series: aggregated.time_series,
        notes: m.notes,
    };
    let mut summary = judged_summary(plan, redact(&target.url), started_at, measured);
    summary.server = breakdown;
    if !plan.scenarios.is_empty() || plan.feeder.is_some() {
        summary.scenarios = runs;
    }
    Ok((summary, started_at))
}

/// The run's aggregator: with the scripts' transaction metrics when it runs scripts, with the
/// `{scenario:NAME}` metrics when it runs several scenarios.
fn aggregator_for(plan: &Plan, config: AggregatorConfig) -> Aggregator {
    if !plan.scenarios.is_empty() {
        let names: Vec<String> = plan.scenarios.iter().map(|p| p.name.clone()).collect();
        return Aggregator::with_scenarios(config, &names);
    }
    if plan.scripts.is_empty() {
        return Aggregator::new(config);
    }
    let names: Vec<String> = plan.scripts.iter().map(|s| s.name.clone()).collect();
    Aggregator::with_extras(config, executor::script_metrics(&names))
}

/// How skewed the drawn tenants were, as two gauges (`tenant_share_top1pct`,
/// `tenant_share_top10pct`) and a note that names the distribution.
fn tenant_skew(
    workloads: &[Arc<Workload>],
    metrics: &mut std::collections::BTreeMap<String, Metric>,
) -> Option<String> {
    let (top1, top10) = crate::workload::tenant_skew(workloads)?;
    for (name, value) in [
        ("tenant_share_top1pct", top1),
        ("tenant_share_top10pct", top10),
    ] {
        let mut gauge = None;
        crate::metrics::summary::GaugeStats::record(&mut gauge, value);
        metrics.insert(name.into(), Metric::Gauge(gauge.expect("recorded")));
    }
    Some(format!(
        "tenants drawn {}: the busiest 1 % of communities took {top1:.1} % of the draws, the busiest 10 % took {top10:.1} %",
        workloads.first()?.tenant_choice().describe()
    ))
}

/// The server's side of the run (src/metrics/server.rs), read through the admin URL when there
/// is one (it may read every role's statistics), else as the application role itself. A fleet
/// instance leaves it out: every instance would see the whole fleet's statements.
async fn server_probe(
    plan: &Plan,
    target: &Target,
    scope: Scope,
) -> Option<crate::metrics::server::Probe> {
    use crate::metrics::server::{Probe, ServerQuery, ServerSource};
    if scope == Scope::Share {
        return None;
    }
    let app = target.url.parse::<tokio_postgres::Config>().ok()?;
    let source = ServerSource {
        stats_url: target
            .admin_url
            .clone()
            .unwrap_or_else(|| target.url.clone()),
        app_role: app.get_user()?.to_owned(),
        pgbouncer_admin_url: target.pgbouncer_admin_url.clone(),
        pgbouncer_database: app.get_dbname().map(str::to_owned),
        queries: plan
            .queries
            .iter()
            .map(|q| ServerQuery {
                name: q.name.clone(),
                sql: q.sql.clone(),
                tenant_scoped: q.tenant_scoped,
            })
            // pgbench scripts' statements, `:var` as `$n`: the server's text either way.
            .chain(plan.scripts.iter().flat_map(|s| {
                s.sql_commands().map(|(name, sql)| ServerQuery {
                    name,
                    sql: sql.parameterized.clone(),
                    tenant_scoped: false,
                })
            }))
            .collect(),
        tenant_sql: crate::workload::SET_TENANT_SQL.to_owned(),
    };
    Some(Probe::begin(source).await)
}

/// What the aggregated numbers say that a reader must know.
fn aggregation_notes(aggregated: &Aggregated) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(Metric::Gauge(wait)) = aggregated.metrics.get("pgbouncer_maxwait") {
        if wait.max >= 5.0 {
            notes.push(format!(
                "clients waited up to {:.1} s for a PgBouncer server connection. A wait near server_login_retry (15 s by default) is PgBouncer pausing after a failed server login: a PAUSE with min_pool_size > 0, or PostgreSQL restarting (see docs/stack.md, PgBouncer findings)",
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
    notes
}
