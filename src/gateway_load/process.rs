//! The gateway under test as a child process: started with its configuration in the environment,
//! its log tail kept for error messages, its memory and CPU sampled from /proc by the
//! generator's own reader ([`ProcSampler`]).

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::metrics::process::{ProcSample, ProcSampler};
use crate::stack::process::OwnedPid;

/// Lines of the gateway's output kept for error messages.
const LOG_TAIL: usize = 30;

/// Environment variables of the gateway that must not leak in from the harness's environment.
const GATEWAY_VARS: &[&str] = &[
    "DISCORD_TOKEN",
    "GATEWAY_CONFIG",
    "GATEWAY_SHARD_ID",
    "GATEWAY_SHARDS",
    "GATEWAY_TOTAL_SHARDS",
    "GATEWAY_URL",
    "GATEWAY_IDENTIFY_CONCURRENCY",
    "GATEWAY_CACHE",
    "NATS_URL",
    "GATEWAY_SUBJECT_PREFIX",
    "GATEWAY_LOG_FORMAT",
    "GATEWAY_STATS_INTERVAL_S",
];

/// A running gateway; killed when dropped.
pub struct GatewayProcess {
    child: Child,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
    sampler: ProcSampler,
    _owned: OwnedPid,
}

impl GatewayProcess {
    /// Starts `bin` with `env` (on top of the harness's environment minus the gateway's own
    /// variables). With `quiet` false its output is echoed to stderr as it comes.
    pub fn spawn(bin: &Path, env: &[(String, String)], quiet: bool) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        for var in GATEWAY_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches thumper only, which
            // decides when the run (and the gateway) ends.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the gateway {}", bin.display()))?;
        let pid = child.id().context("gateway exited at once")?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(keep_tail(out, Arc::clone(&tail), quiet));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(keep_tail(err, Arc::clone(&tail), quiet));
        }
        Ok(GatewayProcess {
            child,
            pid,
            tail,
            sampler: ProcSampler::of_pid(pid),
            _owned: OwnedPid::register(pid, nix::sys::signal::Signal::SIGKILL),
        })
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit (cancel-safe).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The last lines the gateway printed.
    pub fn log_tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Reads resident memory and CPU time (percent of one core) from /proc; `None` once the
    /// process is gone.
    pub fn sample(&mut self) -> Option<ProcSample> {
        self.sampler.sample(Instant::now())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

async fn keep_tail(
    stream: impl AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
    quiet: bool,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if !quiet {
            eprintln!("gateway: {line}");
        }
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
