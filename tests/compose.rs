//! `docker-compose.yml` runs the same stack as the embedded one (`src/stack/`). No Docker engine
//! runs where the tests do, so these tests are the guard: they parse the compose file, PgBouncer's
//! ini and auth file and the PostgreSQL init script, and compare them with `thumper::stack`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use thumper::stack::pgbouncer::{self, md5_secret, Listen};
use thumper::stack::{
    PgBouncerSettings, ADMIN_ROLE, APP_ROLE, CONSOLE_USER, DATABASE, OWNER_ROLE, SUPERUSER,
};

const COMPOSE: &str = "docker-compose.yml";
const PGBOUNCER_INI: &str = "docker/pgbouncer/pgbouncer.ini";
const USERLIST: &str = "docker/pgbouncer/userlist.txt";
const INIT_SCRIPT: &str = "docker/postgres/init-arrakis.sh";

/// Keys of PgBouncer's config that say where things are on one machine, not how it behaves.
const LOCATION_KEYS: &[&str] = &[
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "auth_file",
    "pidfile",
];

/// The subset of the compose file these tests read (map forms only).
#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Service {
    image: Option<String>,
    build: Option<Build>,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    volumes: Vec<String>,
    ports: Vec<String>,
    ulimits: BTreeMap<String, Ulimit>,
    healthcheck: Option<Healthcheck>,
}

#[derive(Debug, Deserialize)]
struct Build {
    context: String,
    dockerfile: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Ulimit {
    soft: u64,
    hard: u64,
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

/// Sections of an ini file, each a map of key to value.
type Ini = BTreeMap<String, BTreeMap<String, String>>;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn compose() -> Compose {
    serde_norway::from_str(&read(COMPOSE)).unwrap_or_else(|e| panic!("{COMPOSE}: {e}"))
}

fn service<'a>(compose: &'a Compose, name: &str) -> &'a Service {
    compose
        .services
        .get(name)
        .unwrap_or_else(|| panic!("{COMPOSE} has no `{name}` service"))
}

fn env<'a>(service: &'a Service, name: &str, key: &str) -> &'a str {
    service
        .environment
        .get(key)
        .unwrap_or_else(|| panic!("{COMPOSE}: service `{name}` does not set {key}"))
}

/// PgBouncer's ini format: `[section]`, `key = value`, `;`/`#` comments. A key set twice is an
/// error here (PgBouncer silently keeps the last one, which hides edits).
fn parse_ini(text: &str, what: &str) -> Ini {
    let mut ini = Ini::new();
    let mut section: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{what}:{}: expected `key = value`", n + 1));
        let section = section
            .as_ref()
            .unwrap_or_else(|| panic!("{what}:{}: setting outside a section", n + 1));
        let previous = ini
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_owned(), value.trim().to_owned());
        assert!(
            previous.is_none(),
            "{what}:{}: `{}` set twice",
            n + 1,
            key.trim()
        );
    }
    ini
}

fn compose_ini() -> Ini {
    parse_ini(&read(PGBOUNCER_INI), PGBOUNCER_INI)
}

/// The config the embedded stack writes with its default settings.
fn embedded_ini() -> Ini {
    let listen = Listen {
        port: 6432,
        postgres_port: 5432,
        database: DATABASE,
        admin_user: CONSOLE_USER,
    };
    let text = pgbouncer::config(
        &PgBouncerSettings::default(),
        &listen,
        Path::new("/etc/pgbouncer"),
    );
    parse_ini(&text, "the embedded stack's pgbouncer.ini")
}

/// `"user" "md5…"` lines of PgBouncer's auth file.
fn userlist() -> BTreeMap<String, String> {
    read(USERLIST)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('"').collect();
            match fields.as_slice() {
                ["", user, " ", secret, ""] => (user.to_string(), secret.to_string()),
                _ => panic!("{USERLIST}: expected `\"user\" \"md5…\"`, got `{line}`"),
            }
        })
        .collect()
}

/// A `postgres://user:password@host:port/database` URL found in some text.
#[derive(Debug)]
struct Url {
    user: String,
    password: String,
    host_port: String,
    database: String,
}

fn urls_in(text: &str) -> Vec<Url> {
    text.match_indices("postgres://")
        .map(|(at, scheme)| {
            let rest = &text[at + scheme.len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
                .unwrap_or(rest.len());
            let url = &rest[..end];
            let parsed = url.split_once('@').and_then(|(creds, place)| {
                let (user, password) = creds.split_once(':')?;
                let (host_port, database) = place.split_once('/')?;
                Some(Url {
                    user: user.to_owned(),
                    password: password.to_owned(),
                    host_port: host_port.to_owned(),
                    database: database.to_owned(),
                })
            });
            parsed.unwrap_or_else(|| panic!("cannot parse postgres://{url}"))
        })
        .collect()
}

fn pgbouncer_healthcheck(compose: &Compose) -> String {
    let check = service(compose, "pgbouncer")
        .healthcheck
        .as_ref()
        .unwrap_or_else(|| panic!("{COMPOSE}: pgbouncer has no healthcheck"));
    check.test.join(" ")
}

#[test]
fn compose_defines_the_stacks_services() {
    let compose = compose();
    for name in ["postgres", "pgbouncer", "nats", "gateway"] {
        service(&compose, name);
    }
}

#[test]
fn pgbouncer_settings_are_the_embedded_defaults() {
    let ini = compose_ini();
    let section = &ini["pgbouncer"];
    // Every field of the struct, so a new setting cannot be forgotten here.
    let defaults = serde_json::to_value(PgBouncerSettings::default()).unwrap();
    let defaults = defaults.as_object().unwrap();
    assert!(defaults.len() >= 9, "PgBouncerSettings lost its fields?");
    for (key, value) in defaults {
        let expected = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(
            section.get(key),
            Some(&expected),
            "{PGBOUNCER_INI}: `{key}` must be {expected}, as in PgBouncerSettings::default() \
             (change both together)"
        );
    }
}

#[test]
fn pgbouncer_config_matches_what_the_embedded_stack_writes() {
    let ours = compose_ini();
    let theirs = embedded_ini();
    let (ours, theirs) = (&ours["pgbouncer"], &theirs["pgbouncer"]);
    // The comparison below covers authentication and the console user. The compose PostgreSQL
    // is set up for md5 (password_encryption, userlist hashes): another auth type needs both.
    assert_eq!(
        theirs.get("auth_type").map(String::as_str),
        Some("md5"),
        "the embedded stack left md5: change docker-compose.yml and docker/pgbouncer/ with it"
    );
    assert_eq!(theirs.get("admin_users"), Some(&CONSOLE_USER.to_owned()));
    for (key, value) in theirs {
        if LOCATION_KEYS.contains(&key.as_str()) {
            continue;
        }
        assert_eq!(
            ours.get(key),
            Some(value),
            "{PGBOUNCER_INI}: `{key}` differs from what src/stack/pgbouncer.rs writes"
        );
    }
    for key in ours.keys() {
        assert!(
            theirs.contains_key(key) || LOCATION_KEYS.contains(&key.as_str()),
            "{PGBOUNCER_INI}: `{key}` is not set by the embedded stack; set it in both or neither"
        );
    }
}

#[test]
fn pgbouncer_pools_the_arrakis_database_on_postgres() {
    let ini = compose_ini();
    let databases = &ini["databases"];
    assert_eq!(
        databases.keys().collect::<Vec<_>>(),
        [DATABASE],
        "{PGBOUNCER_INI}: [databases] must pool `{DATABASE}` only"
    );
    let mut target: Vec<&str> = databases[DATABASE].split_whitespace().collect();
    target.sort_unstable();
    let dbname = format!("dbname={DATABASE}");
    assert_eq!(target, [dbname.as_str(), "host=postgres", "port=5432"]);
}

#[test]
fn passwords_agree_with_pgbouncers_md5_auth_file() {
    let compose = compose();
    let postgres = service(&compose, "postgres");
    // md5-stored passwords and md5 logins, as src/stack/postgres.rs sets them up.
    assert!(
        postgres.command.iter().any(|a| a == "password_encryption=md5"),
        "{COMPOSE}: postgres must run with -c password_encryption=md5 (PgBouncer's auth file holds md5 hashes)"
    );
    assert_eq!(
        env(postgres, "postgres", "POSTGRES_HOST_AUTH_METHOD"),
        "md5"
    );
    assert!(env(postgres, "postgres", "POSTGRES_INITDB_ARGS").contains("--auth=md5"));

    let users = userlist();
    assert_eq!(
        users.keys().collect::<Vec<_>>(),
        [APP_ROLE, CONSOLE_USER],
        "{USERLIST} must list the app role and the console user, as the embedded stack's does"
    );
    // PgBouncer logs in to PostgreSQL with the app role's hash, so it must match what
    // PostgreSQL stores for the password the init script gives the role.
    let app_password = env(postgres, "postgres", "ARRAKIS_APP_PASSWORD");
    assert_eq!(
        users[APP_ROLE],
        md5_secret(APP_ROLE, app_password),
        "{USERLIST}: {APP_ROLE}'s hash is not md5(ARRAKIS_APP_PASSWORD ‖ {APP_ROLE})"
    );
    let health = pgbouncer_healthcheck(&compose);
    for url in urls_in(&health) {
        assert_eq!(
            users.get(&url.user),
            Some(&md5_secret(&url.user, &url.password)),
            "{COMPOSE}: the pgbouncer healthcheck's password for {} does not match {USERLIST}",
            url.user
        );
    }
}

#[test]
fn init_script_creates_the_embedded_roles_and_database() {
    let compose = compose();
    let postgres = service(&compose, "postgres");
    assert_eq!(env(postgres, "postgres", "POSTGRES_USER"), SUPERUSER);
    assert!(
        postgres.volumes.iter().any(|v| v
            .starts_with(&format!("./{INIT_SCRIPT}:/docker-entrypoint-initdb.d/"))
            && v.ends_with(":ro")),
        "{COMPOSE}: postgres must mount {INIT_SCRIPT} into /docker-entrypoint-initdb.d (read-only)"
    );

    let script = read(INIT_SCRIPT);
    let sql: Vec<&str> = script
        .lines()
        .skip_while(|l| !l.ends_with("<<'SQL'"))
        .skip(1)
        .take_while(|l| *l != "SQL")
        .collect();
    // The statements of stack::postgres::bootstrap, with psql variables for the passwords.
    let expected = [
        "SET password_encryption = md5;".to_owned(),
        format!("CREATE ROLE {OWNER_ROLE} LOGIN PASSWORD :'owner_password';"),
        format!("CREATE ROLE {APP_ROLE} LOGIN PASSWORD :'app_password';"),
        format!("CREATE ROLE {ADMIN_ROLE} NOLOGIN;"),
        format!("GRANT {ADMIN_ROLE} TO {OWNER_ROLE};"),
        format!("CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE};"),
        format!("REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;"),
        format!("GRANT CONNECT ON DATABASE {DATABASE} TO {APP_ROLE};"),
    ];
    assert_eq!(sql, expected, "{INIT_SCRIPT}: the bootstrap SQL differs");
    assert!(
        script.contains(&format!("--username {OWNER_ROLE} --dbname {DATABASE}")),
        "{INIT_SCRIPT} must apply the migrations as {OWNER_ROLE} to {DATABASE}"
    );
    for var in ["ARRAKIS_OWNER_PASSWORD", "ARRAKIS_APP_PASSWORD"] {
        env(postgres, "postgres", var);
    }
}

#[test]
fn migrations_are_mounted_read_only() {
    let compose = compose();
    let postgres = service(&compose, "postgres");
    assert!(
        postgres
            .volumes
            .iter()
            .any(|v| v == "./migrations:/migrations:ro"),
        "{COMPOSE}: postgres must mount ./migrations at /migrations read-only"
    );
    assert!(read(INIT_SCRIPT).contains("/migrations/*.sql"));
}

#[test]
fn pgbouncer_healthcheck_logs_in_for_real() {
    let compose = compose();
    let health = pgbouncer_healthcheck(&compose);
    // pg_isready only checks that something answers; it never authenticates.
    assert!(
        health.contains("psql") && health.contains("-c 'SELECT 1'"),
        "{COMPOSE}: the pgbouncer healthcheck must run a query after a real login, not pg_isready: {health}"
    );
    let urls = urls_in(&health);
    assert!(
        urls.iter().any(|u| u.user == APP_ROLE
            && u.database == DATABASE
            && u.host_port == "127.0.0.1:6432"),
        "{COMPOSE}: the pgbouncer healthcheck must log in as {APP_ROLE} to {DATABASE} through PgBouncer"
    );
    assert!(
        service(&compose, "postgres").healthcheck.is_some(),
        "{COMPOSE}: postgres has no healthcheck for pgbouncer to wait on"
    );
}

#[test]
fn pgbouncer_may_open_enough_files() {
    let compose = compose();
    let needed = PgBouncerSettings::default().open_files_needed();
    let nofile = service(&compose, "pgbouncer")
        .ulimits
        .get("nofile")
        .unwrap_or_else(|| panic!("{COMPOSE}: pgbouncer needs `ulimits: nofile`"));
    assert!(
        nofile.soft >= needed && nofile.hard >= nofile.soft,
        "{COMPOSE}: pgbouncer's nofile limit must be at least {needed} (max_client_conn plus server connections)"
    );
}

#[test]
fn gateway_is_built_here_and_publishes_to_nats() {
    let compose = compose();
    let nats = service(&compose, "nats");
    assert!(nats
        .image
        .as_deref()
        .is_some_and(|i| i.starts_with("nats:2")));
    assert!(
        nats.ports.iter().any(|p| p.ends_with(":4222")),
        "{COMPOSE}: nats must publish 4222"
    );
    let gateway = service(&compose, "gateway");
    let build = gateway.build.as_ref().expect("the gateway is built");
    assert_eq!(build.context, ".");
    assert_eq!(
        build.dockerfile.as_deref().unwrap_or("Dockerfile"),
        "Dockerfile"
    );
    assert_eq!(env(gateway, "gateway", "NATS_URL"), "nats://nats:4222");
    for key in ["DISCORD_TOKEN", "GATEWAY_URL"] {
        env(gateway, "gateway", key);
    }
    let ignored = read(".dockerignore");
    for entry in ["target", "reports", ".git"] {
        assert!(
            ignored.lines().any(|l| l.trim() == entry),
            ".dockerignore must list {entry}"
        );
    }
}
