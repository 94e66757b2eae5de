//! The `outpost` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use outpost::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("outpost: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    if config.log.format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if outpost::library_backtraces_on() {
        tracing::warn!(
            "RUST_BACKTRACE is set, so every storage error the database raises internally captures a backtrace (about 4% of a pool sweep's CPU); set RUST_LIB_BACKTRACE=0 to keep panics' backtraces only"
        );
    }
    let result = match &cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Worker => outpost::run_workers(config, shutdown_signal())
            .await
            .map_err(outpost::cli::CliError::Start),
        Command::Admin { command } => {
            let stdin = std::io::stdin();
            outpost::cli::run_admin(&config, command, &mut stdin.lock(), &mut std::io::stdout())
                .await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: outpost::config::Config) -> Result<(), outpost::cli::CliError> {
    tracing::info!(config = ?config, "starting");
    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .map_err(|e| outpost::cli::CliError::Start(e.into()))?;
    outpost::run(config, listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
