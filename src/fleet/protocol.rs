//! What a fleet's coordinator and workers say to each other over NATS, as JSON.
//!
//! The coordinator broadcasts its state ([`Control`]) on one subject twice a second and at every
//! change, so a worker that connects late, or misses a message, learns where the run is from the
//! next one; the broadcast is also the coordinator's heartbeat. Workers publish on one subject
//! ([`FromWorker`]): ready (repeated until the start is announced), then one interval per second
//! (the heartbeat of a loading worker), and at the end their summary as a request the coordinator
//! acknowledges. Both sides connect with [`connect`].

use std::collections::BTreeMap;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::summary::{Interval, RateStats, Summary};
use crate::redact::redact;
use crate::run::RunError;

/// The NATS subjects of one fleet run, all under `thumper.fleet.<id>`.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// Coordinator → workers: [`Control`].
    pub control: String,
    /// Workers → coordinator: [`FromWorker`].
    pub worker: String,
    /// Workers → coordinator, as a request: [`FromWorker::Final`].
    pub fin: String,
}

impl Subjects {
    /// The subjects of fleet `id` (already checked by [`check_fleet_id`]).
    pub fn new(id: &str) -> Subjects {
        Subjects {
            control: format!("thumper.fleet.{id}.control"),
            worker: format!("thumper.fleet.{id}.worker"),
            fin: format!("thumper.fleet.{id}.final"),
        }
    }
}

/// A fleet id is one NATS subject token: letters, digits, `-` and `_`.
pub fn check_fleet_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "--fleet-id `{id}`: use 1 to 64 letters, digits, - or _ (it becomes a NATS subject token)"
        ));
    }
    Ok(())
}

/// The coordinator's state, broadcast to every worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Control {
    /// Migrating and seeding: wait.
    Setup,
    /// The target is ready: check it, then report ready.
    Open,
    /// Every worker is ready: start the load at this instant (Unix microseconds).
    Start {
        /// When to start, microseconds since the Unix epoch.
        at_unix_us: i64,
    },
    /// Stop the load now and report.
    Stop {
        /// Why (a fleet-wide `abort_on_fail` threshold, an interrupt at the coordinator).
        reason: String,
        /// The fleet was interrupted (a signal, a lost worker) rather than stopped by a threshold.
        interrupted: bool,
    },
    /// The run will not start; exit without load.
    Cancel {
        /// Why (a worker missing at the deadline, a worker that cannot run).
        reason: String,
    },
}

/// The coordinator's broadcast: its state plus what a worker needs to estimate its clock's
/// offset (NTP's four timestamps). The extra keys have serde defaults, so a peer of an older
/// build reads the state and ignores them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    /// The state, flattened: the JSON stays `{"phase": ...}` with extra keys.
    #[serde(flatten)]
    pub control: Control,
    /// When the coordinator sent this, microseconds since the Unix epoch by its clock (t2).
    #[serde(default)]
    pub sent_unix_us: Option<i64>,
    /// Each worker's last ready message: its send time and the coordinator's receive time.
    #[serde(default)]
    pub echoes: Vec<Echo>,
}

/// One worker's last ready message, as the coordinator received it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Echo {
    /// The worker's segment index.
    pub index: u32,
    /// When the worker sent it, by the worker's clock (t0).
    pub sent_unix_us: i64,
    /// When the coordinator received it, by the coordinator's clock (t1).
    pub received_unix_us: i64,
}

/// A worker clock's offset against the coordinator's: add `offset_us` to a worker's time to
/// get the coordinator's. Positive when the worker's clock is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockOffset {
    /// Coordinator's clock minus the worker's, microseconds.
    pub offset_us: i64,
    /// The estimate's error bound: half the network round trip, microseconds.
    pub error_us: i64,
}

impl ClockOffset {
    /// NTP's estimate from one round trip: the worker sent at `t0` (its clock), the coordinator
    /// received at `t1` and answered at `t2` (its clock), the worker received at `t3` (its
    /// clock). The coordinator's hold time `t2 - t1` is not network delay and is taken out.
    pub fn from_round_trip(t0: i64, t1: i64, t2: i64, t3: i64) -> ClockOffset {
        let round_trip = ((t3 - t0) - (t2 - t1)).max(0);
        ClockOffset {
            offset_us: ((t1 - t0) + (t2 - t3)) / 2,
            error_us: round_trip / 2,
        }
    }

    /// The better of two estimates: the one with the shorter round trip (the smaller error).
    pub fn best(a: Option<ClockOffset>, b: ClockOffset) -> ClockOffset {
        match a {
            Some(a) if a.error_us <= b.error_us => a,
            _ => b,
        }
    }

    /// For notes: `1000.2 ms behind the coordinator's (± 0.3 ms)`.
    pub fn describe(&self) -> String {
        let ms = self.offset_us.abs() as f64 / 1e3;
        let side = if self.offset_us >= 0 {
            "behind"
        } else {
            "ahead of"
        };
        format!(
            "{ms:.1} ms {side} the coordinator's (± {:.1} ms)",
            self.error_us as f64 / 1e3
        )
    }

    /// The offset is larger than the estimate's error: the clocks really differ.
    pub fn significant(&self) -> bool {
        self.offset_us.abs() > self.error_us
    }
}

/// What a worker tells the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FromWorker {
    /// Checked the target and ready to load.
    Ready {
        /// Its segment index.
        index: u32,
        /// The fleet size it was started for.
        count: u32,
        /// Where it runs (host or pod name).
        host: String,
        /// When it sent this, by its clock (t0 of the clock estimate); 0 from an older build.
        #[serde(default)]
        sent_unix_us: i64,
    },
    /// It cannot run (its target refused it, its scenario differs): the fleet is cancelled.
    Failed {
        /// Its segment index.
        index: u32,
        /// Why.
        reason: String,
    },
    /// One closed interval of its time series.
    Interval {
        /// Its segment index.
        index: u32,
        /// When its load started, microseconds since the Unix epoch.
        started_at_unix_us: i64,
        /// The interval, histograms included.
        interval: Box<Interval>,
        /// Its error counts so far by counter and class (`query_errors` → `22012 …` → n).
        error_classes: BTreeMap<String, BTreeMap<String, u64>>,
        /// Its rates so far (`success_rate`), which intervals do not carry.
        #[serde(default)]
        rates: BTreeMap<String, RateStats>,
        /// Its clock's offset against the coordinator's, when it could estimate one.
        #[serde(default)]
        clock: Option<ClockOffset>,
    },
    /// Its summary at the end, without the time series (already streamed).
    Final {
        /// Its segment index.
        index: u32,
        /// The summary it wrote to its own report folder, `time_series` emptied.
        summary: Box<Summary>,
    },
}

impl FromWorker {
    /// The segment index of the worker that sent it.
    pub fn index(&self) -> u32 {
        match self {
            FromWorker::Ready { index, .. }
            | FromWorker::Failed { index, .. }
            | FromWorker::Interval { index, .. }
            | FromWorker::Final { index, .. } => *index,
        }
    }
}

/// Microseconds since the Unix epoch, now.
pub fn unix_us_now() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000) as i64
}

/// Where this process runs: `$HOSTNAME` (a pod's name on Kubernetes), else the kernel's host name.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default()
}

/// Connects to NATS with a name the server's monitoring shows, retrying for up to `patience`:
/// on Kubernetes the NATS pod may come up after the fleet's pods.
pub(crate) async fn connect(
    url: &str,
    name: &str,
    patience: Duration,
) -> Result<async_nats::Client, RunError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let connecting = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .connect(url);
        let failure = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => format!("cannot connect to NATS at {}: {e}", redact(url)),
            Err(_) => format!("NATS at {} did not answer within 10 s", redact(url)),
        };
        if tokio::time::Instant::now() + Duration::from_secs(1) >= deadline {
            return Err(RunError::Failed(format!(
                "{failure} (tried for {patience:?}; --ready-timeout sets how long)"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let c = Control::Start { at_unix_us: 42 };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"phase":"start","at_unix_us":42}"#);
        assert_eq!(serde_json::from_str::<Control>(&text).unwrap(), c);
        let m = FromWorker::Ready {
            index: 2,
            count: 3,
            host: "pod-2".into(),
            sent_unix_us: 7,
        };
        let back: FromWorker = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back.index(), 2);
    }

    #[test]
    fn an_older_peer_reads_the_broadcast_and_a_newer_one_reads_an_older_broadcast() {
        let b = Broadcast {
            control: Control::Start { at_unix_us: 42 },
            sent_unix_us: Some(40),
            echoes: vec![Echo {
                index: 1,
                sent_unix_us: 10,
                received_unix_us: 20,
            }],
        };
        let text = serde_json::to_string(&b).unwrap();
        assert_eq!(
            serde_json::from_str::<Control>(&text).unwrap(),
            Control::Start { at_unix_us: 42 }
        );
        assert_eq!(serde_json::from_str::<Broadcast>(&text).unwrap(), b);
        let old: Broadcast = serde_json::from_str(r#"{"phase":"open"}"#).unwrap();
        assert_eq!((old.control, old.sent_unix_us), (Control::Open, None));
    }

    #[test]
    fn the_clock_offset_is_ntps_estimate_with_the_hold_time_taken_out() {
        // The worker's clock is 1 s behind; 2 ms each way; the coordinator held it 300 ms.
        let (t0, d, hold, offset) = (5_000_000, 2_000, 300_000, 1_000_000);
        let t1 = t0 + d + offset;
        let t2 = t1 + hold;
        let t3 = t2 + d - offset;
        let c = ClockOffset::from_round_trip(t0, t1, t2, t3);
        assert_eq!(
            c,
            ClockOffset {
                offset_us: offset,
                error_us: d
            }
        );
        assert!(c.significant());
        assert!(
            c.describe().starts_with("1000.0 ms behind"),
            "{}",
            c.describe()
        );
        // Asymmetric delay (5 ms out, 1 ms back) errs by half the difference, within the bound.
        let t1 = t0 + 5_000 - offset;
        let t3 = t1 + hold + 1_000 + offset;
        let c = ClockOffset::from_round_trip(t0, t1, t1 + hold, t3);
        assert_eq!(
            c,
            ClockOffset {
                offset_us: -offset + 2_000,
                error_us: 3_000
            }
        );
        assert!((c.offset_us + offset).abs() <= c.error_us);
        // The sample with the shorter round trip wins, whichever came first.
        let slow = ClockOffset {
            offset_us: 900_000,
            error_us: 100_000,
        };
        let fast = ClockOffset {
            offset_us: 1_000_000,
            error_us: 1_000,
        };
        assert_eq!(ClockOffset::best(Some(slow), fast), fast);
        assert_eq!(ClockOffset::best(Some(fast), slow), fast);
        assert_eq!(ClockOffset::best(None, slow), slow);
        assert!(!ClockOffset {
            offset_us: 500,
            error_us: 1_000
        }
        .significant());
    }

    #[test]
    fn fleet_ids_are_one_subject_token() {
        assert!(check_fleet_id("steady-rate_2").is_ok());
        for bad in ["", "a.b", "a b", "*", ">"] {
            assert!(check_fleet_id(bad).is_err(), "{bad}");
        }
    }
}
