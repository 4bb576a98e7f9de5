//! `thumper capacity`: the highest arrival rate the target sustains within the SLO.
//!
//! Each step runs the scenario's query mix at a constant arrival rate (open model, so a slow
//! target cannot slow the offered load down). The rate doubles while steps pass, then a
//! bisection narrows the gap between the last passing and the first failing rate. A step
//! passes when p99 (from the intended start) is under the SLO, errors stay under their limit,
//! no more than 1 % of iterations are dropped, and at least 95 % of the offered rate completes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::gate;
use crate::metrics::summary::{Curve, Ending, Metric, Summary, ThresholdResult};
use crate::run::{self, RunError, RunOptions, RunResult};
use crate::scenario::{LoadShape, OnBusy, Stage};

/// Search settings, from the command line.
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    /// p99 limit in milliseconds.
    pub slo_p99_ms: f64,
    /// First arrival rate tried, iterations per second; doubled while steps pass.
    pub start_rate: u32,
    /// Highest arrival rate tried, iterations per second.
    pub max_rate: u32,
    /// Length of each step.
    pub step: Duration,
    /// Most errors (connection + query) a passing step may have.
    pub max_errors: u64,
    /// Bisection steps after the first failing rate.
    pub refine_steps: u32,
}

/// One measured step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Offered arrival rate, iterations per second.
    pub rate: u32,
    /// Queries completed per second over the step's planned length.
    pub achieved: f64,
    /// Median `query_duration`, in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile `query_duration`, in milliseconds.
    pub p99_ms: f64,
    /// Connection and query errors.
    pub errors: u64,
    /// Iterations dropped or left unfinished.
    pub dropped: u64,
    /// Whether the step met the SLO and the error, drop and throughput limits.
    pub pass: bool,
    /// Why the step failed, comma-separated; empty when it passed.
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
    if trend.count == 0 {
        // A p99 of nothing is not 0 ms: say what happened instead.
        why.push("no query completed".to_owned());
    } else if p99_ms >= o.slo_p99_ms {
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
    if !plan.scenarios.is_empty() || plan.feeder.is_some() {
        return Err(RunError::BadInput(format!(
            "{}: capacity searches one scenario's arrival rate; this file has several scenarios or a feeder. Give capacity a single-scenario file without [[feeders]]",
            plan.file
        )));
    }
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
    let (steps, last) = run::target::with_target(&plan.clone(), opts, async |target| {
        let fixed = plan.clone();
        run::scenarios::with_setup(&fixed, target, async || {
            search(&mut plan, opts, capacity, target, pre, max, &interrupt).await
        })
        .await
    })
    .await?;
    let summary = capacity_summary(&plan, capacity, &steps, last, &interrupt);
    let started = time::OffsetDateTime::now_utc();
    let name = summary.scenario.name.clone();
    run::finish(summary, opts.report_to(&name), started)
}

/// The search's one summary: the last step's numbers, the rate curve, a note per step, the
/// capacity found as a gauge; it passes when some rate held the SLO.
fn capacity_summary(
    plan: &crate::scenario::Plan,
    capacity: &CapacityOptions,
    steps: &[Step],
    last: Summary,
    interrupt: &CancellationToken,
) -> Summary {
    let best = steps.iter().filter(|s| s.pass).map(|s| s.rate).max();
    let mut summary = last;
    summary.scenario.name = format!("capacity-{}", plan.name);
    summary.scenario.executor = "capacity search (constant-arrival-rate steps)".into();
    summary.planned_duration_s = capacity.step.as_secs_f64() * steps.len() as f64;
    let mut sorted = steps.to_vec();
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
    // The search passes when some rate held the SLO: its one threshold.
    summary.thresholds = vec![ThresholdResult {
        metric: "capacity_rate".into(),
        expression: format!(
            "value >= {} (a rate held p99 < {} ms)",
            capacity.start_rate, capacity.slo_p99_ms
        ),
        observed: Some(f64::from(best.unwrap_or(0))),
        ok: best.is_some(),
        abort_on_fail: false,
        not_judged: None,
    }];
    summary.ending = if interrupt.is_cancelled() {
        Ending::Interrupted
    } else {
        Ending::RanToPlan
    };
    summary.verdict = gate::verdict(&summary.thresholds, summary.ending);
    summary
}

async fn search(
    plan: &mut crate::scenario::Plan,
    opts: &RunOptions,
    capacity: &CapacityOptions,
    target: &run::target::Target,
    pre: u32,
    max: u32,
    interrupt: &CancellationToken,
) -> Result<(Vec<Step>, Summary), RunError> {
    run::target::prepare_target(plan, opts, target, interrupt).await?;
    let notes = run::target::preflight(&target.url, plan).await?;
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
            let m = run::database::Measure::of(opts, notes);
            let (s, _) = run::database::measure(&plan, target, m, interrupt).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::codec::new_latency_histogram;
    use crate::metrics::summary::{CounterStats, TrendStats};

    const STEP: Duration = Duration::from_secs(10);

    fn options() -> CapacityOptions {
        CapacityOptions {
            slo_p99_ms: 10.0,
            start_rate: 100,
            max_rate: 10_000,
            step: STEP,
            max_errors: 5,
            refine_steps: 3,
        }
    }

    /// A step's summary: `completed` queries, 2 % of them at `slow_us` (so the p99 is that) and
    /// the rest at 1 ms, and the given counters.
    fn step_summary(completed: u64, slow_us: u64, counters: &[(&str, u64)]) -> Summary {
        let mut h = new_latency_histogram();
        for i in 0..completed {
            h.record(if i % 50 == 49 { slow_us } else { 1_000 })
                .unwrap();
        }
        let mut s = Summary::empty();
        s.metrics.insert(
            "query_duration".to_owned(),
            Metric::Trend(TrendStats::from_histogram(&h, STEP.as_secs_f64(), true)),
        );
        for (name, count) in counters {
            s.metrics.insert(
                (*name).to_owned(),
                Metric::Counter(CounterStats {
                    count: *count,
                    ..CounterStats::default()
                }),
            );
        }
        s
    }

    #[test]
    fn a_step_within_the_slo_passes() {
        // 100/s for 10 s offered, all of it completed, p99 at 9 ms.
        let step = judge(100, &step_summary(1_000, 9_000, &[]), &options(), STEP);
        assert!(step.pass, "{}", step.why);
        assert_eq!(step.why, "");
        assert_eq!(step.achieved, 100.0);
        assert!((step.p99_ms - 9.0).abs() < 0.01, "{}", step.p99_ms);
        assert!((step.p50_ms - 1.0).abs() < 0.01, "{}", step.p50_ms);
    }

    #[test]
    fn a_p99_at_or_over_the_slo_fails() {
        for slow_us in [10_000, 25_000] {
            let step = judge(100, &step_summary(1_000, slow_us, &[]), &options(), STEP);
            assert!(!step.pass);
            assert!(
                step.why.starts_with("p99 ") && step.why.contains("≥ 10 ms"),
                "{}",
                step.why
            );
        }
    }

    #[test]
    fn errors_beyond_the_limit_fail_counting_both_kinds() {
        let at_limit = [("connection_errors", 2), ("query_errors", 3)];
        assert!(
            judge(
                100,
                &step_summary(1_000, 2_000, &at_limit),
                &options(),
                STEP
            )
            .pass
        );
        let over = [("connection_errors", 3), ("query_errors", 3)];
        let step = judge(100, &step_summary(1_000, 2_000, &over), &options(), STEP);
        assert!(!step.pass);
        assert_eq!((step.errors, step.why.as_str()), (6, "6 errors"));
    }

    #[test]
    fn more_than_one_percent_dropped_or_unfinished_fails() {
        // 1,000 offered: 10 is 1 % (allowed), 11 is not; dropped and unfinished add up.
        let ok = [("dropped_iterations", 6), ("incomplete_iterations", 4)];
        assert!(judge(100, &step_summary(1_000, 2_000, &ok), &options(), STEP).pass);
        let over = [("dropped_iterations", 6), ("incomplete_iterations", 5)];
        let step = judge(100, &step_summary(1_000, 2_000, &over), &options(), STEP);
        assert!(!step.pass);
        assert_eq!(step.dropped, 11);
        assert_eq!(step.why, "11 iterations dropped or unfinished");
    }

    #[test]
    fn completing_under_95_percent_of_the_offered_rate_fails() {
        assert!(judge(100, &step_summary(950, 2_000, &[]), &options(), STEP).pass);
        let step = judge(100, &step_summary(940, 2_000, &[]), &options(), STEP);
        assert!(!step.pass);
        assert_eq!(step.why, "completed 94/s of 100/s");
    }

    #[test]
    fn a_step_where_nothing_completed_fails_and_says_so() {
        let step = judge(100, &step_summary(0, 0, &[]), &options(), STEP);
        assert!(!step.pass);
        assert_eq!(step.why, "no query completed, completed 0/s of 100/s");
        // No query_duration at all (the target refused every connection) is the same.
        let step = judge(100, &Summary::empty(), &options(), STEP);
        assert!(!step.pass && step.why.starts_with("no query completed"));
    }

    #[test]
    fn every_failed_condition_is_named() {
        let all = [("query_errors", 9), ("dropped_iterations", 50)];
        let step = judge(100, &step_summary(500, 50_000, &all), &options(), STEP);
        assert!(!step.pass);
        assert_eq!(
            step.why,
            "p99 50.02 ms ≥ 10 ms, 9 errors, 50 iterations dropped or unfinished, completed 50/s of 100/s"
        );
    }
}
