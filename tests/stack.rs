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
