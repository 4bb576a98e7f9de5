//! The migration runner and the idempotency of the migrations (issue 3, property 5), against a
//! real PostgreSQL.

mod common;

use std::path::{Path, PathBuf};

use thumper::migrate::{self, MigrateError, MigrationStatus};
use thumper::stack::Stack;
use tokio_postgres::Client;

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// Copies the named migration files into a fresh temporary directory.
fn copy_migrations(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(migrations_dir().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

/// Creates an empty database owned by arrakis_owner and returns the owner's URL for it.
async fn fresh_database(stack: &Stack, name: &str) -> String {
    let superuser = common::connect(&stack.superuser_url()).await;
    superuser
        .batch_execute(&format!("CREATE DATABASE {name} OWNER arrakis_owner"))
        .await
        .unwrap();
    let admin = &stack.urls().admin_database_url;
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// A description of every schema object the migrations create, to compare before and after.
async fn schema_snapshot(client: &Client) -> Vec<String> {
    let sql = "
        SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' '
               || is_nullable || ' ' || coalesce(column_default, '')
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' '
               || pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
        UNION ALL
        SELECT 'policy ' || tablename || ' ' || policyname || ' ' || cmd || ' '
               || coalesce(qual, '') || ' ' || coalesce(with_check, '')
          FROM pg_policies WHERE schemaname = 'public'
        UNION ALL
        SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname || ' ' || pg_get_triggerdef(oid)
          FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure || ' ' || md5(pg_get_functiondef(p.oid))
               || ' ' || p.xmin::text
          FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'table ' || relname || ' rls=' || relrowsecurity || ' force=' || relforcerowsecurity
               || ' acl=' || coalesce(relacl::text, '') || ' xmin=' || xmin::text
          FROM pg_class WHERE relnamespace = 'public'::regnamespace
        ORDER BY 1";
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn property_5_migrations_are_idempotent_incremental_and_tamper_evident() {
    let stack = common::start_default().await;
    let admin = stack.urls().admin_database_url.clone();

    // Applying the migrations again (the stack already did once) is a no-op.
    let again = migrate::apply(&admin, &migrations_dir()).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(again
        .iter()
        .all(|m| m.status == MigrationStatus::AlreadyApplied));

    // Running 001's SQL a second time by hand changes nothing either: every step is guarded.
    // (The snapshot includes the xmin of each table's and function's catalog row, which changes
    // whenever the object is altered or replaced.)
    let owner = common::connect(&admin).await;
    let before = schema_snapshot(&owner).await;
    let sql = std::fs::read_to_string(migrations_dir().join("001_scaling_schema.sql")).unwrap();
    owner.batch_execute(&sql).await.unwrap();
    let after = schema_snapshot(&owner).await;
    assert!(before
        .iter()
        .any(|l| l.starts_with("policy profiles tenant_isolation")));
    assert_eq!(before, after);

    // 001 applies on a database that has only 000.
    let url = fresh_database(&stack, "arrakis_incremental").await;
    let only_000 = copy_migrations(&["000_base_schema.sql"]);
    let first = migrate::apply(&url, only_000.path()).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(matches!(first[0].status, MigrationStatus::Applied(_)));
    let both = migrate::apply(&url, &migrations_dir()).await.unwrap();
    assert_eq!(both[0].status, MigrationStatus::AlreadyApplied);
    assert!(matches!(both[1].status, MigrationStatus::Applied(_)));
    let incremental = schema_snapshot(&common::connect(&url).await).await;
    let strip_xmin = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                l.rsplit_once(" xmin=")
                    .map_or(l.as_str(), |(a, _)| a)
                    .to_owned()
            })
            .map(|l| {
                if l.starts_with("function ") {
                    l.rsplit_once(' ').unwrap().0.to_owned()
                } else {
                    l
                }
            })
            .collect()
    };
    assert_eq!(
        strip_xmin(&incremental)
            .into_iter()
            .filter(|l| !l.contains("thumper_dataset"))
            .collect::<Vec<_>>(),
        strip_xmin(&after)
            .into_iter()
            .filter(|l| !l.contains("thumper_dataset"))
            .collect::<Vec<_>>(),
        "000 then 001 gives the same schema as both at once"
    );

    // An edited, already-applied migration is reported by name, before anything new runs.
    let edited = copy_migrations(&["000_base_schema.sql", "001_scaling_schema.sql"]);
    let path = edited.path().join("001_scaling_schema.sql");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n-- an innocent-looking edit\n");
    std::fs::write(&path, text).unwrap();
    std::fs::write(
        edited.path().join("002_next.sql"),
        "CREATE TABLE must_not_exist (id int);",
    )
    .unwrap();
    let err = migrate::apply(&url, edited.path()).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Changed { name, .. } if name == "001_scaling_schema.sql"),
        "{err}"
    );
    assert!(err.to_string().contains("001_scaling_schema.sql"), "{err}");
    let exists: bool = common::connect(&url)
        .await
        .query_one("SELECT to_regclass('must_not_exist') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "a new migration ran despite the edited one");
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_migration_names_its_file_and_line_and_is_rolled_back() {
    let stack = common::start_default().await;
    let url = fresh_database(&stack, "arrakis_broken").await;
    let dir = copy_migrations(&["000_base_schema.sql", "001_scaling_schema.sql"]);
    std::fs::write(
        dir.path().join("002_broken.sql"),
        "CREATE TABLE half_done (id int);\n\n SELEC 1;\n",
    )
    .unwrap();
    let err = migrate::apply(&url, dir.path()).await.unwrap_err();
    match &err {
        MigrateError::Failed { name, line, source } => {
            assert_eq!(name, "002_broken.sql");
            assert_eq!(*line, Some(3));
            assert_eq!(source.code(), Some("42601"), "{err}");
        }
        other => panic!("unexpected error: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("002_broken.sql") && msg.contains("line 3"),
        "{msg}"
    );
    let client = common::connect(&url).await;
    let row = client
        .query_one(
            "SELECT to_regclass('half_done') IS NOT NULL,
                    (SELECT count(*) FROM thumper_schema_migrations)",
            &[],
        )
        .await
        .unwrap();
    assert!(
        !row.get::<_, bool>(0),
        "the failed migration was not rolled back"
    );
    assert_eq!(row.get::<_, i64>(1), 2, "only 000 and 001 are recorded");
    stack.stop().await.unwrap();
}
