//! One shard's loop: read raw payloads from Twilight, route each dispatch into an envelope,
//! publish it, and feed the cache the few events it keeps.
//!
//! The loop reads `Message`s rather than parsed `Event`s so a member event costs a scan of its
//! text, not a model deserialization; only events the cache mode wants are parsed. Receive errors
//! are counted and the loop goes on (Twilight reconnects by itself); only a fatal close (bad
//! token, invalid shard) ends it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tracing::Instrument;
use twilight_cache_inmemory::InMemoryCache;
use twilight_gateway::{CloseFrame, EventTypeFlags, Message, Shard};

use super::config::CacheMode;
use super::envelope::{self, Envelope};
use super::publish::Publisher;
use super::queue::IdentifyQueue;
use super::unix_micros;

/// Discord has about 80 event names; more than this many are not cached.
const MAX_CACHED_SUBJECTS: usize = 128;

/// Counters one shard writes and the stats reporter reads.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Dispatches (op 0) received.
    pub dispatches: AtomicU64,
    /// Envelopes published to NATS.
    pub published: AtomicU64,
    /// Envelopes dropped because no NATS URL is configured.
    pub discarded: AtomicU64,
    /// Envelopes NATS refused.
    pub publish_errors: AtomicU64,
    /// Errors reading from the gateway (Twilight reconnects after them).
    pub receive_errors: AtomicU64,
    /// Payloads that could not be routed.
    pub route_errors: AtomicU64,
    /// Close frames received from the gateway.
    pub disconnects: AtomicU64,
    /// Events parsed and given to the cache.
    pub cached_events: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Why a shard stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The gateway closed the shard with a code that forbids reconnecting.
    #[error("shard {shard} was closed by the gateway and cannot reconnect (close code {code:?}); check the token and the shard settings")]
    FatallyClosed {
        /// The shard that was closed.
        shard: u32,
        /// The close code, if the frame had one.
        code: Option<u16>,
    },
}

/// What every shard of the process shares.
pub struct ShardContext {
    /// Where envelopes go.
    pub publisher: Publisher,
    /// The cache, when the cache mode keeps one.
    pub cache: Option<Arc<InMemoryCache>>,
    /// What the cache keeps, and so which events are parsed.
    pub cache_mode: CacheMode,
    /// First part of every subject; the shard appends `.<shard>.<EVENT_TYPE>`.
    pub subject_prefix: String,
}

impl CacheMode {
    /// The events the cache keeps; everything else is forwarded unparsed.
    pub fn wanted_events(self) -> EventTypeFlags {
        let guilds = EventTypeFlags::READY
            | EventTypeFlags::GUILD_CREATE
            | EventTypeFlags::GUILD_UPDATE
            | EventTypeFlags::GUILD_DELETE
            | EventTypeFlags::ROLE_CREATE
            | EventTypeFlags::ROLE_UPDATE
            | EventTypeFlags::ROLE_DELETE
            | EventTypeFlags::CHANNEL_CREATE
            | EventTypeFlags::CHANNEL_UPDATE
            | EventTypeFlags::CHANNEL_DELETE;
        match self {
            CacheMode::None => EventTypeFlags::empty(),
            CacheMode::Guilds => guilds,
            CacheMode::Members => {
                guilds
                    | EventTypeFlags::MEMBER_ADD
                    | EventTypeFlags::MEMBER_UPDATE
                    | EventTypeFlags::MEMBER_REMOVE
                    | EventTypeFlags::MEMBER_CHUNK
            }
        }
    }

    /// Whether an event named `kind` is parsed for the cache (by name, before any parsing).
    fn caches(self, kind: &str) -> bool {
        match self {
            CacheMode::None => false,
            CacheMode::Guilds => {
                kind == "READY"
                    || kind.starts_with("GUILD_") && !kind.starts_with("GUILD_MEMBER")
                    || kind.starts_with("CHANNEL_")
            }
            CacheMode::Members => {
                kind == "READY" || kind.starts_with("GUILD_") || kind.starts_with("CHANNEL_")
            }
        }
    }
}

/// Runs one shard until `cancel` fires (Ok) or the gateway closes it for good (Err).
pub async fn run_shard(
    mut shard: Shard<IdentifyQueue>,
    ctx: Arc<ShardContext>,
    stats: Arc<ShardStats>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), ShardError> {
    let id = shard.id().number();
    let subject_prefix = format!("{}.{id}.", ctx.subject_prefix);
    let wanted = ctx.cache_mode.wanted_events();
    // Subjects by event name: a handful of names, each built once (a clone is a refcount).
    let mut subjects: Vec<(String, async_nats::Subject)> = Vec::new();
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => {
                close(&mut shard).await;
                return Ok(());
            }
            item = shard.next() => item,
        };
        let json = match item {
            None => {
                return Err(ShardError::FatallyClosed {
                    shard: id,
                    code: None,
                })
            }
            Some(Err(e)) => {
                bump(&stats.receive_errors);
                tracing::warn!(shard = id, error = %e, "receive error; continuing");
                continue;
            }
            Some(Ok(Message::Close(frame))) => {
                bump(&stats.disconnects);
                let code = frame.as_ref().map(|f| f.code);
                tracing::info!(shard = id, ?code, "disconnected; twilight reconnects");
                if shard.state() == twilight_gateway::ShardState::FatallyClosed {
                    return Err(ShardError::FatallyClosed { shard: id, code });
                }
                continue;
            }
            Some(Ok(Message::Text(json))) => json,
        };
        let received_at_us = unix_micros();
        let dispatch = match envelope::route(&json) {
            Ok(Some(dispatch)) => dispatch,
            Ok(None) => continue,
            Err(e) => {
                bump(&stats.route_errors);
                tracing::warn!(shard = id, error = %e, "unroutable payload");
                continue;
            }
        };
        bump(&stats.dispatches);
        let kind = dispatch.kind;
        let span = tracing::debug_span!("dispatch", shard = id, event = kind, seq = dispatch.seq);
        // The envelope is written into the buffer NATS sends: no copy.
        let mut buf = Vec::with_capacity(json.len() + 160);
        Envelope::new(id, &dispatch, received_at_us).write_to(&mut buf);
        let subject = match subjects.iter().find(|(k, _)| k == kind) {
            Some((_, subject)) => subject.clone(),
            None => {
                let subject = async_nats::Subject::from(format!("{subject_prefix}{kind}"));
                if subjects.len() < MAX_CACHED_SUBJECTS {
                    subjects.push((kind.to_owned(), subject.clone()));
                }
                subject
            }
        };
        let cache_it = ctx.cache.is_some() && ctx.cache_mode.caches(kind);

        let published = ctx
            .publisher
            .publish(subject, Bytes::from(buf))
            .instrument(span.clone())
            .await;
        match published {
            Ok(true) => bump(&stats.published),
            Ok(false) => bump(&stats.discarded),
            Err(e) => {
                bump(&stats.publish_errors);
                let _enter = span.enter();
                tracing::warn!(error = %e, "publish failed");
            }
        }

        if cache_it {
            let _enter = span.enter();
            match twilight_gateway::parse(json, wanted) {
                Ok(Some(event)) => {
                    if let Some(cache) = &ctx.cache {
                        cache.update(&twilight_gateway::Event::from(event));
                        bump(&stats.cached_events);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "event not parsed for the cache"),
            }
        }
    }
}

/// Closes the session cleanly, reading until the close completes or a short timeout.
async fn close(shard: &mut Shard<IdentifyQueue>) {
    shard.close(CloseFrame::NORMAL);
    let drain = async {
        while let Some(item) = shard.next().await {
            if matches!(item, Ok(Message::Close(_))) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}
