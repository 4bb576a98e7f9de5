//! `junit.xml`: the gate in a CI system's test view. One suite per run, one test case per
//! threshold; a failed threshold is a `<failure>` whose message gives the expression and the
//! observed value. A run that stopped early adds a test case with an `<error>` saying why, so an
//! interrupted run never shows as green. A fleet adds a failed test case per lost instance.

use std::fmt::Write;

use super::model::number;
use super::{Escaped, ReportError, ReportFormat};
use crate::metrics::summary::{InstanceState, InstanceStats, Summary, ThresholdResult, Verdict};

pub(crate) struct Junit;

impl ReportFormat for Junit {
    fn file_name(&self) -> &'static str {
        "junit.xml"
    }

    fn render(&self, summary: &Summary) -> Result<Vec<u8>, ReportError> {
        Ok(render(summary).into_bytes())
    }
}

fn observed(t: &ThresholdResult) -> String {
    t.observed.map_or_else(|| "no samples".to_owned(), number)
}

/// One threshold's test case: passed, failed with its observed value, or skipped (not judged
/// on one instance's share).
fn threshold_case(x: &mut String, suite: &str, t: &ThresholdResult) {
    let name = format!("{}: {}", t.metric, t.expression);
    let _ = write!(
        x,
        r#"    <testcase classname="{}" name="{}" time="0">"#,
        Escaped(suite),
        Escaped(&name)
    );
    if let Some(why) = &t.not_judged {
        let _ = writeln!(x);
        let _ = writeln!(x, r#"      <skipped message="{}"/>"#, Escaped(why));
        let _ = writeln!(x, "    </testcase>");
        return;
    }
    if t.ok {
        let _ = writeln!(x, "</testcase>");
        return;
    }
    let message = format!(
        "{} {} failed: observed {}{}",
        t.metric,
        t.expression,
        observed(t),
        if t.abort_on_fail {
            " [abort_on_fail]"
        } else {
            ""
        }
    );
    let _ = writeln!(x);
    let _ = writeln!(
        x,
        r#"      <failure type="threshold" message="{m}">{m}</failure>"#,
        m = Escaped(&message)
    );
    let _ = writeln!(x, "    </testcase>");
}

fn render(s: &Summary) -> String {
    let suite = format!("thumper.{}", s.scenario.name);
    let interrupted = s.verdict == Verdict::Interrupted || s.stop_reason.is_some();
    let failures = s.thresholds.iter().filter(|t| !t.ok).count();
    let lost: Vec<&InstanceStats> = s
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Lost)
        .collect();
    let failures = failures + lost.len();
    let errors = usize::from(interrupted);
    let tests = s.thresholds.len() + lost.len() + errors;
    let time = format!("{:.3}", s.duration_s);
    let skipped = s
        .thresholds
        .iter()
        .filter(|t| t.not_judged.is_some())
        .count();

    let mut x = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="thumper" tests="{tests}" failures="{failures}" errors="{errors}" time="{time}">"#
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="{}" tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{time}" timestamp="{}">"#,
        Escaped(&suite),
        Escaped(&s.started_at)
    );
    let _ = writeln!(x, "    <properties>");
    for (name, value) in [
        ("scenario", s.scenario.name.as_str()),
        ("executor", s.scenario.executor.as_str()),
        ("target", s.target.as_str()),
        ("thumper_version", s.thumper_version.as_str()),
        ("verdict", s.verdict.as_str()),
    ] {
        let _ = writeln!(
            x,
            r#"      <property name="{name}" value="{}"/>"#,
            Escaped(value)
        );
    }
    let _ = writeln!(x, "    </properties>");
    for t in &s.thresholds {
        threshold_case(&mut x, &suite, t);
    }
    // A lost generator's share of the load was never offered: the fleet's numbers are short.
    for i in &lost {
        let _ = writeln!(
            x,
            r#"    <testcase classname="{}" name="{}" time="0">"#,
            Escaped(&suite),
            Escaped(&format!("fleet instance {} reported", i.segment))
        );
        let message = format!(
            "instance {}{} was lost: only what it streamed before is counted",
            i.segment,
            if i.host.is_empty() {
                String::new()
            } else {
                format!(" on {}", i.host)
            }
        );
        let _ = writeln!(
            x,
            r#"      <failure type="lost" message="{m}">{m}</failure>"#,
            m = Escaped(&message)
        );
        let _ = writeln!(x, "    </testcase>");
    }
    if interrupted {
        let reason = s
            .stop_reason
            .as_deref()
            .unwrap_or("the run was interrupted");
        let _ = writeln!(
            x,
            r#"    <testcase classname="{}" name="run completed as planned" time="{time}">"#,
            Escaped(&suite)
        );
        let message = format!(
            "stopped after {:.1} s of {:.1} s planned: {reason}",
            s.duration_s, s.planned_duration_s
        );
        let _ = writeln!(
            x,
            r#"      <error type="interrupted" message="{m}">{m}</error>"#,
            m = Escaped(&message)
        );
        let _ = writeln!(x, "    </testcase>");
    }
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_instance_is_a_failed_test_case() {
        let x = render(&crate::report::model::fixtures::fleet());
        assert_eq!(x.matches("<testcase ").count(), 1, "{x}");
        assert!(x.contains(r#"name="fleet instance 2/3 reported""#));
        assert!(x.contains(r#"<failure type="lost""#));
        assert!(x.contains(r#"tests="1" failures="1""#), "{x}");
    }
}
