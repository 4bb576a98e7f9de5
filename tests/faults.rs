//! The open model, PgBouncer observability, the deep health check and surviving faults, each
//! against a real PostgreSQL + PgBouncer started by the test.

mod common;

use std::time::Duration;

use common::cli::{count, output, run_against, scenario_file, spawn, summary, text, thumper};
use thumper::metrics::summary::{Metric, Summary};
use thumper::stack::PgBouncerSettings;

/// Load tests share two cores: run them one at a time so each gets the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn gauge_max(s: &Summary, name: &str) -> f64 {
    match s.metrics.get(name) {
        Some(Metric::Gauge(g)) => g.max,
        _ => panic!("no gauge {name}"),
    }
}

const DATASET: &str = "[dataset]\ncommunities = 20\nprofiles_per_community = 10\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_rate_is_achieved_and_drops_are_reported_when_vus_run_out() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"rate\"\nexecutor = \"constant-arrival-rate\"\nrate = 200\nduration = \"5s\"\npre_allocated_vus = 5\nmax_vus = 50\n{DATASET}\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n"
    );
    let file = scenario_file(tmp.path(), "rate", &body);
    let reports = tmp.path().join("a");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    let iterations = count(&s, "iterations");
    assert!(
        (950..=1050).contains(&iterations),
        "{iterations} iterations for 200/s × 5 s"
    );
    assert_eq!(count(&s, "dropped_iterations"), 0);
    assert!(s.trend("service_time").unwrap().count > 0);
    assert!(s.trend("scheduling_lag").unwrap().count > 0);

    // Two VUs that each need 50 ms cannot carry 200 iterations per second.
    let body = body
        .replace("max_vus = 50", "max_vus = 2")
        .replace("pre_allocated_vus = 5", "pre_allocated_vus = 2")
        .replace("SELECT 1", "SELECT pg_sleep(0.05)");
    let file = scenario_file(tmp.path(), "rate", &body);
    let reports = tmp.path().join("b");
    let o = output(run_against(&stack, &file, &reports, &[]));
    let (_, s) = summary(&reports);
    let dropped = count(&s, "dropped_iterations");
    let done = count(&s, "iterations");
    assert!(
        dropped > 500,
        "dropped {dropped}, done {done}\n{}",
        text(&o)
    );
    assert!(done < 300, "done {done}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stall_shows_in_response_time_but_not_in_service_time() {
    let _serial = SERIAL.lock().await;
    // min_pool_size = 0: with the seed's 5, a PAUSE turns into a 15 s outage (see docs/stack.md).
    let stack = common::start(PgBouncerSettings {
        min_pool_size: 0,
        ..PgBouncerSettings::default()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"stall\"\nexecutor = \"constant-arrival-rate\"\nrate = 100\nduration = \"8s\"\npre_allocated_vus = 4\nmax_vus = 4\non_busy = \"queue\"\n{DATASET}\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n"
    );
    let file = scenario_file(tmp.path(), "stall", &body);
    let reports = tmp.path().join("r");
    let child = spawn(run_against(&stack, &file, &reports, &[]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let console = common::connect(&stack.urls().pgbouncer_admin_url).await;
    console.simple_query("PAUSE arrakis").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    console.simple_query("RESUME arrakis").await.unwrap();
    let o = child.wait_with_output().unwrap();
    let (_, s) = summary(&reports);
    let response = s.trend("query_duration").unwrap();
    let service = s.trend("service_time").unwrap();
    // ~200 iterations were due during the 2 s pause and waited for one of 4 VUs: their
    // response time counts from the schedule. Only the 4 queries in flight saw it as service.
    assert!(
        response.max_us >= 1_500_000,
        "response max {} µs\n{}",
        response.max_us,
        text(&o)
    );
    assert!(
        response.p99_us >= 1_000_000,
        "response p99 {} µs",
        response.p99_us
    );
    assert!(
        service.p99_us < 500_000,
        "service p99 {} µs",
        service.p99_us
    );
    assert!(s.trend("scheduling_lag").unwrap().max_us >= 1_000_000);
    assert_eq!(count(&s, "dropped_iterations"), 0);
    // The pause is visible in the pool statistics too.
    assert!(
        gauge_max(&s, "pgbouncer_cl_waiting") >= 1.0 || gauge_max(&s, "pgbouncer_maxwait") > 0.0
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_statistics_show_clients_waiting_when_vus_exceed_the_pool() {
    let _serial = SERIAL.lock().await;
    let stack = common::start(PgBouncerSettings {
        default_pool_size: 2,
        min_pool_size: 0,
        ..PgBouncerSettings::default()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"pool\"\nexecutor = \"constant-vus\"\nvus = 30\nduration = \"4s\"\nthink_time = \"0s\"\n{DATASET}\
         [[queries]]\nname = \"sleep\"\nsql = \"SELECT pg_sleep(0.002)\"\n\
         [thresholds]\npgbouncer_cl_waiting = [\"max < 1000\"]\npgbouncer_sv_active = [\"max <= 2\"]\n"
    );
    let file = scenario_file(tmp.path(), "pool", &body);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert!(
        gauge_max(&s, "pgbouncer_cl_waiting") > 0.0,
        "no client ever waited"
    );
    assert!(gauge_max(&s, "pgbouncer_cl_active") + gauge_max(&s, "pgbouncer_cl_waiting") >= 20.0);
    assert!(gauge_max(&s, "pgbouncer_sv_active") <= 2.0);
    assert!(gauge_max(&s, "pgbouncer_xact_per_s") > 10.0);
    let with_pool = s
        .time_series
        .iter()
        .filter(|i| i.gauges.contains_key("pgbouncer_cl_waiting"))
        .count();
    assert!(with_pool >= 2, "pool gauges in {with_pool} intervals");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn health_fails_naming_the_check_when_postgres_is_down_behind_pgbouncer() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    common::seed_small(&stack).await;
    let health = |extra: &[&str]| {
        let mut c = thumper();
        c.args(["health", "--target", &stack.urls().database_url])
            .args(["--admin", &stack.urls().pgbouncer_admin_url])
            .args(["--timeout", "3"])
            .args(extra);
        output(c)
    };
    let o = health(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("tenant_rls"));
    stack.stop_postgres().await.unwrap();
    let o = health(&["--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["healthy"], false);
    let checks = report["checks"].as_array().unwrap();
    // PgBouncer still lets the client log in; the query is what fails.
    assert_eq!(checks[0]["name"], "login");
    assert_eq!(checks[0]["ok"], true);
    let query = checks.iter().find(|c| c["name"] == "query").unwrap();
    assert_eq!(query["ok"], false, "{query}");
    stack.start_postgres().await.unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_survives_a_pgbouncer_restart_and_a_postgres_restart() {
    let _serial = SERIAL.lock().await;
    // A server login that fails while PostgreSQL restarts makes PgBouncer wait
    // server_login_retry (15 s by default) before trying again; 1 s keeps the test short.
    let stack = common::start(PgBouncerSettings {
        server_login_retry: 1,
        ..PgBouncerSettings::default()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"faults\"\nexecutor = \"constant-vus\"\nvus = 8\nduration = \"14s\"\nthink_time = \"20ms\"\n{DATASET}\
         [connection]\nmax_backoff = \"500ms\"\n\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n\
         [[queries]]\nname = \"tenant\"\nsql = \"SELECT community_id FROM profiles LIMIT 3\"\ntenant_scoped = true\n"
    );
    let file = scenario_file(tmp.path(), "faults", &body);
    let reports = tmp.path().join("r");
    let child = spawn(run_against(&stack, &file, &reports, &[]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.restart_pgbouncer().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stack.restart_postgres().await.unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 99)), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (dir, s) = summary(&reports);
    assert!(dir.join("report.html").is_file());
    let errors = count(&s, "connection_errors") + count(&s, "query_errors");
    assert!(errors > 0, "the outages left no trace");
    // Load came back after both restarts: the last seconds have queries again.
    let full: Vec<_> = s.time_series.iter().filter(|i| i.len_s >= 0.9).collect();
    let tail = &full[full.len().saturating_sub(3)..];
    assert!(
        tail.iter()
            .all(|i| i.counters.get("queries").copied().unwrap_or(0) > 0),
        "no queries after the restarts: {tail:?}"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_reports_a_sustained_rate_and_the_latency_curve() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"cap\"\nexecutor = \"constant-arrival-rate\"\nrate = 1\nduration = \"1s\"\npre_allocated_vus = 5\nmax_vus = 50\n{DATASET}\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n"
    );
    let file = scenario_file(tmp.path(), "cap", &body);
    let reports = tmp.path().join("r");
    let urls = stack.urls();
    let mut c = thumper();
    c.arg("capacity")
        .arg(&file)
        .args([
            "--step",
            "1s",
            "--start-rate",
            "50",
            "--max-rate",
            "200",
            "--refine",
            "0",
        ])
        .args(["--slo-p99", "1000"])
        .args([
            "--target",
            &urls.database_url,
            "--admin-url",
            &urls.admin_database_url,
        ])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--quiet");
    let o = output(c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (dir, s) = summary(&reports);
    // 50, 100 and 200 per second all pass a 1 s SLO: the search stops at --max-rate.
    match s.metrics.get("capacity_rate") {
        Some(Metric::Gauge(g)) => assert_eq!(g.last, 200.0),
        other => panic!("capacity_rate: {other:?}"),
    }
    let curve = &s.curves[0];
    assert_eq!(curve.series["p99"].len(), 3);
    assert!(curve.series["p99"].iter().all(|(_, p99)| *p99 > 0.0));
    assert!(std::fs::read_to_string(dir.join("report.html"))
        .unwrap()
        .contains("arrival rate"));
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stall_that_outlasts_the_run_is_reported_not_dropped() {
    let _serial = SERIAL.lock().await;
    let stack = common::start(PgBouncerSettings {
        min_pool_size: 0,
        ..PgBouncerSettings::default()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"outlast\"\nexecutor = \"constant-arrival-rate\"\nrate = 50\nduration = \"4s\"\npre_allocated_vus = 2\nmax_vus = 2\non_busy = \"queue\"\ngraceful_stop = \"1s\"\n{DATASET}\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n"
    );
    let file = scenario_file(tmp.path(), "outlast", &body);
    let reports = tmp.path().join("r");
    let child = spawn(run_against(&stack, &file, &reports, &[]));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let console = common::connect(&stack.urls().pgbouncer_admin_url).await;
    console.simple_query("PAUSE arrakis").await.unwrap();
    // The pause lasts past the end of the run and its grace period.
    let o = child.wait_with_output().unwrap();
    console.simple_query("RESUME arrakis").await.unwrap();
    let (_, s) = summary(&reports);
    let incomplete = count(&s, "incomplete_iterations");
    // ~75 iterations were due after the pause: 2 in flight, the rest queued for a VU.
    assert!(incomplete >= 50, "incomplete {incomplete}\n{}", text(&o));
    assert_eq!(count(&s, "dropped_iterations"), 0);
    let latency = s.trend("query_duration").unwrap();
    assert!(
        latency.max_us >= 1_500_000,
        "max {} µs: the wait is not in the latency",
        latency.max_us
    );
    let success = match s.metrics.get("success_rate") {
        Some(Metric::Rate(r)) => r.clone(),
        other => panic!("{other:?}"),
    };
    assert!(success.fails >= incomplete, "{success:?}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pooled_topology_and_prepared_statements_run_where_they_can() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    // Shared application-side pools through PgBouncer.
    let pooled = format!(
        "name = \"pooled\"\nexecutor = \"constant-vus\"\nvus = 20\nduration = \"2s\"\nthink_time = \"5ms\"\n{DATASET}\
         [connection]\ntopology = \"pooled\"\npools = 2\npool_size = 3\n\
         [[queries]]\nname = \"lookup\"\nsql = \"SELECT community_id FROM profiles WHERE community_id = $1 AND wallet_address = $2\"\nparams = [\"community_id\", \"wallet\"]\ntenant_scoped = true\n"
    );
    let file = scenario_file(tmp.path(), "pooled", &pooled);
    let reports = tmp.path().join("pooled");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert!(count(&s, "queries") > 50);
    assert_eq!(
        count(&s, "query_errors") + count(&s, "connection_errors"),
        0
    );
    // 20 VUs share 6 connections: PgBouncer never sees more than 6 clients from them.
    assert!(gauge_max(&s, "pgbouncer_cl_active") + gauge_max(&s, "pgbouncer_cl_waiting") <= 7.0);

    // Named prepared statements, directly against PostgreSQL (no transaction pooler).
    let prepared = format!(
        "name = \"prepared\"\nexecutor = \"constant-vus\"\nvus = 4\nduration = \"2s\"\nthink_time = \"5ms\"\nprotocol = \"prepared\"\n{DATASET}\
         [[queries]]\nname = \"health\"\nsql = \"SELECT $1::bigint\"\nparams = [\"guild_id\"]\n"
    );
    let file = scenario_file(tmp.path(), "prepared", &prepared);
    let reports = tmp.path().join("prepared");
    let mut c = thumper();
    c.arg("run")
        .arg(&file)
        .args([
            "--target",
            &stack.urls().admin_database_url,
            "--pool-mode",
            "none",
        ])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--quiet");
    let o = output(c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert!(count(&s, "queries") > 50);
    assert_eq!(count(&s, "query_errors"), 0);
    stack.stop().await.unwrap();
}
