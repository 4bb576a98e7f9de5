//! The database below everything that talks to it: the one connect ([`connect`], typed
//! [`ConnectError`]s that name the target without its password) and error classification:
//! connection errors (the target could not be reached or the connection
//! broke) apart from query errors (the server answered with an error), each with a class —
//! the SQLSTATE where there is one — so reports count errors by class, not one by one.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::redact::redact;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse.
    #[error("{url}: not a valid PostgreSQL URL ({reason})")]
    BadUrl {
        /// The URL, password removed.
        url: String,
        /// The parser's words.
        reason: String,
    },
    /// Nothing answered in time.
    #[error("{url} did not answer within {after:?}")]
    Timeout {
        /// The URL, password removed.
        url: String,
        /// How long it was given.
        after: Duration,
    },
    /// The server refused the connection or the login.
    #[error("cannot log in to {url}: {reason}")]
    Login {
        /// The URL, password removed.
        url: String,
        /// The server's or the driver's words ([`describe`]).
        reason: String,
    },
}

/// Opens a connection to `url` within `timeout` and drives it on the current runtime.
pub async fn connect(url: &str, timeout: Duration) -> Result<Client, ConnectError> {
    let mut config: tokio_postgres::Config =
        url.parse()
            .map_err(|e: tokio_postgres::Error| ConnectError::BadUrl {
                url: redact(url),
                reason: e.to_string(),
            })?;
    config.connect_timeout(timeout);
    let (client, conn) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| ConnectError::Timeout {
            url: redact(url),
            after: timeout,
        })?
        .map_err(|e| ConnectError::Login {
            url: redact(url),
            reason: describe(&e),
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Which error counter a failure goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The target could not be reached, the login failed or the connection broke.
    Connection,
    /// The server answered the query with an error.
    Query,
}

/// A classified failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFailure {
    /// Which counter the failure goes to.
    pub kind: ErrorKind,
    /// `SQLSTATE name` (e.g. `57014 query_canceled`) or a short kind (`closed`, `timeout`, ...).
    pub class: String,
    /// Whether the connection is unusable and must be replaced.
    pub broken: bool,
}

/// Classifies a tokio-postgres error by SQLSTATE or kind.
pub fn classify(e: &tokio_postgres::Error) -> QueryFailure {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 08 is "connection exception"; 57P01-03 are server shutdown/crash/starting.
        // PgBouncer reports its own failures (server down, login failed, pool timeouts) as 08P01.
        let connection = code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
        return QueryFailure {
            kind: if connection {
                ErrorKind::Connection
            } else {
                ErrorKind::Query
            },
            class: match sqlstate_name(code) {
                "" => code.to_owned(),
                name => format!("{code} {name}"),
            },
            broken: connection,
        };
    }
    let text = e.to_string();
    let class = if e.is_closed() || text.contains("connection closed") {
        "closed"
    } else if text.contains("timed out") || text.contains("timeout") {
        "timeout"
    } else if text.contains("refused") {
        "connection_refused"
    } else if text.contains("error connecting") || text.contains("io") {
        "io"
    } else {
        "client"
    };
    QueryFailure {
        kind: ErrorKind::Connection,
        class: class.to_owned(),
        broken: true,
    }
}

/// Names for the SQLSTATEs a load test meets; others keep their code.
fn sqlstate_name(code: &str) -> &'static str {
    match code {
        "08000" => "connection_exception",
        "08003" => "connection_does_not_exist",
        "08006" => "connection_failure",
        "08001" => "sqlclient_unable_to_establish_sqlconnection",
        "08004" => "sqlserver_rejected_establishment_of_sqlconnection",
        "08P01" => "protocol_violation",
        "26000" => "invalid_sql_statement_name",
        "28P01" => "invalid_password",
        "28000" => "invalid_authorization_specification",
        "3D000" => "invalid_catalog_name",
        "40001" => "serialization_failure",
        "40P01" => "deadlock_detected",
        "42501" => "insufficient_privilege",
        "42601" => "syntax_error",
        "42P01" => "undefined_table",
        "42703" => "undefined_column",
        "42883" => "undefined_function",
        "53300" => "too_many_connections",
        "57014" => "query_canceled",
        "57P01" => "admin_shutdown",
        "57P02" => "crash_shutdown",
        "57P03" => "cannot_connect_now",
        "22P02" => "invalid_text_representation",
        "22012" => "division_by_zero",
        "23505" => "unique_violation",
        "55P03" => "lock_not_available",
        "25P02" => "in_failed_sql_transaction",
        _ => "",
    }
}

/// A tokio-postgres error as a sentence: its Display alone says only "db error".
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}
