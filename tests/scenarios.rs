//! End-to-end runs of the thumper binary against a real PostgreSQL + PgBouncer: the shipped
//! scenarios (time-scaled), threshold failures, bad input, a dying PgBouncer, Ctrl-C and
//! threshold aborts. Every run must leave its reports behind.

mod common;

use std::time::{Duration, Instant};

use common::cli::{count, output, run_against, scenario_file, spawn, summary, text, thumper};
use thumper::metrics::summary::{Metric, Summary, Verdict};

/// Load tests share two cores: run them one at a time so each gets the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// VUs at the end of the interval closest to `t` seconds.
fn vus_at(s: &Summary, t: f64) -> u64 {
    s.time_series
        .iter()
        .min_by(|a, b| (a.t_s - t).abs().total_cmp(&(b.t_s - t).abs()))
        .map_or(0, |i| i.vus)
}

fn gauge_max(s: &Summary, name: &str) -> f64 {
    match s.metrics.get(name) {
        Some(Metric::Gauge(g)) => g.max,
        _ => panic!("no gauge {name} in the summary"),
    }
}

fn assert_every_query_ran(s: &Summary) {
    for q in ["health", "tenant", "lookup"] {
        let t = s
            .trend(&format!("query_duration{{query:{q}}}"))
            .unwrap_or_else(|| panic!("no trend for {q}"));
        assert!(t.count > 0, "query {q} never completed");
        assert!(t.p50_us > 0 && t.p99_us >= t.p50_us);
    }
    assert_eq!(
        count(s, "tenant_violations"),
        0,
        "RLS let rows of another tenant through"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn steady_and_spike_follow_their_stages_on_a_real_stack() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();

    // steady: 0 → 100 VUs over 3 min, hold 1 min, down in 30 s; at 1/20 the time.
    let reports = tmp.path().join("steady");
    let o = output(run_against(
        &stack,
        std::path::Path::new("scenarios/steady.toml"),
        &reports,
        &["--time-scale", "0.05"],
    ));
    assert!(matches!(o.status.code(), Some(0 | 99)), "{}", text(&o));
    let (dir, s) = summary(&reports);
    for f in [
        "summary.json",
        "report.html",
        "junit.xml",
        "summary.md",
        "latency.hlog",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert_every_query_ran(&s);
    assert_eq!(s.scenario.name, "steady");
    assert!((s.planned_duration_s - 13.5).abs() < 0.01);
    // The VU curve follows the stages: half way up the ramp, at the top, and ramping down.
    let mid_ramp = vus_at(&s, 4.5);
    assert!((35..=65).contains(&mid_ramp), "VUs at 4.5 s: {mid_ramp}");
    let peak = gauge_max(&s, "vus");
    assert!((95.0..=100.0).contains(&peak), "peak VUs {peak}");
    assert!(
        vus_at(&s, 10.5) >= 95,
        "VUs at 10.5 s: {}",
        vus_at(&s, 10.5)
    );
    assert!(s.thresholds.len() == 5 && s.thresholds.iter().all(|t| t.observed.is_some()));
    // PgBouncer's console was polled into the series.
    assert!(gauge_max(&s, "pgbouncer_cl_active") >= 50.0);

    // spike: 50 VUs, burst to 200, hold, back to 50.
    let reports = tmp.path().join("spike");
    let o = output(run_against(
        &stack,
        std::path::Path::new("scenarios/spike.toml"),
        &reports,
        &["--time-scale", "0.05"],
    ));
    assert!(matches!(o.status.code(), Some(0 | 99)), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert_every_query_ran(&s);
    let before = vus_at(&s, 2.0);
    assert!(
        (45..=55).contains(&before),
        "VUs before the spike: {before}"
    );
    let peak = gauge_max(&s, "vus");
    assert!((190.0..=200.0).contains(&peak), "peak VUs {peak}");
    let after = vus_at(&s, 8.0);
    assert!((45..=60).contains(&after), "VUs after the spike: {after}");
    stack.stop().await.unwrap();
}

const SMALL: &str = r#"
name = "small"
executor = "constant-vus"
vus = 4
duration = "2s"
think_time = "10ms"
[dataset]
communities = 20
profiles_per_community = 10
[[queries]]
name = "health"
sql = "SELECT 1"
[[queries]]
name = "tenant"
sql = "SELECT community_id FROM profiles LIMIT 5"
tenant_scoped = true
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_threshold_exits_99_and_every_report_says_so() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let text_ = format!("{SMALL}[thresholds]\nquery_duration = [\"p(99) < 0.001\"]\nquery_errors = [\"count == 0\"]\n");
    let file = scenario_file(tmp.path(), "small", &text_);
    let reports = tmp.path().join("r");
    let md = tmp.path().join("step-summary.md");
    let o = output(run_against(
        &stack,
        &file,
        &reports,
        &["--summary-md", md.to_str().unwrap()],
    ));
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("✗ query_duration") && stdout.contains("verdict: FAIL"),
        "{stdout}"
    );
    let (dir, s) = summary(&reports);
    assert_eq!(s.verdict, Verdict::Fail);
    let failed: Vec<_> = s.thresholds.iter().filter(|t| !t.ok).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].metric, "query_duration");
    assert!(failed[0].observed.unwrap() > 0.001);
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<failure").count(), 1, "{junit}");
    let step = std::fs::read_to_string(&md).unwrap();
    assert!(
        step.contains("0.001") && step.to_lowercase().contains("fail"),
        "{step}"
    );
    stack.stop().await.unwrap();
}

#[test]
fn bad_input_exits_2_naming_the_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            SMALL.replace("constant-vus", "constant-vu"),
            ":3: `executor`",
            "unknown executor",
        ),
        (
            SMALL.replace("\"2s\"", "\"2 seconds\""),
            ":5: `duration`",
            "unknown unit",
        ),
        (
            format!("{SMALL}[thresholds]\nquery_durations = [\"p(99) < 10\"]\n"),
            "`query_durations`",
            "unknown metric",
        ),
        (
            format!("{SMALL}[thresholds]\nquery_duration = [\"p99 < 10\"]\n"),
            "`query_duration`",
            "unknown aggregation",
        ),
        (
            SMALL.replace("think_time", "thinktime"),
            ":6: `thinktime`",
            "unknown field",
        ),
        (
            format!("protocol = \"prepared\"\n{SMALL}"),
            "small.toml",
            "transaction mode",
        ),
    ];
    for (i, (body, location, message)) in cases.iter().enumerate() {
        let file = scenario_file(tmp.path(), "small", body);
        let mut c = thumper();
        c.arg("run")
            .arg(&file)
            .args(["--target", "postgres://u:p@127.0.0.1:1/db"]);
        let o = output(c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "case {i}: {}", text(&o));
        assert!(
            err.contains(location),
            "case {i}: expected {location:?} in: {err}"
        );
        assert!(
            err.contains(message),
            "case {i}: expected {message:?} in: {err}"
        );
    }
    // A missing file and a bad flag are bad input too.
    let mut c = thumper();
    c.args(["run", "no/such/scenario.toml"]);
    let o = output(c);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no/such/scenario.toml"));
    let mut c = thumper();
    c.args([
        "steady",
        "--time-scale=-1",
        "--target",
        "postgres://u:p@127.0.0.1:1/db",
    ]);
    let o = output(c);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--time-scale"));
}

#[test]
fn an_unreachable_target_exits_1_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "small", SMALL);
    let mut c = thumper();
    c.arg("run")
        .arg(&file)
        .args(["--target", "postgres://u:p@127.0.0.1:1/db"]);
    let o = output(c);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot log in to target") && err.contains("u:***@127.0.0.1:1"),
        "{err}"
    );
    assert!(
        !err.contains("u:p@"),
        "the password leaked into the message: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbouncer_dying_mid_run_is_counted_and_the_summary_still_written() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let body =
        SMALL.replace("\"2s\"", "\"6s\"") + "[thresholds]\nconnection_errors = [\"count < 10\"]\n";
    let file = scenario_file(tmp.path(), "small", &body);
    let reports = tmp.path().join("r");
    let child = spawn(run_against(&stack, &file, &reports, &[]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.stop_pgbouncer().await.unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (_, s) = summary(&reports);
    let errors = s.counter("connection_errors").unwrap();
    assert!(errors.count >= 4, "connection errors: {errors:?}");
    assert!(!errors.by_class.is_empty());
    assert!(count(&s, "queries") > 0);
    // The outage is visible in the time series: queries before it, errors after it.
    let first_error = s
        .time_series
        .iter()
        .position(|i| i.counters.get("connection_errors").copied().unwrap_or(0) > 0)
        .expect("an interval with connection errors");
    assert!(first_error >= 1);
    assert!(s.time_series[..first_error].iter().any(|i| i
        .counters
        .get("queries")
        .copied()
        .unwrap_or(0)
        > 0));
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_run_and_writes_reports_marked_interrupted() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "small", &SMALL.replace("\"2s\"", "\"60s\""));
    let reports = tmp.path().join("r");
    let child = spawn(run_against(&stack, &file, &reports, &[]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "Ctrl-C did not stop the run"
    );
    let (dir, s) = summary(&reports);
    assert_eq!(s.verdict, Verdict::Interrupted);
    assert!(s.stop_reason.as_deref().unwrap_or("").contains("Ctrl-C"));
    assert!(s.duration_s < 30.0);
    assert!(count(&s, "queries") > 0);
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<error"), "{junit}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_on_fail_threshold_stops_the_run_early_with_99() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let body = SMALL.replace("\"2s\"", "\"60s\"")
        + "[thresholds]\nquery_duration = [{ threshold = \"p(99) < 0.001\", abort_on_fail = true, delay_abort_eval = \"2s\" }]\n";
    let file = scenario_file(tmp.path(), "small", &body);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert_eq!(s.verdict, Verdict::Fail);
    assert!(s.duration_s < 30.0, "ran {} s", s.duration_s);
    let reason = s.stop_reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("abort_on_fail") && reason.contains("query_duration"),
        "{reason}"
    );
    stack.stop().await.unwrap();
}
