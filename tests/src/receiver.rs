//! A real webhook receiver for the tests: an HTTP server on 127.0.0.1 port 0 that records every delivery (headers and
//! raw body), answers a scripted status (fail the first N requests, fail everything, hold a request without
//! answering), and checks Standard Webhooks signatures with its own HMAC-SHA256 (not the issuer's code).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// The signatures of `webhook-signature` (each `v1,<base64>`).
    pub signatures: Vec<String>,
    /// The raw body.
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Whether one of its signatures is `secret`'s over `<id>.<timestamp>.<body>`.
    pub fn signed_by(&self, secret: &str) -> bool {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.", self.id, self.timestamp).as_bytes());
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.signatures.contains(&expected)
    }
}

/// How the receiver answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Script {
    /// 500 to the first `n` requests, then 204.
    FailFirst(usize),
    /// 500 to every request.
    AlwaysFail,
    /// Never answer the first request (hold it until the connection drops); 204 to the rest.
    HoldFirst,
    /// This status to every request.
    Status(u16),
    /// 302 with `Location` set to this URL.
    Redirect(String),
}

#[derive(Debug)]
struct Shared {
    script: Script,
    delay: Duration,
    received: Vec<Received>,
    headers: Vec<BTreeMap<String, String>>,
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(axum::http::HeaderName, String); 1]) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (status, hold, location, delay) = {
        let mut s = shared.lock().unwrap();
        let n = s.received.len();
        let mut location = String::new();
        let (status, hold) = match &s.script {
            Script::FailFirst(k) if n < *k => (500, false),
            Script::FailFirst(_) => (204, false),
            Script::AlwaysFail => (500, false),
            Script::HoldFirst => (204, n == 0),
            Script::Status(status) => (*status, false),
            Script::Redirect(to) => {
                location.clone_from(to);
                (302, false)
            }
        };
        s.received.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp").parse().unwrap_or(-1),
            signatures: header("webhook-signature").split(' ').map(String::from).collect(),
            body,
            answered: if hold { 0 } else { status },
        });
        s.headers
            .push(headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string())).collect());
        (status, hold, location, s.delay)
    };
    if hold {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), [(axum::http::header::LOCATION, location)])
}

impl Receiver {
    /// A receiver on 127.0.0.1 port 0 answering by `script`.
    pub async fn start(script: Script) -> Receiver {
        let shared =
            Arc::new(Mutex::new(Shared { script, delay: Duration::ZERO, received: Vec::new(), headers: Vec::new() }));
        let app = Router::new().route("/hook", post(hook)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, shared, task }
    }

    /// Waits this long before every answer from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().unwrap().delay = delay;
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// The headers of every request so far (lowercase names).
    pub fn headers(&self) -> Vec<BTreeMap<String, String>> {
        self.shared.lock().unwrap().headers.clone()
    }

    /// The requests answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| (200..300).contains(&r.answered)).collect()
    }

    /// How many times each `webhook-id` was accepted.
    pub fn accepted_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.accepted() {
            *counts.entry(r.id).or_default() += 1;
        }
        counts
    }

    /// Waits (polling, at most `within`) until `done` holds for the requests so far; panics with them otherwise.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the receiver did not get what was expected within {within:?}; it got {} requests",
                    received.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
