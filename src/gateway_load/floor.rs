//! The floor the gateway is measured against: the fake's member events published straight to
//! NATS, with no Twilight, no shard, no WebSocket, and received by the same recorder.
//!
//! The floor publisher is a process of its own (`gateway-floor`, [`serve`]) so its CPU is read
//! from /proc exactly as the gateway's is. Each shard's events are paced by the fake's own
//! [`pace`] loop and built by its own [`MemberEvents`] and payload writer, on a thread per shard
//! as in the fake; each event's `d` is wrapped by the gateway's own envelope writer
//! ([`write_envelope`]) and published through the gateway's own [`Publisher`] (same client
//! settings) on the subject the gateway would use. What the floor does not pay: the WebSocket
//! write and read, routing the dispatch (one JSON pass), Twilight's shard. What it pays that the
//! gateway does not: building the event's JSON (the fake's share, about 1 µs).
//!
//! The harness side ([`FloorDrive`]) starts the publishing with a NATS request once the process
//! is subscribed, and counts the events sent from the same schedule the publisher follows.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fake_discord::pace::{
    due_unix, event_schedule, pace, unix_micros, MemberEvent, MemberEvents, RateSchedule,
};
use super::fake_discord::payload::{write_member_data, MemberEventKind};
use super::fake_discord::{FakeStats, MemberMix, World};
use crate::gateway::envelope::{write_envelope, EnvelopeHead};
use crate::gateway::publish::Publisher;

/// What the floor publisher needs, passed to its process as environment variables.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorConfig {
    /// The NATS server.
    pub nats_url: String,
    /// Subjects are `<prefix>.<shard>.<EVENT_TYPE>`, as the gateway's.
    pub subject_prefix: String,
    /// The fake's world (the shard count is the world's).
    pub world: World,
    /// The member event mix.
    pub mix: MemberMix,
    /// The rate stages, `(duration, events per second)` over all shards.
    pub stages: Vec<(Duration, u32)>,
}

impl FloorConfig {
    /// The variables [`FloorConfig::from_env`] reads; the gateway's names where they mean the
    /// same.
    pub fn to_env(&self) -> Vec<(String, String)> {
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|(d, r)| format!("{}:{r}", d.as_micros()))
            .collect();
        let m = self.mix;
        [
            ("NATS_URL", self.nats_url.clone()),
            ("GATEWAY_SUBJECT_PREFIX", self.subject_prefix.clone()),
            ("GATEWAY_TOTAL_SHARDS", self.world.total_shards.to_string()),
            ("FLOOR_GUILDS", self.world.guilds.to_string()),
            (
                "FLOOR_MEMBERS_PER_GUILD",
                self.world.members_per_guild.to_string(),
            ),
            ("FLOOR_MEMBER_MIX", format!("{}:{}:{}", m.add, m.update, m.remove)),
            ("FLOOR_STAGES", stages.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Reads the configuration `to_env` wrote; the error names the variable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<FloorConfig, String> {
        let get = |k: &str| var(k).ok_or_else(|| format!("{k} is not set"));
        let num = |k: &str| -> Result<u32, String> {
            get(k)?
                .parse()
                .map_err(|e| format!("{k}: not a count ({e})"))
        };
        let pairs = |k: &str, sep: char| -> Result<Vec<u64>, String> {
            get(k)?
                .split([sep, ','])
                .map(|p| p.trim().parse().map_err(|e| format!("{k}: {p:?} ({e})")))
                .collect()
        };
        let mix = pairs("FLOOR_MEMBER_MIX", ':')?;
        let [add, update, remove] = mix[..] else {
            return Err("FLOOR_MEMBER_MIX: expected ADD:UPDATE:REMOVE".to_owned());
        };
        let stages = pairs("FLOOR_STAGES", ':')?;
        if stages.is_empty() || stages.len() % 2 != 0 {
            return Err("FLOOR_STAGES: expected MICROS:RATE[,MICROS:RATE...]".to_owned());
        }
        Ok(FloorConfig {
            nats_url: get("NATS_URL")?,
            subject_prefix: get("GATEWAY_SUBJECT_PREFIX")?,
            world: World {
                guilds: num("FLOOR_GUILDS")?,
                members_per_guild: num("FLOOR_MEMBERS_PER_GUILD")?,
                total_shards: num("GATEWAY_TOTAL_SHARDS")?.max(1),
            },
            mix: MemberMix {
                add: add as u32,
                update: update as u32,
                remove: remove as u32,
            },
            stages: stages
                .chunks(2)
                .map(|p| (Duration::from_micros(p[0]), p[1] as u32))
                .collect(),
        })
    }

    fn schedule(&self) -> RateSchedule {
        event_schedule(&self.stages, 1.0 / f64::from(self.world.total_shards))
    }
}

/// The subject the harness's start request goes to: beside the events' subjects, not under
/// them, so the recorder's `<prefix>.>` does not take it for an event.
fn start_subject(prefix: &str) -> String {
    format!("{prefix}_floor.start")
}

/// The floor publisher's life: connect, wait for the harness's start request, publish every
/// shard's events along the stages, then idle until `cancel` (the harness stops it as it stops
/// the gateway). Returns the events published.
pub async fn serve(config: FloorConfig, cancel: CancellationToken) -> anyhow::Result<u64> {
    let publisher = Publisher::connect(Some(&config.nats_url)).await?;
    let Publisher::Nats(client) = &publisher else {
        unreachable!("a URL was given")
    };
    let mut starts = client
        .subscribe(start_subject(&config.subject_prefix))
        .await
        .context("subscribing to the start subject")?;
    client.flush().await.context("flushing the subscription")?;
    let request = tokio::select! {
        _ = cancel.cancelled() => return Ok(0),
        request = futures_util::StreamExt::next(&mut starts) => {
            request.context("the start subscription ended")?
        }
    };
    let start = Instant::now();
    let start_unix = unix_micros();
    if let Some(reply) = request.reply {
        client.publish(reply, Bytes::new()).await?;
    }
    let config = Arc::new(config);
    let drivers: Vec<_> = (0..config.world.total_shards)
        .map(|shard| {
            let (config, publisher) = (Arc::clone(&config), publisher.clone());
            let (handle, stop) = (tokio::runtime::Handle::current(), cancel.clone());
            tokio::task::spawn_blocking(move || {
                publish_shard(&config, shard, &publisher, &handle, start, start_unix, &stop)
            })
        })
        .collect();
    let mut published = 0;
    for driver in drivers {
        published += driver.await.context("a floor driver panicked")??;
    }
    publisher.flush().await;
    cancel.cancelled().await;
    Ok(published)
}

/// One shard's events along the schedule, each published as the gateway would publish it.
/// Blocks: a thread of its own, as the fake's driver.
fn publish_shard(
    config: &FloorConfig,
    shard: u32,
    publisher: &Publisher,
    handle: &tokio::runtime::Handle,
    start: Instant,
    start_unix: u64,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    let world = config.world;
    let Some(events) = MemberEvents::new(world, shard, config.mix) else {
        return Ok(0);
    };
    let schedule = config.schedule();
    let prefix = format!("{}.{shard}.", config.subject_prefix);
    let subjects = [
        MemberEventKind::Add,
        MemberEventKind::Update,
        MemberEventKind::Remove,
    ]
    .map(|k| async_nats::Subject::from(format!("{prefix}{}", k.event_name())));
    let mut published = 0u64;
    let mut failure = None;
    let mut writer = EnvelopeWriter::default();
    pace(&schedule, start, stop, |due| {
        if failure.is_some() {
            return;
        }
        let result = handle.block_on(async {
            for k in due {
                let e = events.event(k, due_unix(&schedule, start_unix, k));
                let envelope = writer.write(&world, shard, k + 1, &e, unix_micros());
                let subject = subjects[e.kind as usize].clone();
                publisher.publish(subject, Bytes::from(envelope)).await?;
                published += 1;
            }
            Ok::<_, crate::gateway::publish::PublishError>(())
        });
        failure = result.err();
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(published),
    }
}

/// Writes a member event's envelope as the gateway would write it for the fake's dispatch of
/// the same event, reusing its buffers for `d` and the guild id.
#[derive(Debug, Default)]
struct EnvelopeWriter {
    d: String,
    guild_id: String,
}

impl EnvelopeWriter {
    fn write(
        &mut self,
        world: &World,
        shard: u32,
        seq: u64,
        e: &MemberEvent,
        received_at_us: u64,
    ) -> Vec<u8> {
        self.d.clear();
        write_member_data(&mut self.d, e.kind, world, e.guild_index, e.member, e.mark);
        self.guild_id.clear();
        let _ = write!(self.guild_id, "{}", world.guild_id(e.guild_index));
        let mut buf = Vec::with_capacity(self.d.len() + 160);
        let head = EnvelopeHead {
            shard,
            seq,
            kind: e.kind.event_name(),
            guild_id: Some(&self.guild_id),
            received_at_us,
        };
        write_envelope(&mut buf, head, &self.d);
        buf
    }
}

/// The harness's side of a floor run: starts the publisher and counts what it has sent by the
/// schedule it follows (it sends every event when due; there is no session to skip them).
pub(super) struct FloorDrive {
    client: async_nats::Client,
    subject_prefix: String,
    schedules: Vec<RateSchedule>,
    started: Option<Instant>,
    stopped: Option<Instant>,
}

impl FloorDrive {
    pub fn new(client: async_nats::Client, config: &FloorConfig) -> FloorDrive {
        FloorDrive {
            client,
            subject_prefix: config.subject_prefix.clone(),
            schedules: (0..config.world.total_shards)
                .map(|_| config.schedule())
                .collect(),
            started: None,
            stopped: None,
        }
    }

    /// Asks the publisher to start, retrying until it has subscribed, for at most `timeout`.
    pub async fn start(&mut self, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let subject = start_subject(&self.subject_prefix);
        loop {
            match self.client.request(subject.clone(), Bytes::new()).await {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    bail!("the floor publisher did not answer its start request within {timeout:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let started = Instant::now();
        self.started = Some(started);
        Ok(started)
    }

    /// No more events are counted from now (the publisher is stopped with its process).
    pub fn stop(&mut self) {
        self.stopped.get_or_insert_with(Instant::now);
    }

    /// Events due so far per shard, as the fake's stats (every shard active).
    pub fn stats(&self) -> FakeStats {
        let now = self.stopped.unwrap_or_else(Instant::now);
        let elapsed = self.started.map_or(Duration::ZERO, |s| now - s);
        FakeStats {
            events_sent: self
                .schedules
                .iter()
                .map(|s| (s.due(elapsed).floor() as u64).min(s.total().floor() as u64))
                .collect(),
            active_shards: self.schedules.len() as u64,
            ..FakeStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_writes_the_envelope_the_gateway_writes_for_the_same_event() {
        use crate::gateway::envelope::{route, Envelope};
        use crate::gateway_load::fake_discord::payload::member_event;
        let world = World {
            guilds: 5,
            members_per_guild: 3,
            total_shards: 2,
        };
        let events = MemberEvents::new(world, 1, MemberMix::default()).unwrap();
        let mut writer = EnvelopeWriter::default();
        for id in 0..20 {
            let e = events.event(id, 1_700_000_000_000_000 + id);
            let dispatch = member_event(id + 9, e.kind, &world, e.guild_index, e.member, e.mark);
            let mut gateway = Vec::new();
            Envelope::new(1, &route(&dispatch).unwrap().unwrap(), 42).write_to(&mut gateway);
            let floor = writer.write(&world, 1, id + 9, &e, 42);
            assert_eq!(String::from_utf8(floor).unwrap(), String::from_utf8(gateway).unwrap());
        }
    }

    #[test]
    fn the_configuration_round_trips_through_the_environment() {
        let config = FloorConfig {
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            subject_prefix: "arrakis.gateway".to_owned(),
            world: World {
                guilds: 250,
                members_per_guild: 100,
                total_shards: 2,
            },
            mix: MemberMix {
                add: 1,
                update: 8,
                remove: 1,
            },
            stages: vec![
                (Duration::from_millis(1500), 20_000),
                (Duration::from_micros(7), 3),
            ],
        };
        let env: std::collections::HashMap<_, _> = config.to_env().into_iter().collect();
        assert_eq!(FloorConfig::from_env(|k| env.get(k).cloned()), Ok(config));
        let err = FloorConfig::from_env(|k| (k != "FLOOR_STAGES").then(|| env[k].clone()));
        assert_eq!(err, Err("FLOOR_STAGES is not set".to_owned()));
    }
}
