//! `thumper capacity`: the highest arrival rate the target sustains within the SLO.
//!
//! Each step runs the scenario's query mix at a constant arrival rate (open model, so a slow
//! target cannot slow the offered load down). The rate doubles while steps pass, then a
//! bisection narrows the gap between the last passing and the first failing rate. A step
//! passes when p99 (from the intended start) is under the SLO, errors stay under their limit,
//! no more than 1 % of iterations are dropped, and at least 95 % of the offered rate completes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::summary::{Curve, Metric, Summary, Verdict};
use crate::run::{self, RunError, RunOptions, RunResult};
use crate::scenario::{LoadShape, OnBusy, Stage};

/// Search settings, from the command line.
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    /// p99 limit in milliseconds.
    pub slo_p99_ms: f64,
    pub start_rate: u32,
    pub max_rate: u32,
    pub step: Duration,
    /// Most errors (connection + query) a passing step may have.
    pub max_errors: u64,
    /// Bisection steps after the first failing rate.
    pub refine_steps: u32,
}

/// One measured step.
#[derive(Debug, Clone)]
pub struct Step {
    pub rate: u32,
    pub achieved: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub dropped: u64,
    pub pass: bool,
    pub why: String,
}

fn judge(rate: u32, s: &Summary, o: &CapacityOptions, step: Duration) -> Step {
    let trend = s.trend("query_duration").cloned().unwrap_or_default();
    let counter = |n: &str| s.counter(n).map_or(0, |c| c.count);
    let errors = counter("connection_errors") + counter("query_errors");
    let dropped = counter("dropped_iterations") + counter("incomplete_iterations");
    let offered = f64::from(rate) * step.as_secs_f64();
    let achieved = trend.count as f64 / step.as_secs_f64();
    let p99_ms = trend.p99_us as f64 / 1e3;
    let mut why = Vec::new();
    if trend.count == 0 || p99_ms >= o.slo_p99_ms {
        why.push(format!("p99 {p99_ms:.2} ms ≥ {} ms", o.slo_p99_ms));
    }
    if errors > o.max_errors {
        why.push(format!("{errors} errors"));
    }
    if dropped as f64 > offered * 0.01 {
        why.push(format!("{dropped} iterations dropped or unfinished"));
    }
    if (trend.count as f64) < offered * 0.95 {
        why.push(format!("completed {achieved:.0}/s of {rate}/s"));
    }
    Step {
        rate,
        achieved,
        p50_ms: trend.p50_us as f64 / 1e3,
        p99_ms,
        errors,
        dropped,
        pass: why.is_empty(),
        why: why.join(", "),
    }
}

/// Runs the search and writes one report for it.
pub async fn run(
    opts: &RunOptions,
    capacity: &CapacityOptions,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    let mut plan = run::load_plan(opts)?;
    let (pre, max) = match plan.load {
        LoadShape::Open {
            pre_allocated_vus,
            max_vus,
            ..
        } => (pre_allocated_vus, max_vus),
        LoadShape::Closed { .. } => (50, 400),
    };
    if capacity.start_rate == 0 || capacity.max_rate < capacity.start_rate {
        return Err(RunError::BadInput(
            "--start-rate must be at least 1 and --max-rate at least --start-rate".into(),
        ));
    }
    plan.think_time = Duration::ZERO;
    plan.thresholds.clear();
    plan.graceful_stop = Duration::from_secs(5);
    let target = run::resolve_target(&plan, opts).await?;
    let result = search(&mut plan, opts, capacity, &target, pre, max, &interrupt).await;
    if let Some(s) = target.owned_stack {
        let _ = s.stop().await;
    }
    let (steps, last) = result?;
    let best = steps.iter().filter(|s| s.pass).map(|s| s.rate).max();
    let mut summary = last;
    summary.scenario.name = format!("capacity-{}", plan.name);
    summary.scenario.executor = "capacity search (constant-arrival-rate steps)".into();
    summary.planned_duration_s = capacity.step.as_secs_f64() * steps.len() as f64;
    let mut sorted = steps.clone();
    sorted.sort_by_key(|s| s.rate);
    let points = |f: &dyn Fn(&Step) -> f64| -> Vec<(f64, f64)> {
        sorted.iter().map(|s| (f64::from(s.rate), f(s))).collect()
    };
    summary.curves = vec![Curve {
        name: "Latency against arrival rate".into(),
        x_label: "arrival rate (iterations/s)".into(),
        y_label: "latency (ms)".into(),
        series: [
            ("p50".to_owned(), points(&|s| s.p50_ms)),
            ("p99".to_owned(), points(&|s| s.p99_ms)),
            (
                format!("SLO {} ms", capacity.slo_p99_ms),
                points(&|_| capacity.slo_p99_ms),
            ),
        ]
        .into_iter()
        .collect(),
    }];
    summary.notes =
        sorted
            .iter()
            .map(|s| {
                format!(
                "{} /s: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, {} dropped: {}",
                s.rate,
                s.achieved,
                s.p50_ms,
                s.p99_ms,
                s.errors,
                s.dropped,
                if s.pass { "pass".to_owned() } else { format!("fail ({})", s.why) }
            )
            })
            .collect();
    summary.notes.insert(
        0,
        match best {
            Some(r) => format!(
                "capacity: {r} iterations/s sustained with p99 < {} ms (steps of {:?})",
                capacity.slo_p99_ms, capacity.step
            ),
            None => format!(
                "capacity: not even {} iterations/s stayed within p99 < {} ms",
                capacity.start_rate, capacity.slo_p99_ms
            ),
        },
    );
    summary.metrics.insert(
        "capacity_rate".into(),
        Metric::Gauge(crate::metrics::summary::GaugeStats {
            last: f64::from(best.unwrap_or(0)),
            min: f64::from(best.unwrap_or(0)),
            max: f64::from(best.unwrap_or(0)),
            samples: 1,
        }),
    );
    summary.verdict = if interrupt.is_cancelled() {
        Verdict::Interrupted
    } else if best.is_some() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let started = time::OffsetDateTime::now_utc();
    let report_dir = run::report_folder(&opts.report_dir, &summary.scenario.name, started);
    run::write_reports(&summary, &report_dir, opts.summary_md.as_deref())?;
    Ok(RunResult {
        summary,
        report_dir,
    })
}

async fn search(
    plan: &mut crate::scenario::Plan,
    opts: &RunOptions,
    capacity: &CapacityOptions,
    target: &run::Target,
    pre: u32,
    max: u32,
    interrupt: &CancellationToken,
) -> Result<(Vec<Step>, Summary), RunError> {
    run::prepare_target(plan, opts, target, interrupt).await?;
    let notes = run::preflight(&target.url, plan).await?;
    let mut steps: Vec<Step> = Vec::new();
    let mut last_summary = None;
    let measure = |rate: u32, plan: &mut crate::scenario::Plan| {
        plan.load = LoadShape::Open {
            start_rate: rate,
            stages: vec![Stage {
                duration: capacity.step,
                target: rate,
            }],
            time_unit: Duration::from_secs(1),
            pre_allocated_vus: pre.max(1),
            max_vus: max.max(pre.max(1)),
            on_busy: OnBusy::Drop,
        };
        let plan = plan.clone();
        let notes = notes.clone();
        let interrupt = interrupt.clone();
        async move {
            let (s, _) = run::measure(&plan, opts, target, notes, interrupt).await?;
            Ok::<_, RunError>(s)
        }
    };
    let mut rate = capacity.start_rate;
    let mut good: Option<u32> = None;
    let mut bad: Option<u32> = None;
    while rate <= capacity.max_rate && !interrupt.is_cancelled() {
        let s = measure(rate, plan).await?;
        let step = judge(rate, &s, capacity, capacity.step);
        eprintln!(
            "thumper capacity: {rate}/s → p99 {:.2} ms, {}",
            step.p99_ms,
            if step.pass {
                "pass".into()
            } else {
                format!("fail ({})", step.why)
            }
        );
        let pass = step.pass;
        steps.push(step);
        last_summary = Some(s);
        if pass {
            good = Some(rate);
            rate = rate.saturating_mul(2);
        } else {
            bad = Some(rate);
            break;
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (good, bad) {
        for _ in 0..capacity.refine_steps {
            if interrupt.is_cancelled() || hi - lo <= lo / 10 {
                break;
            }
            let mid = lo + (hi - lo) / 2;
            let s = measure(mid, plan).await?;
            let step = judge(mid, &s, capacity, capacity.step);
            eprintln!(
                "thumper capacity: {mid}/s → p99 {:.2} ms, {}",
                step.p99_ms,
                if step.pass {
                    "pass".into()
                } else {
                    format!("fail ({})", step.why)
                }
            );
            if step.pass {
                lo = mid;
            } else {
                hi = mid;
            }
            steps.push(step);
            last_summary = Some(s);
        }
    }
    let last = last_summary.ok_or_else(|| RunError::Failed("no capacity step ran".into()))?;
    Ok((steps, last))
}
