//! The vendor CLI: every subcommand of the `issuer` binary, as library code so tests run it in process.
//!
//! ```no_run
//! let mut out = Vec::new();
//! let mut err = Vec::new();
//! let code = issuer::cli::run(["issuer", "--data-dir", "/tmp/issuer-data", "init"], &mut out, &mut err);
//! assert_eq!(code, std::process::ExitCode::SUCCESS);
//! ```
//!
//! Every command opens the same store and key ring as `issuer serve`, through the same configuration layers
//! (defaults < `--config` file < `ISSUER_*` environment < flags), and calls [`crate::Licensing`], never the HTTP API.
//! Results go to `out`; errors go to `err` as `error: ...` with exit code 2 for usage and input mistakes and 1 for
//! everything else. Read commands take `--json` for scripts.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::service::{Licensing, ServiceError};
use crate::{Config, Flags, KEYS_DIR};

mod admin_token;
mod backup;
mod doctor;
mod events;
mod import;
mod keys;
mod license;
mod network;
mod policy;
mod revocations;
mod root;
mod shell;
mod token;
mod webhook;

pub use import::{ImportSummary, IMPORT_COLUMNS};

/// The app-side code in docs/air-gapped.md compiles as a doc test, so the guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/air-gapped.md")]
struct AirGappedDoctests;

/// Self-hosted license issuer: licenses, machine activations and signed license tokens.
#[derive(Debug, Parser)]
#[command(name = "issuer", version, about, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Where the store and key ring are.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes: where the issuer's data is.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Data directory of the SQLite store and key ring [default: ./issuer-data; env ISSUER_DATA_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL [default: the SQLite file in the data directory; env ISSUER_DATABASE_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// TOML config file (see `issuer config example`) [env ISSUER_CONFIG].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory, store, signing key ring and admin API token (printed once).
    Init,
    /// Run the HTTP service (creates the data directory, store, key ring and an admin token on first start).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080; env ISSUER_LISTEN].
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Signing keys: generate, list, prepare, rotate, retire, certificates and roots, export the public key set.
    Keys {
        /// The keys subcommand.
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// The vendor's root key (keep it offline): create it, show its line, certify signing keys.
    Root {
        /// The root subcommand.
        #[command(subcommand)]
        command: root::RootCommand,
    },
    /// The signed revocation list for offline apps: export it to a file.
    Revocations {
        /// The revocations subcommand.
        #[command(subcommand)]
        command: revocations::RevocationsCommand,
    },
    /// Licenses: create, list, show, update, suspend, reinstate, revoke, import from CSV.
    License {
        /// The license subcommand.
        #[command(subcommand)]
        command: license::LicenseCommand,
    },
    /// Policies, the named terms of licenses: create, list, show, update, delete.
    Policy {
        /// The policy subcommand.
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Machines activated on a license: list, remove.
    Machine {
        /// The machine subcommand.
        #[command(subcommand)]
        command: license::MachineCommand,
    },
    /// Tokens: issue (also from an air-gapped activation request), inspect, redeem a deactivation code.
    Token {
        /// The token subcommand.
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Admin API tokens: create (the secret is printed once), list, revoke.
    AdminToken {
        /// The admin-token subcommand.
        #[command(subcommand)]
        command: admin_token::AdminTokenCommand,
    },
    /// Client network rules (CIDR allow and deny, global, per policy or per license): create, list, delete.
    IpRule {
        /// The ip-rule subcommand.
        #[command(subcommand)]
        command: network::IpRuleCommand,
    },
    /// Webhook endpoints: create, list, show, delete, rotate-secret, enable, deliveries, resend.
    ///
    /// These commands only queue: an event's deliveries are written to the store with the change that caused it
    /// (also a change made by the CLI), and a running `issuer serve` sends them.
    Webhook {
        /// The webhook subcommand.
        #[command(subcommand)]
        command: webhook::WebhookCommand,
    },
    /// The audit log: every event, with its actor and client IP.
    Events {
        /// The events subcommand.
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Copy the SQLite store, consistent while `serve` runs on the same data directory (`VACUUM INTO`).
    Backup {
        /// The file to write; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print JSON: path, bytes, integrity, millis.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration, data directory, store, key ring and clock, changing nothing; say what to fix.
    Doctor,
    /// Print the completion script of a shell: bash, zsh, fish, elvish or powershell.
    ///
    /// For example `issuer completions bash > /etc/bash_completion.d/issuer`, `issuer completions zsh >
    /// ~/.zfunc/_issuer`, `issuer completions fish > ~/.config/fish/completions/issuer.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page issuer(1), or with --dir write one page per command there.
    Man {
        /// Write `issuer.1`, `issuer-license.1`, `issuer-license-create.1`, ... into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Configuration helpers.
    Config {
        /// The config subcommand.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `issuer config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print an example config file with every setting and its default.
    Example,
}

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub(crate) enum CliError {
    /// A usage or input mistake (bad flag value, mistyped code, malformed token or file): exit code 2.
    Usage(String),
    /// Anything else (not found, refused, store failure): exit code 1.
    Failed(String),
    /// The reader of the output went away (EPIPE, as in `issuer license list | head -1`): the command stops quietly
    /// with exit code 0, as `ls | head -1` does.
    OutputClosed,
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::OutputClosed => 0,
        }
    }

    fn message(&self) -> Option<&str> {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => Some(m),
            CliError::OutputClosed => None,
        }
    }
}

impl From<ServiceError> for CliError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidLicenseKey(_)
            | ServiceError::InvalidField { .. }
            | ServiceError::InvalidCode(_)
            | ServiceError::InvalidToken(_) => CliError::Usage(e.to_string()),
            other => CliError::Failed(error_chain(&other)),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError::OutputClosed;
        }
        CliError::Failed(format!("cannot write the output: {e}"))
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        if e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe) {
            return CliError::OutputClosed;
        }
        CliError::Failed(format!("cannot write JSON: {e}"))
    }
}

/// An error and its sources, joined with `: `.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

pub(crate) type CliResult = Result<(), CliError>;

/// Parses `args` (the program name first) and runs the command, writing results to `out` and errors to `err`.
///
/// Builds its own async runtime; from async code call [`run_cli`] instead. `--help` and `--version` go to `out` with
/// exit code 0; a usage error goes to `err` with exit code 2.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match parse(args, out, err) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = if matches!(cli.command, Command::Serve { .. }) {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    match runtime {
        Ok(rt) => rt.block_on(run_cli(cli, out, err)),
        Err(e) => report(err, &CliError::Failed(format!("cannot start the async runtime: {e}"))),
    }
}

/// Parses `args`; on `--help`/`--version` or a usage error, prints it and returns the exit code.
pub fn parse<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> Result<Cli, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(cli),
        Err(e) => {
            let text = e.render().to_string();
            if e.use_stderr() {
                let _ = write!(err, "{text}");
                Err(ExitCode::from(2))
            } else {
                let _ = write!(out, "{text}");
                Err(ExitCode::SUCCESS)
            }
        }
    }
}

/// Runs a parsed command (async; `serve` runs until Ctrl-C or SIGTERM).
pub async fn run_cli(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    match execute(cli, out, err).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(err, &e),
    }
}

fn report(err: &mut dyn Write, e: &CliError) -> ExitCode {
    if let Some(message) = e.message() {
        let _ = writeln!(err, "error: {message}");
    }
    ExitCode::from(e.exit_code())
}

async fn execute(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> CliResult {
    let global = cli.global;
    match cli.command {
        Command::Config { command: ConfigCommand::Example } => {
            write!(out, "{}", Config::example())?;
            Ok(())
        }
        Command::Init => init(&load_config(&global, None)?, out).await,
        Command::Backup { out: file, json } => backup::run(&global, &file, json, out).await,
        Command::Doctor => doctor::run(&global, out).await,
        Command::Completions { shell } => shell::completions(shell, out),
        Command::Man { dir } => shell::man(dir.as_deref(), out),
        Command::Serve { listen } => serve(load_config(&global, listen)?, out).await,
        Command::Keys { command } => keys::run(command, &global, out).await,
        Command::Root { command } => root::run(command, out),
        Command::Revocations { command } => revocations::run(command, &global, out, err).await,
        Command::License { command } => license::run(command, &global, out, err).await,
        Command::Policy { command } => policy::run(command, &global, out, err).await,
        Command::Machine { command } => license::run_machine(command, &global, out, err).await,
        Command::Token { command } => token::run(command, &global, out, err).await,
        Command::AdminToken { command } => admin_token::run(command, &global, out, err).await,
        Command::Webhook { command } => webhook::run(command, &global, out, err).await,
        Command::IpRule { command } => network::run(command, &global, out, err).await,
        Command::Events { command } => events::run(command, &global, out, err).await,
    }
}

/// Loads the configuration layers for a command.
pub(crate) fn load_config(global: &GlobalArgs, listen: Option<SocketAddr>) -> Result<Config, CliError> {
    let file = global.config.clone().or_else(|| std::env::var_os("ISSUER_CONFIG").map(PathBuf::from));
    let file = file.filter(|f| !f.as_os_str().is_empty());
    Config::load(
        file.as_deref(),
        |n| std::env::var(n).ok(),
        Flags::new(listen, global.data_dir.clone(), global.database_url.clone()),
    )
    .map_err(|e| CliError::Usage(e.to_string()))
}

/// The key ring directory of an initialized data directory; an error naming `issuer init` otherwise.
pub(crate) fn keys_dir(config: &Config) -> Result<PathBuf, CliError> {
    let dir = config.data_dir.join(KEYS_DIR);
    if !dir.join("ring.txt").exists() {
        return Err(CliError::Failed(format!(
            "{} is not an initialized issuer data directory (it has no key ring); run `issuer init` first, or pass \
             --data-dir (or set ISSUER_DATA_DIR) to the right one",
            config.data_dir.display()
        )));
    }
    Ok(dir)
}

/// Opens the store and key ring of an initialized data directory.
pub(crate) async fn open_service(global: &GlobalArgs, err: &mut dyn Write) -> Result<Arc<Licensing>, CliError> {
    let config = load_config(global, None)?;
    keys_dir(&config)?;
    let opened = crate::open(&config).await.map_err(|e| CliError::Failed(error_chain(&e)))?;
    if let Some(token) = opened.new_admin_token {
        writeln!(err, "note: the store had no admin API token, so one was created; it is shown only this once:")?;
        writeln!(err, "admin token: {token}")?;
    }
    Ok(opened.licensing)
}

async fn init(config: &Config, out: &mut dyn Write) -> CliResult {
    let keys_dir = config.data_dir.join(KEYS_DIR);
    // Decided under the data directory's initialization lock: of several processes starting at once, one
    // initializes and every other init says so.
    let opened = crate::initialize(config).await.map_err(|e| CliError::Failed(error_chain(&e)))?;
    let ring = opened.licensing.key_ring();
    writeln!(out, "Initialized the issuer in {}", config.data_dir.display())?;
    match &config.database_url {
        Some(_) => writeln!(out, "  store:    the database at the configured database URL")?,
        None => writeln!(out, "  store:    {}", config.data_dir.join(crate::DATABASE_FILE).display())?,
    }
    writeln!(out, "  key ring: {} (active key {})", keys_dir.display(), ring.active().key_id())?;
    match &opened.new_admin_token {
        Some(token) => {
            writeln!(
                out,
                "Created the admin API token. It is shown only this once (the issuer keeps only its hash); store it now:"
            )?;
            writeln!(out, "admin token: {token}")?;
        }
        None => writeln!(out, "The store already has an admin API token; no new one was created.")?,
    }
    writeln!(out, "Public key set for your apps (`issuer keys export --format rust` prints it as a Rust constant):")?;
    for entry in ring.entries() {
        writeln!(out, "{}", entry.public)?;
    }
    Ok(())
}

async fn serve(config: Config, out: &mut dyn Write) -> CliResult {
    init_tracing()?;
    tracing::info!(?config, "starting");
    // Bind before start(): a first start that created the admin token must also get to print it.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", config.listen)))?;
    let started = crate::start(&config).await.map_err(|e| CliError::Failed(error_chain(&e)))?;
    let addr = listener.local_addr()?;
    let shutdown =
        shutdown_signal().map_err(|e| CliError::Failed(format!("cannot install the signal handlers: {e}")))?;
    if let Some(token) = &started.new_admin_token {
        writeln!(
            out,
            "Created the admin API token. It is shown only this once (the issuer keeps only its hash); store it now:"
        )?;
        writeln!(out, "admin token: {token}")?;
    }
    writeln!(out, "issuer listening on http://{addr}")?;
    out.flush()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "listening");
    let licensing = started.state.licensing.clone();
    let served = crate::http::serve(listener, started.state, shutdown).await;
    // Webhook attempts in flight finish and are recorded, so the next start sends none of them again.
    licensing.stop_webhook_delivery().await;
    // The address counters of the last second are written too.
    if let Err(e) = licensing.flush_ip_history().await {
        tracing::warn!(error = %e, "cannot write the last address counters");
    }
    // And the usage counts, with the refusals of the minute not yet over.
    if let Err(e) = licensing.flush_usage(crate::Flush::All).await {
        tracing::warn!(error = %e, "cannot write the last usage counts");
    }
    served.map_err(|e| CliError::Failed(format!("the server failed: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// The log of `serve`: `ISSUER_LOG` filters (default `info`), `ISSUER_LOG_FORMAT` is `text` (default) or `json`
/// (one object a line, with the request's span: `request_id`, `method`, `path`).
fn init_tracing() -> Result<(), CliError> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ISSUER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = std::env::var("ISSUER_LOG_FORMAT").unwrap_or_default();
    // A second call (serve run twice in one process) keeps the first subscriber.
    match format.trim() {
        "" | "text" => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .try_init();
        }
        "json" => {
            let _ = tracing_subscriber::fmt()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
        other => {
            return Err(CliError::Usage(format!("invalid setting ISSUER_LOG_FORMAT: `{other}` is not text or json")))
        }
    }
    Ok(())
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed here, before it is first polled,
/// so a signal that arrives right after the server announced itself is never missed (the default action would kill
/// the process with a non-zero status).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::info!("shutting down: finishing in-flight requests");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("shutting down: finishing in-flight requests");
        })
    }
}

// ---- output helpers shared by the subcommands ----

/// `n` and the noun in the number it needs: `count(1, "slot", "slots")` is `1 slot`, `count(2, ...)` is `2 slots`.
pub(crate) fn count<N: std::fmt::Display + PartialEq + From<u8>>(n: N, one: &str, many: &str) -> String {
    let noun = if n == N::from(1) { one } else { many };
    format!("{n} {noun}")
}

/// How many of a license's slots are taken, e.g. `1 of 2 slots used`, `2 of 1 slot used`.
pub(crate) fn slots_used(used: impl std::fmt::Display, slots: u32) -> String {
    format!("{used} of {} used", count(slots, "slot", "slots"))
}

/// RFC 3339 text of a time.
pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// RFC 3339 text of an optional time, or `none`.
pub(crate) fn fmt_opt_time(t: Option<OffsetDateTime>, none: &str) -> String {
    t.map_or_else(|| none.to_string(), fmt_time)
}

/// Writes `value` as pretty JSON and a newline.
pub(crate) fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> CliResult {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Writes rows as a table with a header line, columns padded to their widest cell.
pub(crate) fn write_table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> CliResult {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        text.trim_end().to_string()
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// The text of an argument that is either given inline or as `@FILE` (read from the file), trimmed.
pub(crate) fn inline_or_file(arg: &str) -> Result<String, CliError> {
    inline_or_file_untrimmed(arg).map(|t| t.trim().to_string())
}

/// [`inline_or_file`] without the trimming, for texts whose parser decides which whitespace surrounding them may have
/// (a token: exactly the ASCII whitespace of docs/token-format.md §2).
pub(crate) fn inline_or_file_untrimmed(arg: &str) -> Result<String, CliError> {
    match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(Path::new(path)).map_err(|e| CliError::Usage(format!("cannot read {path}: {e}")))
        }
        None => Ok(arg.to_string()),
    }
}
