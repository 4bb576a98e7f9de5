//! Where the load goes: an existing target (`--target`), a stack that `thumper stack up` left
//! running, or an embedded stack started for this run; then migrations, seeding and a preflight
//! login, each before any load.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{RunError, RunOptions};
use crate::dataset;
use crate::db::ConnectError;
use crate::scenario::Plan;
use crate::stack::{self, Stack, StackOptions};

/// Where the load goes, and the stack to stop afterwards if this run started one.
pub struct Target {
    /// The application role's URL: where the load goes.
    pub url: String,
    /// The owner role's URL, for migrations and seeding; `None` when thumper may not set up.
    pub admin_url: Option<String>,
    /// PgBouncer's admin console, polled for its gauges; `None` when unknown.
    pub pgbouncer_admin_url: Option<String>,
    /// The embedded stack this run started (taken by [`with_target`], which stops it).
    owned_stack: Option<Stack>,
    /// Whether this run started the stack.
    owned: bool,
}

impl Target {
    /// Whether this run started the stack (it stops, and its data goes, when the run ends).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// A target used as it is: no migrations, no seeding, no PgBouncer console.
    pub fn existing(url: String) -> Target {
        Target {
            url,
            admin_url: None,
            pgbouncer_admin_url: None,
            owned_stack: None,
            owned: false,
        }
    }
}

async fn resolve_target(plan: &Plan, opts: &RunOptions) -> Result<Target, RunError> {
    if let Some(url) = &opts.target {
        return Ok(Target {
            url: url.clone(),
            admin_url: opts.admin_url.clone(),
            pgbouncer_admin_url: opts.pgbouncer_admin_url.clone(),
            owned_stack: None,
            owned: false,
        });
    }
    if let Some(urls) = stack::running() {
        eprintln!("thumper: using the stack that is up (`thumper stack down` stops it)");
        return Ok(Target {
            url: urls.database_url,
            admin_url: Some(urls.admin_database_url),
            pgbouncer_admin_url: Some(urls.pgbouncer_admin_url),
            owned_stack: None,
            owned: false,
        });
    }
    let options = stack_options(plan)?;
    eprintln!("thumper: starting PostgreSQL + PgBouncer ...");
    let s = Stack::start(&options)
        .await
        .map_err(|e| RunError::Failed(format!("the embedded stack did not start: {e}")))?;
    Ok(Target {
        url: s.urls().database_url.clone(),
        admin_url: Some(s.urls().admin_database_url.clone()),
        pgbouncer_admin_url: Some(s.urls().pgbouncer_admin_url.clone()),
        owned_stack: Some(s),
        owned: true,
    })
}

/// Resolves the target, runs `f` on it and stops a stack this run started afterwards, on every
/// path `f` can return by (a result, an error, an interrupt): the one owned-stack bracket.
pub async fn with_target<T>(
    plan: &Plan,
    opts: &RunOptions,
    f: impl AsyncFnOnce(&Target) -> Result<T, RunError>,
) -> Result<T, RunError> {
    let mut target = resolve_target(plan, opts).await?;
    let owned = target.owned_stack.take();
    let result = f(&target).await;
    if let Some(stack) = owned {
        if let Err(e) = stack.stop().await {
            eprintln!("thumper: stopping the embedded stack: {e}");
        }
    }
    result
}

/// Stack options from the scenario's `[stack]` table.
pub fn stack_options(plan: &Plan) -> Result<StackOptions, RunError> {
    let mut options = StackOptions {
        migrations_dir: default_migrations_dir(),
        ..StackOptions::default()
    };
    if let Some(table) = &plan.stack {
        for (key, value) in table {
            match key.as_str() {
                "pgbouncer" => {
                    options.pgbouncer = value.clone().try_into().map_err(|e| {
                        RunError::BadInput(format!("{}: [stack.pgbouncer]: {e}", plan.file))
                    })?
                }
                "postgres" => {
                    options.postgres = value.clone().try_into().map_err(|e| {
                        RunError::BadInput(format!("{}: [stack.postgres]: {e}", plan.file))
                    })?
                }
                other => {
                    return Err(RunError::BadInput(format!(
                        "{}: [stack]: unknown key `{other}`; expected [stack.pgbouncer] or [stack.postgres]",
                        plan.file
                    )))
                }
            }
        }
    }
    Ok(options)
}

/// `migrations/` next to the scenarios: the working directory's, else the source tree's.
pub fn default_migrations_dir() -> PathBuf {
    let here = PathBuf::from("migrations");
    if here.is_dir() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
    }
}

/// Checks the target answers as the application role before load starts, so a wrong URL is
/// one clear error rather than thousands of counted ones.
pub async fn preflight(url: &str, plan: &Plan) -> Result<Vec<String>, RunError> {
    let client = crate::db::connect(url, Duration::from_secs(10))
        .await
        .map_err(|e| match e {
            ConnectError::BadUrl { .. } => RunError::BadInput(format!("target URL {e}")),
            ConnectError::Timeout { url, after } => {
                RunError::Failed(format!("target {url} did not answer within {after:?}"))
            }
            ConnectError::Login { url, reason } => {
                RunError::Failed(format!("cannot log in to target {url}: {reason}"))
            }
        })?;
    let mut notes = crate::workload::check_tenant_columns(&client, &plan.queries)
        .await
        .map_err(|e| RunError::BadInput(format!("{}: {e}", plan.file)))?;
    if plan.queries.is_empty() {
        // Scripts alone: the Arrakis dataset is not what they read.
        return Ok(notes);
    }
    let first = plan.dataset.community_id(0).to_string();
    match client
        .simple_query(&format!(
            "SELECT 1 FROM communities WHERE id = '{first}'::uuid"
        ))
        .await
    {
        Ok(rows) => {
            if !rows
                .iter()
                .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            {
                notes.push(format!(
                    "the target has no community {first}: it was not seeded with this scenario's dataset (seed {}), so lookups find nothing",
                    plan.dataset.seed
                ));
            }
        }
        Err(e) => notes.push(format!(
            "could not check the dataset on the target: {}",
            crate::db::describe(&e)
        )),
    }
    Ok(notes)
}

/// Applies the migrations (to a `--target` given with `--admin-url`) and seeds the dataset. An
/// interrupt stops it there: a large seed can take minutes, and nothing has been measured yet.
pub async fn prepare_target(
    plan: &Plan,
    opts: &RunOptions,
    target: &Target,
    interrupt: &CancellationToken,
) -> Result<(), RunError> {
    tokio::select! {
        prepared = migrate_and_seed(plan, opts, target) => prepared,
        _ = interrupt.cancelled() => Err(RunError::Interrupted(
            "interrupted while preparing the target, before any load: nothing was measured".into(),
        )),
    }
}

async fn migrate_and_seed(plan: &Plan, opts: &RunOptions, target: &Target) -> Result<(), RunError> {
    if let Some(admin) = &target.admin_url {
        if opts.target.is_some() {
            crate::migrate::apply(admin, &default_migrations_dir())
                .await
                .map_err(|e| RunError::Failed(format!("applying migrations: {e}")))?;
        }
        let started = Instant::now();
        dataset::seed::seed(admin, &plan.dataset)
            .await
            .map_err(|e| RunError::Failed(format!("seeding the dataset: {e}")))?;
        tracing::info!(elapsed = ?started.elapsed(), "dataset ready");
        if !plan.scripts.is_empty() {
            pgbench_tables(admin, &target.url, plan.script_vars.scale).await?;
        }
    }
    Ok(())
}

/// The pgbench tables a scenario's scripts read, made at the scenario's `[pgbench] scale`
/// when they are missing (pgbench's `-i`), usable by the application role.
pub async fn pgbench_tables(admin: &str, app_url: &str, scale: i64) -> Result<(), RunError> {
    let client = connect_owner(admin).await?;
    if crate::workload::pgbench::init::scale_of(&client)
        .await
        .is_some()
    {
        return Ok(());
    }
    eprintln!("thumper: no pgbench tables on this target: initializing at scale {scale}");
    make_pgbench_tables(&client, Some(app_url), scale).await
}

/// pgbench's `-i` through `client`; `app_url`'s role (the application's, when `client` is
/// the owner) is granted the use of the tables.
pub async fn make_pgbench_tables(
    client: &tokio_postgres::Client,
    app_url: Option<&str>,
    scale: i64,
) -> Result<(), RunError> {
    let role = app_url
        .and_then(|u| u.parse::<tokio_postgres::Config>().ok())
        .and_then(|c| c.get_user().map(str::to_owned));
    crate::workload::pgbench::init::initialize(client, scale, role.as_deref())
        .await
        .map(drop)
        .map_err(|e| RunError::Failed(format!("initializing: {}", crate::db::describe(&e))))
}

/// A connection for set-up steps, its failure the run's.
pub async fn connect_owner(url: &str) -> Result<tokio_postgres::Client, RunError> {
    crate::db::connect(url, Duration::from_secs(10))
        .await
        .map_err(|e| RunError::Failed(e.to_string()))
}
