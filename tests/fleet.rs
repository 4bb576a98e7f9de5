//! Fleet runs as local processes: instances of one scenario (`--segment I/N`) against one real
//! stack add up to the scenario, and `thumper merge` judges the fleet on its merged data.

mod common;

use common::cli::{count, output, run_against, scenario_file, spawn, summary, text, thumper};
use thumper::metrics::summary::Verdict;

/// 200 iterations a second for 3 s: 600 in all, 300 per instance of two. The threshold holds
/// for each instance alone and breaks only on the sum.
const RATE: &str = r#"
name = "fleet"
executor = "constant-arrival-rate"
rate = 200
duration = "3s"
pre_allocated_vus = 10
max_vus = 40
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
[thresholds]
iterations = ["count < 450"]
tenant_violations = ["count == 0"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_add_up_to_the_scenario_and_merge_judges_the_sum() {
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "fleet", RATE);
    let dirs: Vec<_> = (0..2).map(|i| tmp.path().join(format!("i{i}"))).collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let segment = format!("{i}/2");
            spawn(run_against(&stack, &file, dir, &["--segment", &segment]))
        })
        .collect();
    let mut instances = Vec::new();
    for (child, dir) in children.into_iter().zip(&dirs) {
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "each instance alone passes\n{}",
            text(&o)
        );
        let (folder, s) = summary(dir);
        instances.push((folder, s));
    }
    // Each instance offered exactly its share of the timetable.
    for (_, s) in &instances {
        assert_eq!(count(s, "iterations") + count(s, "dropped_iterations"), 300);
        assert!(s.notes.iter().any(|n| n.contains("fleet run")));
    }
    let out = tmp.path().join("merged");
    let mut c = thumper();
    c.arg("merge")
        .args(instances.iter().map(|(folder, _)| folder))
        .arg("--out")
        .arg(&out);
    let o = output(c);
    assert_eq!(
        o.status.code(),
        Some(99),
        "the sum breaks the threshold\n{}",
        text(&o)
    );
    let merged = thumper::report::read_summary(&out.join("summary.json")).unwrap();
    assert_eq!(merged.verdict, Verdict::Fail);
    assert_eq!(
        count(&merged, "iterations") + count(&merged, "dropped_iterations"),
        600
    );
    let sum: u64 = instances
        .iter()
        .map(|(_, s)| s.trend("query_duration").unwrap().count)
        .sum();
    assert_eq!(merged.trend("query_duration").unwrap().count, sum);
    let failed: Vec<_> = merged.thresholds.iter().filter(|t| !t.ok).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].metric, "iterations");
    // One line of the breakdown per instance, named by its segment; no worker note repeated.
    let segments: Vec<&str> = merged
        .instances
        .iter()
        .map(|i| i.segment.as_str())
        .collect();
    assert_eq!(segments, ["0/2", "1/2"]);
    assert_eq!(
        merged.instances.iter().map(|i| i.iterations).sum::<u64>(),
        count(&merged, "iterations")
    );
    assert!(!merged.notes.iter().any(|n| n.contains("of a fleet run")));
    // Every database run measures its own generator.
    for (_, s) in &instances {
        assert!(
            s.metrics.contains_key("generator_rss_mb"),
            "{:?}",
            s.metrics.keys()
        );
    }
    assert!(merged.instances.iter().all(|i| i.max_rss_mb.is_some()));
    assert!(out.join("report.html").is_file() && out.join("junit.xml").is_file());
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_fleet_is_set_up_once_and_judged_as_one_run() {
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "fleet", RATE);
    let reports = tmp.path().join("r");
    let urls = stack.urls();
    let mut c = thumper();
    c.args(["fleet", "--local", "2"])
        .arg(&file)
        .args(["--target", &urls.database_url])
        .args(["--admin-url", &urls.admin_database_url])
        .args(["--pgbouncer-admin", &urls.pgbouncer_admin_url])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--quiet");
    let o = output(c);
    // Each worker alone stays under the iteration threshold; the fleet does not.
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (dir, s) = summary(&reports);
    assert_eq!(
        count(&s, "iterations") + count(&s, "dropped_iterations"),
        600
    );
    assert!(matches!(
        s.metrics.get("fleet_start_skew"),
        Some(thumper::metrics::summary::Metric::Gauge(g)) if g.samples == 1
    ));
    assert_eq!(s.instances.len(), 2, "the fleet breaks down by instance");
    for i in 0..2 {
        assert!(dir.join(format!("instance-{i}")).is_dir());
    }
    assert!(dir.join("report.html").is_file());
    stack.stop().await.unwrap();
}
