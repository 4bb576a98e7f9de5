//! `thumper rls-check` end to end on a real stack: the shipped migrations pass, and the seed's
//! single-policy shape (`tenant OR admin`) is flagged with the plan line that shows it.

mod common;

use common::cli::{output, text, thumper};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_policies_pass_and_the_seed_or_policy_is_flagged() {
    let stack = common::start_default().await;
    common::seed_small(&stack).await;
    let app = stack.urls().database_url.clone();
    let check = || {
        let mut c = thumper();
        c.args(["rls-check", "--target", &app]);
        c
    };

    let o = output(check());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(
            "4 tables with row-level security (audit_logs, badges, eligibility_rules, profiles)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 tenant-scoped queries explained (tenant, lookup)"),
        "{stdout}"
    );
    // Nothing has run yet: the server's figures are of the load that ran, not the check's.
    assert!(
        stdout.contains("server time per query (pg_stat_statements, since its last reset):\n  tenant: no calls by this role"),
        "{stdout}"
    );

    // The seed's shape: the admin bypass OR-ed into the one tenant policy.
    let owner = common::connect(&stack.urls().admin_database_url).await;
    owner
        .batch_execute(
            "DROP POLICY tenant_isolation ON profiles;
             DROP POLICY admin_bypass ON profiles;
             CREATE POLICY tenant_isolation ON profiles FOR ALL TO PUBLIC
                 USING (community_id = (SELECT app_current_tenant()) OR (SELECT app_is_admin()))
                 WITH CHECK (community_id = (SELECT app_current_tenant()) OR (SELECT app_is_admin()));",
        )
        .await
        .expect("replace the policy");

    let o = output(check());
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(
            "FINDING seq_scan profiles (query tenant): Seq Scan on profiles  Filter: ((community_id = $0) OR $1)"
        ),
        "{stdout}"
    );
    // The lookup names the tenant in its own WHERE clause, so its index scan survives.
    assert!(!stdout.contains("(query lookup)"), "{stdout}");
    assert!(stdout.contains("1 finding(s)"), "{stdout}");

    let mut json = check();
    json.arg("--json");
    let o = output(json);
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON output");
    assert_eq!(v["findings"][0]["kind"], "seq_scan");
    assert_eq!(v["findings"][0]["table"], "profiles");
    assert_eq!(v["findings"][0]["query"], "tenant");

    // A scenario run against a target thumper migrated carries the finding as a note.
    let dir = tempfile::tempdir().unwrap();
    let scenario = common::cli::scenario_file(
        dir.path(),
        "tenant-read",
        "name = \"tenant-read\"\nexecutor = \"constant-vus\"\nvus = 1\nduration = \"1s\"\n\
         [dataset]\nseed = 7\ncommunities = 3\nprofiles_per_community = 5\n\
         [[queries]]\nname = \"tenant\"\ntenant_scoped = true\n\
         sql = \"SELECT community_id FROM profiles ORDER BY wallet_address LIMIT 10\"\n",
    );
    let reports = dir.path().join("reports");
    let o = output(common::cli::run_against(&stack, &scenario, &reports, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (_, summary) = common::cli::summary(&reports);
    assert!(
        // This query reads only indexed columns: the planner reads the whole index instead of
        // the table (`scan_without_tenant_key`), the same trap in another form.
        summary
            .notes
            .iter()
            .any(|n| n.starts_with("RLS plan check: FINDING")
                && n.contains("profiles (query tenant)")
                && n.contains("Filter: ((community_id = $0) OR $1)")),
        "{:#?}",
        summary.notes
    );

    // After the load, the check shows what each checked statement cost the server beside its
    // finding: the run's calls (the check's own EXPLAINs are other statements).
    let calls = summary.trend("query_duration{query:tenant}").unwrap().count;
    let mut after = check();
    after.arg(&scenario);
    let o = output(after);
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(" ms planning (+ "), "{stdout}");
    assert!(
        stdout.contains(&format!("per call over {calls} calls\n"))
            && stdout.contains("\n        server time: tenant: "),
        "{stdout}"
    );

    // Without the extension the check still runs and says why the server time is missing.
    let su = stack.superuser_url().replace("/postgres", "/arrakis");
    common::connect(&su)
        .await
        .batch_execute("DROP EXTENSION pg_stat_statements")
        .await
        .expect("drop the extension");
    let o = output(check());
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(
            "server time per query not shown: the pg_stat_statements extension is not created"
        ),
        "{stdout}"
    );

    stack.stop().await.expect("stack stops");
}

#[test]
fn a_scenario_without_tenant_queries_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::cli::scenario_file(
        dir.path(),
        "plain",
        "name = \"plain\"\nexecutor = \"constant-vus\"\nvus = 1\nduration = \"1s\"\n\
         [[queries]]\nname = \"health\"\nsql = \"SELECT 1\"\n",
    );
    let mut c = thumper();
    c.arg("rls-check")
        .arg(&path)
        .args(["--target", "postgres://nobody@127.0.0.1:1/none"]);
    let o = output(c);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no query has tenant_scoped = true"),
        "{}",
        text(&o)
    );
}

/// A table no scenario query reads is still linted: its policies from the catalog, its FORCE
/// and its tenant index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_no_query_reads_is_linted_from_the_catalog() {
    let stack = common::start_default().await;
    let app = stack.urls().database_url.clone();
    let check = || {
        let mut c = thumper();
        c.args(["rls-check", "--target", &app]);
        c
    };
    let owner = common::connect(&stack.urls().admin_database_url).await;
    owner
        .batch_execute(
            "CREATE TABLE notes (id bigint PRIMARY KEY, community_id uuid NOT NULL, body text);
             CREATE INDEX notes_community_idx ON notes (community_id);
             ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
             ALTER TABLE notes FORCE ROW LEVEL SECURITY;
             CREATE POLICY per_row ON notes FOR ALL TO PUBLIC
                 USING (community_id = app_current_tenant());",
        )
        .await
        .expect("create the table");

    let o = output(check());
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("FINDING per_row_policy_function notes: policy per_row (ALL) USING ((community_id = app_current_tenant()))")
            && stdout.contains("(SELECT app_current_tenant())"),
        "{stdout}"
    );
    assert!(stdout.contains("1 finding(s)"), "{stdout}");

    // Wrapped, but OR-ed with a second permissive policy for reads.
    owner
        .batch_execute(
            "DROP POLICY per_row ON notes;
             CREATE POLICY tenant ON notes USING (community_id = (SELECT app_current_tenant()));
             CREATE POLICY everyone_reads ON notes FOR SELECT USING (true);",
        )
        .await
        .expect("replace the policies");
    let o = output(check());
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("FINDING several_permissive_policies notes: permissive policies everyone_reads, tenant of notes all apply to SELECT"),
        "{stdout}"
    );
    assert!(!stdout.contains("per_row_policy_function"), "{stdout}");

    // One policy, wrapped; not forced and without a tenant index.
    owner
        .batch_execute(
            "DROP POLICY everyone_reads ON notes;
             ALTER TABLE notes NO FORCE ROW LEVEL SECURITY;
             DROP INDEX notes_community_idx;",
        )
        .await
        .expect("weaken the table");
    let o = output(check());
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("FINDING rls_not_forced notes")
            && stdout.contains("FINDING no_tenant_index notes")
            && stdout.contains("2 finding(s)"),
        "{stdout}"
    );

    owner
        .batch_execute("DROP TABLE notes")
        .await
        .expect("drop the table");
    let o = output(check());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    stack.stop().await.expect("stack stops");
}
