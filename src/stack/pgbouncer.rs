//! PgBouncer in front of the embedded PostgreSQL: its settings (the sprint's, overridable per
//! scenario), its config and auth files, and starting it.
//!
//! Authentication is `auth_type = md5` (the sprint's setting) with md5-stored passwords: the
//! stack creates its roles with `password_encryption = md5`, and `userlist.txt` holds the same
//! `md5` + md5(password ‖ user) hash, which PgBouncer can use both to check clients and to log
//! in to PostgreSQL. An md5 hash in the auth file against a SCRAM-stored password fails with
//! "wrong password type" and stalls the pool for `server_login_retry`, so the two must agree.

use std::fmt::Write as _;
use std::path::Path;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::StackError;

/// PgBouncer's pooling mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection per client for the client's whole session.
    Session,
    /// A server connection per transaction (the sprint's choice; what the load test targets).
    Transaction,
    /// A server connection per statement.
    Statement,
}

impl PoolMode {
    /// The value PgBouncer's config expects.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// PgBouncer settings: defaults are the sprint's (S-1.4); a scenario may override any of them
/// under `[stack.pgbouncer]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgBouncerSettings {
    /// `pool_mode` (default `transaction`).
    pub pool_mode: PoolMode,
    /// `max_client_conn` (default 1000). The open-file limit must exceed it.
    pub max_client_conn: u32,
    /// `default_pool_size`: server connections per (database, user) (default 25).
    pub default_pool_size: u32,
    /// `min_pool_size` (default 5). Note: with a non-zero minimum, a PAUSE makes PgBouncer open
    /// and drop a server connection, count a failed login and wait `server_login_retry` after
    /// RESUME, turning a 1 s pause into a ~15 s outage. 0 avoids that.
    pub min_pool_size: u32,
    /// `reserve_pool_size` (default 0).
    pub reserve_pool_size: u32,
    /// `server_idle_timeout` in seconds (default 300).
    pub server_idle_timeout: u32,
    /// `query_timeout` in seconds (default 30).
    pub query_timeout: u32,
    /// `query_wait_timeout`: how long a client may wait for a server connection (default 120).
    pub query_wait_timeout: u32,
    /// `server_login_retry`: the pause after a failed server login (default 15).
    pub server_login_retry: u32,
}

impl Default for PgBouncerSettings {
    fn default() -> Self {
        PgBouncerSettings {
            pool_mode: PoolMode::Transaction,
            max_client_conn: 1000,
            default_pool_size: 25,
            min_pool_size: 5,
            reserve_pool_size: 0,
            server_idle_timeout: 300,
            query_timeout: 30,
            query_wait_timeout: 120,
            server_login_retry: 15,
        }
    }
}

impl PgBouncerSettings {
    /// Open files PgBouncer needs: a socket per client and per server connection, plus slack.
    pub fn open_files_needed(&self) -> u64 {
        u64::from(self.max_client_conn)
            + u64::from(self.default_pool_size + self.reserve_pool_size) * 2
            + 64
    }
}

/// A user PgBouncer accepts, with its plain password (hashed into the auth file).
pub struct AuthUser<'a> {
    /// Role name.
    pub name: &'a str,
    /// Plain password.
    pub password: &'a str,
}

/// PostgreSQL's md5 password format: `md5` + hex(md5(password ‖ user)).
pub fn md5_secret(user: &str, password: &str) -> String {
    let digest = Md5::new()
        .chain_update(password.as_bytes())
        .chain_update(user.as_bytes())
        .finalize();
    digest.iter().fold(String::from("md5"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The auth file: one `"user" "md5…"` line per user.
pub fn auth_file(users: &[AuthUser<'_>]) -> String {
    users
        .iter()
        .map(|u| format!("\"{}\" \"{}\"\n", u.name, md5_secret(u.name, u.password)))
        .collect()
}

/// Where PgBouncer listens and what it pools.
pub struct Listen<'a> {
    /// PgBouncer's port on 127.0.0.1.
    pub port: u16,
    /// PostgreSQL's port on 127.0.0.1.
    pub postgres_port: u16,
    /// The pooled database's name.
    pub database: &'a str,
    /// The console user (`admin_users`).
    pub admin_user: &'a str,
}

/// The `pgbouncer.ini` text.
pub fn config(settings: &PgBouncerSettings, listen: &Listen<'_>, dir: &Path) -> String {
    let s = settings;
    format!(
        "; written by thumper for one throwaway stack\n\
         [databases]\n\
         {db} = host=127.0.0.1 port={pg} dbname={db}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = md5\n\
         auth_file = {auth}\n\
         admin_users = {admin}\n\
         stats_users = {admin}\n\
         pidfile = {pid}\n\
         pool_mode = {mode}\n\
         max_client_conn = {max_client_conn}\n\
         default_pool_size = {default_pool_size}\n\
         min_pool_size = {min_pool_size}\n\
         reserve_pool_size = {reserve_pool_size}\n\
         server_idle_timeout = {server_idle_timeout}\n\
         query_timeout = {query_timeout}\n\
         query_wait_timeout = {query_wait_timeout}\n\
         server_login_retry = {server_login_retry}\n\
         ignore_startup_parameters = extra_float_digits\n",
        db = listen.database,
        pg = listen.postgres_port,
        port = listen.port,
        auth = dir.join("userlist.txt").display(),
        admin = listen.admin_user,
        pid = dir.join("pgbouncer.pid").display(),
        mode = s.pool_mode.as_str(),
        max_client_conn = s.max_client_conn,
        default_pool_size = s.default_pool_size,
        min_pool_size = s.min_pool_size,
        reserve_pool_size = s.reserve_pool_size,
        server_idle_timeout = s.server_idle_timeout,
        query_timeout = s.query_timeout,
        query_wait_timeout = s.query_wait_timeout,
        server_login_retry = s.server_login_retry,
    )
}

/// Writes a file readable only by the service user (the auth file holds password hashes).
pub fn write_private(
    path: &Path,
    text: &str,
    user: &super::process::ServiceUser,
) -> Result<(), StackError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| StackError::io("write", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StackError::io("set permissions on", path, e))?;
    user.own(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_secret_matches_postgres() {
        // SELECT 'md5' || md5('secret' || 'alice')
        assert_eq!(
            md5_secret("alice", "secret"),
            "md54a0a68b43b6cd5cf266fa02f196e2371"
        );
        assert!(md5_secret("a", "b").starts_with("md5") && md5_secret("a", "b").len() == 35);
    }

    #[test]
    fn settings_default_to_the_sprint_and_reject_unknown_keys() {
        let s: PgBouncerSettings = toml::from_str("min_pool_size = 0").unwrap();
        assert_eq!(s.min_pool_size, 0);
        assert_eq!(s.max_client_conn, 1000);
        assert_eq!(s.default_pool_size, 25);
        assert_eq!(s.pool_mode, PoolMode::Transaction);
        let err = toml::from_str::<PgBouncerSettings>("max_clients = 5").unwrap_err();
        assert!(err.to_string().contains("max_clients"), "{err}");
    }
}
