//! What thumper's NATS subscriber makes of the envelopes: guilds loaded, member events delivered
//! (first sight of a shard's event id), duplicates (a later sight), latency from the fake's
//! `sent_us` to arrival, and the per-interval series.
//!
//! One task owns the recorder, so recording takes no lock; the intervals are closed by the same
//! task on its one-second tick.

use std::collections::{BTreeMap, HashSet};

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::metrics::codec;
use crate::metrics::summary::{GaugeStats, Interval, IntervalTrend, TrendStats};

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

/// Running gauge statistics.
#[derive(Debug, Default, Clone)]
pub struct Gauge {
    stats: Option<GaugeStats>,
}

impl Gauge {
    pub fn record(&mut self, value: f64) {
        GaugeStats::record(&mut self.stats, value);
    }

    pub fn stats(&self) -> Option<GaugeStats> {
        self.stats.clone()
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

pub struct Recorder {
    seen: Vec<SeenIds>,
    guilds: HashSet<u64>,
    latency: Histogram<u64>,
    interval_latency: Histogram<u64>,
    totals: Totals,
    interval_totals: Totals,
    pub intervals: Vec<Interval>,
}

impl Recorder {
    pub fn new(shards: u32) -> Self {
        Recorder {
            seen: (0..shards).map(|_| SeenIds::default()).collect(),
            guilds: HashSet::new(),
            latency: codec::new_latency_histogram(),
            interval_latency: codec::new_latency_histogram(),
            totals: Totals::default(),
            interval_totals: Totals::default(),
            intervals: Vec::new(),
        }
    }

    /// Records one envelope that arrived at `now_us` (Unix microseconds).
    pub fn record(&mut self, envelope: &[u8], now_us: u64) {
        let Ok(seen) = serde_json::from_slice::<Seen<'_>>(envelope) else {
            self.totals.unparsable += 1;
            return;
        };
        match (seen.payload.thumper, self.seen.get_mut(seen.shard as usize)) {
            (Some(mark), Some(ids)) => {
                if ids.insert(mark.id) {
                    self.totals.delivered += 1;
                    self.interval_totals.delivered += 1;
                    let latency = now_us.saturating_sub(mark.sent_us).max(1);
                    let _ = self.latency.record(latency);
                    let _ = self.interval_latency.record(latency);
                } else {
                    self.totals.duplicated += 1;
                    self.interval_totals.duplicated += 1;
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

    /// Distinct guilds whose GUILD_CREATE arrived.
    pub fn guilds_loaded(&self) -> usize {
        self.guilds.len()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Closes the current interval with the counters and gauges the caller sampled.
    pub fn close_interval(
        &mut self,
        t_s: f64,
        len_s: f64,
        vus: u64,
        mut counters: BTreeMap<String, u64>,
        gauges: BTreeMap<String, f64>,
    ) {
        counters.insert("events_delivered".into(), self.interval_totals.delivered);
        counters.insert("events_duplicated".into(), self.interval_totals.duplicated);
        let mut trends = BTreeMap::new();
        trends.insert(
            "event_latency".to_owned(),
            IntervalTrend::from_histogram(&self.interval_latency),
        );
        self.intervals.push(Interval {
            t_s,
            len_s,
            vus,
            counters,
            trends,
            gauges,
        });
        self.interval_latency.reset();
        self.interval_totals = Totals::default();
    }

    /// The full-run latency trend over `duration_s`.
    pub fn latency_trend(&self, duration_s: f64) -> TrendStats {
        TrendStats::from_histogram(&self.latency, duration_s, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn counts_deliveries_duplicates_and_guilds() {
        let mut r = Recorder::new(2);
        r.record(&envelope(0, "GUILD_CREATE", 10, None), 0);
        r.record(&envelope(1, "GUILD_CREATE", 11, None), 0);
        r.record(&envelope(1, "GUILD_CREATE", 11, None), 0);
        assert_eq!(r.guilds_loaded(), 2);
        r.record(&envelope(0, "GUILD_MEMBER_ADD", 10, Some((0, 100))), 1100);
        r.record(&envelope(1, "GUILD_MEMBER_ADD", 11, Some((0, 100))), 2100);
        r.record(&envelope(0, "GUILD_MEMBER_ADD", 10, Some((0, 100))), 3100);
        r.record(&envelope(0, "GUILD_MEMBER_ADD", 10, Some((700, 100))), 600);
        r.record(b"not json", 0);
        let t = r.totals();
        assert_eq!((t.delivered, t.duplicated, t.unparsable), (3, 1, 1));
        let trend = r.latency_trend(1.0);
        assert_eq!(trend.count, 3);
        assert!(trend.max_us >= 2000 && trend.max_us < 2010);
        r.close_interval(1.0, 1.0, 2, BTreeMap::new(), BTreeMap::new());
        assert_eq!(r.intervals[0].counters["events_delivered"], 3);
        assert_eq!(r.intervals[0].trends["event_latency"].count, 3);
    }

    #[test]
    fn gauge_tracks_min_max_last() {
        let mut g = Gauge::default();
        assert!(g.stats().is_none());
        for v in [3.0, 1.0, 2.0] {
            g.record(v);
        }
        let s = g.stats().unwrap();
        assert_eq!((s.last, s.min, s.max, s.samples), (2.0, 1.0, 3.0, 3));
    }
}
