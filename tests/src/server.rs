//! The issuer under test over HTTP: a [`Server`] is a real service (`issuer::start_with_clock` +
//! `issuer::http::serve`) on 127.0.0.1 port 0 with a real SQLite file in a temporary data directory, and a client with
//! the admin token the fresh data directory printed. It holds the service's [`issuer::Licensing`] handle so tests can
//! call it directly (the lease sweep), and the clock it reads: the system clock, any [`issuer::Clock`], or a
//! [`issuer::ManualClock`] the tests move so that nothing sleeps.
//!
//! The background lease sweep runs a day apart: only the tests sweep (through
//! [`issuer::Licensing::cull_expired_leases`]), so their counts are not racy.
//!
//! Besides starting and stopping, it has the request helpers the HTTP tests share (`send`, `post`, `admin`,
//! `activate`, `validate`, policies and licenses, machines and events, offline codes) and a few JSON helpers ([`s`],
//! [`ts`], [`rfc3339`], [`assert_error`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use tokio::sync::oneshot;
use verifier::{ActivationRequest, DeactivationCode, KeySet};

/// The product of the licenses and policies the tests make.
pub const PRODUCT: &str = "acme-cad";

/// How the service is configured, beyond its fresh data directory.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `rate_limit_per_second`; 0 switches the limit off.
    pub rate_per_second: u32,
    /// `rate_limit_burst`.
    pub rate_burst: u32,
    /// An admin token given as the environment would (`ISSUER_ADMIN_TOKEN`), besides the one the data dir makes.
    pub env_admin_token: Option<&'static str>,
    /// `trusted_proxies`: addresses or networks whose `X-Forwarded-For` is believed.
    pub trusted_proxies: &'static [&'static str],
    /// The loopback address the server listens on: `127.0.0.1` or `::1` (its clients then come from `::1`).
    pub loopback: &'static str,
}

/// No rate limit, no environment admin token, no trusted proxies.
pub const NO_LIMIT: Options =
    Options { rate_per_second: 0, rate_burst: 0, env_admin_token: None, trusted_proxies: &[], loopback: "127.0.0.1" };

/// A running service and a client for it. Stop it with [`Server::stop`], which checks that it shut down cleanly.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The admin token the fresh data directory created.
    pub admin: String,
    /// A client with a 60-second timeout.
    pub client: Client,
    /// The service's licensing logic, shared with the HTTP API.
    pub licensing: Arc<issuer::Licensing>,
    clock: Arc<dyn issuer::Clock>,
    manual_clock: Option<Arc<issuer::ManualClock>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    dir: tempfile::TempDir,
}

impl Server {
    /// A server on a fresh data directory, reading the system clock.
    pub async fn start(options: Options) -> Server {
        Self::start_with_clock(options, Arc::new(issuer::SystemClock)).await
    }

    /// A server on a fresh data directory, reading a [`issuer::ManualClock`] that starts now (whole seconds); move
    /// it with [`Server::advance`] or [`Server::manual_clock`].
    pub async fn start_with_manual_clock(options: Options) -> Server {
        let clock = Arc::new(issuer::ManualClock::starting_now());
        let mut server = Self::start_with_clock(options, clock.clone()).await;
        server.manual_clock = Some(clock);
        server
    }

    /// A server on a fresh data directory, reading `clock`.
    pub async fn start_with_clock(options: Options, clock: Arc<dyn issuer::Clock>) -> Server {
        Self::start_configured(options, clock, |_| {}).await
    }

    /// A server on a fresh data directory, reading `clock`, with `configure` applied to its config last (webhook
    /// settings, a PostgreSQL database URL). On a database another instance made, the admin token is
    /// `options.env_admin_token`.
    pub async fn start_configured(
        options: Options,
        clock: Arc<dyn issuer::Clock>,
        configure: impl FnOnce(&mut issuer::Config),
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let flags = issuer::Flags::new(None, Some(dir.path().join("data")), None);
        let mut config = issuer::Config::load(None, |_| None, flags).unwrap();
        config.rate_limit_per_second = options.rate_per_second;
        config.rate_limit_burst = options.rate_burst;
        config.admin_token = options.env_admin_token.map(issuer::Secret::new);
        config.trusted_proxies = options.trusted_proxies.iter().map(|ip| ip.parse().unwrap()).collect();
        // The tests sweep by hand: a background sweep at a moment of its choosing would make their counts racy.
        config.lease_sweep_interval_secs = 86_400;
        configure(&mut config);
        let started = issuer::start_with_clock(&config, clock.clone()).await.unwrap();
        let admin = started
            .new_admin_token
            .clone()
            .or(options.env_admin_token.map(String::from))
            .expect("a fresh database creates an admin token");
        let licensing = started.state.licensing.clone();
        let ip: std::net::IpAddr = options.loopback.parse().unwrap();
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(issuer::http::serve(listener, started.state, async {
            let _ = rx.await;
        }));
        let client = Client::builder().timeout(StdDuration::from_secs(60)).build().unwrap();
        Server {
            base: format!("http://{addr}"),
            admin,
            client,
            licensing,
            clock,
            manual_clock: None,
            stop: Some(tx),
            task: Some(task),
            dir,
        }
    }

    /// The service's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The time on the service's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The manual clock the service reads; panics unless started with [`Server::start_with_manual_clock`].
    pub fn manual_clock(&self) -> &issuer::ManualClock {
        self.manual_clock.as_deref().expect("the server was started with a manual clock")
    }

    /// Moves the manual clock on by `by`.
    pub fn advance(&self, by: Duration) {
        self.manual_clock().advance(by);
    }

    /// A request, with the admin token if `admin`: the status and the body as JSON (`Null` when empty, a JSON
    /// string when it is not JSON).
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>, admin: bool) -> (StatusCode, Value) {
        self.request(admin.then_some(self.admin.as_str()), method, path, body).await
    }

    /// A request with another bearer token: the status and the body as JSON.
    pub async fn send_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.request(Some(token), method, path, body).await
    }

    /// A public `POST` carrying `X-Forwarded-For: <forwarded>` (believed only when the server trusts this client).
    pub async fn post_from(&self, forwarded: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.request_with(None, Some(forwarded), Method::POST, path, Some(body)).await
    }

    async fn request(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request_with(token, None, method, path, body).await
    }

    async fn request_with(
        &self,
        token: Option<&str>,
        forwarded: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(forwarded) = forwarded {
            req = req.header("x-forwarded-for", forwarded);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    /// Every event of the audit log (`GET /v1/events`, all pages) matching `query` (e.g. `type=license.created`).
    /// The refusals held for their minute (docs/usage.md) are written first, as a stopping service writes them.
    pub async fn audit_log(&self, query: &str) -> Vec<Value> {
        self.licensing.flush_usage(issuer::Flush::All).await.unwrap();
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/v1/events?limit=1000&after={after}&{query}");
            let (status, page) = self.admin(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{path} -> {page}");
            events.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_i64() {
                Some(next) => after = next,
                None => return events,
            }
        }
    }

    /// A public `POST` without a token.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body), false).await
    }

    /// A request with the admin token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(method, path, body, true).await
    }

    /// `POST /v1/licenses` that must succeed: the license.
    pub async fn create_license(&self, body: Value) -> Value {
        let (status, license) = self.admin(Method::POST, "/v1/licenses", Some(body.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "creating license {body} -> {license}");
        license
    }

    /// `POST /v1/policies` that must succeed: the policy.
    pub async fn create_policy(&self, body: Value) -> Value {
        let (status, policy) = self.admin(Method::POST, "/v1/policies", Some(body.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "creating policy {body} -> {policy}");
        policy
    }

    /// `PATCH /v1/policies/{name}` that must succeed: the policy.
    pub async fn patch_policy(&self, name: &str, body: Value) -> Value {
        let (status, policy) = self.admin(Method::PATCH, &format!("/v1/policies/{name}"), Some(body.clone())).await;
        assert_eq!(status, StatusCode::OK, "patching policy {name} with {body} -> {policy}");
        policy
    }

    /// A license of `policy` with nothing else given; returns (id, key).
    pub async fn license_of(&self, policy: &str) -> (String, String) {
        let license = self.create_license(json!({ "email": "ada@example.com", "policy": policy })).await;
        (s(&license["id"]).to_string(), s(&license["key"]).to_string())
    }

    /// `POST /v1/activate`.
    pub async fn activate(&self, key: &str, fingerprint: &str) -> (StatusCode, Value) {
        self.post("/v1/activate", json!({ "key": key, "fingerprint": fingerprint })).await
    }

    /// An activation that must succeed.
    pub async fn activated(&self, key: &str, fingerprint: &str) -> Value {
        let (status, body) = self.activate(key, fingerprint).await;
        assert_eq!(status, StatusCode::OK, "activating {fingerprint} -> {body}");
        body
    }

    /// `POST /v1/deactivate`.
    pub async fn deactivate(&self, key: &str, fingerprint: &str) -> (StatusCode, Value) {
        self.post("/v1/deactivate", json!({ "key": key, "fingerprint": fingerprint })).await
    }

    /// `POST /v1/validate`, which answers 200 whatever the result: the body.
    pub async fn validate(&self, key: &str, fingerprint: &str) -> Value {
        let (status, body) = self.post("/v1/validate", json!({ "key": key, "fingerprint": fingerprint })).await;
        assert_eq!(status, StatusCode::OK, "validating {fingerprint} -> {body}");
        body
    }

    /// The machines of a license (id or key).
    pub async fn machines(&self, license: &str) -> Vec<Value> {
        let (status, body) = self.admin(Method::GET, &format!("/v1/licenses/{license}/machines"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["machines"].as_array().unwrap().clone()
    }

    /// The fingerprints of the machines of a license.
    pub async fn fingerprints(&self, license: &str) -> BTreeSet<String> {
        self.machines(license).await.iter().map(|m| s(&m["fingerprint"]).to_string()).collect()
    }

    /// Every event of the license, oldest first (all pages).
    pub async fn events(&self, license: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/v1/licenses/{license}/events?limit=1000&after={after}");
            let (status, page) = self.admin(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            all.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_i64() {
                Some(next) => after = next,
                None => return all,
            }
        }
    }

    /// The events of the license of one kind, oldest first.
    pub async fn events_of_kind(&self, license: &str, kind: &str) -> Vec<Value> {
        self.events(license).await.into_iter().filter(|e| e["kind"] == kind).collect()
    }

    /// The public keys the service publishes.
    pub async fn key_set(&self) -> KeySet {
        let (status, keys) = self.send(Method::GET, "/v1/keys", None, false).await;
        assert_eq!(status, StatusCode::OK, "{keys}");
        let lines: Vec<&str> = keys["keys"].as_array().unwrap().iter().map(|k| s(&k["public_key"])).collect();
        KeySet::from_lines(&lines).unwrap()
    }

    /// `POST /v1/offline/activate` of an `ACT1-` request code made as an air-gapped app makes it.
    pub async fn offline_activate(&self, key: &str, fingerprint: &str) -> (StatusCode, Value) {
        let code = ActivationRequest::new(key, fingerprint, "lab-pc").unwrap().to_code().unwrap();
        assert!(code.starts_with("ACT1-"), "{code}");
        self.post("/v1/offline/activate", json!({ "request": code })).await
    }

    /// `POST /v1/offline/deactivate` of the `DEA1-` code an air-gapped app makes for its offline token.
    pub async fn offline_deactivate(&self, token: &str) -> (StatusCode, Value) {
        let code = DeactivationCode::for_token(token, &self.key_set().await).unwrap().to_code();
        assert!(code.starts_with("DEA1-"), "{code}");
        self.post("/v1/offline/deactivate", json!({ "code": code })).await
    }

    /// `n` concurrent activations of fingerprints `{prefix}{i}`: (fingerprint, status, body) of each.
    pub async fn concurrent_checkouts(&self, key: &str, prefix: &str, n: usize) -> Vec<(String, StatusCode, Value)> {
        let requests = (0..n).map(|i| {
            let client = self.client.clone();
            let url = format!("{}/v1/activate", self.base);
            let fingerprint = format!("{prefix}{i}");
            let body = json!({ "key": key, "fingerprint": fingerprint });
            tokio::spawn(async move {
                let resp = client.post(url).json(&body).send().await.unwrap();
                let status = resp.status();
                let body: Value = resp.json().await.unwrap();
                (fingerprint, status, body)
            })
        });
        futures::future::join_all(requests).await.into_iter().map(Result::unwrap).collect()
    }

    /// Shuts the service down and checks that it stopped cleanly within 10 seconds.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(StdDuration::from_secs(10), task).await.unwrap().unwrap().unwrap();
        }
        self.licensing.stop_webhook_delivery().await;
    }
}

/// The string a JSON value must be.
pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// An RFC 3339 time of an answer.
pub fn ts(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(s(v), &Rfc3339).unwrap_or_else(|e| panic!("not an RFC 3339 time: {v}: {e}"))
}

/// A time as an RFC 3339 string, as requests give it.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// Asserts an error answer's status and code, and that it has a message.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str, what: &str) {
    assert_eq!(answer.0, status, "{what}: expected {status} {code}, got {} {}", answer.0, answer.1);
    assert_eq!(answer.1["code"], code, "{what}: expected code {code}, got {}", answer.1);
    assert!(answer.1["message"].is_string(), "{what}: every error has a message: {}", answer.1);
}
