//! What is refused at load, before any load starts (exit 2): a tenant-scoped query whose first
//! column is not the tenant's uuid, and thresholds the configuration can never judge.

mod common;

use std::path::Path;

use common::cli::{count, output, run_against, scenario_file, summary, text, thumper};

/// No report folder under `reports`: the run stopped before any load.
fn no_report(reports: &Path) -> bool {
    std::fs::read_dir(reports).map_or(true, |d| {
        d.filter_map(Result::ok).all(|e| !e.path().is_dir())
    })
}

fn tenant_scenario(dir: &Path, name: &str, protocol: &str, sql: &str) -> std::path::PathBuf {
    scenario_file(
        dir,
        name,
        &format!(
            "name = \"{name}\"\nexecutor = \"constant-vus\"\nvus = 2\nduration = \"1s\"\n\
             protocol = \"{protocol}\"\n\
             [dataset]\nseed = 7\ncommunities = 3\nprofiles_per_community = 5\n\
             [[queries]]\nname = \"{name}\"\ntenant_scoped = true\nsql = \"{sql}\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_check_that_depends_on_the_protocol_is_refused_and_a_uuid_column_counts_alike() {
    let stack = common::start_default().await;
    common::seed_small(&stack).await;
    let dir = tempfile::tempdir().unwrap();

    // `::text` counted every row on extended and none on simple; `count(*)` every row on both.
    for (name, sql) in [
        (
            "as_text",
            "SELECT community_id::text FROM profiles ORDER BY wallet_address LIMIT 5",
        ),
        ("counted", "SELECT count(*) FROM profiles"),
    ] {
        for protocol in ["simple", "extended"] {
            let scenario = tenant_scenario(dir.path(), name, protocol, sql);
            let reports = dir.path().join(format!("reports-{name}-{protocol}"));
            let o = output(run_against(&stack, &scenario, &reports, &[]));
            assert_eq!(o.status.code(), Some(2), "{name} {protocol}: {}", text(&o));
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(
                stderr.contains(&format!("query `{name}`"))
                    && stderr.contains("select community_id as the first column"),
                "{name} {protocol}: {}",
                text(&o)
            );
            assert!(no_report(&reports), "{name} {protocol}: a run started");
        }
    }

    // The tenant's uuid first: no violation on either protocol, rows counted.
    for protocol in ["simple", "extended"] {
        let scenario = tenant_scenario(
            dir.path(),
            "uuid_first",
            protocol,
            "SELECT community_id, wallet_address FROM profiles ORDER BY wallet_address LIMIT 5",
        );
        let reports = dir.path().join(format!("reports-uuid-{protocol}"));
        let o = output(run_against(&stack, &scenario, &reports, &[]));
        assert_eq!(o.status.code(), Some(0), "{protocol}: {}", text(&o));
        let (_, s) = summary(&reports);
        assert!(count(&s, "queries") > 0, "{protocol}: no query ran");
        assert_eq!(count(&s, "tenant_violations"), 0, "{protocol}");
    }

    stack.stop().await.expect("stack stops");
}

/// A `--target` nothing listens on: a run that got as far as the login would exit 1.
const CLOSED_PORT: &str = "postgres://arrakis_app:x@127.0.0.1:1/arrakis";

fn run_closed(scenario: &Path, reports: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = thumper();
    c.arg("run")
        .arg(scenario)
        .args(["--target", CLOSED_PORT])
        .arg("--report-dir")
        .arg(reports)
        .arg("--quiet")
        .args(extra);
    output(c)
}

const CLOSED: &str = "name = \"closed\"\nexecutor = \"constant-vus\"\nvus = 1\nduration = \"1s\"\n\
                      [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n";

const OPEN: &str = "name = \"open\"\nexecutor = \"constant-arrival-rate\"\nrate = 10\n\
                    duration = \"1s\"\npre_allocated_vus = 2\nmax_vus = 2\n\
                    [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n";

#[test]
fn thresholds_this_run_can_never_judge_exit_2_before_the_login() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");

    // The shipped open-model scenario has a pgbouncer_* threshold: without a console it is
    // refused, naming the flag that would make it judgeable.
    let o = run_closed(Path::new("scenarios/steady-rate.toml"), &reports, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("pgbouncer_cl_waiting") && stderr.contains("pass --pgbouncer-admin URL"),
        "{}",
        text(&o)
    );

    let cases = [
        (
            CLOSED,
            "dropped_iterations = [\"count == 0\"]",
            "arrival-rate executor",
        ),
        (
            CLOSED,
            "scheduling_lag = [\"p(99) < 5\"]",
            "arrival-rate executor",
        ),
        (
            CLOSED,
            "pool_wait = [\"p(99) < 5\"]",
            "topology = \"pooled\"",
        ),
    ];
    for (base, threshold, fix) in cases {
        let file = scenario_file(
            dir.path(),
            "unjudgeable",
            &format!("{base}[thresholds]\n{threshold}\n"),
        );
        let o = run_closed(&file, &reports, &[]);
        assert_eq!(o.status.code(), Some(2), "{threshold}: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        let metric = threshold.split(' ').next().unwrap();
        assert!(
            stderr.contains(metric)
                && stderr.contains("can never be judged")
                && stderr.contains(fix),
            "{threshold}: {}",
            text(&o)
        );
    }

    // Judgeable ones go on to the login, which fails on the closed port (exit 1).
    let file = scenario_file(
        dir.path(),
        "judgeable",
        &format!("{OPEN}[thresholds]\ndropped_iterations = [\"count == 0\"]\npgbouncer_cl_waiting = [\"max < 5\"]\n"),
    );
    let admin = [
        "--pgbouncer-admin",
        "postgres://pgbouncer@127.0.0.1:1/pgbouncer",
    ];
    let o = run_closed(&file, &reports, &admin);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(no_report(&reports));
}
