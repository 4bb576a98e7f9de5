//! The measuring side of a gateway run from the start of the member events: the recorder feeds
//! the run's one aggregator, and once a second the fake's counters and the gateway's /proc
//! readings are added as samples, so the intervals, the totals and everything that watches the
//! run (progress line, live `abort_on_fail`, `--out`) are the aggregator's as in every run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fake_discord::pace::unix_micros;
use super::fake_discord::FakeStats;
use super::recorder::{self, Counter, Recorder};
use super::{GatewayProcess, GatewayRunConfig, ProcSample};
use crate::metrics::aggregator::{Aggregated, Aggregator, AggregatorConfig, Watcher};

/// The recorder attached to the aggregator, and what it polls.
pub(super) struct Meter {
    recorder: Recorder,
    last_stats: FakeStats,
    guilds: u32,
    vus: Arc<AtomicU64>,
    /// Cancelled when a watcher stops the run.
    pub abort: CancellationToken,
    aggregator: JoinHandle<Aggregated>,
    poll_stop: CancellationToken,
    self_sampler: JoinHandle<()>,
}

impl Meter {
    /// Starts the aggregator with `watchers` at `started` (the start of the member events), and
    /// the generator's own /proc poller. `loaded` is the gateway's reading after loading.
    pub fn start(
        cfg: &GatewayRunConfig,
        started: Instant,
        watchers: Vec<Box<dyn Watcher>>,
        mut recorder: Recorder,
        loaded: Option<ProcSample>,
    ) -> Meter {
        let start = started.into_std();
        let (tx, rx) = mpsc::unbounded_channel();
        let vus = Arc::new(AtomicU64::new(0));
        let abort = CancellationToken::new();
        let aggregator = Aggregator::with_extras(
            AggregatorConfig {
                start,
                interval: Duration::from_secs(1),
                planned: cfg.rate_stages.iter().map(|s| s.0).sum(),
                query_names: Vec::new(),
                open_model: false,
                vus: vus.clone(),
                watchers,
                abort: abort.clone(),
            },
            recorder::extra_metrics(),
        );
        let aggregator = tokio::spawn(aggregator.run(rx));
        let poll_stop = CancellationToken::new();
        let self_sampler = tokio::spawn(crate::metrics::process::poll(
            start,
            Duration::from_secs(1),
            tx.clone(),
            poll_stop.clone(),
        ));
        recorder.measure_into(crate::metrics::recorder::Recorder::new(start, tx));
        let mut meter = Meter {
            recorder,
            last_stats: FakeStats::default(),
            guilds: cfg.workload.guilds,
            vus,
            abort,
            aggregator,
            poll_stop,
            self_sampler,
        };
        if let Some(sample) = loaded {
            meter.gauges(start, sample);
        }
        meter
    }

    pub fn recorder(&mut self) -> &mut Recorder {
        &mut self.recorder
    }

    /// Adds the fake's counters since the last poll and the gateway's /proc reading; the
    /// connected shards are the run's active count. Counters cover the whole run, loading
    /// included (a reconnect while loading counts too).
    pub fn poll(&mut self, stats: FakeStats, gateway: &mut GatewayProcess) {
        let now = std::time::Instant::now();
        let before = std::mem::replace(&mut self.last_stats, stats);
        let stats = &self.last_stats;
        let deltas = [
            (
                Counter::EventsSent,
                stats.total_events_sent() - before.total_events_sent(),
            ),
            (Counter::Identifies, stats.identifies - before.identifies),
            (Counter::Reconnects, stats.reconnects - before.reconnects),
            (Counter::Resumes, stats.resumes - before.resumes),
            (
                Counter::ReplayedDispatches,
                stats.replayed - before.replayed,
            ),
        ];
        self.vus.store(stats.active_shards, Ordering::Relaxed);
        for (counter, by) in deltas {
            self.recorder.count(now, counter, by);
        }
        if let Some(sample) = gateway.sample() {
            self.gauges(now, sample);
        }
    }

    /// The fake's stats as of the last poll.
    pub fn last_stats(&self) -> &FakeStats {
        &self.last_stats
    }

    fn gauges(&mut self, at: std::time::Instant, sample: ProcSample) {
        let per_1k = sample.rss_mb * 1000.0 / f64::from(self.guilds.max(1));
        self.recorder.gauge(at, "gateway_rss_mb", sample.rss_mb);
        self.recorder
            .gauge(at, "gateway_rss_mb_per_1k_guilds", per_1k);
        if let Some(cpu) = sample.cpu_percent {
            self.recorder.gauge(at, "gateway_cpu_percent", cpu);
        }
    }

    /// Counts `lost` events, closes the aggregator's channel and waits for its result.
    pub async fn finish(mut self, lost: u64) -> anyhow::Result<Aggregated> {
        self.recorder
            .count(std::time::Instant::now(), Counter::EventsLost, lost);
        self.recorder.stop_measuring();
        self.poll_stop.cancel();
        let _ = self.self_sampler.await;
        self.aggregator
            .await
            .context("the metrics aggregation failed")
    }
}

/// Records a burst of NATS messages that arrived now.
pub(super) fn record_all(recorder: &mut Recorder, msgs: &[async_nats::Message]) {
    let at = std::time::Instant::now();
    for msg in msgs {
        recorder.record(&msg.payload, unix_micros(), at);
    }
}
