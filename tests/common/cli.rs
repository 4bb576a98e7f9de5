//! Running the thumper binary as a user would, and reading what it left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use thumper::metrics::summary::Summary;
use thumper::stack::Stack;

/// The built thumper binary.
pub fn thumper() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thumper"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    // A stack left up by a developer must not be picked up by a test.
    c.env(
        "THUMPER_STACK_STATE",
        "/nonexistent/thumper-test-state.json",
    );
    for var in ["DATABASE_URL", "ADMIN_DATABASE_URL", "PGBOUNCER_ADMIN_URL"] {
        c.env_remove(var);
    }
    c
}

/// A scenario file written into `dir`.
pub fn scenario_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).expect("write scenario");
    p
}

/// `thumper run FILE` against `stack` with its URLs, reports under `reports`.
pub fn run_against(stack: &Stack, scenario: &Path, reports: &Path, extra: &[&str]) -> Command {
    let urls = stack.urls();
    let mut c = thumper();
    c.arg("run")
        .arg(scenario)
        .args(["--target", &urls.database_url])
        .args(["--admin-url", &urls.admin_database_url])
        .args(["--pgbouncer-admin", &urls.pgbouncer_admin_url])
        .arg("--report-dir")
        .arg(reports)
        .arg("--quiet")
        .args(extra);
    c
}

/// Runs a command to completion, capturing its output.
pub fn output(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .output()
        .expect("thumper binary runs")
}

/// Starts a command in the background.
pub fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("thumper binary starts")
}

/// The only report folder under `reports`, and its summary.
pub fn summary(reports: &Path) -> (PathBuf, Summary) {
    let dirs: Vec<PathBuf> = std::fs::read_dir(reports)
        .unwrap_or_else(|e| panic!("{}: {e}", reports.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "expected one report folder in {}: {dirs:?}",
        reports.display()
    );
    let dir = dirs[0].clone();
    let s = thumper::report::read_summary(&dir.join("summary.json")).expect("summary.json parses");
    (dir, s)
}

/// Text of a process's stdout and stderr.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A counter's run total.
pub fn count(s: &Summary, name: &str) -> u64 {
    s.counter(name).map_or(0, |c| c.count)
}

/// The points of a `--out json=FILE` file, one JSON value a line.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let body = std::fs::read_to_string(path).unwrap();
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The sum of a counter's points in a `--out json` file: what a dashboard adds up.
pub fn sum_points(lines: &[serde_json::Value], metric: &str) -> u64 {
    lines
        .iter()
        .filter(|l| l["type"] == "Point" && l["metric"] == metric)
        .map(|l| l["data"]["value"].as_u64().expect("a count"))
        .sum()
}
