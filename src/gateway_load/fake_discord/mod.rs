//! A fake Discord gateway: speaks the real gateway protocol over real WebSockets on 127.0.0.1 so
//! the Twilight gateway can be load-tested without Discord.
//!
//! It sends Hello, checks Identify (token and shard pair), answers with READY (whose
//! `resume_gateway_url` points back here) and a GUILD_CREATE per guild with all members, acks
//! heartbeats, replays missed events on Resume, and drives GUILD_MEMBER_ADD / UPDATE / REMOVE at
//! a paced rate per shard. Faults are injected on demand: drop the connection, op 7 Reconnect,
//! op 9 Invalid Session, or stop acking heartbeats (a "zombie" connection).
//!
//! - [`world`]: which guilds and members exist (ids derived from indices);
//! - [`payload`]: the JSON of every payload kind;
//! - [`pace`]: arrival-rate stages → when each event is due;
//! - `session`: per-shard session and replay log;
//! - `server`: the listener, connections and event drivers.

pub mod pace;
pub mod payload;
mod server;
mod session;
pub mod world;

use std::time::Duration;

use serde::Deserialize;

pub use server::FakeDiscord;
pub use world::World;

/// A fault the fake injects into one shard's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Close the TCP connection without a close frame; the client should resume.
    Drop,
    /// Send op 7 Reconnect; the client should reconnect and resume.
    Reconnect,
    /// Send op 9 Invalid Session (not resumable); the client should identify again.
    InvalidSession,
    /// Stop acking heartbeats and stop sending anything; the client should notice the zombie
    /// connection within two heartbeat intervals, reconnect and resume.
    StopHeartbeatAck,
}

impl Fault {
    /// The fault's name as written in a scenario (`[[gateway.faults]] kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Drop => "drop",
            Fault::Reconnect => "reconnect",
            Fault::InvalidSession => "invalid_session",
            Fault::StopHeartbeatAck => "stop_heartbeat_ack",
        }
    }
}

/// Relative weights of the member event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberMix {
    /// Weight of GUILD_MEMBER_ADD.
    #[serde(default)]
    pub add: u32,
    /// Weight of GUILD_MEMBER_UPDATE.
    #[serde(default)]
    pub update: u32,
    /// Weight of GUILD_MEMBER_REMOVE.
    #[serde(default)]
    pub remove: u32,
}

impl Default for MemberMix {
    fn default() -> Self {
        MemberMix {
            add: 1,
            update: 8,
            remove: 1,
        }
    }
}

impl MemberMix {
    /// The kind of the `n`-th event: a fixed interleaving that honours the weights.
    pub fn kind_of(&self, n: u64) -> payload::MemberEventKind {
        use payload::MemberEventKind::*;
        let total = u64::from(self.add) + u64::from(self.update) + u64::from(self.remove);
        if total == 0 {
            return Update;
        }
        let r = n % total;
        if r < u64::from(self.add) {
            Add
        } else if r < u64::from(self.add) + u64::from(self.update) {
            Update
        } else {
            Remove
        }
    }
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The guilds and members the fake serves.
    pub world: World,
    /// Sent in Hello. Twilight declares a connection dead after two intervals without traffic.
    pub heartbeat_interval: Duration,
    /// When set, Identify and Resume must carry `Bot <token>` (else close code 4004).
    pub token: Option<String>,
    /// How member events are split between add, update and remove.
    pub member_mix: MemberMix,
    /// Written dispatches kept for resumes beyond what heartbeats confirmed.
    pub replay_capacity: usize,
    /// Unsent dispatches a disconnected session may accumulate before it is invalidated.
    pub max_unsent: u64,
}

impl FakeConfig {
    /// Defaults for `world`: 5 s heartbeats, no token check, the default member mix.
    pub fn new(world: World) -> Self {
        FakeConfig {
            world,
            heartbeat_interval: Duration::from_secs(5),
            token: None,
            member_mix: MemberMix::default(),
            replay_capacity: 100_000,
            max_unsent: 2_000_000,
        }
    }
}

/// Totals the fake counted, across shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// Member events emitted into a session, per shard (ids `0..n` on each).
    pub events_sent: Vec<u64>,
    /// Member events that were due while a shard had no session.
    pub events_skipped: u64,
    /// Identify (op 2) payloads accepted.
    pub identifies: u64,
    /// Resume (op 6) payloads accepted.
    pub resumes: u64,
    /// Dispatches replayed to resuming clients (the events of the gaps).
    pub replayed: u64,
    /// Sessions established (identify or resume) after each shard's first identify.
    pub reconnects: u64,
    /// Shards with a session and a connection serving it.
    pub active_shards: u64,
}

impl FakeStats {
    /// Member events sent over all shards.
    pub fn total_events_sent(&self) -> u64 {
        self.events_sent.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::payload::MemberEventKind;
    use super::*;

    #[test]
    fn member_mix_honours_weights() {
        let mix = MemberMix {
            add: 1,
            update: 2,
            remove: 1,
        };
        let kinds: Vec<_> = (0..8).map(|n| mix.kind_of(n)).collect();
        let count = |k| kinds.iter().filter(|&&x| x == k).count();
        assert_eq!(count(MemberEventKind::Add), 2);
        assert_eq!(count(MemberEventKind::Update), 4);
        assert_eq!(count(MemberEventKind::Remove), 2);
    }
}
