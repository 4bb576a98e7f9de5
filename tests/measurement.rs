//! The numbers at the edges, each against a real PostgreSQL + PgBouncer: an arrival-rate ramp
//! from 0 follows its shape, a failing statement costs one error and not the connection on every
//! protocol, and the closed model's query time leaves out connecting and pool waits.

mod common;

use common::cli::{count, output, run_against, scenario_file, summary, text, thumper};
use thumper::metrics::summary::Summary;

/// Load tests share two cores: run them one at a time so each gets the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DATASET: &str = "[dataset]\ncommunities = 20\nprofiles_per_community = 10\n";

fn per_second(s: &Summary, counter: &str) -> Vec<u64> {
    s.time_series
        .iter()
        .map(|i| i.counters.get(counter).copied().unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ramp_from_zero_offers_load_from_its_first_second() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    // 0 → 200/s over 5 s, then 1 s at 200/s: 20, 60, 100, 140, 180, 200 iterations per second,
    // 700 in all. Stepping by 1/rate(t) offered one iteration and then nothing until the ramp
    // ended.
    let body = format!(
        "name = \"ramp\"\nexecutor = \"ramping-arrival-rate\"\nstart_rate = 0\npre_allocated_vus = 10\nmax_vus = 50\n{DATASET}\
         [[stages]]\nduration = \"5s\"\ntarget = 200\n[[stages]]\nduration = \"1s\"\ntarget = 200\n\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n"
    );
    let file = scenario_file(tmp.path(), "ramp", &body);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    // Every planned iteration was offered: started or dropped, none lost to the scheduler.
    assert_eq!(
        count(&s, "iterations") + count(&s, "dropped_iterations"),
        700,
        "{}",
        text(&o)
    );
    let got = per_second(&s, "iterations");
    let planned = [20u64, 60, 100, 140, 180, 200];
    for (second, want) in planned.iter().enumerate() {
        let have = got.get(second).copied().unwrap_or(0) as f64;
        // Iterations are counted when they finish, a little after they start: allow a few
        // to fall into the next second.
        let slack = *want as f64 * 0.1 + 5.0;
        assert!(
            (have - *want as f64).abs() <= slack,
            "second {second}: {have} iterations, planned {want} (all: {got:?})"
        );
    }
    stack.stop().await.unwrap();
}

/// A tenant-scoped read that divides by zero about one time in twenty.
const FLAKY: &str =
    "SELECT community_id, 1 / (CASE WHEN random() < 0.05 THEN 0 ELSE 1 END) FROM profiles LIMIT 1";

fn flaky_scenario(protocol: &str) -> String {
    format!(
        "name = \"flaky-{protocol}\"\nexecutor = \"constant-vus\"\nvus = 10\nduration = \"3s\"\nthink_time = \"2ms\"\nprotocol = \"{protocol}\"\n{DATASET}\
         [[queries]]\nname = \"flaky\"\nsql = \"{FLAKY}\"\ntenant_scoped = true\n"
    )
}

/// The failed share of queries and the error classes seen.
fn error_share(s: &Summary) -> (f64, Vec<String>) {
    let errors = s.counter("query_errors").expect("query_errors counter");
    let total = count(s, "queries") + errors.count;
    assert!(total > 200, "only {total} queries ran");
    (
        errors.count as f64 / total as f64,
        errors.by_class.keys().cloned().collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_statement_costs_one_error_on_every_protocol() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    for protocol in ["simple", "extended"] {
        let file = scenario_file(tmp.path(), protocol, &flaky_scenario(protocol));
        let reports = tmp.path().join(protocol);
        let o = output(run_against(&stack, &file, &reports, &[]));
        let (_, s) = summary(&reports);
        let (share, classes) = error_share(&s);
        // 5 % injected; an aborted transaction left open made 98 % fail with 25P02.
        assert!(
            (0.02..0.10).contains(&share),
            "{protocol}: {:.1} % of queries failed, classes {classes:?}\n{}",
            share * 100.0,
            text(&o)
        );
        assert_eq!(
            classes,
            ["22012 division_by_zero"],
            "{protocol}: only division by zero"
        );
        assert_eq!(count(&s, "tenant_violations"), 0, "{protocol}");
    }
    // PgBouncer holds no server connection for a client: nothing was left pinned mid-transaction.
    let console = common::connect(&stack.urls().pgbouncer_admin_url).await;
    let rows = console.simple_query("SHOW POOLS").await.unwrap();
    for row in rows.iter().filter_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    }) {
        assert_eq!(row.get("sv_active"), Some("0"), "a server stayed assigned");
    }
    // Named statements need a session of their own: straight to PostgreSQL.
    let file = scenario_file(tmp.path(), "prepared", &flaky_scenario("prepared"));
    let reports = tmp.path().join("prepared");
    let mut c = thumper();
    c.arg("run")
        .arg(&file)
        .args(["--target", &stack.urls().admin_database_url])
        .args(["--pool-mode", "none", "--quiet", "--report-dir"])
        .arg(&reports);
    let o = output(c);
    let (_, s) = summary(&reports);
    let (share, classes) = error_share(&s);
    assert!(
        (0.02..0.10).contains(&share),
        "prepared: {:.1} % failed, {classes:?}\n{}",
        share * 100.0,
        text(&o)
    );
    assert_eq!(classes, ["22012 division_by_zero"]);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simple_protocol_tenant_ends_with_its_query() {
    let _serial = SERIAL.lock().await;
    let stack = common::start(thumper::stack::PgBouncerSettings {
        default_pool_size: 1,
        min_pool_size: 0,
        ..Default::default()
    })
    .await;
    let spec = common::seed_small(&stack).await;
    let workload = thumper::workload::Workload::new(
        &[thumper::scenario::QueryDef {
            name: "tenant".into(),
            sql: "SELECT community_id FROM profiles".into(),
            weight: 1,
            params: vec![],
            tenant_scoped: true,
        }],
        spec,
        thumper::scenario::Protocol::Simple,
    );
    let a = common::connect(&stack.urls().database_url).await;
    let b = common::connect(&stack.urls().database_url).await;
    let mut state = thumper::workload::ConnectionState::default();
    let draw = thumper::workload::Draw {
        community: 1,
        profile: 0,
        row: None,
    };
    let outcome = workload.execute(&a, &mut state, 0, draw).await.unwrap();
    assert_eq!(outcome.rows, u64::from(spec.profiles_per_community));
    assert_eq!(outcome.tenant_violations, 0);
    // One server connection: client b gets the one a used, and no tenant with it.
    let rows = b
        .query_one("SELECT current_setting('app.current_tenant', true)", &[])
        .await
        .unwrap();
    let tenant: Option<String> = rows.get(0);
    assert!(tenant.unwrap_or_default().is_empty());
    assert_eq!(
        b.query("SELECT 1 FROM profiles", &[]).await.unwrap().len(),
        0
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_model_query_time_leaves_out_connecting_and_pool_waits() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    // Eight VUs take turns on one pooled connection: each waits for the others' queries.
    let body = format!(
        "name = \"pooled\"\nexecutor = \"constant-vus\"\nvus = 8\nduration = \"3s\"\nthink_time = \"0s\"\n{DATASET}\
         [connection]\ntopology = \"pooled\"\npools = 1\npool_size = 1\n\
         [[queries]]\nname = \"sleep\"\nsql = \"SELECT pg_sleep(0.002)\"\n\
         [thresholds]\npool_wait = [\"p(99) < 60000\"]\nquery_duration = [\"p(50) < 60000\"]\n"
    );
    let file = scenario_file(tmp.path(), "pooled", &body);
    let reports = tmp.path().join("pooled");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    let query = s.trend("query_duration").unwrap();
    let wait = s.trend("pool_wait").expect("a pool_wait trend");
    assert!(query.count > 100 && wait.count >= query.count);
    // The query itself takes ~2 ms; the wait for the connection is several queries long.
    assert!(
        wait.p50_us > 3 * query.p50_us,
        "pool wait p50 {} µs, query p50 {} µs",
        wait.p50_us,
        query.p50_us
    );
    assert!(s.thresholds.iter().all(|t| t.observed.is_some()));

    // Per-VU connections: every VU's connect is a connect_duration sample, not query time.
    let body = format!(
        "name = \"per-vu\"\nexecutor = \"constant-vus\"\nvus = 5\nduration = \"2s\"\nthink_time = \"5ms\"\n{DATASET}\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n\
         [thresholds]\nconnect_duration = [\"max < 60000\"]\n"
    );
    let file = scenario_file(tmp.path(), "per-vu", &body);
    let reports = tmp.path().join("per-vu");
    let o = output(run_against(&stack, &file, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    let connect = s
        .trend("connect_duration")
        .expect("a connect_duration trend");
    assert_eq!(connect.count, 5, "one connection per VU");
    stack.stop().await.unwrap();
}
