//! The open model (k6's `constant-arrival-rate`/`ramping-arrival-rate`): a scheduler starts
//! iterations at `start + i / rate` whatever the responses, handing each a ticket that carries
//! its intended start to a free VU. With no free VU and `max_vus` reached the iteration is
//! dropped and counted; latency is measured from the intended start, which is the whole
//! coordinated-omission correction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::closed::finish;
use super::vu::VirtualUser;
use super::RunContext;
use crate::metrics::recorder::{Recorder, SampleKind};
use crate::scenario::{LoadShape, Plan};

/// The scheduled start of one iteration.
struct Ticket {
    intended: Instant,
}

struct Slot {
    tx: mpsc::Sender<Ticket>,
}

pub async fn run(plan: &Plan, ctx: Arc<RunContext>, vus: Arc<AtomicU64>, stop: CancellationToken) {
    let LoadShape::Open {
        time_unit,
        pre_allocated_vus,
        max_vus,
        ..
    } = plan.load
    else {
        unreachable!("open executor with a closed load shape")
    };
    let total = plan.load.duration();
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel::<usize>();
    let mut slots: Vec<Slot> = Vec::new();
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    let mut idle: Vec<usize> = Vec::new();
    let mut recorder = Recorder::new(ctx.start, ctx.samples.clone());

    let spawn =
        |id: usize, warm: bool, slots: &mut Vec<Slot>, handles: &mut Vec<JoinHandle<()>>| {
            let (tx, rx) = mpsc::channel(1);
            slots.push(Slot { tx });
            handles.push(tokio::spawn(vu_loop(
                ctx.clone(),
                id,
                rx,
                idle_tx.clone(),
                warm,
            )));
        };
    for id in 0..pre_allocated_vus as usize {
        spawn(id, true, &mut slots, &mut handles);
    }
    // Pre-allocated VUs connect before the first iteration is due; they announce themselves
    // as idle when ready.
    let unit = time_unit.as_secs_f64();
    let mut t = Duration::ZERO;
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    loop {
        let rate_per_s = plan.load.target_at(t) / unit;
        if rate_per_s <= 0.0 {
            t += Duration::from_millis(1);
            if t >= total {
                break;
            }
            continue;
        }
        let intended = ctx.start + t;
        if intended > Instant::now() {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(intended));
            tokio::select! {
                _ = &mut sleep => {}
                _ = stop.cancelled() => break,
            }
        } else if stop.is_cancelled() {
            break;
        }
        while let Ok(id) = idle_rx.try_recv() {
            idle.push(id);
        }
        let ticket = Ticket { intended };
        let mut handed = false;
        if let Some(id) = idle.pop() {
            handed = slots[id].tx.try_send(ticket).is_ok();
        } else if slots.len() < max_vus as usize {
            let id = slots.len();
            spawn(id, false, &mut slots, &mut handles);
            handed = slots[id].tx.try_send(Ticket { intended }).is_ok();
        }
        if !handed {
            recorder.push(Instant::now(), SampleKind::Dropped);
        }
        recorder.maybe_flush(Instant::now());
        vus.store((slots.len() - idle.len()) as u64, Ordering::Relaxed);
        t += Duration::from_secs_f64(1.0 / rate_per_s);
        if t >= total {
            break;
        }
    }
    recorder.flush();
    drop(recorder);
    // No more tickets: VUs finish the one they hold, then see their channel closed.
    drop(slots);
    finish(handles, plan.graceful_stop, &stop, &vus).await;
}

async fn vu_loop(
    ctx: Arc<RunContext>,
    id: usize,
    mut tickets: mpsc::Receiver<Ticket>,
    idle: mpsc::UnboundedSender<usize>,
    warm: bool,
) {
    let recorder = Recorder::new(ctx.start, ctx.samples.clone());
    let rng = SmallRng::seed_from_u64(0x6f70_656e ^ id as u64);
    let mut vu = VirtualUser::new(id, rng, recorder, ctx.min_backoff);
    if warm {
        vu.warm_up(&ctx).await;
        vu.recorder.flush();
        let _ = idle.send(id);
    }
    while let Some(ticket) = tickets.recv().await {
        let end = vu.iterate(&ctx, Some(ticket.intended)).await;
        vu.recorder.push(Instant::now(), SampleKind::Iteration);
        if let Some(wait) = vu.next_backoff(&ctx, end) {
            // A VU whose connection fails sits out its backoff instead of taking tickets.
            vu.recorder.flush();
            tokio::time::sleep(wait).await;
        } else if !ctx.think_time.is_zero() {
            vu.recorder.flush();
            tokio::time::sleep(ctx.think_time).await;
        }
        // An idle VU may wait long for its next ticket: hand over what it holds now.
        vu.recorder.flush();
        if idle.send(id).is_err() {
            break;
        }
    }
}
