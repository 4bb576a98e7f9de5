//! Gateway payloads the fake Discord sends, as compact JSON text.
//!
//! Built by hand with `write!` rather than through serde models because generating events is the
//! fake's hot path (see `benches/gateway.rs`). Every payload puts `op`, `s` and `t` before `d`:
//! Twilight locates them by substring search and would otherwise find keys inside `d`. Each
//! builder is deserialized with twilight-model in `tests/gateway_payloads.rs`, so a Twilight
//! upgrade that changes the model breaks a test rather than the harness.
//!
//! Member events carry `"thumper":{"id":N,"sent_us":T}` inside `d`: `id` numbers the shard's
//! member events from 0 (the harness finds losses and duplicates by it) and `sent_us` is the
//! intended send time in Unix microseconds (latency is measured from it). Discord's models
//! ignore unknown fields, so the mark does not disturb a real client.

use std::fmt::Write as _;

use super::world::{World, BOT_USER_ID};

/// Timestamp used for every `joined_at`.
const JOINED_AT: &str = "2024-01-01T00:00:00.000000+00:00";

/// The kinds of member events the fake drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberEventKind {
    /// GUILD_MEMBER_ADD.
    Add,
    /// GUILD_MEMBER_UPDATE.
    Update,
    /// GUILD_MEMBER_REMOVE.
    Remove,
}

impl MemberEventKind {
    /// The dispatch event name (`t`).
    pub fn event_name(self) -> &'static str {
        match self {
            MemberEventKind::Add => "GUILD_MEMBER_ADD",
            MemberEventKind::Update => "GUILD_MEMBER_UPDATE",
            MemberEventKind::Remove => "GUILD_MEMBER_REMOVE",
        }
    }
}

/// The harness's mark on one member event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMark {
    /// Per-shard event number, from 0.
    pub id: u64,
    /// Intended send time, Unix microseconds.
    pub sent_us: u64,
}

/// Op 10 Hello.
pub fn hello(heartbeat_interval_ms: u64) -> String {
    format!(r#"{{"op":10,"s":null,"t":null,"d":{{"heartbeat_interval":{heartbeat_interval_ms}}}}}"#)
}

/// Op 11 Heartbeat ACK.
pub fn heartbeat_ack() -> &'static str {
    r#"{"op":11,"s":null,"t":null,"d":null}"#
}

/// Op 7 Reconnect.
pub fn reconnect() -> &'static str {
    r#"{"op":7,"s":null,"t":null,"d":null}"#
}

/// Op 9 Invalid Session; `resumable` tells the client whether it may resume.
pub fn invalid_session(resumable: bool) -> String {
    format!(r#"{{"op":9,"s":null,"t":null,"d":{resumable}}}"#)
}

/// Op 0 dispatch of event `t` with body `d` at sequence `seq`.
pub fn dispatch(seq: u64, t: &str, d: &str) -> String {
    let mut out = String::with_capacity(40 + t.len() + d.len());
    write_dispatch_head(&mut out, seq, t);
    out.push_str(d);
    out.push('}');
    out
}

fn write_dispatch_head(out: &mut String, seq: u64, t: &str) {
    let _ = write!(out, r#"{{"op":0,"s":{seq},"t":"{t}","d":"#);
}

/// READY for `shard` of `world`, naming every guild of the shard as unavailable (their
/// GUILD_CREATEs follow) and pointing `resume_gateway_url` back at the fake.
pub fn ready(seq: u64, session_id: &str, shard: u32, world: &World, resume_url: &str) -> String {
    let mut d = String::with_capacity(256 + 40 * world.guilds_on_shard(shard) as usize);
    let _ = write!(
        d,
        r#"{{"v":10,"user":{{"id":"{BOT_USER_ID}","username":"arrakis","discriminator":"0","global_name":null,"avatar":null,"bot":true,"mfa_enabled":false,"verified":true,"flags":0}},"guilds":["#
    );
    for local in 0..world.guilds_on_shard(shard) {
        if local > 0 {
            d.push(',');
        }
        let id = world.guild_id(world.guild_index(shard, local));
        let _ = write!(d, r#"{{"id":"{id}","unavailable":true}}"#);
    }
    let _ = write!(
        d,
        r#"],"session_id":"{session_id}","resume_gateway_url":"{resume_url}","shard":[{shard},{}],"application":{{"id":"{BOT_USER_ID}","flags":0}}}}"#,
        world.total_shards
    );
    dispatch(seq, "READY", &d)
}

/// RESUMED, sent after replaying missed events.
pub fn resumed(seq: u64) -> String {
    dispatch(seq, "RESUMED", "{}")
}

fn write_user(out: &mut String, user_id: u64) {
    let _ = write!(
        out,
        r#"{{"id":"{user_id}","username":"user{user_id}","discriminator":"0","global_name":null,"avatar":null}}"#
    );
}

fn write_member(out: &mut String, user_id: u64, role_id: u64) {
    out.push_str(r#"{"user":"#);
    write_user(out, user_id);
    let _ = write!(
        out,
        r#","roles":["{role_id}"],"joined_at":"{JOINED_AT}","deaf":false,"mute":false,"flags":0,"nick":null,"avatar":null,"communication_disabled_until":null,"pending":false}}"#
    );
}

fn write_role(out: &mut String, id: u64, name: &str, position: u32) {
    let _ = write!(
        out,
        r#"{{"id":"{id}","name":"{name}","color":0,"colors":{{"primary_color":0,"secondary_color":null,"tertiary_color":null}},"hoist":false,"icon":null,"unicode_emoji":null,"position":{position},"permissions":"0","managed":false,"mentionable":false,"flags":0}}"#
    );
}

/// GUILD_CREATE for guild `index` with all its members.
pub fn guild_create(seq: u64, world: &World, index: u64) -> String {
    let guild_id = world.guild_id(index);
    let role_id = world.member_role_id(index);
    let members = world.members_per_guild;
    let mut out = String::with_capacity(1024 + 330 * members as usize);
    write_dispatch_head(&mut out, seq, "GUILD_CREATE");
    let _ = write!(
        out,
        r#"{{"id":"{guild_id}","name":"guild{index}","icon":null,"splash":null,"discovery_splash":null,"banner":null,"description":null,"owner_id":"{BOT_USER_ID}","afk_channel_id":null,"afk_timeout":300,"verification_level":0,"default_message_notifications":0,"explicit_content_filter":0,"roles":["#
    );
    write_role(&mut out, guild_id, "@everyone", 0);
    out.push(',');
    write_role(&mut out, role_id, "holder", 1);
    let _ = write!(
        out,
        r#"],"emojis":[],"stickers":[],"features":[],"mfa_level":0,"application_id":null,"system_channel_id":null,"system_channel_flags":0,"rules_channel_id":null,"public_updates_channel_id":null,"vanity_url_code":null,"premium_tier":0,"preferred_locale":"en-US","nsfw_level":0,"premium_progress_bar_enabled":false,"joined_at":"{JOINED_AT}","large":{},"unavailable":false,"member_count":{members},"channels":[],"threads":[],"presences":[],"voice_states":[],"members":["#,
        members > 250
    );
    for m in 0..u64::from(members) {
        if m > 0 {
            out.push(',');
        }
        write_member(&mut out, world.user_id(index, m), role_id);
    }
    out.push_str("]}}");
    out
}

/// A member event for guild `index`, about user `member` of it, carrying the harness's mark.
pub fn member_event(
    seq: u64,
    kind: MemberEventKind,
    world: &World,
    index: u64,
    member: u64,
    mark: EventMark,
) -> String {
    let mut out = String::with_capacity(512);
    write_dispatch_head(&mut out, seq, kind.event_name());
    write_member_data(&mut out, kind, world, index, member, mark);
    out.push('}');
    out
}

/// The `d` of a member event (see [`member_event`]): the floor publisher forwards it as the
/// gateway would, without the dispatch around it.
pub fn write_member_data(
    out: &mut String,
    kind: MemberEventKind,
    world: &World,
    index: u64,
    member: u64,
    mark: EventMark,
) {
    let guild_id = world.guild_id(index);
    let role_id = world.member_role_id(index);
    let user_id = world.user_id(index, member);
    let _ = write!(out, r#"{{"guild_id":"{guild_id}","user":"#);
    write_user(out, user_id);
    match kind {
        MemberEventKind::Add => {
            let _ = write!(
                out,
                r#","roles":["{role_id}"],"joined_at":"{JOINED_AT}","deaf":false,"mute":false,"flags":0,"nick":null,"avatar":null,"communication_disabled_until":null,"pending":false"#
            );
        }
        MemberEventKind::Update => {
            let _ = write!(
                out,
                r#","roles":["{role_id}"],"joined_at":"{JOINED_AT}","deaf":false,"mute":false,"flags":0,"nick":"n{}","avatar":null,"premium_since":null,"communication_disabled_until":null,"pending":false"#,
                mark.id
            );
        }
        MemberEventKind::Remove => {}
    }
    let _ = write!(
        out,
        r#","thumper":{{"id":{},"sent_us":{}}}}}"#,
        mark.id, mark.sent_us
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_s_t_come_before_d() {
        let world = World {
            guilds: 2,
            members_per_guild: 2,
            total_shards: 1,
        };
        let mark = EventMark { id: 7, sent_us: 9 };
        for text in [
            hello(1000),
            heartbeat_ack().to_owned(),
            reconnect().to_owned(),
            invalid_session(false),
            ready(1, "abc", 0, &world, "ws://127.0.0.1:1"),
            resumed(3),
            guild_create(2, &world, 1),
            member_event(4, MemberEventKind::Update, &world, 0, 1, mark),
        ] {
            let d = text.find(r#""d":"#).unwrap();
            for key in [r#""op":"#, r#""s":"#, r#""t":"#] {
                assert!(text.find(key).unwrap() < d, "{key} after d in {text}");
            }
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
    }
}
