//! `--out json=FILE`: k6's JSON-lines stream (`{"type":"Metric",...}` once per metric, then
//! `{"type":"Point","metric":...,"data":{"time","value","tags"}}`), written as intervals close.
//!
//! k6 writes one point per sample; thumper writes one point per metric per one-second interval
//! (the aggregate): a counter's `value` is its count in the interval (so summing a counter's
//! points gives the run's count), a gauge's its reading at the interval's end, and a trend's the
//! interval's mean in milliseconds, with `data.aggregate` holding the interval's `count`, `min`,
//! `p50`, `p95`, `p99` and `max` (milliseconds) and `interval_s`. Tools that read k6's points
//! and ignore unknown keys read these.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{exported_trend, split_name, Batch, Delivery, RunLabels};
use crate::metrics::summary::Interval;

/// Starts the writer on a blocking thread (file writes do not belong on the runtime).
pub fn spawn(
    path: PathBuf,
    labels: RunLabels,
    mut rx: mpsc::Receiver<Batch>,
) -> JoinHandle<Delivery> {
    tokio::task::spawn_blocking(move || {
        // Appended to: `check` emptied the file before the run, and a capacity search's steps
        // (one run each) follow one another in it.
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                // Drain the queue so the watcher never sees a full one for this reason.
                while rx.blocking_recv().is_some() {}
                return Delivery {
                    line: format!("json={}: not written", path.display()),
                    failure: Some(format!("cannot create the file ({e})")),
                };
            }
        };
        let mut out = std::io::BufWriter::new(file);
        let mut writer = LineWriter::new(labels);
        let mut lines = 0u64;
        let mut error = None;
        while let Some(batch) = rx.blocking_recv() {
            if error.is_some() {
                continue;
            }
            for interval in &batch.intervals {
                for line in writer.lines(interval) {
                    if let Err(e) = writeln!(out, "{line}") {
                        error = Some(e);
                        break;
                    }
                    lines += 1;
                }
            }
            // A reader tailing the file sees each interval when it closes.
            if let Err(e) = out.flush() {
                error.get_or_insert(e);
            }
        }
        match error {
            None => Delivery {
                line: format!("json={}: {lines} lines", path.display()),
                failure: None,
            },
            Some(e) => Delivery {
                line: format!(
                    "json={}: writing stopped after {lines} lines",
                    path.display()
                ),
                failure: Some(format!("writing the file failed ({e})")),
            },
        }
    })
}

/// Turns intervals into k6's JSON lines, announcing each metric once.
pub struct LineWriter {
    labels: RunLabels,
    announced: BTreeSet<String>,
}

impl LineWriter {
    /// A writer whose points carry `labels` as tags.
    pub fn new(labels: RunLabels) -> LineWriter {
        LineWriter {
            labels,
            announced: BTreeSet::new(),
        }
    }

    /// The lines for one closed interval.
    pub fn lines(&mut self, interval: &Interval) -> Vec<String> {
        let end_us = (interval.t_s * 1e6).round() as u64;
        let time = self
            .labels
            .started_at
            .saturating_add(time::Duration::microseconds(end_us as i64))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut out = Vec::new();
        for (name, n) in &interval.counters {
            // A multi-scenario run's counts are written per scenario (tagged `scenario`), not
            // also as their sum, so that adding every series up counts each once.
            let split = interval
                .counters
                .keys()
                .any(|k| k.starts_with(name.as_str()) && k[name.len()..].starts_with("{scenario:"));
            if !split {
                self.point(&mut out, name, "counter", "default", &time, json!(n), None);
            }
        }
        self.point(
            &mut out,
            "vus",
            "gauge",
            "default",
            &time,
            json!(interval.vus),
            None,
        );
        for (name, v) in &interval.gauges {
            self.point(&mut out, name, "gauge", "default", &time, json!(v), None);
        }
        for (name, t) in &interval.trends {
            if !exported_trend(name) || t.count == 0 {
                continue;
            }
            let ms = |us: u64| us as f64 / 1e3;
            let (mean, min) = match crate::metrics::codec::decode(&t.histogram) {
                Ok(h) => (h.mean() / 1e3, ms(h.min())),
                Err(_) => (ms(t.p50_us), ms(t.p50_us)),
            };
            let aggregate = json!({
                "count": t.count,
                "min": min,
                "p50": ms(t.p50_us),
                "p95": ms(t.p95_us),
                "p99": ms(t.p99_us),
                "max": ms(t.max_us),
                "interval_s": interval.len_s,
            });
            self.point(
                &mut out,
                name,
                "trend",
                "time",
                &time,
                json!(mean),
                Some(aggregate),
            );
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn point(
        &mut self,
        out: &mut Vec<String>,
        full_name: &str,
        kind: &str,
        contains: &str,
        time: &str,
        value: Value,
        aggregate: Option<Value>,
    ) {
        let (metric, tags) = split_name(full_name);
        if self.announced.insert(metric.to_owned()) {
            out.push(
                json!({
                    "type": "Metric",
                    "data": {
                        "name": metric,
                        "type": kind,
                        "contains": contains,
                        "thresholds": [],
                        "submetrics": null,
                    },
                    "metric": metric,
                })
                .to_string(),
            );
        }
        let mut all: BTreeMap<&str, &str> = self
            .labels
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend(tags);
        let mut data = json!({ "time": time, "value": value, "tags": all });
        if let Some(a) = aggregate {
            data["aggregate"] = a;
        }
        out.push(json!({ "type": "Point", "data": data, "metric": metric }).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::codec::new_latency_histogram;
    use crate::metrics::summary::IntervalTrend;

    fn interval(t_s: f64, iterations: u64, latencies_us: &[u64]) -> Interval {
        let mut h = new_latency_histogram();
        for v in latencies_us {
            h.record(*v).unwrap();
        }
        Interval {
            t_s,
            len_s: 1.0,
            vus: 3,
            counters: [("iterations".to_owned(), iterations)].into(),
            trends: [
                (
                    "query_duration".to_owned(),
                    IntervalTrend::from_histogram(&h),
                ),
                (
                    "query_duration{query:lookup}".to_owned(),
                    IntervalTrend::from_histogram(&h),
                ),
                (
                    "query_duration{query:lookup,expected_response:true}".to_owned(),
                    IntervalTrend::from_histogram(&h),
                ),
            ]
            .into(),
            gauges: [("pgbouncer_cl_waiting".to_owned(), 2.0)].into(),
        }
    }

    fn labels() -> RunLabels {
        RunLabels::new(
            &Default::default(),
            "steady",
            "steady-20250101T000000Z",
            time::macros::datetime!(2025-01-01 0:00 UTC),
        )
    }

    #[test]
    fn lines_are_k6_points_whose_counts_add_up() {
        let mut w = LineWriter::new(labels());
        let mut lines = w.lines(&interval(1.0, 7, &[1_000, 3_000]));
        lines.extend(w.lines(&interval(2.0, 5, &[2_000])));
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let points = |metric: &str| -> Vec<&Value> {
            parsed
                .iter()
                .filter(|v| v["type"] == "Point" && v["metric"] == metric)
                .collect()
        };
        let iterations: u64 = points("iterations")
            .iter()
            .map(|p| p["data"]["value"].as_u64().unwrap())
            .sum();
        assert_eq!(iterations, 12);
        // Each metric is announced once, before its first point.
        let announced: Vec<&str> = parsed
            .iter()
            .filter(|v| v["type"] == "Metric")
            .map(|v| v["metric"].as_str().unwrap())
            .collect();
        let unique: BTreeSet<&str> = announced.iter().copied().collect();
        assert_eq!(announced.len(), unique.len(), "{announced:?}");
        let first = &points("iterations")[0]["data"];
        assert_eq!(first["time"], "2025-01-01T00:00:01Z");
        assert_eq!(first["tags"]["testid"], "steady-20250101T000000Z");
        assert_eq!(first["tags"]["scenario"], "steady");
        // Latency: only the per-query series, tagged, in milliseconds.
        let latency = points("query_duration");
        assert_eq!(latency.len(), 2, "the sums are left out");
        let data = &latency[0]["data"];
        assert_eq!(data["tags"]["query"], "lookup");
        assert_eq!(data["tags"]["expected_response"], "true");
        assert!(
            (data["value"].as_f64().unwrap() - 2.0).abs() < 0.01,
            "{data}"
        );
        assert_eq!(data["aggregate"]["count"], 2);
        assert!((data["aggregate"]["max"].as_f64().unwrap() - 3.0).abs() < 0.01);
        assert_eq!(points("vus")[1]["data"]["value"], 3);
        assert_eq!(points("pgbouncer_cl_waiting")[0]["data"]["value"], 2.0);
    }
}
