//! Shared helpers for the integration tests: start a real stack, connect, seed a small dataset.
#![allow(dead_code)] // each test binary uses a different subset

use thumper::dataset::DatasetSpec;
use thumper::stack::{PgBouncerSettings, Stack, StackOptions};
use tokio_postgres::{Client, NoTls};

/// Starts a stack with the given PgBouncer settings (panics with the error's message).
pub async fn start(pgbouncer: PgBouncerSettings) -> Stack {
    let opts = StackOptions {
        pgbouncer,
        ..StackOptions::default()
    };
    match Stack::start(&opts).await {
        Ok(stack) => stack,
        Err(e) => panic!("stack failed to start: {e}"),
    }
}

/// Starts a stack with the sprint's PgBouncer settings.
pub async fn start_default() -> Stack {
    start(PgBouncerSettings::default()).await
}

/// Opens a connection, driven on the current runtime.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A small dataset: 3 tenants × 5 profiles, with a few badges, rules and audit rows each.
pub fn small_spec() -> DatasetSpec {
    DatasetSpec {
        seed: 7,
        communities: 3,
        profiles_per_community: 5,
        rules_per_community: 3,
        badges_per_community: 4,
        audit_logs_per_community: 2,
    }
}

/// Seeds [`small_spec`] into the stack.
pub async fn seed_small(stack: &Stack) -> DatasetSpec {
    let spec = small_spec();
    thumper::dataset::seed::seed(&stack.urls().admin_database_url, &spec)
        .await
        .unwrap_or_else(|e| panic!("seeding failed: {e}"));
    spec
}
pub mod cli;
