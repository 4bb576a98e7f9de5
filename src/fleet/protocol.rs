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
        };
        let back: FromWorker = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back.index(), 2);
    }

    #[test]
    fn fleet_ids_are_one_subject_token() {
        assert!(check_fleet_id("steady-rate_2").is_ok());
        for bad in ["", "a.b", "a b", "*", ">"] {
            assert!(check_fleet_id(bad).is_err(), "{bad}");
        }
    }
}
