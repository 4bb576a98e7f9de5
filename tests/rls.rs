//! The tenant-isolation properties of the Arrakis schema (issue 3), against a real PostgreSQL,
//! and through a real PgBouncer in transaction mode where pooling matters. Property 5
//! (migrations) is in `tests/migrate.rs`.

mod common;

use thumper::dataset::DatasetSpec;
use thumper::stack::{PgBouncerSettings, Stack};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use uuid::Uuid;

const TABLES: [&str; 4] = ["profiles", "badges", "eligibility_rules", "audit_logs"];

/// A stack whose PgBouncer has exactly one server connection, so every client shares it.
async fn single_connection_stack() -> Stack {
    common::start(PgBouncerSettings {
        default_pool_size: 1,
        min_pool_size: 0,
        ..PgBouncerSettings::default()
    })
    .await
}

/// Rows of `table` per tenant that the spec seeds.
fn rows_per_tenant(spec: &DatasetSpec, table: &str) -> i64 {
    i64::from(match table {
        "profiles" => spec.profiles_per_community,
        "badges" => spec.badges_per_community,
        "eligibility_rules" => spec.rules_per_community,
        "audit_logs" => spec.audit_logs_per_community,
        _ => unreachable!(),
    })
}

/// A no-op assignment for an UPDATE of `table`.
fn touch(table: &str) -> &'static str {
    match table {
        "profiles" => "wallet_address = wallet_address",
        "badges" => "name = name",
        "eligibility_rules" => "enabled = enabled",
        "audit_logs" => "action = action",
        _ => unreachable!(),
    }
}

/// An INSERT of a fresh row of `table` into tenant `c` of `spec` (SQL with no parameters).
fn insert_for(spec: &DatasetSpec, table: &str, c: u32) -> String {
    let community = spec.community_id(c);
    let profile = spec.profile_id(c, 0);
    match table {
        "profiles" => format!(
            "INSERT INTO profiles (community_id, discord_user_id, wallet_address) \
             VALUES ('{community}', 999999, '0xabc')"
        ),
        "badges" => format!(
            "INSERT INTO badges (community_id, profile_id, name) \
             VALUES ('{community}', '{profile}', 'intruder')"
        ),
        "eligibility_rules" => format!(
            "INSERT INTO eligibility_rules (community_id, rule_type, chain, contract_address) \
             VALUES ('{community}', 'token_balance', 'base', '0xabc')"
        ),
        "audit_logs" => format!(
            "INSERT INTO audit_logs (community_id, actor, action) \
             VALUES ('{community}', 'intruder', 'forge')"
        ),
        _ => unreachable!(),
    }
}

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

/// Counts every row of `table` the current transaction can see.
async fn visible(client: &impl tokio_postgres::GenericClient, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Row counts of each table as the owner with the admin bypass (ground truth).
async fn admin_counts(stack: &Stack) -> Vec<i64> {
    let mut owner = common::connect(&stack.urls().admin_database_url).await;
    let tx = owner.transaction().await.unwrap();
    tx.execute("SELECT set_tenant_context(NULL, true)", &[])
        .await
        .unwrap();
    let mut out = Vec::new();
    for t in TABLES {
        out.push(visible(&tx, t).await);
    }
    out
}

#[tokio::test]
async fn property_1_a_tenant_sees_and_changes_only_its_own_rows() {
    let stack = common::start_default().await;
    let spec = common::seed_small(&stack).await;
    let before = admin_counts(&stack).await;
    let (a, b) = (spec.community_id(0), spec.community_id(1));
    let mut app = common::connect(&stack.urls().database_url).await;

    for table in TABLES {
        let own = rows_per_tenant(&spec, table);
        assert!(own > 0, "the dataset must have {table} rows");

        let tx = app.transaction().await.unwrap();
        tx.execute("SELECT set_tenant_context($1)", &[&a])
            .await
            .unwrap();
        // SELECT: only A's rows, even with no filter.
        let rows = tx
            .query(&format!("SELECT community_id FROM {table}"), &[])
            .await
            .unwrap();
        assert_eq!(rows.len() as i64, own, "{table}: SELECT");
        assert!(rows.iter().all(|r| r.get::<_, Uuid>(0) == a), "{table}");
        // A filter naming B finds nothing.
        let n = tx
            .execute(
                &format!("SELECT 1 FROM {table} WHERE community_id = $1"),
                &[&b],
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}: SELECT of B's rows");
        // UPDATE and DELETE without a filter touch only A's rows.
        let updated = tx
            .query(
                &format!("UPDATE {table} SET {} RETURNING community_id", touch(table)),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(updated.len() as i64, own, "{table}: UPDATE");
        assert!(updated.iter().all(|r| r.get::<_, Uuid>(0) == a));
        let n = tx
            .execute(
                &format!(
                    "UPDATE {table} SET {} WHERE community_id = $1",
                    touch(table)
                ),
                &[&b],
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}: UPDATE of B's rows");
        let n = tx
            .execute(
                &format!("DELETE FROM {table} WHERE community_id = $1"),
                &[&b],
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}: DELETE of B's rows");
        let deleted = tx
            .query(&format!("DELETE FROM {table} RETURNING community_id"), &[])
            .await
            .unwrap();
        assert_eq!(deleted.len() as i64, own, "{table}: DELETE");
        assert!(deleted.iter().all(|r| r.get::<_, Uuid>(0) == a));
        tx.rollback().await.unwrap();

        // INSERT of a row for B is rejected, and so is moving A's row to B.
        let tx = app.transaction().await.unwrap();
        tx.execute("SELECT set_tenant_context($1)", &[&a])
            .await
            .unwrap();
        let err = tx
            .batch_execute(&insert_for(&spec, table, 1))
            .await
            .unwrap_err();
        assert_eq!(
            code(&err),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{table}: {err:?}"
        );
        tx.rollback().await.unwrap();
        let tx = app.transaction().await.unwrap();
        tx.execute("SELECT set_tenant_context($1)", &[&a])
            .await
            .unwrap();
        let err = tx
            .execute(&format!("UPDATE {table} SET community_id = $1"), &[&b])
            .await
            .unwrap_err();
        assert_eq!(
            code(&err),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{table}: {err:?}"
        );
        tx.rollback().await.unwrap();

        // An INSERT for A itself works.
        let tx = app.transaction().await.unwrap();
        tx.execute("SELECT set_tenant_context($1)", &[&a])
            .await
            .unwrap();
        tx.batch_execute(&insert_for(&spec, table, 0))
            .await
            .unwrap();
        assert_eq!(visible(&tx, table).await, own + 1);
        tx.rollback().await.unwrap();
    }
    assert_eq!(admin_counts(&stack).await, before, "nothing changed");
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn property_2_no_tenant_means_zero_rows_and_no_error() {
    let stack = single_connection_stack().await;
    let spec = common::seed_small(&stack).await;
    let mut first = common::connect(&stack.urls().database_url).await;
    let mut second = common::connect(&stack.urls().database_url).await;

    // Never set on this server connection: current_setting is NULL.
    let tx = first.transaction().await.unwrap();
    for t in TABLES {
        assert_eq!(visible(&tx, t).await, 0, "{t} with no tenant ever set");
    }
    let pid: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();

    // A transaction sets a tenant on the (only) server connection ...
    let tx = first.transaction().await.unwrap();
    tx.execute("SELECT set_tenant_context($1)", &[&spec.community_id(0)])
        .await
        .unwrap();
    assert!(visible(&tx, "profiles").await > 0);
    tx.commit().await.unwrap();

    // ... and afterwards, on that same server connection, there is no tenant: the setting reads
    // '' (not NULL), and the tables return zero rows without an error.
    for client in [&mut first, &mut second] {
        let tx = client.transaction().await.unwrap();
        let row = tx
            .query_one(
                "SELECT pg_backend_pid(), current_setting('app.current_tenant', true)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), pid, "one server connection");
        assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(""));
        for t in TABLES {
            assert_eq!(visible(&tx, t).await, 0, "{t} after a tenant transaction");
        }
        tx.commit().await.unwrap();
    }

    // An explicitly empty or NULL tenant is also "no tenant".
    let tx = first.transaction().await.unwrap();
    tx.execute("SELECT set_config('app.current_tenant', '', true)", &[])
        .await
        .unwrap();
    assert_eq!(visible(&tx, "profiles").await, 0);
    tx.execute("SELECT set_tenant_context(NULL)", &[])
        .await
        .unwrap();
    assert_eq!(visible(&tx, "audit_logs").await, 0);
    tx.commit().await.unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn property_3_tenant_context_never_leaks_between_pooled_clients() {
    let stack = single_connection_stack().await;
    let spec = common::seed_small(&stack).await;
    let (a, b) = (spec.community_id(0), spec.community_id(1));
    let url = &stack.urls().database_url;
    let client_a = common::connect(url).await;
    let client_b = common::connect(url).await;

    // Control: a session-level SET does leak through the single pooled connection, so this set-up
    // would catch a leak.
    client_a
        .simple_query(&format!("SET app.current_tenant = '{a}'"))
        .await
        .unwrap();
    let leaked = client_b
        .simple_query("SELECT current_setting('app.current_tenant', true)")
        .await
        .unwrap();
    let leaked = leaked.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(
        leaked,
        Some(a.to_string()),
        "the control leak did not happen"
    );
    client_b
        .simple_query("SELECT clear_tenant_context()")
        .await
        .unwrap();

    // The real thing: A and B run interleaved transactions on the one server connection; A sets
    // its tenant with set_tenant_context, B first looks with no tenant, then as itself.
    async fn tenant_a(client: Client, a: Uuid) -> Client {
        let mut client = client;
        for _ in 0..100 {
            let tx = client.transaction().await.unwrap();
            tx.execute("SELECT set_tenant_context($1)", &[&a])
                .await
                .unwrap();
            let rows = tx
                .query("SELECT community_id FROM profiles", &[])
                .await
                .unwrap();
            assert!(!rows.is_empty() && rows.iter().all(|r| r.get::<_, Uuid>(0) == a));
            tx.commit().await.unwrap();
            tokio::task::yield_now().await;
        }
        client
    }
    async fn tenant_b(client: Client, b: Uuid) -> (Client, u32) {
        let mut client = client;
        let mut checked = 0;
        for _ in 0..100 {
            let tx = client.transaction().await.unwrap();
            let row = tx
                .query_one(
                    "SELECT current_setting('app.current_tenant', true), \
                            (SELECT count(*) FROM profiles)",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, Option<String>>(0).unwrap_or_default(), "");
            assert_eq!(row.get::<_, i64>(1), 0, "B saw rows without a tenant");
            tx.execute("SELECT set_tenant_context($1)", &[&b])
                .await
                .unwrap();
            let rows = tx
                .query("SELECT community_id FROM profiles", &[])
                .await
                .unwrap();
            assert!(
                rows.iter().all(|r| r.get::<_, Uuid>(0) == b),
                "B saw A's rows"
            );
            tx.commit().await.unwrap();
            checked += 1;
            tokio::task::yield_now().await;
        }
        (client, checked)
    }
    let (client_a, (client_b, checked)) =
        tokio::join!(tenant_a(client_a, a), tenant_b(client_b, b));
    assert_eq!(checked, 100);

    // Both really shared one server connection.
    let pid_a: i32 = client_a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let pid_b: i32 = client_b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid_a, pid_b);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn property_4_the_app_role_cannot_grant_itself_the_admin_bypass() {
    let stack = common::start_default().await;
    let spec = common::seed_small(&stack).await;
    let a = spec.community_id(0);
    let mut app = common::connect(&stack.urls().database_url).await;

    // Setting the flag itself, session-wide or in the transaction, gains nothing.
    let tx = app.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL app.is_admin = 'true'")
        .await
        .unwrap();
    for t in TABLES {
        assert_eq!(visible(&tx, t).await, 0, "{t} with a self-set admin flag");
    }
    tx.execute(
        "SELECT set_config('app.current_tenant', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    assert_eq!(
        visible(&tx, "profiles").await,
        i64::from(spec.profiles_per_community),
        "the flag widened a tenant's view"
    );
    tx.commit().await.unwrap();

    // Asking set_tenant_context for admin is refused; so is becoming another role.
    for sql in [
        "SELECT set_tenant_context(NULL, true)",
        "SET ROLE arrakis_admin",
        "SET ROLE arrakis_owner",
        "ALTER TABLE profiles DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE profiles NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON profiles",
        "CREATE FUNCTION public.app_is_admin_x() RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    ] {
        let tx = app.transaction().await.unwrap();
        let err = tx.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            code(&err),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err:?}"
        );
        tx.rollback().await.unwrap();
    }

    // The catalog: the app role owns nothing, is no superuser, cannot bypass RLS; every function
    // in public pins its search_path (and any SECURITY DEFINER one must).
    let owner = common::connect(&stack.urls().admin_database_url).await;
    let row = owner
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
                  + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
                  + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid),
                    r.rolsuper, r.rolbypassrls
             FROM pg_roles r WHERE r.rolname = 'arrakis_app'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "arrakis_app owns objects");
    assert!(!row.get::<_, bool>(1) && !row.get::<_, bool>(2));
    let unpinned: Vec<String> = owner
        .query(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public'
               AND NOT coalesce(EXISTS (SELECT 1 FROM unnest(p.proconfig) c
                                        WHERE c LIKE 'search_path=%'), false)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        unpinned.is_empty(),
        "functions without a pinned search_path: {unpinned:?}"
    );

    // The real admin path: a member of arrakis_admin asking for it sees every tenant; without
    // asking, even the owner sees nothing (row-level security is forced).
    let all = admin_counts(&stack).await;
    let expected: Vec<i64> = TABLES
        .iter()
        .map(|t| rows_per_tenant(&spec, t) * i64::from(spec.communities))
        .collect();
    assert_eq!(all, expected);
    for t in TABLES {
        assert_eq!(
            visible(&owner, t).await,
            0,
            "owner without the bypass sees {t}"
        );
    }
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn property_6_audit_action_records_who_did_what_and_is_isolated() {
    let stack = common::start_default().await;
    let spec = common::seed_small(&stack).await;
    let (a, b) = (spec.community_id(0), spec.community_id(1));
    let mut app = common::connect(&stack.urls().database_url).await;

    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_tenant_context($1)", &[&a])
        .await
        .unwrap();
    let meta = serde_json::json!({ "field": "wallet_address" });
    let explicit: Uuid = tx
        .query_one(
            "SELECT audit_action('profile.update', 'profile:42', $1, 'discord:1234')",
            &[&meta],
        )
        .await
        .unwrap()
        .get(0);
    let defaulted: Uuid = tx
        .query_one("SELECT audit_action('rule.delete')", &[])
        .await
        .unwrap()
        .get(0);
    let row = tx
        .query_one(
            "SELECT community_id, actor, action, target, metadata FROM audit_logs WHERE id = $1",
            &[&explicit],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), a);
    assert_eq!(row.get::<_, String>(1), "discord:1234");
    assert_eq!(row.get::<_, String>(2), "profile.update");
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("profile:42")
    );
    assert_eq!(row.get::<_, serde_json::Value>(4), meta);
    let actor: String = tx
        .query_one("SELECT actor FROM audit_logs WHERE id = $1", &[&defaulted])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        actor, "arrakis_app",
        "the actor defaults to the database role"
    );
    // Auditing into another tenant is rejected like any insert.
    let err = tx
        .query_one("SELECT audit_action('forge', NULL, '{}', NULL, $1)", &[&b])
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    tx.rollback().await.unwrap();

    // Keep the two rows this time.
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_tenant_context($1)", &[&a])
        .await
        .unwrap();
    let kept: Uuid = tx
        .query_one("SELECT audit_action('badge.award', 'badge:1')", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();

    // Tenant B and no tenant cannot see it; with no tenant, audit_action refuses to guess.
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_tenant_context($1)", &[&b])
        .await
        .unwrap();
    let n = tx
        .execute("SELECT 1 FROM audit_logs WHERE id = $1", &[&kept])
        .await
        .unwrap();
    assert_eq!(n, 0, "tenant B sees A's audit row");
    assert_eq!(
        visible(&tx, "audit_logs").await,
        i64::from(spec.audit_logs_per_community)
    );
    tx.commit().await.unwrap();
    let tx = app.transaction().await.unwrap();
    assert_eq!(visible(&tx, "audit_logs").await, 0);
    let err = tx
        .query_one("SELECT audit_action('x')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(&SqlState::INVALID_PARAMETER_VALUE),
        "{err:?}"
    );
    tx.rollback().await.unwrap();
    stack.stop().await.unwrap();
}
