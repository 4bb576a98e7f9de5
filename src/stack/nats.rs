//! A throwaway `nats-server` on 127.0.0.1 (Debian's `nats-server` package): the gateway pipeline's bus and a fleet's coordination channel.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use crate::stack::process::OwnedPid;

/// A running `nats-server`; killed when dropped.
pub struct NatsServer {
    child: Child,
    url: String,
    _owned: OwnedPid,
}

/// Finds `nats-server` on PATH or where Debian installs it.
fn find_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"));
    on_path
        .chain(["/usr/sbin/nats-server", "/usr/bin/nats-server"].map(PathBuf::from))
        .find(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<NatsServer> {
        let port = free_port().context("finding a free port for nats-server")?;
        NatsServer::start_on(port).await
    }

    /// Starts a server on 127.0.0.1:`port` and waits until it accepts connections.
    pub async fn start_on(port: u16) -> anyhow::Result<NatsServer> {
        let bin = find_binary().context(
            "nats-server not found on PATH or in /usr/sbin (apt-get install nats-server), \
             or pass a NATS URL",
        )?;
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C at the terminal reaches thumper only, which
            // decides when the run (and the server) ends.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let owned = OwnedPid::register(child.id().unwrap_or_default(), Signal::SIGKILL);
        let mut server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _owned: owned,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("nats-server exited at start ({status}); is port {port} taken?");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("nats-server did not accept connections on port {port} within 5 s")
    }

    /// The server's `nats://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
