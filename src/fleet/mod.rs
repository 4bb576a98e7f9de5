//! Running one scenario from many generators (each instance's share of the load is
//! [`crate::scenario::segment`]): the coordinator and workers of a run coordinated over NATS ([`coordinator`],
//! [`worker`], [`protocol`]; [`local`] runs them as processes here), and one summary and
//! verdict from the instances' summaries ([`merge`], with its per-instance [`breakdown`]);
//! the Kubernetes manifests of a coordinated fleet ([`manifest`]).

pub mod breakdown;
mod console;
pub mod coordinator;
pub mod local;
pub mod manifest;
pub mod merge;
pub mod protocol;
pub mod worker;

pub use crate::scenario::Segment;

/// How a worker reaches its fleet's coordinator (`--fleet-nats`, `--fleet-id`).
#[derive(Debug, Clone)]
pub struct FleetLink {
    /// The NATS server's URL.
    pub nats: String,
    /// The fleet run's id (a NATS subject token).
    pub id: String,
    /// How long to wait for the other side at the barrier.
    pub ready_timeout: std::time::Duration,
}

impl FleetLink {
    /// How a run's side of a fleet reaches the other over the NATS server at `nats`.
    pub fn of(opts: &crate::run::RunOptions, nats: &str) -> FleetLink {
        FleetLink {
            nats: nats.to_owned(),
            id: opts.fleet_id.clone(),
            ready_timeout: opts.ready_timeout,
        }
    }
}
