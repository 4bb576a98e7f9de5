//! `thumper run`, `steady` and `spike`: one scenario against the database, composed of the
//! spine's steps (plan, target, set-up, preflight, measure, finish). A run given
//! `--fleet-nats` is a fleet worker instead ([`crate::fleet::worker::run`]).

use tokio_util::sync::CancellationToken;

use crate::run::database::{measure, Measure};
use crate::run::target::{preflight, prepare_target, with_target, Target};
use crate::run::{self, RunError, RunOptions, RunResult};
use crate::scenario::Plan;

/// Runs a scenario end to end. `interrupt` is cancelled on Ctrl-C or SIGTERM.
pub async fn run(opts: &RunOptions, interrupt: CancellationToken) -> Result<RunResult, RunError> {
    if let Some(nats) = &opts.fleet_nats {
        return crate::fleet::worker::run(opts, nats, interrupt).await;
    }
    let plan = run::load_plan(opts)?;
    run::check_judgeable(&plan, opts)?;
    with_target(&plan, opts, async |target| {
        prepare_target(&plan, opts, target, &interrupt).await?;
        let notes = notes_before_load(&plan, target).await?;
        run::scenarios::with_setup(&plan, target, async || {
            let (summary, started_at) =
                measure(&plan, target, Measure::of(opts, notes), interrupt).await?;
            run::finish(summary, opts.report_to(&plan.name), started_at)
        })
        .await
    })
    .await
}

/// The preflight's notes, and on a target thumper set up, the RLS lint of the policies the
/// scenario's tenant-scoped queries meet.
async fn notes_before_load(plan: &Plan, target: &Target) -> Result<Vec<String>, RunError> {
    let mut notes = preflight(&target.url, plan).await?;
    if target.admin_url.is_some() && plan.queries.iter().any(|q| q.tenant_scoped) {
        notes.extend(crate::rls::check::run_notes(&target.url, &plan.queries, plan.dataset).await);
    }
    Ok(notes)
}
