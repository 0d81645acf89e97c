//! Several issuer instances on one PostgreSQL database, as behind a load balancer: each with its own data directory
//! but the same database and the same key ring. The slot limit holds across instances, and a change made through one
//! instance is seen at once through another.
//!
//! Needs PostgreSQL (see `e2e_tests::pg`): without it these tests say SKIPPED, and fail when `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e_tests::process::{spawn_serve, Served};
use e2e_tests::{copy_key_ring, issuer_binary, pg};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// One in-process instance: `issuer::start` + `issuer::http::serve` on 127.0.0.1 port 0.
struct Instance {
    base: String,
    new_admin_token: Option<String>,
    licensing: std::sync::Arc<issuer::Licensing>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

async fn start_instance(data_dir: &Path, database_url: &str) -> Instance {
    start_instance_with_clock(data_dir, database_url, std::sync::Arc::new(issuer::SystemClock)).await
}

async fn start_instance_with_clock(
    data_dir: &Path,
    database_url: &str,
    clock: std::sync::Arc<dyn issuer::Clock>,
) -> Instance {
    let flags = issuer::Flags::new(None, Some(data_dir.to_path_buf()), Some(database_url.to_string()));
    let mut config = issuer::Config::load(None, |_| None, flags).unwrap();
    config.rate_limit_per_second = 0;
    config.database_pool_size = 8;
    let started = issuer::start_with_clock(&config, clock).await.unwrap();
    let licensing = started.state.licensing.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(issuer::http::serve(listener, started.state, async {
        let _ = rx.await;
    }));
    Instance {
        base: format!("http://{addr}"),
        new_admin_token: started.new_admin_token,
        licensing,
        stop: Some(tx),
        task: Some(task),
    }
}

impl Instance {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
        }
    }
}

/// A client for many simultaneous requests.
fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(256).build().unwrap()
}

async fn post(client: &Client, url: String, body: Value, admin: Option<&str>) -> (StatusCode, Value) {
    let mut req = client.post(url).json(&body);
    if let Some(token) = admin {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn create_license(client: &Client, base: &str, admin: &str, max_machines: u32) -> Value {
    let body = json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": max_machines });
    let (status, license) = post(client, format!("{base}/v1/licenses"), body, Some(admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{license}");
    license
}

/// 200 simultaneous activations of distinct machines on one 3-slot license, spread round-robin over `bases`.
/// Returns the successful responses; checks every refusal is `too_many_machines`.
async fn activation_storm(client: &Client, bases: &[String], key: &str, round: usize) -> Vec<Value> {
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{}/v1/activate", bases[i % bases.len()]));
            let body = json!({ "key": key, "fingerprint": format!("round{round}-machine{i}") });
            tokio::spawn(async move { post(&client, url, body, None).await })
        })
        .collect();
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::OK, body) => ok.push(body),
            (status, body) => {
                assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("too_many_machines")), "{body}")
            }
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_on_one_database_share_slots_and_see_revocations_at_once() {
    let Some(db) = pg::test_database("multi_instance_in_process").await else { return };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let data: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("data")).collect();

    // The first instance creates the key ring and the admin token; the others get the ring's files and find the
    // token in the database.
    let a = start_instance(&data[0], db.url()).await;
    let admin = a.new_admin_token.clone().expect("the first start on an empty database creates an admin token");
    copy_key_ring(&data[0], &data[1]);
    copy_key_ring(&data[0], &data[2]);
    let b = start_instance(&data[1], db.url()).await;
    let c = start_instance(&data[2], db.url()).await;
    assert!(b.new_admin_token.is_none() && c.new_admin_token.is_none(), "one admin token for the whole deployment");
    let bases = vec![a.base.clone(), b.base.clone(), c.base.clone()];
    let client = client();

    // Every instance publishes the same keys and accepts the admin token.
    let mut key_sets = Vec::new();
    for base in &bases {
        let keys: Value = client.get(format!("{base}/v1/keys")).send().await.unwrap().json().await.unwrap();
        key_sets.push(keys);
    }
    assert!(key_sets.windows(2).all(|w| w[0] == w[1]), "{key_sets:?}");

    let mut first_token = None;
    for round in 0..5 {
        let license = create_license(&client, &bases[round % 3], &admin, 3).await;
        let key = license["key"].as_str().unwrap().to_string();
        let ok = activation_storm(&client, &bases, &key, round).await;
        eprintln!("round {round}: {} of 200 simultaneous activations over 3 instances succeeded", ok.len());
        assert_eq!(ok.len(), 3, "round {round}: exactly the 3 slots are given out");
        let id = license["id"].as_str().unwrap();
        let (_, machines) = {
            let resp = client
                .get(format!("{}/v1/licenses/{id}/machines", bases[(round + 1) % 3]))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        };
        assert_eq!(machines["machines"].as_array().map(Vec::len), Some(3), "{machines}");
        if first_token.is_none() {
            first_token = Some((id.to_string(), ok[0]["token"].as_str().unwrap().to_string()));
        }
    }

    // A revocation through A is seen by a refresh through B and C at once.
    let (id, token) = first_token.unwrap();
    let (status, refreshed) = post(&client, format!("{}/v1/refresh", bases[1]), json!({ "token": token }), None).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let (status, _) = post(&client, format!("{}/v1/licenses/{id}/revoke", bases[0]), json!({}), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    for base in &bases[1..] {
        let (status, refused) = post(&client, format!("{base}/v1/refresh"), json!({ "token": token }), None).await;
        assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("revoked")), "{refused}");
    }

    for instance in [a, b, c] {
        instance.stop().await;
    }
}

/// A floating policy's seats on three instances sharing one PostgreSQL database and one (manual) clock: 200
/// simultaneous checkouts give exactly the seats; once the leases end, the next 200 culls the dead machines in their
/// own transactions and again give exactly the seats; sweeps of the three instances at once cull each machine once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floating_seats_and_lease_culling_are_exact_across_three_instances_on_postgres() {
    let Some(db) = pg::test_database("multi_instance_floating").await else { return };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let data: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("data")).collect();
    let clock = std::sync::Arc::new(issuer::ManualClock::starting_now());
    let a = start_instance_with_clock(&data[0], db.url(), clock.clone()).await;
    let admin = a.new_admin_token.clone().unwrap();
    copy_key_ring(&data[0], &data[1]);
    copy_key_ring(&data[0], &data[2]);
    let b = start_instance_with_clock(&data[1], db.url(), clock.clone()).await;
    let c = start_instance_with_clock(&data[2], db.url(), clock.clone()).await;
    let bases = vec![a.base.clone(), b.base.clone(), c.base.clone()];
    let client = client();

    let policy = json!({ "name": "lab", "product": "acme-cad", "max_machines": 4, "floating": true, "lease": "10m" });
    let (status, body) = post(&client, format!("{}/v1/policies", bases[1]), policy, Some(&admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let body = json!({ "email": "lab@example.com", "policy": "lab" });
    let (status, license) = post(&client, format!("{}/v1/licenses", bases[2]), body, Some(&admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{license}");
    let (id, key) = (license["id"].as_str().unwrap().to_string(), license["key"].as_str().unwrap().to_string());

    let culled_events = || async {
        let events: Value = client
            .get(format!("{}/v1/licenses/{id}/events?limit=1000", bases[0]))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        events["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "machine.culled").count()
    };
    let ok = activation_storm(&client, &bases, &key, 0).await;
    eprintln!("floating: {} of 200 simultaneous checkouts over 3 instances succeeded", ok.len());
    assert_eq!(ok.len(), 4, "exactly the 4 seats");
    assert!(ok.iter().all(|t| t["lease_expires_at"].is_string()), "{ok:?}");

    clock.advance(time::Duration::minutes(11));
    let ok = activation_storm(&client, &bases, &key, 1).await;
    eprintln!("floating after the leases ended: {} of 200 succeeded", ok.len());
    assert_eq!(ok.len(), 4, "the ended leases returned their seats, and only those");
    assert_eq!(culled_events().await, 4, "each dead machine culled once, by an activation");

    clock.advance(time::Duration::minutes(11));
    let sweeps: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|i| {
            let licensing = i.licensing.clone();
            tokio::spawn(async move { licensing.cull_expired_leases().await.unwrap() })
        })
        .collect();
    let mut swept = 0;
    for s in sweeps {
        swept += s.await.unwrap();
    }
    assert_eq!(swept, 4, "three sweeps at once cull the 4 machines once between them");
    assert_eq!(culled_events().await, 8);

    for instance in [a, b, c] {
        instance.stop().await;
    }
}

/// `issuer serve` on `data_dir` and the shared database.
async fn spawn_process(binary: &Path, data_dir: &Path, database_url: &str) -> Served {
    spawn_serve(binary, data_dir, &[("ISSUER_DATABASE_URL", database_url), ("ISSUER_DATABASE_POOL_SIZE", "8")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_issuer_processes_on_one_database_give_out_exactly_the_slots() {
    let Some(binary) = issuer_binary() else {
        let message = "the issuer binary is not built next to this test (run `cargo test -p issuer -p e2e-tests`)";
        assert!(!pg::ci(), "{message}");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("SKIPPED: {message}\n").as_bytes());
        return;
    };
    let Some(db) = pg::test_database("multi_instance_processes").await else { return };
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let data: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("data")).collect();
    let first = spawn_process(&binary, &data[0], db.url()).await;
    let admin = first.admin_token.clone().expect("the first process creates the admin token");
    copy_key_ring(&data[0], &data[1]);
    let second = spawn_process(&binary, &data[1], db.url()).await;
    assert!(second.admin_token.is_none());
    let bases = vec![first.base.clone(), second.base.clone()];
    let client = client();
    for round in 0..3 {
        let license = create_license(&client, &bases[round % 2], &admin, 3).await;
        let key = license["key"].as_str().unwrap().to_string();
        let ok = activation_storm(&client, &bases, &key, round).await;
        eprintln!("round {round}: {} of 200 simultaneous activations over 2 processes succeeded", ok.len());
        assert_eq!(ok.len(), 3, "round {round}");
        if round == 0 {
            let id = license["id"].as_str().unwrap();
            let token = ok[0]["token"].as_str().unwrap();
            let (status, _) =
                post(&client, format!("{}/v1/licenses/{id}/revoke", bases[0]), json!({}), Some(&admin)).await;
            assert_eq!(status, StatusCode::OK);
            let (status, refused) =
                post(&client, format!("{}/v1/refresh", bases[1]), json!({ "token": token }), None).await;
            assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("revoked")), "{refused}");
        }
    }
}

/// The race an outside test found: on a suspended license, a revoke and a reinstate (and a suspend) sent at the same
/// moment, here to two `issuer serve` processes on one database, 300 rounds. A revoke answered 200 must leave the
/// license revoked; the request that lost to it is answered 409 `status_conflict` with the current state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_racing_a_reinstate_on_two_processes_is_never_undone() {
    let Some(binary) = issuer_binary() else {
        let message = "the issuer binary is not built next to this test (run `cargo test -p issuer -p e2e-tests`)";
        assert!(!pg::ci(), "{message}");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("SKIPPED: {message}\n").as_bytes());
        return;
    };
    let Some(db) = pg::test_database("revoke_race_processes").await else { return };
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let data: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("data")).collect();
    let first = spawn_process(&binary, &data[0], db.url()).await;
    let admin = first.admin_token.clone().expect("the first process creates the admin token");
    copy_key_ring(&data[0], &data[1]);
    let second = spawn_process(&binary, &data[1], db.url()).await;
    let bases = [first.base.clone(), second.base.clone()];
    let client = client();
    let (mut undone, mut lost_with_409) = (0, 0);
    const ROUNDS: usize = 300;
    for round in 0..ROUNDS {
        let license = create_license(&client, &bases[round % 2], &admin, 1).await;
        let id = license["id"].as_str().unwrap().to_string();
        let (status, _) =
            post(&client, format!("{}/v1/licenses/{id}/suspend", bases[0]), json!({}), Some(&admin)).await;
        assert_eq!(status, StatusCode::OK);
        let send = |base: &str, action: &str| {
            let (client, url, admin) = (client.clone(), format!("{base}/v1/licenses/{id}/{action}"), admin.clone());
            tokio::spawn(async move { post(&client, url, json!({}), Some(&admin)).await })
        };
        let revoke = send(&bases[round % 2], "revoke");
        let reinstate = send(&bases[(round + 1) % 2], "reinstate");
        let suspend = send(&bases[round % 2], "suspend");
        let (status, revoked) = revoke.await.unwrap();
        assert_eq!((status, revoked["status"].as_str()), (StatusCode::OK, Some("revoked")), "round {round}");
        for (status, body) in [reinstate.await.unwrap(), suspend.await.unwrap()] {
            match status {
                StatusCode::OK => assert_ne!(body["status"], "revoked", "round {round}: {body}"),
                StatusCode::CONFLICT => {
                    assert_eq!(
                        (body["code"].as_str(), body["status"].as_str()),
                        (Some("status_conflict"), Some("revoked"))
                    );
                    lost_with_409 += 1;
                }
                other => panic!("round {round}: {other} {body}"),
            }
        }
        let resp = client.get(format!("{}/v1/licenses/{id}", bases[(round + 1) % 2])).bearer_auth(&admin);
        let now: Value = resp.send().await.unwrap().json().await.unwrap();
        if now["status"] != "revoked" {
            undone += 1;
        }
    }
    eprintln!("{undone} of {ROUNDS} answered revocations undone; {lost_with_409} racing requests answered 409");
    assert_eq!(undone, 0);
}

/// `/healthz` asks the database: an instance whose database stops answering reports 503 `store_unavailable` (so the
/// load balancer takes it out), and 200 again once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_fails_while_the_database_refuses_connections() {
    use sqlx::Connection as _;
    let Some(db) = pg::test_database("health_check").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let instance = start_instance(&dir.path().join("data"), db.url()).await;
    let client = Client::new();
    let health = || async { client.get(format!("{}/healthz", instance.base)).send().await.unwrap() };
    assert_eq!(health().await.status(), StatusCode::OK);

    // Cut the instance off: no new connections to its database, and its open ones ended.
    let name = db.name();
    // ALTER DATABASE needs a connection to another database of the same server.
    let maintenance_url = db.url().replacen(&format!("/{name}"), "/postgres", 1);
    let mut admin = sqlx::PgConnection::connect(&maintenance_url).await.unwrap();
    sqlx::raw_sql(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")).execute(&mut admin).await.unwrap();
    sqlx::raw_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let down = health().await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.json::<Value>().await.unwrap()["code"], "store_unavailable");

    sqlx::raw_sql(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).execute(&mut admin).await.unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if health().await.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the instance reports healthy again once the database accepts connections");
    instance.stop().await;
}

/// PostgreSQL refuses NUL characters in text and jsonb; a client sending one gets a 422 naming the field, never a
/// 500 (SQLite would have stored them, so only this backend shows the difference).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_from_clients_are_refused_not_a_server_error() {
    let Some(db) = pg::test_database("nul_characters").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let instance = start_instance(&dir.path().join("data"), db.url()).await;
    let admin = instance.new_admin_token.clone().unwrap();
    let client = Client::new();
    let base = instance.base.clone();
    let body = json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 1,
                       "metadata": { "order": "A\u{0}1", "nested": { "k\u{0}": 1 } } });
    let (status, error) = post(&client, format!("{base}/v1/licenses"), body, Some(&admin)).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("metadata"), "{error}");

    let license = create_license(&client, &base, &admin, 1).await;
    let id = license["id"].as_str().unwrap();
    let patch = client
        .patch(format!("{base}/v1/licenses/{id}"))
        .bearer_auth(&admin)
        .json(&json!({ "metadata": { "note": "\u{0}" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let list = client.get(format!("{base}/v1/licenses?email=a%00b")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(list.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let remove =
        client.delete(format!("{base}/v1/licenses/{id}/machines/m%00x")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(remove.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Policy names: a NUL in the path or in a license's `policy` names no policy (PostgreSQL would refuse the text).
    for method in [reqwest::Method::GET, reqwest::Method::PATCH, reqwest::Method::DELETE] {
        let mut req = client.request(method.clone(), format!("{base}/v1/policies/pro%00")).bearer_auth(&admin);
        if method == reqwest::Method::PATCH {
            req = req.json(&json!({ "max_machines": 2 }));
        }
        let resp = req.send().await.unwrap();
        let (status, body) = (resp.status(), resp.json::<Value>().await.unwrap());
        assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("policy_not_found")), "{method}");
    }
    let body = json!({ "email": "ada@example.com", "policy": "pro\u{0}" });
    let (status, error) = post(&client, format!("{base}/v1/licenses"), body, Some(&admin)).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::NOT_FOUND, Some("policy_not_found")), "{error}");
    let body = json!({ "name": "pro", "product": "acme\u{0}", "max_machines": 1 });
    let (status, error) = post(&client, format!("{base}/v1/policies"), body, Some(&admin)).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")), "{error}");
    let body = json!({ "name": "pro", "product": "acme-cad", "max_machines": 1, "entitlements": ["a\u{0}"] });
    let (status, error) = post(&client, format!("{base}/v1/policies"), body, Some(&admin)).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")), "{error}");
    instance.stop().await;
}

/// Config for an in-process instance on `database_url` with data directory `data_dir`.
fn instance_config(data_dir: &Path, database_url: &str) -> issuer::Config {
    let flags = issuer::Flags::new(None, Some(data_dir.to_path_buf()), Some(database_url.to_string()));
    let mut config = issuer::Config::load(None, |_| None, flags).unwrap();
    config.rate_limit_per_second = 0;
    config
}

async fn active_key(client: &Client, base: &str) -> String {
    let keys: Value = client.get(format!("{base}/v1/keys")).send().await.unwrap().json().await.unwrap();
    let active = keys["keys"].as_array().unwrap().iter().find(|k| k["status"] == "active").unwrap();
    active["key_id"].as_str().unwrap().to_string()
}

/// One key ring for every instance on one store: a second instance with a fresh data directory is refused (and
/// creates no key); with the ring copied it serves; after a rotation recorded on A, B takes the new ring once its
/// files arrive; a ring rotated on B without being recorded is never used to sign, and B refuses to restart on it.
async fn one_key_ring_for_every_instance(database_url: &str) {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a_dir, b_dir) = (dirs[0].path().join("data"), dirs[1].path().join("data"));
    let a = start_instance(&a_dir, database_url).await;
    let admin = a.new_admin_token.clone().unwrap();

    let refused = issuer::start(&instance_config(&b_dir, database_url)).await.unwrap_err();
    assert!(matches!(refused, issuer::StartError::KeyRingMissing { .. }), "{refused}");
    assert!(refused.to_string().contains("copy the keys/ directory"), "{refused}");
    assert!(!b_dir.join(issuer::KEYS_DIR).join("ring.txt").exists(), "no key of its own was created");

    copy_key_ring(&a_dir, &b_dir);
    let b = start_instance(&b_dir, database_url).await;
    let client = client();
    let first_key = active_key(&client, &b.base).await;
    assert_eq!(active_key(&client, &a.base).await, first_key);

    // `issuer keys rotate` on A: the files, then the record.
    let a_keys = a_dir.join(issuer::KEYS_DIR);
    let mut ring = keys::KeyRing::open(&a_keys).unwrap();
    let old_key = ring.active().key_id().to_string();
    let rotated = ring.rotate().unwrap().to_string();
    ring.save(&a_keys).unwrap();
    let records = issuer::recorded_keys_of(&ring);
    let store = issuer::open_store(&instance_config(&a_dir, database_url)).await.unwrap();
    let at = time::OffsetDateTime::now_utc();
    let _: bool = issuer::StoreExt::transact(&*store, move |tx| {
        let how = issuer::RecordKeys::Update { expect_active: vec![old_key] };
        Box::pin(async move { tx.record_keys(&records, how, at).await })
    })
    .await
    .unwrap();
    // B restarted now, before the new files reach it, starts (with a warning) and signs with the retired, still
    // trusted key: a restart during a rotation is not an outage.
    b.stop().await;
    let b = start_instance(&b_dir, database_url).await;
    assert_eq!(active_key(&client, &b.base).await, first_key);
    // A's watcher takes its new files (every 5 s).
    for _ in 0..200 {
        if active_key(&client, &a.base).await == rotated {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(active_key(&client, &a.base).await, rotated);
    let license = create_license(&client, &a.base, &admin, 2).await;
    let key = license["key"].as_str().unwrap();
    let (status, activated) =
        post(&client, format!("{}/v1/activate", a.base), json!({ "key": key, "fingerprint": "m1" }), None).await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    let token = activated["token"].as_str().unwrap().to_string();

    // The vendor distributes the ring to B; a refresh with a token of the new key makes B reload at once.
    copy_key_ring(&a_dir, &b_dir);
    let (status, refreshed) = post(&client, format!("{}/v1/refresh", b.base), json!({ "token": token }), None).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(active_key(&client, &b.base).await, rotated, "B signs with the recorded key");

    // A ring rotated on B and never recorded: B does not take it, also when shown a token of its key.
    let b_keys = b_dir.join(issuer::KEYS_DIR);
    let mut rogue = keys::KeyRing::open(&b_keys).unwrap();
    rogue.rotate().unwrap();
    rogue.save(&b_keys).unwrap();
    let claims = verifier::UntrustedToken::parse(&token).unwrap().untrusted_claims().unwrap();
    let rogue_token = rogue.sign(&claims).unwrap();
    let (status, body) = post(&client, format!("{}/v1/refresh", b.base), json!({ "token": rogue_token }), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_token")), "{body}");
    assert_eq!(active_key(&client, &b.base).await, rotated, "B still signs with the recorded key");
    let (_, again) = post(&client, format!("{}/v1/refresh", b.base), json!({ "token": token }), None).await;
    let signed_by = verifier::UntrustedToken::parse(again["token"].as_str().unwrap()).unwrap().key_id().to_string();
    assert_eq!(signed_by, rotated, "tokens from B are signed by the recorded key");

    // Restarting B on the unrecorded ring is refused, naming both keys.
    b.stop().await;
    let refused = issuer::start(&instance_config(&b_dir, database_url)).await.unwrap_err();
    assert!(matches!(refused, issuer::StartError::KeyRingMismatch { .. }), "{refused}");
    assert!(refused.to_string().contains(&rotated), "{refused}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_ring_for_every_instance_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    one_key_ring_for_every_instance(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_ring_for_every_instance_on_postgres() {
    let Some(db) = pg::test_database("one_key_ring").await else { return };
    one_key_ring_for_every_instance(db.url()).await;
}

/// A store used by a version that recorded no ring (licenses, an admin token, no `signing_keys` row): an instance
/// without a ring is refused there and makes no key; the instance with the ring records it on start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_used_store_without_a_recorded_ring_gets_no_new_key() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let url = format!("sqlite://{}", db.display());
    let (a_dir, c_dir) = (dir.path().join("a"), dir.path().join("c"));
    let a = start_instance(&a_dir, &url).await;
    let client = client();
    create_license(&client, &a.base, a.new_admin_token.as_deref().unwrap(), 1).await;
    let key = active_key(&client, &a.base).await;
    a.stop().await;
    // As a store from before the record.
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM signing_keys").execute(&mut conn).await.unwrap();
    drop(conn);

    let refused = issuer::start(&instance_config(&c_dir, &url)).await.unwrap_err();
    assert!(matches!(refused, issuer::StartError::KeyRingUnrecorded { .. }), "{refused}");
    assert!(!c_dir.join(issuer::KEYS_DIR).join("ring.txt").exists(), "no key was made");
    let a = start_instance(&a_dir, &url).await;
    assert_eq!(active_key(&client, &a.base).await, key);
    let store = issuer::open_store(&instance_config(&a_dir, &url)).await.unwrap();
    let recorded = store.recorded_keys().await.unwrap();
    assert_eq!(recorded.iter().find(|k| k.active).map(|k| k.key_id.clone()), Some(key), "A recorded its ring");
    a.stop().await;
}
