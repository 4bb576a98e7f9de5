//! thumper: a load-testing and benchmarking harness for the Arrakis scaling stack
//! (PostgreSQL with row-level security behind PgBouncer, and a Twilight Discord gateway).
//!
//! The binary's `run()` reads as the pipeline: scenario → plan → stack → execute → gate →
//! report → exit code. Each stage lives in its own module.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod dataset;
pub mod db;
pub mod executor;
pub mod exit;
pub mod fleet;
pub mod gate;
pub mod gateway;
pub mod gateway_load;
pub mod health;
pub mod metrics;
pub mod migrate;
pub mod output;
pub mod redact;
pub mod report;
pub mod rls;
pub mod run;
pub mod scenario;
pub mod signals;
pub mod stack;
pub mod workload;
