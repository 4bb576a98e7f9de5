//! What thumper's NATS subscriber makes of the envelopes: guilds loaded, member events delivered
//! (first sight of a shard's event id), duplicates (a later sight), latency from the fake's
//! `sent_us` to arrival. Once the member events start, each delivery and duplicate is a sample
//! for the run's one aggregator ([`crate::metrics::aggregator`]), with the gateway's other
//! counters and gauges: intervals, totals and everything that watches the run are the
//! aggregator's, as in every run.
//!
//! One task owns the recorder, so recording takes no lock.

use std::collections::HashSet;
use std::time::Instant;

use serde::Deserialize;

use crate::metrics::aggregator::ExtraMetrics;
use crate::metrics::recorder::{self, SampleKind};

/// The gateway's trends, registered with the aggregator in this order ([`extra_metrics`]).
pub const TRENDS: [&str; 1] = ["event_latency"];
/// Trend id of `event_latency`.
pub const EVENT_LATENCY: u16 = 0;

/// The gateway's counters, registered with the aggregator in this order; [`Counter`] ids index
/// it.
pub const COUNTERS: [&str; 8] = [
    "events_sent",
    "events_delivered",
    "events_lost",
    "events_duplicated",
    "reconnects",
    "resumes",
    "identifies",
    "replayed_dispatches",
];

/// A gateway counter, by its index in [`COUNTERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Counter {
    EventsSent = 0,
    EventsDelivered = 1,
    EventsLost = 2,
    EventsDuplicated = 3,
    Reconnects = 4,
    Resumes = 5,
    Identifies = 6,
    ReplayedDispatches = 7,
}

/// The gateway's metrics for [`crate::metrics::aggregator::Aggregator::with_extras`]; the
/// database's are left out (a gateway run sends no query).
pub fn extra_metrics() -> ExtraMetrics {
    ExtraMetrics {
        trends: TRENDS.iter().map(|n| (*n).to_owned()).collect(),
        counters: COUNTERS.iter().map(|n| (*n).to_owned()).collect(),
        without_database: true,
    }
}

#[derive(Deserialize)]
struct Mark {
    id: u64,
    sent_us: u64,
}

#[derive(Deserialize)]
struct MarkedPayload {
    #[serde(default)]
    thumper: Option<Mark>,
}

/// The envelope fields the harness needs; the payload is scanned only for the fake's mark.
#[derive(Deserialize)]
struct Seen<'a> {
    shard: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    guild_id: Option<&'a str>,
    payload: MarkedPayload,
}

/// Bitset of event ids seen on one shard.
#[derive(Debug, Default)]
struct SeenIds {
    words: Vec<u64>,
}

impl SeenIds {
    /// Marks `id`; true when it was not seen before.
    fn insert(&mut self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, id % 64);
        if word >= self.words.len() {
            self.words.resize((word + 1).next_power_of_two(), 0);
        }
        let fresh = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        fresh
    }
}

/// Totals of the run so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub delivered: u64,
    pub duplicated: u64,
    pub other_dispatches: u64,
    pub unparsable: u64,
}

/// Parses envelopes, dedupes member events by id and, once measuring, hands samples to the
/// aggregator.
pub struct Recorder {
    seen: Vec<SeenIds>,
    guilds: HashSet<u64>,
    totals: Totals,
    /// The aggregator's channel, from the start of the member events on.
    sink: Option<recorder::Recorder>,
}

impl Recorder {
    pub fn new(shards: u32) -> Self {
        Recorder {
            seen: (0..shards).map(|_| SeenIds::default()).collect(),
            guilds: HashSet::new(),
            totals: Totals::default(),
            sink: None,
        }
    }

    /// From now on every delivery, duplicate and count is a sample on `sink`.
    pub fn measure_into(&mut self, sink: recorder::Recorder) {
        self.sink = Some(sink);
    }

    fn push(&mut self, at: Instant, kind: SampleKind) {
        if let Some(sink) = &mut self.sink {
            sink.push(at, kind);
        }
    }

    /// Adds `by` to a gateway counter at `at`.
    pub fn count(&mut self, at: Instant, counter: Counter, by: u64) {
        if by > 0 {
            self.push(
                at,
                SampleKind::Count {
                    id: counter as u16,
                    by,
                },
            );
        }
    }

    /// A gauge reading at `at`.
    pub fn gauge(&mut self, at: Instant, name: &'static str, value: f64) {
        self.push(at, SampleKind::Gauge { name, value });
    }

    /// Records one envelope that arrived at `at`, `now_us` in Unix microseconds.
    pub fn record(&mut self, envelope: &[u8], now_us: u64, at: Instant) {
        let Ok(seen) = serde_json::from_slice::<Seen<'_>>(envelope) else {
            self.totals.unparsable += 1;
            return;
        };
        match (seen.payload.thumper, self.seen.get_mut(seen.shard as usize)) {
            (Some(mark), Some(ids)) => {
                if ids.insert(mark.id) {
                    self.totals.delivered += 1;
                    let latency = now_us.saturating_sub(mark.sent_us).max(1);
                    self.count(at, Counter::EventsDelivered, 1);
                    self.push(
                        at,
                        SampleKind::Trend {
                            id: EVENT_LATENCY,
                            value: latency,
                        },
                    );
                } else {
                    self.totals.duplicated += 1;
                    self.count(at, Counter::EventsDuplicated, 1);
                }
            }
            _ => {
                self.totals.other_dispatches += 1;
                if seen.kind == "GUILD_CREATE" {
                    if let Some(id) = seen.guild_id.and_then(|g| g.parse().ok()) {
                        self.guilds.insert(id);
                    }
                }
            }
        }
    }

    /// Stops measuring: what is buffered goes to the aggregator, and its channel closes here.
    pub fn stop_measuring(&mut self) {
        self.sink = None;
    }

    /// Distinct guilds whose GUILD_CREATE arrived.
    pub fn guilds_loaded(&self) -> usize {
        self.guilds.len()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::metrics::aggregator::{Aggregator, AggregatorConfig};
    use crate::metrics::summary::Metric;

    fn envelope(shard: u32, kind: &str, guild: u64, mark: Option<(u64, u64)>) -> Vec<u8> {
        let payload = match mark {
            Some((id, sent)) => format!(r#"{{"x":[1],"thumper":{{"id":{id},"sent_us":{sent}}}}}"#),
            None => r#"{"id":"1"}"#.to_owned(),
        };
        format!(
            r#"{{"v":1,"shard":{shard},"seq":1,"type":"{kind}","guild_id":"{guild}","received_at_us":0,"payload":{payload}}}"#
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn deliveries_and_duplicates_reach_the_aggregator() {
        let start = Instant::now();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let aggregator = Aggregator::with_extras(
            AggregatorConfig {
                start,
                interval: Duration::from_secs(1),
                planned: Duration::from_secs(1),
                query_names: Vec::new(),
                open_model: false,
                vus: Arc::new(AtomicU64::new(0)),
                watchers: Vec::new(),
                abort: CancellationToken::new(),
            },
            extra_metrics(),
        );
        let mut r = Recorder::new(2);
        r.record(&envelope(0, "GUILD_CREATE", 10, None), 0, start);
        r.record(&envelope(1, "GUILD_CREATE", 11, None), 0, start);
        r.record(&envelope(1, "GUILD_CREATE", 11, None), 0, start);
        assert_eq!(r.guilds_loaded(), 2);
        r.measure_into(recorder::Recorder::new(start, tx));
        r.record(
            &envelope(0, "GUILD_MEMBER_ADD", 10, Some((0, 100))),
            1100,
            start,
        );
        r.record(
            &envelope(1, "GUILD_MEMBER_ADD", 11, Some((0, 100))),
            2100,
            start,
        );
        r.record(
            &envelope(0, "GUILD_MEMBER_ADD", 10, Some((0, 100))),
            3100,
            start,
        );
        r.record(
            &envelope(0, "GUILD_MEMBER_ADD", 10, Some((700, 100))),
            600,
            start,
        );
        r.record(b"not json", 0, start);
        r.count(start, Counter::EventsSent, 3);
        let t = r.totals();
        assert_eq!((t.delivered, t.duplicated, t.unparsable), (3, 1, 1));
        r.stop_measuring();
        let done = aggregator.run(rx).await;
        let counter = |name: &str| match done.metrics.get(name) {
            Some(Metric::Counter(c)) => c.count,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(counter("events_delivered"), 3);
        assert_eq!(counter("events_duplicated"), 1);
        assert_eq!(counter("events_sent"), 3);
        assert_eq!(counter("events_lost"), 0, "listed even without samples");
        let Some(Metric::Trend(latency)) = done.metrics.get("event_latency") else {
            panic!("no event_latency");
        };
        assert_eq!(latency.count, 3);
        assert!(latency.max_us >= 2000 && latency.max_us < 2010);
        assert_eq!(done.time_series[0].counters["events_delivered"], 3);
        assert_eq!(done.time_series[0].trends["event_latency"].count, 3);
        // A gateway run lists no database metric.
        for name in ["query_duration", "queries", "success_rate", "iterations"] {
            assert!(!done.metrics.contains_key(name), "{name}");
        }
    }
}
