//! The floor the gateway is measured against: the fake's member events published straight to
//! NATS, with no Twilight, no shard, no WebSocket, and received by the same recorder.
//!
//! The floor publisher is a process of its own (`gateway-floor`, [`serve`]) so its CPU is read
//! from /proc exactly as the gateway's is. Each shard's events are paced by the fake's own
//! [`pace`] loop and built by its own [`MemberEvents`] and payload writer, on a thread per shard
//! as in the fake; each event's `d` is wrapped by the gateway's own envelope writer
//! ([`write_envelope`]) and published on the subject the gateway would use, by the least client
//! that can (the NATS text protocol on a blocking socket: what fell due together leaves in one
//! write). So the floor is the tightest path from the fake's pacing to the recorder, as
//! `src/bin/floor.rs` is for a query. What the floor does not pay: the WebSocket write and read,
//! routing the dispatch (one JSON pass), Twilight's shard, async-nats and tokio (a channel and a
//! task wake-up per publish). What it pays that the gateway does not: building the event's JSON
//! and pacing it (the fake's share), about 1 µs per event plus a wake-up per 250 µs.
//!
//! The harness side ([`FloorDrive`]) starts the publishing with a NATS request once the process
//! is subscribed, and counts the events sent from the same schedule the publisher follows.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::TcpStream;
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
            (
                "FLOOR_MEMBER_MIX",
                format!("{}:{}:{}", m.add, m.update, m.remove),
            ),
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

/// The floor publisher's life: connect (one connection per shard and one to wait on), wait for
/// the harness's start request, publish every shard's events along the stages on a thread per
/// shard. Returns the events published; the caller idles until it is stopped.
pub fn serve(config: FloorConfig) -> anyhow::Result<u64> {
    let addr = nats_addr(&config.nats_url)?;
    let mut control = NatsConn::connect(&addr)?;
    let shards: Vec<NatsConn> = (0..config.world.total_shards)
        .map(|_| NatsConn::connect(&addr))
        .collect::<anyhow::Result<_>>()?;
    let reply = control.wait_for_request(&start_subject(&config.subject_prefix))?;
    let start = Instant::now();
    let start_unix = unix_micros();
    control.publish(&reply, b"")?;
    control.flush()?;
    let config = &config;
    std::thread::scope(|scope| {
        let drivers: Vec<_> = shards
            .into_iter()
            .enumerate()
            .map(|(shard, conn)| {
                scope.spawn(move || publish_shard(config, shard as u32, conn, start, start_unix))
            })
            .collect();
        drivers
            .into_iter()
            .map(|d| d.join().expect("a floor driver panicked"))
            .sum()
    })
}

/// `host:port` of a `nats://host:port` URL.
fn nats_addr(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    let hostport = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    if hostport.is_empty() {
        bail!("NATS_URL {url:?} names no server");
    }
    Ok(if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:4222")
    })
}

/// The least NATS client that can publish: the text protocol over a blocking socket, written
/// by hand (as `src/bin/floor.rs` speaks PostgreSQL's), so the floor pays for no client library,
/// runtime or thread hand-off. Nothing is read after the handshake but a start request; a run
/// is shorter than the server's ping interval (2 minutes), so its pings need no answer.
struct NatsConn {
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
}

impl NatsConn {
    fn connect(addr: &str) -> anyhow::Result<NatsConn> {
        let tcp =
            TcpStream::connect(addr).with_context(|| format!("connecting to NATS at {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut conn = NatsConn {
            reader: BufReader::new(tcp),
            out: Vec::with_capacity(1 << 16),
        };
        let info = conn.line()?;
        if !info.starts_with("INFO ") {
            bail!("NATS at {addr} did not greet with INFO: {info:?}");
        }
        conn.out.extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"gateway-floor\"}\r\nPING\r\n",
        );
        conn.flush()?;
        match conn.line()?.as_str() {
            "PONG" => Ok(conn),
            other => bail!("NATS at {addr} refused the connection: {other:?}"),
        }
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("NATS closed the connection");
        }
        Ok(line.trim_end().to_owned())
    }

    /// Subscribes to `subject` and waits for one message; returns its reply subject.
    fn wait_for_request(&mut self, subject: &str) -> anyhow::Result<String> {
        self.out
            .extend_from_slice(format!("SUB {subject} 1\r\n").as_bytes());
        self.flush()?;
        loop {
            let line = self.line()?;
            if line == "PING" {
                self.out.extend_from_slice(b"PONG\r\n");
                self.flush()?;
                continue;
            }
            // MSG <subject> <sid> [reply-to] <#bytes>
            let parts: Vec<&str> = line.split(' ').collect();
            if parts[0] != "MSG" || parts.len() < 4 {
                continue;
            }
            let len: usize = parts[parts.len() - 1].parse()?;
            let mut body = vec![0; len + 2];
            self.reader.read_exact(&mut body)?;
            if parts.len() == 5 {
                return Ok(parts[3].to_owned());
            }
        }
    }

    /// Queues one `PUB` (written by the next [`NatsConn::flush`]).
    fn publish(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<()> {
        let _ = write!(self.out, "PUB {subject} {}\r\n", payload.len());
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.reader.get_mut().write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }
}

/// One shard's events along the schedule, each published as the gateway would publish it; what
/// fell due together leaves in one write. Blocks: a thread of its own, as the fake's driver.
fn publish_shard(
    config: &FloorConfig,
    shard: u32,
    mut conn: NatsConn,
    start: Instant,
    start_unix: u64,
) -> anyhow::Result<u64> {
    let world = config.world;
    let Some(events) = MemberEvents::new(world, shard, config.mix) else {
        return Ok(0);
    };
    let schedule = config.schedule();
    let subjects = [
        MemberEventKind::Add,
        MemberEventKind::Update,
        MemberEventKind::Remove,
    ]
    .map(|k| format!("{}.{shard}.{}", config.subject_prefix, k.event_name()));
    let mut published = 0u64;
    let mut failure = None;
    let mut writer = EnvelopeWriter::default();
    pace(&schedule, start, &CancellationToken::new(), |due| {
        if failure.is_some() {
            return;
        }
        for k in due {
            let e = events.event(k, due_unix(&schedule, start_unix, k));
            let envelope = writer.write(&world, shard, k + 1, &e, unix_micros());
            let _ = conn.publish(&subjects[e.kind as usize], &envelope);
            published += 1;
        }
        failure = conn.flush().err();
    });
    match failure {
        Some(e) => Err(e.context(format!("publishing shard {shard}'s events"))),
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
            assert_eq!(
                String::from_utf8(floor).unwrap(),
                String::from_utf8(gateway).unwrap()
            );
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
