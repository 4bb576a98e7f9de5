//! How a run ends when it does not run out: SIGTERM behaves as Ctrl-C (reports marked
//! interrupted, exit 143), a second Ctrl-C still takes the embedded servers down, and an output
//! path that cannot be written is bad input before any server starts.

mod common;

use std::collections::HashSet;
use std::process::Child;
use std::time::{Duration, Instant};

use common::cli::{count, output, scenario_file, spawn, summary, text, thumper};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use thumper::metrics::summary::Verdict;

/// Runs that start their own stack share two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LONG: &str = r#"
name = "long"
executor = "constant-vus"
vus = 4
duration = "60s"
think_time = "10ms"
[dataset]
communities = 20
profiles_per_community = 10
[[queries]]
name = "health"
sql = "SELECT 1"
"#;

/// Live PostgreSQL and PgBouncer processes whose parent is `parent`.
fn servers_of(parent: u32) -> HashSet<u32> {
    let mut pids = HashSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((comm, state, ppid)) = stat(pid) {
            if ppid == parent && state != 'Z' && (comm == "postgres" || comm == "pgbouncer") {
                pids.insert(pid);
            }
        }
    }
    pids
}

/// A process's command name, state and parent, from /proc.
fn stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((stat[open + 1..close].to_owned(), state, ppid))
}

/// Waits until the run has started its own PostgreSQL and PgBouncer; returns their pids.
fn wait_for_servers(child: &mut Child) -> HashSet<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ours = servers_of(child.id());
        if ours.len() >= 2 {
            return ours;
        }
        assert!(Instant::now() < deadline, "no embedded stack came up");
        assert!(child.try_wait().unwrap().is_none(), "thumper ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for_servers`], then migrations, seeding and a few seconds of load.
fn wait_for_load(child: &mut Child) -> HashSet<u32> {
    let servers = wait_for_servers(child);
    std::thread::sleep(Duration::from_secs(6));
    servers
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Those of `servers` still running a moment after thumper exited.
fn left_running(servers: &HashSet<u32>) -> Vec<u32> {
    let alive = |pid: &u32| stat(*pid).is_some_and(|(_, state, _)| state != 'Z');
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = servers.iter().copied().filter(alive).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn embedded_run(scenario: &std::path::Path, reports: &std::path::Path) -> std::process::Command {
    let mut c = thumper();
    c.arg("run")
        .arg(scenario)
        .arg("--report-dir")
        .arg(reports)
        .arg("--quiet");
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_like_ctrl_c_writes_reports_and_exits_143() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "long", LONG);
    let reports = tmp.path().join("r");
    let mut child = spawn(embedded_run(&file, &reports));
    let servers = wait_for_load(&mut child);
    signal(&child, Signal::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", text(&o));
    let (dir, s) = summary(&reports);
    assert_eq!(s.verdict, Verdict::Interrupted);
    assert!(
        s.stop_reason.as_deref().unwrap_or("").contains("SIGTERM"),
        "{:?}",
        s.stop_reason
    );
    assert!(count(&s, "queries") > 0);
    assert!(s.duration_s < 50.0);
    for f in ["report.html", "junit.xml", "summary.md", "latency.hlog"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        left_running(&servers),
        Vec::<u32>::new(),
        "the embedded stack was not torn down"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_ctrl_c_still_stops_the_embedded_servers() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    // A dataset that takes seconds to seed, so both signals land while thumper is busy.
    let big = LONG.replace("communities = 20", "communities = 3000");
    let file = scenario_file(tmp.path(), "long", &big);
    let reports = tmp.path().join("r");
    let mut child = spawn(embedded_run(&file, &reports));
    let servers = wait_for_servers(&mut child);
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, Signal::SIGINT);
    // Two signals at once may reach the process as one; a user's second press comes later.
    std::thread::sleep(Duration::from_millis(300));
    if child.try_wait().unwrap().is_none() {
        signal(&child, Signal::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    // The servers run in their own process groups, out of the terminal's Ctrl-C: thumper
    // must have stopped them itself.
    assert_eq!(
        left_running(&servers),
        Vec::<u32>::new(),
        "PostgreSQL or PgBouncer outlived thumper\n{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_path_that_cannot_be_written_is_bad_input_before_any_load() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "long", LONG);
    let not_a_folder = tmp.path().join("a-file");
    std::fs::write(&not_a_folder, "x").unwrap();
    let cases: [(&str, std::path::PathBuf); 2] = [
        ("--report-dir", not_a_folder.clone()),
        ("--summary-md", not_a_folder.join("summary.md")),
    ];
    for (flag, path) in cases {
        let mut c = thumper();
        c.arg("run").arg(&file).arg(flag).arg(&path).arg("--quiet");
        if flag != "--report-dir" {
            c.arg("--report-dir").arg(tmp.path().join("r"));
        }
        let o = output(c);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(flag) && err.contains(path.to_str().unwrap()),
            "{flag}: {err}"
        );
        assert!(
            !err.contains("starting PostgreSQL"),
            "{flag}: a stack was started before the check: {err}"
        );
    }
    // compare's --markdown too, before it reads anything.
    let mut c = thumper();
    c.args([
        "compare",
        "no-such-baseline.json",
        "no-such-current.json",
        "--markdown",
    ])
    .arg(not_a_folder.join("cmp.md"));
    let o = output(c);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--markdown") && err.contains("cmp.md"),
        "{err}"
    );
    // A threshold on a tag thumper does not record is refused up front too.
    let tagged = format!("{LONG}[thresholds]\n\"query_duration{{shard:0}}\" = [\"p(99) < 10\"]\n");
    let file = scenario_file(tmp.path(), "tagged", &tagged);
    let mut c = thumper();
    c.arg("run").arg(&file).arg("--quiet");
    let o = output(c);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("query_duration{shard:0}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_session_pooler_carries_prepared_statements_without_a_flag() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    // The embedded stack runs PgBouncer in the scenario's mode: session pooling keeps a named
    // statement on its server connection, so `--pool-mode` is not needed to say so.
    let body = LONG
        .replace("\"60s\"", "\"2s\"")
        .replace("think_time", "protocol = \"prepared\"\nthink_time")
        + "[stack.pgbouncer]\npool_mode = \"session\"\n";
    let file = scenario_file(tmp.path(), "session", &body);
    let reports = tmp.path().join("r");
    let o = output(embedded_run(&file, &reports));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert!(count(&s, "queries") > 20);
    assert_eq!(count(&s, "query_errors"), 0);
    // Through a transaction pooler it is still refused before anything starts.
    let refused = body.replace("pool_mode = \"session\"", "pool_mode = \"transaction\"");
    let file = scenario_file(tmp.path(), "transaction", &refused);
    let o = output(embedded_run(&file, &tmp.path().join("r2")));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("transaction"));
}
