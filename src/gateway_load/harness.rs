//! What one gateway run has running: NATS (its own or the given one), the fake Discord,
//! thumper's subscription and the gateway under test, started in that order and stopped in
//! reverse; or, for the floor, NATS, the subscription and the floor publisher in the gateway's
//! place (no fake: the publisher makes the fake's events itself).

use std::time::Duration;

use anyhow::Context;
use futures_util::stream::ReadyChunks;
use futures_util::StreamExt;

use tokio::time::Instant;

use super::fake_discord::pace::unix_micros;
use super::fake_discord::{FakeConfig, FakeDiscord, FakeStats, Fault};
use super::floor::{FloorConfig, FloorDrive};
use super::{Forwarder, GatewayProcess, GatewayRunConfig, GatewayWorkload, NatsServer};
use crate::gateway::config::{CacheMode, IdentifyConcurrency};

/// The token the fake accepts and the gateway is given.
const TOKEN: &str = "thumper-fake-token";

/// The running parts of one gateway run.
pub(super) struct Harness {
    own_nats: Option<NatsServer>,
    pub source: Source,
    client: async_nats::Client,
    /// Whatever has arrived is taken in one go, so a select runs once per burst rather than
    /// once per message.
    pub subscription: ReadyChunks<async_nats::Subscriber>,
    /// The gateway, or the floor publisher in its place.
    pub gateway: GatewayProcess,
}

/// Where the member events come from: the fake Discord (to the gateway), or the floor publisher
/// (straight to NATS).
pub(super) enum Source {
    Fake(FakeDiscord),
    Floor(FloorDrive),
}

impl Source {
    /// Starts the member events along `stages`; returns the instant they count from.
    pub async fn start_events(
        &mut self,
        stages: &[(Duration, u32)],
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        match self {
            Source::Fake(fake) => Ok(fake.start_events(stages).await),
            Source::Floor(floor) => floor.start(timeout).await,
        }
    }

    /// Waits until the last event of the stages was sent.
    pub async fn finish_events(&mut self) {
        match self {
            Source::Fake(fake) => fake.finish_events().await,
            Source::Floor(floor) => floor.stop(),
        }
    }

    /// Stops the member events now.
    pub async fn stop_events(&mut self) {
        match self {
            Source::Fake(fake) => fake.stop_events().await,
            Source::Floor(floor) => floor.stop(),
        }
    }

    /// Injects a fault; false where nothing serves the shard (always, for the floor).
    pub fn inject(&self, shard: u32, fault: Fault) -> bool {
        match self {
            Source::Fake(fake) => fake.inject(shard, fault),
            Source::Floor(_) => false,
        }
    }

    /// The events sent so far and the sessions' counters.
    pub fn stats(&self) -> FakeStats {
        match self {
            Source::Fake(fake) => fake.stats(),
            Source::Floor(floor) => floor.stats(),
        }
    }
}

impl Harness {
    /// Starts NATS (unless `cfg.nats_url` names one), the fake, the subscription and the gateway.
    pub async fn start(cfg: &GatewayRunConfig) -> anyhow::Result<Harness> {
        let workload = &cfg.workload;
        let own_nats = match &cfg.nats_url {
            Some(_) => None,
            None => Some(NatsServer::start().await?),
        };
        let nats_url = match (&cfg.nats_url, &own_nats) {
            (Some(url), _) => url.clone(),
            (None, Some(server)) => server.url().to_owned(),
            (None, None) => unreachable!("a NATS server was started"),
        };
        let prefix = subject_prefix(own_nats.is_some());
        let client = async_nats::ConnectOptions::new()
            .name("thumper-gateway-subscriber")
            // Member events arrive in bursts; a full subscription buffer would look like loss.
            .subscription_capacity(1 << 20)
            .connect(&nats_url)
            .await
            .with_context(|| format!("connecting to NATS at {nats_url}"))?;
        let subscription = client
            .subscribe(format!("{prefix}.>"))
            .await
            .context("subscribing to the gateway's subjects")?;
        client.flush().await.context("flushing the subscription")?;

        let (source, gateway) = match &cfg.forwarder {
            Forwarder::Gateway(bin) => {
                let mut fake_config = FakeConfig::new(workload.world());
                fake_config.heartbeat_interval = workload.heartbeat_interval;
                fake_config.member_mix = workload.member_events;
                fake_config.token = Some(TOKEN.to_owned());
                let fake = FakeDiscord::start(fake_config)
                    .await
                    .context("starting the fake Discord gateway")?;
                let env = gateway_env(workload, fake.url(), &nats_url, &prefix);
                let gateway = GatewayProcess::spawn(bin, &env, cfg.quiet)?;
                (Source::Fake(fake), gateway)
            }
            Forwarder::Floor(bin) => {
                let config = FloorConfig {
                    nats_url: nats_url.clone(),
                    subject_prefix: prefix.clone(),
                    world: workload.world(),
                    mix: workload.member_events,
                    stages: cfg.rate_stages.clone(),
                };
                let publisher = GatewayProcess::spawn(bin, &config.to_env(), cfg.quiet)?;
                (
                    Source::Floor(FloorDrive::new(client.clone(), &config)),
                    publisher,
                )
            }
        };
        Ok(Harness {
            own_nats,
            source,
            client,
            subscription: subscription.ready_chunks(4096),
            gateway,
        })
    }

    /// Stops the gateway, then the rest. A gateway that exits badly when stopped is noted,
    /// unless the run had already stopped for a reason of its own.
    pub async fn stop(self, stopped_early: bool, notes: &mut Vec<String>) {
        match self.gateway.stop(Duration::from_secs(5)).await {
            Some(status) if !status.success() && !stopped_early => {
                notes.push(format!("the gateway exited with {status} when stopped"));
            }
            _ => {}
        }
        drop(self.subscription);
        drop(self.client);
        if let Source::Fake(fake) = self.source {
            fake.shutdown().await;
        }
        if let Some(server) = self.own_nats {
            server.stop().await;
        }
    }
}

/// The name of a cache mode as the gateway's configuration spells it.
pub(super) fn cache_name(cache: CacheMode) -> &'static str {
    match cache {
        CacheMode::None => "none",
        CacheMode::Guilds => "guilds",
        CacheMode::Members => "members",
    }
}

/// The gateway's environment for this run.
fn gateway_env(
    workload: &GatewayWorkload,
    fake_url: &str,
    nats_url: &str,
    prefix: &str,
) -> Vec<(String, String)> {
    let identify = match workload.identify_concurrency {
        IdentifyConcurrency::Unlimited => "unlimited".to_owned(),
        IdentifyConcurrency::PerFiveSeconds(n) => n.to_string(),
    };
    [
        ("DISCORD_TOKEN", TOKEN),
        ("GATEWAY_SHARDS", &format!("0-{}", workload.shards - 1)),
        ("GATEWAY_TOTAL_SHARDS", &workload.shards.to_string()),
        ("GATEWAY_URL", fake_url),
        ("GATEWAY_IDENTIFY_CONCURRENCY", &identify),
        ("GATEWAY_CACHE", cache_name(workload.cache)),
        ("NATS_URL", nats_url),
        ("GATEWAY_SUBJECT_PREFIX", prefix),
        ("GATEWAY_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Subject prefix the gateway publishes under; the production one when the NATS is ours.
fn subject_prefix(own_nats: bool) -> String {
    if own_nats {
        "arrakis.gateway".to_owned()
    } else {
        // A shared server may carry other runs (or production): keep to our own subjects.
        format!(
            "thumper.run{}x{}.gateway",
            std::process::id(),
            unix_micros()
        )
    }
}
