//! What row-level security costs and whether a policy defeats the index.
//!
//! - [`plan`]: reading `EXPLAIN (FORMAT JSON)` and the rules a tenant query's plan must pass
//!   (pure, unit-tested on real plans).
//! - [`check`]: `thumper rls-check`: those rules applied to a scenario's tenant-scoped queries
//!   on a live database, as the application role with a tenant set.
//! - [`bench`]: `thumper rls-bench`: RLS against a bypassing baseline (and the seed's OR policy)
//!   at several table sizes, through the ordinary run summary, reports and gate.

pub mod bench;
pub mod check;
pub mod plan;
