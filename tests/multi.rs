//! Several scenarios in one run, feeders, `[setup]` and `[teardown]`, end to end against a real
//! PostgreSQL + PgBouncer: per-scenario numbers add up to the run's, `start_after` follows the
//! other scenario's end on the run's own clock, a queue feeder's rows are each used once (also
//! across a local fleet), teardown runs however the run ends, and a scenario's threshold judges
//! that scenario's numbers only.

mod common;

use std::time::Duration;

use common::cli::{count, output, run_against, scenario_file, spawn, summary, text, thumper};
use thumper::metrics::summary::{Metric, Summary};

/// Load tests share two cores: run them one at a time so each gets the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TWO: &str = r#"
name = "two"
[dataset]
seed = 7
communities = 3
profiles_per_community = 5

[scenarios.fast]
executor = "constant-vus"
vus = 2
duration = "3s"
think_time = "20ms"
[[scenarios.fast.queries]]
name = "one"
sql = "SELECT 1"

[scenarios.slow]
executor = "constant-vus"
vus = 1
duration = "2s"
think_time = "0s"
start_after = "fast"
[[scenarios.slow.queries]]
name = "sleep"
sql = "SELECT pg_sleep(0.06)"

[thresholds]
"query_duration{scenario:fast}" = ["p(99) < 40"]
"query_duration{scenario:slow}" = ["p(99) < 40"]
"iterations{scenario:slow}" = ["count > 0"]
"#;

fn scenario<'a>(s: &'a Summary, name: &str) -> &'a thumper::metrics::summary::ScenarioRun {
    s.scenarios
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}: {:?}", s.scenarios))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_scenarios_add_up_follow_each_other_and_are_judged_apart() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "two", TWO);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    // The slow scenario's threshold fails: exit 99.
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (dir, s) = summary(&reports);

    // Per-scenario counts add up to the run's.
    for metric in ["iterations", "queries", "query_errors", "connection_errors"] {
        let parts = count(&s, &format!("{metric}{{scenario:fast}}"))
            + count(&s, &format!("{metric}{{scenario:slow}}"));
        assert_eq!(parts, count(&s, metric), "{metric}");
    }
    assert!(count(&s, "iterations{scenario:fast}") > 0);
    assert!(count(&s, "iterations{scenario:slow}") > 0);
    let trend = |k: &str| s.trend(k).unwrap_or_else(|| panic!("no {k}")).count;
    assert_eq!(
        trend("query_duration{scenario:fast}") + trend("query_duration{scenario:slow}"),
        trend("query_duration")
    );
    assert!(matches!(s.metrics.get("vus{scenario:fast}"), Some(Metric::Gauge(g)) if g.max >= 2.0));

    // `start_after`: slow starts when fast ends, on the run's own recorded clock.
    let (fast, slow) = (scenario(&s, "fast"), scenario(&s, "slow"));
    assert_eq!(fast.ending, "ran_to_plan");
    assert_eq!(slow.ending, "ran_to_plan");
    let gap = slow.start_s - fast.end_s;
    assert!(
        (0.0..1.0).contains(&gap),
        "slow started {gap:.3} s after fast ended"
    );
    assert!(fast.start_s < 0.5, "fast starts at once: {}", fast.start_s);

    // Each scenario's threshold judged its own numbers: the fast one passes although the
    // run's whole latency (with the slow scenario's 60 ms queries) would fail it.
    let result = |m: &str| {
        s.thresholds
            .iter()
            .find(|t| t.metric == m)
            .unwrap_or_else(|| panic!("no threshold {m}"))
    };
    assert!(result("query_duration{scenario:fast}").ok);
    assert!(!result("query_duration{scenario:slow}").ok);
    assert!(result("iterations{scenario:slow}").ok);
    assert!(s.trend("query_duration").unwrap().p99_us > 40_000);

    // Every report shows the scenarios.
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("| slow |"), "{md}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("Scenarios"),
        "no scenario table in the HTML report"
    );
    stack.stop().await.unwrap();
}

/// A feeder of `n` ids whose query records each id it is given; `[setup]` makes the table,
/// `[teardown]` records that it ran.
fn feeder_file(dir: &std::path::Path, n: u32, extra: &str) -> std::path::PathBuf {
    let csv: String = std::iter::once("id,label\n".to_owned())
        .chain((1..=n).map(|i| format!("{i},\"row, {i}\"\n")))
        .collect();
    std::fs::write(dir.join("ids.csv"), csv).unwrap();
    let text = format!(
        r#"
name = "fed"
executor = "constant-vus"
vus = 4
duration = "60s"
think_time = "0s"
[dataset]
seed = 7
communities = 3
profiles_per_community = 5

[setup]
sql = """
DROP TABLE IF EXISTS fed_rows;
CREATE TABLE fed_rows (id int, label text);
GRANT INSERT, SELECT ON fed_rows TO PUBLIC;
CREATE TABLE IF NOT EXISTS fed_teardowns (at timestamptz);
"""

[teardown]
sql = "INSERT INTO fed_teardowns VALUES (now())"

[[feeders]]
name = "ids"
file = "ids.csv"
strategy = "queue"

[[queries]]
name = "record"
sql = "INSERT INTO fed_rows VALUES ($1, $2)"
params = ["ids.id", "ids.label"]
{extra}"#
    );
    scenario_file(dir, "fed", &text)
}

async fn fed_rows(stack: &thumper::stack::Stack) -> (i64, i64, i64) {
    let c = common::connect(&stack.urls().admin_database_url).await;
    let r = c
        .query_one(
            "SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM fed_teardowns) FROM fed_rows",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_feeder_of_n_rows_gives_n_iterations_alone_and_across_a_fleet() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = feeder_file(tmp.path(), 40, "");
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert_eq!(count(&s, "iterations"), 40);
    assert_eq!(count(&s, "queries"), 40);
    assert_eq!(s.scenarios[0].ending, "rows_ran_out");
    assert!(
        s.notes.iter().any(|n| n.contains("ran out of rows")),
        "{:?}",
        s.notes
    );
    assert_eq!(fed_rows(&stack).await, (40, 40, 1));

    // Three local workers share the rows: each used once, setup and teardown once.
    let file = feeder_file(tmp.path(), 30, "");
    let reports = tmp.path().join("fleet");
    let urls = stack.urls();
    let mut c = thumper();
    c.args(["fleet", "--local", "3"])
        .arg(&file)
        .args(["--target", &urls.database_url])
        .args(["--admin-url", &urls.admin_database_url])
        .args(["--pgbouncer-admin", &urls.pgbouncer_admin_url])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--quiet");
    let o = output(c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(fed_rows(&stack).await, (30, 30, 2));
    let fleet_dir = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let s = thumper::report::read_summary(&fleet_dir.join("summary.json")).unwrap();
    assert_eq!(count(&s, "iterations"), 30, "{}", text(&o));
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn teardown_runs_after_ctrl_c_and_after_a_threshold_abort() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    // Enough rows that neither run ends by running out.
    let file = feeder_file(tmp.path(), 100_000, "");
    let reports = tmp.path().join("int");
    let child = spawn(run_against(&stack, &file, &reports, &[]));
    tokio::time::sleep(Duration::from_secs(4)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let (rows, _, teardowns) = fed_rows(&stack).await;
    assert!(rows > 0);
    assert_eq!(teardowns, 1, "teardown after Ctrl-C");

    let file = feeder_file(
        tmp.path(),
        100_000,
        "[thresholds]\nquery_duration = [{ threshold = \"p(99) < 0.001\", abort_on_fail = true, delay_abort_eval = \"1s\" }]\n",
    );
    let reports = tmp.path().join("abort");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert!(s.duration_s < 30.0, "the abort stopped the run");
    assert_eq!(
        fed_rows(&stack).await.2,
        2,
        "teardown after a threshold abort"
    );
    stack.stop().await.unwrap();
}

#[test]
fn bad_input_names_the_file_and_line_before_any_load() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, String, &str); 5] = [
        (
            "cycle",
            TWO.replace(
                "duration = \"3s\"",
                "duration = \"3s\"\nstart_after = \"slow\"",
            ),
            "cycle",
        ),
        (
            "unknown-after",
            TWO.replace("start_after = \"fast\"", "start_after = \"fats\""),
            "no scenario is named \"fats\"",
        ),
        (
            "unknown-scenario-tag",
            TWO.replace("{scenario:fast}", "{scenario:quick}"),
            "no scenario is named \"quick\"",
        ),
        (
            "unknown-query",
            TWO.replace(
                "[[scenarios.fast.queries]]\nname = \"one\"\nsql = \"SELECT 1\"",
                "use_queries = [\"nope\"]",
            ),
            "no [[queries]] entry is named \"nope\"",
        ),
        (
            "unknown-feeder",
            TWO.replace(
                "sql = \"SELECT 1\"",
                "sql = \"SELECT $1\"\nparams = [\"users.id\"]",
            ),
            "no feeder is named \"users\"",
        ),
    ];
    for (name, body, message) in cases {
        let file = scenario_file(tmp.path(), name, &body);
        let mut c = thumper();
        c.arg("run")
            .arg(&file)
            .args(["--target", "postgres://nobody@127.0.0.1:1/x"]);
        let o = output(c);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {t}");
        let at = format!("{}:", file.display());
        assert!(t.contains(&at) && t.contains(message), "{name}: {t}");
        let line: String = t[t.find(&at).unwrap() + at.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert!(
            line.parse::<u32>().unwrap_or(0) > 0,
            "{name}: no line in {t}"
        );
    }
    // A CSV row with the wrong number of columns: the CSV's file and line.
    std::fs::write(tmp.path().join("bad.csv"), "id,label\n1,a\n2\n").unwrap();
    let body = std::fs::read_to_string(feeder_file(tmp.path(), 1, "")).unwrap();
    let file = scenario_file(tmp.path(), "badcsv", &body.replace("ids.csv", "bad.csv"));
    let mut c = thumper();
    c.arg("run")
        .arg(&file)
        .args(["--target", "postgres://nobody@127.0.0.1:1/x"]);
    let o = output(c);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("bad.csv:3:") && t.contains("1 column(s), the header has 2"),
        "{t}"
    );
}
