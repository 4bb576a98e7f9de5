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

/// The whole payload in one pass: `d` is kept raw (its extent is found, nothing is built).
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(default)]
    op: Option<u8>,
    #[serde(default)]
    s: Option<u64>,
    /// Discord's event names hold no escapes: the name borrows the input (an escaped name is
    /// refused as invalid).
    #[serde(borrow, default)]
    t: Option<&'a str>,
    #[serde(borrow, default)]
    d: Option<&'a RawValue>,
}

/// Guild events whose guild is `d.id` rather than `d.guild_id`.
fn is_guild_event(kind: &str) -> bool {
    matches!(kind, "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE")
}

/// Reads the top-level string `key` of the object `d`, stopping at it: the rest of the object
/// (a GUILD_CREATE's member list, a member's roles) is not scanned again once the id is found.
fn top_level_str<'a>(d: &'a RawValue, key: &'static str) -> Result<Option<&'a str>, RouteError> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

    struct Find<'a, 'f> {
        key: &'static str,
        found: &'f mut Option<&'a str>,
    }
    impl<'a> Visitor<'a> for Find<'a, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(k) = map.next_key::<Cow<'a, str>>()? {
                if k == self.key {
                    *self.found = map.next_value::<Option<&'a str>>()?;
                    // Stop here: what follows is left unread.
                    return Ok(());
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_str(d.get());
    let read = de.deserialize_map(Find {
        key,
        found: &mut found,
    });
    match read {
        Ok(()) => Ok(found),
        // Stopping early leaves the object unclosed, which serde_json reports after the visitor
        // returned; `d` was validated as JSON by the frame's pass, so the id stands.
        Err(_) if found.is_some() => Ok(found),
        Err(e) => Err(e.into()),
    }
}

/// Routes one raw gateway payload. `Ok(None)` for anything but an op 0 dispatch.
///
/// One pass over the payload finds `op`, `s`, `t` and the extent of `d`; a second reads `d`'s
/// keys up to the guild id.
pub fn route(json: &str) -> Result<Option<Dispatch<'_>>, RouteError> {
    let frame: Frame<'_> = serde_json::from_str(json)?;
    let op = frame.op.ok_or(RouteError::NoOpcode)?;
    if op != 0 {
        return Ok(None);
    }
    let (Some(seq), Some(kind)) = (frame.s, frame.t) else {
        return Err(RouteError::Incomplete);
    };
    let data = frame.d.unwrap_or(RawValue::NULL);
    // Only objects carry ids; some dispatches (RESUMED) have `{}` or `null`.
    let guild_id = if data.get().starts_with('{') {
        let key = if is_guild_event(kind) {
            "id"
        } else {
            "guild_id"
        };
        top_level_str(data, key)?
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

    /// Appends the envelope's JSON to `out`: the same bytes as serializing it with serde_json,
    /// written directly. `kind` and `guild_id` borrow unescaped JSON strings (routing rejects
    /// escaped ones), so they are written between quotes as they are.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_envelope(
            out,
            EnvelopeHead {
                shard: self.shard,
                seq: self.seq,
                kind: self.kind,
                guild_id: self.guild_id,
                received_at_us: self.received_at_us,
            },
            self.payload.get(),
        );
    }
}

/// An envelope's fields but the payload, for [`write_envelope`].
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeHead<'a> {
    /// The shard that received the event.
    pub shard: u32,
    /// Discord's dispatch sequence number.
    pub seq: u64,
    /// Discord's event name (no escapes needed).
    pub kind: &'a str,
    /// The event's guild, if any.
    pub guild_id: Option<&'a str>,
    /// When the event was read, Unix microseconds.
    pub received_at_us: u64,
}

/// Appends a version-[`ENVELOPE_VERSION`] envelope around `payload` (JSON the caller vouches
/// for). The gateway's [`Envelope::write_to`] and the floor publisher of the test equipment
/// (which builds `d` itself and so has nothing to route) write through this one function, so
/// their bytes cannot drift apart.
pub fn write_envelope(out: &mut Vec<u8>, head: EnvelopeHead<'_>, payload: &str) {
    out.reserve(payload.len() + head.kind.len() + 128);
    out.extend_from_slice(b"{\"v\":");
    write_u64(out, u64::from(ENVELOPE_VERSION));
    out.extend_from_slice(b",\"shard\":");
    write_u64(out, u64::from(head.shard));
    out.extend_from_slice(b",\"seq\":");
    write_u64(out, head.seq);
    out.extend_from_slice(b",\"type\":");
    write_str(out, head.kind);
    if let Some(guild) = head.guild_id {
        out.extend_from_slice(b",\"guild_id\":");
        write_str(out, guild);
    }
    out.extend_from_slice(b",\"received_at_us\":");
    write_u64(out, head.received_at_us);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload.as_bytes());
    out.push(b'}');
}

/// Writes `n` in decimal.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes `s` as a JSON string; escapes what needs it (nothing, for strings borrowed from JSON).
fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        serde_json::to_writer(out, s).expect("a string always serializes");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
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

    #[test]
    fn the_envelope_writer_matches_serde_json() {
        for json in [
            r#"{"op":0,"s":18446744073709551615,"t":"GUILD_MEMBER_ADD","d":{"user":{"id":"9"},"guild_id":"55"}}"#,
            r#"{"op":0,"s":0,"t":"READY","d":{"v":10}}"#,
            r#"{"op":0,"s":3,"t":"RESUMED","d":null}"#,
        ] {
            let d = route(json).unwrap().unwrap();
            let envelope = Envelope::new(u32::MAX, &d, 1_700_000_000_000_000);
            let mut out = Vec::new();
            envelope.write_to(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&envelope).unwrap()
            );
        }
    }

    #[test]
    fn routing_stops_at_the_id_wherever_it_is() {
        let json = r#"{"t":"GUILD_MEMBER_UPDATE","s":5,"op":0,"d":{"user":{"id":"9","guild_id":"1"},"roles":["2"],"guild_id":"77","nick":null}}"#;
        let d = route(json).unwrap().unwrap();
        assert_eq!((d.seq, d.guild_id), (5, Some("77")));
        let json = r#"{"op":0,"s":1,"t":"GUILD_MEMBER_ADD","d":{"user":{"id":"9"}}}"#;
        assert_eq!(route(json).unwrap().unwrap().guild_id, None);
        // A dispatch whose d is not valid JSON is refused, whether or not the id comes first.
        assert!(route(r#"{"op":0,"s":1,"t":"X","d":{"guild_id":"1","a":}}"#).is_err());
        // Missing s or t.
        assert!(matches!(
            route(r#"{"op":0,"t":"X","d":{}}"#),
            Err(RouteError::Incomplete)
        ));
    }
}
