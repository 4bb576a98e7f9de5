//! Placeholder API of the embedded stack (being built on its own branch).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StackError(pub String);

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PgBouncerSettings {}

#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    pub pgbouncer: PgBouncerSettings,
    pub base_dir: Option<PathBuf>,
    pub migrations_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StackUrls {
    pub database_url: String,
    pub admin_database_url: String,
    pub pgbouncer_admin_url: String,
}

pub struct Stack {
    urls: StackUrls,
}

impl Stack {
    pub async fn start(_opts: &StackOptions) -> Result<Stack, StackError> {
        Err(StackError("not built yet".into()))
    }
    pub fn urls(&self) -> &StackUrls {
        &self.urls
    }
    pub async fn stop(self) -> Result<(), StackError> {
        Ok(())
    }
}

pub fn running() -> Option<StackUrls> {
    None
}
pub async fn up(_opts: &StackOptions) -> Result<StackUrls, StackError> {
    Err(StackError("not built yet".into()))
}
pub async fn down() -> Result<bool, StackError> {
    Ok(false)
}
pub fn shell_lines(urls: &StackUrls) -> String {
    format!(
        "DATABASE_URL='{}'\nADMIN_DATABASE_URL='{}'\nPGBOUNCER_ADMIN_URL='{}'\n",
        urls.database_url, urls.admin_database_url, urls.pgbouncer_admin_url
    )
}
pub fn raise_fd_limit() {}
