//! thumper's entry point: parse → runtime → run the command → its exit code.

use std::process::ExitCode;

use clap::Parser;

use thumper::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("THUMPER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Many VUs need many sockets; raise the soft open-file limit to the hard one.
    let _ = thumper::stack::process::raise_open_file_limit(0);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("thumper: cannot start the async runtime: {e}");
            return ExitCode::from(thumper::exit::FAILED);
        }
    };
    ExitCode::from(runtime.block_on(thumper::commands::dispatch(cli.command)))
}
