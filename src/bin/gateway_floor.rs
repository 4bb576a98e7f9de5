//! The floor publisher of the gateway measurement (`thumper::gateway_load::floor`): the fake's
//! member events, paced as the fake paces them, published straight to NATS in the gateway's
//! envelope, with no gateway in between. Started by the harness, configured by environment
//! variables (`FloorConfig::to_env`); publishes once asked on `<prefix>_floor.start`, then idles
//! until SIGINT/SIGTERM.
//!
//! Exit codes: 0 after a signal, 1 when publishing fails, 2 for a configuration error.

use std::process::ExitCode;

use thumper::gateway_load::floor::{self, FloorConfig};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let config = match FloorConfig::from_env(|k| std::env::var(k).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gateway-floor: {e} (it is started by the gateway harness, which sets it)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway-floor: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let signal = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            signal.cancel();
        });
        floor::serve(config, cancel).await
    });
    match result {
        Ok(published) => {
            println!("published {published}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway-floor: {e:#}");
            ExitCode::from(1)
        }
    }
}
