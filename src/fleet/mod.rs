//! Running one scenario from many generators: each instance's share of the load
//! ([`segment`]), one summary and verdict from the instances' summaries ([`merge`]), local
//! fleets ([`local`]) and the Kubernetes manifests of a coordinated one ([`manifest`]).

pub mod local;
pub mod manifest;
pub mod merge;
pub mod segment;

pub use segment::Segment;
