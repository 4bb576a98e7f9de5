//! Running the stack's servers as processes: the unprivileged account they run as, the
//! open-file limit they inherit, and signalling/awaiting them.
//!
//! PostgreSQL and PgBouncer refuse to run as root, so as root we run them as `postgres` (or
//! `nobody`) via `CommandExt::uid/gid`. The crate forbids `unsafe`, so there is no `pre_exec`
//! hook: limits are raised in our own process and inherited. Each server gets its own process
//! group so a Ctrl-C at the terminal reaches thumper only; thumper then reports and tears the
//! stack down in order.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

use super::StackError;

/// The account the servers run as.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric primary group id.
    pub gid: u32,
    /// Account name (for messages).
    pub name: String,
    /// Whether we must switch to it (we are root) or already are it.
    switch: bool,
}

impl ServiceUser {
    /// As root: `postgres` if it exists, else `nobody`. Otherwise: ourselves.
    pub fn pick() -> Result<ServiceUser, StackError> {
        if !nix::unistd::geteuid().is_root() {
            let uid = nix::unistd::getuid();
            let name = User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| uid.to_string());
            return Ok(ServiceUser {
                uid: uid.as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                name,
                switch: false,
            });
        }
        for name in ["postgres", "nobody"] {
            if let Ok(Some(user)) = User::from_name(name) {
                return Ok(ServiceUser {
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                    name: user.name,
                    switch: true,
                });
            }
        }
        Err(StackError::NoServiceUser)
    }

    /// Makes `path` owned by this account (a no-op when we are not switching users).
    pub fn own(&self, path: &Path) -> Result<(), StackError> {
        if self.switch {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
                .map_err(|e| StackError::io("change the owner of", path, e))?;
        }
        Ok(())
    }

    /// A command that runs as this account, in `cwd`, in its own process group, with no stdin
    /// and its output appended to `log`.
    pub fn command(&self, program: &Path, cwd: &Path, log: &Path) -> Result<Command, StackError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| StackError::io("open the log", log, e))?;
        self.own(log)?;
        let err = out
            .try_clone()
            .map_err(|e| StackError::io("open the log", log, e))?;
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .env_remove("PGDATA")
            .env("LC_ALL", "C.UTF-8");
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
        }
        Ok(cmd)
    }
}

/// Raises our soft open-file limit to the hard limit so the servers we spawn inherit it, and
/// checks it covers `needed` descriptors (PgBouncer needs one per client and server connection).
pub fn raise_open_file_limit(needed: u64) -> Result<u64, StackError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, mut hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(StackError::Rlimit)?;
    if hard < needed && nix::unistd::geteuid().is_root() {
        // Root may raise the hard limit too (up to the kernel's nr_open).
        if setrlimit(Resource::RLIMIT_NOFILE, needed, needed).is_ok() {
            hard = needed;
        }
    }
    if hard < needed {
        return Err(StackError::FileLimit { needed, hard });
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(StackError::Rlimit)?;
    }
    Ok(hard)
}

/// Child processes this process started and must not leave behind, with the signal that stops
/// each at once. Read only by [`stop_owned_now`], the last resort of a second Ctrl-C, when there
/// is no time for an orderly teardown.
static OWNED: std::sync::Mutex<Vec<(u32, Signal)>> = std::sync::Mutex::new(Vec::new());

/// A child registered for [`stop_owned_now`] while this guard lives.
#[derive(Debug)]
pub struct OwnedPid(u32);

impl OwnedPid {
    /// Registers `pid`, to be sent `signal` if thumper has to quit at once.
    pub fn register(pid: u32, signal: Signal) -> OwnedPid {
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pid, signal));
        OwnedPid(pid)
    }
}

impl Drop for OwnedPid {
    fn drop(&mut self) {
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(pid, _)| *pid != self.0);
    }
}

/// Stops every registered child at once (PostgreSQL's immediate shutdown, PgBouncer's, kill
/// for the rest) and waits up to `grace` for them to go: thumper is about to exit without
/// its orderly teardown, and must not leave servers running in their own process groups.
pub fn stop_owned_now(grace: Duration) {
    let owned: Vec<(u32, Signal)> = OWNED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (pid, signal) in &owned {
        let _ = kill(Pid::from_raw(*pid as i32), *signal);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && owned.iter().any(|(pid, _)| live(*pid)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (pid, _) in owned.iter().filter(|(pid, _)| live(*pid)) {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
}

/// A server process we started and are responsible for.
#[derive(Debug)]
pub struct Server {
    /// What it is ("postgres", "pgbouncer"), for messages.
    pub name: &'static str,
    child: Child,
    owned: Option<OwnedPid>,
}

impl Server {
    /// Spawns `cmd`.
    pub fn spawn(name: &'static str, mut cmd: Command) -> Result<Server, StackError> {
        let child = cmd.spawn().map_err(|source| StackError::Spawn {
            binary: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        // PostgreSQL's immediate shutdown is SIGQUIT; PgBouncer's is SIGTERM.
        let now = if name == "postgres" {
            Signal::SIGQUIT
        } else {
            Signal::SIGTERM
        };
        let owned = Some(OwnedPid::register(child.id(), now));
        Ok(Server { name, child, owned })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(exit description)` once it has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Sends `signal`, waits up to `grace` for it to exit, then kills it outright.
    pub async fn stop(mut self, signal: Signal, grace: Duration) {
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
        let deadline = Instant::now() + grace;
        while self.exited().is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The blocking form of [`Server::stop`], for `Drop`.
    pub fn stop_blocking(mut self, signal: Signal, grace: Duration) {
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
        let deadline = Instant::now() + grace;
        while self.exited().is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Leaves it running after we exit (for `thumper stack up`).
    pub fn detach(mut self) -> u32 {
        self.owned = None;
        self.pid()
    }
}

/// Whether `pid` is a live (not zombie) process whose command line contains `marker`.
///
/// The marker (the data directory or config file path, unique per stack) guards against the
/// pid having been reused by an unrelated process.
pub fn pid_alive(pid: u32, marker: &str) -> bool {
    if !live(pid) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(marker)
        })
        .unwrap_or(false)
}

/// Whether `pid` is a running process (not gone, not a zombie), from /proc.
fn live(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// Signals a process we did not spawn (a detached stack's) and waits until it is gone.
pub async fn stop_pid(pid: u32, marker: &str, signal: Signal, grace: Duration) {
    if !pid_alive(pid, marker) {
        return;
    }
    let target = Pid::from_raw(pid as i32);
    let _ = kill(target, signal);
    let deadline = Instant::now() + grace;
    while pid_alive(pid, marker) {
        if Instant::now() >= deadline {
            let _ = kill(target, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
