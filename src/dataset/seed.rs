//! Writes a [`DatasetSpec`] into a database: every table (communities, profiles, badges,
//! eligibility rules, audit logs), so row-level security is exercised on all four tenant tables.
//!
//! Identifiers come from `DatasetSpec` (pure functions of seed and index), so they are generated
//! here and streamed with binary COPY. COPY FROM is refused on tables with row-level security
//! (forced, so the owner too), so rows are copied into temporary staging tables and moved with
//! one `INSERT … SELECT` per table under the admin bypass. One transaction: a reader sees the
//! old dataset or the new one. The spec seeded is recorded in `thumper_dataset`; seeding the
//! same spec again is a no-op, a different spec replaces the data.

use std::pin::pin;
use std::time::{Duration, Instant};

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::DatasetSpec;
use crate::migrate::DbError;

/// Rows in each table after seeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCounts {
    /// Communities.
    pub communities: u64,
    /// Profiles.
    pub profiles: u64,
    /// Badges.
    pub badges: u64,
    /// Eligibility rules.
    pub eligibility_rules: u64,
    /// Audit log rows.
    pub audit_logs: u64,
}

/// What seeding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOutcome {
    /// The spec now in the database.
    pub spec: DatasetSpec,
    /// `false` when the same spec was already there and nothing was written.
    pub wrote: bool,
    /// Rows per table for this spec.
    pub rows: RowCounts,
    /// Time taken.
    pub elapsed: Duration,
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The spec cannot be seeded.
    #[error("invalid dataset: {0}")]
    InvalidSpec(&'static str),
    /// Could not connect.
    #[error("cannot connect to seed the dataset: {0}")]
    Connect(DbError),
    /// A step failed; the transaction was rolled back and the old data is intact.
    #[error("seeding failed to {step}: {source}")]
    Step {
        /// What we were doing.
        step: &'static str,
        /// The database error, with its SQLSTATE.
        source: DbError,
    },
}

/// Seeds `spec` through `admin_database_url` (the owner role, or any member of
/// `arrakis_admin`; directly to PostgreSQL).
pub async fn seed(admin_database_url: &str, spec: &DatasetSpec) -> Result<SeedOutcome, SeedError> {
    if spec.badges_per_community > 0 && spec.profiles_per_community == 0 {
        return Err(SeedError::InvalidSpec(
            "badges_per_community > 0 needs profiles_per_community > 0 to award them to",
        ));
    }
    let (mut client, connection) = tokio_postgres::connect(admin_database_url, NoTls)
        .await
        .map_err(|e| SeedError::Connect(e.into()))?;
    let driver = tokio::spawn(connection);
    let result = seed_with(&mut client, spec).await;
    drop(client);
    let _ = driver.await;
    result
}

fn step(step: &'static str) -> impl Fn(tokio_postgres::Error) -> SeedError {
    move |e| SeedError::Step {
        step,
        source: e.into(),
    }
}

async fn seed_with(client: &mut Client, spec: &DatasetSpec) -> Result<SeedOutcome, SeedError> {
    let started = Instant::now();
    let wanted = serde_json::to_value(spec).expect("a DatasetSpec serialises");
    let tx = client
        .transaction()
        .await
        .map_err(step("begin a transaction"))?;
    // Two runs seeding one database at once (a fleet's instances) must take turns: CREATE TABLE
    // IF NOT EXISTS alone races on the catalog, so a transaction-level advisory lock comes first.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7421196655432716384);
         CREATE TABLE IF NOT EXISTS thumper_dataset (
             singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             spec jsonb NOT NULL,
             seeded_at timestamptz NOT NULL DEFAULT now()
         );
         LOCK TABLE thumper_dataset IN EXCLUSIVE MODE;",
    )
    .await
    .map_err(step("create or lock thumper_dataset"))?;
    let current: Option<serde_json::Value> = tx
        .query_opt("SELECT spec FROM thumper_dataset", &[])
        .await
        .map_err(step("read thumper_dataset"))?
        .map(|row| row.get(0));
    let rows = counts(spec);
    if current.as_ref() == Some(&wanted) {
        tx.commit().await.map_err(step("commit"))?;
        return Ok(SeedOutcome {
            spec: *spec,
            wrote: false,
            rows,
            elapsed: started.elapsed(),
        });
    }

    tx.batch_execute(
        "SELECT set_tenant_context(NULL, true);
         TRUNCATE communities, profiles, badges, eligibility_rules, audit_logs;
         CREATE TEMP TABLE seed_profiles (id uuid, community_id uuid, discord_user_id int8,
             wallet_address text) ON COMMIT DROP;
         CREATE TEMP TABLE seed_badges (id uuid, community_id uuid, profile_id uuid, name text)
             ON COMMIT DROP;
         CREATE TEMP TABLE seed_rules (id uuid, community_id uuid, rule_type text, chain text,
             contract_address text, min_balance text, enabled bool) ON COMMIT DROP;
         CREATE TEMP TABLE seed_audit (id uuid, community_id uuid, actor text, action text,
             target text, metadata jsonb, age_minutes int4) ON COMMIT DROP;",
    )
    .await
    .map_err(step("clear the tables and create staging tables"))?;

    copy_communities(&tx, spec).await?;
    copy_profiles(&tx, spec).await?;
    copy_badges(&tx, spec).await?;
    copy_rules(&tx, spec).await?;
    copy_audit(&tx, spec).await?;

    tx.batch_execute(
        "INSERT INTO profiles (id, community_id, discord_user_id, wallet_address)
             SELECT id, community_id, discord_user_id, wallet_address FROM seed_profiles;
         INSERT INTO badges (id, community_id, profile_id, name)
             SELECT id, community_id, profile_id, name FROM seed_badges;
         INSERT INTO eligibility_rules (id, community_id, rule_type, chain, contract_address,
                                        min_balance, enabled)
             SELECT id, community_id, rule_type, chain, contract_address, min_balance::numeric,
                    enabled FROM seed_rules;
         INSERT INTO audit_logs (id, community_id, actor, action, target, metadata, created_at)
             SELECT id, community_id, actor, action, target, metadata,
                    now() - make_interval(mins => age_minutes) FROM seed_audit;
         ANALYZE communities, profiles, badges, eligibility_rules, audit_logs;",
    )
    .await
    .map_err(step("move staged rows into the tenant tables"))?;

    tx.execute(
        "INSERT INTO thumper_dataset (spec) VALUES ($1)
         ON CONFLICT (singleton) DO UPDATE SET spec = EXCLUDED.spec, seeded_at = now()",
        &[&wanted],
    )
    .await
    .map_err(step("record the spec"))?;
    tx.commit().await.map_err(step("commit"))?;
    Ok(SeedOutcome {
        spec: *spec,
        wrote: true,
        rows,
        elapsed: started.elapsed(),
    })
}

/// Row counts a spec produces.
pub fn counts(spec: &DatasetSpec) -> RowCounts {
    let c = u64::from(spec.communities);
    RowCounts {
        communities: c,
        profiles: spec.profile_count(),
        badges: c * u64::from(spec.badges_per_community),
        eligibility_rules: c * u64::from(spec.rules_per_community),
        audit_logs: c * u64::from(spec.audit_logs_per_community),
    }
}

const TIERS: [&str; 10] = [
    "free",
    "free",
    "free",
    "free",
    "free",
    "free",
    "pro",
    "pro",
    "pro",
    "enterprise",
];
const CHAINS: [&str; 3] = ["ethereum", "base", "berachain"];
const ACTIONS: [&str; 4] = [
    "profile.verify_wallet",
    "badge.award",
    "rule.update",
    "settings.update",
];

async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    what: &'static str,
    copy_sql: &str,
    types: &[Type],
) -> Result<BinaryCopyInWriter, SeedError> {
    let sink = tx.copy_in(copy_sql).await.map_err(step(what))?;
    Ok(BinaryCopyInWriter::new(sink, types))
}

async fn copy_communities(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &DatasetSpec,
) -> Result<(), SeedError> {
    const WHAT: &str = "copy communities";
    let mut w = pin!(
        copy_in(
            tx,
            WHAT,
            "COPY communities (id, discord_guild_id, name, subscription_tier, settings) \
         FROM STDIN BINARY",
            &[Type::UUID, Type::INT8, Type::TEXT, Type::TEXT, Type::JSONB],
        )
        .await?
    );
    for c in 0..spec.communities {
        let name = format!("Community {c}");
        let tier = TIERS[c as usize % TIERS.len()];
        let settings = serde_json::json!({ "locale": "en", "index": c });
        let row: [&(dyn ToSql + Sync); 5] = [
            &spec.community_id(c),
            &spec.guild_id(c),
            &name,
            &tier,
            &settings,
        ];
        w.as_mut().write(&row).await.map_err(step(WHAT))?;
    }
    w.finish().await.map_err(step(WHAT))?;
    Ok(())
}

async fn copy_profiles(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &DatasetSpec,
) -> Result<(), SeedError> {
    const WHAT: &str = "copy profiles";
    let mut w = pin!(copy_in(
        tx,
        WHAT,
        "COPY seed_profiles (id, community_id, discord_user_id, wallet_address) FROM STDIN BINARY",
        &[Type::UUID, Type::UUID, Type::INT8, Type::TEXT],
    )
    .await?);
    let mut wallet = String::with_capacity(42);
    for c in 0..spec.communities {
        let community = spec.community_id(c);
        for p in 0..spec.profiles_per_community {
            spec.write_wallet(c, p, &mut wallet);
            let row: [&(dyn ToSql + Sync); 4] = [
                &spec.profile_id(c, p),
                &community,
                &spec.discord_user_id(c, p),
                &wallet,
            ];
            w.as_mut().write(&row).await.map_err(step(WHAT))?;
        }
    }
    w.finish().await.map_err(step(WHAT))?;
    Ok(())
}

async fn copy_badges(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &DatasetSpec,
) -> Result<(), SeedError> {
    const WHAT: &str = "copy badges";
    let mut w = pin!(
        copy_in(
            tx,
            WHAT,
            "COPY seed_badges (id, community_id, profile_id, name) FROM STDIN BINARY",
            &[Type::UUID, Type::UUID, Type::UUID, Type::TEXT],
        )
        .await?
    );
    for c in 0..spec.communities {
        let community = spec.community_id(c);
        for b in 0..spec.badges_per_community {
            // Awarded round-robin to the community's profiles.
            let profile = spec.profile_id(c, b % spec.profiles_per_community);
            let name = format!("badge-{b}");
            let row: [&(dyn ToSql + Sync); 4] = [&spec.badge_id(c, b), &community, &profile, &name];
            w.as_mut().write(&row).await.map_err(step(WHAT))?;
        }
    }
    w.finish().await.map_err(step(WHAT))?;
    Ok(())
}

async fn copy_rules(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &DatasetSpec,
) -> Result<(), SeedError> {
    const WHAT: &str = "copy eligibility rules";
    let mut w =
        pin!(copy_in(
        tx,
        WHAT,
        "COPY seed_rules (id, community_id, rule_type, chain, contract_address, min_balance, \
         enabled) FROM STDIN BINARY",
        &[
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BOOL,
        ],
    )
    .await?);
    for c in 0..spec.communities {
        let community = spec.community_id(c);
        for r in 0..spec.rules_per_community {
            let id = spec.rule_id(c, r);
            let rule_type = if r % 2 == 0 {
                "token_balance"
            } else {
                "nft_ownership"
            };
            let chain = CHAINS[(c + r) as usize % CHAINS.len()];
            let contract = format!("0x{}{:08x}", id.simple(), r);
            // 1..=10 whole tokens of 18 decimals.
            let min_balance = format!("{}000000000000000000", (c + r) % 10 + 1);
            // Every third rule is disabled (the partial index skips those).
            let enabled = r % 3 != 2;
            let row: [&(dyn ToSql + Sync); 7] = [
                &id,
                &community,
                &rule_type,
                &chain,
                &contract,
                &min_balance,
                &enabled,
            ];
            w.as_mut().write(&row).await.map_err(step(WHAT))?;
        }
    }
    w.finish().await.map_err(step(WHAT))?;
    Ok(())
}

async fn copy_audit(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &DatasetSpec,
) -> Result<(), SeedError> {
    const WHAT: &str = "copy audit logs";
    let mut w = pin!(
        copy_in(
            tx,
            WHAT,
            "COPY seed_audit (id, community_id, actor, action, target, metadata, age_minutes) \
         FROM STDIN BINARY",
            &[
                Type::UUID,
                Type::UUID,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::JSONB,
                Type::INT4,
            ],
        )
        .await?
    );
    for c in 0..spec.communities {
        let community = spec.community_id(c);
        for a in 0..spec.audit_logs_per_community {
            let actor = if spec.profiles_per_community > 0 {
                let p = a % spec.profiles_per_community;
                format!("discord:{}", spec.discord_user_id(c, p))
            } else {
                "system".to_owned()
            };
            let action = ACTIONS[a as usize % ACTIONS.len()];
            let target = format!("community:{community}");
            let metadata = serde_json::json!({ "seed": spec.seed, "index": a });
            let age = i32::try_from(a).unwrap_or(i32::MAX);
            let row: [&(dyn ToSql + Sync); 7] = [
                &spec.audit_id(c, a),
                &community,
                &actor,
                &action,
                &target,
                &metadata,
                &age,
            ];
            w.as_mut().write(&row).await.map_err(step(WHAT))?;
        }
    }
    w.finish().await.map_err(step(WHAT))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_spec() {
        let spec = DatasetSpec::default();
        let rows = counts(&spec);
        assert_eq!(rows.communities, 1_000);
        assert_eq!(rows.profiles, 100_000);
        assert_eq!(rows.badges, 20_000);
        assert_eq!(rows.eligibility_rules, 3_000);
        assert_eq!(rows.audit_logs, 10_000);
    }
}
