//! The worker's side of a coordinated fleet run (`thumper run --segment I/N --fleet-nats URL`):
//! wait for the coordinator's set-up, check the target, report ready, start at the announced
//! instant, stream every closed interval, stop when told, and hand over the summary at the end.
//!
//! A worker never migrates or seeds. Its own report folder is written before the summary is
//! sent, so a coordinator that dies leaves every worker's `summary.json` and `latency.hlog`
//! for `thumper merge`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::protocol::{
    host_name, unix_us_now, Broadcast, ClockOffset, Control, FromWorker, Subjects,
};
use super::{FleetLink, Segment};
use crate::metrics::aggregator::{RunView, Watcher};
use crate::metrics::summary::{Metric, Summary};
use crate::redact::redact;
use crate::run::database::{measure, Measure};
use crate::run::target::{preflight, with_target};
use crate::run::{self, RunError, RunOptions, RunResult};

/// How often a ready worker repeats that it is ready.
const READY_EVERY: Duration = Duration::from_millis(500);
/// A start announced longer ago than this is one this worker was not counted in.
const LATE_START: Duration = Duration::from_secs(2);
/// The coordinator broadcasts twice a second; silent this long during set-up, it is gone.
const COORDINATOR_SILENCE: Duration = Duration::from_secs(15);

/// A worker's connection to its fleet.
pub struct Worker {
    client: async_nats::Client,
    subjects: Subjects,
    segment: Segment,
    link: FleetLink,
    control: watch::Receiver<Option<Control>>,
    /// When the coordinator was last heard, microseconds since the Unix epoch.
    heard: Arc<AtomicI64>,
    /// This worker's clock against the coordinator's: the best estimate so far.
    clock: Clock,
    publisher: Option<JoinHandle<()>>,
}

/// The best clock-offset estimate so far, shared with the subscription that makes it.
type Clock = Arc<Mutex<Option<ClockOffset>>>;

/// Takes one round-trip sample from a broadcast received at `t3` that echoes this worker's
/// last ready message, keeping the estimate with the shortest round trip.
fn sample_clock(clock: &Clock, index: u32, b: &Broadcast, t3: i64) {
    let Some(t2) = b.sent_unix_us else { return };
    let Some(echo) = b.echoes.iter().find(|e| e.index == index) else {
        return;
    };
    let sample = ClockOffset::from_round_trip(echo.sent_unix_us, echo.received_unix_us, t2, t3);
    if let Ok(mut best) = clock.lock() {
        *best = Some(ClockOffset::best(*best, sample));
    }
}

impl Worker {
    /// Connects to the fleet's NATS server and follows the coordinator's broadcasts.
    pub async fn join(link: &FleetLink, segment: Segment) -> Result<Worker, RunError> {
        super::protocol::check_fleet_id(&link.id).map_err(RunError::BadInput)?;
        let client = super::protocol::connect(
            &link.nats,
            &format!("thumper worker {segment}"),
            link.ready_timeout,
        )
        .await?;
        let subjects = Subjects::new(&link.id);
        let mut sub = client
            .subscribe(subjects.control.clone())
            .await
            .map_err(|e| RunError::Failed(format!("subscribing on NATS: {e}")))?;
        // The subscription is registered before anything this worker publishes is seen.
        client
            .flush()
            .await
            .map_err(|e| RunError::Failed(format!("NATS at {}: {e}", redact(&link.nats))))?;
        let (tx, control) = watch::channel(None);
        let heard = Arc::new(AtomicI64::new(0));
        let on_message = heard.clone();
        let clock = Clock::default();
        let sampled = clock.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(msg) = sub.next().await {
                let t3 = unix_us_now();
                if let Ok(b) = serde_json::from_slice::<Broadcast>(&msg.payload) {
                    // Sampled before the state is passed on: the start is read with it.
                    sample_clock(&sampled, segment.index, &b, t3);
                    let c = b.control;
                    on_message.store(t3, Ordering::Relaxed);
                    tx.send_if_modified(|now| {
                        let changed = now.as_ref() != Some(&c);
                        *now = Some(c);
                        changed
                    });
                }
            }
        });
        Ok(Worker {
            client,
            subjects,
            segment,
            link: link.clone(),
            control,
            heard,
            clock,
            publisher: None,
        })
    }

    /// Waits until the coordinator has set the target up, however long seeding takes while
    /// the coordinator is heard. A coordinator never heard within `--ready-timeout`, one that
    /// goes silent, or one that cancels ends the run here, before any load.
    pub async fn wait_for_setup(&mut self, interrupt: &CancellationToken) -> Result<(), RunError> {
        let link = self.link.clone();
        let deadline = tokio::time::Instant::now() + link.ready_timeout;
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let heard = self.heard.load(Ordering::Relaxed);
            if heard > 0 && unix_us_now() - heard > COORDINATOR_SILENCE.as_micros() as i64 {
                return Err(RunError::Failed(format!(
                    "worker {}: the coordinator of fleet `{}` went silent during its set-up",
                    self.segment, link.id
                )));
            }
            let now = self.control.borrow_and_update().clone();
            match now {
                Some(Control::Open) => return Ok(()),
                Some(Control::Start { at_unix_us }) => return Err(self.late(at_unix_us)),
                Some(Control::Cancel { reason }) | Some(Control::Stop { reason, .. }) => {
                    return Err(RunError::Failed(format!(
                        "the fleet's coordinator cancelled the run: {reason}"
                    )))
                }
                Some(Control::Setup) | None => {}
            }
            tokio::select! {
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return Err(RunError::Failed("lost the NATS subscription".into()));
                    }
                }
                _ = check.tick() => {}
                _ = tokio::time::sleep_until(deadline), if heard == 0 => {
                    return Err(RunError::Failed(format!(
                        "worker {}: no coordinator of fleet `{}` answered on {} within {:?} (start `thumper fleet coordinate` with the same --fleet-id, or raise --ready-timeout)",
                        self.segment,
                        link.id,
                        redact(&link.nats),
                        link.ready_timeout
                    )));
                }
                _ = interrupt.cancelled() => {
                    return Err(RunError::Interrupted("interrupted while waiting for the fleet's coordinator, before any load".into()));
                }
            }
        }
    }

    /// Tells the coordinator this worker cannot run, so the fleet is cancelled at once.
    pub async fn fail(&self, reason: &str) {
        let msg = FromWorker::Failed {
            index: self.segment.index,
            reason: reason.to_owned(),
        };
        let _ = self.send(&msg).await;
        let _ = self.client.flush().await;
    }

    /// Reports ready until the coordinator announces the start, then waits for that instant.
    /// Returns when the load must start.
    pub async fn ready_and_wait_for_start(
        &mut self,
        interrupt: &CancellationToken,
    ) -> Result<(), RunError> {
        let host = host_name();
        let deadline = tokio::time::Instant::now() + self.link.ready_timeout;
        let mut every = tokio::time::interval(READY_EVERY);
        let at_unix_us = loop {
            let now = self.control.borrow_and_update().clone();
            match now {
                Some(Control::Start { at_unix_us }) => break at_unix_us,
                Some(Control::Cancel { reason }) | Some(Control::Stop { reason, .. }) => {
                    return Err(RunError::Failed(format!(
                        "the fleet's coordinator cancelled the run: {reason}"
                    )))
                }
                _ => {}
            }
            tokio::select! {
                _ = every.tick() => {
                    let ready = FromWorker::Ready {
                        index: self.segment.index,
                        count: self.segment.count,
                        host: host.clone(),
                        sent_unix_us: unix_us_now(),
                    };
                    self.send(&ready).await?
                }
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return Err(RunError::Failed("lost the NATS subscription".into()));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(RunError::Failed(format!(
                        "worker {}: the coordinator did not announce the start within {:?} of this worker's ready",
                        self.segment, self.link.ready_timeout
                    )));
                }
                _ = interrupt.cancelled() => {
                    return Err(RunError::Interrupted("interrupted at the fleet's ready barrier, before any load".into()));
                }
            }
        };
        // The coordinator's instant on this worker's clock.
        let at_unix_us = at_unix_us - self.clock().map_or(0, |c| c.offset_us);
        let wait_us = at_unix_us - unix_us_now();
        if wait_us < -(LATE_START.as_micros() as i64) {
            return Err(self.late(at_unix_us));
        }
        if wait_us > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_micros(wait_us as u64)) => {}
                _ = interrupt.cancelled() => {
                    return Err(RunError::Interrupted("interrupted before the fleet's start, before any load".into()));
                }
            }
        }
        Ok(())
    }

    /// This worker's clock against the coordinator's, if the coordinator's broadcasts allowed
    /// an estimate (a coordinator of an older build sends no echoes).
    pub fn clock(&self) -> Option<ClockOffset> {
        self.clock.lock().ok().and_then(|c| *c)
    }

    /// The summary's note on this worker's clock.
    pub fn clock_note(&self) -> Option<String> {
        self.clock().map(|c| {
            format!(
                "this worker's clock is {}; it started at the coordinator's instant",
                c.describe()
            )
        })
    }

    fn late(&self, at_unix_us: i64) -> RunError {
        RunError::Failed(format!(
            "worker {}: the fleet started {:.1} s ago without this worker; a worker that joins late is refused (start a new fleet run)",
            self.segment,
            (unix_us_now() - at_unix_us) as f64 / 1e6
        ))
    }

    /// A token cancelled when the coordinator stops the fleet as interrupted (a signal there, a
    /// lost worker): this worker's run then stops and reports as interrupted too.
    pub fn fleet_interrupt(&self, interrupt: &CancellationToken) -> CancellationToken {
        let token = interrupt.child_token();
        let on_stop = token.clone();
        let mut control = self.control.clone();
        tokio::spawn(async move {
            loop {
                if matches!(
                    &*control.borrow_and_update(),
                    Some(Control::Stop {
                        interrupted: true,
                        ..
                    })
                ) {
                    on_stop.cancel();
                    return;
                }
                tokio::select! {
                    changed = control.changed() => if changed.is_err() { return },
                    _ = on_stop.cancelled() => return,
                }
            }
        });
        token
    }

    /// Why the coordinator stopped the fleet as interrupted, if it did.
    pub fn fleet_stop_reason(&self) -> Option<String> {
        match &*self.control.borrow() {
            Some(Control::Stop {
                reason,
                interrupted: true,
            }) => Some(format!("the fleet was stopped: {reason}")),
            _ => None,
        }
    }

    /// The watcher that streams each closed interval to the coordinator and stops the run when
    /// the coordinator stops the fleet on a threshold.
    pub fn streamer(&mut self) -> Box<dyn Watcher> {
        let (tx, mut rx) = mpsc::unbounded_channel::<FromWorker>();
        let client = self.client.clone();
        let subject = self.subjects.worker.clone();
        self.publisher = Some(tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let Ok(bytes) = serde_json::to_vec(&msg) {
                    if client.publish(subject.clone(), bytes.into()).await.is_err() {
                        break;
                    }
                }
            }
            let _ = client.flush().await;
        }));
        Box::new(Streamer {
            index: self.segment.index,
            started_at_unix_us: unix_us_now(),
            sent: 0,
            tx,
            control: self.control.clone(),
            clock: self.clock.clone(),
        })
    }

    /// Hands the summary (as written to this worker's folder) to the coordinator and waits for
    /// its acknowledgement. Returns a note when the coordinator did not take it.
    pub async fn finish(mut self, summary: &Summary) -> Option<String> {
        if let Some(p) = self.publisher.take() {
            let _ = p.await;
        }
        let mut sent = summary.clone();
        sent.time_series.clear();
        let msg = FromWorker::Final {
            index: self.segment.index,
            summary: Box::new(sent),
        };
        let bytes = serde_json::to_vec(&msg).ok()?;
        for _ in 0..3 {
            let request = self
                .client
                .request(self.subjects.fin.clone(), bytes.clone().into());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), request).await {
                return None;
            }
        }
        Some(format!(
            "worker {}: the coordinator did not take this worker's summary; judge the fleet with `thumper merge` over the workers' report folders",
            self.segment
        ))
    }

    async fn send(&self, msg: &FromWorker) -> Result<(), RunError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| RunError::Failed(e.to_string()))?;
        self.client
            .publish(self.subjects.worker.clone(), bytes.into())
            .await
            .map_err(|e| RunError::Failed(format!("publishing to NATS: {e}")))
    }
}

/// `thumper run --fleet-nats URL --segment I/N`: one worker of a coordinated fleet, composed of
/// the spine's steps. It leaves the set-up to its coordinator and waits for it, checks the
/// target, starts at the announced instant, streams every interval, stops when told, writes its
/// own reports and hands its summary over.
pub async fn run(
    opts: &RunOptions,
    nats: &str,
    interrupt: CancellationToken,
) -> Result<RunResult, RunError> {
    let plan = run::load_plan(opts)?;
    with_target(&plan, opts, async |target| {
        let mut worker = Worker::join(&FleetLink::of(opts, nats), opts.segment).await?;
        worker.wait_for_setup(&interrupt).await?;
        let notes = match preflight(&target.url, &plan).await {
            Ok(notes) => notes,
            Err(e) => {
                worker.fail(&e.to_string()).await;
                return Err(e);
            }
        };
        worker.ready_and_wait_for_start(&interrupt).await?;
        let fleet_interrupt = worker.fleet_interrupt(&interrupt);
        let mut m = Measure::of(opts, notes);
        m.watchers.push(worker.streamer());
        let (mut summary, started_at) = measure(&plan, target, m, fleet_interrupt).await?;
        summary.notes.extend(worker.clock_note());
        if let Some(reason) = worker.fleet_stop_reason() {
            if crate::signals::received().is_none() {
                summary.stop_reason = Some(reason);
            }
        }
        let result = run::finish(summary, opts.report_to(&plan.name), started_at)?;
        if let Some(note) = worker.finish(&result.summary).await {
            eprintln!("thumper: {note}");
        }
        Ok(result)
    })
    .await
}

/// Streams closed intervals; the coordinator's threshold stop comes back through it.
struct Streamer {
    index: u32,
    started_at_unix_us: i64,
    sent: usize,
    tx: mpsc::UnboundedSender<FromWorker>,
    control: watch::Receiver<Option<Control>>,
    clock: Clock,
}

impl Streamer {
    fn send_new(&mut self, run: &RunView<'_>) {
        let intervals = run.intervals();
        if self.sent >= intervals.len() {
            return;
        }
        let mut error_classes: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut rates = BTreeMap::new();
        for (name, m) in run.metrics(|_| false) {
            match m {
                Metric::Counter(c) if !c.by_class.is_empty() => {
                    error_classes.insert(name, c.by_class);
                }
                Metric::Rate(r) => {
                    rates.insert(name, r);
                }
                _ => {}
            }
        }
        let clock = self.clock.lock().ok().and_then(|c| *c);
        for interval in &intervals[self.sent..] {
            let _ = self.tx.send(FromWorker::Interval {
                index: self.index,
                started_at_unix_us: self.started_at_unix_us,
                interval: Box::new(interval.clone()),
                error_classes: error_classes.clone(),
                rates: rates.clone(),
                clock,
            });
        }
        self.sent = intervals.len();
    }
}

impl Watcher for Streamer {
    fn tick(&mut self, run: &RunView<'_>) -> Option<String> {
        self.send_new(run);
        match &*self.control.borrow() {
            Some(Control::Stop {
                reason,
                interrupted: false,
            }) => Some(format!("the fleet stopped: {reason}")),
            _ => None,
        }
    }

    fn finish(&mut self, run: &RunView<'_>) {
        self.send_new(run);
    }
}
