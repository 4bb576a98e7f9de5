//! `latency.hlog`: every interval's histograms in HdrHistogram's interval-log format (version
//! 1.3), readable by `HistogramLogProcessor`, HdrHistogram's plotter and the Rust crate's
//! `IntervalLogIterator`.
//!
//! The run's main latency trend (`query_duration`, or `event_latency` for a gateway run) is
//! written untagged, so HdrHistogram's tools pick it up without a `-tag`; every other trend
//! (`query_duration{query:tenant}`, `service_time`, ...) is tagged with its metric name. Values
//! are microseconds (`HistogramLogProcessor -outputValueUnitRatio 1000` prints milliseconds);
//! the max column is in milliseconds. Timestamps are seconds since the run started, with the
//! start as both `StartTime` and `BaseTime`.

use std::io::Write;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use super::model;
use super::{ReportError, ReportFormat};
use crate::metrics::codec;
use crate::metrics::summary::Summary;

pub(crate) struct Hlog;

impl ReportFormat for Hlog {
    fn file_name(&self) -> &'static str {
        "latency.hlog"
    }

    fn render(&self, summary: &Summary) -> Result<Vec<u8>, ReportError> {
        render(summary).map_err(|message| match message {
            Failure::Histogram(e) => e,
            Failure::Write(message) => ReportError::Render {
                file: self.file_name(),
                message,
            },
        })
    }
}

enum Failure {
    Histogram(ReportError),
    Write(String),
}

/// A tag HdrHistogram accepts: no commas, spaces or line breaks.
fn tag_text(metric: &str) -> String {
    metric
        .chars()
        .map(|c| {
            if matches!(c, ',' | ' ' | '\r' | '\n') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn render(s: &Summary) -> Result<Vec<u8>, Failure> {
    let primary = model::primary_trend(s).map(|(n, _)| n);
    let start = time::OffsetDateTime::parse(
        &s.started_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok();

    let mut buf = Vec::new();
    let io = |e: std::io::Error| Failure::Write(e.to_string());
    writeln!(
        buf,
        "#thumper {} latency log: scenario {}, values in microseconds; the untagged histogram is \
         `{}`",
        s.thumper_version,
        s.scenario.name.replace(['\n', '\r'], " "),
        primary.unwrap_or("(none)")
    )
    .map_err(io)?;
    writeln!(buf, "#[Histogram log format version 1.3]").map_err(io)?;
    if let Some(start) = start {
        let secs = start.unix_timestamp_nanos() as f64 / 1e9;
        writeln!(
            buf,
            "#[StartTime: {secs:.3} (seconds since epoch), {}]",
            s.started_at
        )
        .map_err(io)?;
        writeln!(buf, "#[BaseTime: {secs:.3} (seconds since epoch)]").map_err(io)?;
    }
    writeln!(
        buf,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    )
    .map_err(io)?;

    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut buf, &mut serializer)
        .map_err(io)?;
    // The untagged (primary) histogram first in each interval, then the tagged ones by name.
    for interval in &s.time_series {
        let begin = (interval.t_s - interval.len_s).max(0.0);
        let mut names: Vec<&String> = interval.trends.keys().collect();
        names.sort_by_key(|n| (Some(n.as_str()) != primary, n.as_str()));
        for name in names {
            let trend = &interval.trends[name];
            if trend.histogram.is_empty() {
                continue;
            }
            let h = codec::decode(&trend.histogram).map_err(|source| {
                Failure::Histogram(ReportError::Histogram {
                    metric: format!("{name} at t={} s", interval.t_s),
                    source,
                })
            })?;
            let tag = tag_text(name);
            let tag = if Some(name.as_str()) == primary {
                None
            } else {
                Tag::new(&tag)
            };
            writer
                .write_histogram(
                    &h,
                    Duration::from_secs_f64(begin),
                    Duration::from_secs_f64(interval.len_s.max(0.0)),
                    tag,
                )
                .map_err(|e| Failure::Write(e.to_string()))?;
        }
    }
    drop(writer);
    Ok(buf)
}
