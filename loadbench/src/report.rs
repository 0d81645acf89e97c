//! The benchmark's report: a table for people and JSON for scripts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::EndpointReport;

/// Figures about the issuer process itself.
#[derive(Clone, Debug, Serialize)]
pub struct ServerFigures {
    /// Store backend (`sqlite` or `postgres`).
    pub backend: String,
    /// Seeded licenses (one activated machine each).
    pub licenses: usize,
    /// Seconds spent seeding.
    pub seed_seconds: f64,
    /// Milliseconds from spawning `issuer serve` to its first successful `/healthz`.
    pub ready_ms: f64,
    /// Peak resident set size of the issuer process over the whole run, in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Concurrent connections per endpoint run.
    pub connections: usize,
    /// Seconds per endpoint run.
    pub duration_secs: f64,
    /// The lease of the policy the licenses were seeded from; `None`: licenses without a policy.
    pub policy_lease_secs: Option<u64>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The issuer process.
    pub server: ServerFigures,
    /// One entry per endpoint, in run order.
    pub endpoints: Vec<EndpointReport>,
}

impl Report {
    /// A fixed-width table.
    pub fn table(&self) -> String {
        let s = &self.server;
        let mut out = String::new();
        let rss = s.peak_rss_mib.map(|m| format!("{m:.1} MiB")).unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            out,
            "backend {}, {} licenses{} (seeded in {:.1} s), {} connections, {:.0} s per endpoint; ready in {:.0} ms, peak RSS {rss}",
            s.backend,
            s.licenses,
            s.policy_lease_secs.map(|l| format!(" of a policy with a {l} s lease")).unwrap_or_default(),
            s.seed_seconds,
            s.connections,
            s.duration_secs,
            s.ready_ms
        );
        let _ = writeln!(
            out,
            "{:<11} {:>9} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>9}",
            "endpoint",
            "requests",
            "req/s",
            "x floor",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "errors",
            "non2xx",
            "wrong",
            "verified",
            "MB/M req"
        );
        for e in &self.endpoints {
            let ms = |us: u64| us as f64 / 1000.0;
            let _ = writeln!(
                out,
                "{:<11} {:>9} {:>10.0} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>7} {:>7} {:>8} {:>9}",
                format!("{:?}", e.endpoint).to_lowercase(),
                e.requests,
                e.requests_per_second,
                e.ratio_to_floor.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into()),
                ms(e.p50_us),
                ms(e.p90_us),
                ms(e.p99_us),
                ms(e.max_us),
                e.errors,
                e.non_2xx,
                e.unexpected,
                e.tokens_verified,
                e.db_bytes_per_million.map(|b| format!("{:.1}", b / 1e6)).unwrap_or_else(|| "-".into())
            );
        }
        out
    }
}
