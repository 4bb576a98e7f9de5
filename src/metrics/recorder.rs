//! The per-virtual-user recorder: a VU appends what happened to a buffer of its own, which the
//! aggregator drains on its own tick (see [`SampleBuffer`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

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
        /// How long the failed attempt took, measured as [`SampleKind::Query`]'s
        /// `response_us`: a failure keeps its time in the latency (k6 keeps failed requests in
        /// `http_req_duration`). `None` when there was no query to time (a closed-model VU's
        /// connection attempt).
        response_us: Option<u64>,
        /// From the actual send to the error; `None` when the query was never sent.
        service_us: Option<u64>,
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

/// One recorder's samples, waiting for the aggregator. Only two parties ever take its lock:
/// the recorder that owns it and the aggregator, which drains every buffer on a short tick of
/// its own. So a sample reaches the aggregator within that tick whatever its VU is waiting on
/// (a VU three seconds into a slow query cannot hand anything over itself), and VUs share no
/// lock with each other.
#[derive(Debug, Default)]
pub struct SampleBuffer(Mutex<Vec<Sample>>, Option<u16>);

impl SampleBuffer {
    /// The scenario (of a multi-scenario run) whose VU fills this buffer.
    pub fn scenario(&self) -> Option<u16> {
        self.1
    }

    /// Moves every buffered sample to the end of `into`.
    pub fn drain_into(&self, into: &mut Vec<Sample>) {
        let mut buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        into.append(&mut buf);
    }
}

/// Where recorders register their buffers: the aggregator's receiving end. The channel stays
/// open while any recorder lives, so the aggregator sees the last samples of every one.
pub type Samples = UnboundedSender<Arc<SampleBuffer>>;

/// Stamps what a VU (or a poller) observes and appends it to a [`SampleBuffer`] the aggregator
/// drains; when dropped with a query outstanding it records that query as incomplete, so a VU
/// stopped mid-iteration loses nothing.
pub struct Recorder {
    start: Instant,
    buf: Arc<SampleBuffer>,
    in_flight: Option<(u16, Instant)>,
    /// Held only to keep the aggregator listening until this recorder is gone.
    _registered: Samples,
}

impl Recorder {
    /// A recorder whose sample times count from `start`, its buffer registered on `tx`.
    pub fn new(start: Instant, tx: Samples) -> Recorder {
        Recorder::in_scenario(start, tx, None)
    }

    /// A recorder of a VU of scenario `scenario` (an index in a multi-scenario run), whose
    /// samples also count in that scenario's `{scenario:NAME}` metrics.
    pub fn in_scenario(start: Instant, tx: Samples, scenario: Option<u16>) -> Recorder {
        let buf = Arc::new(SampleBuffer(Mutex::default(), scenario));
        // The aggregator outlives every recorder; if it is gone the run is over anyway.
        let _ = tx.send(buf.clone());
        Recorder {
            start,
            buf,
            in_flight: None,
            _registered: tx,
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
        let sample = Sample {
            at_us: self.since_start(at),
            kind,
        };
        self.buf
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sample);
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
    }
}
