//! The open model (k6's `constant-arrival-rate`/`ramping-arrival-rate`): a scheduler starts
//! iterations when they are due on the stages' [`RateSchedule`] whatever the responses, handing each a ticket that carries
//! its intended start to a free VU. With no free VU and `max_vus` reached the iteration is
//! dropped and counted (k6), or with `on_busy = "queue"` waits for one (pgbench `-R`); latency is measured from the intended start, which is the whole
//! coordinated-omission correction.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::closed::finish;
use super::timer::PreciseTimer;
use super::vu::{VirtualUser, Warmed};
use super::RunContext;
use crate::metrics::recorder::{Recorder, SampleKind};
use crate::scenario::rate::RateSchedule;
use crate::scenario::{LoadShape, OnBusy, Plan};

/// The scheduled start of one iteration.
struct Ticket {
    intended: Instant,
}

struct Slot {
    tx: mpsc::Sender<Ticket>,
}

pub async fn run(plan: &Plan, ctx: Arc<RunContext>, vus: Arc<AtomicU64>, stop: CancellationToken) {
    let LoadShape::Open {
        start_rate,
        ref stages,
        time_unit,
        pre_allocated_vus,
        max_vus,
        on_busy,
    } = plan.load
    else {
        unreachable!("open executor with a closed load shape")
    };
    let stages = stages.clone();
    let (idle_tx, idle_rx) = mpsc::unbounded_channel::<usize>();
    let mut pool = VuPool {
        slots: Vec::new(),
        handles: Vec::new(),
        idle: Vec::new(),
        backlog: VecDeque::new(),
        max_vus: max_vus as usize,
        on_busy,
        ctx: ctx.clone(),
        idle_tx,
        recorder: Recorder::in_scenario(ctx.run_start, ctx.samples.clone(), ctx.scenario),
    };
    // Pre-allocated VUs connected before t = 0 (see `super::warm_up`): idle from the first
    // ticket on, so none is dropped or delayed while they log in.
    let mut warmed = ctx.warm.take().into_iter();
    for _ in 0..pre_allocated_vus {
        let id = pool.spawn(warmed.next());
        pool.idle.push(id);
    }
    // The schedule runs as a task on tokio's workers, sleeping on a timerfd (see
    // `super::timer`): tokio's own timer would start every iteration up to 1 ms late.
    let timetable = RateSchedule::new(start_rate, &stages, time_unit);
    let planned_end = ctx.start + plan.load.duration();
    let sched_stop = stop.clone();
    let sched_vus = vus.clone();
    let poisson = plan.poisson_arrivals;
    let scheduled = tokio::spawn(async move {
        // In a fleet, iteration k of the scenario's timetable is instance k mod N's.
        let segment = pool.ctx.segment;
        let (first, step) = (u64::from(segment.index), u64::from(segment.count));
        let due_times: Box<dyn Iterator<Item = Duration> + Send> = match poisson {
            Some(seed) => Box::new(timetable.poisson_arrivals(seed, first, step)),
            None => Box::new(timetable.arrivals_from(first, step)),
        };
        let mut clock = Clock {
            timer: PreciseTimer::new(),
            idle_rx,
        };
        schedule(due_times, &mut pool, &mut clock, &sched_stop, &sched_vus).await;
        // Queued iterations may still start until the planned end, not after it.
        let exhausted = pool.ctx.exhausted.clone();
        loop {
            clock.serve_idle(&mut pool);
            sched_vus.store(pool.busy() as u64, Ordering::Relaxed);
            let now = Instant::now();
            if pool.backlog.is_empty()
                || sched_stop.is_cancelled()
                || exhausted.is_cancelled()
                || now >= planned_end
            {
                break;
            }
            clock
                .nap(&mut pool, planned_end.min(now + CHECK_STOP))
                .await;
        }
        pool
    });
    let Ok(mut pool) = scheduled.await else {
        return;
    };
    // Iterations scheduled but never started are reported, not silently dropped; a feeder that
    // ran out ended the scenario, and what was queued has no rows to run on.
    if ctx.exhausted.is_cancelled() {
        pool.backlog.clear();
    }
    let now = Instant::now();
    for ticket in pool.backlog.drain(..) {
        let waited_us = now.saturating_duration_since(ticket.intended).as_micros() as u64;
        pool.recorder.push(
            now,
            SampleKind::Incomplete {
                query: None,
                waited_us,
            },
        );
    }
    let handles = std::mem::take(&mut pool.handles);
    // No more tickets: VUs finish the one they hold, then see their channel closed. One
    // graceful_stop window from the planned end (k6), then what is still running is cancelled.
    drop(pool);
    let grace = (planned_end + plan.graceful_stop).saturating_duration_since(Instant::now());
    finish(handles, grace, &stop, &vus).await;
}

/// How often a waiting scheduler looks at the stop token at least.
const CHECK_STOP: Duration = Duration::from_millis(10);

/// What the scheduler waits on: the next due time, or a VU becoming free.
struct Clock {
    timer: PreciseTimer,
    idle_rx: mpsc::UnboundedReceiver<usize>,
}

impl Clock {
    /// Hands every VU that became free a queued ticket, or marks it idle.
    fn serve_idle(&mut self, pool: &mut VuPool) {
        while let Ok(id) = self.idle_rx.try_recv() {
            pool.on_idle(id);
        }
    }

    /// Sleeps until `until`; while tickets are queued, a VU that becomes free ends the nap and
    /// takes one at once.
    async fn nap(&mut self, pool: &mut VuPool, until: Instant) {
        if pool.backlog.is_empty() {
            self.timer.sleep_until(until).await;
            return;
        }
        tokio::select! {
            () = self.timer.sleep_until(until) => {}
            Some(id) = self.idle_rx.recv() => pool.on_idle(id),
        }
    }
}

/// Issues tickets at the timetable's due times until it ends or `stop` is cancelled.
async fn schedule(
    due_times: impl Iterator<Item = Duration>,
    pool: &mut VuPool,
    clock: &mut Clock,
    stop: &CancellationToken,
    vus: &AtomicU64,
) {
    let start = pool.ctx.start;
    for due in due_times {
        let intended = start + due;
        loop {
            if stop.is_cancelled() || pool.ctx.exhausted.is_cancelled() {
                return;
            }
            clock.serve_idle(pool);
            let now = Instant::now();
            if now >= intended {
                break;
            }
            clock.nap(pool, intended.min(now + CHECK_STOP)).await;
        }
        pool.dispatch(Ticket { intended });
        vus.store(pool.busy() as u64, Ordering::Relaxed);
        // Catching up on tickets already due never sleeps: give the worker back now and then
        // so the VUs just handed tickets run (and free up) on a runtime of one worker too.
        tokio::task::consume_budget().await;
    }
}

/// The scheduler's view of its VUs: who is idle, and the tickets waiting for one.
struct VuPool {
    slots: Vec<Slot>,
    handles: Vec<JoinHandle<()>>,
    /// Idle VUs, most recently freed last (their connections are the warmest).
    idle: Vec<usize>,
    /// Tickets waiting for a VU (`on_busy = "queue"`), oldest first.
    backlog: VecDeque<Ticket>,
    max_vus: usize,
    on_busy: OnBusy,
    ctx: Arc<RunContext>,
    idle_tx: mpsc::UnboundedSender<usize>,
    recorder: Recorder,
}

impl VuPool {
    /// Starts a VU; a pre-allocated one brings the connection opened for it before t = 0.
    fn spawn(&mut self, warm: Option<Warmed>) -> usize {
        let id = self.slots.len();
        let (tx, rx) = mpsc::channel(1);
        self.slots.push(Slot { tx });
        self.handles.push(tokio::spawn(vu_loop(
            self.ctx.clone(),
            id,
            rx,
            self.idle_tx.clone(),
            warm,
        )));
        id
    }

    fn busy(&self) -> usize {
        self.slots.len() - self.idle.len()
    }

    fn on_idle(&mut self, id: usize) {
        match self.backlog.pop_front() {
            Some(ticket) => {
                let _ = self.slots[id].tx.try_send(ticket);
            }
            None => self.idle.push(id),
        }
    }

    /// Starts a ticket on a free VU, a new VU below `max_vus`, or queues or drops it.
    fn dispatch(&mut self, ticket: Ticket) {
        let now = Instant::now();
        if let Some(id) = self.idle.pop() {
            let _ = self.slots[id].tx.try_send(ticket);
        } else if self.slots.len() < self.max_vus {
            let id = self.spawn(None);
            let _ = self.slots[id].tx.try_send(ticket);
        } else if self.on_busy == OnBusy::Queue {
            self.backlog.push_back(ticket);
        } else {
            self.recorder.push(now, SampleKind::Dropped);
        }
    }
}

async fn vu_loop(
    ctx: Arc<RunContext>,
    id: usize,
    mut tickets: mpsc::Receiver<Ticket>,
    idle: mpsc::UnboundedSender<usize>,
    warm: Option<Warmed>,
) {
    let recorder = Recorder::in_scenario(ctx.run_start, ctx.samples.clone(), ctx.scenario);
    let rng = SmallRng::seed_from_u64(ctx.segment.seed(0x6f70_656e ^ id as u64));
    let mut vu = VirtualUser::new(id, rng, recorder, &ctx);
    if let Some(warm) = warm {
        vu.adopt(warm);
    }
    while let Some(ticket) = tickets.recv().await {
        if !vu.feed(&ctx) {
            // The feeder ran out: the scenario ends, and this ticket is not run.
            if idle.send(id).is_err() {
                break;
            }
            continue;
        }
        let end = vu.iterate(&ctx, Some(ticket.intended)).await;
        vu.recorder.push(Instant::now(), SampleKind::Iteration);
        if let Some(wait) = vu.next_backoff(&ctx, end) {
            // A VU whose connection fails sits out its backoff instead of taking tickets.
            tokio::time::sleep(wait).await;
        } else if !ctx.think_time.is_zero() {
            tokio::time::sleep(ctx.think_time).await;
        }
        if idle.send(id).is_err() {
            break;
        }
    }
}
