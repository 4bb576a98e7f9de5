//! Applies `migrations/*.sql` in file-name order, each in its own transaction, and records what
//! ran (name and MD5 checksum of the file) in `thumper_schema_migrations`.
//!
//! An applied migration whose file has since changed is an error naming the file: silently
//! re-running or skipping it would leave the database different from what the files say. All
//! applied files are verified before anything new runs. A session advisory lock keeps two
//! runners from racing, so run this against PostgreSQL directly (the owner role), not through
//! PgBouncer in transaction mode.
//!
//! No crate fits: refinery and sqlx want `V1__name.sql` or their own driver, while our files are
//! `000_base_schema.sql`, applied with tokio-postgres's simple protocol (whole file, one batch).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use tokio_postgres::{Client, NoTls};

/// Advisory lock key held while migrating (`'thumper'` in ASCII).
const LOCK_KEY: i64 = 0x0074_6875_6d70_6572;

/// The bookkeeping table.
pub const MIGRATIONS_TABLE: &str = "thumper_schema_migrations";

/// One migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    /// File name, e.g. `001_scaling_schema.sql`.
    pub name: String,
    /// Hex MD5 of the file's bytes.
    pub checksum: String,
    /// The SQL.
    pub sql: String,
}

/// What happened to one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationOutcome {
    /// File name.
    pub name: String,
    /// Hex MD5 of the file.
    pub checksum: String,
    /// Applied now, or found already applied.
    pub status: MigrationStatus,
}

/// Whether a migration ran now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStatus {
    /// Ran in this call, taking this long.
    Applied(Duration),
    /// Recorded earlier with the same checksum; not run again.
    AlreadyApplied,
}

/// A PostgreSQL error shown with its SQLSTATE, detail and hint (tokio-postgres's own Display
/// omits the code, which is what callers classify by).
#[derive(Debug)]
pub struct DbError(pub tokio_postgres::Error);

impl DbError {
    /// The SQLSTATE, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.0.code().map(|c| c.code())
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "SQLSTATE {}: {}", db.code().code(), db.message())?;
                if let Some(detail) = db.detail() {
                    write!(f, " (detail: {detail})")?;
                }
                if let Some(hint) = db.hint() {
                    write!(f, " (hint: {hint})")?;
                }
                Ok(())
            }
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError(e)
    }
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The migrations directory could not be read.
    #[error("cannot read migrations directory {}: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A migration file could not be read.
    #[error("cannot read migration {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory holds no `.sql` files: almost certainly the wrong directory.
    #[error("no *.sql migrations in {}", dir.display())]
    NoMigrations {
        /// The directory.
        dir: PathBuf,
    },
    /// Could not connect to the database.
    #[error("cannot connect to the database to migrate: {0}")]
    Connect(DbError),
    /// An already-applied migration's file no longer matches what was applied.
    #[error(
        "migration {name} was already applied with checksum {recorded}, but the file now has \
         checksum {current}: applied migrations must not be edited; add a new migration instead"
    )]
    Changed {
        /// File name.
        name: String,
        /// Checksum recorded when it was applied.
        recorded: String,
        /// Checksum of the file now.
        current: String,
    },
    /// A migration's SQL failed; its transaction was rolled back.
    #[error("migration {name} failed{}: {source}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Failed {
        /// File name.
        name: String,
        /// 1-based line in the file where the failing statement's error points, if known.
        line: Option<usize>,
        /// The database error.
        source: DbError,
    },
    /// Reading or writing the bookkeeping table failed.
    #[error("migration bookkeeping ({step}) failed: {source}")]
    Bookkeeping {
        /// What we were doing.
        step: &'static str,
        /// The database error.
        source: DbError,
    },
}

/// Reads the `*.sql` files of `dir`, sorted by file name.
pub fn discover(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
    let entries = std::fs::read_dir(dir).map_err(|source| MigrateError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| MigrateError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sql") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(MigrateError::NoMigrations {
            dir: dir.to_owned(),
        });
    }
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|source| MigrateError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let sql = String::from_utf8(bytes.clone()).map_err(|e| MigrateError::ReadFile {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            Ok(Migration {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                checksum: hex(&Md5::digest(&bytes)),
                sql,
            })
        })
        .collect()
}

/// Applies the migrations in `dir` to the database at `database_url` (connect as the owner role,
/// directly to PostgreSQL).
pub async fn apply(database_url: &str, dir: &Path) -> Result<Vec<MigrationOutcome>, MigrateError> {
    let migrations = discover(dir)?;
    let (client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(|e| MigrateError::Connect(e.into()))?;
    let driver = tokio::spawn(connection);
    let result = apply_with(&client, &migrations).await;
    drop(client);
    let _ = driver.await;
    result
}

/// Maps a failed bookkeeping statement (lock, history table) to an error naming its step.
fn book(step: &'static str) -> impl Fn(tokio_postgres::Error) -> MigrateError {
    move |e| MigrateError::Bookkeeping {
        step,
        source: e.into(),
    }
}

/// Applies `migrations` over an open connection.
pub async fn apply_with(
    client: &Client,
    migrations: &[Migration],
) -> Result<Vec<MigrationOutcome>, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(book("take the migration lock"))?;
    let result = apply_locked(client, migrations).await;
    // A failed unlock (the connection broke) is harmless: the lock dies with the session, and
    // the migrations' own outcome is what the caller needs to hear.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn apply_locked(
    client: &Client,
    migrations: &[Migration],
) -> Result<Vec<MigrationOutcome>, MigrateError> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                 name text PRIMARY KEY,
                 checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 duration_ms double precision NOT NULL
             )"
        ))
        .await
        .map_err(book("create the bookkeeping table"))?;
    let applied: std::collections::HashMap<String, String> = client
        .query(
            &format!("SELECT name, checksum FROM {MIGRATIONS_TABLE}"),
            &[],
        )
        .await
        .map_err(book("read applied migrations"))?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

    // Verify everything already applied before changing anything.
    for m in migrations {
        if let Some(recorded) = applied.get(&m.name) {
            if *recorded != m.checksum {
                return Err(MigrateError::Changed {
                    name: m.name.clone(),
                    recorded: recorded.clone(),
                    current: m.checksum.clone(),
                });
            }
        }
    }

    let mut outcomes = Vec::with_capacity(migrations.len());
    for m in migrations {
        let status = if applied.contains_key(&m.name) {
            MigrationStatus::AlreadyApplied
        } else {
            MigrationStatus::Applied(apply_one(client, m).await?)
        };
        tracing::debug!(migration = %m.name, ?status, "migration");
        outcomes.push(MigrationOutcome {
            name: m.name.clone(),
            checksum: m.checksum.clone(),
            status,
        });
    }
    Ok(outcomes)
}

async fn apply_one(client: &Client, m: &Migration) -> Result<Duration, MigrateError> {
    let started = Instant::now();
    let failed = |e: tokio_postgres::Error| MigrateError::Failed {
        name: m.name.clone(),
        line: error_line(&e, &m.sql),
        source: e.into(),
    };
    client.batch_execute("BEGIN").await.map_err(failed)?;
    let result = async {
        client.batch_execute(&m.sql).await.map_err(failed)?;
        let elapsed = started.elapsed();
        client
            .execute(
                &format!(
                    "INSERT INTO {MIGRATIONS_TABLE} (name, checksum, duration_ms) VALUES ($1, $2, $3)"
                ),
                &[&m.name, &m.checksum, &(elapsed.as_secs_f64() * 1e3)],
            )
            .await
            .map_err(|e| MigrateError::Bookkeeping {
                step: "record the migration",
                source: e.into(),
            })?;
        client.batch_execute("COMMIT").await.map_err(failed)?;
        Ok(elapsed)
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// The 1-based line of `sql` that a syntax/semantic error's position points into.
fn error_line(e: &tokio_postgres::Error, sql: &str) -> Option<usize> {
    use tokio_postgres::error::ErrorPosition;
    let Some(ErrorPosition::Original(pos)) = e.as_db_error()?.position() else {
        return None;
    };
    // The position counts characters, 1-based.
    let before: String = sql
        .chars()
        .take((*pos as usize).saturating_sub(1))
        .collect();
    Some(before.matches('\n').count() + 1)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_sql_files_in_name_order_with_checksums() {
        let dir = std::env::temp_dir().join(format!("thumper-migrate-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("010_b.sql"), "SELECT 2;").unwrap();
        std::fs::write(dir.join("002_a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.join("README.md"), "not a migration").unwrap();
        let found = discover(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = found.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["002_a.sql", "010_b.sql"]);
        // md5("SELECT 1;")
        assert_eq!(found[0].checksum, hex(&Md5::digest(b"SELECT 1;")));
        assert_eq!(found[0].checksum.len(), 32);
    }

    #[test]
    fn an_empty_directory_is_an_error() {
        let dir =
            std::env::temp_dir().join(format!("thumper-migrate-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = discover(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(err, MigrateError::NoMigrations { .. }));
    }
}
