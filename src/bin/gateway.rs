//! The Arrakis gateway binary: configuration → logging → shards until SIGINT/SIGTERM.
//!
//! Exit codes: 0 after a signal, 1 when the gateway fails while running (NATS unreachable, a shard
//! closed for good), 2 for a configuration error (printed as one line naming the setting).

use std::path::PathBuf;
use std::process::ExitCode;

use thumper::gateway::config::LogFormat;
use thumper::gateway::{self, GatewayConfig};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: gateway [--config FILE]\n\
    Configured by environment variables (see .env.example) over an optional YAML file\n\
    (--config FILE or GATEWAY_CONFIG).";

fn config_path() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    let mut path = std::env::var_os("GATEWAY_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => {
                path = Some(args.next().ok_or("--config needs a file")?.into());
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(path)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal(cancel: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = cancel.cancelled() => return,
    }
    tracing::info!("signal received; closing shards");
    cancel.cancel();
}

fn main() -> ExitCode {
    let path = match config_path() {
        Ok(path) => path,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("gateway: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match GatewayConfig::load(path.as_deref(), |key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gateway: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_signal(cancel.clone()));
        gateway::run(config, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped");
            eprintln!("gateway: {e}");
            ExitCode::from(1)
        }
    }
}
