//! The gateway under test as a child process: started with its configuration in the environment,
//! its log tail kept for error messages, its memory and CPU sampled from /proc.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

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

/// Reads one process's memory and CPU from /proc.
#[derive(Debug)]
pub struct ProcSampler {
    pid: u32,
    last_cpu: Option<(Instant, u64)>,
}

/// One /proc reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// Resident set size, in MiB (`VmRSS` / 1024).
    pub rss_mb: f64,
    /// CPU use since the previous sample, percent of one core; `None` on the first sample.
    pub cpu_percent: Option<f64>,
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
            sampler: ProcSampler::new(pid),
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

    /// Reads resident memory and CPU time from /proc; `None` once the process is gone.
    pub fn sample(&mut self) -> Option<ProcSample> {
        self.sampler.sample()
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

impl ProcSampler {
    /// A sampler of `/proc/<pid>`; its first sample has no CPU figure.
    pub fn new(pid: u32) -> Self {
        ProcSampler {
            pid,
            last_cpu: None,
        }
    }

    /// Reads resident memory and CPU time; `None` once the process is gone.
    pub fn sample(&mut self) -> Option<ProcSample> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let rss_kb = parse_vm_rss_kb(&status)?;
        let ticks = parse_cpu_ticks(&stat)?;
        let now = Instant::now();
        let cpu_percent = self.last_cpu.map(|(at, before)| {
            let wall = now.duration_since(at).as_secs_f64();
            let cpu = ticks.saturating_sub(before) as f64 / CLOCK_TICKS_PER_S;
            if wall > 0.0 {
                100.0 * cpu / wall
            } else {
                0.0
            }
        });
        self.last_cpu = Some((now, ticks));
        Some(ProcSample {
            rss_mb: rss_kb as f64 / 1024.0,
            cpu_percent,
        })
    }
}

/// Linux reports CPU times in USER_HZ, which is 100 on every Linux ABI.
const CLOCK_TICKS_PER_S: f64 = 100.0;

fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime (fields 14 and 15), counted after the `(comm)` field, which may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After `)` come field 3 (state) onwards; utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tgateway\nVmPeak:\t 1000 kB\nVmRSS:\t    7168 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss_kb(status), Some(7168));
        let stat = "1234 (gate way) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn samples_this_process() {
        let mut me = ProcSampler::new(std::process::id());
        let first = me.sample().unwrap();
        assert!(first.rss_mb > 0.0);
        assert!(first.cpu_percent.is_none());
        assert!(me.sample().unwrap().cpu_percent.is_some());
    }
}
