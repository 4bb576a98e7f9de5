//! Executors: the closed model (ramping VUs that wait for each answer) and the open model
//! (iterations started on a schedule, whatever the responses), both driving the same
//! [`VirtualUser`](vu) iteration.

mod closed;
mod connector;
mod open;
mod script;
pub mod timer;
mod vu;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

pub use connector::{Connector, ConnectorError};
pub use script::script_metrics;

use crate::metrics::recorder::Samples;
use crate::scenario::Segment;
use crate::scenario::{LoadShape, Plan};
use crate::workload::Workload;

/// Everything a virtual user needs, shared read-only.
pub struct RunContext {
    /// When this scenario started: its stages count from here.
    pub start: Instant,
    /// When the run started: sample times count from here (the scenario's `start` unless it
    /// is a later scenario of a multi-scenario run).
    pub run_start: Instant,
    /// This scenario's index in a multi-scenario run, its samples' `{scenario:NAME}` tag.
    pub scenario: Option<u16>,
    /// Id of the scenario's first query in the run's catalogue.
    pub query_offset: u16,
    /// The scenario's feeder: each iteration takes a row of it.
    pub feed: Option<crate::workload::feed::Feed>,
    /// Cancelled when the feeder has no rows left: the scenario ends as if its stages had.
    pub exhausted: CancellationToken,
    /// The query catalogue and parameter generators.
    pub workload: Arc<Workload>,
    /// Where VUs get their clients.
    pub connector: Connector,
    /// Pause after each iteration of a closed-model VU.
    pub think_time: Duration,
    /// First reconnect delay after a broken connection.
    pub min_backoff: Duration,
    /// Longest reconnect delay; the delay doubles up to it.
    pub max_backoff: Duration,
    /// Where VUs register their sample buffers (the aggregator).
    pub samples: Samples,
    /// This instance's share of a fleet run ([`Segment::WHOLE`] alone).
    pub segment: Segment,
    /// Connections opened before the clock started, for the pre-allocated VUs.
    pub warm: WarmStart,
    /// Closed model: iterations each VU runs before it stops (`None`: until the stages end).
    pub iterations_per_vu: Option<u64>,
}

/// What [`warm_up`] opened before t = 0: a connection (or its failure) for each pre-allocated
/// VU of the per-VU topology, handed to those VUs when they start.
#[derive(Default)]
pub struct WarmStart(Mutex<Vec<vu::Warmed>>);

impl WarmStart {
    /// The connections, once (later calls get none).
    fn take(&self) -> Vec<vu::Warmed> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Opens the open model's pre-allocated connections before the run's clock starts, as k6
/// initialises `preAllocatedVUs` before t = 0: otherwise the first iterations are due while
/// the VUs are still logging in, and are dropped, or wait and carry a login in their latency.
/// Per-VU topology: one connection per pre-allocated VU. Pooled topology: every pool filled
/// (a failure there is left to the first checkout, which retries and records it). The closed
/// model starts its VUs on its stages and needs nothing ahead.
pub async fn warm_up(plan: &Plan, connector: &Connector) -> WarmStart {
    let LoadShape::Open {
        pre_allocated_vus, ..
    } = plan.load
    else {
        return WarmStart::default();
    };
    match connector {
        Connector::PerVu { config, timeout } => {
            let opening = (0..pre_allocated_vus).map(|_| vu::open_ahead(config, *timeout));
            WarmStart(Mutex::new(join_all(opening).await))
        }
        Connector::Pooled { pools, .. } => {
            let size = plan.connection.pool_size as usize;
            let checkouts = pools.iter().flat_map(|p| (0..size).map(move |_| p.get()));
            // Held together until all are open, then returned to their pools.
            drop(join_all(checkouts).await);
            WarmStart::default()
        }
    }
}

/// Drives the plan's load shape until it ends or `stop` is cancelled (Ctrl-C, a threshold
/// abort). Returns when every VU has finished or been stopped; VUs stopped mid-query record
/// the query as incomplete.
pub async fn execute(
    plan: &Plan,
    ctx: Arc<RunContext>,
    vus: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    match &plan.load {
        LoadShape::Closed { .. } => closed::run(plan, ctx, vus, stop).await,
        LoadShape::Open { .. } => open::run(plan, ctx, vus, stop).await,
    }
}
