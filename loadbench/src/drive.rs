//! The load loops: keep-alive HTTP/1.1 connections sending one request after another, every response checked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use verifier::{KeySet, Validation};

use crate::seed::{Seeded, PRODUCT};

/// One in this many returned tokens is verified with the `verifier` crate (the check costs as much as a request).
const VERIFY_EVERY: u64 = 64;

/// A public endpoint the benchmark drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `GET /v1/keys`: the HTTP floor, a public route that reads nothing from the store (the key ring is in memory),
    /// through the same server loop, router and middleware as the others; every ratio is to it.
    Floor,
    /// `POST /v1/validate` for seeded, activated machines: expects `VALID`.
    Validate,
    /// `POST /v1/refresh` with seeded tokens: expects a new token that verifies.
    Refresh,
    /// `POST /v1/activate` with fresh fingerprints: expects a token that verifies.
    Activate,
    /// `POST /v1/deactivate` of the machines the activate run added: expects `deactivated`.
    Deactivate,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Floor => "/v1/keys",
            Endpoint::Validate => "/v1/validate",
            Endpoint::Refresh => "/v1/refresh",
            Endpoint::Activate => "/v1/activate",
            Endpoint::Deactivate => "/v1/deactivate",
        }
    }
}

/// Figures of one endpoint's run.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointReport {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Responses received.
    pub requests: u64,
    /// Responses that were 2xx and checked out.
    pub ok: u64,
    /// Transport errors (connection refused or reset, no response).
    pub errors: u64,
    /// Responses with a status other than 2xx.
    pub non_2xx: u64,
    /// 2xx responses whose content was wrong (wrong code, token that does not verify).
    pub unexpected: u64,
    /// Returned tokens verified with the verifier crate (a sample).
    pub tokens_verified: u64,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Responses per second.
    pub requests_per_second: f64,
    /// Latency percentiles and maximum, in microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// `requests_per_second` over the floor's, measured in the same run; `None` when `floor` was not driven.
    pub ratio_to_floor: Option<f64>,
    /// How much the SQLite database's used pages grew over the run (after the issuer's next usage flush), per
    /// million requests; `None` on PostgreSQL.
    pub db_bytes_per_million: Option<f64>,
}

/// Shared state of the runs: the seed, and the machines the activate run added (for deactivate).
#[derive(Debug)]
pub struct Workload {
    seeded: Seeded,
    next: AtomicU64,
    activated: Mutex<Vec<(usize, String)>>,
}

impl Workload {
    /// Work over a seeded store.
    pub fn new(seeded: Seeded) -> Arc<Self> {
        Arc::new(Workload { seeded, next: AtomicU64::new(0), activated: Mutex::new(Vec::new()) })
    }

    /// The seeded store.
    pub fn seeded(&self) -> &Seeded {
        &self.seeded
    }

    /// The next request body, or `None` when the endpoint has no work left (deactivate after every machine).
    fn body(&self, endpoint: Endpoint) -> Option<(u64, usize, String, String)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.seeded.licenses.len();
        let pick = (i % n as u64) as usize;
        let l = &self.seeded.licenses[pick];
        let (fingerprint, body) = match endpoint {
            Endpoint::Floor => (String::new(), String::new()),
            Endpoint::Validate => {
                (l.fingerprint.clone(), format!(r#"{{"key":"{}","fingerprint":"{}"}}"#, l.key, l.fingerprint))
            }
            Endpoint::Refresh => (l.fingerprint.clone(), format!(r#"{{"token":"{}"}}"#, l.token)),
            Endpoint::Activate => {
                let fp = format!("bench-{i}");
                let body = format!(r#"{{"key":"{}","fingerprint":"{fp}","name":"bench"}}"#, l.key);
                (fp, body)
            }
            Endpoint::Deactivate => {
                let (license, fp) = self.activated.lock().ok()?.pop()?;
                let key = &self.seeded.licenses[license].key;
                return Some((i, license, fp.clone(), format!(r#"{{"key":"{key}","fingerprint":"{fp}"}}"#)));
            }
        };
        Some((i, pick, fingerprint, body))
    }
}

#[derive(Default)]
struct Tally {
    requests: u64,
    ok: u64,
    errors: u64,
    non_2xx: u64,
    unexpected: u64,
    tokens_verified: u64,
}

/// Drives `endpoint` with `connections` keep-alive connections for `duration` and reports what came back.
pub async fn drive(
    addr: SocketAddr,
    endpoint: Endpoint,
    connections: usize,
    duration: Duration,
    work: Arc<Workload>,
) -> EndpointReport {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let work = work.clone();
        tasks.spawn(async move { connection(addr, endpoint, deadline, &work).await });
    }
    let mut histogram = new_histogram();
    let mut tally = Tally::default();
    while let Some(Ok((h, t))) = tasks.join_next().await {
        let _ = histogram.add(&h);
        tally.requests += t.requests;
        tally.ok += t.ok;
        tally.errors += t.errors;
        tally.non_2xx += t.non_2xx;
        tally.unexpected += t.unexpected;
        tally.tokens_verified += t.tokens_verified;
    }
    let seconds = started.elapsed().as_secs_f64();
    EndpointReport {
        endpoint,
        requests: tally.requests,
        ok: tally.ok,
        errors: tally.errors,
        non_2xx: tally.non_2xx,
        unexpected: tally.unexpected,
        tokens_verified: tally.tokens_verified,
        seconds,
        requests_per_second: tally.requests as f64 / seconds,
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
        ratio_to_floor: None,
        db_bytes_per_million: None,
    }
}

#[allow(clippy::expect_used)] // Constant bounds that hdrhistogram accepts: this cannot fail.
fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn connect(addr: SocketAddr) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn connection(
    addr: SocketAddr,
    endpoint: Endpoint,
    deadline: Instant,
    work: &Workload,
) -> (Histogram<u64>, Tally) {
    let mut histogram = new_histogram();
    let mut tally = Tally::default();
    let mut sender = None;
    while Instant::now() < deadline {
        let Some((i, license, fingerprint, body)) = work.body(endpoint) else { break };
        if sender.is_none() {
            sender = connect(addr).await;
        }
        let Some(s) = sender.as_mut() else {
            tally.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let request = match endpoint {
            Endpoint::Floor => Request::get(endpoint.path()).header(HOST, "127.0.0.1").body(Full::new(Bytes::new())),
            _ => Request::post(endpoint.path())
                .header(HOST, "127.0.0.1")
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body))),
        };
        let Ok(request) = request else {
            tally.errors += 1;
            continue;
        };
        let sent = Instant::now();
        let response = match s.send_request(request).await {
            Ok(r) => r,
            Err(_) => {
                tally.errors += 1;
                sender = None;
                continue;
            }
        };
        let status = response.status();
        let Ok(collected) = response.into_body().collect().await else {
            tally.errors += 1;
            sender = None;
            continue;
        };
        let bytes = collected.to_bytes();
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = histogram.record(micros);
        tally.requests += 1;
        if !status.is_success() {
            tally.non_2xx += 1;
            if tally.non_2xx <= 3 {
                eprintln!("{endpoint:?}: {status} {}", String::from_utf8_lossy(&bytes));
            }
            continue;
        }
        match check(endpoint, status, &bytes, i, &fingerprint, &work.seeded.keys) {
            Check::Ok { verified } => {
                tally.ok += 1;
                tally.tokens_verified += u64::from(verified);
                if endpoint == Endpoint::Activate {
                    if let Ok(mut list) = work.activated.lock() {
                        list.push((license, fingerprint));
                    }
                }
            }
            Check::Wrong(why) => {
                tally.unexpected += 1;
                if tally.unexpected <= 3 {
                    eprintln!("{endpoint:?}: unexpected response ({why}): {}", String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
    (histogram, tally)
}

enum Check {
    Ok { verified: bool },
    Wrong(&'static str),
}

fn check(endpoint: Endpoint, status: StatusCode, body: &[u8], i: u64, fingerprint: &str, keys: &KeySet) -> Check {
    if status != StatusCode::OK {
        return Check::Wrong("status");
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else { return Check::Wrong("not JSON") };
    match endpoint {
        Endpoint::Floor if json["keys"].as_array().is_some_and(|k| !k.is_empty()) => Check::Ok { verified: false },
        Endpoint::Floor => Check::Wrong("no keys"),
        Endpoint::Validate if json["code"] == "VALID" && json["valid"] == true => Check::Ok { verified: false },
        Endpoint::Validate => Check::Wrong("code is not VALID"),
        Endpoint::Deactivate if json["deactivated"] == true => Check::Ok { verified: false },
        Endpoint::Deactivate => Check::Wrong("not deactivated"),
        Endpoint::Refresh | Endpoint::Activate => {
            let Some(token) = json["token"].as_str() else { return Check::Wrong("no token") };
            if !i.is_multiple_of(VERIFY_EVERY) {
                return Check::Ok { verified: false };
            }
            let validation = Validation::new(PRODUCT, fingerprint);
            match verifier::verify(token, keys, &validation) {
                Ok(_) => Check::Ok { verified: true },
                Err(_) => Check::Wrong("token does not verify"),
            }
        }
    }
}
