//! The per-virtual-user recorder: a VU appends what happened to a buffer it owns (no lock, no
//! shared state) and hands the buffer to the aggregator in batches.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::db::ErrorKind;

/// One thing a virtual user observed, stamped with when it completed.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Microseconds since the run started.
    pub at_us: u64,
    /// What happened.
    pub kind: SampleKind,
}

/// What a [`Sample`] records.
#[derive(Debug, Clone)]
pub enum SampleKind {
    /// A query that returned.
    Query {
        /// Query id: its index in the plan's query names.
        query: u16,
        /// From the intended start (open model) or the send (closed model) to the answer;
        /// connecting and pool checkout count in the open model only (they delay a scheduled
        /// iteration), and are reported on their own as [`SampleKind::Setup`].
        response_us: u64,
        /// From the actual send to the answer.
        service_us: u64,
        /// From the intended start to the actual send (open model only).
        lag_us: Option<u64>,
        /// Rows the answer held that belong to another tenant (RLS leaks).
        tenant_violations: u32,
    },
    /// A query (or, with `query == None`, a connection attempt) that failed.
    Error {
        /// Query id, or `None` for a connection attempt.
        query: Option<u16>,
        /// Connection or query failure.
        kind: ErrorKind,
        /// `SQLSTATE name` or a short kind (`closed`, `timeout`, ...); errors are counted per class.
        class: Box<str>,
    },
    /// An iteration finished (successfully or not).
    Iteration,
    /// An open-model iteration that found no free VU and was not started.
    Dropped,
    /// An iteration still waiting when the run ended (for its answer, or queued for a VU with
    /// no query chosen yet: `query == None`); `waited_us` is a lower bound of its latency.
    Incomplete {
        /// Query id, or `None` when no query was chosen yet.
        query: Option<u16>,
        /// Microseconds from the intended start until the VU was stopped.
        waited_us: u64,
    },
    /// Time a VU spent getting a client before it could send: opening its own connection
    /// (`connect_duration`) or waiting for a pooled one (`pool_wait`).
    Setup {
        /// Which step was measured.
        step: SetupStep,
        /// How long it took, in microseconds.
        us: u64,
    },
    /// A sampled value from outside the VUs (PgBouncer pool statistics, ...).
    Gauge {
        /// The gauge's metric name (`pgbouncer_cl_waiting`, ...).
        name: &'static str,
        /// The value sampled.
        value: f64,
    },
    /// A value of a trend the run registered beyond the database's (`event_latency`, µs).
    Trend {
        /// Index in the aggregator's `ExtraMetrics::trends`.
        id: u16,
        /// The value, in the trend's unit (microseconds for latencies).
        value: u64,
    },
    /// An increment of a counter the run registered beyond the database's (`events_sent`).
    Count {
        /// Index in the aggregator's `ExtraMetrics::counters`.
        id: u16,
        /// How much it grew.
        by: u64,
    },
}

/// What a [`SampleKind::Setup`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStep {
    /// A new connection, from the connect call to a usable session (`connect_duration`).
    Connect,
    /// A checkout from an application-side pool (`pool_wait`).
    PoolWait,
}

impl SetupStep {
    /// The trend this step is reported under.
    pub fn metric(self) -> &'static str {
        match self {
            SetupStep::Connect => "connect_duration",
            SetupStep::PoolWait => "pool_wait",
        }
    }
}

/// Buffers samples and sends them in batches; flushes what is left when dropped, so a VU that
/// is stopped mid-iteration loses nothing.
pub struct Recorder {
    start: Instant,
    buf: Vec<Sample>,
    oldest: Option<Instant>,
    tx: UnboundedSender<Vec<Sample>>,
    in_flight: Option<(u16, Instant)>,
}

/// How stale a buffer may grow before it is handed over.
const MAX_AGE: Duration = Duration::from_millis(100);
const MAX_LEN: usize = 256;

impl Recorder {
    /// A recorder whose sample times count from `start`, sending batches on `tx`.
    pub fn new(start: Instant, tx: UnboundedSender<Vec<Sample>>) -> Recorder {
        Recorder {
            start,
            buf: Vec::with_capacity(4),
            oldest: None,
            tx,
            in_flight: None,
        }
    }

    /// Microseconds since the run started.
    pub fn since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Notes that a query is outstanding since `intended`, so a run that ends (or a VU that is
    /// stopped) before it answers still accounts for it.
    pub fn begin(&mut self, query: u16, intended: Instant) {
        self.in_flight = Some((query, intended));
    }

    /// Records a sample that completed at `at`; a query's answer or error clears the in-flight query.
    pub fn push(&mut self, at: Instant, kind: SampleKind) {
        if matches!(
            kind,
            SampleKind::Query { .. } | SampleKind::Error { query: Some(_), .. }
        ) {
            self.in_flight = None;
        }
        if self.oldest.is_none() {
            self.oldest = Some(at);
        }
        self.buf.push(Sample {
            at_us: self.since_start(at),
            kind,
        });
    }

    /// Hands the buffer over if it is old or long enough.
    pub fn maybe_flush(&mut self, now: Instant) {
        if self.buf.len() >= MAX_LEN || self.oldest.is_some_and(|o| now - o >= MAX_AGE) {
            self.flush();
        }
    }

    /// Hands whatever is buffered to the aggregator now.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // The next batch is likely as long as this one: a VU with think time sends two or three
        // samples per batch, and at 10,000 VUs every idle buffer's spare capacity adds up.
        let next = self.buf.len().min(MAX_LEN);
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(next));
        self.oldest = None;
        // The aggregator outlives every VU; if it is gone the run is over anyway.
        let _ = self.tx.send(batch);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some((query, since)) = self.in_flight.take() {
            let now = Instant::now();
            let waited_us = now.saturating_duration_since(since).as_micros() as u64;
            self.push(
                now,
                SampleKind::Incomplete {
                    query: Some(query),
                    waited_us,
                },
            );
        }
        self.flush();
    }
}
