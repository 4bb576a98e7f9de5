//! `thumper gateway`: load-tests the reference gateway end to end.
//!
//! One run starts NATS (or uses the given URL), the fake Discord ([`crate::gateway_load::fake_discord`]) and the
//! real gateway binary as a child process; waits until every guild's GUILD_CREATE has come back
//! through NATS; then drives member events along the rate stages, injects the scheduled faults,
//! and measures what arrives on thumper's own NATS subscription:
//!
//! - `event_latency` (trend, µs): the event's due time at the fake → the envelope's arrival;
//! - `events_sent`, `events_delivered`, `events_lost`, `events_duplicated` (counters), by the
//!   fake's per-shard event ids;
//! - `reconnects`, `resumes`, `identifies`, `replayed_dispatches` (counters, as the fake saw
//!   them; replayed dispatches are those a resuming gateway had missed);
//! - `gateway_rss_mb`, `gateway_cpu_percent`, `gateway_rss_mb_per_1k_guilds` (gauges, from
//!   /proc once a second).
//!
//! The lead's scenario parser hands the `[gateway]` table to [`GatewayWorkload`]; thresholds and
//! reports work on the returned metrics like on any scenario's.

pub mod fake_discord;

mod process;
mod recorder;
mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::{Deserialize, Deserializer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::gateway::config::{CacheMode, IdentifyConcurrency};
use crate::gateway_load::fake_discord::pace::{event_schedule, unix_micros};
use crate::gateway_load::fake_discord::{
    FakeConfig, FakeDiscord, FakeStats, Fault, MemberMix, World,
};
use crate::metrics::summary::{CounterStats, GaugeStats, Interval, Metric};
use crate::scenario::duration;
pub use crate::stack::nats::NatsServer;
pub use process::{GatewayProcess, ProcSample, ProcSampler};
use recorder::{Gauge, Recorder};
pub use run::{run_gateway, GatewayOptions};

/// The `[gateway]` table of a scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayWorkload {
    /// Guilds the fake serves.
    #[serde(default = "default_guilds")]
    pub guilds: u32,
    /// Members per guild.
    #[serde(default = "default_members")]
    pub members_per_guild: u32,
    /// Shards the gateway runs (and the fake spreads guilds over).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// The gateway's cache mode (`none`, `guilds`, `members`); the gateway's default otherwise.
    #[serde(default)]
    pub cache: CacheMode,
    /// Identifies per 5 s, or `unlimited` (the fake does not rate-limit).
    #[serde(default = "default_identify")]
    pub identify_concurrency: IdentifyConcurrency,
    /// Weights of GUILD_MEMBER_ADD / UPDATE / REMOVE.
    #[serde(default)]
    pub member_events: MemberMix,
    /// Faults to inject, at times counted from the start of the member events.
    #[serde(default)]
    pub faults: Vec<FaultAt>,
    /// Heartbeat interval the fake announces; a zombie connection is noticed within two.
    #[serde(default = "default_heartbeat", deserialize_with = "de_duration")]
    pub heartbeat_interval: Duration,
    /// How long loading every guild may take.
    #[serde(default = "default_load_timeout", deserialize_with = "de_duration")]
    pub load_timeout: Duration,
    /// How long to wait after the last stage for in-flight events before counting losses.
    #[serde(default = "default_drain_timeout", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
}

/// One scheduled fault: `[[gateway.faults]] at = "20s", kind = "drop", shard = 0`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAt {
    /// When the fault happens, counted from the start of the member events.
    #[serde(deserialize_with = "de_duration")]
    pub at: Duration,
    /// What the fake does.
    pub kind: Fault,
    /// The shard it hits.
    #[serde(default)]
    pub shard: u32,
}

fn default_guilds() -> u32 {
    1000
}
fn default_members() -> u32 {
    100
}
fn default_shards() -> u32 {
    4
}
fn default_identify() -> IdentifyConcurrency {
    IdentifyConcurrency::Unlimited
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_load_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for GatewayWorkload {
    fn default() -> Self {
        GatewayWorkload {
            guilds: default_guilds(),
            members_per_guild: default_members(),
            shards: default_shards(),
            cache: CacheMode::default(),
            identify_concurrency: default_identify(),
            member_events: MemberMix::default(),
            faults: Vec::new(),
            heartbeat_interval: default_heartbeat(),
            load_timeout: default_load_timeout(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// A `[gateway]` duration: a TOML number of seconds, or text in the scenario's one grammar where a
/// bare number is seconds too (`"250ms"`, `"20s"`, `"2m"`, `"1.5"`), as this table always took.
fn de_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(f64),
        Text(String),
    }
    match Text::deserialize(de)? {
        Text::Seconds(s) => duration::from_seconds(s),
        Text::Text(t) => duration::parse_or_seconds(&t),
    }
    .map_err(serde::de::Error::custom)
}

/// A workload that cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    /// A count that must be at least 1 is 0; names the key.
    #[error("gateway.{0} must be at least 1")]
    Zero(&'static str),
    /// A fault names a shard the run does not have.
    #[error("gateway.faults[{index}]: shard {shard} does not exist (gateway.shards = {shards})")]
    FaultShard {
        /// The fault's index in `gateway.faults`.
        index: usize,
        /// The shard it names.
        shard: u32,
        /// `gateway.shards`.
        shards: u32,
    },
}

impl GatewayWorkload {
    /// Checks the counts and the faults' shards before anything starts.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.guilds == 0 {
            return Err(WorkloadError::Zero("guilds"));
        }
        if self.shards == 0 {
            return Err(WorkloadError::Zero("shards"));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(WorkloadError::Zero("heartbeat_interval"));
        }
        for (index, f) in self.faults.iter().enumerate() {
            if f.shard >= self.shards {
                return Err(WorkloadError::FaultShard {
                    index,
                    shard: f.shard,
                    shards: self.shards,
                });
            }
        }
        Ok(())
    }

    fn world(&self) -> World {
        World {
            guilds: self.guilds,
            members_per_guild: self.members_per_guild,
            total_shards: self.shards,
        }
    }
}

/// One run's inputs.
pub struct GatewayRunConfig {
    /// The `[gateway]` table.
    pub workload: GatewayWorkload,
    /// `(duration, target events per second)`, each ramping linearly from the previous target
    /// (0 before the first), as k6's ramping-arrival-rate stages.
    pub rate_stages: Vec<(Duration, u32)>,
    /// `None`: start a nats-server of our own.
    pub nats_url: Option<String>,
    /// The gateway binary to start.
    pub gateway_bin: PathBuf,
    /// Cancelled to stop the run early (Ctrl-C); what was measured is still reported.
    pub cancel: CancellationToken,
    /// Don't echo the gateway's log lines.
    pub quiet: bool,
}

/// One run's results, in the summary model's terms.
#[derive(Debug, Clone)]
pub struct GatewayRunOutcome {
    /// Run totals by metric name.
    pub metrics: BTreeMap<String, Metric>,
    /// One point per interval.
    pub time_series: Vec<Interval>,
    /// Seconds of member events actually driven.
    pub duration_s: f64,
    /// Why the run stopped early; `None` when it ran out.
    pub stop_reason: Option<String>,
    /// Findings worth a reader's attention.
    pub notes: Vec<String>,
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

/// Gauges sampled from the gateway process.
#[derive(Default)]
struct ProcessGauges {
    rss: Gauge,
    cpu: Gauge,
    rss_per_1k: Gauge,
}

impl ProcessGauges {
    fn sample(&mut self, gateway: &mut GatewayProcess, guilds: u32) -> BTreeMap<String, f64> {
        let mut now = BTreeMap::new();
        if let Some(ProcSample {
            rss_mb,
            cpu_percent,
        }) = gateway.sample()
        {
            let per_1k = rss_mb * 1000.0 / f64::from(guilds.max(1));
            self.rss.record(rss_mb);
            self.rss_per_1k.record(per_1k);
            now.insert("gateway_rss_mb".to_owned(), rss_mb);
            now.insert("gateway_rss_mb_per_1k_guilds".to_owned(), per_1k);
            if let Some(cpu) = cpu_percent {
                self.cpu.record(cpu);
                now.insert("gateway_cpu_percent".to_owned(), cpu);
            }
        }
        now
    }
}

/// Counter deltas between two snapshots of the fake's stats.
fn fake_deltas(before: &FakeStats, now: &FakeStats) -> BTreeMap<String, u64> {
    BTreeMap::from([
        (
            "events_sent".to_owned(),
            now.total_events_sent() - before.total_events_sent(),
        ),
        ("identifies".to_owned(), now.identifies - before.identifies),
        ("reconnects".to_owned(), now.reconnects - before.reconnects),
        ("resumes".to_owned(), now.resumes - before.resumes),
        (
            "replayed_dispatches".to_owned(),
            now.replayed - before.replayed,
        ),
    ])
}

fn record_all(recorder: &mut Recorder, msgs: &[async_nats::Message]) {
    for msg in msgs {
        recorder.record(&msg.payload, unix_micros());
    }
}

/// Runs one gateway load test.
pub async fn run(cfg: GatewayRunConfig) -> anyhow::Result<GatewayRunOutcome> {
    let workload = &cfg.workload;
    workload.validate()?;
    let world = workload.world();
    let mut notes = Vec::new();

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

    let mut fake_config = FakeConfig::new(world);
    fake_config.heartbeat_interval = workload.heartbeat_interval;
    fake_config.member_mix = workload.member_events;
    let token = "thumper-fake-token".to_owned();
    fake_config.token = Some(token.clone());
    let fake = FakeDiscord::start(fake_config)
        .await
        .context("starting the fake Discord gateway")?;

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
    // Whatever has arrived is taken in one go, so the select below runs once per burst rather
    // than once per message.
    let mut subscription = subscription.ready_chunks(4096);

    let identify = match workload.identify_concurrency {
        IdentifyConcurrency::Unlimited => "unlimited".to_owned(),
        IdentifyConcurrency::PerFiveSeconds(n) => n.to_string(),
    };
    let cache = match workload.cache {
        CacheMode::None => "none",
        CacheMode::Guilds => "guilds",
        CacheMode::Members => "members",
    };
    let env: Vec<(String, String)> = [
        ("DISCORD_TOKEN", token.as_str()),
        ("GATEWAY_SHARDS", &format!("0-{}", workload.shards - 1)),
        ("GATEWAY_TOTAL_SHARDS", &workload.shards.to_string()),
        ("GATEWAY_URL", fake.url()),
        ("GATEWAY_IDENTIFY_CONCURRENCY", &identify),
        ("GATEWAY_CACHE", cache),
        ("NATS_URL", &nats_url),
        ("GATEWAY_SUBJECT_PREFIX", &prefix),
        ("GATEWAY_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut gateway = GatewayProcess::spawn(&cfg.gateway_bin, &env, cfg.quiet)?;
    let mut recorder = Recorder::new(workload.shards);
    let mut gauges = ProcessGauges::default();

    // Load: every guild must come back through the gateway and NATS.
    let load_started = Instant::now();
    let load_deadline = load_started + workload.load_timeout;
    let mut stop_reason = None;
    while recorder.guilds_loaded() < world.guilds as usize {
        tokio::select! {
            msgs = subscription.next() => match msgs {
                Some(msgs) => record_all(&mut recorder, &msgs),
                None => bail!("the NATS subscription ended while loading guilds"),
            },
            _ = tokio::time::sleep_until(load_deadline) => bail!(
                "only {} of {} guilds arrived through the gateway within {:?}; gateway log:\n{}",
                recorder.guilds_loaded(), world.guilds, workload.load_timeout, gateway.log_tail()
            ),
            status = gateway.wait() => bail!(
                "the gateway exited while loading guilds ({}); its log:\n{}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string()), gateway.log_tail()
            ),
            _ = cfg.cancel.cancelled() => {
                stop_reason = Some("interrupted while loading guilds".to_owned());
                break;
            }
        }
    }
    let load_s = load_started.elapsed().as_secs_f64();
    // Let the allocator settle on the loaded state before the first memory reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loaded = gauges.sample(&mut gateway, world.guilds);
    notes.push(format!(
        "loaded {} guilds x {} members over {} shards in {load_s:.2} s; gateway RSS after load \
         {:.1} MB (cache mode {cache})",
        world.guilds,
        world.members_per_guild,
        workload.shards,
        loaded.get("gateway_rss_mb").copied().unwrap_or(f64::NAN),
    ));

    // Member events along the stages, with faults, sampled once a second.
    let schedule = event_schedule(&cfg.rate_stages, 1.0);
    let mut faults = workload.faults.clone();
    faults.sort_by_key(|f| f.at);
    let mut faults = faults.into_iter().peekable();
    // Counters cover the whole run, loading included (a reconnect while loading counts too).
    let mut last_stats = FakeStats::default();
    let mut started = Instant::now();
    let mut duration_s = 0.0;
    if stop_reason.is_none() {
        started = fake.start_events(&cfg.rate_stages).await;
    }
    let end = started + schedule.duration();
    let mut last_tick = started;
    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    if stop_reason.is_none() {
        let end_sleep = tokio::time::sleep_until(end);
        tokio::pin!(end_sleep);
        let fault_sleep = tokio::time::sleep_until(faults.peek().map_or(end, |f| started + f.at));
        tokio::pin!(fault_sleep);
        loop {
            tokio::select! {
                biased;
                _ = cfg.cancel.cancelled() => {
                    stop_reason = Some("interrupted".to_owned());
                    break;
                }
                status = gateway.wait() => {
                    stop_reason = Some(format!(
                        "the gateway exited during the run ({})",
                        status.map_or_else(|e| e.to_string(), |s| s.to_string())
                    ));
                    notes.push(format!("gateway log tail:\n{}", gateway.log_tail()));
                    break;
                }
                _ = &mut fault_sleep, if faults.peek().is_some() => {
                    let fault = faults.next().expect("peeked");
                    if let Some(next) = faults.peek() {
                        fault_sleep.as_mut().reset(started + next.at);
                    }
                    let injected = fake.inject(fault.shard, fault.kind);
                    notes.push(format!(
                        "fault {} on shard {} at {:.1} s{}",
                        fault.kind.as_str(), fault.shard, started.elapsed().as_secs_f64(),
                        if injected { "" } else { ": no connection served the shard, skipped" }
                    ));
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    let stats = fake.stats();
                    let counters = fake_deltas(&last_stats, &stats);
                    let sampled = gauges.sample(&mut gateway, world.guilds);
                    recorder.close_interval(
                        now.duration_since(started).as_secs_f64(),
                        now.duration_since(last_tick).as_secs_f64(),
                        stats.active_shards,
                        counters,
                        sampled,
                    );
                    last_tick = now;
                    last_stats = stats;
                }
                _ = &mut end_sleep => break,
                msgs = subscription.next() => match msgs {
                    Some(msgs) => record_all(&mut recorder, &msgs),
                    None => {
                        stop_reason = Some("the NATS subscription ended".to_owned());
                        break;
                    }
                },
            }
        }
        if stop_reason.is_none() {
            // The drivers end on their own with the stages' last event (moments from now).
            fake.finish_events().await;
        } else {
            fake.stop_events().await;
        }
        duration_s = started.elapsed().as_secs_f64();
    }

    // Drain: wait for in-flight events until all arrived or nothing arrives for a while.
    let sent_total = fake.stats().total_events_sent();
    let mut idle_deadline = Instant::now() + workload.drain_timeout;
    while recorder.totals().delivered < sent_total && stop_reason.is_none() {
        tokio::select! {
            msgs = subscription.next() => match msgs {
                Some(msgs) => {
                    record_all(&mut recorder, &msgs);
                    idle_deadline = Instant::now() + workload.drain_timeout;
                }
                None => break,
            },
            _ = tokio::time::sleep_until(idle_deadline) => break,
        }
    }
    let final_stats = fake.stats();
    let now = Instant::now();
    let sampled = gauges.sample(&mut gateway, world.guilds);
    recorder.close_interval(
        now.duration_since(started).as_secs_f64(),
        now.duration_since(last_tick).as_secs_f64(),
        final_stats.active_shards,
        fake_deltas(&last_stats, &final_stats),
        sampled,
    );

    match gateway.stop(Duration::from_secs(5)).await {
        Some(status) if !status.success() && stop_reason.is_none() => {
            notes.push(format!("the gateway exited with {status} when stopped"));
        }
        _ => {}
    }
    drop(subscription);
    drop(client);
    fake.shutdown().await;
    if let Some(server) = own_nats {
        server.stop().await;
    }

    let totals = recorder.totals();
    let lost = sent_total.saturating_sub(totals.delivered);
    if lost > 0 {
        notes.push(format!(
            "{lost} of {sent_total} member events never arrived within the {:?} drain",
            workload.drain_timeout
        ));
    }
    if final_stats.events_skipped > 0 {
        notes.push(format!(
            "{} member events were due while a shard had no session (after an invalid session) \
             and were never sent, as Discord would not send them",
            final_stats.events_skipped
        ));
    }
    if totals.unparsable > 0 {
        notes.push(format!(
            "{} NATS messages were not envelopes",
            totals.unparsable
        ));
    }

    let counter = |count: u64| {
        Metric::Counter(CounterStats {
            count,
            rate_per_s: if duration_s > 0.0 {
                count as f64 / duration_s
            } else {
                0.0
            },
            by_class: BTreeMap::new(),
        })
    };
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "event_latency".to_owned(),
        Metric::Trend(recorder.latency_trend(duration_s)),
    );
    metrics.insert("events_sent".to_owned(), counter(sent_total));
    metrics.insert("events_delivered".to_owned(), counter(totals.delivered));
    metrics.insert("events_lost".to_owned(), counter(lost));
    metrics.insert("events_duplicated".to_owned(), counter(totals.duplicated));
    metrics.insert("reconnects".to_owned(), counter(final_stats.reconnects));
    metrics.insert("resumes".to_owned(), counter(final_stats.resumes));
    metrics.insert(
        "replayed_dispatches".to_owned(),
        counter(final_stats.replayed),
    );
    metrics.insert("identifies".to_owned(), counter(final_stats.identifies));
    for (name, gauge) in [
        ("gateway_rss_mb", &gauges.rss),
        ("gateway_cpu_percent", &gauges.cpu),
        ("gateway_rss_mb_per_1k_guilds", &gauges.rss_per_1k),
    ] {
        let stats: GaugeStats = gauge.stats().unwrap_or_default();
        metrics.insert(name.to_owned(), Metric::Gauge(stats));
    }

    Ok(GatewayRunOutcome {
        metrics,
        time_series: std::mem::take(&mut recorder.intervals),
        duration_s,
        stop_reason,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_gateway_table() {
        let w: GatewayWorkload = toml::from_str(
            r#"
            guilds = 10
            members_per_guild = 5
            shards = 2
            cache = "members"
            identify_concurrency = 4
            heartbeat_interval = "1s"
            member_events = { add = 1, update = 0, remove = 1 }
            [[faults]]
            at = "2s"
            kind = "invalid_session"
            shard = 1
            "#,
        )
        .unwrap();
        assert_eq!(w.guilds, 10);
        assert_eq!(w.cache, CacheMode::Members);
        assert_eq!(
            w.identify_concurrency,
            IdentifyConcurrency::PerFiveSeconds(4)
        );
        assert_eq!(w.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(w.faults[0].kind, Fault::InvalidSession);
        assert_eq!(w.faults[0].at, Duration::from_secs(2));
        assert_eq!(w.load_timeout, Duration::from_secs(120));
        w.validate().unwrap();

        let w: GatewayWorkload = toml::from_str(r#"identify_concurrency = "unlimited""#).unwrap();
        assert_eq!(w, GatewayWorkload::default());
        assert!(toml::from_str::<GatewayWorkload>("guild = 1").is_err());
    }

    #[test]
    fn rejects_faults_on_missing_shards() {
        let w = GatewayWorkload {
            shards: 2,
            faults: vec![FaultAt {
                at: Duration::ZERO,
                kind: Fault::Drop,
                shard: 2,
            }],
            ..GatewayWorkload::default()
        };
        assert_eq!(
            w.validate(),
            Err(WorkloadError::FaultShard {
                index: 0,
                shard: 2,
                shards: 2
            })
        );
    }

    #[test]
    fn durations_are_seconds_as_numbers_and_the_scenario_grammar_as_text() {
        let w: GatewayWorkload = toml::from_str(
            "heartbeat_interval = 1.5\nload_timeout = \"2\"\ndrain_timeout = \"1m 30s\"",
        )
        .unwrap();
        assert_eq!(w.heartbeat_interval, Duration::from_millis(1500));
        assert_eq!(w.load_timeout, Duration::from_secs(2));
        assert_eq!(w.drain_timeout, Duration::from_secs(90));
        for bad in [
            "heartbeat_interval = -1",
            "heartbeat_interval = inf",
            "load_timeout = \"5 parsecs\"",
        ] {
            assert!(toml::from_str::<GatewayWorkload>(bad).is_err(), "{bad}");
        }
    }
}
