//! A fleet's generators one by one: what each drove, how it ended, when it started against the
//! others, and whether its own CPU was the bottleneck. Built from each instance's summary, the
//! same way by `thumper merge` and by `thumper fleet`, into [`Summary::instances`].

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Segment;
use crate::metrics::process::{self, RSS_GAUGE};
use crate::metrics::summary::{InstanceState, InstanceStats, Metric, Summary};

/// How the note a fleet worker writes into its own summary starts (see `run::database`).
const INSTANCE_NOTE_START: &str = "instance ";
const INSTANCE_NOTE_MARK: &str = " of a fleet run";

/// One instance's line of the breakdown from its summary. `segment` is its `I/N` and `host`
/// where it ran (empty when unknown); `fleet_start` is the earliest instance's load start, from
/// which its start offset is counted (0 when either is unknown).
pub fn instance_stats(
    summary: &Summary,
    state: InstanceState,
    fleet_start: Option<OffsetDateTime>,
    segment: &str,
    host: &str,
) -> InstanceStats {
    let count = |name: &str| summary.counter(name).map_or(0, |c| c.count);
    let cpu = process::load_cpu(&summary.time_series);
    let max_rss_mb = match summary.metrics.get(RSS_GAUGE) {
        Some(Metric::Gauge(g)) if g.samples > 0 => Some(g.max),
        _ => summary
            .time_series
            .iter()
            .filter_map(|i| i.gauges.get(RSS_GAUGE).copied())
            .reduce(f64::max),
    };
    let start_offset_ms = match (fleet_start, started_at(summary)) {
        (Some(fleet), Some(mine)) => ((mine - fleet).as_seconds_f64() * 1e3).max(0.0),
        _ => 0.0,
    };
    InstanceStats {
        segment: segment.to_owned(),
        host: host.to_owned(),
        state,
        iterations: count("iterations"),
        queries: count("queries"),
        errors: count("connection_errors") + count("query_errors"),
        p99_us: summary.trend("query_duration").map_or(0, |t| t.p99_us),
        start_offset_ms,
        cpu_percent: (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64),
        max_rss_mb,
        saturated: process::saturated(&summary.time_series),
    }
}

/// The line of an instance that left no summary: its process died or it went silent.
pub fn lost_instance(segment: &str, host: &str) -> InstanceStats {
    InstanceStats {
        segment: segment.to_owned(),
        host: host.to_owned(),
        state: InstanceState::Lost,
        ..InstanceStats::default()
    }
}

/// The summary's load start, when it parses.
pub fn started_at(summary: &Summary) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(&summary.started_at, &Rfc3339).ok()
}

/// The segment a fleet worker named in its `instance I/N of a fleet run: …` note.
pub fn segment_from_notes(notes: &[String]) -> Option<Segment> {
    notes.iter().find_map(|n| {
        let rest = n.strip_prefix(INSTANCE_NOTE_START)?;
        let (segment, _) = rest.split_once(INSTANCE_NOTE_MARK)?;
        segment.parse().ok()
    })
}

/// Whether `note` is a worker's `instance I/N of a fleet run: …` note, which the breakdown
/// replaces in a merged report.
pub fn is_instance_note(note: &str) -> bool {
    note.strip_prefix(INSTANCE_NOTE_START)
        .and_then(|rest| rest.split_once(INSTANCE_NOTE_MARK))
        .is_some_and(|(segment, _)| segment.parse::<Segment>().is_ok())
}

/// The fleet's note naming its saturated generators, `None` when none was.
pub fn saturation_note(instances: &[InstanceStats]) -> Option<String> {
    let saturated: Vec<&str> = instances
        .iter()
        .filter(|i| i.saturated)
        .map(|i| i.segment.as_str())
        .collect();
    let level = process::SATURATION_PERCENT;
    match saturated.as_slice() {
        [] => None,
        [one] => Some(format!(
            "instance {one}'s generator CPU stayed above {level:.0} %: its latencies include its own queueing"
        )),
        many => Some(format!(
            "instances {}: their generator CPU stayed above {level:.0} %: their latencies include their own queueing",
            many.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metrics::codec;
    use crate::metrics::process::CPU_GAUGE;
    use crate::metrics::summary::{CounterStats, GaugeStats, Interval, TrendStats};

    fn counter(n: u64) -> Metric {
        Metric::Counter(CounterStats {
            count: n,
            ..CounterStats::default()
        })
    }

    fn busy(cpu: f64) -> Interval {
        Interval {
            vus: 4,
            len_s: 1.0,
            gauges: BTreeMap::from([(CPU_GAUGE.to_owned(), cpu), (RSS_GAUGE.to_owned(), 40.0)]),
            ..Interval::default()
        }
    }

    #[test]
    fn one_instance_from_its_summary() {
        let mut h = codec::new_latency_histogram();
        for v in 1..=100u64 {
            h.record(v * 100).unwrap();
        }
        let mut s = Summary::empty();
        s.started_at = "2025-01-15T10:30:00.250Z".into();
        s.metrics.insert("iterations".into(), counter(90));
        s.metrics.insert("queries".into(), counter(180));
        s.metrics.insert("connection_errors".into(), counter(2));
        s.metrics.insert("query_errors".into(), counter(3));
        s.metrics.insert(
            "query_duration".into(),
            Metric::Trend(TrendStats::from_histogram(&h, 10.0, false)),
        );
        s.metrics.insert(
            RSS_GAUGE.into(),
            Metric::Gauge(GaugeStats {
                last: 40.0,
                min: 30.0,
                max: 55.5,
                samples: 4,
            }),
        );
        s.time_series = vec![busy(95.0), busy(96.0), busy(97.0), busy(20.0)];
        let fleet = OffsetDateTime::parse("2025-01-15T10:30:00Z", &Rfc3339).ok();
        let i = instance_stats(&s, InstanceState::Finished, fleet, "1/3", "gen-b");
        assert_eq!((i.segment.as_str(), i.host.as_str()), ("1/3", "gen-b"));
        assert_eq!((i.iterations, i.queries, i.errors), (90, 180, 5));
        assert_eq!(i.p99_us, h.value_at_quantile(0.99));
        assert!(
            (i.start_offset_ms - 250.0).abs() < 1e-6,
            "{}",
            i.start_offset_ms
        );
        assert_eq!(i.cpu_percent, Some(77.0));
        assert_eq!(i.max_rss_mb, Some(55.5));
        assert!(i.saturated);
        // Unmeasured stays unmeasured, not zero.
        let bare = instance_stats(
            &Summary::empty(),
            InstanceState::Interrupted,
            None,
            "0/1",
            "",
        );
        assert_eq!((bare.cpu_percent, bare.max_rss_mb), (None, None));
        assert!(!bare.saturated && bare.start_offset_ms == 0.0);
    }

    #[test]
    fn the_worker_note_names_its_segment() {
        let notes = vec![
            "preflight: fine".to_owned(),
            "instance 2/3 of a fleet run: this report holds its share of the scenario; `thumper merge` judges the fleet".to_owned(),
        ];
        assert_eq!(
            segment_from_notes(&notes),
            Some(Segment { index: 2, count: 3 })
        );
        assert!(is_instance_note(&notes[1]));
        assert!(!is_instance_note(&notes[0]));
        assert!(!is_instance_note("instance 0: a merged note"));
        assert_eq!(segment_from_notes(&notes[..1]), None);
    }

    #[test]
    fn the_fleet_note_names_saturated_instances() {
        let mut a = lost_instance("0/3", "");
        let mut b = lost_instance("1/3", "");
        assert_eq!(saturation_note(&[a.clone(), b.clone()]), None);
        b.saturated = true;
        assert_eq!(
            saturation_note(&[a.clone(), b.clone()]).unwrap(),
            "instance 1/3's generator CPU stayed above 90 %: its latencies include its own queueing"
        );
        a.saturated = true;
        assert!(saturation_note(&[a, b])
            .unwrap()
            .starts_with("instances 0/3, 1/3:"));
    }
}
