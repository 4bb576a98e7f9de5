//! The gateway pipeline: the fake Discord server drives the real gateway binary, whose
//! envelopes thumper receives from NATS; the same plan, aggregator watchers (progress line, live
//! `abort_on_fail`, `--out`), summary builder and reports as a database run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::aggregator::Watcher;
use crate::report::console;
use crate::run::{self, load_plan, RunError, RunOptions, RunResult};
use crate::scenario;

/// Options of `thumper gateway` beyond a run's.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// An existing NATS server; without it thumper starts `nats-server`.
    pub nats_url: Option<String>,
}

/// Runs a gateway scenario: the fake Discord server drives the real gateway binary, whose
/// envelopes thumper receives from NATS.
pub async fn run_gateway(
    opts: &RunOptions,
    gateway: &GatewayOptions,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    use crate::gateway_load::{self, GatewayRunConfig, GatewayWorkload};
    let original = scenario::load(&opts.scenario)?.load.duration();
    let plan = load_plan(opts)?;
    if !plan.scenarios.is_empty()
        || !plan.feeders.is_empty()
        || plan.setup.is_some()
        || plan.teardown.is_some()
    {
        return Err(RunError::BadInput(format!(
            "{}: a gateway scenario drives events, not SQL: [scenarios.*], [[feeders]], [setup] and [teardown] apply to database scenarios only",
            plan.file
        )));
    }
    let factor = plan.load.duration().as_secs_f64() / original.as_secs_f64();
    let table = plan.gateway.clone().ok_or_else(|| {
        RunError::BadInput(format!(
            "{}: not a gateway scenario (it has no [gateway] table); see scenarios/gateway.toml",
            plan.file
        ))
    })?;
    let mut workload: GatewayWorkload = table
        .try_into()
        .map_err(|e| RunError::BadInput(format!("{}: [gateway]: {e}", plan.file)))?;
    workload
        .validate()
        .map_err(|e| RunError::BadInput(format!("{}: [gateway]: {e}", plan.file)))?;
    // Faults happen at points of the timeline: scale them with it.
    for f in &mut workload.faults {
        f.at = Duration::from_secs_f64(f.at.as_secs_f64() * factor);
    }
    let scenario::LoadShape::Open { stages, .. } = &plan.load else {
        return Err(RunError::BadInput(format!(
            "{}: a gateway scenario drives events at a rate: use executor = \"ramping-arrival-rate\" or \"constant-arrival-rate\" (targets are events per second)",
            plan.file
        )));
    };
    let rate_stages = stages.iter().map(|s| (s.duration, s.target)).collect();
    let gateway_bin = gateway_binary().await?;
    let started_at = time::OffsetDateTime::now_utc();
    let (outputs, watchers) = watchers(&plan, opts, started_at);
    let outcome = gateway_load::run(GatewayRunConfig {
        workload,
        rate_stages,
        nats_url: gateway.nats_url.clone(),
        forwarder: gateway_load::Forwarder::Gateway(gateway_bin),
        cancel: interrupt.clone(),
        // The gateway's own JSON log is for debugging the harness: THUMPER_GATEWAY_LOG=1.
        quiet: opts.quiet || std::env::var_os("THUMPER_GATEWAY_LOG").is_none(),
        watchers,
    })
    .await;
    // The watchers are gone with the aggregator: the outputs deliver their last batch.
    let delivered = outputs.finish().await;
    let mut outcome = outcome.map_err(|e| RunError::Failed(format!("gateway run: {e:#}")))?;
    outcome.notes.extend(delivered.notes);
    // `--out-required`: an output that could not deliver fails the run like a threshold.
    outcome.notes.extend(delivered.failure.clone());
    let interrupted = interrupt.is_cancelled();
    let target = gateway
        .nats_url
        .clone()
        .unwrap_or_else(|| "gateway → embedded nats-server".to_owned());
    let summary = run::judged_summary(
        &plan,
        target,
        started_at,
        run::Measured {
            duration_s: outcome.duration_s,
            stop_reason: outcome
                .stop_reason
                .or_else(|| interrupted.then(crate::signals::stop_reason)),
            ending: run::finish::ending_of(
                outcome.aborted_by.as_deref(),
                interrupted,
                delivered.failure.is_some(),
            ),
            scope: crate::gate::Scope::Whole,
            metrics: outcome.metrics,
            time_series: outcome.time_series,
            notes: outcome.notes,
        },
    );
    run::finish(summary, opts.report_to(&plan.name), started_at)
}

/// What follows a gateway run as it goes, as any run: the progress line (the gateway's
/// columns), the live `abort_on_fail` check and the `--out` outputs (started here).
fn watchers(
    plan: &scenario::Plan,
    opts: &RunOptions,
    started_at: time::OffsetDateTime,
) -> (crate::output::Outputs, Vec<Box<dyn Watcher>>) {
    let mut watchers = run::database::watchers(
        plan,
        opts.quiet,
        crate::gate::Scope::Whole,
        console::ProgressColumns::GATEWAY,
    );
    let (outputs, output_watchers) = run::database::start_outputs(plan, &opts.outputs, started_at);
    watchers.extend(output_watchers);
    (outputs, watchers)
}

/// The gateway binary next to thumper's own. Under `cargo run` it may not be built yet (cargo
/// builds only the binary it runs): then it is built with the same cargo and profile.
async fn gateway_binary() -> Result<PathBuf, RunError> {
    let me = std::env::current_exe()
        .map_err(|e| RunError::Failed(format!("cannot locate the thumper binary: {e}")))?;
    let dir = me.parent().unwrap_or(Path::new("."));
    let bin = dir.join("gateway");
    if bin.is_file() {
        return Ok(bin);
    }
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Err(RunError::Failed(format!(
            "the gateway binary is not at {}; build it with `cargo build --release --bin gateway`",
            bin.display()
        )));
    };
    let release = dir.file_name().is_some_and(|n| n == "release");
    eprintln!("thumper: building the gateway binary (first run only) ...");
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.args(["build", "--bin", "gateway"])
        .current_dir(manifest);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| RunError::Failed(format!("cannot run cargo to build the gateway: {e}")))?;
    if !status.success() || !bin.is_file() {
        return Err(RunError::Failed(format!(
            "building the gateway binary failed ({status}); try `cargo build --release --bin gateway`"
        )));
    }
    Ok(bin)
}
