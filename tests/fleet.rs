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

/// Two instances of a 200/s scenario side by side, each with half the rate: an instance must not
/// judge the fleet's rate on its share (it used to abort after the delay, and `merge` then
/// passed a fleet that had stopped after a fraction of its plan).
#[tokio::test(flavor = "multi_thread")]
async fn instances_leave_a_fleet_wide_rate_to_the_merge() {
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let scenario = RATE.replace("duration = \"3s\"", "duration = \"6s\"").replace(
        "iterations = [\"count < 450\"]",
        "queries = [{ threshold = \"rate > 150\", abort_on_fail = true, delay_abort_eval = \"2s\" }]",
    );
    let file = scenario_file(tmp.path(), "seg", &scenario);
    let dirs: Vec<_> = (0..2).map(|i| tmp.path().join(format!("i{i}"))).collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            spawn(run_against(
                &stack,
                &file,
                dir,
                &["--segment", &format!("{i}/2")],
            ))
        })
        .collect();
    let mut folders = Vec::new();
    for (child, dir) in children.into_iter().zip(&dirs) {
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "an instance ran its share to plan\n{}",
            text(&o)
        );
        let (folder, s) = summary(dir);
        assert_eq!(s.stop_reason, None);
        let t = s.thresholds.iter().find(|t| t.metric == "queries").unwrap();
        assert!(t.not_judged.is_some(), "{t:?}");
        folders.push(folder);
    }
    let out = tmp.path().join("merged");
    let mut c = thumper();
    c.arg("merge").args(&folders).arg("--out").arg(&out);
    let o = output(c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let merged = thumper::report::read_summary(&out.join("summary.json")).unwrap();
    let t = merged
        .thresholds
        .iter()
        .find(|t| t.metric == "queries")
        .unwrap();
    assert!(
        t.ok && t.not_judged.is_none() && t.observed.unwrap() > 150.0,
        "{t:?}"
    );
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

/// Runs `thumper fleet --local N` against `stack` with `extra` flags.
fn local_fleet(
    stack: &thumper::stack::Stack,
    n: u32,
    file: &std::path::Path,
    reports: &std::path::Path,
) -> std::process::Command {
    let urls = stack.urls();
    let mut c = thumper();
    c.args(["fleet", "--local", &n.to_string()])
        .arg(file)
        .args(["--target", &urls.database_url])
        .args(["--admin-url", &urls.admin_database_url])
        .args(["--pgbouncer-admin", &urls.pgbouncer_admin_url])
        .arg("--report-dir")
        .arg(reports)
        .arg("--quiet");
    c
}

/// The one summary.json under an instance folder.
fn instance_summary(
    dir: &std::path::Path,
) -> (std::path::PathBuf, thumper::metrics::summary::Summary) {
    summary(dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_coordinated_workers_match_one_process_and_merge_reproduces_the_fleet() {
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let scenario = RATE.replace("rate = 200", "rate = 300").replace(
        "iterations = [\"count < 450\"]",
        "iterations = [\"count > 0\"]",
    );
    let file = scenario_file(tmp.path(), "fleet", &scenario);

    let single = tmp.path().join("single");
    let o = output(run_against(&stack, &file, &single, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, one) = summary(&single);

    let reports = tmp.path().join("fleet");
    let o = output(local_fleet(&stack, 3, &file, &reports));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (dir, fleet) = summary(&reports);
    // The open model's timetable is split, not multiplied: 900 arrivals either way.
    let offered = |s: &thumper::metrics::summary::Summary| {
        count(s, "iterations") + count(s, "dropped_iterations")
    };
    assert_eq!(offered(&one), 900);
    assert_eq!(offered(&fleet), 900);
    let folders: Vec<_> = (0..3)
        .map(|i| instance_summary(&dir.join(format!("instance-{i}"))))
        .collect();
    let sum: u64 = folders
        .iter()
        .map(|(_, s)| s.trend("query_duration").unwrap().count)
        .sum();
    assert_eq!(fleet.trend("query_duration").unwrap().count, sum);
    assert!(fleet
        .notes
        .iter()
        .any(|n| n.contains("coordinated over NATS")));
    assert!(fleet.metrics.contains_key("fleet_start_skew"));

    // Offline, from the workers' folders: the same numbers.
    let merged = tmp.path().join("merged");
    let mut c = thumper();
    c.arg("merge");
    for (d, _) in &folders {
        c.arg(d);
    }
    c.arg("--out").arg(&merged);
    let o = output(c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let offline = thumper::report::read_summary(&merged.join("summary.json")).unwrap();
    for name in ["iterations", "queries", "query_errors", "tenant_violations"] {
        assert_eq!(count(&offline, name), count(&fleet, name), "{name}");
    }
    let (a, b) = (
        offline.trend("query_duration").unwrap(),
        fleet.trend("query_duration").unwrap(),
    );
    assert_eq!(
        (a.count, a.p50_us, a.p99_us, a.max_us),
        (b.count, b.p50_us, b.p99_us, b.max_us)
    );
    assert_eq!(offline.time_series.len(), fleet.time_series.len());
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_wide_abort_on_fail_stops_every_worker() {
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    // 100/s for 20 s: 2,000 in all, about 667 per worker of three. Only the fleet's sum reaches
    // 1,000, about halfway.
    let scenario = RATE
        .replace("rate = 200", "rate = 100")
        .replace("duration = \"3s\"", "duration = \"20s\"")
        .replace(
            "iterations = [\"count < 450\"]",
            "iterations = [{ threshold = \"count < 1000\", abort_on_fail = true }]",
        );
    let file = scenario_file(tmp.path(), "fleet", &scenario);
    let reports = tmp.path().join("r");
    let o = output(local_fleet(&stack, 3, &file, &reports));
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (dir, s) = summary(&reports);
    assert_eq!(s.verdict, Verdict::Fail);
    let reason = s.stop_reason.clone().unwrap_or_default();
    assert!(reason.contains("fleet-wide"), "{reason}");
    assert!(count(&s, "iterations") + count(&s, "dropped_iterations") < 1900);
    for i in 0..3 {
        let (_, w) = instance_summary(&dir.join(format!("instance-{i}")));
        let reason = w.stop_reason.unwrap_or_default();
        assert!(reason.contains("the fleet stopped"), "worker {i}: {reason}");
    }
    stack.stop().await.unwrap();
}

/// Workers started as a Job's pods are (no console URL): the coordinator polls PgBouncer for the
/// fleet, so a `pgbouncer_cl_waiting` threshold is judged on real readings, not failed for
/// lack of samples.
#[tokio::test(flavor = "multi_thread")]
async fn a_coordinated_fleet_judges_pgbouncer_gauges_its_workers_cannot_read() {
    let stack = common::start_default().await;
    let nats = nats().await;
    let tmp = tempfile::tempdir().unwrap();
    let scenario = RATE.replace(
        "iterations = [\"count < 450\"]",
        "pgbouncer_cl_waiting = [\"max < 1000\"]",
    );
    let file = scenario_file(tmp.path(), "fleet", &scenario);
    let reports = tmp.path().join("co");
    let console = stack.urls().pgbouncer_admin_url.clone();
    let co = spawn(coordinator(
        &stack,
        &file,
        &reports,
        2,
        nats.url(),
        &["--pgbouncer-admin", &console],
    ));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let dir = tmp.path().join(format!("w{i}"));
            spawn(worker(&stack, &file, &dir, &format!("{i}/2"), nats.url()))
        })
        .collect();
    for w in workers {
        let o = w.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let o = co.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, s) = summary(&reports);
    let t = s
        .thresholds
        .iter()
        .find(|t| t.metric == "pgbouncer_cl_waiting")
        .unwrap();
    assert!(t.ok && t.observed.is_some(), "{t:?}");
    assert!(s
        .time_series
        .iter()
        .any(|i| i.gauges.contains_key("pgbouncer_cl_waiting")));
    stack.stop().await.unwrap();
}

/// The pid of the running `thumper run` whose command line holds every one of `parts`.
fn find_process(parts: &[&str]) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        parts
            .iter()
            .all(|p| args.iter().any(|a| a.contains(p)))
            .then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_run_is_named_and_the_fleet_is_interrupted() {
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let scenario = RATE
        .replace("rate = 200", "rate = 50")
        .replace("duration = \"3s\"", "duration = \"60s\"");
    let file = scenario_file(tmp.path(), "fleet", &scenario);
    let reports = tmp.path().join("r");
    let child = spawn(local_fleet(&stack, 3, &file, &reports));
    let marker = reports.to_string_lossy().into_owned();
    // Wait until worker 1 streams (its own report folder's parent exists once it runs).
    let mut pid = None;
    for _ in 0..600 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let loading = std::fs::read_dir(&reports)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("instance-1.log"))
            .and_then(|log| std::fs::metadata(log).ok())
            .is_some();
        if loading {
            pid = find_process(&["run", "1/3", &marker]);
            if pid.is_some() {
                break;
            }
        }
    }
    let pid = pid.expect("worker 1/3 runs");
    // Let it load for a few seconds, then kill it without a chance to report.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let (dir, s) = summary(&reports);
    assert_eq!(s.verdict, Verdict::Interrupted);
    let reason = s.stop_reason.clone().unwrap_or_default();
    assert!(reason.contains("worker 1/3"), "{reason}");
    // What worker 1 streamed before it died is kept.
    assert!(count(&s, "iterations") > 0);
    assert!(dir.join("report.html").is_file() && dir.join("latency.hlog").is_file());
    for i in [0, 2] {
        let (_, w) = instance_summary(&dir.join(format!("instance-{i}")));
        assert_eq!(w.verdict, Verdict::Interrupted, "worker {i}");
    }
    stack.stop().await.unwrap();
}

/// A worker whose wall clock is 1 s behind the coordinator's (libfaketime) still starts at the
/// coordinator's instant: the skew stays far below the second, and a note names its offset.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_clock_is_a_second_behind_starts_with_the_others_and_is_named() {
    let stack = common::start_default().await;
    let nats = nats().await;
    let tmp = tempfile::tempdir().unwrap();
    let scenario = RATE.replace(
        "iterations = [\"count < 450\"]",
        "iterations = [\"count > 0\"]",
    );
    let file = scenario_file(tmp.path(), "fleet", &scenario);
    let reports = tmp.path().join("co");
    let co = spawn(coordinator(&stack, &file, &reports, 2, nats.url(), &[]));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let dir = tmp.path().join(format!("w{i}"));
            let mut c = worker(&stack, &file, &dir, &format!("{i}/2"), nats.url());
            if i == 1 {
                c.env("LD_PRELOAD", FAKETIME)
                    .env("FAKETIME", "-1s")
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                    .env("FAKETIME_NO_CACHE", "1");
            }
            spawn(c)
        })
        .collect();
    for w in workers {
        let o = w.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let o = co.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // When each really started: its own report's started_at, worker 1's moved by the 1 s the
    // test set its clock back by.
    let real_start = |i: usize| {
        let (_, w) = summary(&tmp.path().join(format!("w{i}")));
        let at = time::OffsetDateTime::parse(
            &w.started_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        at + time::Duration::seconds(i as i64)
    };
    let real_skew_ms = (real_start(1) - real_start(0)).abs().as_seconds_f64() * 1e3;
    assert!(
        real_skew_ms < 250.0,
        "worker 1 really started {real_skew_ms:.1} ms off"
    );
    let (_, s) = summary(&reports);
    let Some(thumper::metrics::summary::Metric::Gauge(skew)) = s.metrics.get("fleet_start_skew")
    else {
        panic!("no fleet_start_skew: {:?}", s.notes);
    };
    // Between "aligned" and "1 s off": a behaviour bound, not a speed one.
    assert!(
        skew.last < 250.0,
        "skew {} ms; notes {:?}",
        skew.last,
        s.notes
    );
    let note = s
        .notes
        .iter()
        .find(|n| n.starts_with("worker 1/2") && n.contains("behind the coordinator's"))
        .unwrap_or_else(|| panic!("no clock note: {:?}", s.notes));
    let ms: f64 = note
        .split("its clock is ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!((750.0..1250.0).contains(&ms), "{note}");
    let (_, w1) = summary(&tmp.path().join("w1"));
    assert!(
        w1.notes
            .iter()
            .any(|n| n.contains("ms behind the coordinator's")),
        "the worker's own report names its offset: {:?}",
        w1.notes
    );
    assert!(
        !s.notes.iter().any(|n| n.starts_with("worker 0/2")),
        "{:?}",
        s.notes
    );
    stack.stop().await.unwrap();
}

/// libfaketime's preload library (apt-get install libfaketime).
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A `nats-server` on a free loopback port for one test.
async fn nats() -> thumper::stack::nats::NatsServer {
    thumper::stack::nats::NatsServer::start()
        .await
        .expect("nats-server starts (apt-get install nats-server)")
}

/// `thumper fleet coordinate` for `workers` workers over `nats`.
fn coordinator(
    stack: &thumper::stack::Stack,
    file: &std::path::Path,
    reports: &std::path::Path,
    workers: u32,
    nats: &str,
    extra: &[&str],
) -> std::process::Command {
    let urls = stack.urls();
    let mut c = thumper();
    c.args(["fleet", "coordinate"])
        .arg(file)
        .args(["--workers", &workers.to_string(), "--nats", nats])
        .args(["--fleet-id", "t"])
        .args(["--target", &urls.database_url])
        .args(["--admin-url", &urls.admin_database_url])
        .arg("--report-dir")
        .arg(reports)
        .arg("--quiet")
        .args(extra);
    c
}

/// A worker `I/N` of fleet `t` over `nats`, as a Job's pod runs it: no owner URL.
fn worker(
    stack: &thumper::stack::Stack,
    file: &std::path::Path,
    reports: &std::path::Path,
    segment: &str,
    nats: &str,
) -> std::process::Command {
    let mut c = thumper();
    c.arg("run")
        .arg(file)
        .args([
            "--segment",
            segment,
            "--fleet-nats",
            nats,
            "--fleet-id",
            "t",
        ])
        .args(["--target", &stack.urls().database_url])
        .arg("--report-dir")
        .arg(reports)
        .arg("--quiet")
        .env_remove("ADMIN_DATABASE_URL");
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_missing_at_the_ready_deadline_is_named_and_nothing_loads() {
    let stack = common::start_default().await;
    let nats = nats().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "fleet", RATE);
    let reports = tmp.path().join("r");
    let coord = spawn(coordinator(
        &stack,
        &file,
        &reports,
        2,
        nats.url(),
        &["--ready-timeout", "4s"],
    ));
    // Only worker 0 of 2 comes.
    let w0 = spawn(worker(
        &stack,
        &file,
        &tmp.path().join("w0"),
        "0/2",
        nats.url(),
    ));
    let o = coord.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1/2") && err.contains("did not report ready"),
        "{err}"
    );
    // The worker that came is told and ends without load.
    let o = w0.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cancelled"),
        "{}",
        text(&o)
    );
    let folders = std::fs::read_dir(tmp.path().join("w0")).map_or(0, |d| d.count());
    assert_eq!(folders, 0, "no load, no report folder");
    nats.stop().await;
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_keep_their_reports_when_the_coordinator_dies() {
    let stack = common::start_default().await;
    let nats = nats().await;
    let tmp = tempfile::tempdir().unwrap();
    let scenario = RATE
        .replace("rate = 200", "rate = 40")
        .replace("duration = \"3s\"", "duration = \"12s\"");
    let file = scenario_file(tmp.path(), "fleet", &scenario);
    let mut coord = spawn(coordinator(
        &stack,
        &file,
        &tmp.path().join("r"),
        2,
        nats.url(),
        &[],
    ));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            spawn(worker(
                &stack,
                &file,
                &tmp.path().join(format!("w{i}")),
                &format!("{i}/2"),
                nats.url(),
            ))
        })
        .collect();
    // Once the load runs, the coordinator goes without a word.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    coord.kill().unwrap();
    let _ = coord.wait();
    for (i, w) in workers.into_iter().enumerate() {
        let o = w.wait_with_output().unwrap();
        assert!(
            matches!(o.status.code(), Some(0 | 99)),
            "worker {i}: {}",
            text(&o)
        );
        let (dir, s) = summary(&tmp.path().join(format!("w{i}")));
        assert!(count(&s, "iterations") > 0);
        assert!(dir.join("latency.hlog").is_file(), "worker {i}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("thumper merge"),
            "worker {i} says how to judge the fleet: {}",
            text(&o)
        );
    }
    nats.stop().await;
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_waits_for_a_nats_server_that_comes_up_after_it() {
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let scenario = RATE.replace(
        "iterations = [\"count < 450\"]",
        "iterations = [\"count > 0\"]",
    );
    let file = scenario_file(tmp.path(), "fleet", &scenario);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    // As pods of one apply: the fleet first, its NATS server a little later.
    let coord = spawn(coordinator(
        &stack,
        &file,
        &tmp.path().join("r"),
        1,
        &url,
        &[],
    ));
    let w = spawn(worker(&stack, &file, &tmp.path().join("w0"), "0/1", &url));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let nats = thumper::stack::nats::NatsServer::start_on(port)
        .await
        .expect("nats-server starts");
    let o = coord.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = w.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    nats.stop().await;
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_fleet_keeps_to_its_ready_timeout() {
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "fleet", RATE);
    let reports = tmp.path().join("r");
    // No worker can check its target and report ready within a millisecond.
    let mut c = local_fleet(&stack, 2, &file, &reports);
    c.args(["--ready-timeout", "1ms"]);
    let o = output(c);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ready"),
        "{}",
        text(&o)
    );
    stack.stop().await.unwrap();
}
