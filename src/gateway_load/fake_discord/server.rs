//! The fake's listener, its connections and the per-shard event drivers.
//!
//! Each shard has one [`ShardState`] behind a short-lived lock. Drivers append member events to
//! the shard's session and wake the connection serving it; the connection writes whatever is
//! unsent. Because events go to the session rather than to a socket, events due while a client
//! is reconnecting wait in the session and are replayed when it resumes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::pace::{due_unix, event_schedule, pace, unix_micros, MemberEvents, RateSchedule};
use super::payload;
use super::session::{ConnectionLink, Session, ShardState};
use super::{FakeConfig, FakeStats, Fault};

/// How long a new connection may take to identify or resume.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

struct Slot {
    state: Mutex<ShardState>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, ShardState> {
        // A panic while holding the lock leaves plain counters behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Shared {
    config: FakeConfig,
    url: String,
    shards: Vec<Slot>,
    shutdown: CancellationToken,
    next_id: AtomicU64,
}

/// A running fake Discord gateway. Dropping it without [`FakeDiscord::shutdown`] leaves its
/// tasks running until the runtime ends.
pub struct FakeDiscord {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: JoinHandle<()>,
    events: Mutex<Option<EventDrive>>,
}

/// The event drivers in progress.
struct EventDrive {
    stop: CancellationToken,
    drivers: Vec<JoinHandle<()>>,
}

impl FakeDiscord {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeDiscord> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shards = (0..config.world.total_shards.max(1))
            .map(|_| Slot {
                state: Mutex::new(ShardState::default()),
            })
            .collect();
        let shared = Arc::new(Shared {
            config,
            url: format!("ws://{addr}"),
            shards,
            shutdown: CancellationToken::new(),
            next_id: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FakeDiscord {
            shared,
            addr,
            accept,
            events: Mutex::new(None),
        })
    }

    /// `ws://127.0.0.1:PORT`, for the gateway's URL override.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts driving member events on every shard, each taking an equal share of the rate
    /// stages; returns the instant the stages count from. Stops any drive in progress.
    pub async fn start_events(&self, stages: &[(Duration, u32)]) -> Instant {
        self.stop_events().await;
        let stop = self.shared.shutdown.child_token();
        let shards = self.shared.shards.len() as u32;
        let start = Instant::now();
        let start_unix = unix_micros();
        let drivers = (0..shards)
            .map(|shard| {
                let schedule = event_schedule(stages, 1.0 / f64::from(shards));
                let shared = Arc::clone(&self.shared);
                let stop = stop.clone();
                // A thread of its own, sleeping with the OS timer: tokio's timer wakes on
                // millisecond ticks, so every event would leave up to 1 ms after it was due
                // (and be measured that much late). See `pace::PACE_TICK`.
                tokio::task::spawn_blocking(move || {
                    drive_events(shared, shard, schedule, start, start_unix, stop)
                })
            })
            .collect();
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(EventDrive { stop, drivers });
        start
    }

    /// Waits until every driver has sent the last event of its stages.
    pub async fn finish_events(&self) {
        let drive = self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(drive) = drive {
            for driver in drive.drivers {
                let _ = driver.await;
            }
        }
    }

    /// Stops driving member events now; once it returns, no further event is sent.
    pub async fn stop_events(&self) {
        let drive = self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(drive) = drive {
            drive.stop.cancel();
            for driver in drive.drivers {
                let _ = driver.await;
            }
        }
    }

    /// Injects `fault` into the connection serving `shard`; false when none serves it.
    pub fn inject(&self, shard: u32, fault: Fault) -> bool {
        let Some(slot) = self.shared.shards.get(shard as usize) else {
            return false;
        };
        let st = slot.lock();
        st.connection
            .as_ref()
            .is_some_and(|c| c.faults.send(fault).is_ok())
    }

    /// A snapshot of the fake's counters.
    pub fn stats(&self) -> FakeStats {
        let mut stats = FakeStats::default();
        for slot in &self.shared.shards {
            let st = slot.lock();
            stats.events_sent.push(st.events_sent);
            stats.events_skipped += st.events_skipped;
            stats.identifies += st.identifies;
            stats.resumes += st.resumes;
            stats.replayed += st.replayed;
            stats.reconnects += (st.identifies + st.resumes).saturating_sub(1);
            stats.active_shards += u64::from(st.session.is_some() && st.connection.is_some());
        }
        stats
    }

    /// Closes the listener and every connection.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let _ = self.accept.await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _)) => {
                // Events are small and latency is what we measure: no Nagle delay.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(Arc::clone(&shared), tcp));
            }
            Err(e) => {
                tracing::warn!(error = %e, "fake discord: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a client sent, as far as the fake cares.
#[derive(Deserialize)]
struct ClientFrame {
    op: u8,
    #[serde(default)]
    d: serde_json::Value,
}

#[derive(Deserialize)]
struct IdentifyData {
    token: String,
    shard: Option<[u32; 2]>,
}

#[derive(Deserialize)]
struct ResumeData {
    token: String,
    session_id: String,
    seq: u64,
}

enum ClientOp {
    Heartbeat(Option<u64>),
    Identify(IdentifyData),
    Resume(ResumeData),
    Other,
}

fn parse_client(text: &str) -> ClientOp {
    let Ok(frame) = serde_json::from_str::<ClientFrame>(text) else {
        return ClientOp::Other;
    };
    match frame.op {
        1 => ClientOp::Heartbeat(frame.d.as_u64()),
        2 => serde_json::from_value(frame.d).map_or(ClientOp::Other, ClientOp::Identify),
        6 => serde_json::from_value(frame.d).map_or(ClientOp::Other, ClientOp::Resume),
        _ => ClientOp::Other,
    }
}

type Ws = WebSocketStream<TcpStream>;

async fn close_with(ws: &mut Ws, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = ws.close(Some(frame)).await;
}

/// Serves one WebSocket connection: handshake, then events until it ends.
async fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let hello = payload::hello(shared.config.heartbeat_interval.as_millis() as u64);
    if ws.send(Message::text(hello)).await.is_err() {
        return;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let cancel = shared.shutdown.child_token();
    let wake = Arc::new(Notify::new());
    let (faults_tx, faults) = mpsc::unbounded_channel();
    let link = || ConnectionLink {
        id,
        cancel: cancel.clone(),
        faults: faults_tx.clone(),
        wake: Arc::clone(&wake),
    };

    let shard = match handshake(&shared, &mut ws, link).await {
        Some(shard) => shard,
        None => return,
    };
    let mut conn = Connection {
        shared: &shared,
        slot: &shared.shards[shard as usize],
        id,
        ws,
        acked: 0,
        batch: Vec::new(),
    };
    conn.run(&cancel, &wake, faults).await;
    // Leave the session for a resume; only forget the connection.
    let mut st = conn.slot.lock();
    if st.is_served_by(id) {
        st.connection = None;
    }
}

/// Waits for Identify or Resume; returns the shard now served by this connection.
async fn handshake(shared: &Shared, ws: &mut Ws, link: impl Fn() -> ConnectionLink) -> Option<u32> {
    let world = shared.config.world;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let msg = tokio::select! {
            _ = shared.shutdown.cancelled() => return None,
            msg = tokio::time::timeout_at(deadline, ws.next()) => msg.ok()??,
        };
        let text = match msg {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        };
        match parse_client(&text) {
            ClientOp::Heartbeat(_) => {
                ws.send(Message::text(payload::heartbeat_ack()))
                    .await
                    .ok()?;
            }
            ClientOp::Identify(identify) => {
                if !token_ok(&shared.config.token, &identify.token) {
                    close_with(ws, 4004, "Authentication failed.").await;
                    return None;
                }
                let [shard, total] = identify.shard.unwrap_or([0, 1]);
                if total != world.total_shards || shard >= total {
                    close_with(ws, 4010, "Invalid shard.").await;
                    return None;
                }
                let slot = &shared.shards[shard as usize];
                let mut st = slot.lock();
                let session_id =
                    format!("fake-{shard}-{:x}", shared.next_id.load(Ordering::Relaxed));
                let mut session = Session::new(session_id.clone());
                session
                    .push_with(|seq| payload::ready(seq, &session_id, shard, &world, &shared.url));
                for local in 0..world.guilds_on_shard(shard) {
                    let index = world.guild_index(shard, local);
                    session.push_with(|seq| payload::guild_create(seq, &world, index));
                }
                st.session = Some(session);
                st.identifies += 1;
                let link = link();
                link.wake.notify_one();
                st.attach(link);
                return Some(shard);
            }
            ClientOp::Resume(resume) => {
                if !token_ok(&shared.config.token, &resume.token) {
                    close_with(ws, 4004, "Authentication failed.").await;
                    return None;
                }
                let shard = shared.shards.iter().position(|slot| {
                    slot.lock()
                        .session
                        .as_ref()
                        .is_some_and(|s| s.id == resume.session_id)
                });
                let resumed = shard.is_some_and(|shard| {
                    let mut st = shared.shards[shard].lock();
                    let Some(session) = st.session.as_mut() else {
                        return false;
                    };
                    if !session.can_resume_from(resume.seq) {
                        return false;
                    }
                    let missed = session.seq - resume.seq;
                    session.rewind_to(resume.seq);
                    session.push_with(payload::resumed);
                    st.resumes += 1;
                    st.replayed += missed;
                    let link = link();
                    link.wake.notify_one();
                    st.attach(link);
                    true
                });
                if resumed {
                    return shard.map(|s| s as u32);
                }
                // Unknown or expired session: the client must identify again.
                ws.send(Message::text(payload::invalid_session(false)))
                    .await
                    .ok()?;
            }
            ClientOp::Other => {}
        }
    }
}

fn token_ok(expected: &Option<String>, got: &str) -> bool {
    match expected {
        Some(token) => got.strip_prefix("Bot ").unwrap_or(got) == token,
        None => !got.trim_start_matches("Bot ").is_empty(),
    }
}

/// Why writing stopped.
enum WriteEnd {
    Written,
    /// Another connection took over the shard.
    Superseded,
    /// The session was invalidated (overflowed while the client was away).
    SessionGone,
}

struct Connection<'a> {
    shared: &'a Shared,
    slot: &'a Slot,
    id: u64,
    ws: Ws,
    /// Last sequence the client confirmed by heartbeat.
    acked: u64,
    batch: Vec<Utf8Bytes>,
}

impl Connection<'_> {
    async fn run(
        &mut self,
        cancel: &CancellationToken,
        wake: &Notify,
        mut faults: mpsc::UnboundedReceiver<Fault>,
    ) {
        let mut zombie = false;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                fault = faults.recv() => {
                    let Some(fault) = fault else { return };
                    match fault {
                        // Dropping the socket closes TCP without a WebSocket close frame.
                        Fault::Drop => return,
                        Fault::Reconnect => {
                            if self.write_unsent().await.is_err()
                                || self.send(payload::reconnect()).await.is_err()
                            {
                                return;
                            }
                        }
                        Fault::InvalidSession => {
                            let session = {
                                let mut st = self.slot.lock();
                                if st.is_served_by(self.id) { st.session.take() } else { None }
                            };
                            if let Some(mut session) = session {
                                session.take_unsent(&mut self.batch);
                                if self.flush_batch().await.is_err() {
                                    return;
                                }
                            }
                            if self.send(&payload::invalid_session(false)).await.is_err() {
                                return;
                            }
                        }
                        Fault::StopHeartbeatAck => zombie = true,
                    }
                }
                msg = self.ws.next() => {
                    let text = match msg {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                        Some(Ok(_)) => continue,
                    };
                    if let ClientOp::Heartbeat(seq) = parse_client(&text) {
                        self.acked = self.acked.max(seq.unwrap_or(0));
                        if !zombie && self.send(payload::heartbeat_ack()).await.is_err() {
                            return;
                        }
                    }
                }
                _ = wake.notified(), if !zombie => {
                    match self.write_unsent().await {
                        Ok(WriteEnd::Written) => {}
                        Ok(WriteEnd::Superseded) | Err(_) => return,
                        Ok(WriteEnd::SessionGone) => {
                            if self.send(&payload::invalid_session(false)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn send(&mut self, text: &str) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(Message::text(text)).await
    }

    async fn write_unsent(&mut self) -> Result<WriteEnd, tokio_tungstenite::tungstenite::Error> {
        {
            let mut st = self.slot.lock();
            if !st.is_served_by(self.id) {
                return Ok(WriteEnd::Superseded);
            }
            let Some(session) = st.session.as_mut() else {
                return Ok(WriteEnd::SessionGone);
            };
            session.take_unsent(&mut self.batch);
            session.trim(self.acked, self.shared.config.replay_capacity);
        }
        self.flush_batch().await?;
        Ok(WriteEnd::Written)
    }

    async fn flush_batch(&mut self) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        for text in self.batch.drain(..) {
            self.ws.feed(Message::Text(text)).await?;
        }
        self.ws.flush().await
    }
}

/// Drives one shard's member events along `schedule`, stamping each with its due time. Blocks:
/// runs on a thread of its own.
fn drive_events(
    shared: Arc<Shared>,
    shard: u32,
    schedule: RateSchedule,
    start: Instant,
    start_unix: u64,
    stop: CancellationToken,
) {
    let world = shared.config.world;
    let Some(events) = MemberEvents::new(world, shard, shared.config.member_mix) else {
        return;
    };
    let slot = &shared.shards[shard as usize];
    pace(&schedule, start, &stop, |due| {
        let wake = {
            let mut st = slot.lock();
            let ShardState {
                session,
                connection,
                events_sent,
                events_skipped,
                ..
            } = &mut *st;
            let overflowing = session
                .as_ref()
                .is_some_and(|s| s.unsent() >= shared.config.max_unsent);
            if overflowing {
                *session = None;
            }
            match session.as_mut() {
                Some(session) => {
                    for k in due {
                        let id = *events_sent;
                        *events_sent += 1;
                        let e = events.event(id, due_unix(&schedule, start_unix, k));
                        session.push_with(|seq| {
                            payload::member_event(
                                seq,
                                e.kind,
                                &world,
                                e.guild_index,
                                e.member,
                                e.mark,
                            )
                        });
                    }
                }
                None => *events_skipped += due.end - due.start,
            }
            connection.as_ref().map(|c| Arc::clone(&c.wake))
        };
        if let Some(wake) = wake {
            wake.notify_one();
        }
    });
}
