//! Placeholder (being built on its own branch).
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MigrateError(pub String);

pub struct MigrationOutcome;

pub async fn apply(
    _database_url: &str,
    _dir: &Path,
) -> Result<Vec<MigrationOutcome>, MigrateError> {
    Err(MigrateError("not built yet".into()))
}
impl std::fmt::Display for MigrationOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "")
    }
}
