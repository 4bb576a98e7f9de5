//! The reference Arrakis gateway: Twilight shards that forward Discord dispatches to NATS.
//!
//! This is the system under test of `thumper gateway`, built the way the seed (S-1.2, S-1.3)
//! describes: intents `GUILDS | GUILD_MEMBERS`, configuration from the environment and an optional
//! YAML file, JSON logs, and every dispatch published as a versioned envelope on
//! `arrakis.gateway.<shard>.<EVENT_TYPE>`.
//!
//! - [`config`]: settings and their validation;
//! - [`envelope`]: the envelope format and the cheap parse that routes a dispatch;
//! - [`publish`]: NATS or discard;
//! - [`queue`]: the identify queue (Discord's limit, or none for the fake);
//! - [`shard`]: one shard's receive → route → publish loop.
//!
//! The binary (`src/bin/gateway.rs`) only loads the configuration, sets up logging and calls
//! [`run`].

pub mod config;
pub mod envelope;
pub mod publish;
pub mod queue;
pub mod shard;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use twilight_cache_inmemory::{InMemoryCache, ResourceType};
use twilight_gateway::{ConfigBuilder, Intents, Shard, ShardId};

pub use config::{CacheMode, ConfigError, GatewayConfig};
use publish::{PublishError, Publisher};
use queue::IdentifyQueue;
use shard::{ShardContext, ShardError, ShardStats};

/// The intents a token-gating bot needs: guilds, and members joining, changing and leaving.
pub const INTENTS: Intents = Intents::GUILDS.union(Intents::GUILD_MEMBERS);

/// Discord sends full member lists in GUILD_CREATE up to this many members (its maximum).
const LARGE_THRESHOLD: u64 = 250;

/// Why the gateway stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Publishing an envelope failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A shard stopped for good.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// A shard task panicked or was cancelled.
    #[error("shard task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CacheMode {
    /// The cache for this mode, if any.
    pub fn build(self) -> Option<Arc<InMemoryCache>> {
        let guild = ResourceType::GUILD | ResourceType::ROLE | ResourceType::CHANNEL;
        let types = match self {
            CacheMode::None => return None,
            CacheMode::Guilds => guild,
            CacheMode::Members => guild | ResourceType::MEMBER | ResourceType::USER,
        };
        Some(Arc::new(
            InMemoryCache::builder().resource_types(types).build(),
        ))
    }
}

/// Runs every configured shard until `cancel` fires (Ok) or a shard fails for good (Err).
pub async fn run(config: GatewayConfig, cancel: CancellationToken) -> Result<(), GatewayError> {
    let publisher = Publisher::connect(config.nats_url.as_deref()).await?;
    let ctx = Arc::new(ShardContext {
        publisher: publisher.clone(),
        cache: config.cache.build(),
        cache_mode: config.cache,
        subject_prefix: config.subject_prefix.clone(),
    });
    let queue = IdentifyQueue::new(config.identify_concurrency, config.shards.total);
    tracing::info!(
        shards = ?config.shards.ids(),
        total = config.shards.total,
        url = %config.gateway_url,
        cache = ?config.cache,
        nats = config.nats_url.is_some(),
        "gateway starting"
    );

    let mut tasks = JoinSet::new();
    let mut all_stats = Vec::new();
    for id in config.shards.ids() {
        let shard_config = ConfigBuilder::new(config.token.clone(), INTENTS)
            .queue(queue.clone())
            .proxy_url(config.gateway_url.clone())
            .large_threshold(LARGE_THRESHOLD)
            .build();
        let shard = Shard::with_config(ShardId::new(id, config.shards.total), shard_config);
        let stats = Arc::new(ShardStats::default());
        all_stats.push(Arc::clone(&stats));
        tasks.spawn(shard::run_shard(
            shard,
            Arc::clone(&ctx),
            stats,
            cancel.clone(),
        ));
    }

    let reporter = tokio::spawn(report_stats(
        all_stats.clone(),
        ctx.cache.clone(),
        config.stats_interval,
        cancel.clone(),
    ));
    let mut outcome = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let result = joined
            .map_err(GatewayError::from)
            .and_then(|r| r.map_err(GatewayError::from));
        if let Err(e) = result {
            if outcome.is_ok() {
                tracing::error!(error = %e, "stopping every shard");
                outcome = Err(e);
            }
            cancel.cancel();
        }
    }
    cancel.cancel();
    let _ = reporter.await;
    publisher.flush().await;
    log_totals(&all_stats, ctx.cache.as_deref());
    outcome
}

/// Logs throughput and cache size every `interval`.
async fn report_stats(
    stats: Vec<Arc<ShardStats>>,
    cache: Option<Arc<InMemoryCache>>,
    interval: std::time::Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => log_totals(&stats, cache.as_deref()),
        }
    }
}

fn log_totals(stats: &[Arc<ShardStats>], cache: Option<&InMemoryCache>) {
    let sum = |f: fn(&ShardStats) -> &std::sync::atomic::AtomicU64| -> u64 {
        stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
    };
    let (guilds, members) = cache.map_or((0, 0), |c| {
        let s = c.stats();
        (s.guilds(), s.members())
    });
    tracing::info!(
        dispatches = sum(|s| &s.dispatches),
        published = sum(|s| &s.published),
        discarded = sum(|s| &s.discarded),
        publish_errors = sum(|s| &s.publish_errors),
        receive_errors = sum(|s| &s.receive_errors),
        route_errors = sum(|s| &s.route_errors),
        disconnects = sum(|s| &s.disconnects),
        cached_guilds = guilds,
        cached_members = members,
        "gateway stats"
    );
}

/// Unix time in microseconds: the clock of envelope timestamps (and of the test equipment's
/// `sent_us` marks, which are compared with them).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
