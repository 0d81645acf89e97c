//! `loadbench`: runs the issuer load benchmark (see docs/performance.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadbench::{drive, seed, Endpoint, Report, Server, ServerFigures, Workload};

/// Seeds an issuer store, starts the release `issuer serve`, drives its public API and reports per endpoint.
#[derive(Debug, Parser)]
#[command(name = "loadbench", about)]
struct Args {
    /// The issuer binary to test.
    #[arg(long, default_value = "target/release/issuer")]
    issuer: PathBuf,
    /// Licenses to seed (one activated machine each).
    #[arg(long, default_value_t = 10_000)]
    licenses: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds per endpoint.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Endpoints to drive, in order; `floor` (`GET /v1/keys`) is the HTTP floor every other is compared with.
    #[arg(long, value_delimiter = ',', default_value = "floor,validate,refresh,activate,deactivate")]
    endpoints: Vec<Endpoint>,
    /// PostgreSQL URL (default: the embedded SQLite store in a temporary data directory).
    #[arg(long)]
    database_url: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit non-zero if any response was an error, non-2xx or wrong (for the CI smoke run).
    #[arg(long)]
    strict: bool,
    /// Seed the licenses from a policy with this lease (e.g. 1h), so every request reads the policy and culls ended
    /// leases (docs/policies.md) [default: licenses without a policy].
    #[arg(long, value_name = "DURATION", value_parser = parse_lease)]
    policy_lease: Option<u64>,
}

fn parse_lease(text: &str) -> Result<u64, String> {
    issuer::parse_duration_secs(text)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(report) => {
            print!("{}", report.table());
            if let Some(path) = &args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => {
                        if let Err(e) = std::fs::write(path, json + "\n") {
                            eprintln!("error: cannot write {}: {e}", path.display());
                            return ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            let bad: u64 = report.endpoints.iter().map(|e| e.errors + e.non_2xx + e.unexpected).sum();
            let empty = report.endpoints.iter().any(|e| e.ok == 0);
            if args.strict && (bad > 0 || empty) {
                eprintln!(
                    "error: {bad} bad responses{}",
                    if empty { ", and an endpoint with no successful request" } else { "" }
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The bytes of the SQLite database's pages in use (its WAL included: read through a connection of its own), or
/// `None` if it cannot be read.
async fn used_bytes(db: &std::path::Path) -> Option<u64> {
    use sqlx::ConnectOptions as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true);
    let mut conn = options.connect().await.ok()?;
    let row: (i64, i64, i64) = sqlx::query_as(
        "SELECT p.page_count, f.freelist_count, s.page_size FROM pragma_page_count() p, pragma_freelist_count() f, \
         pragma_page_size() s",
    )
    .fetch_one(&mut conn)
    .await
    .ok()?;
    u64::try_from((row.0 - row.1) * row.2).ok()
}

async fn run(args: &Args) -> Result<Report, Box<dyn std::error::Error>> {
    if !args.issuer.exists() {
        return Err(
            format!("{} not found; build it with `cargo build --release -p issuer`", args.issuer.display()).into()
        );
    }
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("issuer-data");
    let url = args.database_url.as_deref();
    eprintln!("seeding {} licenses ...", args.licenses);
    // Every seeded license gets room for the activations the benchmark adds.
    let seeded = seed(&data_dir, url, args.licenses.max(1), 1_000_000, args.policy_lease).await?;
    let seed_seconds = seeded.seconds;
    let server = Server::start(&args.issuer, &data_dir, url).await?;
    eprintln!("issuer ready at {} in {:.0} ms", server.addr, server.ready.as_secs_f64() * 1000.0);
    let work = Workload::new(seeded);
    let mut endpoints = Vec::new();
    let db = data_dir.join("issuer.db");
    for &endpoint in &args.endpoints {
        eprintln!("driving {endpoint:?} for {} s ...", args.duration);
        let d = Duration::from_secs_f64(args.duration);
        let before = if url.is_none() { used_bytes(&db).await } else { None };
        let mut report = drive(server.addr, endpoint, args.connections, d, work.clone()).await;
        if let Some(before) = before {
            // The counts of the last second reach the database at the issuer's next usage flush.
            tokio::time::sleep(issuer::USAGE_FLUSH_INTERVAL * 2).await;
            if let Some(after) = used_bytes(&db).await {
                let per_request = after.saturating_sub(before) as f64 / report.requests.max(1) as f64;
                report.db_bytes_per_million = Some(per_request * 1e6);
            }
        }
        endpoints.push(report);
    }
    let floor = endpoints.iter().find(|e| e.endpoint == Endpoint::Floor).map(|e| e.requests_per_second);
    if let Some(floor) = floor.filter(|f| *f > 0.0) {
        for e in &mut endpoints {
            e.ratio_to_floor = Some(e.requests_per_second / floor);
        }
    }
    let figures = ServerFigures {
        backend: if url.is_some() { "postgres".into() } else { "sqlite".into() },
        licenses: args.licenses,
        seed_seconds,
        ready_ms: server.ready.as_secs_f64() * 1000.0,
        peak_rss_mib: server.peak_rss_kib().map(|k| k as f64 / 1024.0),
        connections: args.connections,
        duration_secs: args.duration,
        policy_lease_secs: args.policy_lease,
    };
    server.stop().await;
    Ok(Report { server: figures, endpoints })
}
