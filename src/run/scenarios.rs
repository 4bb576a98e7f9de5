//! The scenarios of one run: each its own workload, connector, feeder and executor, started at
//! its `start_time` or when the scenario it follows ends, all recording into the run's one
//! aggregator. A single-scenario file is the one-part case of the same code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::target::Target;
use super::RunError;
use crate::executor::{self, Connector, RunContext, WarmStart};
use crate::metrics::recorder::{Recorder, SampleKind, Samples};
use crate::metrics::summary::ScenarioRun;
use crate::scenario::{FeedSource, Plan, Segment, Start};
use crate::workload::feed::Feed;
use crate::workload::Workload;

/// One scenario ready to start: everything that can fail or take time is done before the clock.
pub struct Part<'p> {
    plan: &'p Plan,
    /// The scenario's workload (its tenant draws are counted there).
    pub workload: Arc<Workload>,
    connector: Connector,
    warm: WarmStart,
    feed: Option<Feed>,
}

/// Builds every scenario's workload and connector, reads its feeder (a SQL feeder's query runs
/// now, after `[setup]`) and opens its pre-allocated connections.
pub async fn prepare<'p>(
    plan: &'p Plan,
    target: &Target,
    segment: Segment,
) -> Result<Vec<Part<'p>>, RunError> {
    let mut parts = Vec::new();
    for part in plan.parts() {
        let workload = Workload::of_plan(part, clients(part)).map_err(RunError::BadInput)?;
        let connector =
            Connector::new(&target.url, part).map_err(|e| RunError::BadInput(e.to_string()))?;
        let feed = match part.feeder {
            Some(f) => Some(feed(plan, part, f, target, segment).await?),
            None => None,
        };
        let warm = executor::warm_up(part, &connector).await;
        parts.push(Part {
            plan: part,
            workload,
            connector,
            warm,
            feed,
        });
    }
    Ok(parts)
}

/// The most VUs the plan can run: each may be a pgbench client with a session of its own.
fn clients(plan: &Plan) -> usize {
    match plan.load {
        crate::scenario::LoadShape::Closed { .. } => plan.load.peak() as usize,
        crate::scenario::LoadShape::Open { max_vus, .. } => max_vus as usize,
    }
}

async fn feed(
    plan: &Plan,
    part: &Plan,
    index: usize,
    target: &Target,
    segment: Segment,
) -> Result<Feed, RunError> {
    let def = &plan.feeders[index];
    let bad = |e: String| RunError::BadInput(format!("{}: {e}", plan.file));
    match &def.source {
        FeedSource::Csv { columns, rows, .. } => Feed::new(
            def,
            columns,
            rows,
            &part.feed_columns,
            segment,
            plan.dataset.seed,
        )
        .map_err(bad),
        FeedSource::Sql(sql) => {
            let (header, rows) = sql_rows(target, sql).await.map_err(|e| {
                RunError::Failed(format!("{}: feeder \"{}\": {e}", plan.file, def.name))
            })?;
            Feed::new(
                def,
                &header,
                &rows,
                &part.feed_columns,
                segment,
                plan.dataset.seed,
            )
            .map_err(bad)
        }
    }
}

/// The rows of a SQL feeder as text (NULL as an empty string), with its column names. Run as
/// the owner role when thumper knows it, so that row-level security hides no rows.
async fn sql_rows(target: &Target, sql: &str) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let url = target.admin_url.as_deref().unwrap_or(&target.url);
    let client = crate::db::connect(url, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| crate::db::describe(&e))?;
    let (mut header, mut rows) = (Vec::new(), Vec::new());
    for m in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
            if header.is_empty() {
                header = row.columns().iter().map(|c| c.name().to_owned()).collect();
            }
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or_default().to_owned())
                    .collect(),
            );
        }
    }
    Ok((header, rows))
}

/// What [`drive`] shares with every scenario.
pub struct Drive {
    /// t = 0 of the run.
    pub run_start: Instant,
    /// The aggregator's channel.
    pub samples: Samples,
    /// The run's VUs (the scenarios' added up), read by the aggregator.
    pub vus: Arc<AtomicU64>,
    /// This instance's share of a fleet run.
    pub segment: Segment,
}

/// Runs every scenario from its start to its end (or until `stop`) and says when each ran.
pub async fn drive(parts: Vec<Part<'_>>, d: Drive, stop: CancellationToken) -> Vec<ScenarioRun> {
    let multi = parts.len() > 1;
    let done: Vec<CancellationToken> = parts.iter().map(|_| CancellationToken::new()).collect();
    let vus: Vec<Arc<AtomicU64>> = if multi {
        parts.iter().map(|_| Arc::default()).collect()
    } else {
        vec![d.vus.clone()]
    };
    let poll_stop = CancellationToken::new();
    let poller = multi.then(|| {
        let names = parts.iter().map(|p| p.plan.name.clone()).collect();
        tokio::spawn(poll_vus(
            names,
            vus.clone(),
            d.vus.clone(),
            Recorder::new(d.run_start, d.samples.clone()),
            poll_stop.clone(),
        ))
    });
    let runs = parts.into_iter().enumerate().map(|(i, part)| {
        let ctx = RunContext {
            start: d.run_start,
            run_start: d.run_start,
            scenario: multi.then_some(i as u16),
            query_offset: part.plan.query_offset as u16,
            workload: part.workload,
            connector: part.connector,
            think_time: part.plan.think_time,
            min_backoff: part.plan.min_backoff,
            max_backoff: part.plan.max_backoff,
            samples: d.samples.clone(),
            segment: d.segment,
            warm: part.warm,
            feed: part.feed,
            exhausted: CancellationToken::new(),
            iterations_per_vu: part.plan.iterations_per_vu,
        };
        run_one(part.plan, ctx, vus[i].clone(), &done, i, stop.clone())
    });
    let runs = join_all(runs).await;
    drop(d.samples);
    poll_stop.cancel();
    if let Some(p) = poller {
        let _ = p.await;
    }
    runs
}

/// Waits for a scenario's start, runs it, and marks it done for those that start after it.
async fn run_one(
    plan: &Plan,
    mut ctx: RunContext,
    vus: Arc<AtomicU64>,
    done: &[CancellationToken],
    index: usize,
    stop: CancellationToken,
) -> ScenarioRun {
    let run_start = ctx.run_start;
    let since = |t: Instant| t.saturating_duration_since(run_start).as_secs_f64();
    let mut run = ScenarioRun {
        name: plan.name.clone(),
        executor: plan.executor.clone(),
        ..ScenarioRun::default()
    };
    match plan.start {
        Start::At(t) => tokio::select! {
            _ = tokio::time::sleep_until((run_start + t).into()) => {}
            _ = stop.cancelled() => {}
        },
        Start::After(j) => tokio::select! {
            _ = done[j].cancelled() => {}
            _ = stop.cancelled() => {}
        },
    }
    if stop.is_cancelled() {
        done[index].cancel();
        run.ending = "not_started".into();
        run.start_s = since(Instant::now());
        run.end_s = run.start_s;
        return run;
    }
    // A timed start is its scheduled instant (t = 0 is the run's own), so an open model's
    // timetable is not shifted by the wake-up.
    ctx.start = match plan.start {
        Start::At(t) => run_start + t,
        Start::After(_) => Instant::now(),
    };
    run.start_s = since(ctx.start);
    let exhausted = ctx.exhausted.clone();
    executor::execute(plan, Arc::new(ctx), vus, stop.clone()).await;
    run.end_s = since(Instant::now());
    run.ending = if exhausted.is_cancelled() {
        "rows_ran_out"
    } else if stop.is_cancelled() {
        "stopped"
    } else {
        "ran_to_plan"
    }
    .into();
    done[index].cancel();
    run
}

/// Adds the scenarios' VUs up for the run's `vus`, and records each as `vus{scenario:NAME}`
/// once a second.
async fn poll_vus(
    names: Vec<String>,
    parts: Vec<Arc<AtomicU64>>,
    total: Arc<AtomicU64>,
    mut recorder: Recorder,
    stop: CancellationToken,
) {
    // Gauge names are static: a few bytes per scenario, once per run.
    let gauges: Vec<&'static str> = names
        .iter()
        .map(|n| &*Box::leak(format!("vus{{scenario:{n}}}").into_boxed_str()))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let each: Vec<u64> = parts.iter().map(|v| v.load(Ordering::Relaxed)).collect();
        total.store(each.iter().sum(), Ordering::Relaxed);
        if n.is_multiple_of(10) {
            let now = Instant::now();
            for (name, v) in gauges.iter().zip(&each) {
                recorder.push(
                    now,
                    SampleKind::Gauge {
                        name,
                        value: *v as f64,
                    },
                );
            }
        }
        n += 1;
    }
    total.store(0, Ordering::Relaxed);
}

/// Notes on how the scenarios ended that a reader must know.
pub fn notes(plan: &Plan, runs: &[ScenarioRun]) -> Vec<String> {
    runs.iter()
        .zip(plan.parts())
        .filter(|(r, _)| r.ending == "rows_ran_out")
        .map(|(r, p)| {
            let feeder = p.feeder.map_or("", |f| plan.feeders[f].name.as_str());
            format!(
                "scenario {} ended at {:.1} s: its feeder \"{feeder}\" ran out of rows (each row is used once); not an error",
                r.name, r.end_s
            )
        })
        .collect()
}

/// Runs `[setup]`, then `f`, then `[teardown]` whatever `f` returned: a run that ran to plan,
/// was interrupted (Ctrl-C, SIGTERM: `f` still returns its summary) or stopped by a threshold
/// abort, or failed. Once per run: a fleet's coordinator calls it, its workers do not.
pub async fn with_setup<T>(
    plan: &Plan,
    target: &Target,
    f: impl AsyncFnOnce() -> Result<T, RunError>,
) -> Result<T, RunError> {
    if let Some(sql) = &plan.setup {
        run_sql(target, sql)
            .await
            .map_err(|e| RunError::Failed(format!("{}: [setup]: {e}", plan.file)))?;
    }
    let result = f().await;
    teardown(plan, target).await;
    result
}

/// Runs `[teardown]`, if any; a failure is told, not fatal (the run is over).
pub async fn teardown(plan: &Plan, target: &Target) {
    if let Some(sql) = &plan.teardown {
        if let Err(e) = run_sql(target, sql).await {
            eprintln!("thumper: {}: [teardown] failed: {e}", plan.file);
        }
    }
}

/// Runs set-up SQL, as the owner role when thumper knows it (it may create what the
/// application role may not), else as the application role.
pub async fn run_sql(target: &Target, sql: &str) -> Result<(), String> {
    let url = target.admin_url.as_deref().unwrap_or(&target.url);
    let client = crate::db::connect(url, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    client
        .batch_execute(sql)
        .await
        .map_err(|e| crate::db::describe(&e))
}
