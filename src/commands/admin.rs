//! The commands around runs: `migrate`, `health` and `report`.

use std::path::{Path, PathBuf};

use crate::cli::bundled_scenario;
use crate::exit;
use crate::run;
use crate::{health, migrate, report, stack};

/// `thumper migrate`: applies the migrations and lists each.
pub(super) async fn migrate_command(target: Option<String>, dir: Option<PathBuf>) -> u8 {
    let Some(url) = target.or_else(|| stack::running().map(|u| u.admin_database_url)) else {
        eprintln!("thumper migrate: no database: pass --target URL (owner role) or set ADMIN_DATABASE_URL, or start one with `thumper stack up`");
        return exit::BAD_INPUT;
    };
    let dir = dir.unwrap_or_else(run::default_migrations_dir);
    match migrate::apply(&url, &dir).await {
        Ok(outcomes) => {
            for o in outcomes {
                match o.status {
                    migrate::MigrationStatus::Applied(d) => {
                        println!(
                            "applied  {} ({}, {:.0} ms)",
                            o.name,
                            o.checksum,
                            d.as_secs_f64() * 1e3
                        )
                    }
                    migrate::MigrationStatus::AlreadyApplied => {
                        println!("present  {} ({})", o.name, o.checksum)
                    }
                }
            }
            exit::PASS
        }
        Err(e) => {
            eprintln!("thumper migrate: {e}");
            exit::FAILED
        }
    }
}

/// `thumper health`'s options.
pub(super) struct HealthArgs {
    /// The application role's URL.
    pub target: Option<String>,
    /// PgBouncer's console URL.
    pub admin: Option<String>,
    /// Seconds each check may take.
    pub timeout: f64,
    /// Most clients that may wait for a server connection.
    pub max_waiting: f64,
    /// Longest wait allowed, in seconds.
    pub max_wait: f64,
}

/// `thumper health`: 0 healthy, 1 a check failed, 2 bad input.
pub(super) async fn health_command(args: HealthArgs, json: bool, rls: bool) -> u8 {
    let running = stack::running();
    let Some(target) = args
        .target
        .or_else(|| running.as_ref().map(|u| u.database_url.clone()))
    else {
        eprintln!("thumper health: no target: pass --target URL or set DATABASE_URL, or start one with `thumper stack up`");
        return exit::BAD_INPUT;
    };
    let admin = args
        .admin
        .or_else(|| running.map(|u| u.pgbouncer_admin_url));
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        eprintln!("thumper health: --timeout must be a positive number of seconds");
        return exit::BAD_INPUT;
    }
    let mut report = health::check(&health::HealthOptions {
        target: target.clone(),
        admin,
        timeout: std::time::Duration::from_secs_f64(args.timeout),
        max_waiting: args.max_waiting,
        max_wait_s: args.max_wait,
    })
    .await;
    if rls {
        let scenario = bundled_scenario("steady");
        let (queries, dataset) = match crate::scenario::load(&scenario) {
            Ok(p) => (p.queries, p.dataset),
            Err(e) => {
                eprintln!("thumper health --rls: {e}");
                return exit::BAD_INPUT;
            }
        };
        let timeout = std::time::Duration::from_secs_f64(args.timeout);
        let check = crate::rls::check::health_check(&target, &queries, dataset, timeout).await;
        report.healthy &= check.ok;
        report.checks.push(check);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", health::render(&report));
    }
    if report.healthy {
        exit::PASS
    } else {
        exit::FAILED
    }
}

/// `thumper report`: the reports again from a `summary.json`.
pub(super) fn report_command(
    summary: &Path,
    out: Option<PathBuf>,
    summary_md: Option<&Path>,
) -> u8 {
    let s = match report::read_summary(summary) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("thumper report: {e}");
            return exit::BAD_INPUT;
        }
    };
    let dir = out.unwrap_or_else(|| {
        summary
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    });
    match run::write_reports(&s, &dir, summary_md) {
        Ok(()) => {
            println!("reports written to {}", dir.display());
            exit::PASS
        }
        Err(e) => {
            eprintln!("thumper report: {e}");
            exit::FAILED
        }
    }
}
