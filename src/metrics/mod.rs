//! Metrics: per-worker HDR recorders, interval aggregation and the run summary.

pub mod codec;
pub mod summary;
