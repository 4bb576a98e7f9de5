//! Each command's glue: call the library, print what the user reads, return the exit code from
//! the one table in [`crate::exit`]. No measurement or business logic lives here.

mod admin;
mod pgbench;
mod scenario;

use admin::{health_command, migrate_command, report_command, HealthArgs};

use tokio_util::sync::CancellationToken;

use crate::cli::{bundled_scenario, Command, FleetAction, StackAction};
use crate::exit;
use crate::report::console;
use crate::run::{self, RunError};
use crate::{report, stack};

/// Runs one command and returns its exit code.
pub async fn dispatch(command: Command) -> u8 {
    match command {
        Command::Steady(args) => scenario(args.into_options(bundled_scenario("steady"))).await,
        Command::Spike(args) => scenario(args.into_options(bundled_scenario("spike"))).await,
        Command::Run {
            scenario: path,
            args,
        } => scenario(args.into_options(path)).await,
        Command::Fleet {
            action,
            scenario,
            local,
            args,
        } => fleet_command(action, scenario, local, args).await,
        Command::Capacity {
            scenario: path,
            slo_p99,
            start_rate,
            max_rate,
            step,
            max_errors,
            refine,
            args,
        } => {
            let opts = args.into_options(path.unwrap_or_else(|| bundled_scenario("steady-rate")));
            let capacity = crate::run::capacity::CapacityOptions {
                slo_p99_ms: slo_p99,
                start_rate,
                max_rate,
                step,
                max_errors,
                refine_steps: refine,
            };
            finish_run(crate::run::capacity::run(&opts, &capacity, interrupt_on_ctrl_c()).await)
        }
        Command::Gateway {
            scenario: path,
            nats,
            args,
        } => {
            let opts = args.into_options(path.unwrap_or_else(|| bundled_scenario("gateway")));
            let gateway = crate::gateway_load::GatewayOptions { nats_url: nats };
            finish_run(
                crate::gateway_load::run_gateway(&opts, &gateway, interrupt_on_ctrl_c()).await,
            )
        }
        Command::Stack { action } => stack_command(action).await,
        Command::Migrate { target, dir } => migrate_command(target, dir).await,
        Command::Health {
            target,
            admin,
            json,
            timeout,
            max_waiting,
            max_wait,
            rls,
        } => {
            let opts = HealthArgs {
                target,
                admin,
                timeout,
                max_waiting,
                max_wait,
            };
            health_command(opts, json, rls).await
        }
        Command::Report {
            summary,
            out,
            summary_md,
        } => report_command(&summary, out, summary_md.as_deref()),
        Command::Merge {
            instances,
            out,
            summary_md,
        } => merge(&instances, &out, summary_md.as_deref()),
        Command::Compare {
            baseline,
            current,
            max_regression,
            markdown,
        } => report::compare::run_cli(&baseline, &current, max_regression, markdown.as_deref()),
        Command::RlsCheck(args) => rls_check(args).await,
        Command::RlsBench(args) => rls_bench(args).await,
        Command::Pgbench(args) => pgbench::command(*args, interrupt_on_ctrl_c()).await,
    }
}

/// `thumper fleet`: `--local N FILE`, or the `manifest` and `coordinate` subcommands.
async fn fleet_command(
    action: Option<FleetAction>,
    scenario: Option<std::path::PathBuf>,
    local: Option<u32>,
    args: crate::cli::RunArgs,
) -> u8 {
    match (action, scenario, local) {
        (Some(FleetAction::Manifest(args)), _, _) => fleet_manifest(*args),
        (Some(FleetAction::Coordinate(c)), _, _) => {
            let workers = c.workers;
            let opts = c.args.into_options(c.scenario);
            let link = crate::fleet::FleetLink::of(&opts, &c.nats);
            finish_run(
                crate::fleet::coordinator::run(&opts, workers, link, crate::signals::watch()).await,
            )
        }
        (None, Some(path), Some(local)) => {
            let opts = args.into_options(path);
            let nats = opts.fleet_nats.clone();
            finish_run(crate::fleet::local::run(&opts, local, nats, crate::signals::watch()).await)
        }
        _ => {
            // clap requires both without a subcommand; kept for the match to be total.
            eprintln!(
                "thumper fleet: expected --local N FILE or a subcommand (manifest, coordinate)"
            );
            exit::BAD_INPUT
        }
    }
}

/// `thumper fleet manifest`: the manifests on stdout, or exit 2 with what is wrong.
fn fleet_manifest(args: crate::cli::ManifestArgs) -> u8 {
    let rendered = args
        .into_options()
        .and_then(|opts| crate::fleet::manifest::render(&opts));
    match rendered {
        Ok(text) => {
            print!("{text}");
            exit::PASS
        }
        Err(e) => {
            eprintln!("thumper fleet manifest: {e}");
            exit::BAD_INPUT
        }
    }
}

/// `thumper rls-bench`: every input checked before the stack starts; exit codes as a run's.
async fn rls_bench(args: crate::cli::RlsBenchArgs) -> u8 {
    let opts = match args.into_options() {
        Ok(o) => o,
        Err(m) => {
            eprintln!("thumper rls-bench: {m}");
            return exit::BAD_INPUT;
        }
    };
    let result = crate::rls::bench::run(&opts, interrupt_on_ctrl_c()).await;
    if let Ok(r) = &result {
        print!("{}", crate::rls::bench::table(&r.summary));
    }
    finish_run(result)
}

/// `thumper rls-check`: 0 clean, 99 a finding, 2 bad input, 1 the check could not run.
async fn rls_check(args: crate::cli::RlsCheckArgs) -> u8 {
    use crate::rls::check;
    let opts = check::CommandOptions {
        scenario: args.scenario.unwrap_or_else(|| bundled_scenario("steady")),
        target: args.target,
        tenant_column: args.tenant_column,
    };
    match check::command(&opts).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", check::render(&report));
            }
            if report.clean() {
                exit::PASS
            } else {
                exit::THRESHOLD
            }
        }
        Err(e) => finish_run(Err(e)),
    }
}

async fn scenario(opts: run::RunOptions) -> u8 {
    finish_run(scenario::run(&opts, interrupt_on_ctrl_c()).await)
}

/// A token cancelled by the first Ctrl-C or SIGTERM; a second one stops the servers and quits.
fn interrupt_on_ctrl_c() -> CancellationToken {
    crate::signals::watch()
}

/// Prints a run's end summary and maps its outcome to an exit code.
/// The exit code of a step that writes no report (`pgbench -i`).
fn finish_init(result: Result<(), RunError>) -> u8 {
    match result {
        Ok(()) => exit::PASS,
        Err(e) => finish_run(Err(e)),
    }
}

fn finish_run(result: Result<run::RunResult, RunError>) -> u8 {
    match result {
        Ok(result) => {
            print!("{}", console::render(&result.summary, &result.report_dir));
            exit::of_verdict(result.summary.verdict)
        }
        Err(RunError::BadInput(m)) => {
            eprintln!("thumper: {m}");
            exit::BAD_INPUT
        }
        Err(RunError::Failed(m)) => {
            eprintln!("thumper: {m}");
            exit::FAILED
        }
        Err(RunError::Interrupted(m)) => {
            eprintln!("thumper: {m}");
            crate::signals::exit_code()
        }
    }
}

async fn stack_command(action: StackAction) -> u8 {
    match action {
        StackAction::Up { scenario } => {
            let options = match scenario {
                None => stack::StackOptions {
                    migrations_dir: run::default_migrations_dir(),
                    ..Default::default()
                },
                Some(path) => {
                    let plan = match crate::scenario::load(&path) {
                        Ok(p) => p,
                        Err(e) => {
                            eprintln!("thumper stack up: {e}");
                            return exit::BAD_INPUT;
                        }
                    };
                    match run::stack_options(&plan) {
                        Ok(o) => o,
                        Err(e) => {
                            eprintln!("thumper stack up: {e}");
                            return exit::BAD_INPUT;
                        }
                    }
                }
            };
            match stack::up(&options).await {
                Ok(urls) => {
                    print!("{}", stack::shell_lines(&urls));
                    exit::PASS
                }
                Err(e) => {
                    eprintln!("thumper stack up: {e}");
                    exit::FAILED
                }
            }
        }
        StackAction::Status => match stack::running() {
            Some(urls) => {
                print!("{}", stack::shell_lines(&urls));
                exit::PASS
            }
            None => {
                eprintln!(
                    "thumper stack status: no stack is up (start one with `thumper stack up`)"
                );
                exit::FAILED
            }
        },
        StackAction::Down => match stack::down().await {
            Ok(true) => {
                eprintln!("thumper stack down: stopped");
                exit::PASS
            }
            Ok(false) => {
                eprintln!("thumper stack down: no stack was up");
                exit::PASS
            }
            Err(e) => {
                eprintln!("thumper stack down: {e}");
                exit::FAILED
            }
        },
    }
}

/// `thumper merge`: the fleet's summary from its instances' reports, with the exit code of its
/// verdict.
fn merge(
    instances: &[std::path::PathBuf],
    out: &std::path::Path,
    summary_md: Option<&std::path::Path>,
) -> u8 {
    let mut summaries = Vec::with_capacity(instances.len());
    for path in instances {
        let file = if path.is_dir() {
            path.join("summary.json")
        } else {
            path.clone()
        };
        match report::read_summary(&file) {
            Ok(s) => summaries.push(s),
            Err(e) => {
                eprintln!("thumper merge: {e}");
                return exit::BAD_INPUT;
            }
        }
    }
    let merged = match crate::fleet::merge::merge(&summaries) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("thumper merge: {e}");
            return exit::BAD_INPUT;
        }
    };
    if let Err(e) = run::write_reports(&merged, out, summary_md) {
        eprintln!("thumper merge: {e}");
        return exit::FAILED;
    }
    print!("{}", console::render(&merged, out));
    exit::of_verdict(merged.verdict)
}
