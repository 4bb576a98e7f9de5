//! Every payload kind the fake Discord sends, deserialized with twilight-model: a Twilight upgrade
//! that changes the gateway models breaks this test, not a load run.

use serde::de::DeserializeSeed;
use thumper::gateway_load::fake_discord::payload::{self, EventMark, MemberEventKind};
use thumper::gateway_load::fake_discord::World;
use twilight_model::gateway::event::{DispatchEvent, GatewayEvent, GatewayEventDeserializer};

fn world() -> World {
    World {
        guilds: 6,
        members_per_guild: 3,
        total_shards: 2,
    }
}

fn parse(json: &str) -> GatewayEvent {
    let de = GatewayEventDeserializer::from_json(json).expect("op/s/t found by substring search");
    let mut json_de = serde_json::Deserializer::from_str(json);
    de.deserialize(&mut json_de)
        .unwrap_or_else(|e| panic!("twilight-model rejected {json}: {e}"))
}

fn dispatch(json: &str) -> (u64, DispatchEvent) {
    match parse(json) {
        GatewayEvent::Dispatch(seq, event) => (seq, event),
        other => panic!("expected a dispatch, got {other:?}"),
    }
}

#[test]
fn control_payloads() {
    assert!(matches!(
        parse(&payload::hello(41_250)),
        GatewayEvent::Hello(h) if h.heartbeat_interval == 41_250
    ));
    assert!(matches!(
        parse(payload::heartbeat_ack()),
        GatewayEvent::HeartbeatAck
    ));
    assert!(matches!(
        parse(payload::reconnect()),
        GatewayEvent::Reconnect
    ));
    assert!(matches!(
        parse(&payload::invalid_session(false)),
        GatewayEvent::InvalidateSession(false)
    ));
    assert!(matches!(
        parse(&payload::invalid_session(true)),
        GatewayEvent::InvalidateSession(true)
    ));
}

#[test]
fn ready_names_the_shard_its_guilds_and_the_resume_url() {
    let w = world();
    let (seq, event) = dispatch(&payload::ready(1, "sess", 1, &w, "ws://127.0.0.1:9"));
    assert_eq!(seq, 1);
    let DispatchEvent::Ready(ready) = event else {
        panic!("not READY")
    };
    assert_eq!(ready.session_id, "sess");
    assert_eq!(ready.resume_gateway_url, "ws://127.0.0.1:9");
    assert_eq!(ready.shard.map(|s| (s.number(), s.total())), Some((1, 2)));
    assert_eq!(ready.guilds.len(), w.guilds_on_shard(1) as usize);
}

#[test]
fn resumed() {
    let (seq, event) = dispatch(&payload::resumed(42));
    assert_eq!(seq, 42);
    assert!(matches!(event, DispatchEvent::Resumed));
}

#[test]
fn guild_create_carries_every_member() {
    let w = world();
    let index = w.guild_index(1, 2);
    let (_, event) = dispatch(&payload::guild_create(5, &w, index));
    let DispatchEvent::GuildCreate(create) = event else {
        panic!("not GUILD_CREATE")
    };
    let twilight_model::gateway::payload::incoming::GuildCreate::Available(guild) = *create else {
        panic!("guild unavailable")
    };
    assert_eq!(guild.id.get(), w.guild_id(index));
    assert_eq!(guild.members.len(), 3);
    assert_eq!(guild.roles.len(), 2);
    assert_eq!(guild.member_count, Some(3));
}

#[test]
fn member_events_carry_guild_and_user() {
    let w = world();
    let index = w.guild_index(0, 1);
    let mark = EventMark {
        id: 17,
        sent_us: 1_700_000_000_000_000,
    };
    for kind in [
        MemberEventKind::Add,
        MemberEventKind::Update,
        MemberEventKind::Remove,
    ] {
        let json = payload::member_event(9, kind, &w, index, 2, mark);
        let (seq, event) = dispatch(&json);
        assert_eq!(seq, 9);
        let user = w.user_id(index, 2);
        match (kind, event) {
            (MemberEventKind::Add, DispatchEvent::MemberAdd(add)) => {
                assert_eq!(add.guild_id.get(), w.guild_id(index));
                assert_eq!(add.member.user.id.get(), user);
            }
            (MemberEventKind::Update, DispatchEvent::MemberUpdate(update)) => {
                assert_eq!(update.guild_id.get(), w.guild_id(index));
                assert_eq!(update.user.id.get(), user);
                assert_eq!(update.nick.as_deref(), Some("n17"));
            }
            (MemberEventKind::Remove, DispatchEvent::MemberRemove(remove)) => {
                assert_eq!(remove.guild_id.get(), w.guild_id(index));
                assert_eq!(remove.user.id.get(), user);
            }
            (kind, event) => panic!("{kind:?} parsed as {event:?}"),
        }
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["d"]["thumper"]["id"], 17);
        assert_eq!(value["d"]["thumper"]["sent_us"], 1_700_000_000_000_000u64);
    }
}
