//! The embedded stack: a throwaway PostgreSQL with the Arrakis schema and a PgBouncer in front
//! of it, started on free loopback ports in a fresh directory, so `thumper steady` works on a
//! bare machine and tests get a real database and pooler each.
//!
//! Roles (created by [`Stack::start`]; see `migrations/README.md`):
//! - `arrakis_owner` ([`OWNER_ROLE`]): owns the `arrakis` database and every object in it, runs
//!   the migrations and the seeder. It is a member of `arrakis_admin`. `ADMIN_DATABASE_URL`
//!   logs in as it, directly to PostgreSQL.
//! - `arrakis_app` ([`APP_ROLE`]): the application. Owns nothing, is subject to row-level
//!   security, and reaches the database through PgBouncer (`DATABASE_URL`).
//! - `arrakis_admin` ([`ADMIN_ROLE`]): a NOLOGIN group. The admin bypass needs both the
//!   transaction flag (`set_tenant_context(NULL, true)`) and membership of this role, so the
//!   app role setting `app.is_admin` itself gains nothing.
//! - `thumper_super` ([`SUPERUSER`]): the cluster's bootstrap superuser, used only to create the
//!   roles and database (and by fault tests).
//! - `thumper_pgbouncer` ([`CONSOLE_USER`]): PgBouncer's console user (`admin_users`), not a
//!   PostgreSQL role (`PGBOUNCER_ADMIN_URL`).
//!
//! Passwords are random per stack. PgBouncer authenticates with `auth_type = md5` against
//! md5-stored passwords (see [`pgbouncer`]).
//!
//! Lifecycle: [`Stack::start`] owns its servers; [`Stack::stop`] shuts them down cleanly, and
//! dropping a `Stack` (error, panic) kills them and removes the directory, so nothing leaks.
//! [`up`] instead leaves a stack running after thumper exits and records it in a state file
//! ([`state`]) that [`running`] and [`down`] read.

pub mod binaries;
mod error;
pub mod nats;
pub mod pgbouncer;
pub mod postgres;
pub mod process;
pub mod state;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use error::StackError;
pub use pgbouncer::{PgBouncerSettings, PoolMode};
pub use postgres::PostgresSettings;

use crate::migrate::DbError;
use binaries::Binaries;
use process::{Server, ServiceUser};
use state::StackState;

/// The Arrakis database's name.
pub const DATABASE: &str = "arrakis";
/// The migration/owner role.
pub const OWNER_ROLE: &str = "arrakis_owner";
/// The application role (subject to row-level security; through PgBouncer).
pub const APP_ROLE: &str = "arrakis_app";
/// The NOLOGIN group whose members may use the admin bypass.
pub const ADMIN_ROLE: &str = "arrakis_admin";
/// The cluster's bootstrap superuser.
pub const SUPERUSER: &str = "thumper_super";
/// PgBouncer's console user.
pub const CONSOLE_USER: &str = "thumper_pgbouncer";

/// How long a server may take to accept a real login after being started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many free ports we try when another process grabs the one we picked.
const PORT_ATTEMPTS: usize = 5;

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// PgBouncer's settings.
    pub pgbouncer: PgBouncerSettings,
    /// PostgreSQL's settings (`pg_stat_statements` or not).
    pub postgres: PostgresSettings,
    /// Where to create the stack's directory (default: the system temp dir). A fresh,
    /// uniquely named subdirectory is always created inside it.
    pub base_dir: Option<PathBuf>,
    /// The migrations to apply. A relative path that does not exist under the current directory
    /// is looked up under the crate root (so `cargo test` works from anywhere).
    pub migrations_dir: PathBuf,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            pgbouncer: PgBouncerSettings::default(),
            postgres: PostgresSettings::default(),
            base_dir: None,
            migrations_dir: PathBuf::from("migrations"),
        }
    }
}

/// The URLs a stack serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackUrls {
    /// The application role through PgBouncer (what the load runs as).
    pub database_url: String,
    /// The owner role directly to PostgreSQL (migrations, seeding, admin).
    pub admin_database_url: String,
    /// PgBouncer's admin console (database `pgbouncer`; simple query protocol only).
    pub pgbouncer_admin_url: String,
}

/// The pids of a stack's servers (`None` for one that is stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPids {
    /// The postmaster.
    pub postgres: Option<u32>,
    /// PgBouncer.
    pub pgbouncer: Option<u32>,
}

/// Random per-stack passwords.
pub(crate) struct Credentials {
    pub superuser: String,
    pub owner: String,
    pub app: String,
    pub console: String,
}

impl Credentials {
    fn random() -> Credentials {
        use rand::distr::{Alphanumeric, SampleString};
        let mut rng = rand::rng();
        let mut pw = || Alphanumeric.sample_string(&mut rng, 24);
        Credentials {
            superuser: pw(),
            owner: pw(),
            app: pw(),
            console: pw(),
        }
    }
}

/// A running PostgreSQL + PgBouncer with the Arrakis schema applied.
pub struct Stack {
    urls: StackUrls,
    creds: Credentials,
    settings: PgBouncerSettings,
    binaries: Binaries,
    user: ServiceUser,
    base: PathBuf,
    postgres_port: u16,
    pgbouncer_port: u16,
    postgres: Mutex<Option<Server>>,
    pgbouncer: Mutex<Option<Server>>,
    /// Set once the servers are stopped or handed over to `up`: Drop then does nothing.
    released: bool,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("base", &self.base)
            .field("postgres_port", &self.postgres_port)
            .field("pgbouncer_port", &self.pgbouncer_port)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// initdb, start PostgreSQL, create the roles and database, start PgBouncer, wait until the
    /// app role can log in through it, apply the migrations.
    pub async fn start(opts: &StackOptions) -> Result<Stack, StackError> {
        let started = Instant::now();
        let binaries = Binaries::locate()?;
        let user = ServiceUser::pick()?;
        process::raise_open_file_limit(opts.pgbouncer.open_files_needed())?;
        let migrations_dir = resolve_migrations_dir(&opts.migrations_dir);
        let base = make_base_dir(opts.base_dir.as_deref(), &user)?;
        // From here on, dropping `stack` (any `?` below) kills what runs and removes `base`.
        let mut stack = Stack {
            urls: StackUrls {
                database_url: String::new(),
                admin_database_url: String::new(),
                pgbouncer_admin_url: String::new(),
            },
            creds: Credentials::random(),
            settings: opts.pgbouncer.clone(),
            binaries,
            user,
            base,
            postgres_port: 0,
            pgbouncer_port: 0,
            postgres: Mutex::new(None),
            pgbouncer: Mutex::new(None),
            released: false,
        };

        postgres::initdb(
            &stack.binaries.initdb,
            &stack.user,
            &stack.base,
            &stack.data_dir(),
            &stack.creds.superuser,
            &opts.postgres,
        )
        .await?;
        for attempt in 1..=PORT_ATTEMPTS {
            stack.postgres_port = free_port()?;
            match stack.start_postgres().await {
                Err(StackError::PortInUse { .. }) if attempt < PORT_ATTEMPTS => continue,
                other => other?,
            }
            break;
        }
        postgres::bootstrap(&stack.superuser_url(), &stack.creds, &opts.postgres).await?;

        let users = [
            pgbouncer::AuthUser {
                name: APP_ROLE,
                password: &stack.creds.app,
            },
            pgbouncer::AuthUser {
                name: CONSOLE_USER,
                password: &stack.creds.console,
            },
        ];
        pgbouncer::write_private(
            &stack.base.join("userlist.txt"),
            &pgbouncer::auth_file(&users),
            &stack.user,
        )?;
        for attempt in 1..=PORT_ATTEMPTS {
            stack.pgbouncer_port = free_port()?;
            stack.write_pgbouncer_config()?;
            match stack.start_pgbouncer().await {
                Err(StackError::PortInUse { .. }) if attempt < PORT_ATTEMPTS => continue,
                other => other?,
            }
            break;
        }

        stack.urls = StackUrls {
            database_url: stack.app_url(),
            admin_database_url: format!(
                "postgres://{OWNER_ROLE}:{}@127.0.0.1:{}/{DATABASE}",
                stack.creds.owner, stack.postgres_port
            ),
            pgbouncer_admin_url: stack.console_url(),
        };
        crate::migrate::apply(&stack.urls.admin_database_url, &migrations_dir).await?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            postgres_port = stack.postgres_port,
            pgbouncer_port = stack.pgbouncer_port,
            dir = %stack.base.display(),
            "stack started"
        );
        Ok(stack)
    }

    /// The stack's URLs.
    pub fn urls(&self) -> &StackUrls {
        &self.urls
    }

    /// The bootstrap superuser, directly to PostgreSQL's `postgres` database (for tests and
    /// fault injection; nothing in a run needs it).
    pub fn superuser_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/postgres",
            self.creds.superuser, self.postgres_port
        )
    }

    /// The PgBouncer settings it runs with.
    pub fn pgbouncer_settings(&self) -> &PgBouncerSettings {
        &self.settings
    }

    /// The stack's directory (data dir, configs, logs).
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The pids of the running servers.
    pub async fn server_pids(&self) -> ServerPids {
        ServerPids {
            postgres: self.postgres.lock().await.as_ref().map(Server::pid),
            pgbouncer: self.pgbouncer.lock().await.as_ref().map(Server::pid),
        }
    }

    /// Stops PgBouncer, then PostgreSQL (fast shutdown), and removes the directory.
    pub async fn stop(mut self) -> Result<(), StackError> {
        self.stop_pgbouncer().await?;
        self.stop_postgres().await?;
        self.released = true;
        std::fs::remove_dir_all(&self.base).map_err(|e| StackError::io("remove", &self.base, e))
    }

    /// Stops PgBouncer (immediate shutdown: its clients are disconnected). No-op if stopped.
    pub async fn stop_pgbouncer(&self) -> Result<(), StackError> {
        if let Some(server) = self.pgbouncer.lock().await.take() {
            server.stop(Signal::SIGTERM, Duration::from_secs(10)).await;
        }
        Ok(())
    }

    /// Starts PgBouncer again on the same port and waits until the app role can log in through
    /// it (or, while PostgreSQL is stopped, until its console accepts a login). No-op if it is
    /// running.
    pub async fn start_pgbouncer(&self) -> Result<(), StackError> {
        let mut slot = self.pgbouncer.lock().await;
        if let Some(server) = slot.as_mut() {
            if server.exited().is_none() {
                return Ok(());
            }
        }
        *slot = None;
        let log = self.base.join("pgbouncer.log");
        let offset = file_len(&log);
        let mut cmd = self
            .user
            .command(&self.binaries.pgbouncer, &self.base, &log)?;
        cmd.arg(self.pgbouncer_config());
        let server = slot.insert(Server::spawn("pgbouncer", cmd)?);
        let postgres_up = self
            .postgres
            .lock()
            .await
            .as_mut()
            .is_some_and(|pg| pg.exited().is_none());
        let (url, probe) = if postgres_up {
            (self.app_url(), "SELECT 1")
        } else {
            (self.console_url(), "SHOW VERSION")
        };
        wait_ready(server, self.pgbouncer_port, &log, offset, &url, probe).await
    }

    /// Restarts PgBouncer (clients see their connections drop).
    pub async fn restart_pgbouncer(&self) -> Result<(), StackError> {
        self.stop_pgbouncer().await?;
        self.start_pgbouncer().await
    }

    /// Stops PostgreSQL (fast shutdown: sessions are terminated). No-op if stopped.
    pub async fn stop_postgres(&self) -> Result<(), StackError> {
        if let Some(server) = self.postgres.lock().await.take() {
            server.stop(Signal::SIGINT, Duration::from_secs(30)).await;
        }
        Ok(())
    }

    /// Starts PostgreSQL on its port and waits until the superuser can log in. No-op if running.
    pub async fn start_postgres(&self) -> Result<(), StackError> {
        let mut slot = self.postgres.lock().await;
        if let Some(server) = slot.as_mut() {
            if server.exited().is_none() {
                return Ok(());
            }
        }
        *slot = None;
        let log = self.base.join("postgres.log");
        let offset = file_len(&log);
        let mut cmd = self
            .user
            .command(&self.binaries.postgres, &self.base, &log)?;
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.postgres_port.to_string());
        let server = slot.insert(Server::spawn("postgres", cmd)?);
        let url = self.superuser_url();
        wait_ready(server, self.postgres_port, &log, offset, &url, "SELECT 1").await
    }

    /// Restarts PostgreSQL.
    pub async fn restart_postgres(&self) -> Result<(), StackError> {
        self.stop_postgres().await?;
        self.start_postgres().await
    }

    /// Leaves the servers running after this process exits and returns what `down` needs.
    fn detach(mut self) -> StackState {
        let postgres_pid = self.postgres.get_mut().take().map(Server::detach);
        let pgbouncer_pid = self.pgbouncer.get_mut().take().map(Server::detach);
        self.released = true;
        StackState {
            urls: self.urls.clone(),
            postgres_pid: postgres_pid.unwrap_or(0),
            pgbouncer_pid: pgbouncer_pid.unwrap_or(0),
            base_dir: self.base.clone(),
            data_dir: self.data_dir(),
            pgbouncer_config: self.pgbouncer_config(),
            pgbouncer: self.settings.clone(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn pgbouncer_config(&self) -> PathBuf {
        self.base.join("pgbouncer.ini")
    }

    fn app_url(&self) -> String {
        format!(
            "postgres://{APP_ROLE}:{}@127.0.0.1:{}/{DATABASE}",
            self.creds.app, self.pgbouncer_port
        )
    }

    fn console_url(&self) -> String {
        format!(
            "postgres://{CONSOLE_USER}:{}@127.0.0.1:{}/pgbouncer",
            self.creds.console, self.pgbouncer_port
        )
    }

    fn write_pgbouncer_config(&self) -> Result<(), StackError> {
        let text = pgbouncer::config(
            &self.settings,
            &pgbouncer::Listen {
                port: self.pgbouncer_port,
                postgres_port: self.postgres_port,
                database: DATABASE,
                admin_user: CONSOLE_USER,
            },
            &self.base,
        );
        pgbouncer::write_private(&self.pgbouncer_config(), &text, &self.user)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Some(server) = self.pgbouncer.get_mut().take() {
            server.stop_blocking(Signal::SIGTERM, Duration::from_secs(5));
        }
        if let Some(server) = self.postgres.get_mut().take() {
            // Immediate shutdown: the data is thrown away anyway.
            server.stop_blocking(Signal::SIGQUIT, Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Waits until `url` accepts a login and answers `probe`, watching `server` for an early exit
/// (a port taken by someone else shows up as an exit with "Address already in use").
async fn wait_ready(
    server: &mut Server,
    port: u16,
    log: &Path,
    log_offset: u64,
    url: &str,
    probe: &str,
) -> Result<(), StackError> {
    let started = Instant::now();
    let mut last_error: String;
    loop {
        if let Some(status) = server.exited() {
            let tail = log_tail_from(log, log_offset);
            if tail.contains("Address already in use") {
                return Err(StackError::PortInUse {
                    server: server.name,
                    port,
                });
            }
            return Err(StackError::Exited {
                server: server.name,
                port,
                status,
                log: log.to_owned(),
                log_tail: tail,
            });
        }
        match postgres::connect(url).await {
            Ok(client) => match client.simple_query(probe).await {
                Ok(_) => return Ok(()),
                Err(e) => last_error = DbError(e).to_string(),
            },
            Err(e) => last_error = DbError(e).to_string(),
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(StackError::NotReady {
                server: server.name,
                port,
                waited: started.elapsed(),
                last_error,
                log: log.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, StackError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StackError::io("find a free port on", Path::new("127.0.0.1"), e))
}

/// Creates `<parent>/thumper-stack-<pid>-<random>` (mode 0700) owned by the service user.
fn make_base_dir(parent: Option<&Path>, user: &ServiceUser) -> Result<PathBuf, StackError> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    std::fs::create_dir_all(&parent).map_err(|e| StackError::io("create", &parent, e))?;
    let mut attempt = 0;
    loop {
        let dir = parent.join(format!(
            "thumper-stack-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                user.own(&dir)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 10 => {
                attempt += 1;
            }
            Err(e) => return Err(StackError::io("create", &dir, e)),
        }
    }
}

fn resolve_migrations_dir(dir: &Path) -> PathBuf {
    if dir.is_relative() && !dir.exists() {
        let in_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        if in_crate.exists() {
            return in_crate;
        }
    }
    dir.to_owned()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    log_tail_from(path, 0)
}

fn log_tail_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The stack left up by [`up`], if its processes are alive.
pub fn running() -> Option<StackUrls> {
    running_at(&state::default_path())
}

/// [`running`] with an explicit state file.
pub fn running_at(state_file: &Path) -> Option<StackUrls> {
    match state::read(state_file) {
        Ok(Some(st)) if st.postgres_alive() && st.pgbouncer_alive() => Some(st.urls),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the stack state file");
            None
        }
    }
}

/// Starts a stack that outlives this process and records it in the state file.
pub async fn up(opts: &StackOptions) -> Result<StackUrls, StackError> {
    up_at(&state::default_path(), opts).await
}

/// [`up`] with an explicit state file.
pub async fn up_at(state_file: &Path, opts: &StackOptions) -> Result<StackUrls, StackError> {
    if let Some(urls) = running_at(state_file) {
        return Err(StackError::AlreadyRunning {
            state_file: state_file.to_owned(),
            urls: Box::new(urls),
        });
    }
    // A stale state file (its processes gone) is cleaned up first.
    down_at(state_file).await?;
    let stack = Stack::start(opts).await?;
    let urls = stack.urls().clone();
    let st = stack.detach();
    if let Err(e) = state::write(state_file, &st) {
        stop_detached(&st).await;
        return Err(e);
    }
    Ok(urls)
}

/// Stops the stack left up by [`up`]; `Ok(false)` if none was running.
pub async fn down() -> Result<bool, StackError> {
    down_at(&state::default_path()).await
}

/// [`down`] with an explicit state file.
pub async fn down_at(state_file: &Path) -> Result<bool, StackError> {
    let Some(st) = state::read(state_file)? else {
        return Ok(false);
    };
    let was_running = st.postgres_alive() || st.pgbouncer_alive();
    stop_detached(&st).await;
    state::remove(state_file)?;
    Ok(was_running)
}

async fn stop_detached(st: &StackState) {
    process::stop_pid(
        st.pgbouncer_pid,
        &st.pgbouncer_config.to_string_lossy(),
        Signal::SIGTERM,
        Duration::from_secs(10),
    )
    .await;
    process::stop_pid(
        st.postgres_pid,
        &st.data_dir.to_string_lossy(),
        Signal::SIGINT,
        Duration::from_secs(30),
    )
    .await;
    // Only ever delete a directory we created (the state file could have been tampered with).
    let ours = st
        .base_dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("thumper-stack-"));
    if ours {
        let _ = std::fs::remove_dir_all(&st.base_dir);
    }
}

/// Shell-evaluable `NAME='value'` lines for the stack's URLs.
pub fn shell_lines(urls: &StackUrls) -> String {
    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
    format!(
        "DATABASE_URL={}\nADMIN_DATABASE_URL={}\nPGBOUNCER_ADMIN_URL={}\n",
        quote(&urls.database_url),
        quote(&urls.admin_database_url),
        quote(&urls.pgbouncer_admin_url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_are_quoted() {
        let urls = StackUrls {
            database_url: "postgres://a:b@h:1/d".into(),
            admin_database_url: "x'y".into(),
            pgbouncer_admin_url: "z".into(),
        };
        assert_eq!(
            shell_lines(&urls),
            "DATABASE_URL='postgres://a:b@h:1/d'\nADMIN_DATABASE_URL='x'\\''y'\nPGBOUNCER_ADMIN_URL='z'\n"
        );
    }
}
