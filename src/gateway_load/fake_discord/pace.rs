//! Pacing of the fake's member events along the scenario's rate stages (the same
//! [`RateSchedule`] the open-model executor follows), and which member event comes next.
//!
//! Each event is stamped with the time it was *due*, not the time it left, so a fake that falls
//! behind (or a session that is down and buffering) shows up as latency rather than hiding it:
//! the coordinated-omission correction that oha applies to requests.
//!
//! The fake's drivers and the floor publisher ([`crate::gateway_load::floor`]) share [`pace`]
//! and [`MemberEvents`], so the floor's events are the fake's: same pacing, same payloads.

use std::ops::Range;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::payload::{EventMark, MemberEventKind};
use super::{MemberMix, World};
pub use crate::gateway::unix_micros;
pub use crate::scenario::rate::RateSchedule;

/// The send granularity: a driver naps at least this long, and events that fell due meanwhile
/// leave together in one write. tokio's timer (1 ms ticks) held every event up to 1 ms (p50
/// 0.78 ms at 20,000 events/s, all of it the fake's); an event per wake-up instead costs the
/// gateway a wake-up and a read per event (112k events per core-second at 20,000/s, against
/// 480k with 1 ms batches). 250 µs: p50 0.27 ms, p99 0.62 ms at 20,000/s when measured first.
pub const PACE_TICK: Duration = Duration::from_micros(250);

/// The schedule of `(duration, events per second)` stages ramping from 0, scaled by `share`
/// (a shard's part of the total rate).
pub fn event_schedule(stages: &[(Duration, u32)], share: f64) -> RateSchedule {
    let stages: Vec<(Duration, f64)> = stages.iter().map(|&(d, r)| (d, f64::from(r))).collect();
    RateSchedule::per_second(0.0, &stages).scaled(share)
}

/// Calls `emit(k..n)` with the events (numbered from 0) that fell due since the last call, until
/// every event of `schedule` was emitted or `stop` fires. Blocks: runs on a thread of its own,
/// sleeping with the OS timer (tokio's wakes on millisecond ticks; see [`PACE_TICK`]).
pub fn pace(
    schedule: &RateSchedule,
    start: Instant,
    stop: &CancellationToken,
    mut emit: impl FnMut(Range<u64>),
) {
    let total = schedule.total().floor() as u64;
    let mut emitted = 0u64;
    loop {
        let due = (schedule.due(start.elapsed()).floor() as u64).min(total);
        if due > emitted {
            emit(emitted..due);
            emitted = due;
        }
        if emitted >= total {
            return;
        }
        let next = schedule
            .due_time((emitted + 1) as f64)
            .unwrap_or_else(|| schedule.duration());
        // Sleep until the next event is due, at least every 10 ms to notice a stop.
        loop {
            if stop.is_cancelled() {
                return;
            }
            let Some(left) = (start + next).checked_duration_since(Instant::now()) else {
                break;
            };
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.max(PACE_TICK).min(Duration::from_millis(10)));
        }
    }
}

/// One member event of a shard: what it is about and the harness's mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberEvent {
    /// ADD, UPDATE or REMOVE.
    pub kind: MemberEventKind,
    /// The guild's global index.
    pub guild_index: u64,
    /// The member's index in the guild (past `members_per_guild` for joins).
    pub member: u64,
    /// The id and due time the harness measures by.
    pub mark: EventMark,
}

/// Which member event a shard sends next: guilds in turn, kinds interleaved by the mix.
#[derive(Debug, Clone, Copy)]
pub struct MemberEvents {
    world: World,
    shard: u32,
    guilds: u64,
    members: u64,
    mix: MemberMix,
}

impl MemberEvents {
    /// The events of `shard`; `None` when the shard has no guild.
    pub fn new(world: World, shard: u32, mix: MemberMix) -> Option<MemberEvents> {
        let guilds = u64::from(world.guilds_on_shard(shard));
        (guilds > 0).then_some(MemberEvents {
            world,
            shard,
            guilds,
            members: u64::from(world.members_per_guild.max(1)),
            mix,
        })
    }

    /// The shard's event number `id`, due at `sent_us` (Unix µs).
    pub fn event(&self, id: u64, sent_us: u64) -> MemberEvent {
        let kind = self.mix.kind_of(id);
        let member = match kind {
            MemberEventKind::Add => self.members + id / self.guilds,
            _ => (id / self.guilds) % self.members,
        };
        MemberEvent {
            kind,
            guild_index: self
                .world
                .guild_index(self.shard, (id % self.guilds) as u32),
            member,
            mark: EventMark { id, sent_us },
        }
    }
}

/// The Unix µs at which event `k` (from 0) of `schedule` is due, the stages having started at
/// `start_unix`.
pub fn due_unix(schedule: &RateSchedule, start_unix: u64, k: u64) -> u64 {
    start_unix
        + schedule
            .due_time((k + 1) as f64)
            .unwrap_or_default()
            .as_micros() as u64
}
