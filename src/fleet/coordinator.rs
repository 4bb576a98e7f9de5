//! The coordinator of a fleet run (`thumper fleet coordinate`, and the coordinating side of
//! `thumper fleet --local N`): set the target up once, hold the ready barrier, announce one
//! start instant, merge the workers' streamed intervals, judge `abort_on_fail` thresholds on the
//! fleet's data while it runs (stopping every worker when one fails), name a worker that dies
//! or goes silent, and build the fleet's one summary from the workers' own summaries with the
//! same `combine` + `judge` that `thumper merge` uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::console::ConsoleGauges;
use super::merge::{combine, fleet_ending, judge};
use super::protocol::{
    connect, unix_us_now, Broadcast, ClockOffset, Control, Echo, FromWorker, Subjects,
};
use super::FleetLink;
use crate::gate::LiveCheck;
use crate::metrics::codec;
use crate::metrics::summary::{
    CounterStats, Ending, GaugeStats, InstanceState, Interval, Metric, RateStats, Summary,
    TrendStats,
};
use crate::redact::redact;
use crate::run::target::{prepare_target, with_target, Target};
use crate::run::{self, Measured, RunError, RunOptions};
use crate::scenario::Plan;

/// The coordinator broadcasts its state this often (and at every change).
const BROADCAST_EVERY: Duration = Duration::from_millis(500);
/// The start is announced this far ahead, so every worker has it before it is due.
const START_LEAD: Duration = Duration::from_millis(750);
/// A loading worker sends an interval every second; one silent this long is lost. Intervals
/// close 1.5 s after they end, so the first one comes about 2.5 s after the start.
const SILENCE: Duration = Duration::from_secs(6);
/// A local worker process that exited is given this long for its summary to arrive.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// A local worker process that ended ([`super::local`] watches them; on Kubernetes only
/// silence tells).
#[derive(Debug)]
pub struct WorkerExit {
    /// Its segment index.
    pub index: u32,
    /// How it ended, for the report: `exit 1`, `killed by signal 9`.
    pub how: String,
    /// Its log, if it has one.
    pub log: Option<PathBuf>,
}

/// What the coordinator needs besides the run's options.
pub struct Coordination {
    /// How many workers the fleet has.
    pub workers: u32,
    /// The NATS server and fleet id.
    pub link: FleetLink,
    /// Exits of local worker processes, when they are local.
    pub exits: Option<mpsc::UnboundedReceiver<WorkerExit>>,
}

/// One worker as the coordinator follows it.
#[derive(Default)]
struct Member {
    host: String,
    intervals: Vec<Interval>,
    error_classes: BTreeMap<String, BTreeMap<String, u64>>,
    rates: BTreeMap<String, RateStats>,
    started_at_unix_us: Option<i64>,
    last_heard: Option<Instant>,
    exited: Option<(Instant, String)>,
    summary: Option<Summary>,
    lost: Option<String>,
    /// Its clock's offset against the coordinator's, as it reported it.
    clock: Option<ClockOffset>,
}

impl Member {
    fn done(&self) -> bool {
        self.summary.is_some() || self.lost.is_some()
    }
}

/// Sets the target up, runs the fleet, and returns its judged summary (reports not yet written).
pub async fn coordinate(
    plan: &Plan,
    opts: &RunOptions,
    target: &Target,
    mut co: Coordination,
    interrupt: CancellationToken,
) -> Result<Summary, RunError> {
    super::protocol::check_fleet_id(&co.link.id).map_err(RunError::BadInput)?;
    let n = co.workers;
    let client = connect(&co.link.nats, "thumper coordinator", co.link.ready_timeout).await?;
    let subjects = Subjects::new(&co.link.id);
    let sub_err = |e: async_nats::SubscribeError| RunError::Failed(format!("NATS: {e}"));
    let mut from_workers = client
        .subscribe(subjects.worker.clone())
        .await
        .map_err(sub_err)?;
    let mut finals = client
        .subscribe(subjects.fin.clone())
        .await
        .map_err(sub_err)?;
    let (control, control_rx) = watch::channel(Control::Setup);
    let broadcast_done = CancellationToken::new();
    let echoes: Echoes = Arc::default();
    let broadcaster = tokio::spawn(broadcast(
        client.clone(),
        subjects.control.clone(),
        control_rx,
        echoes.clone(),
        broadcast_done.clone(),
    ));
    let cancel = |reason: String| {
        control.send_replace(Control::Cancel { reason });
    };
    let mut set_up = false;
    let result = async {
        // Set-up once, here: workers never migrate, seed or run [setup].
        if let Err(e) = prepare_target(plan, opts, target, &interrupt).await {
            cancel(e.to_string());
            return Err(e);
        }
        if let Some(sql) = &plan.setup {
            if let Err(e) = crate::run::scenarios::run_sql(target, sql).await {
                let e = RunError::Failed(format!("{}: [setup]: {e}", plan.file));
                cancel(e.to_string());
                return Err(e);
            }
        }
        set_up = true;
        control.send_replace(Control::Open);
        let mut members: Vec<Member> = (0..n).map(|_| Member::default()).collect();
        if let Err(e) = barrier(
            &mut members,
            n,
            &co.link,
            &mut from_workers,
            &echoes,
            co.exits.as_mut(),
            &interrupt,
        )
        .await
        {
            cancel(e.to_string());
            return Err(e);
        }
        let start_at = unix_us_now() + START_LEAD.as_micros() as i64;
        control.send_replace(Control::Start {
            at_unix_us: start_at,
        });
        let cpu_before = own_cpu_us();
        let mut console = ConsoleGauges::start(target, Instant::now() + START_LEAD);
        let sources = Sources {
            from_workers: &mut from_workers,
            finals: &mut finals,
            exits: co.exits.as_mut(),
            console: &mut console,
        };
        let outcome = follow(
            plan,
            &client,
            &control,
            &mut members,
            sources,
            &interrupt,
            opts.quiet,
        )
        .await;
        console.stop().await;
        if crate::report::console::progress_wanted(opts.quiet) {
            eprintln!();
        }
        let cpu_us = own_cpu_us().saturating_sub(cpu_before);
        Ok(fleet_summary(
            plan, target, members, outcome, cpu_us, &interrupt, &console,
        ))
    }
    .await;
    if set_up {
        crate::run::scenarios::teardown(plan, target).await;
    }
    // Let the last state reach the workers before the coordinator goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    broadcast_done.cancel();
    let _ = broadcaster.await;
    let _ = client.flush().await;
    result
}

/// Each worker's last ready message as received, echoed in every broadcast so the worker can
/// estimate its clock's offset.
type Echoes = Arc<Mutex<BTreeMap<u32, Echo>>>;

/// Publishes the coordinator's state now and then, and at every change, stamped with its send
/// time and the workers' echoes.
async fn broadcast(
    client: async_nats::Client,
    subject: String,
    mut state: watch::Receiver<Control>,
    echoes: Echoes,
    done: CancellationToken,
) {
    loop {
        let control = state.borrow_and_update().clone();
        let echoes = echoes.lock().map(|e| e.values().copied().collect());
        let now = Broadcast {
            control,
            echoes: echoes.unwrap_or_default(),
            sent_unix_us: Some(unix_us_now()),
        };
        if let Ok(bytes) = serde_json::to_vec(&now) {
            let _ = client.publish(subject.clone(), bytes.into()).await;
            let _ = client.flush().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(BROADCAST_EVERY) => {}
            changed = state.changed() => if changed.is_err() { return },
            _ = done.cancelled() => return,
        }
    }
}

/// Waits until all `n` workers are ready. A worker of another fleet size, one that cannot run,
/// one whose process ended, or one missing at the deadline ends the run here, named.
async fn barrier(
    members: &mut [Member],
    n: u32,
    link: &FleetLink,
    from_workers: &mut async_nats::Subscriber,
    echoes: &Echoes,
    mut exits: Option<&mut mpsc::UnboundedReceiver<WorkerExit>>,
    interrupt: &CancellationToken,
) -> Result<(), RunError> {
    let deadline = tokio::time::Instant::now() + link.ready_timeout;
    let mut ready = vec![false; n as usize];
    while ready.iter().any(|r| !r) {
        tokio::select! {
            msg = from_workers.next() => {
                let Some(msg) = msg else {
                    return Err(RunError::Failed("lost the NATS subscription".into()));
                };
                let received_unix_us = unix_us_now();
                match serde_json::from_slice::<FromWorker>(&msg.payload) {
                    Ok(FromWorker::Ready { index, count, host, sent_unix_us }) => {
                        if count != n || index >= n {
                            return Err(RunError::Failed(format!(
                                "worker {index}/{count} joined fleet `{}`, which has {n} workers: start every worker with --segment I/{n}",
                                link.id
                            )));
                        }
                        ready[index as usize] = true;
                        members[index as usize].host = host;
                        if sent_unix_us > 0 {
                            if let Ok(mut e) = echoes.lock() {
                                e.insert(index, Echo { index, sent_unix_us, received_unix_us });
                            }
                        }
                    }
                    Ok(FromWorker::Failed { index, reason }) => {
                        return Err(RunError::Failed(format!("worker {index}/{n} cannot run: {reason}")));
                    }
                    _ => {}
                }
            }
            Some(exit) = next_exit(&mut exits) => {
                return Err(RunError::Failed(format!(
                    "worker {}/{n} ended ({}) before it was ready{}",
                    exit.index,
                    exit.how,
                    exit.log.map(|l| format!("; see {}", l.display())).unwrap_or_default()
                )));
            }
            _ = tokio::time::sleep_until(deadline) => {
                let missing: Vec<String> = ready
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !**r)
                    .map(|(i, _)| format!("{i}/{n}"))
                    .collect();
                return Err(RunError::Failed(format!(
                    "worker{} {} did not report ready within {:?} on {} (fleet `{}`): is each started with --fleet-nats, the same --fleet-id and its --segment?",
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join(", "),
                    link.ready_timeout,
                    redact(&link.nats),
                    link.id
                )));
            }
            _ = interrupt.cancelled() => {
                return Err(RunError::Interrupted(
                    "interrupted at the fleet's ready barrier, before any load".into(),
                ));
            }
        }
    }
    Ok(())
}

async fn next_exit(
    exits: &mut Option<&mut mpsc::UnboundedReceiver<WorkerExit>>,
) -> Option<WorkerExit> {
    match exits {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How the load phase ended, for the summary.
struct Outcome {
    /// The fleet-wide `abort_on_fail` threshold that stopped it.
    aborted_by: Option<String>,
    /// Worker-intervals received (for the coordinator's CPU per worker-interval).
    intervals: u64,
}

/// The subscriptions and sources the coordinator follows during the load.
struct Sources<'a> {
    from_workers: &'a mut async_nats::Subscriber,
    finals: &'a mut async_nats::Subscriber,
    exits: Option<&'a mut mpsc::UnboundedReceiver<WorkerExit>>,
    /// PgBouncer's console, polled by the coordinator once for the whole fleet.
    console: &'a mut ConsoleGauges,
}

/// The coordinator's state during the load: what the tick judges.
struct Following<'a> {
    plan: &'a Plan,
    control: &'a watch::Sender<Control>,
    started: Instant,
    deadline: Instant,
    live: Option<LiveCheck>,
    totals: Totals,
    outcome: Outcome,
    stopped: bool,
    progress: bool,
}

/// Follows the workers from the start to their summaries.
async fn follow(
    plan: &Plan,
    client: &async_nats::Client,
    control: &watch::Sender<Control>,
    members: &mut [Member],
    mut sources: Sources<'_>,
    interrupt: &CancellationToken,
    quiet: bool,
) -> Outcome {
    let started = Instant::now() + START_LEAD;
    for m in members.iter_mut() {
        m.last_heard = Some(started);
    }
    let mut f = Following {
        plan,
        control,
        started,
        // Past the planned end, the graceful stop and the last interval's grace, a worker
        // that has not reported is lost.
        deadline: started + plan.load.duration() + plan.graceful_stop + Duration::from_secs(30),
        live: LiveCheck::new(&plan.thresholds),
        totals: Totals::default(),
        outcome: Outcome {
            aborted_by: None,
            intervals: 0,
        },
        stopped: false,
        progress: crate::report::console::progress_wanted(quiet),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while members.iter().any(|m| !m.done()) {
        tokio::select! {
            Some(msg) = sources.from_workers.next() => f.on_worker_message(members, &msg.payload),
            Some(msg) = sources.finals.next() => {
                if let Ok(FromWorker::Final { index, summary }) = serde_json::from_slice(&msg.payload) {
                    if let Some(reply) = msg.reply {
                        let _ = client.publish(reply, "ok".into()).await;
                    }
                    if let Some(m) = members.get_mut(index as usize) {
                        if m.lost.is_none() {
                            m.summary = Some(*summary);
                        }
                    }
                }
            }
            Some(exit) = next_exit(&mut sources.exits) => {
                if let Some(m) = members.get_mut(exit.index as usize) {
                    let log = exit.log.map(|l| format!("; see {}", l.display())).unwrap_or_default();
                    m.exited = Some((Instant::now(), format!("{}{log}", exit.how)));
                }
            }
            Some(batch) = sources.console.next() => {
                for (name, value) in sources.console.record(&batch) {
                    f.totals.gauge(name, value);
                }
            }
            _ = tick.tick() => f.on_tick(members),
            _ = interrupt.cancelled(), if !f.stopped => {
                f.stopped = true;
                control.send_replace(Control::Stop {
                    reason: format!("the coordinator was {}", crate::signals::stop_reason()),
                    interrupted: true,
                });
            }
        }
    }
    f.outcome
}

impl Following<'_> {
    /// A worker's streamed interval (or its failure).
    fn on_worker_message(&mut self, members: &mut [Member], payload: &[u8]) {
        let n = members.len();
        let Ok(msg) = serde_json::from_slice::<FromWorker>(payload) else {
            return;
        };
        let index = msg.index() as usize;
        let Some(m) = members.get_mut(index) else {
            return;
        };
        m.last_heard = Some(Instant::now());
        match msg {
            FromWorker::Interval {
                started_at_unix_us,
                interval,
                error_classes,
                rates,
                clock,
                ..
            } => {
                m.started_at_unix_us = Some(started_at_unix_us);
                m.clock = clock;
                m.error_classes = error_classes;
                m.rates = rates;
                // Only the trends a live threshold reads are decoded.
                if let Some(check) = &self.live {
                    self.totals.add(&interval, &|name| check.reads(name));
                }
                m.intervals.push(*interval);
                self.outcome.intervals += 1;
            }
            FromWorker::Failed { reason, .. } if m.summary.is_none() => {
                m.lost = Some(format!("worker {index}/{n} failed: {reason}"));
            }
            _ => {}
        }
    }

    /// Once a second: the progress line, lost workers, the fleet-wide live check.
    fn on_tick(&mut self, members: &mut [Member]) {
        let now = Instant::now();
        if self.progress {
            show_progress(
                members,
                now.saturating_duration_since(self.started),
                self.plan.load.duration(),
            );
        }
        mark_lost(members, now, self.deadline);
        if self.stopped {
            return;
        }
        if let Some(lost) = members.iter().find_map(|m| m.lost.clone()) {
            self.stopped = true;
            self.control.send_replace(Control::Stop {
                reason: lost,
                interrupted: true,
            });
        } else if let Some(check) = &self.live {
            let elapsed = now.saturating_duration_since(self.started);
            let totals = &self.totals;
            if let Some(reason) = check.judge(elapsed, |wanted| Summary {
                metrics: totals.metrics(
                    elapsed.as_secs_f64(),
                    &members_classes(members),
                    &members_rates(members),
                    wanted,
                ),
                ..Summary::empty()
            }) {
                self.stopped = true;
                self.outcome.aborted_by = Some(format!("fleet-wide: {reason}"));
                self.control.send_replace(Control::Stop {
                    reason,
                    interrupted: false,
                });
            }
        }
    }
}

/// Names the workers that died, went silent, or did not finish by the deadline.
fn mark_lost(members: &mut [Member], now: Instant, deadline: Instant) {
    let n = members.len();
    for (i, m) in members.iter_mut().enumerate() {
        if m.done() {
            continue;
        }
        if let Some((at, how)) = &m.exited {
            if now >= *at + EXIT_GRACE {
                m.lost = Some(format!("worker {i}/{n} died ({how}) without its summary: only the intervals it streamed are counted"));
            }
        } else if m.last_heard.is_some_and(|t| now > t + SILENCE) {
            m.lost = Some(format!(
                "worker {i}/{n}{} went silent: nothing heard for {} s; only the intervals it streamed are counted",
                host_suffix(&m.host),
                SILENCE.as_secs()
            ));
        } else if now > deadline {
            m.lost = Some(format!(
                "worker {i}/{n}{} did not finish by the planned end plus the graceful stop and 30 s",
                host_suffix(&m.host)
            ));
        }
    }
}

/// The fleet's live line: elapsed, workers streaming, the latest second's queries and errors.
fn show_progress(members: &[Member], elapsed: Duration, planned: Duration) {
    use std::io::Write;
    let streaming = members
        .iter()
        .filter(|m| !m.done() && !m.intervals.is_empty())
        .count();
    let last = |name: &str| -> f64 {
        members
            .iter()
            .filter_map(|m| m.intervals.last())
            .map(|i| i.counters.get(name).copied().unwrap_or(0) as f64 / i.len_s.max(1e-3))
            .sum()
    };
    let errors: u64 = members
        .iter()
        .flat_map(|m| &m.intervals)
        .map(|i| {
            i.counters.get("query_errors").copied().unwrap_or(0)
                + i.counters.get("connection_errors").copied().unwrap_or(0)
        })
        .sum();
    let lost = members.iter().filter(|m| m.lost.is_some()).count();
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{:>5.0}s/{:.0}s] fleet: {streaming}/{} workers streaming  queries/s {:>8.0}  errors {errors}  lost {lost}   ",
        elapsed.as_secs_f64(),
        planned.as_secs_f64(),
        members.len(),
        last("queries"),
    );
    let _ = err.flush();
}

fn host_suffix(host: &str) -> String {
    if host.is_empty() {
        String::new()
    } else {
        format!(" ({host})")
    }
}

/// Every worker's error classes so far, summed.
fn members_classes(members: &[Member]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut all: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for m in members {
        for (counter, classes) in &m.error_classes {
            let into = all.entry(counter.clone()).or_default();
            for (class, count) in classes {
                *into.entry(class.clone()).or_default() += count;
            }
        }
    }
    all
}

/// Every worker's rates so far, summed.
fn members_rates(members: &[Member]) -> BTreeMap<String, RateStats> {
    let mut all: BTreeMap<String, RateStats> = BTreeMap::new();
    for m in members {
        for (name, r) in &m.rates {
            let into = all.entry(name.clone()).or_default();
            into.passes += r.passes;
            into.fails += r.fails;
        }
    }
    for r in all.values_mut() {
        let total = r.passes + r.fails;
        r.rate = if total > 0 {
            r.passes as f64 / total as f64
        } else {
            0.0
        };
    }
    all
}

/// Run totals built from intervals: the fleet's while it runs, and a lost worker's afterwards.
#[derive(Default)]
struct Totals {
    trends: BTreeMap<String, Histogram<u64>>,
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, GaugeStats>,
}

impl Totals {
    /// Adds an interval; of its trends only those `wanted` says (decoding costs the most).
    fn add(&mut self, interval: &Interval, wanted: &dyn Fn(&str) -> bool) {
        for (name, t) in &interval.trends {
            if !wanted(name) {
                continue;
            }
            let Ok(h) = codec::decode(&t.histogram) else {
                continue;
            };
            match self.trends.get_mut(name) {
                Some(total) => {
                    let _ = total.add(&h);
                }
                None => {
                    self.trends.insert(name.clone(), h);
                }
            }
        }
        for (name, count) in &interval.counters {
            *self.counters.entry(name.clone()).or_default() += count;
        }
        let vus = ("vus", interval.vus as f64);
        let gauges = interval.gauges.iter().map(|(k, v)| (k.as_str(), *v));
        for (name, value) in gauges.chain(std::iter::once(vus)) {
            self.gauge(name, value);
        }
    }

    /// Records one reading of a gauge.
    fn gauge(&mut self, name: &str, value: f64) {
        let mut g = self.gauges.remove(name);
        GaugeStats::record(&mut g, value);
        self.gauges
            .insert(name.to_owned(), g.expect("recorded above"));
    }

    fn metrics(
        &self,
        duration_s: f64,
        classes: &BTreeMap<String, BTreeMap<String, u64>>,
        rates: &BTreeMap<String, RateStats>,
        with_histogram: &dyn Fn(&str) -> bool,
    ) -> BTreeMap<String, Metric> {
        let mut metrics = BTreeMap::new();
        for (name, r) in rates {
            metrics.insert(name.clone(), Metric::Rate(r.clone()));
        }
        for (name, h) in &self.trends {
            metrics.insert(
                name.clone(),
                Metric::Trend(TrendStats::from_histogram(
                    h,
                    duration_s,
                    with_histogram(name),
                )),
            );
        }
        for (name, count) in &self.counters {
            metrics.insert(
                name.clone(),
                Metric::Counter(CounterStats {
                    count: *count,
                    rate_per_s: if duration_s > 0.0 {
                        *count as f64 / duration_s
                    } else {
                        0.0
                    },
                    by_class: classes.get(name).cloned().unwrap_or_default(),
                }),
            );
        }
        for (name, g) in &self.gauges {
            metrics.insert(name.clone(), Metric::Gauge(g.clone()));
        }
        metrics
    }
}

/// The summary of a worker that was lost: what it streamed, built by the one summary builder.
fn lost_summary(plan: &Plan, target: &Target, m: &Member, reason: &str) -> Summary {
    let mut totals = Totals::default();
    for i in &m.intervals {
        totals.add(i, &|_| true);
    }
    let duration_s = m.intervals.last().map_or(0.0, |i| i.t_s);
    let started_at = m
        .started_at_unix_us
        .and_then(|us| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    run::judged_summary(
        plan,
        redact(&target.url),
        started_at,
        Measured {
            duration_s,
            stop_reason: Some(reason.to_owned()),
            ending: Ending::WorkerLost,
            scope: crate::gate::Scope::Share,
            metrics: totals.metrics(
                duration_s,
                &m.error_classes,
                &members_rates(std::slice::from_ref(m)),
                &|_| true,
            ),
            time_series: m.intervals.clone(),
            notes: Vec::new(),
        },
    )
}

/// The fleet's summary from its members: their own summaries with the streamed intervals (the
/// same data their report folders hold), a lost member's from what it streamed; merged and
/// judged as `thumper merge` does.
fn fleet_summary(
    plan: &Plan,
    target: &Target,
    members: Vec<Member>,
    outcome: Outcome,
    cpu_us: u64,
    interrupt: &CancellationToken,
    console: &ConsoleGauges,
) -> Summary {
    let n = members.len();
    let lost: Vec<String> = members.iter().filter_map(|m| m.lost.clone()).collect();
    let hosts: Vec<String> = members.iter().map(|m| m.host.clone()).collect();
    let was_lost: Vec<bool> = members.iter().map(|m| m.lost.is_some()).collect();
    let clock_notes = clock_notes(&members);
    let summaries: Vec<Summary> = members
        .into_iter()
        .map(|m| {
            let clock = m.clock;
            let mut s = match (m.summary.clone(), &m.lost) {
                (Some(mut s), _) => {
                    if !m.intervals.is_empty() {
                        s.time_series = m.intervals;
                    }
                    s
                }
                (None, reason) => {
                    lost_summary(plan, target, &m, reason.as_deref().unwrap_or("lost"))
                }
            };
            on_coordinator_clock(&mut s, clock);
            s
        })
        .collect();
    let mut summary = match combine(&summaries) {
        Ok(s) => s,
        Err(e) => {
            let mut s = Summary::empty();
            s.notes
                .push(format!("the workers' data could not be merged: {e}"));
            s
        }
    };
    for (i, stats) in summary.instances.iter_mut().enumerate() {
        if was_lost.get(i) == Some(&true) {
            stats.state = InstanceState::Lost;
        }
        if let Some(h) = hosts.get(i).filter(|h| !h.is_empty()) {
            stats.host = h.clone();
        }
    }
    add_start_skew(&mut summary, &summaries);
    summary.notes.extend(clock_notes);
    summary.notes.insert(
        0,
        format!(
            "a fleet of {n} workers, coordinated over NATS; the coordinator used {:.1} ms of CPU for {} worker-intervals ({:.0} µs each)",
            cpu_us as f64 / 1e3,
            outcome.intervals,
            cpu_us as f64 / outcome.intervals.max(1) as f64
        ),
    );
    summary.notes.extend(lost.iter().cloned());
    console.apply(&mut summary);
    let (ending, stop_reason) = if !lost.is_empty() {
        (Ending::WorkerLost, Some(lost.join("; ")))
    } else if let Some(reason) = &outcome.aborted_by {
        (Ending::Threshold, Some(reason.clone()))
    } else if interrupt.is_cancelled() {
        (Ending::Interrupted, Some(crate::signals::stop_reason()))
    } else {
        fleet_ending(&summaries)
    };
    summary.ending = ending;
    summary.stop_reason =
        stop_reason.or_else(|| summaries.iter().find_map(|s| s.stop_reason.clone()));
    judge(&mut summary, &plan.thresholds);
    summary
}

/// Moves a worker's `started_at` onto the coordinator's clock by the offset it estimated, so
/// the start skew and the merge see when it really started, not what its clock said.
fn on_coordinator_clock(summary: &mut Summary, clock: Option<ClockOffset>) {
    use time::format_description::well_known::Rfc3339;
    let Some(clock) = clock.filter(|c| c.offset_us != 0) else {
        return;
    };
    let Ok(at) = time::OffsetDateTime::parse(&summary.started_at, &Rfc3339) else {
        return;
    };
    let shifted = at + time::Duration::microseconds(clock.offset_us);
    if let Ok(text) = shifted.format(&Rfc3339) {
        summary.started_at = text;
    }
}

/// A note for each worker whose clock differs from the coordinator's by more than the
/// estimate's error: its start was moved by that much.
fn clock_notes(members: &[Member]) -> Vec<String> {
    let n = members.len();
    members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let c = m.clock.filter(ClockOffset::significant)?;
            Some(format!(
                "worker {i}/{n}{}: its clock is {}; it started at the coordinator's instant and its started_at is corrected by that much",
                host_suffix(&m.host),
                c.describe()
            ))
        })
        .collect()
}

/// The spread of the workers' load start times, in milliseconds, as the gauge
/// `fleet_start_skew`; a threshold on it is judged with the others.
fn add_start_skew(summary: &mut Summary, instances: &[Summary]) {
    let starts: Vec<time::OffsetDateTime> = instances
        .iter()
        .filter_map(|s| {
            time::OffsetDateTime::parse(
                &s.started_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        })
        .collect();
    let (Some(first), Some(last)) = (starts.iter().min(), starts.iter().max()) else {
        return;
    };
    let skew_ms = (*last - *first).as_seconds_f64() * 1e3;
    summary.metrics.insert(
        "fleet_start_skew".into(),
        Metric::Gauge(GaugeStats {
            last: skew_ms,
            min: skew_ms,
            max: skew_ms,
            samples: 1,
        }),
    );
    summary.notes.push(format!(
        "workers started their load within {skew_ms:.1} ms of each other"
    ));
}

/// This process's CPU time so far (user + system), in microseconds.
fn own_cpu_us() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t =
                |tv: nix::sys::time::TimeVal| tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0)
}

/// `thumper fleet coordinate`: the coordinator alone, for workers started elsewhere (the
/// Indexed Job's pods). It sets up the target, coordinates `workers` workers over `link` and
/// writes the fleet's reports.
pub async fn run(
    opts: &RunOptions,
    workers: u32,
    link: FleetLink,
    interrupt: CancellationToken,
) -> Result<run::RunResult, RunError> {
    if workers == 0 {
        return Err(RunError::BadInput(
            "--workers 0: a fleet needs at least one worker".into(),
        ));
    }
    super::protocol::check_fleet_id(&link.id).map_err(RunError::BadInput)?;
    let plan = run::load_plan(opts)?;
    run::check_judgeable(&plan, opts)?;
    if opts.target.is_none() && crate::stack::running().is_none() {
        return Err(RunError::BadInput(
            "fleet coordinate: give --target (the URL the workers load, with --admin-url to set it up) or start a stack with `thumper stack up`".into(),
        ));
    }
    with_target(&plan, opts, async |target| {
        let started_at = time::OffsetDateTime::now_utc();
        let co = Coordination {
            workers,
            link,
            exits: None,
        };
        let summary = coordinate(&plan, opts, target, co, interrupt).await?;
        run::finish(
            summary,
            opts.report_to(&format!("{}-fleet", plan.name)),
            started_at,
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Threshold;
    use crate::metrics::summary::IntervalTrend;

    fn threshold(metric: &str, expression: &str) -> Threshold {
        super::super::merge::reparse(metric, expression, true).unwrap()
    }

    /// A worker that streamed one interval of `n` 1 ms queries with `fails` failures.
    fn member(n: u64, fails: u64) -> Member {
        let mut h = codec::new_latency_histogram();
        for _ in 0..n {
            h.record(1_000).unwrap();
        }
        let mut interval = Interval {
            t_s: 1.0,
            len_s: 1.0,
            ..Interval::default()
        };
        interval.counters.insert("queries".into(), n);
        interval.counters.insert("query_errors".into(), fails);
        interval.trends.insert(
            "query_duration".into(),
            IntervalTrend {
                histogram: codec::encode(&h),
                ..IntervalTrend::from_histogram(&h)
            },
        );
        let mut m = Member {
            intervals: vec![interval],
            ..Member::default()
        };
        m.rates.insert(
            "success_rate".into(),
            RateStats {
                rate: 0.0,
                passes: n,
                fails,
            },
        );
        m
    }

    fn live_verdict(members: &[Member], t: Threshold) -> Option<String> {
        let check = LiveCheck::new(&[t]).unwrap();
        let mut totals = Totals::default();
        for m in members {
            for i in &m.intervals {
                totals.add(i, &|name| check.reads(name));
            }
        }
        check.judge(Duration::from_secs(1), |wanted| Summary {
            metrics: totals.metrics(
                1.0,
                &members_classes(members),
                &members_rates(members),
                wanted,
            ),
            ..Summary::empty()
        })
    }

    #[test]
    fn a_fleet_wide_success_rate_is_judged_live() {
        // 1 failure in 1,000 on each worker: 99.9 %; the fleet's 2 in 2,000 break "> 0.9995".
        let fleet = [member(1_000, 1), member(1_000, 1)];
        let reason = live_verdict(&fleet, threshold("success_rate", "rate > 0.9995"));
        assert!(reason.is_some_and(|r| r.contains("success_rate")));
        let healthy = [member(1_000, 0), member(1_000, 0)];
        assert!(live_verdict(&healthy, threshold("success_rate", "rate > 0.9995")).is_none());
    }

    #[test]
    fn fleet_percentiles_come_from_the_merged_histograms() {
        let fleet = [member(100, 0), member(100, 0)];
        assert!(live_verdict(&fleet, threshold("query_duration", "p(99) < 2")).is_none());
        let reason = live_verdict(&fleet, threshold("query_duration", "p(99) < 0.5"));
        assert!(reason.is_some());
        // A trend no live threshold reads is not decoded.
        let check = LiveCheck::new(&[threshold("iterations", "count < 5")]).unwrap();
        let mut totals = Totals::default();
        totals.add(&fleet[0].intervals[0], &|name| check.reads(name));
        assert!(totals.trends.is_empty());
    }
}
