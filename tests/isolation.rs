//! The tenant check can fail: when isolation really breaks mid-run, the run counts the other
//! tenants' rows as `tenant_violations` and fails on its tenant threshold.

mod common;

use std::time::Duration;

use common::cli::{count, run_against, scenario_file, spawn, summary, text};
use thumper::metrics::summary::Verdict;

/// A tenant-scoped query that leaves the tenant filter to RLS, as application code that forgets
/// it would: with RLS on it returns the tenant's rows, with RLS off the first rows of any tenant.
const LEAKY: &str = r#"
name = "isolation"
executor = "constant-vus"
vus = 2
duration = "6s"
think_time = "10ms"
[dataset]
communities = 10
profiles_per_community = 5
[[queries]]
name = "tenant"
sql = "SELECT community_id FROM profiles LIMIT 5"
tenant_scoped = true
[thresholds]
tenant_violations = ["count == 0"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn rls_switched_off_mid_run_fails_the_tenant_threshold() {
    let stack = common::start_default().await;
    let urls = stack.urls().clone();
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "isolation", LEAKY);
    let reports = tmp.path().join("r");
    let child = spawn(run_against(&stack, &file, &reports, &[]));

    // Wait until the load is running through PgBouncer (well past the preflight's few
    // transactions), then let a full second of it pass with isolation intact.
    let console =
        thumper::metrics::pgbouncer::connect(&urls.pgbouncer_admin_url, Duration::from_secs(5))
            .await
            .unwrap();
    let mut polls = 0;
    loop {
        let s = thumper::metrics::pgbouncer::snapshot(&console, Some("arrakis"))
            .await
            .unwrap();
        if s.total_xact_count >= 100.0 {
            break;
        }
        polls += 1;
        assert!(polls < 600, "the load never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The owner switches RLS off: the application role now sees every tenant's profiles.
    let owner = common::connect(&urls.admin_database_url).await;
    owner
        .batch_execute("ALTER TABLE profiles DISABLE ROW LEVEL SECURITY")
        .await
        .unwrap();

    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (_, s) = summary(&reports);
    assert_eq!(s.verdict, Verdict::Fail);
    let violations = count(&s, "tenant_violations");
    assert!(violations > 0, "no tenant violation counted\n{}", text(&o));
    let threshold = s
        .thresholds
        .iter()
        .find(|t| t.metric == "tenant_violations")
        .expect("the tenant threshold is in the summary");
    assert!(!threshold.ok);
    assert_eq!(threshold.observed, Some(violations as f64));
    // Isolation held until the owner broke it: a second of load with no violation comes first.
    let per_second = |i: &thumper::metrics::summary::Interval, name: &str| {
        i.counters.get(name).copied().unwrap_or(0)
    };
    let first_violation = s
        .time_series
        .iter()
        .position(|i| per_second(i, "tenant_violations") > 0)
        .expect("an interval with violations");
    assert!(
        s.time_series[..first_violation]
            .iter()
            .any(|i| per_second(i, "queries") > 0),
        "violations from the first second of load on: {:?}",
        s.time_series
            .iter()
            .map(|i| (per_second(i, "queries"), per_second(i, "tenant_violations")))
            .collect::<Vec<_>>()
    );
    stack.stop().await.unwrap();
}
