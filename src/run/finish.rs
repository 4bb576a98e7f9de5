//! The end of every run: what was measured and how the run ended ([`Ending`]) become one judged
//! summary ([`judged_summary`], the verdict decided by `gate::verdict` alone), and one function
//! writes its reports and returns the result ([`finish`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{RunError, RunResult};
use crate::gate::{self, Scope};
use crate::metrics::summary::{Ending, Interval, Metric, ScenarioInfo, Summary};
use crate::report;
use crate::scenario::Plan;

/// What a run measured, for [`judged_summary`].
pub struct Measured {
    /// Seconds of load applied.
    pub duration_s: f64,
    /// Why it stopped early, in words; `None` when it ran to plan.
    pub stop_reason: Option<String>,
    /// How it ended.
    pub ending: Ending,
    /// The whole run, or one fleet instance's share (additive thresholds left to the fleet).
    pub scope: Scope,
    /// Run totals by metric name.
    pub metrics: BTreeMap<String, Metric>,
    /// The closed intervals, oldest first.
    pub time_series: Vec<Interval>,
    /// What a reader must know.
    pub notes: Vec<String>,
}

/// The ending of a run from what stopped it, in order of precedence: an output that failed
/// (`--out-required`) or a threshold abort, then a signal.
pub fn ending_of(aborted_by: Option<&str>, interrupted: bool, output_failed: bool) -> Ending {
    if output_failed {
        Ending::OutputFailed
    } else if aborted_by.is_some() {
        Ending::Threshold
    } else if interrupted {
        Ending::Interrupted
    } else {
        Ending::RanToPlan
    }
}

/// The run's summary with every threshold evaluated and its verdict: the one place a summary is
/// built, whichever pipeline measured it.
pub fn judged_summary(
    plan: &Plan,
    target: String,
    started_at: time::OffsetDateTime,
    measured: Measured,
) -> Summary {
    let mut summary = Summary {
        scenario: ScenarioInfo {
            name: plan.name.clone(),
            description: plan.description.clone(),
            file: plan.file.clone(),
            executor: plan.executor.clone(),
        },
        target,
        started_at: started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        duration_s: measured.duration_s,
        planned_duration_s: plan.load.duration().as_secs_f64(),
        stop_reason: measured.stop_reason,
        ending: measured.ending,
        metrics: measured.metrics,
        time_series: measured.time_series,
        notes: measured.notes,
        ..Summary::empty()
    };
    // A generator that ran out of CPU measured its own queueing too.
    summary
        .notes
        .extend(crate::metrics::process::saturation_note(
            &summary.time_series,
        ));
    summary.thresholds = gate::evaluate_in(&plan.thresholds, &summary, measured.scope);
    summary.verdict = gate::verdict(&summary.thresholds, summary.ending);
    summary
}

/// `DIR/<scenario>-<UTC timestamp>`.
pub fn report_folder(dir: &Path, name: &str, started_at: time::OffsetDateTime) -> PathBuf {
    let stamp = started_at
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    dir.join(format!("{name}-{stamp}"))
}

/// Writes every report format, and the Markdown summary to `--summary-md` if asked.
pub fn write_reports(
    summary: &Summary,
    dir: &Path,
    summary_md: Option<&Path>,
) -> Result<(), RunError> {
    report::write_all(summary, dir)
        .map_err(|e| RunError::Failed(format!("writing reports: {e}")))?;
    // An empty path is an unset variable (`--summary-md "$GITHUB_STEP_SUMMARY"` outside CI).
    if let Some(path) = summary_md.filter(|p| !p.as_os_str().is_empty()) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| RunError::Failed(format!("--summary-md {}: {e}", path.display())))?;
        f.write_all(report::render_markdown(summary).as_bytes())
            .map_err(|e| RunError::Failed(format!("--summary-md {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Where a finished run's reports go.
pub struct ReportTo<'a> {
    /// The folder under which the run's own folder is made (`--report-dir`).
    pub dir: &'a Path,
    /// The report folder's name before its timestamp (the scenario's, `rls-bench`, ...).
    pub name: &'a str,
    /// `--summary-md`.
    pub summary_md: Option<&'a Path>,
}

/// The one ending of every run: writes the summary's reports into a new folder and returns the
/// result.
pub fn finish(
    summary: Summary,
    to: ReportTo<'_>,
    started_at: time::OffsetDateTime,
) -> Result<RunResult, RunError> {
    let report_dir = report_folder(to.dir, to.name, started_at);
    write_reports(&summary, &report_dir, to.summary_md)?;
    Ok(RunResult {
        summary,
        report_dir,
    })
}
