//! Placeholder (being built on its own branch).
use super::DatasetSpec;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SeedError(pub String);

pub struct SeedOutcome;

pub async fn seed(
    _admin_database_url: &str,
    _spec: &DatasetSpec,
) -> Result<SeedOutcome, SeedError> {
    Err(SeedError("not built yet".into()))
}
