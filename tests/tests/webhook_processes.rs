//! Webhook delivery across processes: a delivery in flight survives kill -9 of the issuer, a graceful stop sends
//! nothing twice, and the maintained Python `standardwebhooks` library verifies a real delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration as StdDuration;

use e2e_tests::process::{spawn_serve, Served};
use e2e_tests::receiver::{Receiver, Script};
use e2e_tests::server::{s, Server, NO_LIMIT};
use e2e_tests::{issuer_binary, pg};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Retries after 50 ms, 100 ms, ...
fn fast_retries(config: &mut issuer::Config) {
    config.webhooks.retry_base = StdDuration::from_millis(50);
    config.webhooks.timeout = StdDuration::from_secs(5);
}

/// `issuer serve` on `data_dir` with the admin token `admin`, a 1 s webhook timeout and fast retries.
async fn spawn(binary: &std::path::Path, data_dir: &std::path::Path, admin: &str) -> Served {
    let env = [("ISSUER_ADMIN_TOKEN", admin), ("ISSUER_WEBHOOK_TIMEOUT", "1s"), ("ISSUER_WEBHOOK_RETRY_BASE", "100ms")];
    spawn_serve(binary, data_dir, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_waits_for_the_attempt_in_flight_so_nothing_is_sent_twice() {
    let Some(binary) = issuer_binary() else {
        assert!(!pg::ci(), "the issuer binary is not built next to the tests");
        eprintln!("SKIPPED: the issuer binary is not built");
        return;
    };
    let receiver = Receiver::start(Script::FailFirst(0)).await;
    // Shorter than the 1 s timeout of the spawned issuer, long enough for the stop to begin meanwhile.
    receiver.set_delay(StdDuration::from_millis(700));
    let dir = tempfile::tempdir().unwrap();
    let admin = "iat_graceful_stop_test_token";
    let client = reqwest::Client::new();
    let mut first = spawn(&binary, &dir.path().join("data"), admin).await;
    let hook: Value = client
        .post(format!("{}/v1/webhooks", first.base))
        .bearer_auth(admin)
        .json(&json!({ "url": receiver.url, "events": ["license.created"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = client
        .post(format!("{}/v1/licenses", first.base))
        .bearer_auth(admin)
        .json(&json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    receiver.wait_until(StdDuration::from_secs(30), |r| !r.is_empty()).await;
    // SIGTERM while the receiver takes its time to answer: the stop waits for the answer and records it.
    let pid = first.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exited = tokio::time::timeout(StdDuration::from_secs(30), first.child.wait()).await.unwrap().unwrap();
    assert!(exited.success(), "{exited:?}");

    let second = spawn(&binary, &dir.path().join("data"), admin).await;
    let listed: Value = client
        .get(format!("{}/v1/webhooks/{}/deliveries", second.base, s(&hook["id"])))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let d = &listed["deliveries"][0];
    assert_eq!(
        (d["state"].clone(), d["attempts"].clone()),
        (json!("delivered"), json!(1)),
        "recorded before the exit: {listed}"
    );
    assert_eq!(receiver.received().len(), 1, "sent once");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_in_flight_survives_kill_9_of_the_issuer() {
    let Some(binary) = issuer_binary() else {
        assert!(!pg::ci(), "the issuer binary is not built next to the tests");
        eprintln!("SKIPPED: the issuer binary is not built");
        return;
    };
    let receiver = Receiver::start(Script::HoldFirst).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = "iat_kill9_test_token";
    let client = reqwest::Client::new();
    let mut first = spawn(&binary, &dir.path().join("data"), admin).await;
    let post = |base: String, path: &'static str, body: Value| {
        let client = client.clone();
        async move {
            let resp = client.post(format!("{base}{path}")).bearer_auth(admin).json(&body).send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, hook) =
        post(first.base.clone(), "/v1/webhooks", json!({ "url": receiver.url, "events": ["license.created"] })).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let (status, _) = post(
        first.base.clone(),
        "/v1/licenses",
        json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // The attempt is in flight: the receiver holds it, unanswered.
    let held = receiver.wait_until(StdDuration::from_secs(30), |r| !r.is_empty()).await[0].clone();
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    // The killed process sent exactly the held attempt: what arrives next comes from the restarted one.
    assert_eq!(receiver.received().len(), 1, "the first process retried before it was killed");

    let second = spawn(&binary, &dir.path().join("data"), admin).await;
    receiver.wait_until(StdDuration::from_secs(60), |r| r.iter().any(|x| x.id == held.id && x.answered == 204)).await;
    // The answer is recorded just after it arrived.
    let path = format!("{}/v1/webhooks/{}/deliveries", second.base, s(&hook["id"]));
    let wait = tokio::time::Instant::now() + StdDuration::from_secs(30);
    let listed = loop {
        let listed: Value = client.get(&path).bearer_auth(admin).send().await.unwrap().json().await.unwrap();
        if listed["deliveries"][0]["state"] != "pending" || tokio::time::Instant::now() > wait {
            break listed;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    };
    let d = &listed["deliveries"][0];
    assert_eq!(
        (d["state"].clone(), d["attempts"].clone(), d["event_id"].to_string()),
        (json!("delivered"), json!(2), held.id.clone()),
        "{listed}"
    );
    assert_eq!(receiver.received().len(), 2, "the held attempt and the one after the restart");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_standardwebhooks_verifies_a_real_delivery() {
    let python = std::env::var("ISSUER_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let receiver = Receiver::start(Script::FailFirst(0)).await;
    let server = Server::start_configured(NO_LIMIT, Arc::new(issuer::SystemClock), fast_retries).await;
    let body = json!({ "url": receiver.url, "events": ["license.created"] });
    let (status, hook) = server.admin(reqwest::Method::POST, "/v1/webhooks", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    server.create_license(json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    let got = receiver.wait_until(StdDuration::from_secs(30), |r| !r.is_empty()).await[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let headers = receiver.headers().remove(0);
    std::fs::write(dir.path().join("headers.json"), serde_json::to_vec(&headers).unwrap()).unwrap();
    std::fs::write(dir.path().join("body"), &got.body).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks/verify.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .arg(s(&hook["secret"]))
        .arg(dir.path().join("headers.json"))
        .arg(dir.path().join("body"))
        .output()
        .await;
    let out = match out {
        Ok(out) if out.status.code() != Some(3) => out,
        other => {
            assert!(!pg::ci(), "Python's standardwebhooks is not available ({python}): {other:?}");
            eprintln!("SKIPPED: Python's standardwebhooks is not installed for {python}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("verified {} license.created", got.id)), "{stdout}");
    assert!(stdout.contains("tampered body refused"), "{stdout}");
    server.stop().await;
}
