//! Running one scenario from many generators: each instance's share of the load
//! ([`segment`]), and one summary and verdict from the instances' summaries ([`merge`]).

pub mod breakdown;
pub mod local;
pub mod merge;
pub mod segment;

pub use segment::Segment;
