//! The server's side of a run (src/metrics/server.rs), against a real PostgreSQL + PgBouncer:
//! server time per query from pg_stat_statements beside the client's, its call counts equal to
//! thumper's, lock waits sampled and judged by a threshold, and a server without the extension
//! that still runs, with a note saying why the decomposition is missing.

mod common;

use common::cli::{output, run_against, scenario_file, summary, text, thumper};
use thumper::stack::{PgBouncerSettings, PostgresSettings, Stack, StackOptions};

/// Load tests share two cores: run them one at a time so each gets the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DATASET: &str = "[dataset]\ncommunities = 3\nprofiles_per_community = 5\n";

fn sleep_scenario() -> String {
    format!(
        "name = \"sleep\"\nexecutor = \"constant-vus\"\nvus = 2\nduration = \"3s\"\n{DATASET}\
         [[queries]]\nname = \"sleep\"\nsql = \"SELECT pg_sleep(0.005)\"\n\
         [thresholds]\n\"server_time{{query:sleep}}\" = [\"avg < 5.5\", \"count > 10\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_five_millisecond_sleep_is_five_milliseconds_of_server_time() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "sleep", &sleep_scenario());
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (dir, s) = summary(&reports);
    let server = s.server.as_ref().expect("a server breakdown");
    let q = &server.queries[0];
    assert_eq!(q.query, "sleep");
    assert!(
        (q.server_us - 5_000.0).abs() < 500.0,
        "server time {} µs",
        q.server_us
    );
    assert!(q.client_mean_us >= q.server_us, "{q:?}");
    assert!(q.client_p50_us >= 5_000.0, "{q:?}");
    assert_eq!(q.server_calls, q.client_calls, "{q:?}");
    // (Whether a once-a-second sample catches a backend in `PgSleep` is chance: the wait
    // events are judged by the lock test below, where the wait lasts.)
    // The statistic is judged like any metric, and every report shows the section.
    assert!(
        s.thresholds.iter().all(|t| t.ok && t.observed.is_some()),
        "{:?}",
        s.thresholds
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"server-queries\"") && html.contains("data-part=\"server\""));
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("Where the time went"), "{md}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_counts_every_query_of_steady_quick_as_thumper_does() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("r");
    // The embedded stack thumper starts for itself: pg_stat_statements is loaded by default.
    let mut c = thumper();
    c.args(["steady", "--quick", "--quiet", "--report-dir"])
        .arg(&reports);
    let o = output(c);
    // steady's own p(99) < 10 may fail on a busy machine (99); what is measured is the same.
    assert!(matches!(o.status.code(), Some(0 | 99)), "{}", text(&o));
    let (_, s) = summary(&reports);
    let server = s.server.as_ref().expect("a server breakdown");
    let names: Vec<&str> = server.queries.iter().map(|q| q.query.as_str()).collect();
    assert_eq!(names, ["health", "tenant", "lookup"]);
    for q in &server.queries {
        assert!(q.client_calls > 100, "{q:?}");
        assert_eq!(q.server_calls, q.client_calls, "{q:?}");
        assert!(q.server_us > 0.0 && q.server_us < q.client_mean_us, "{q:?}");
    }
    // The tenant-scoped ones carry their set_tenant_context call.
    assert!(server.queries[1].tenant_context_us > 0.0);
    assert_eq!(server.queries[0].tenant_context_us, 0.0);
    assert!(
        !s.notes.iter().any(|n| n.contains("server")),
        "{:?}",
        s.notes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn virtual_users_updating_one_row_wait_on_locks_and_a_threshold_fails_the_run() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let admin = common::connect(&stack.urls().admin_database_url).await;
    admin
        .batch_execute(
            "CREATE TABLE hot (id int PRIMARY KEY, n int NOT NULL);
             INSERT INTO hot VALUES (1, 0);
             GRANT SELECT, UPDATE ON hot TO arrakis_app;",
        )
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Each update holds the row for 50 ms after taking it and no VU pauses: the others queue on its lock.
    let body = format!(
        "name = \"hot-row\"\nexecutor = \"constant-vus\"\nvus = 6\nduration = \"4s\"\nthink_time = \"0s\"\n{DATASET}\
         [[queries]]\nname = \"bump\"\n\
         sql = \"WITH u AS (UPDATE hot SET n = n + 1 WHERE id = 1 RETURNING n) SELECT n, pg_sleep(0.05) FROM u\"\n\
         [thresholds]\nserver_waits_lock = [\"max == 0\"]\n"
    );
    let file = scenario_file(tmp.path(), "hot", &body);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (_, s) = summary(&reports);
    let t = &s.thresholds[0];
    assert!(!t.ok && t.observed.unwrap() >= 1.0, "{t:?}");
    let server = s.server.as_ref().unwrap();
    assert!(
        server
            .waits
            .iter()
            .any(|w| w.wait_event_type == "Lock" && w.wait_event == "transactionid"),
        "{server:?}"
    );
    assert!(s
        .time_series
        .iter()
        .any(|i| i.gauges.get("server_waits_lock").is_some_and(|v| *v >= 1.0)));
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_pg_stat_statements_the_run_goes_on_and_says_why() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start(&StackOptions {
        pgbouncer: PgBouncerSettings::default(),
        postgres: PostgresSettings {
            pg_stat_statements: false,
        },
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("stack failed to start: {e}"));
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"sleep\"\nexecutor = \"constant-vus\"\nvus = 2\nduration = \"2s\"\n{DATASET}\
         [[queries]]\nname = \"sleep\"\nsql = \"SELECT pg_sleep(0.005)\"\n"
    );
    let file = scenario_file(tmp.path(), "sleep", &body);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("no server-side decomposition") && n.contains("pg_stat_statements")),
        "{:?}",
        s.notes
    );
    assert!(s.trend("query_duration").unwrap().count > 10);
    // The wait sampler needs no extension: its gauges are there.
    assert!(s.metrics.contains_key("server_waits_lock"));
    assert!(!s.metrics.contains_key("server_time{query:sleep}"));
    stack.stop().await.unwrap();
}
