//! `coordinator`: parses the command line, sets up logging, maps SIGINT and
//! SIGTERM to cancellation, and hands over to [`cascade_coordinator::cli`].

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // The sandbox re-executes this binary to apply limits before a test
    // command runs (no `unsafe` pre-exec hooks).
    if let Some(code) = cascade_exec::sandbox::exec_helper_main() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = cascade_coordinator::cli::Cli::parse();
    init_tracing(cli.log_verbose, &cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_on_signal(cancel.clone()));
        cascade_coordinator::cli::run(cli, cancel).await
    });
    #[cfg(feature = "otlp")]
    cascade_swarm::ops::otlp::shutdown();
    ExitCode::from(code)
}

fn init_tracing(verbose: u8, format: &str) {
    let default = match verbose {
        0 => "warn",
        1 => "info,cascade_coordinator=debug,cascade_worker=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Feature `otlp`: span export when an OTLP endpoint is configured.
    #[cfg(feature = "otlp")]
    let Some(filter) =
        cascade_swarm::ops::otlp::init(filter, format == "json", "cascade-coordinator")
    else {
        return;
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("interrupted: stopping the run (cancelling running tasks)");
    cancel.cancel();
}
