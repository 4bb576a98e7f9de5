//! The coordinator's PgBouncer poller: one reading of the console for the whole fleet, wherever
//! the workers run (on Kubernetes only the coordinator is given `PGBOUNCER_ADMIN_URL`). Its
//! gauges feed the fleet-wide live check while the load runs and replace the workers'
//! `pgbouncer_*` gauges in the fleet's summary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::metrics::recorder::{Sample, SampleBuffer, SampleKind};
use crate::metrics::summary::{GaugeStats, Metric, Summary};
use crate::run::target::Target;

/// The console's readings during a fleet run.
pub struct ConsoleGauges {
    /// The poller's recorder registers its buffer here.
    rx: Option<mpsc::UnboundedReceiver<Arc<SampleBuffer>>>,
    /// The registered buffers, drained once a second.
    buffers: Vec<Arc<SampleBuffer>>,
    tick: tokio::time::Interval,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    stats: BTreeMap<&'static str, GaugeStats>,
    /// (microseconds after the start, gauge, value), in arrival order.
    points: Vec<(u64, &'static str, f64)>,
}

impl ConsoleGauges {
    /// Polls the target's console from `start` (the fleet's start instant) once a second, if
    /// the console is known; otherwise does nothing.
    pub fn start(target: &Target, start: Instant) -> ConsoleGauges {
        let stop = CancellationToken::new();
        let (rx, task) = match target.pgbouncer_admin_url.clone() {
            Some(admin) => {
                let database = target
                    .url
                    .parse::<tokio_postgres::Config>()
                    .ok()
                    .and_then(|c| c.get_dbname().map(str::to_owned));
                let (tx, rx) = mpsc::unbounded_channel();
                let stop = stop.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep_until(start.into()).await;
                    crate::metrics::pgbouncer::poll(
                        admin,
                        database,
                        start,
                        Duration::from_secs(1),
                        tx,
                        stop,
                    )
                    .await;
                });
                (Some(rx), Some(task))
            }
            None => (None, None),
        };
        ConsoleGauges {
            rx,
            buffers: Vec::new(),
            tick: tokio::time::interval(Duration::from_secs(1)),
            stop,
            task,
            stats: BTreeMap::new(),
            points: Vec::new(),
        }
    }

    /// The next batch of readings (drained once a second); never ready when no console is
    /// polled.
    pub async fn next(&mut self) -> Option<Vec<Sample>> {
        let Some(rx) = &mut self.rx else {
            return std::future::pending().await;
        };
        tokio::select! {
            registered = rx.recv() => {
                match registered {
                    Some(buffer) => self.buffers.push(buffer),
                    None => self.rx = None,
                }
                Some(Vec::new())
            }
            _ = self.tick.tick() => Some(self.drain()),
        }
    }

    /// Every reading the poller has recorded since the last drain.
    fn drain(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for buffer in &self.buffers {
            buffer.drain_into(&mut out);
        }
        out
    }

    /// Keeps a batch of readings and returns its gauges, for the live totals.
    pub fn record(&mut self, batch: &[Sample]) -> Vec<(&'static str, f64)> {
        let mut gauges = Vec::new();
        for sample in batch {
            if let SampleKind::Gauge { name, value } = sample.kind {
                let mut stats = self.stats.remove(name);
                GaugeStats::record(&mut stats, value);
                self.stats.insert(name, stats.expect("recorded above"));
                self.points.push((sample.at_us, name, value));
                gauges.push((name, value));
            }
        }
        gauges
    }

    /// Stops the poller and keeps what it sent last.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(mut rx) = self.rx.take() {
            while let Ok(buffer) = rx.try_recv() {
                self.buffers.push(buffer);
            }
        }
        let last = self.drain();
        self.record(&last);
    }

    /// Puts the readings into the fleet's summary in place of the workers' own (if a worker
    /// polled too, the coordinator's one reading is the fleet's): run totals, and each reading
    /// in the interval it fell in.
    pub fn apply(&self, summary: &mut Summary) {
        if self.stats.is_empty() {
            return;
        }
        summary
            .metrics
            .retain(|name, _| !name.starts_with("pgbouncer_"));
        for interval in &mut summary.time_series {
            interval
                .gauges
                .retain(|name, _| !name.starts_with("pgbouncer_"));
        }
        for (name, stats) in &self.stats {
            summary
                .metrics
                .insert((*name).to_owned(), Metric::Gauge(stats.clone()));
        }
        for &(at_us, name, value) in &self.points {
            let at_s = at_us as f64 / 1e6;
            if let Some(interval) = summary
                .time_series
                .iter_mut()
                .find(|i| at_s <= i.t_s + 1e-6)
            {
                interval.gauges.insert(name.to_owned(), value);
            }
        }
    }
}
