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
//! These are samples of the run's one aggregator ([`crate::metrics::aggregator`], the gateway's
//! metrics registered as its extra metrics), so a gateway run has what every run has: intervals,
//! the progress line, the live `abort_on_fail` check, `--out`, the generator's own gauges.
//!
//! The lead's scenario parser hands the `[gateway]` table to [`GatewayWorkload`]; thresholds and
//! reports work on the returned metrics like on any scenario's.

pub mod fake_discord;
pub mod floor;

mod harness;
mod meter;
mod process;
mod recorder;
mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt;
use serde::{Deserialize, Deserializer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::gateway::config::{CacheMode, IdentifyConcurrency};
use crate::gateway_load::fake_discord::pace::event_schedule;
use crate::gateway_load::fake_discord::{Fault, MemberMix, World};
use crate::metrics::aggregator::Watcher;
pub use crate::metrics::process::{ProcSample, ProcSampler};
use crate::metrics::summary::{Interval, Metric};
use crate::scenario::duration;
pub use crate::stack::nats::NatsServer;
use harness::Harness;
use meter::{record_all, Meter};
pub use process::GatewayProcess;
use recorder::Recorder;
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
    /// What carries the member events to NATS: the gateway, or the floor publisher.
    pub forwarder: Forwarder,
    /// Cancelled to stop the run early (Ctrl-C); what was measured is still reported.
    pub cancel: CancellationToken,
    /// Don't echo the gateway's log lines.
    pub quiet: bool,
    /// Told at every interval tick, as in every run: the progress line, the live
    /// `abort_on_fail` check, the `--out` outputs. The first to ask for a stop stops the run.
    pub watchers: Vec<Box<dyn Watcher>>,
}

/// What carries the fake's member events to NATS in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarder {
    /// The gateway binary at this path, fed by the fake Discord over WebSockets: the system
    /// under test.
    Gateway(PathBuf),
    /// The floor publisher binary (`gateway-floor`) at this path: the same events published
    /// straight to NATS, what the gateway is measured against ([`floor`]). Its process stands
    /// where the gateway's does, so the `gateway_*` gauges read it. No guilds are loaded and no
    /// fault can be injected (there is no session).
    Floor(PathBuf),
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
    /// Why a watcher stopped the run (a failed `abort_on_fail` threshold), if one did.
    pub aborted_by: Option<String>,
    /// Findings worth a reader's attention.
    pub notes: Vec<String>,
}

/// Runs one gateway load test.
pub async fn run(mut cfg: GatewayRunConfig) -> anyhow::Result<GatewayRunOutcome> {
    cfg.workload.validate()?;
    let floor = matches!(cfg.forwarder, Forwarder::Floor(_));
    if floor && !cfg.workload.faults.is_empty() {
        bail!("the floor publisher has no session to inject faults into: drop gateway.faults");
    }
    let watchers = std::mem::take(&mut cfg.watchers);
    let mut h = Harness::start(&cfg).await?;
    let mut recorder = Recorder::new(cfg.workload.shards);
    let load_started = Instant::now();
    // The floor has no session: nothing to load.
    let mut stop_reason = if floor {
        None
    } else {
        load_guilds(&cfg, &mut h, &mut recorder).await?
    };
    let load_s = load_started.elapsed().as_secs_f64();
    let (loaded, note) = after_load(&cfg.workload, &mut h, load_s, floor).await;
    let mut notes = vec![note];

    let started = match stop_reason {
        None => {
            let timeout = cfg.workload.load_timeout;
            h.source.start_events(&cfg.rate_stages, timeout).await?
        }
        Some(_) => Instant::now(),
    };
    let mut meter = Meter::start(&cfg, started, watchers, recorder, loaded);
    meter.poll(h.source.stats(), &mut h.gateway);
    let mut duration_s = 0.0;
    if stop_reason.is_none() {
        stop_reason = drive_events(&cfg, &mut h, &mut meter, started, &mut notes).await;
        duration_s = started.elapsed().as_secs_f64();
    }
    if stop_reason.is_none() {
        drain(&mut h, meter.recorder(), cfg.workload.drain_timeout).await;
    }
    meter.poll(h.source.stats(), &mut h.gateway);
    let final_stats = meter.last_stats().clone();
    let totals = meter.recorder().totals();
    let sent_total = final_stats.total_events_sent();
    let lost = sent_total.saturating_sub(totals.delivered);
    let aggregated = meter.finish(lost).await?;
    h.stop(stop_reason.is_some(), &mut notes).await;

    if lost > 0 {
        notes.push(format!(
            "{lost} of {sent_total} member events never arrived within the {:?} drain",
            cfg.workload.drain_timeout
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
    if aggregated.late_samples > 0 {
        notes.push(format!(
            "{} samples arrived after their interval closed; they are in the totals and the interval counts, not in that interval's percentiles",
            aggregated.late_samples
        ));
    }
    Ok(GatewayRunOutcome {
        metrics: aggregated.metrics,
        time_series: aggregated.time_series,
        duration_s,
        stop_reason: aggregated.aborted_by.clone().or(stop_reason),
        aborted_by: aggregated.aborted_by,
        notes,
    })
}

/// Waits until every guild came back through the gateway and NATS. `Ok(Some(reason))`: the run
/// was interrupted meanwhile.
async fn load_guilds(
    cfg: &GatewayRunConfig,
    h: &mut Harness,
    recorder: &mut Recorder,
) -> anyhow::Result<Option<String>> {
    let guilds = cfg.workload.guilds as usize;
    let deadline = Instant::now() + cfg.workload.load_timeout;
    while recorder.guilds_loaded() < guilds {
        tokio::select! {
            msgs = h.subscription.next() => match msgs {
                Some(msgs) => record_all(recorder, &msgs),
                None => bail!("the NATS subscription ended while loading guilds"),
            },
            _ = tokio::time::sleep_until(deadline) => bail!(
                "only {} of {guilds} guilds arrived through the gateway within {:?}; gateway log:\n{}",
                recorder.guilds_loaded(), cfg.workload.load_timeout, h.gateway.log_tail()
            ),
            status = h.gateway.wait() => bail!(
                "the gateway exited while loading guilds ({}); its log:\n{}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string()), h.gateway.log_tail()
            ),
            _ = cfg.cancel.cancelled() => {
                return Ok(Some("interrupted while loading guilds".to_owned()));
            }
        }
    }
    Ok(None)
}

/// The gateway's /proc reading once the allocator settled on the loaded state, and a note on
/// the load.
async fn after_load(
    workload: &GatewayWorkload,
    h: &mut Harness,
    load_s: f64,
    floor: bool,
) -> (Option<ProcSample>, String) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loaded = h.gateway.sample();
    if floor {
        let rss = loaded.map_or(f64::NAN, |s| s.rss_mb);
        let note = format!(
            "floor: the member events of {} guilds x {} members over {} shards published \
             straight to NATS, no gateway; the publisher's RSS at the start {rss:.1} MB",
            workload.guilds, workload.members_per_guild, workload.shards
        );
        return (loaded, note);
    }
    let note = format!(
        "loaded {} guilds x {} members over {} shards in {load_s:.2} s; gateway RSS after load \
         {:.1} MB (cache mode {})",
        workload.guilds,
        workload.members_per_guild,
        workload.shards,
        loaded.map_or(f64::NAN, |s| s.rss_mb),
        harness::cache_name(workload.cache),
    );
    (loaded, note)
}

/// Drives the member events along the stages, injects the faults, and polls once a second until
/// the stages end; returns why the run stopped early, if it did.
async fn drive_events(
    cfg: &GatewayRunConfig,
    h: &mut Harness,
    meter: &mut Meter,
    started: Instant,
    notes: &mut Vec<String>,
) -> Option<String> {
    let end = started + event_schedule(&cfg.rate_stages, 1.0).duration();
    let mut faults = cfg.workload.faults.clone();
    faults.sort_by_key(|f| f.at);
    let mut faults = faults.into_iter().peekable();
    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let end_sleep = tokio::time::sleep_until(end);
    tokio::pin!(end_sleep);
    let fault_sleep = tokio::time::sleep_until(faults.peek().map_or(end, |f| started + f.at));
    tokio::pin!(fault_sleep);
    let abort = meter.abort.clone();
    let stop_reason = loop {
        tokio::select! {
            biased;
            _ = cfg.cancel.cancelled() => break Some("interrupted".to_owned()),
            // The aggregator holds the watcher's reason; the outcome takes it from there.
            _ = abort.cancelled() => break Some("stopped by a watcher".to_owned()),
            status = h.gateway.wait() => {
                notes.push(format!("gateway log tail:\n{}", h.gateway.log_tail()));
                break Some(format!(
                    "the gateway exited during the run ({})",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                ));
            }
            _ = &mut fault_sleep, if faults.peek().is_some() => {
                let fault = faults.next().expect("peeked");
                if let Some(next) = faults.peek() {
                    fault_sleep.as_mut().reset(started + next.at);
                }
                let injected = h.source.inject(fault.shard, fault.kind);
                notes.push(format!(
                    "fault {} on shard {} at {:.1} s{}",
                    fault.kind.as_str(), fault.shard, started.elapsed().as_secs_f64(),
                    if injected { "" } else { ": no connection served the shard, skipped" }
                ));
            }
            _ = ticker.tick() => meter.poll(h.source.stats(), &mut h.gateway),
            _ = &mut end_sleep => break None,
            msgs = h.subscription.next() => match msgs {
                Some(msgs) => record_all(meter.recorder(), &msgs),
                None => break Some("the NATS subscription ended".to_owned()),
            },
        }
    };
    if stop_reason.is_none() {
        // The drivers end on their own with the stages' last event (moments from now).
        h.source.finish_events().await;
    } else {
        h.source.stop_events().await;
    }
    stop_reason
}

/// Waits for in-flight events until all arrived or nothing arrives for `idle`.
async fn drain(h: &mut Harness, recorder: &mut Recorder, idle: Duration) {
    let sent_total = h.source.stats().total_events_sent();
    let mut idle_deadline = Instant::now() + idle;
    while recorder.totals().delivered < sent_total {
        tokio::select! {
            msgs = h.subscription.next() => match msgs {
                Some(msgs) => {
                    record_all(recorder, &msgs);
                    idle_deadline = Instant::now() + idle;
                }
                None => break,
            },
            _ = tokio::time::sleep_until(idle_deadline) => break,
        }
    }
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
