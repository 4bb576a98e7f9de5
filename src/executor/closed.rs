//! The closed model (k6's `ramping-vus`/`constant-vus`): a controller follows the stages by
//! starting VUs and asking surplus ones to stop after their current iteration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::vu::VirtualUser;
use super::RunContext;
use crate::metrics::recorder::{Recorder, SampleKind};
use crate::scenario::{LoadShape, Plan};

/// How often the controller re-reads the stage target.
const CONTROL_TICK: Duration = Duration::from_millis(50);

struct Running {
    /// Cancelled to ask the VU to stop after its current iteration.
    retire: CancellationToken,
    handle: JoinHandle<()>,
}

pub async fn run(plan: &Plan, ctx: Arc<RunContext>, vus: Arc<AtomicU64>, stop: CancellationToken) {
    let LoadShape::Closed {
        graceful_ramp_down, ..
    } = plan.load
    else {
        unreachable!("closed executor with an open load shape")
    };
    let total = plan.load.duration();
    let mut active: Vec<Running> = Vec::new();
    let mut retiring: Vec<(Instant, JoinHandle<()>)> = Vec::new();
    let mut next_id = 0usize;
    let mut tick = tokio::time::interval(CONTROL_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
            _ = ctx.exhausted.cancelled() => break,
        }
        let t = ctx.start.elapsed();
        if t >= total {
            break;
        }
        // Every VU has run its iterations (pgbench -t): the run is over.
        if ctx.iterations_per_vu.is_some()
            && !active.is_empty()
            && active.iter().all(|r| r.handle.is_finished())
        {
            break;
        }
        let target = plan.load.target_at(t).round() as usize;
        while active.len() < target {
            let retire = CancellationToken::new();
            let handle = tokio::spawn(vu_loop(ctx.clone(), next_id, retire.clone()));
            next_id += 1;
            active.push(Running { retire, handle });
        }
        while active.len() > target {
            let r = active.pop().expect("len > target >= 0");
            r.retire.cancel();
            retiring.push((Instant::now() + graceful_ramp_down, r.handle));
        }
        let now = Instant::now();
        retiring.retain(|(deadline, h)| {
            if *deadline <= now {
                h.abort();
            }
            !h.is_finished()
        });
        vus.store((active.len() + retiring.len()) as u64, Ordering::Relaxed);
    }
    // The stages are over (or the run is stopped): let in-flight iterations finish within
    // graceful_stop, unless the stop is a hard one.
    for r in &active {
        r.retire.cancel();
    }
    let handles: Vec<JoinHandle<()>> = active
        .into_iter()
        .map(|r| r.handle)
        .chain(retiring.into_iter().map(|(_, h)| h))
        .collect();
    finish(handles, plan.graceful_stop, &stop, &vus).await;
}

/// Waits for VUs to end; aborts the rest after `grace` or at once when `stop` is cancelled.
pub(super) async fn finish(
    mut handles: Vec<JoinHandle<()>>,
    grace: Duration,
    stop: &CancellationToken,
    vus: &AtomicU64,
) {
    let deadline = tokio::time::Instant::now() + grace;
    while !handles.is_empty() {
        handles.retain(|h| !h.is_finished());
        vus.store(handles.len() as u64, Ordering::Relaxed);
        if stop.is_cancelled() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.cancelled() => {}
        }
    }
    for h in &handles {
        h.abort();
    }
    for h in handles {
        let _ = h.await;
    }
    vus.store(0, Ordering::Relaxed);
}

async fn vu_loop(ctx: Arc<RunContext>, id: usize, retire: CancellationToken) {
    let recorder = Recorder::in_scenario(ctx.run_start, ctx.samples.clone(), ctx.scenario);
    let rng = SmallRng::seed_from_u64(ctx.segment.seed(0x0074_6875_6d70_6572 ^ id as u64));
    let mut vu = VirtualUser::new(id, rng, recorder, &ctx);
    let mut left = ctx.iterations_per_vu.unwrap_or(u64::MAX);
    while !retire.is_cancelled() && left > 0 {
        left -= 1;
        if !vu.feed(&ctx) {
            break;
        }
        let end = vu.iterate(&ctx, None).await;
        vu.recorder.push(Instant::now(), SampleKind::Iteration);
        let pause = vu.next_backoff(&ctx, end).unwrap_or(ctx.think_time);
        if pause.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = retire.cancelled() => {}
        }
    }
}
