//! The `issuer` binary: parses the command line, loads the configuration and runs the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use issuer::{Config, Flags};

/// Self-hosted license issuer: licenses, machine activations and signed license tokens.
#[derive(Debug, Parser)]
#[command(name = "issuer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service (creates the data directory, store, key ring and an admin token on first start).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080; env ISSUER_LISTEN].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory for the SQLite store and key ring [default: ./issuer-data; env ISSUER_DATA_DIR].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Database URL [default: the SQLite file in the data directory; env ISSUER_DATABASE_URL].
        #[arg(long)]
        database_url: Option<String>,
        /// TOML config file (see `issuer config example`) [env ISSUER_CONFIG].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print an example config file with every setting and its default.
    Example,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config { command: ConfigCommand::Example } => {
            print!("{}", Config::example());
            ExitCode::SUCCESS
        }
        Command::Serve { listen, data_dir, database_url, config } => {
            init_tracing();
            let file = config.or_else(|| std::env::var_os("ISSUER_CONFIG").map(PathBuf::from));
            let config = match Config::load(
                file.as_deref(),
                |n| std::env::var(n).ok(),
                Flags::new(listen, data_dir, database_url),
            ) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(?config, "starting");
    // Bind before start(): a first start that created the admin token must also get to print it.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let started = issuer::start(&config).await?;
    let addr = listener.local_addr()?;
    if let Some(token) = &started.new_admin_token {
        println!(
            "Created the admin API token. It is shown only this once (the issuer keeps only its hash); store it now:"
        );
        println!("admin token: {token}");
    }
    println!("issuer listening on http://{addr}");
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "listening");
    issuer::http::serve(listener, started.state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ISSUER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
