//! Metrics: per-worker HDR recorders, interval aggregation and the run summary.

pub mod aggregator;
pub mod codec;
pub mod pgbouncer;
pub mod process;
pub mod recorder;
pub mod server;
pub mod summary;
