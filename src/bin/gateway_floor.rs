//! The floor publisher of the gateway measurement (`thumper::gateway_load::floor`): the fake's
//! member events, paced as the fake paces them, published straight to NATS in the gateway's
//! envelope, with no gateway in between. Started by the harness, configured by environment
//! variables (`FloorConfig::to_env`); publishes once asked on `<prefix>_floor.start`, then idles
//! until SIGINT/SIGTERM. No async runtime: see `floor::serve`.
//!
//! Exit codes: 0 after a signal, 1 when publishing fails, 2 for a configuration error.

use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};
use thumper::gateway_load::floor::{self, FloorConfig};

fn main() -> ExitCode {
    let config = match FloorConfig::from_env(|k| std::env::var(k).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gateway-floor: {e} (it is started by the gateway harness, which sets it)");
            return ExitCode::from(2);
        }
    };
    // SIGINT and SIGTERM are blocked here and in every thread started after, and waited for
    // below: the harness stops the floor as it stops the gateway, and it exits 0.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("gateway-floor: cannot block signals: {e}");
        return ExitCode::from(1);
    }
    std::thread::spawn(move || match floor::serve(config) {
        Ok(published) => println!("published {published}"),
        Err(e) => {
            eprintln!("gateway-floor: {e:#}");
            std::process::exit(1);
        }
    });
    let _ = signals.wait();
    ExitCode::SUCCESS
}
