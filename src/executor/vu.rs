//! One virtual user's iteration: pick a query, get a client, run it, record what happened.
//! A VU owns its connection, its random number generator and its recorder.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use tokio_postgres::Client;

use super::{Connector, RunContext};
use crate::metrics::recorder::{Recorder, SampleKind, SetupStep};
use crate::workload::pgbench::{Prng, Session};
use crate::workload::{ConnectionState, Item, QueryFailure};

/// A VU's own connection (per-VU topology).
pub struct OwnConnection {
    pub(super) client: Client,
    pub(super) state: ConnectionState,
}

/// A connection opened for a VU before the run's clock started, and how long opening it took.
pub type Warmed = Result<(Client, Duration), QueryFailure>;

/// Opens one connection for a pre-allocated VU (see [`super::warm_up`]).
pub async fn open_ahead(config: &tokio_postgres::Config, timeout: Duration) -> Warmed {
    let began = Instant::now();
    let client = Connector::connect(config, timeout).await?;
    Ok((client, began.elapsed()))
}

/// How an iteration ended, for the VU's reconnect backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IterationEnd {
    Done,
    ConnectionFailed,
}

pub struct VirtualUser {
    pub id: usize,
    pub rng: SmallRng,
    /// pgbench's generator for the scenario's tenant distribution.
    pub(super) tenant_rng: Prng,
    pub recorder: Recorder,
    pub(super) conn: Option<OwnConnection>,
    /// Per-checkout state for the pooled topology (no prepared statements there).
    pub(super) pooled_state: ConnectionState,
    /// The VU's pgbench session (variables, random state), kept across its script runs.
    pub(super) session: Option<Session>,
    backoff: Duration,
    /// The feeder row of the next iteration.
    row: Option<crate::workload::FeedRow>,
}

impl VirtualUser {
    pub fn new(id: usize, rng: SmallRng, recorder: Recorder, ctx: &RunContext) -> Self {
        VirtualUser {
            id,
            rng,
            tenant_rng: ctx
                .workload
                .tenant_choice()
                .rng(ctx.segment.seed(id as u64) as usize),
            recorder,
            conn: None,
            pooled_state: ConnectionState::default(),
            session: None,
            backoff: ctx.min_backoff,
            row: None,
        }
    }

    /// Takes the next iteration's feeder row; `false` when the scenario's feeder has run out
    /// (then it ends: see [`RunContext::exhausted`]).
    pub fn feed(&mut self, ctx: &RunContext) -> bool {
        let Some(feed) = &ctx.feed else {
            return true;
        };
        self.row = feed.next(&mut self.rng);
        if self.row.is_none() {
            ctx.exhausted.cancel();
        }
        self.row.is_some()
    }

    /// Takes the connection opened for this VU before the run's clock started (open-model
    /// pre-allocation), recording how long it took; a failure is recorded and the first
    /// iteration connects again.
    pub fn adopt(&mut self, warm: Warmed) {
        match warm {
            Ok((client, took)) => {
                self.record_setup(Instant::now(), SetupStep::Connect, took);
                self.conn = Some(OwnConnection {
                    client,
                    state: ConnectionState::default(),
                });
            }
            Err(f) => self.record_failure(None, f, None),
        }
    }

    /// Opens the VU's own connection, recording how long that took.
    async fn connect(
        &mut self,
        config: &tokio_postgres::Config,
        timeout: Duration,
    ) -> Result<(), QueryFailure> {
        let began = Instant::now();
        let client = Connector::connect(config, timeout).await?;
        let now = Instant::now();
        self.record_setup(now, SetupStep::Connect, now - began);
        self.conn = Some(OwnConnection {
            client,
            state: ConnectionState::default(),
        });
        Ok(())
    }

    fn record_setup(&mut self, now: Instant, step: SetupStep, took: Duration) {
        self.recorder.push(
            now,
            SampleKind::Setup {
                step,
                us: took.as_micros() as u64,
            },
        );
    }

    /// Records a failure; `timed` is the failed query's origin (intended start or send) and
    /// its send, if it was sent, for its place in the latency.
    pub(super) fn record_failure(
        &mut self,
        query: Option<u16>,
        f: QueryFailure,
        timed: Option<(Instant, Option<Instant>)>,
    ) {
        let now = Instant::now();
        let us = |since: Instant| now.saturating_duration_since(since).as_micros() as u64;
        self.recorder.push(
            now,
            SampleKind::Error {
                query,
                kind: f.kind,
                class: f.class.into_boxed_str(),
                response_us: timed.map(|(origin, _)| us(origin)),
                service_us: timed.and_then(|(_, sent)| sent.map(us)),
            },
        );
    }

    /// Runs one iteration: a query of the mix or a pgbench script. `intended` is the scheduled
    /// start in the open model: latency is then measured from it, so time spent waiting for a
    /// VU, a connection or a pooled client counts. In the closed model latency is measured from
    /// the send; getting a client is reported as `connect_duration` and `pool_wait` instead.
    pub async fn iterate(&mut self, ctx: &RunContext, intended: Option<Instant>) -> IterationEnd {
        match ctx.workload.pick_item(&mut self.rng) {
            Item::Query(index) => self.run_query(ctx, intended, index).await,
            Item::Script(index) => self.run_script(ctx, intended, index).await,
        }
    }

    async fn run_query(
        &mut self,
        ctx: &RunContext,
        intended: Option<Instant>,
        index: usize,
    ) -> IterationEnd {
        let workload = &ctx.workload;
        let mut draw = workload.draw(&mut self.rng, &mut self.tenant_rng);
        draw.row = self.row.take();
        let query = (usize::from(ctx.query_offset) + index) as u16;
        // In the open model the query is outstanding from its scheduled start.
        if let Some(due) = intended {
            self.recorder.begin(query, due);
        }
        let pooled = match self.acquire(ctx, intended, query).await {
            Ok(pooled) => pooled,
            Err(end) => return end,
        };
        let sent = Instant::now();
        self.recorder.begin(query, intended.unwrap_or(sent));
        let outcome = {
            let (client, state) = self.client(&pooled);
            workload.execute(client, state, index, draw).await
        };
        self.release(pooled, outcome.as_ref().is_err_and(|f| f.broken));
        let done = Instant::now();
        let origin = intended.unwrap_or(sent);
        match outcome {
            Ok(o) => self.recorder.push(
                done,
                SampleKind::Query {
                    query,
                    response_us: (done - origin).as_micros() as u64,
                    service_us: (done - sent).as_micros() as u64,
                    lag_us: intended.map(|i| sent.saturating_duration_since(i).as_micros() as u64),
                    tenant_violations: o.tenant_violations as u32,
                },
            ),
            Err(f) => self.record_failure(Some(query), f, Some((origin, Some(sent)))),
        }
        IterationEnd::Done
    }

    /// Gets the iteration's client: the VU's own connection (opened if need be; `None`
    /// returned, the connection is in `self.conn`) or a pooled one. Records how long that took,
    /// and a failure as the scheduled query's (`query`) in the open model.
    pub(super) async fn acquire(
        &mut self,
        ctx: &RunContext,
        intended: Option<Instant>,
        query: u16,
    ) -> Result<Option<deadpool_postgres::Object>, IterationEnd> {
        let failed = match &ctx.connector {
            Connector::PerVu { config, timeout } => {
                if self.conn.is_some() {
                    return Ok(None);
                }
                match self.connect(config, *timeout).await {
                    Ok(()) => return Ok(None),
                    Err(f) => f,
                }
            }
            Connector::Pooled { pools, .. } => {
                let began = Instant::now();
                let checkout = Connector::checkout(pools, self.id).await;
                let got = Instant::now();
                self.record_setup(got, SetupStep::PoolWait, got - began);
                match checkout {
                    Ok(c) => return Ok(Some(c)),
                    Err(f) => f,
                }
            }
        };
        // A scheduled query that could not get a connection: it took from its intended start
        // until now, and counts in the latency.
        self.record_failure(intended.map(|_| query), failed, intended.map(|i| (i, None)));
        Err(IterationEnd::ConnectionFailed)
    }

    /// The client [`Self::acquire`] got, with its connection state.
    pub(super) fn client<'a>(
        &'a mut self,
        pooled: &'a Option<deadpool_postgres::Object>,
    ) -> (&'a Client, &'a mut ConnectionState) {
        held(&mut self.conn, &mut self.pooled_state, pooled)
    }

    /// Hands the client back: a broken one is dropped (the VU's own is reopened next time; a
    /// pooled one is not returned to the pool).
    pub(super) fn release(&mut self, pooled: Option<deadpool_postgres::Object>, broken: bool) {
        match pooled {
            Some(c) if broken => drop(deadpool_postgres::Object::take(c)),
            Some(c) => drop(c),
            None => {
                if broken || self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
                    self.conn = None;
                }
            }
        }
    }

    /// The delay before the next attempt after `end`: doubling while connections fail.
    pub fn next_backoff(&mut self, ctx: &RunContext, end: IterationEnd) -> Option<Duration> {
        match end {
            IterationEnd::Done => {
                self.backoff = ctx.min_backoff;
                None
            }
            IterationEnd::ConnectionFailed => {
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(ctx.max_backoff);
                Some(wait)
            }
        }
    }
}

/// The held client and its state, from the VU's fields (so a caller can borrow its recorder
/// beside them).
pub(super) fn held<'a>(
    conn: &'a mut Option<OwnConnection>,
    pooled_state: &'a mut ConnectionState,
    pooled: &'a Option<deadpool_postgres::Object>,
) -> (&'a Client, &'a mut ConnectionState) {
    match pooled {
        Some(c) => (c, pooled_state),
        None => {
            let conn = conn.as_mut().expect("acquired");
            (&conn.client, &mut conn.state)
        }
    }
}
