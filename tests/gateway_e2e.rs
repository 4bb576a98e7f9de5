//! The real gateway binary against the fake Discord and a real nats-server, through
//! `gateway_load::run`: several shards load every guild, member events are forwarded with none
//! lost or duplicated, and reconnect faults end in resumes (or a new identify) with the events
//! of the gap replayed. Counts only; no timing assertions.

use std::path::PathBuf;
use std::time::Duration;

use thumper::gateway_load::fake_discord::Fault;
use thumper::gateway_load::{
    self, FaultAt, Forwarder, GatewayRunConfig, GatewayRunOutcome, GatewayWorkload,
};
use thumper::metrics::summary::Metric;
use tokio_util::sync::CancellationToken;

fn count(outcome: &GatewayRunOutcome, name: &str) -> u64 {
    match outcome.metrics.get(name) {
        Some(Metric::Counter(c)) => c.count,
        other => panic!("{name}: expected a counter, got {other:?}"),
    }
}

async fn run(workload: GatewayWorkload, stages: Vec<(Duration, u32)>) -> GatewayRunOutcome {
    let outcome = gateway_load::run(GatewayRunConfig {
        workload,
        rate_stages: stages,
        nats_url: None,
        forwarder: Forwarder::Gateway(PathBuf::from(env!("CARGO_BIN_EXE_gateway"))),
        cancel: CancellationToken::new(),
        quiet: true,
        watchers: Vec::new(),
    })
    .await
    .expect("the run completes");
    assert_eq!(outcome.stop_reason, None, "notes: {:#?}", outcome.notes);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_forward_every_event_once() {
    let workload = GatewayWorkload {
        guilds: 30,
        members_per_guild: 20,
        shards: 3,
        heartbeat_interval: Duration::from_secs(1),
        ..GatewayWorkload::default()
    };
    let outcome = run(
        workload,
        vec![
            (Duration::from_millis(500), 600),
            (Duration::from_secs(2), 600),
        ],
    )
    .await;
    let sent = count(&outcome, "events_sent");
    assert!(sent > 1000, "sent {sent}");
    assert_eq!(
        count(&outcome, "events_delivered"),
        sent,
        "{:#?}",
        outcome.notes
    );
    assert_eq!(count(&outcome, "events_lost"), 0);
    assert_eq!(count(&outcome, "events_duplicated"), 0);
    assert_eq!(count(&outcome, "identifies"), 3);
    assert_eq!(count(&outcome, "reconnects"), 0);
    let Some(Metric::Trend(latency)) = outcome.metrics.get("event_latency") else {
        panic!("no event_latency trend")
    };
    assert_eq!(latency.count, sent);
    let Some(Metric::Gauge(rss)) = outcome.metrics.get("gateway_rss_mb") else {
        panic!("no gateway_rss_mb gauge")
    };
    assert!(rss.samples > 0 && rss.max > 0.0);
    assert!(!outcome.time_series.is_empty());
    let delivered: u64 = outcome
        .time_series
        .iter()
        // An interval lists the counts it saw; a missing one is 0.
        .map(|i| i.counters.get("events_delivered").copied().unwrap_or(0))
        .sum();
    assert_eq!(delivered, sent);
    assert!(outcome.time_series.iter().any(|i| i.vus == 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_end_in_resumes_without_losing_events() {
    let fault = |ms: u64, kind, shard| FaultAt {
        at: Duration::from_millis(ms),
        kind,
        shard,
    };
    let workload = GatewayWorkload {
        guilds: 8,
        members_per_guild: 5,
        shards: 2,
        heartbeat_interval: Duration::from_millis(500),
        faults: vec![
            fault(500, Fault::Drop, 0),
            fault(1000, Fault::Reconnect, 1),
            fault(1500, Fault::StopHeartbeatAck, 0),
            fault(3000, Fault::InvalidSession, 1),
        ],
        ..GatewayWorkload::default()
    };
    let outcome = run(
        workload,
        vec![
            (Duration::from_millis(200), 200),
            (Duration::from_secs(4), 200),
        ],
    )
    .await;
    let notes = format!("{:#?}", outcome.notes);
    let sent = count(&outcome, "events_sent");
    assert!(sent > 300, "sent {sent}; {notes}");
    // Drop, op 7 and the zombie connection resume; op 9 identifies again.
    assert!(count(&outcome, "resumes") >= 3, "{notes}");
    assert_eq!(count(&outcome, "identifies"), 3, "{notes}");
    // The zombie connection alone leaves about a second of events to replay.
    assert!(count(&outcome, "replayed_dispatches") > 0, "{notes}");
    assert!(count(&outcome, "reconnects") >= 4, "{notes}");
    assert_eq!(count(&outcome, "events_lost"), 0, "{notes}");
    assert_eq!(count(&outcome, "events_delivered"), sent, "{notes}");
    assert_eq!(count(&outcome, "events_duplicated"), 0, "{notes}");
    assert!(notes.contains("fault drop on shard 0"), "{notes}");
}

/// The floor the gateway is measured against (`gateway-floor`): the fake's events published
/// straight to NATS reach the same recorder, every one once, in the gateway's envelope, and the
/// publisher's process is sampled where the gateway's would be. Without this the floor could
/// measure nothing and still print a figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_publishes_every_event_once() {
    let workload = GatewayWorkload {
        guilds: 30,
        members_per_guild: 20,
        shards: 3,
        ..GatewayWorkload::default()
    };
    let outcome = gateway_load::run(GatewayRunConfig {
        workload,
        // 150 events while ramping, 1,200 at 600/s: 450 per shard.
        rate_stages: vec![
            (Duration::from_millis(500), 600),
            (Duration::from_secs(2), 600),
        ],
        nats_url: None,
        forwarder: Forwarder::Floor(PathBuf::from(env!("CARGO_BIN_EXE_gateway-floor"))),
        cancel: CancellationToken::new(),
        quiet: true,
        watchers: Vec::new(),
    })
    .await
    .expect("the floor run completes");
    let notes = format!("{:#?}", outcome.notes);
    assert_eq!(outcome.stop_reason, None, "{notes}");
    assert_eq!(count(&outcome, "events_sent"), 1350, "{notes}");
    assert_eq!(count(&outcome, "events_delivered"), 1350, "{notes}");
    assert_eq!(count(&outcome, "events_lost"), 0, "{notes}");
    assert_eq!(count(&outcome, "events_duplicated"), 0, "{notes}");
    assert!(!notes.contains("not envelopes"), "{notes}");
    let Some(Metric::Trend(latency)) = outcome.metrics.get("event_latency") else {
        panic!("no event_latency trend")
    };
    assert_eq!(latency.count, 1350);
    let Some(Metric::Gauge(cpu)) = outcome.metrics.get("gateway_cpu_percent") else {
        panic!("the floor publisher's CPU was not sampled: {notes}")
    };
    assert!(cpu.samples > 0);
}
