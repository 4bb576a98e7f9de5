//! Executors: the closed model (ramping VUs that wait for each answer) and the open model
//! (iterations started on a schedule, whatever the responses), both driving the same
//! [`VirtualUser`](vu) iteration.

mod closed;
mod connector;
mod open;
mod vu;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

pub use connector::{Connector, ConnectorError};

use crate::metrics::recorder::Sample;
use crate::scenario::Segment;
use crate::scenario::{LoadShape, Plan};
use crate::workload::Workload;

/// Everything a virtual user needs, shared read-only.
pub struct RunContext {
    /// When the run started; sample times count from here.
    pub start: Instant,
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
    /// Where VUs send their sample batches (the aggregator).
    pub samples: UnboundedSender<Vec<Sample>>,
    /// This instance's share of a fleet run ([`Segment::WHOLE`] alone).
    pub segment: Segment,
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
