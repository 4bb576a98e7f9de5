//! The envelope the gateway publishes for every dispatch, and the cheap parse that routes it.
//!
//! Envelope version 1, one JSON object per NATS message on
//! `<prefix>.<shard>.<EVENT_TYPE>` (e.g. `arrakis.gateway.0.GUILD_MEMBER_ADD`):
//!
//! ```json
//! {"v":1,"shard":0,"seq":42,"type":"GUILD_MEMBER_ADD","guild_id":"4194304000",
//!  "received_at_us":1700000000000000,"payload":{ ...Discord's `d`, byte for byte... }}
//! ```
//!
//! - `v`: envelope version; bumped when a key is removed or changes meaning.
//! - `shard`, `seq`: the shard and the dispatch sequence number Discord gave the event.
//! - `type`: Discord's event name (`t`).
//! - `guild_id`: the guild the event belongs to, as a string (snowflakes exceed 2^53); absent
//!   for events without one (READY).
//! - `received_at_us`: when the gateway read the event, Unix microseconds.
//! - `payload`: the event's `d`, forwarded raw. Consumers parse what they need; the gateway only
//!   parses what routing needs, so forwarding costs a scan, not a model deserialization.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use twilight_model::gateway::event::GatewayEventDeserializer;

/// Current envelope version.
pub const ENVELOPE_VERSION: u32 = 1;

/// What routing needs from one raw dispatch; borrows the gateway's text.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch<'a> {
    /// Discord's dispatch sequence number (`s`).
    pub seq: u64,
    /// Discord's event name (`t`), e.g. `GUILD_MEMBER_ADD`.
    pub kind: &'a str,
    /// The guild the event belongs to, as Discord's string snowflake.
    pub guild_id: Option<&'a str>,
    /// The event's `d`, unparsed.
    pub data: &'a RawValue,
}

/// A payload that could not be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The payload has no `op`.
    #[error("payload has no opcode")]
    NoOpcode,
    /// An op 0 payload lacks `s` or `t`.
    #[error("dispatch has no sequence or event type")]
    Incomplete,
    /// The payload is not valid JSON.
    #[error("dispatch is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    d: &'a RawValue,
}

/// The ids a dispatch may carry: `guild_id` on guild sub-resources, `id` on guild events.
#[derive(Deserialize)]
struct RoutingIds<'a> {
    #[serde(borrow, default)]
    guild_id: Option<&'a str>,
    #[serde(borrow, default)]
    id: Option<&'a str>,
}

/// Guild events whose guild is `d.id` rather than `d.guild_id`.
fn is_guild_event(kind: &str) -> bool {
    matches!(kind, "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE")
}

/// Routes one raw gateway payload. `Ok(None)` for anything but an op 0 dispatch.
pub fn route(json: &str) -> Result<Option<Dispatch<'_>>, RouteError> {
    let de = GatewayEventDeserializer::from_json(json).ok_or(RouteError::NoOpcode)?;
    let (op, seq, kind) = de.into_parts();
    if op != 0 {
        return Ok(None);
    }
    // Discord's event names hold no escapes, so the name borrows the input.
    let (Some(seq), Some(Cow::Borrowed(kind))) = (seq, kind) else {
        return Err(RouteError::Incomplete);
    };
    let frame: Frame<'_> = serde_json::from_str(json)?;
    let data = frame.d;
    // Only objects carry ids; some dispatches (RESUMED) have `{}` or `null`.
    let guild_id = if data.get().starts_with('{') {
        let ids: RoutingIds<'_> = serde_json::from_str(data.get())?;
        if is_guild_event(kind) {
            ids.id
        } else {
            ids.guild_id
        }
    } else {
        None
    };
    Ok(Some(Dispatch {
        seq,
        kind,
        guild_id,
        data,
    }))
}

/// The envelope as written.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// Envelope version ([`ENVELOPE_VERSION`]).
    pub v: u32,
    /// The shard that received the event.
    pub shard: u32,
    /// Discord's dispatch sequence number.
    pub seq: u64,
    /// Discord's event name.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The event's guild as a string; omitted when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guild_id: Option<&'a str>,
    /// When the gateway read the event, Unix microseconds.
    pub received_at_us: u64,
    /// Discord's `d`, byte for byte.
    pub payload: &'a RawValue,
}

impl<'a> Envelope<'a> {
    /// The envelope for `dispatch`, received by `shard` at `received_at_us` (Unix µs).
    pub fn new(shard: u32, dispatch: &Dispatch<'a>, received_at_us: u64) -> Self {
        Envelope {
            v: ENVELOPE_VERSION,
            shard,
            seq: dispatch.seq,
            kind: dispatch.kind,
            guild_id: dispatch.guild_id,
            received_at_us,
            payload: dispatch.data,
        }
    }

    /// Appends the envelope's JSON to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("an envelope always serializes");
    }
}

/// The envelope as read back; `payload` stays raw.
#[derive(Debug, Deserialize)]
pub struct EnvelopeView<'a> {
    /// Envelope version.
    pub v: u32,
    /// The shard that received the event.
    pub shard: u32,
    /// Discord's dispatch sequence number.
    pub seq: u64,
    /// Discord's event name.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The event's guild, if any.
    #[serde(default)]
    pub guild_id: Option<&'a str>,
    /// When the gateway read the event, Unix microseconds.
    pub received_at_us: u64,
    /// Discord's `d`.
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_member_and_guild_events() {
        let json =
            r#"{"op":0,"s":7,"t":"GUILD_MEMBER_ADD","d":{"guild_id":"55","user":{"id":"9"}}}"#;
        let d = route(json).unwrap().unwrap();
        assert_eq!(
            (d.seq, d.kind, d.guild_id),
            (7, "GUILD_MEMBER_ADD", Some("55"))
        );
        assert_eq!(d.data.get(), r#"{"guild_id":"55","user":{"id":"9"}}"#);

        let json = r#"{"op":0,"s":2,"t":"GUILD_CREATE","d":{"id":"66","roles":[{"id":"1"}]}}"#;
        assert_eq!(route(json).unwrap().unwrap().guild_id, Some("66"));

        let json = r#"{"op":0,"s":3,"t":"RESUMED","d":{}}"#;
        assert_eq!(route(json).unwrap().unwrap().guild_id, None);

        assert!(route(r#"{"op":11,"s":null,"t":null,"d":null}"#)
            .unwrap()
            .is_none());
        assert!(route("{}").is_err());
    }

    #[test]
    fn envelope_round_trips_with_the_payload_untouched() {
        let json = r#"{"op":0,"s":7,"t":"GUILD_MEMBER_REMOVE","d":{"guild_id":"55","user":{"id":"9"},"x":[1,2.5]}}"#;
        let d = route(json).unwrap().unwrap();
        let mut out = Vec::new();
        Envelope::new(3, &d, 1234).write_to(&mut out);
        let view: EnvelopeView<'_> = serde_json::from_slice(&out).unwrap();
        assert_eq!(view.v, ENVELOPE_VERSION);
        assert_eq!(
            (view.shard, view.seq, view.kind),
            (3, 7, "GUILD_MEMBER_REMOVE")
        );
        assert_eq!(view.guild_id, Some("55"));
        assert_eq!(view.received_at_us, 1234);
        assert_eq!(view.payload.get(), d.data.get());
    }
}
