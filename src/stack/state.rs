//! The state file of a stack left up by `thumper stack up`, so later commands (`stack status`,
//! scenarios without `--target`, `stack down`) can find it.
//!
//! It lives in the system temp dir, one per user (`thumper-stack-<uid>.json`, or the path in
//! `THUMPER_STACK_STATE`), mode 0600 because the URLs carry passwords. A state file is trusted
//! only while both recorded processes are alive and still the stack's own (their command lines
//! name this stack's data directory / config file), so a stale file after a reboot or a kill is
//! simply ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::process::pid_alive;
use super::{PgBouncerSettings, StackError, StackUrls};

/// Environment variable overriding the state file's path.
pub const STATE_ENV: &str = "THUMPER_STACK_STATE";

/// What `stack up` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackState {
    /// The stack's URLs.
    pub urls: StackUrls,
    /// The postmaster's pid.
    pub postgres_pid: u32,
    /// PgBouncer's pid.
    pub pgbouncer_pid: u32,
    /// The stack's directory (data dir, configs, logs); removed by `down`.
    pub base_dir: PathBuf,
    /// The data directory (appears in the postmaster's command line).
    pub data_dir: PathBuf,
    /// PgBouncer's config file (appears in its command line).
    pub pgbouncer_config: PathBuf,
    /// The PgBouncer settings it was started with.
    pub pgbouncer: PgBouncerSettings,
}

impl StackState {
    /// Whether the postmaster is alive and is this stack's.
    pub fn postgres_alive(&self) -> bool {
        pid_alive(self.postgres_pid, &self.data_dir.to_string_lossy())
    }

    /// Whether PgBouncer is alive and is this stack's.
    pub fn pgbouncer_alive(&self) -> bool {
        pid_alive(self.pgbouncer_pid, &self.pgbouncer_config.to_string_lossy())
    }
}

/// The state file's path: `$THUMPER_STACK_STATE`, else `<temp>/thumper-stack-<uid>.json`.
pub fn default_path() -> PathBuf {
    std::env::var_os(STATE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("thumper-stack-{}.json", nix::unistd::getuid()))
        })
}

/// Reads the state file; `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<StackState>, StackError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StackError::io("read the state file", path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StackError::State {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Writes the state file atomically with mode 0600.
pub fn write(path: &Path, state: &StackState) -> Result<(), StackError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_string_pretty(state).map_err(|e| StackError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| StackError::io("write the state file", &tmp, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| StackError::io("write the state file", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StackError::io("write the state file", path, e))
}

/// Removes the state file (absent is fine).
pub fn remove(path: &Path) -> Result<(), StackError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StackError::io("remove the state file", path, e)),
    }
}
