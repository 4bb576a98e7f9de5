//! `thumper pgbench` end to end on a real stack: the builtins from their pgbench text on every
//! protocol (transactions reported = rows added to pgbench_history), `\gset` / `\aset`,
//! pipelines, failed transactions and a threshold on them, and bad scripts refused before load.

mod common;

use std::path::Path;

use common::cli::{output, summary, text, thumper};
use thumper::stack::Stack;

fn pgbench(stack: &Stack, reports: &Path, args: &[&str]) -> std::process::Command {
    pgbench_at(stack, &stack.urls().database_url, reports, args)
}

/// `thumper pgbench` against `target` (the owner's URL beside it for -i and the vacuum).
fn pgbench_at(stack: &Stack, target: &str, reports: &Path, args: &[&str]) -> std::process::Command {
    let urls = stack.urls();
    let mut c = thumper();
    c.arg("pgbench")
        .args(["--target", target])
        .args(["--admin-url", &urls.admin_database_url])
        .arg("--report-dir")
        .arg(reports)
        .args(args);
    c
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn count(stack: &Stack, table: &str) -> i64 {
    let c = common::connect(&stack.urls().admin_database_url).await;
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_transactions_equal_the_rows_added_to_the_history_on_every_protocol() {
    let stack = common::start_default().await;
    let dir = tempfile::tempdir().unwrap();

    let o = output(pgbench(&stack, dir.path(), &["-i", "-s", "1"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(count(&stack, "pgbench_accounts").await, 100_000);
    assert_eq!(count(&stack, "pgbench_branches").await, 1);
    assert_eq!(count(&stack, "pgbench_tellers").await, 10);

    // Through PgBouncer (transaction pooling): simple and extended. Prepared goes straight to
    // PostgreSQL, where named statements live as long as the connection.
    let urls = stack.urls();
    let runs: [(&str, &str, &[&str]); 3] = [
        ("simple", &urls.database_url, &[]),
        ("extended", &urls.database_url, &[]),
        (
            "prepared",
            &urls.admin_database_url,
            &["--pool-mode", "none"],
        ),
    ];
    for (protocol, target, extra) in runs {
        let reports = dir.path().join(protocol);
        let mut c = pgbench_at(
            &stack,
            target,
            &reports,
            &["-c", "3", "-t", "20", "-M", protocol, "-r"],
        );
        c.args(extra);
        let o = output(c);
        assert_eq!(o.status.code(), Some(0), "{protocol}: {}", text(&o));
        let out = stdout(&o);
        assert!(
            out.contains("transaction type: <builtin: TPC-B (sort of)>"),
            "{out}"
        );
        assert!(out.contains(&format!("query mode: {protocol}")), "{out}");
        assert!(
            out.contains("number of transactions actually processed: 60/60"),
            "{out}"
        );
        assert!(out.contains("tps = "), "{out}");
        assert!(out.contains("latency average = "), "{out}");
        assert!(out.contains("UPDATE pgbench_tellers SET tbalance"), "{out}");
        // pgbench empties the history before a run: it now holds this run's transactions.
        assert_eq!(count(&stack, "pgbench_history").await, 60, "{protocol}");
        let (_, s) = summary(&reports);
        assert_eq!(s.trend("iteration_duration").unwrap().count, 60);
        // Each statement is a trend of its own, tagged with the script and its line.
        let update = s.trend("query_duration{query:tpcb-like/6}").unwrap();
        assert_eq!(update.count, 60, "{protocol}");
        assert_eq!(common::cli::count(&s, "queries"), 60 * 7);
        // The server's account of every statement matches thumper's: pgbench's `:var` as `$n`
        // (or as literals under the simple protocol; the server normalises both) finds it.
        let server = s.server.as_ref().expect("a server section");
        let counts: Vec<(&str, u64, u64)> = server
            .queries
            .iter()
            .map(|q| (q.query.as_str(), q.server_calls, q.client_calls))
            .collect();
        assert_eq!(counts.len(), 7, "{protocol}: {counts:?}");
        for (query, server_calls, client_calls) in &counts {
            // BEGIN (line 5) and END (line 11) as named prepared statements: PostgreSQL 15
            // counts them once per connection, and a note says so.
            let control = ["tpcb-like/5", "tpcb-like/11"].contains(query);
            let expected = if protocol == "prepared" && control {
                3
            } else {
                60
            };
            assert_eq!(
                (*server_calls, *client_calls),
                (expected, 60),
                "{protocol} {query}: {counts:?}"
            );
        }
        let control_notes = s
            .notes
            .iter()
            .filter(|n| n.contains("counts a transaction-control statement"))
            .count();
        assert_eq!(
            control_notes,
            if protocol == "prepared" { 2 } else { 0 },
            "{:#?}",
            s.notes
        );
        assert!(s.trend("server_time{query:tpcb-like/6}").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_store_results_pipeline_and_fail_transactions_as_pgbench_does() {
    let stack = common::start_default().await;
    let dir = tempfile::tempdir().unwrap();
    let owner = common::connect(&stack.urls().admin_database_url).await;
    let app_role = stack
        .urls()
        .database_url
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .get_user()
        .unwrap()
        .to_owned();
    owner
        .batch_execute(&format!(
            "CREATE TABLE script_out(client int, v numeric, w text);
             GRANT ALL ON script_out TO \"{app_role}\";"
        ))
        .await
        .unwrap();

    // Extended protocol: \gset of an int and a numeric, \if on a stored value, a pipeline.
    let store = dir.path().join("store.sql");
    std::fs::write(
        &store,
        "SELECT 41 + 1 AS answer, 2.50::numeric AS price \\gset p_\n\
         \\if :p_answer = 42\n\
         \\set v :p_answer * 2\n\
         \\else\n\
         \\set v -1\n\
         \\endif\n\
         \\startpipeline\n\
         INSERT INTO script_out VALUES (:client_id, :v, 'a');\n\
         INSERT INTO script_out VALUES (:client_id, :p_price, 'b');\n\
         \\endpipeline\n",
    )
    .unwrap();
    // Simple protocol: \aset over a compound statement.
    let aset = dir.path().join("aset.sql");
    std::fs::write(
        &aset,
        "SELECT 84 AS v \\; SELECT 2.50 AS price \\aset\n\
         INSERT INTO script_out VALUES (:client_id, :v, 'a');\n\
         INSERT INTO script_out VALUES (:client_id, :price, 'b');\n",
    )
    .unwrap();
    for (protocol, script) in [("extended", &store), ("simple", &aset)] {
        owner.batch_execute("TRUNCATE script_out").await.unwrap();
        let reports = dir.path().join(protocol);
        let path = script.to_str().unwrap();
        let args = ["-n", "-c", "2", "-t", "5", "-M", protocol, "-f", path];
        let o = output(pgbench(&stack, &reports, &args));
        assert_eq!(o.status.code(), Some(0), "{protocol}: {}", text(&o));
        let out = stdout(&o);
        assert!(
            out.contains("number of failed transactions: 0 (0.000%)"),
            "{out}"
        );
        let rows = owner
            .query("SELECT v::text, w FROM script_out ORDER BY w", &[])
            .await
            .unwrap();
        let rows: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(rows.len(), 20, "{protocol}: {rows:?}");
        assert_eq!(rows[0], ("84".to_string(), "a".to_string()), "{protocol}");
        assert_eq!(
            rows[19],
            ("2.50".to_string(), "b".to_string()),
            "{protocol}"
        );
    }
    // A pipeline needs an extended protocol, as in pgbench: refused before any load.
    let o = output(pgbench(
        &stack,
        dir.path(),
        &["-M", "simple", "-f", store.to_str().unwrap()],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pipeline"),
        "{}",
        text(&o)
    );

    // \gset on no row fails the transaction, as in pgbench; a threshold on failures fails the
    // run (exit 99) and every transaction is counted failed.
    let failing = dir.path().join("none.sql");
    std::fs::write(
        &failing,
        "SELECT 1 AS one WHERE false \\gset\nSELECT :one;\n",
    )
    .unwrap();
    let reports = dir.path().join("failing");
    let o = output(pgbench(
        &stack,
        &reports,
        &[
            "-n",
            "-c",
            "2",
            "-t",
            "3",
            "-f",
            failing.to_str().unwrap(),
            "--threshold",
            "failed_iterations: count == 0",
        ],
    ));
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    assert!(
        stdout(&o).contains("number of failed transactions: 6 (100.000%)"),
        "{}",
        text(&o)
    );
    let (_, s) = summary(&reports);
    assert_eq!(common::cli::count(&s, "failed_iterations"), 6);
    let by_class = &s.counter("query_errors").unwrap().by_class;
    assert!(
        by_class
            .keys()
            .any(|k| k.contains("expected one row, got 0")),
        "{by_class:?}"
    );
    // The statement after the failing one never ran.
    assert!(s
        .trend("query_duration{query:none/2}")
        .is_none_or(|t| t.count == 0));
}

#[test]
fn a_bad_script_is_refused_before_any_load_with_its_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sql");
    std::fs::write(&bad, "\\set a 1\n\\set b random(1, \n").unwrap();
    let shell = dir.path().join("shell.sql");
    std::fs::write(&shell, "\\shell echo hi\n").unwrap();
    // An unreachable target: refused as bad input (2), not as a failed connection (1).
    for (file, expected) in [(&bad, "bad.sql:2:"), (&shell, "shell.sql:1")] {
        let o = output({
            let mut c = thumper();
            c.args(["pgbench", "--target", "postgresql://u@127.0.0.1:1/db", "-f"])
                .arg(file);
            c
        });
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("starting"), "{err}");
    }
    let o = output({
        let mut c = thumper();
        c.args([
            "pgbench",
            "-M",
            "fast",
            "--target",
            "postgresql://u@127.0.0.1:1/db",
        ]);
        c
    });
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected simple, extended or prepared"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zipfian_tenant_choice_makes_a_few_communities_carry_the_load_and_says_how_much() {
    let stack = common::start_default().await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = |tenants: &str| {
        format!(
            r#"
name = "skew"
executor = "constant-vus"
vus = 4
duration = "3s"
think_time = "0s"
{tenants}
[dataset]
communities = 100
profiles_per_community = 5
[[queries]]
name = "tenant"
sql = "SELECT community_id FROM profiles WHERE community_id = $1 LIMIT 5"
params = ["community_id"]
tenant_scoped = true
"#
        )
    };
    let mut shares = Vec::new();
    for (name, tenants) in [
        ("uniform", ""),
        (
            "zipfian",
            "[tenants]\ndistribution = \"zipfian\"\nparameter = 1.5\nseed = 3",
        ),
    ] {
        let file = common::cli::scenario_file(dir.path(), name, &scenario(tenants));
        let reports = dir.path().join(format!("r-{name}"));
        let o = output(common::cli::run_against(&stack, &file, &reports, &[]));
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        let (_, s) = summary(&reports);
        assert_eq!(common::cli::count(&s, "tenant_violations"), 0);
        let gauge = |metric: &str| match s.metrics.get(metric) {
            Some(thumper::metrics::summary::Metric::Gauge(g)) => g.last,
            other => panic!("{metric}: {other:?}"),
        };
        let (top1, top10) = (
            gauge("tenant_share_top1pct"),
            gauge("tenant_share_top10pct"),
        );
        assert!(top10 >= top1, "{name}: {top1} {top10}");
        assert!(
            s.notes
                .iter()
                .any(|n| n.starts_with(&format!("tenants drawn {name}"))),
            "{:?}",
            s.notes
        );
        shares.push(top1);
    }
    // Uniform over 100 communities: the busiest one has a few percent of the draws. Zipfian
    // with s = 1.5: the first has 1/ζ(1.5) over 100 terms, about 41 %.
    assert!(shares[0] < 10.0, "uniform: {shares:?}");
    assert!((30.0..55.0).contains(&shares[1]), "zipfian: {shares:?}");
}
