//! Why the embedded stack could not be started, stopped or found: each variant names the binary,
//! path, port or setting involved.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::StackUrls;
use crate::migrate::{DbError, MigrateError};

/// Why the stack could not be started, stopped or found.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A binary is not installed.
    #[error(
        "`{binary}` not found on PATH, in `pg_config --bindir` or /usr/lib/postgresql/*/bin; \
         install the Debian package `{package}` (apt-get install {package})"
    )]
    MissingBinary {
        /// The binary.
        binary: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// Running as root with no unprivileged account to run the servers as.
    #[error("running as root, and neither a `postgres` nor a `nobody` account exists to run PostgreSQL and PgBouncer as (they refuse to run as root)")]
    NoServiceUser,
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we tried.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// getrlimit/setrlimit failed.
    #[error("cannot read or raise the open-file limit: {0}")]
    Rlimit(nix::Error),
    /// The hard open-file limit is too low for PgBouncer's `max_client_conn`.
    #[error("PgBouncer needs about {needed} open files (max_client_conn plus server connections) but the hard limit is {hard}; raise it (ulimit -Hn) or lower max_client_conn")]
    FileLimit {
        /// Descriptors needed.
        needed: u64,
        /// The hard limit.
        hard: u64,
    },
    /// A binary could not be executed.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A one-shot command (initdb) failed.
    #[error("{binary} failed ({status}); its output ends with:\n{log_tail}")]
    Command {
        /// The binary.
        binary: String,
        /// Its exit status.
        status: String,
        /// The end of its output.
        log_tail: String,
    },
    /// Another process took the port we picked (retried internally with another port).
    #[error("{server} could not listen on 127.0.0.1:{port}: address already in use")]
    PortInUse {
        /// "postgres" or "pgbouncer".
        server: &'static str,
        /// The port.
        port: u16,
    },
    /// A server exited while we waited for it to become ready.
    #[error("{server} (port {port}) exited during start-up ({status}); {} ends with:\n{log_tail}", log.display())]
    Exited {
        /// "postgres" or "pgbouncer".
        server: &'static str,
        /// Its port.
        port: u16,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of the log.
        log_tail: String,
    },
    /// A server did not accept a real login in time.
    #[error("{server} on 127.0.0.1:{port} did not accept a login within {}s; last error: {last_error}; see {}", waited.as_secs(), log.display())]
    NotReady {
        /// "postgres" or "pgbouncer".
        server: &'static str,
        /// Its port.
        port: u16,
        /// How long we waited.
        waited: Duration,
        /// The last connection error.
        last_error: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A setup statement failed.
    #[error("stack setup failed to {step}: {source}")]
    Sql {
        /// What we were doing.
        step: &'static str,
        /// The database error, with its SQLSTATE.
        source: DbError,
    },
    /// Applying the migrations failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The state file is unreadable.
    #[error("stack state file {} is invalid: {reason}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `up` found a stack already up.
    #[error("a stack is already up (state file {}); run `thumper stack down` first", state_file.display())]
    AlreadyRunning {
        /// The state file describing it.
        state_file: PathBuf,
        /// Its URLs.
        urls: Box<StackUrls>,
    },
}

impl StackError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> StackError {
        StackError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
