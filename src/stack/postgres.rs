//! The throwaway PostgreSQL cluster: initdb, its configuration, and creating the Arrakis roles
//! and database.
//!
//! The cluster listens on 127.0.0.1 only, with no Unix socket (so parallel stacks never collide
//! on `/tmp/.s.PGSQL.*`), and with durability off: it is thrown away after the run, and only
//! the seeding writes. Roles get md5-stored passwords so PgBouncer can log in with the hash in
//! its auth file (see `pgbouncer.rs`).

use std::path::Path;

use tokio_postgres::{Client, NoTls};

use super::process::ServiceUser;
use super::{Credentials, StackError, ADMIN_ROLE, APP_ROLE, DATABASE, OWNER_ROLE, SUPERUSER};
use crate::migrate::DbError;

/// Runs initdb into `data_dir` with `SUPERUSER` as bootstrap superuser.
pub async fn initdb(
    initdb: &Path,
    user: &ServiceUser,
    base: &Path,
    data_dir: &Path,
    superuser_password: &str,
    settings: &PostgresSettings,
) -> Result<(), StackError> {
    let pwfile = base.join("superuser.pw");
    super::pgbouncer::write_private(&pwfile, superuser_password, user)?;
    let log = base.join("initdb.log");
    let mut cmd = user.command(initdb, base, &log)?;
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-U")
        .arg(SUPERUSER)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "--auth=md5",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        ]);
    let status = tokio::process::Command::from(cmd)
        .status()
        .await
        .map_err(|source| StackError::Spawn {
            binary: initdb.display().to_string(),
            source,
        })?;
    let _ = std::fs::remove_file(&pwfile);
    if !status.success() {
        return Err(StackError::Command {
            binary: initdb.display().to_string(),
            status: status.to_string(),
            log_tail: super::log_tail(&log),
        });
    }
    configure(data_dir, settings)
}

/// The embedded PostgreSQL's own settings (`[stack.postgres]` in a scenario).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// Load `pg_stat_statements` (`shared_preload_libraries`, with `track_planning = on`) and
    /// create the extension in the Arrakis database, so a run can give each query's server time
    /// (src/metrics/server.rs). On by default; `false` gives a server without it, as many
    /// managed ones are (what the notes then say is tested in tests/server.rs).
    #[serde(default = "yes")]
    pub pg_stat_statements: bool,
}

fn yes() -> bool {
    true
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            pg_stat_statements: true,
        }
    }
}

/// Appends our settings to `postgresql.conf` (later lines win) and replaces `pg_hba.conf`.
fn configure(data_dir: &Path, settings: &PostgresSettings) -> Result<(), StackError> {
    let conf = data_dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).map_err(|e| StackError::io("read", &conf, e))?;
    text.push_str(
        "\n# --- thumper: throwaway cluster for load tests ---\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = ''\n\
         password_encryption = md5\n\
         max_connections = 300\n\
         shared_buffers = 128MB\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         logging_collector = off\n\
         log_min_messages = warning\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n",
    );
    if settings.pg_stat_statements {
        // Top-level statements only: a statement's time already holds the time of what it
        // calls (set_tenant_context's own statements), and the table stays small.
        text.push_str(
            "shared_preload_libraries = 'pg_stat_statements'\n\
             pg_stat_statements.track = top\n\
             pg_stat_statements.track_planning = on\n",
        );
    }
    std::fs::write(&conf, text).map_err(|e| StackError::io("write", &conf, e))?;
    let hba = data_dir.join("pg_hba.conf");
    // Password logins over loopback TCP only; `md5` also accepts SCRAM-stored passwords.
    std::fs::write(
        &hba,
        "# written by thumper\n\
         # TYPE  DATABASE  USER  ADDRESS        METHOD\n\
         host    all       all   127.0.0.1/32   md5\n",
    )
    .map_err(|e| StackError::io("write", &hba, e))
}

/// Opens a connection and drives it on the current runtime.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates the Arrakis roles and database, connected as the superuser.
pub(crate) async fn bootstrap(
    superuser_url: &str,
    creds: &Credentials,
    settings: &PostgresSettings,
) -> Result<(), StackError> {
    let sql = |step: &'static str| {
        move |e: tokio_postgres::Error| StackError::Sql {
            step,
            source: DbError(e),
        }
    };
    let client = connect(superuser_url)
        .await
        .map_err(sql("connect as the superuser"))?;
    // Passwords are random alphanumerics, so quoting them inline is safe. One statement per
    // call: CREATE DATABASE refuses to run in the implicit transaction of a multi-statement query.
    let statements = [
        format!("CREATE ROLE {OWNER_ROLE} LOGIN PASSWORD '{}'", creds.owner),
        format!("CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{}'", creds.app),
        format!("CREATE ROLE {ADMIN_ROLE} NOLOGIN"),
        format!("GRANT {ADMIN_ROLE} TO {OWNER_ROLE}"),
        format!("CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}"),
        format!("REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {DATABASE} TO {APP_ROLE}"),
        // The owner (the admin URL) reads every role's statistics: the server's side of a run.
        format!("GRANT pg_read_all_stats TO {OWNER_ROLE}"),
    ];
    for statement in &statements {
        client
            .batch_execute(statement)
            .await
            .map_err(sql("create the roles and database"))?;
    }
    if settings.pg_stat_statements {
        // Not a trusted extension: the superuser creates it, in the database the view is read in.
        let base = superuser_url
            .strip_suffix("/postgres")
            .unwrap_or(superuser_url);
        let in_database = format!("{base}/{DATABASE}");
        connect(&in_database)
            .await
            .map_err(sql("connect to the database as the superuser"))?
            // In a schema of its own: the application's schema (`public`) holds the
            // application's objects only (tests/migrate.rs, tests/rls.rs check it does).
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS thumper_stats; \
                 GRANT USAGE ON SCHEMA thumper_stats TO PUBLIC; \
                 CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA thumper_stats",
            )
            .await
            .map_err(sql("create the pg_stat_statements extension"))?;
    }
    Ok(())
}
