//! The embedded stack against real PostgreSQL and PgBouncer processes.

mod common;

use std::time::Duration;

use thumper::stack::{self, process::pid_alive, PgBouncerSettings, StackOptions};

fn alive(pid: u32) -> bool {
    pid_alive(pid, "")
}

#[tokio::test]
async fn start_serves_all_three_urls_and_stop_leaves_nothing_behind() {
    let stack = common::start_default().await;
    let urls = stack.urls().clone();
    let pids = stack.server_pids().await;
    let (pg, bouncer) = (pids.postgres.unwrap(), pids.pgbouncer.unwrap());
    let dir = stack.base_dir().to_owned();

    // The app role through PgBouncer, the owner directly, the console.
    let app = common::connect(&urls.database_url).await;
    let who: String = app
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "arrakis_app");
    let owner = common::connect(&urls.admin_database_url).await;
    let who: String = owner
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "arrakis_owner");
    let console = common::connect(&urls.pgbouncer_admin_url).await;
    let pools = console.simple_query("SHOW POOLS").await.unwrap();
    assert!(!pools.is_empty());
    drop((app, owner, console));

    // PgBouncer inherited an open-file limit above max_client_conn.
    let limits = std::fs::read_to_string(format!("/proc/{bouncer}/limits")).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        soft > u64::from(stack.pgbouncer_settings().max_client_conn),
        "{soft}"
    );

    stack.stop().await.unwrap();
    assert!(!alive(pg), "postgres {pg} still running");
    assert!(!alive(bouncer), "pgbouncer {bouncer} still running");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn dropping_a_stack_kills_its_servers() {
    let stack = common::start_default().await;
    let pids = stack.server_pids().await;
    let dir = stack.base_dir().to_owned();
    drop(stack);
    assert!(!alive(pids.postgres.unwrap()));
    assert!(!alive(pids.pgbouncer.unwrap()));
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let stack = common::start_default().await;
    for url in [&stack.urls().database_url, &stack.urls().admin_database_url] {
        let (user_part, host_part) = url.rsplit_once('@').unwrap();
        let (user, _) = user_part.rsplit_once(':').unwrap();
        let wrong = format!("{user}:not-the-password@{host_part}");
        let err = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{wrong} logged in"));
        assert!(
            format!("{:?}", err).contains("password authentication failed"),
            "{err}"
        );
    }
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn faults_stop_and_start_each_server() {
    let stack = common::start(PgBouncerSettings {
        min_pool_size: 0,
        ..PgBouncerSettings::default()
    })
    .await;
    let url = stack.urls().database_url.clone();

    stack.restart_pgbouncer().await.unwrap();
    common::connect(&url)
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();

    stack.stop_pgbouncer().await.unwrap();
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .is_err());
    stack.start_pgbouncer().await.unwrap();

    // (A client through PgBouncer would now wait up to query_timeout, which is PgBouncer's
    // behaviour, not ours; check PostgreSQL directly instead.)
    let admin = stack.urls().admin_database_url.clone();
    stack.stop_postgres().await.unwrap();
    assert!(tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .is_err());
    // PgBouncer can be restarted while PostgreSQL is down (readiness is then its console).
    stack.restart_pgbouncer().await.unwrap();
    stack.start_postgres().await.unwrap();
    // PgBouncer reconnects to the restarted server for a new client.
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(c) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            let (client, conn) = c;
            tokio::spawn(conn);
            if client.simple_query("SELECT 1").await.is_ok() {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "no query succeeded through PgBouncer after restarting PostgreSQL"
    );
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn up_running_down_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    assert_eq!(stack::running_at(&state), None);
    assert!(!stack::down_at(&state).await.unwrap());

    let opts = StackOptions::default();
    let urls = stack::up_at(&state, &opts).await.unwrap();
    assert_eq!(stack::running_at(&state), Some(urls.clone()));
    let again = stack::up_at(&state, &opts).await.unwrap_err();
    assert!(
        matches!(again, stack::StackError::AlreadyRunning { .. }),
        "{again}"
    );

    let client = common::connect(&urls.database_url).await;
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    let lines = stack::shell_lines(&urls);
    assert!(
        lines.starts_with("DATABASE_URL='postgres://arrakis_app:"),
        "{lines}"
    );

    assert!(stack::down_at(&state).await.unwrap());
    assert_eq!(stack::running_at(&state), None);
    assert!(!state.exists());
    assert!(
        tokio_postgres::connect(&urls.database_url, tokio_postgres::NoTls)
            .await
            .is_err()
    );
}

/// Rows per table, seen by the owner with the admin bypass.
async fn all_counts(owner: &tokio_postgres::Client) -> Vec<(&'static str, u64)> {
    owner
        .batch_execute("BEGIN; SELECT set_tenant_context(NULL, true)")
        .await
        .unwrap();
    let mut out = Vec::new();
    for table in [
        "communities",
        "profiles",
        "badges",
        "eligibility_rules",
        "audit_logs",
    ] {
        let n: i64 = owner
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        out.push((table, n as u64));
    }
    owner.batch_execute("COMMIT").await.unwrap();
    out
}

#[tokio::test]
async fn seeding_the_default_dataset_is_deterministic_and_idempotent() {
    use thumper::dataset::{seed, DatasetSpec};
    let stack = common::start_default().await;
    let admin = stack.urls().admin_database_url.clone();
    let spec = DatasetSpec::default();

    let first = seed::seed(&admin, &spec).await.unwrap();
    assert!(first.wrote);
    assert_eq!(first.rows.profiles, 100_000);
    let expected = vec![
        ("communities", first.rows.communities),
        ("profiles", first.rows.profiles),
        ("badges", first.rows.badges),
        ("eligibility_rules", first.rows.eligibility_rules),
        ("audit_logs", first.rows.audit_logs),
    ];
    let owner = common::connect(&admin).await;
    assert_eq!(all_counts(&owner).await, expected);

    // A known wallet from the spec is found by the load test's lookup, as the app role through
    // PgBouncer, under row-level security, using the (community, wallet) index.
    let (c, p) = (123, 45);
    let mut app = common::connect(&stack.urls().database_url).await;
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_tenant_context($1)", &[&spec.community_id(c)])
        .await
        .unwrap();
    let lookup = "SELECT id, discord_user_id FROM profiles \
                  WHERE community_id = $1 AND wallet_address = $2";
    let row = tx
        .query_one(lookup, &[&spec.community_id(c), &spec.wallet(c, p)])
        .await
        .unwrap();
    assert_eq!(row.get::<_, uuid::Uuid>(0), spec.profile_id(c, p));
    assert_eq!(row.get::<_, i64>(1), spec.discord_user_id(c, p));
    let plan: Vec<String> = tx
        .query(
            &format!(
                "EXPLAIN {}",
                lookup
                    .replace("$1", &format!("'{}'", spec.community_id(c)))
                    .replace("$2", &format!("'{}'", spec.wallet(c, p)))
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter()
            .any(|l| l.contains("idx_profiles_community_wallet")),
        "{plan:#?}"
    );
    // The tenant query: no tenant filter, RLS alone limits it to the tenant's profiles.
    let rows = tx
        .query("SELECT community_id FROM profiles LIMIT 1000", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), spec.profiles_per_community as usize);
    assert!(rows
        .iter()
        .all(|r| r.get::<_, uuid::Uuid>(0) == spec.community_id(c)));
    tx.commit().await.unwrap();

    // The same spec again is a no-op; a different one replaces the data.
    let again = seed::seed(&admin, &spec).await.unwrap();
    assert!(!again.wrote);
    let small = common::small_spec();
    let replaced = seed::seed(&admin, &small).await.unwrap();
    assert!(replaced.wrote);
    let now = all_counts(&owner).await;
    assert_eq!(now[0], ("communities", u64::from(small.communities)));
    assert_eq!(now[1], ("profiles", small.profile_count()));
    stack.stop().await.unwrap();
}
