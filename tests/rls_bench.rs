//! `thumper rls-bench` end to end on its own embedded stack, kept small: one size of 1,000
//! profiles, one-second latency phases, five EXPLAIN ANALYZE samples. Nothing here asserts a
//! time; the buffers a plan touches are structural and are asserted instead.

mod common;

use common::cli::{output, summary, text, thumper};
use thumper::metrics::summary::Metric;

fn gauge(s: &thumper::metrics::summary::Summary, key: &str) -> f64 {
    match s.metrics.get(key) {
        Some(Metric::Gauge(g)) => g.last,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn measures_every_query_each_way_and_gates_on_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let mut c = thumper();
    c.args([
        "rls-bench",
        "--sizes",
        "1k",
        "--duration",
        "1s",
        "--rate",
        "60",
        "--samples",
        "5",
        "--seed-or",
        "--quiet",
        // Structural, so it fails for certain: a statement touches at least one buffer.
        "--threshold",
        "rls_buffers{query:tenant,size:1k,policy:seed-or}: max < 1",
        "--threshold",
        "rls_overhead_pct{query:lookup}: max < 1e9",
        "--report-dir",
    ])
    .arg(&reports);
    let o = output(c);
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("lookup at 1k profiles, shipped policy: server"),
        "{stdout}"
    );
    // Beside the EXPLAIN ANALYZE figures: the server's own time per call under load.
    assert!(
        stdout.contains("per call over ") && stdout.contains("under load (pg_stat_statements)"),
        "{stdout}"
    );

    let (dir, s) = summary(&reports);
    let results: Vec<(&str, bool)> = s
        .thresholds
        .iter()
        .map(|t| (t.metric.as_str(), t.ok))
        .collect();
    assert_eq!(
        results,
        [
            ("tenant_violations", true),
            ("query_errors", true),
            ("rls_buffers{query:tenant,size:1k,policy:seed-or}", false),
            ("rls_overhead_pct{query:lookup}", true),
        ]
    );
    for (query, ways) in [
        ("tenant", &["rls", "bypass", "seed-or"][..]),
        ("lookup", &["rls", "bypass", "seed-or"][..]),
        ("write", &["rls", "bypass"][..]),
    ] {
        for way in ways {
            let trend = s
                .trend(&format!("query_duration{{query:{query}/1k/{way}}}"))
                .unwrap_or_else(|| panic!("{query}/{way}: no latency trend"));
            assert!(trend.count > 0 && !trend.histogram.is_empty());
            assert!(
                gauge(
                    &s,
                    &format!("rls_server_us{{query:{query},size:1k,policy:{way}}}")
                ) > 0.0
            );
        }
        assert!(s
            .metrics
            .contains_key(&format!("rls_overhead_us{{query:{query},size:1k}}")));
    }
    // The seed's policy reads the whole table for a tenant; the shipped one reads the index.
    let seed_or = gauge(&s, "rls_buffers{query:tenant,size:1k,policy:seed-or}");
    let shipped = gauge(&s, "rls_buffers{query:tenant,size:1k,policy:rls}");
    assert!(
        seed_or > shipped,
        "seed-or {seed_or} vs shipped {shipped} buffers"
    );
    assert_eq!(s.counter("tenant_violations").map(|c| c.count), Some(0));
    // Every latency phase's decomposition, its rows named as the latency trends are, the
    // server's calls those thumper counted.
    let server = s.server.as_ref().expect("a server section");
    for row in &server.queries {
        assert!(row.server_calls > 0, "{row:?}");
        assert_eq!(row.server_calls, row.client_calls, "{row:?}");
    }
    let names: Vec<&str> = server.queries.iter().map(|q| q.query.as_str()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names.contains(&"write/1k/bypass"), "{names:?}");
    assert!(s.trend("server_time{query:lookup/1k/rls}").is_some());

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("RLS overhead by table size, shipped policy"));
    assert!(html.contains("data-query=\"lookup/1k/rls\""));
    assert!(html.contains("id=\"server\""), "no server section");
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("lookup/1k/bypass"), "{md}");
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"1\""), "{junit}");
}

#[test]
fn bad_sizes_and_thresholds_are_refused_before_anything_starts() {
    for (args, message) in [
        (&["--sizes", "10k,5x"][..], "--sizes: size \"5x\""),
        (&["--sizes", "150"][..], "between 1k and 100m"),
        (
            &["--threshold", "rls_overhead_pct{size:1m}: max < 20"][..],
            "size `1m` is not measured",
        ),
        (
            &["--threshold", "rls_overhead_pct: p(99) < 20"][..],
            "does not apply",
        ),
        // A report folder or summary file that cannot be written is found before the stack
        // starts and seeds, not after the measurements.
        (
            &["--report-dir", "/etc/hostname"][..],
            "--report-dir /etc/hostname",
        ),
        (
            &["--summary-md", "/nonexistent/dir/summary.md"][..],
            "--summary-md /nonexistent/dir/summary.md",
        ),
    ] {
        let mut c = thumper();
        c.arg("rls-bench").args(args);
        let o = output(c);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("starting PostgreSQL"), "{stderr}");
    }
}
