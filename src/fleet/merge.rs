//! One summary from the instances of a fleet run: counters summed, HDR histograms merged (so
//! percentiles are the fleet's, never an average of percentiles), intervals merged by index, and
//! every threshold judged again on the merged data by the same gate. Each instance also gets a
//! line of the fleet's per-generator breakdown ([`Summary::instances`], see [`breakdown`]).

use std::collections::BTreeMap;

use super::breakdown;
use crate::gate;
use crate::metrics::summary::{
    CounterStats, Ending, GaugeStats, InstanceState, InstanceStats, Interval, IntervalTrend,
    Metric, RateStats, ScenarioRun, Summary, TrendStats, Verdict,
};
use crate::metrics::{codec, process};

/// Why instance summaries cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No summaries were given.
    #[error("nothing to merge: give at least one instance summary")]
    Empty,
    /// The summaries are of different scenarios.
    #[error("instance {index} ran scenario `{found}`, the first ran `{expected}`: merge the instances of one run")]
    OtherScenario {
        /// Position of the odd summary in the list (from 0).
        index: usize,
        /// The first summary's scenario name.
        expected: String,
        /// The odd summary's scenario name.
        found: String,
    },
    /// A trend's histogram cannot be decoded or added to the others.
    #[error("{metric}: {reason}")]
    Histogram {
        /// The trend.
        metric: String,
        /// The codec's or HdrHistogram's error.
        reason: String,
    },
    /// A summary's threshold no longer parses, so it cannot be judged again.
    #[error("threshold {metric}: {expression}: {reason}")]
    Threshold {
        /// The threshold's metric key.
        metric: String,
        /// The threshold's expression.
        expression: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// Gauges that are not summed over instances: one shared source (the PgBouncer every instance
/// loads: each read the same pool), or one generator's own process (CPU, memory), where the
/// fleet's value is its worst generator's, so `generator_cpu_percent = ["max < 95"]` holds only
/// when no generator saturated. Per-instance gauges (VUs) add up.
fn shared_gauge(name: &str) -> bool {
    name.starts_with("pgbouncer_") || name.starts_with("generator_")
}

/// Merges instance summaries into the fleet's, judged on the merged data by the thresholds the
/// instances ran with.
pub fn merge(instances: &[Summary]) -> Result<Summary, MergeError> {
    let mut summary = combine(instances)?;
    let thresholds = instances[0]
        .thresholds
        .iter()
        .map(|t| reparse(&t.metric, &t.expression, t.abort_on_fail))
        .collect::<Result<Vec<_>, _>>()?;
    let (ending, why) = fleet_ending(instances);
    if let Some(why) = why {
        summary.stop_reason = Some(why);
    }
    summary.ending = ending;
    judge(&mut summary, &thresholds);
    Ok(summary)
}

/// Evaluates `thresholds` on a merged summary (the fleet's totals: every threshold is judged,
/// the additive ones included) and sets its verdict from them and its ending.
pub fn judge(summary: &mut Summary, thresholds: &[gate::Threshold]) {
    summary.thresholds = gate::evaluate(thresholds, summary);
    summary.verdict = gate::verdict(&summary.thresholds, summary.ending);
}

/// An instance that stopped this long before its planned end ran short of its plan.
const SHORT_OF_PLAN_S: f64 = 1.0;

/// How one instance ended, also for a summary written before endings were recorded.
fn instance_ending(s: &Summary) -> Ending {
    match (s.ending, s.verdict) {
        (Ending::RanToPlan, Verdict::Interrupted) => Ending::Interrupted,
        (Ending::RanToPlan, Verdict::Fail) if s.stop_reason.is_some() => Ending::Threshold,
        (Ending::RanToPlan, _)
            if s.duration_s + SHORT_OF_PLAN_S < s.planned_duration_s && !ended_on_its_own(s) =>
        {
            Ending::ShortOfPlan
        }
        (ending, _) => ending,
    }
}

/// Whether every scenario of an instance ended by itself, some because its feeder ran out of
/// rows: a run that ends early that way ran its plan.
fn ended_on_its_own(s: &Summary) -> bool {
    s.scenarios.iter().any(|r| r.ending == "rows_ran_out")
        && s.scenarios
            .iter()
            .all(|r| matches!(r.ending.as_str(), "rows_ran_out" | "ran_to_plan"))
}

/// The fleet's scenarios: each from its earliest start to its latest end on any instance; it
/// ran out of rows if it did anywhere, else it ended as the first instance says.
fn merged_scenarios(instances: &[Summary]) -> Vec<ScenarioRun> {
    let Some(first) = instances.first() else {
        return Vec::new();
    };
    first
        .scenarios
        .iter()
        .map(|r| {
            let same = instances
                .iter()
                .flat_map(|s| s.scenarios.iter().filter(|o| o.name == r.name));
            let mut merged = r.clone();
            for o in same {
                merged.start_s = merged.start_s.min(o.start_s);
                merged.end_s = merged.end_s.max(o.end_s);
                if o.ending == "rows_ran_out" {
                    merged.ending = o.ending.clone();
                }
            }
            merged
        })
        .collect()
}

/// How the fleet ended: as its instances did. One that did not run to plan decides it (a
/// threshold or a failed output before a lost worker, a signal, a short run), with the reason
/// naming the instance. A fleet whose instances stopped early cannot pass.
pub fn fleet_ending(instances: &[Summary]) -> (Ending, Option<String>) {
    let rank = |e: Ending| match e {
        Ending::Threshold | Ending::OutputFailed => 0,
        Ending::WorkerLost => 1,
        Ending::Interrupted => 2,
        Ending::ShortOfPlan => 3,
        Ending::RanToPlan => 4,
    };
    let n = instances.len();
    instances
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s, instance_ending(s)))
        .filter(|(_, _, e)| *e != Ending::RanToPlan)
        .min_by_key(|(_, _, e)| rank(*e))
        .map_or((Ending::RanToPlan, None), |(i, s, e)| {
            let segment = breakdown::segment_from_notes(&s.notes)
                .map_or_else(|| format!("{i}/{n}"), |seg| seg.to_string());
            let why = match &s.stop_reason {
                Some(r) => r.clone(),
                None => format!(
                    "ran {:.1} s of its planned {:.1} s",
                    s.duration_s, s.planned_duration_s
                ),
            };
            (
                e,
                Some(format!(
                    "instance {segment} stopped before the fleet's plan ({}): {why}",
                    e.as_str().replace('_', " ")
                )),
            )
        })
}

/// The fleet's data from its instances' summaries, not yet judged.
pub fn combine(instances: &[Summary]) -> Result<Summary, MergeError> {
    let first = instances.first().ok_or(MergeError::Empty)?;
    for (index, s) in instances.iter().enumerate() {
        if s.scenario.name != first.scenario.name {
            return Err(MergeError::OtherScenario {
                index,
                expected: first.scenario.name.clone(),
                found: s.scenario.name.clone(),
            });
        }
    }
    let stats = breakdown(instances);
    let notes = merged_notes(instances, &stats);
    let duration_s = instances.iter().map(|s| s.duration_s).fold(0.0, f64::max);
    let mut metrics: BTreeMap<String, Metric> = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> =
        instances.iter().flat_map(|s| s.metrics.keys()).collect();
    for name in names {
        let parts: Vec<&Metric> = instances
            .iter()
            .filter_map(|s| s.metrics.get(name))
            .collect();
        metrics.insert(name.clone(), merge_metric(name, &parts, duration_s)?);
    }
    Ok(Summary {
        scenario: first.scenario.clone(),
        target: first.target.clone(),
        started_at: instances
            .iter()
            .map(|s| s.started_at.clone())
            .min()
            .unwrap_or_default(),
        duration_s,
        planned_duration_s: first.planned_duration_s,
        stop_reason: instances.iter().find_map(|s| s.stop_reason.clone()),
        metrics,
        time_series: merge_series(instances)?,
        notes,
        curves: Vec::new(),
        instances: stats,
        scenarios: merged_scenarios(instances),
        ..Summary::empty()
    })
}

/// Each instance's line of the breakdown, in input order: its segment from its worker note (or
/// its position), Interrupted when it stopped early on its own.
fn breakdown(instances: &[Summary]) -> Vec<InstanceStats> {
    let fleet_start = instances.iter().filter_map(breakdown::started_at).min();
    let n = instances.len();
    instances
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let segment = breakdown::segment_from_notes(&s.notes)
                .map_or_else(|| format!("{i}/{n}"), |seg| seg.to_string());
            let state = if s.verdict == Verdict::Interrupted {
                InstanceState::Interrupted
            } else {
                InstanceState::Finished
            };
            breakdown::instance_stats(s, state, fleet_start, &segment, "")
        })
        .collect()
}

/// The instances' notes under their segments, without what the breakdown now says (each
/// worker's `instance I/N of a fleet run` note and its own saturation note), then the fleet's
/// note on saturated generators.
fn merged_notes(instances: &[Summary], stats: &[InstanceStats]) -> Vec<String> {
    let mut notes: Vec<String> = instances
        .iter()
        .zip(stats)
        .flat_map(|(s, stat)| {
            s.notes
                .iter()
                .filter(|n| !breakdown::is_instance_note(n) && !process::is_saturation_note(n))
                .map(move |n| format!("instance {}: {n}", stat.segment))
        })
        .collect();
    notes.extend(breakdown::saturation_note(stats));
    notes
}

/// A threshold as the summary wrote it, parsed again for the merged data.
pub(crate) fn reparse(
    metric: &str,
    expression: &str,
    abort_on_fail: bool,
) -> Result<gate::Threshold, MergeError> {
    let bad = |reason: String| MergeError::Threshold {
        metric: metric.to_owned(),
        expression: expression.to_owned(),
        reason,
    };
    let (name, key) = gate::split_metric_key(metric).map_err(bad)?;
    let kind = gate::metric_kind(&name).ok_or_else(|| bad("unknown metric".into()))?;
    let (aggregation, op, value) = gate::parse_expression(expression, kind).map_err(bad)?;
    Ok(gate::Threshold {
        metric: key,
        expression: expression.to_owned(),
        aggregation,
        op,
        value,
        abort_on_fail,
        delay_abort_eval: std::time::Duration::ZERO,
    })
}

fn decode(name: &str, text: &str) -> Result<hdrhistogram::Histogram<u64>, MergeError> {
    codec::decode(text).map_err(|e| MergeError::Histogram {
        metric: name.to_owned(),
        reason: e.to_string(),
    })
}

fn add(
    name: &str,
    into: &mut Option<hdrhistogram::Histogram<u64>>,
    text: &str,
) -> Result<(), MergeError> {
    if text.is_empty() {
        return Ok(());
    }
    let h = decode(name, text)?;
    match into {
        Some(total) => total.add(&h).map_err(|e| MergeError::Histogram {
            metric: name.to_owned(),
            reason: format!("{e:?}"),
        })?,
        None => *into = Some(h),
    }
    Ok(())
}

fn merge_metric(name: &str, parts: &[&Metric], duration_s: f64) -> Result<Metric, MergeError> {
    Ok(match parts[0] {
        Metric::Trend(first) => {
            let mut hist = None;
            let mut count = 0;
            for p in parts {
                if let Metric::Trend(t) = p {
                    add(name, &mut hist, &t.histogram)?;
                    count += t.count;
                }
            }
            let mut stats = match &hist {
                Some(h) => TrendStats::from_histogram(h, duration_s, true),
                None => TrendStats::default(),
            };
            // A trend carried without its histogram keeps at least its count.
            stats.count = stats.count.max(count);
            stats.unit = first.unit.clone();
            Metric::Trend(stats)
        }
        Metric::Counter(_) => {
            let mut total = CounterStats::default();
            for p in parts {
                if let Metric::Counter(c) = p {
                    total.count += c.count;
                    for (class, n) in &c.by_class {
                        *total.by_class.entry(class.clone()).or_default() += n;
                    }
                }
            }
            total.rate_per_s = if duration_s > 0.0 {
                total.count as f64 / duration_s
            } else {
                0.0
            };
            Metric::Counter(total)
        }
        Metric::Rate(_) => {
            let (mut passes, mut fails) = (0, 0);
            for p in parts {
                if let Metric::Rate(r) = p {
                    passes += r.passes;
                    fails += r.fails;
                }
            }
            let total = passes + fails;
            Metric::Rate(RateStats {
                rate: if total > 0 {
                    passes as f64 / total as f64
                } else {
                    0.0
                },
                passes,
                fails,
            })
        }
        Metric::Gauge(_) => {
            let gauges: Vec<&GaugeStats> = parts
                .iter()
                .filter_map(|p| match p {
                    Metric::Gauge(g) => Some(g),
                    _ => None,
                })
                .collect();
            let combine = |f: fn(&GaugeStats) -> f64| -> f64 {
                if shared_gauge(name) {
                    gauges.iter().map(|g| f(g)).fold(f64::MIN, f64::max)
                } else {
                    gauges.iter().map(|g| f(g)).sum()
                }
            };
            Metric::Gauge(GaugeStats {
                last: combine(|g| g.last),
                min: combine(|g| g.min),
                max: combine(|g| g.max),
                samples: gauges.iter().map(|g| g.samples).max().unwrap_or(0),
            })
        }
    })
}

/// Intervals merged by index: counts summed, histograms merged, VUs summed.
fn merge_series(instances: &[Summary]) -> Result<Vec<Interval>, MergeError> {
    let len = instances
        .iter()
        .map(|s| s.time_series.len())
        .max()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let points: Vec<&Interval> = instances
            .iter()
            .filter_map(|s| s.time_series.get(i))
            .collect();
        let mut merged = Interval {
            t_s: points.iter().map(|p| p.t_s).fold(0.0, f64::max),
            len_s: points.iter().map(|p| p.len_s).fold(0.0, f64::max),
            vus: points.iter().map(|p| p.vus).sum(),
            ..Interval::default()
        };
        let mut hists: BTreeMap<&String, Option<hdrhistogram::Histogram<u64>>> = BTreeMap::new();
        for p in &points {
            for (name, n) in &p.counters {
                *merged.counters.entry(name.clone()).or_default() += n;
            }
            for (name, t) in &p.trends {
                add(name, hists.entry(name).or_default(), &t.histogram)?;
            }
            for (name, v) in &p.gauges {
                let g = merged.gauges.entry(name.clone()).or_insert(0.0);
                *g = if shared_gauge(name) {
                    g.max(*v)
                } else {
                    *g + v
                };
            }
        }
        for (name, h) in hists {
            if let Some(h) = h {
                merged
                    .trends
                    .insert(name.clone(), IntervalTrend::from_histogram(&h));
            }
        }
        out.push(merged);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::summary::ThresholdResult;

    fn instance(values: &[u64], errors: u64) -> Summary {
        let mut h = codec::new_latency_histogram();
        for v in values {
            h.record(*v).unwrap();
        }
        let mut s = Summary::empty();
        s.scenario.name = "steady".into();
        s.duration_s = 10.0;
        s.metrics.insert(
            "query_duration".into(),
            Metric::Trend(TrendStats::from_histogram(&h, 10.0, true)),
        );
        s.metrics.insert(
            "query_errors".into(),
            Metric::Counter(CounterStats {
                count: errors,
                rate_per_s: errors as f64 / 10.0,
                by_class: BTreeMap::from([("57014 query_canceled".to_owned(), errors)]),
            }),
        );
        s.thresholds = vec![
            ThresholdResult {
                metric: "query_errors".into(),
                expression: "count < 10".into(),
                observed: Some(errors as f64),
                ok: errors < 10,
                abort_on_fail: false,
                not_judged: None,
            },
            ThresholdResult {
                metric: "query_duration".into(),
                expression: "p(50) < 100".into(),
                observed: None,
                ok: true,
                abort_on_fail: false,
                not_judged: None,
            },
        ];
        s.time_series = vec![Interval {
            t_s: 1.0,
            len_s: 1.0,
            vus: 2,
            counters: BTreeMap::from([("queries".to_owned(), values.len() as u64)]),
            trends: BTreeMap::from([(
                "query_duration".to_owned(),
                IntervalTrend::from_histogram(&h),
            )]),
            gauges: BTreeMap::new(),
        }];
        s
    }

    #[test]
    fn percentiles_come_from_the_merged_histogram_not_an_average() {
        // One instance all at 10 µs, the other all at 1,000 µs: the fleet's p50 is one of them,
        // never the 505 µs an average of percentiles would give.
        let a = instance(&[10; 60], 0);
        let b = instance(&[1000; 40], 0);
        let m = merge(&[a, b]).unwrap();
        let Some(Metric::Trend(t)) = m.metrics.get("query_duration") else {
            panic!()
        };
        assert_eq!(t.count, 100);
        assert_eq!(t.p50_us, 10);
        assert!((995..=1001).contains(&t.p99_us), "{}", t.p99_us);
        assert_eq!(m.time_series[0].counters["queries"], 100);
        assert_eq!(m.time_series[0].vus, 4);
        assert_eq!(m.time_series[0].trends["query_duration"].count, 100);
    }

    #[test]
    fn a_threshold_only_the_sum_breaks_fails_the_fleet() {
        let m = merge(&[instance(&[10], 6), instance(&[10], 6)]).unwrap();
        let Some(Metric::Counter(c)) = m.metrics.get("query_errors") else {
            panic!()
        };
        assert_eq!(c.count, 12);
        assert_eq!(c.by_class["57014 query_canceled"], 12);
        assert!(!m.thresholds[0].ok, "6 + 6 errors break count < 10");
        assert_eq!(m.thresholds[0].observed, Some(12.0));
        assert_eq!(m.verdict, Verdict::Fail);
    }

    #[test]
    fn a_fleet_whose_instances_stopped_early_cannot_pass() {
        // Each instance judged the fleet's rate on its share and aborted after 3 s of 30: the
        // merged numbers hold every threshold, but the fleet did not run its plan.
        let aborted = |verdict_only: bool| {
            let mut s = instance(&[10; 300], 0);
            s.planned_duration_s = 30.0;
            s.duration_s = 3.0;
            s.verdict = Verdict::Fail;
            s.stop_reason = Some("threshold queries: rate > 150 failed".into());
            if !verdict_only {
                s.ending = Ending::Threshold;
            }
            s
        };
        let m = merge(&[aborted(false), aborted(false)]).unwrap();
        assert!(m.thresholds.iter().all(|t| t.ok));
        assert_eq!(m.verdict, Verdict::Fail);
        assert_eq!(m.ending, Ending::Threshold);
        let reason = m.stop_reason.unwrap();
        assert!(
            reason.contains("instance 0/2") && reason.contains("rate > 150"),
            "{reason}"
        );
        // Summaries written before endings were recorded say it with verdict and reason.
        let m = merge(&[aborted(true), aborted(true)]).unwrap();
        assert_eq!(m.verdict, Verdict::Fail);
        // An instance that ended short of its plan without a reason: interrupted, named.
        let mut short = instance(&[10; 30], 0);
        short.planned_duration_s = 30.0;
        short.duration_s = 3.0;
        let mut full = instance(&[10; 300], 0);
        full.planned_duration_s = 30.0;
        full.duration_s = 30.2;
        let m = merge(&[full.clone(), short]).unwrap();
        assert_eq!(m.verdict, Verdict::Interrupted);
        assert!(m.stop_reason.unwrap().contains("instance 1/2"));
        let m = merge(&[full.clone(), full]).unwrap();
        assert_eq!((m.verdict, m.ending), (Verdict::Pass, Ending::RanToPlan));
    }

    #[test]
    fn every_instance_gets_a_line_of_the_breakdown() {
        let mut a = instance(&[10; 30], 1);
        let mut b = instance(&[20; 50], 0);
        let mut c = instance(&[30; 20], 4);
        for (k, s) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
            s.started_at = format!("2025-01-15T10:30:00.{}00Z", 3 - k);
            s.notes = vec![
                format!("instance {k}/3 of a fleet run: this report holds its share of the scenario; `thumper merge` judges the fleet"),
                "preflight: fine".to_owned(),
            ];
            s.metrics.insert(
                "queries".into(),
                Metric::Counter(CounterStats {
                    count: s.trend("query_duration").unwrap().count,
                    ..CounterStats::default()
                }),
            );
        }
        // The second instance's generator was pinned while it loaded, and said so itself.
        b.time_series = (0..4)
            .map(|_| Interval {
                vus: 2,
                len_s: 1.0,
                gauges: BTreeMap::from([(process::CPU_GAUGE.to_owned(), 97.0)]),
                ..Interval::default()
            })
            .collect();
        b.notes.extend(process::saturation_note(&b.time_series));
        c.verdict = Verdict::Interrupted;
        // Given out of order: segments come from the workers' notes, not positions.
        let m = combine(&[c, a, b]).unwrap();
        let lines: Vec<(&str, InstanceState, u64, u64)> = m
            .instances
            .iter()
            .map(|i| (i.segment.as_str(), i.state, i.queries, i.errors))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("2/3", InstanceState::Interrupted, 20, 4),
                ("0/3", InstanceState::Finished, 30, 1),
                ("1/3", InstanceState::Finished, 50, 0),
            ]
        );
        assert_eq!(m.instances.iter().map(|i| i.queries).sum::<u64>(), 100);
        assert_eq!(m.instances.iter().map(|i| i.errors).sum::<u64>(), 5);
        assert_eq!(m.instances[1].p99_us, 10);
        assert_eq!(m.instances[0].p99_us, 30);
        // Offsets count from the earliest start (instance 2/3's, at .100).
        assert_eq!(m.instances[0].start_offset_ms, 0.0);
        assert!((m.instances[1].start_offset_ms - 200.0).abs() < 1e-6);
        let saturated: Vec<&str> = m
            .instances
            .iter()
            .filter(|i| i.saturated)
            .map(|i| i.segment.as_str())
            .collect();
        assert_eq!(saturated, ["1/3"]);
        assert_eq!(m.instances[2].cpu_percent, Some(97.0));
        // No worker note repeated, each other note once per instance under its segment, one
        // fleet note on the saturated generator.
        assert!(
            !m.notes.iter().any(|n| n.contains("of a fleet run")),
            "{:?}",
            m.notes
        );
        assert!(!m.notes.iter().any(|n| process::is_saturation_note(n)));
        assert!(m
            .notes
            .contains(&"instance 1/3: preflight: fine".to_owned()));
        assert_eq!(m.notes.len(), 4, "{:?}", m.notes);
        assert!(m.notes[3].starts_with("instance 1/3's generator CPU stayed above 90 %"));
    }

    #[test]
    fn without_worker_notes_the_position_is_the_segment() {
        let m = combine(&[instance(&[10], 0), instance(&[10], 0)]).unwrap();
        let segments: Vec<&str> = m.instances.iter().map(|i| i.segment.as_str()).collect();
        assert_eq!(segments, ["0/2", "1/2"]);
    }

    #[test]
    fn generator_gauges_are_the_worst_instance_not_a_sum() {
        let mut a = instance(&[10], 0);
        let mut b = instance(&[10], 0);
        a.time_series[0]
            .gauges
            .insert(process::CPU_GAUGE.into(), 40.0);
        b.time_series[0]
            .gauges
            .insert(process::CPU_GAUGE.into(), 70.0);
        let m = combine(&[a, b]).unwrap();
        assert_eq!(m.time_series[0].gauges[process::CPU_GAUGE], 70.0);
    }

    #[test]
    fn instances_of_other_scenarios_are_refused() {
        let mut other = instance(&[10], 0);
        other.scenario.name = "spike".into();
        let e = merge(&[instance(&[10], 0), other]).unwrap_err().to_string();
        assert!(e.contains("spike") && e.contains("steady"), "{e}");
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }
}
