//! Load benchmark of the issuer, run as a user would: the release binary on 127.0.0.1, its default SQLite store (or
//! PostgreSQL), N seeded licenses with activations, then activate / validate / refresh / deactivate driven over HTTP
//! by keep-alive connections, each response checked (status, result code, and a sample of tokens verified with the
//! `verifier` crate). Latencies go into HDR histograms; the report gives requests/s, p50/p90/p99/max, error counts,
//! the issuer's peak RSS and its time from start to ready.
//!
//! # Layout
//! - `seed`: creates the data directory through the issuer library and fills the store.
//! - `server`: starts the `issuer serve` binary, waits until ready, reads its peak RSS.
//! - `drive`: the load loops and response checks.
//! - `report`: the table and the JSON.

mod drive;
mod report;
mod seed;
mod server;

pub use drive::{drive, Endpoint, EndpointReport, Workload};
pub use report::{Report, ServerFigures};
pub use seed::{seed, Seeded};
pub use server::{Server, ServerError};

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Seeding the store failed.
    #[error("seeding failed: {0}")]
    Seed(String),
    /// The issuer binary failed to start or to answer.
    #[error(transparent)]
    Server(#[from] ServerError),
}
