//! Numbers that stay true (issue 19), each against a real PostgreSQL + PgBouncer: a failed
//! query keeps its time in the latency, live outputs see every sample however long some queries
//! take, an open-model run starts with its pre-allocated VUs connected, and `graceful_stop` is
//! one window.

mod common;

use common::cli::{
    count, json_lines, output, run_against, scenario_file, sum_points, summary, text,
};
use thumper::metrics::summary::Summary;

/// Load tests share two cores: run them one at a time so each gets the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DATASET: &str = "[dataset]\ncommunities = 20\nprofiles_per_community = 10\n";

fn threshold_ok(s: &Summary, metric: &str) -> bool {
    s.thresholds
        .iter()
        .find(|t| t.metric == metric)
        .unwrap_or_else(|| panic!("no threshold on {metric}: {:?}", s.thresholds))
        .ok
}

/// errlat.toml time-scaled: one query in five sleeps 0.5 s and then divides by zero.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_query_keeps_its_time_in_the_latency() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"errlat\"\nexecutor = \"constant-arrival-rate\"\nrate = 40\nduration = \"4s\"\npre_allocated_vus = 60\n{DATASET}\
         [[queries]]\nname = \"slowfail\"\nsql = \"SELECT CASE WHEN random() < 0.2 THEN (SELECT count(*) FROM pg_sleep(0.5))::int / 0 ELSE 1 END\"\n\
         [thresholds]\nquery_duration = [\"p(99) < 50\"]\n\"query_duration{{expected_response:true}}\" = [\"p(99) < 400\"]\n\
         \"query_duration{{query:slowfail,expected_response:true}}\" = [\"max < 400\"]\nsuccess_rate = [\"rate > 0.5\"]\n"
    );
    let file = scenario_file(tmp.path(), "errlat", &body);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    let (_, s) = summary(&reports);
    let errors = count(&s, "query_errors");
    let ok = count(&s, "queries");
    assert!(errors > 5 && ok > 50, "{}", text(&o));
    // Every finished query is in query_duration, failed or not, and the failures took 0.5 s.
    let all = s.trend("query_duration").unwrap();
    assert_eq!(all.count, ok + errors, "{}", text(&o));
    assert!(all.max_us >= 500_000, "max {} µs", all.max_us);
    assert!(!threshold_ok(&s, "query_duration"), "{}", text(&o));
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    // Per query too, and in the open model's service time.
    let mine = s.trend("query_duration{query:slowfail}").unwrap();
    assert_eq!(mine.count, ok + errors);
    assert_eq!(s.trend("service_time").unwrap().count, ok + errors);
    // The successes-only view, overall and per query.
    let good = s.trend("query_duration{expected_response:true}").unwrap();
    assert_eq!(good.count, ok);
    assert!(good.max_us < 500_000, "max {} µs", good.max_us);
    let good_q = s
        .trend("query_duration{query:slowfail,expected_response:true}")
        .unwrap();
    assert_eq!(good_q.count, ok);
    assert!(threshold_ok(&s, "query_duration{expected_response:true}"));
    assert!(threshold_ok(
        &s,
        "query_duration{query:slowfail,expected_response:true}"
    ));
    stack.stop().await.unwrap();
}

/// Item 9: VUs that wait 3 s on one query still deliver the fast ones they ran before it.
#[tokio::test(flavor = "multi_thread")]
async fn live_outputs_get_every_sample_while_some_queries_are_slow() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"stall\"\nexecutor = \"constant-vus\"\nvus = 20\nduration = \"6s\"\nthink_time = \"0s\"\n{DATASET}\
         [[queries]]\nname = \"sometimes\"\nsql = \"SELECT pg_sleep(CASE WHEN random() < 0.1 THEN 3 ELSE 0 END)\"\n"
    );
    let file = scenario_file(tmp.path(), "stall", &body);
    let reports = tmp.path().join("r");
    let out = tmp.path().join("points.json");
    let spec = format!("json={}", out.display());
    let o = output(run_against(&stack, &file, &reports, &["--out", &spec]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    let lines = json_lines(&out);
    assert!(count(&s, "queries") > 100, "{}", text(&o));
    for name in ["queries", "iterations"] {
        assert_eq!(sum_points(&lines, name), count(&s, name), "{name}");
    }
    assert!(
        !s.notes
            .iter()
            .any(|n| n.contains("after their interval closed")),
        "{:?}",
        s.notes
    );
    stack.stop().await.unwrap();
}

/// Item 2: 200 iterations/s from t = 0 on 50 pre-allocated VUs drops nothing: the VUs connected
/// before the clock started (each then has 250 ms per query, so only a VU still logging in at
/// t = 0 can make an arrival find none free; the old code dropped the first arrivals that way).
/// The issue's 1,000/s figure is `tests/fixtures/warmup.toml`, a manual run: at that rate a
/// loaded 2-core machine can drop for want of CPU, which is not what this test is about.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_model_run_starts_with_its_vus_connected() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "name = \"warmup\"\nexecutor = \"constant-arrival-rate\"\nrate = 200\nduration = \"3s\"\npre_allocated_vus = 50\n{DATASET}\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n\
         [thresholds]\ndropped_iterations = [\"count == 0\"]\n"
    );
    let file = scenario_file(tmp.path(), "warmup", &body);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    let (_, s) = summary(&reports);
    assert_eq!(count(&s, "dropped_iterations"), 0, "{}", text(&o));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Every VU connected once, and no connect fell inside a query's time.
    assert_eq!(s.trend("connect_duration").map(|t| t.count), Some(50));
    stack.stop().await.unwrap();
}

/// Item 8: queued tickets and in-flight iterations share one graceful_stop window.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_stop_is_one_window() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    // One VU asleep for 10 s; the other tickets queue behind it.
    let body = format!(
        "name = \"grace\"\nexecutor = \"constant-arrival-rate\"\nrate = 2\nduration = \"2s\"\npre_allocated_vus = 1\nmax_vus = 1\non_busy = \"queue\"\ngraceful_stop = \"4s\"\n{DATASET}\
         [[queries]]\nname = \"sleepy\"\nsql = \"SELECT pg_sleep(10)\"\n"
    );
    let file = scenario_file(tmp.path(), "grace", &body);
    let reports = tmp.path().join("r");
    let o = output(run_against(&stack, &file, &reports, &[]));
    let (_, s) = summary(&reports);
    // planned 2 s + graceful_stop 4 s; twice the window would be about 10 s.
    assert!(
        s.duration_s < 2.0 + 4.0 + 2.0,
        "ran {:.1} s\n{}",
        s.duration_s,
        text(&o)
    );
    // Nothing finished: the sleeping one and the queued ones are incomplete.
    assert_eq!(count(&s, "queries"), 0);
    assert_eq!(count(&s, "incomplete_iterations"), 4, "{}", text(&o));
    stack.stop().await.unwrap();
}
