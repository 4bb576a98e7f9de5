//! `thumper gateway` as a user runs it, on the same spine as every other run: its samples feed
//! the one aggregator, so `--out` writes the gateway's points, an `abort_on_fail` threshold stops
//! the run while it goes, and the progress line shows on a terminal. The real gateway binary,
//! the fake Discord and a real nats-server; short runs, counts only, no timing assertions.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{count, json_lines, output, scenario_file, sum_points, summary, text, thumper};
use thumper::metrics::summary::Verdict;

/// Gateway runs share two cores: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A small world: 20 guilds over 2 shards, member events at 300/s for `seconds`.
fn scenario(seconds: u32, thresholds: &str) -> String {
    format!(
        r#"name = "gateway-spine"
executor = "ramping-arrival-rate"
[[stages]]
duration = "500ms"
target = 300
[[stages]]
duration = "{seconds}s"
target = 300
[gateway]
guilds = 20
members_per_guild = 10
shards = 2
heartbeat_interval = "1s"
[thresholds]
{thresholds}
"#
    )
}

/// `thumper gateway --scenario FILE --report-dir DIR` with thumper's own nats-server.
fn gateway(file: &Path, reports: &Path) -> Command {
    let mut c = thumper();
    c.arg("gateway")
        .arg("--scenario")
        .arg(file)
        .arg("--report-dir")
        .arg(reports)
        .env_remove("NATS_URL")
        .env_remove("THUMPER_GATEWAY_LOG");
    c
}

#[test]
fn out_json_points_add_up_to_the_gateway_summary() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(
        tmp.path(),
        "gateway-spine",
        &scenario(3, "events_lost = [\"count == 0\"]"),
    );
    let reports = tmp.path().join("r");
    let points = tmp.path().join("points.json");
    let spec = format!("json={}", points.display());
    let mut c = gateway(&file, &reports);
    c.args(["--quick", "--quiet", "--out", &spec]);
    let o = output(c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    let lines = json_lines(&points);
    let sent = count(&s, "events_sent");
    assert!(sent > 500, "sent {sent}\n{}", text(&o));
    for name in ["events_sent", "events_delivered", "identifies"] {
        assert_eq!(sum_points(&lines, name), count(&s, name), "{name}");
    }
    assert_eq!(count(&s, "events_delivered"), sent);
    // Latency points: their counts add up to the run's trend.
    let counted: u64 = lines
        .iter()
        .filter(|l| l["type"] == "Point" && l["metric"] == "event_latency")
        .map(|l| l["data"]["aggregate"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, s.trend("event_latency").unwrap().count);
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "Point" && l["metric"] == "gateway_rss_mb"),
        "no gateway_rss_mb point"
    );
    // The gateway's summary holds the gateway's metrics, not the database's.
    assert!(!s.metrics.contains_key("query_duration"), "{:?}", s.metrics);
    assert!(!s.metrics.contains_key("success_rate"));
    assert!(
        s.notes.iter().any(|n| n.contains("points.json")),
        "{:?}",
        s.notes
    );
}

#[test]
fn an_abort_on_fail_threshold_stops_the_gateway_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    // 300 events a second: more than 10 are delivered within the first second.
    let file = scenario_file(
        tmp.path(),
        "gateway-spine",
        &scenario(
            30,
            "events_delivered = [{ threshold = \"count < 10\", abort_on_fail = true }]",
        ),
    );
    let reports = tmp.path().join("r");
    let o = output({
        let mut c = gateway(&file, &reports);
        c.arg("--quiet");
        c
    });
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (dir, s) = summary(&reports);
    assert_eq!(s.verdict, Verdict::Fail);
    let reason = s.stop_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("abort_on_fail") && reason.contains("count < 10"),
        "{reason:?}\n{}",
        text(&o)
    );
    // Stopped early: far fewer events than 30 s at 300/s.
    assert!(count(&s, "events_sent") < 300 * 15, "{}", text(&o));
    assert!(
        s.duration_s < s.planned_duration_s / 2.0,
        "{}",
        s.duration_s
    );
    for report in ["summary.json", "report.html"] {
        assert!(dir.join(report).is_file(), "{report} missing in {dir:?}");
    }
}

#[test]
fn the_progress_line_shows_on_a_terminal() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "gateway-spine", &scenario(3, ""));
    let reports = tmp.path().join("r");
    // `script` runs the command on a pseudo-terminal, as a user at a terminal would.
    let inner = gateway(&file, &reports);
    let mut line = shell_quote(inner.get_program().to_str().unwrap());
    for a in inner.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(a.to_str().unwrap()));
    }
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NATS_URL")
        .env_remove("THUMPER_GATEWAY_LOG")
        .env(
            "THUMPER_STACK_STATE",
            "/nonexistent/thumper-test-state.json",
        );
    let o = output(c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = text(&o);
    // The gateway's columns: connected shards, delivered events a second, reconnects so far.
    let line = all
        .split(['\r', '\n'])
        .find(|l| l.contains("events/s"))
        .unwrap_or_else(|| panic!("no progress line: {all}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words.windows(2).any(|w| w == ["shards", "2"]), "{line}");
    assert!(words.windows(2).any(|w| w == ["reconnects", "0"]), "{line}");
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
