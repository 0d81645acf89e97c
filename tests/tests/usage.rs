//! Usage instead of a row per validation (docs/usage.md): daily counts and per-machine counters over HTTP, refused
//! validations recorded once per license, code and minute, the range rules of `GET /v1/licenses/{id}/usage`,
//! retention, and what survives kill -9 of the issuer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration as StdDuration;

use e2e_tests::process::spawn_serve;
use e2e_tests::server::{assert_error, s, Server, NO_LIMIT};
use e2e_tests::{issuer_binary, pg};
use issuer::Flush;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use time::Duration;

fn license_body(max_machines: u32) -> Value {
    json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": max_machines })
}

async fn usage(server: &Server, id: &str, query: &str) -> Value {
    let (status, body) = server.admin(Method::GET, &format!("/v1/licenses/{id}/usage{query}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validations_are_counted_per_day_and_machine_and_refusals_logged_once_a_minute() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    // At the start of the next UTC day, so the steps below stay in one minute and one day.
    let next_day = server.now().date().next_day().unwrap().midnight().assume_utc();
    server.advance(next_day - server.now());
    let license = server.create_license(license_body(2)).await;
    let (id, key) = (s(&license["id"]).to_string(), s(&license["key"]).to_string());
    server.activated(&key, "machine-a").await;
    server.activated(&key, "machine-b").await;
    for _ in 0..3 {
        assert_eq!(server.validate(&key, "machine-a").await["code"], "VALID");
    }
    assert_eq!(server.validate(&key, "machine-b").await["code"], "VALID");
    for fp in ["guess-1", "guess-2", "guess-3", "guess-4", "guess-5"] {
        assert_eq!(server.validate(&key, fp).await["code"], "NOT_ACTIVATED");
    }
    server.licensing.flush_usage(Flush::Due).await.unwrap();
    assert!(server.events_of_kind(&id, "validated").await.is_empty(), "the minute is not over");

    let machines = server.machines(&id).await;
    let count = |fp: &str| machines.iter().find(|m| m["fingerprint"] == fp).unwrap()["validation_count"].clone();
    assert_eq!((count("machine-a"), count("machine-b")), (json!(3), json!(1)));
    assert!(machines.iter().all(|m| m["last_validated_at"].is_string()), "{machines:?}");
    let (_, shown) = server.admin(Method::GET, &format!("/v1/licenses/{id}"), None).await;
    assert_eq!(shown["validation_count"], 9, "every validation of the license, refused ones too: {shown}");

    // The minute ends: one event for the five refusals, with the first one's fingerprint.
    server.advance(Duration::seconds(61));
    assert_eq!(server.validate(&key, "guess-6").await["code"], "NOT_ACTIVATED");
    server.licensing.flush_usage(Flush::Due).await.unwrap();
    let refused = server.events_of_kind(&id, "validated").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["detail"]["code"], "NOT_ACTIVATED");
    assert_eq!(refused[0]["detail"]["count"], 5);
    assert_eq!(refused[0]["fingerprint"], "guess-1");
    assert_eq!(refused[0]["client_ip"], "127.0.0.1");
    let (first, last) = (&refused[0]["detail"]["first_seen"], &refused[0]["detail"]["last_seen"]);
    assert_eq!(first.as_i64().unwrap(), next_day.unix_timestamp(), "Unix seconds, as every time in details");
    assert!(first.as_i64() <= last.as_i64());
    // Another code of the same minute is an event of its own; the stopping service writes the open minute.
    let (status, _) = server.admin(Method::POST, &format!("/v1/licenses/{id}/suspend"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.validate(&key, "machine-a").await["code"], "SUSPENDED");
    server.licensing.flush_usage(Flush::All).await.unwrap();
    let refused = server.events_of_kind(&id, "validated").await;
    let codes: Vec<(&str, &Value)> = refused.iter().map(|e| (s(&e["detail"]["code"]), &e["detail"]["count"])).collect();
    assert_eq!(codes, [("NOT_ACTIVATED", &json!(5)), ("NOT_ACTIVATED", &json!(1)), ("SUSPENDED", &json!(1))]);

    // A day later: the daily counts, every day of the range, zeros included.
    server.advance(Duration::days(1));
    assert_eq!(server.validate(&key, "machine-b").await["code"], "SUSPENDED");
    let today = server.now().date();
    let yesterday = today.previous_day().unwrap();
    let answer = usage(&server, &id, &format!("?from={yesterday}&to={today}")).await;
    assert_eq!(answer["license_id"], id.as_str());
    assert_eq!(
        (answer["from"].clone(), answer["to"].clone()),
        (json!(yesterday.to_string()), json!(today.to_string()))
    );
    assert_eq!(answer["validation_count"], 12);
    let days = answer["days"].as_array().unwrap();
    let row = |d: &Value| (d["validations"].clone(), d["activations"].clone(), d["machines"].clone());
    assert_eq!(row(&days[0]), (json!(11), json!(2), json!(2)), "{answer}");
    assert_eq!(row(&days[1]), (json!(1), json!(0), json!(1)), "machine-b again, a new day: {answer}");
    let default = usage(&server, &id, "").await;
    assert_eq!(default["days"].as_array().unwrap().len(), 30, "the last 30 days by default");
    assert_eq!(default["to"], json!(today.to_string()));
    assert_eq!(default["days"][0]["validations"], 0);

    // Ranges and dates that are not.
    for (query, what) in [
        (format!("?from={today}&to={yesterday}"), "from after to"),
        ("?from=2026-13-01".to_string(), "no such month"),
        ("?from=yesterday".to_string(), "not a date"),
        (format!("?from={}&to={today}", today - Duration::days(366)), "367 days"),
    ] {
        let answer = server.admin(Method::GET, &format!("/v1/licenses/{id}/usage{query}"), None).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", what);
    }
    let answer = usage(&server, &id, &format!("?from={}&to={today}", today - Duration::days(365))).await;
    assert_eq!(answer["days"].as_array().unwrap().len(), 366, "366 days is the most");
    let answer = server.admin(Method::GET, "/v1/licenses/0190f4b6-0000-7000-8000-000000000000/usage", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "license_not_found", "unknown license");
    let (status, _) = server.admin(Method::GET, &format!("/v1/licenses/{id}/usage?days=3"), None).await;
    assert!(status.is_client_error(), "an unknown parameter: {status}");
    let (status, _) = server.send(Method::GET, &format!("/v1/licenses/{id}/usage"), None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Retention takes the daily rows of days before it, with the events.
    server.advance(Duration::days(401));
    server.licensing.prune_events().await.unwrap();
    let old = usage(&server, &id, &format!("?from={yesterday}&to={today}")).await;
    assert!(old["days"].as_array().unwrap().iter().all(|d| d["validations"] == 0), "{old}");
    assert_eq!(old["validation_count"], 12, "the license's total stays");
    server.stop().await;
}

/// A domain license's validation counts for the activation that covers the host: its own binding, else the most
/// specific wildcard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_domain_validation_counts_for_the_binding_that_covers_the_host() {
    let server = Server::start(NO_LIMIT).await;
    let body = json!({ "email": "web@example.com", "product": "acme-cad", "max_machines": 3, "kind": "domain" });
    let license = server.create_license(body).await;
    let (id, key) = (s(&license["id"]).to_string(), s(&license["key"]).to_string());
    server.activated(&key, "*.example.com").await;
    server.activated(&key, "*.shop.example.com").await;
    server.activated(&key, "example.com").await;
    for host in ["a.shop.example.com", "b.shop.example.com", "www.example.com", "example.com", "example.com"] {
        assert_eq!(server.validate(&key, host).await["code"], "VALID", "{host}");
    }
    let answer = usage(&server, &id, "").await;
    // (Summed over the days: the run may cross midnight.)
    let sum = |f: &str| -> u64 { answer["days"].as_array().unwrap().iter().map(|d| d[f].as_u64().unwrap()).sum() };
    assert_eq!(sum("validations"), 5, "{answer}");
    assert!((3..=6).contains(&sum("machines")), "three bindings, each once a day: {answer}");
    let machines = server.machines(&id).await;
    let count = |binding: &str| {
        let m =
            machines.iter().find(|m| m["fingerprint"] == binding).unwrap_or_else(|| panic!("{binding} {machines:?}"));
        m["validation_count"].clone()
    };
    assert_eq!(count("domain:*.shop.example.com"), json!(2), "the most specific wildcard");
    assert_eq!(count("domain:*.example.com"), json!(1));
    assert_eq!(count("domain:example.com"), json!(2), "the host's own binding before any wildcard");
    server.stop().await;
}

/// A crash loses at most the last second of counts, never an acknowledged activation or deactivation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_at_most_the_last_second_of_counts_and_no_change() {
    let Some(binary) = issuer_binary() else {
        assert!(!pg::ci(), "the issuer binary is not built next to the tests");
        eprintln!("SKIPPED: the issuer binary is not built");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = "iat_usage_kill9_token";
    let env = [("ISSUER_ADMIN_TOKEN", admin)];
    let client = reqwest::Client::new();
    let call = |base: String, method: Method, path: String, body: Option<Value>| {
        let client = client.clone();
        async move {
            let mut request = client.request(method, format!("{base}{path}")).bearer_auth(admin);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let resp = request.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let mut first = spawn_serve(&binary, &data, &env).await;
    let base = first.base.clone();
    let (status, license) = call(base.clone(), Method::POST, "/v1/licenses".into(), Some(license_body(3))).await;
    assert_eq!(status, StatusCode::CREATED, "{license}");
    let (id, key) = (s(&license["id"]).to_string(), s(&license["key"]).to_string());
    let post = |path: &'static str, fp: &'static str| {
        call(base.clone(), Method::POST, path.to_string(), Some(json!({ "key": key, "fingerprint": fp })))
    };
    for fp in ["m1", "m2"] {
        assert_eq!(post("/v1/activate", fp).await.0, StatusCode::OK);
    }
    const BEFORE: u64 = 20;
    for _ in 0..BEFORE {
        assert_eq!(post("/v1/validate", "m1").await.1["code"], "VALID");
    }
    // More than a flush interval: the counts so far are written.
    tokio::time::sleep(issuer::USAGE_FLUSH_INTERVAL * 2 + StdDuration::from_millis(500)).await;
    const AFTER: u64 = 7;
    for _ in 0..AFTER {
        assert_eq!(post("/v1/validate", "m1").await.1["code"], "VALID");
    }
    // Changes acknowledged just before the kill are kept whatever the counters lose.
    assert_eq!(post("/v1/deactivate", "m2").await.0, StatusCode::OK);
    assert_eq!(post("/v1/activate", "m3").await.0, StatusCode::OK);
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();

    let second = spawn_serve(&binary, &data, &env).await;
    let base = second.base.clone();
    let (status, machines) = call(base.clone(), Method::GET, format!("/v1/licenses/{id}/machines"), None).await;
    assert_eq!(status, StatusCode::OK);
    let fps: Vec<&str> = machines["machines"].as_array().unwrap().iter().map(|m| s(&m["fingerprint"])).collect();
    assert_eq!(fps, ["m1", "m3"], "the deactivation and the activation before the kill are stored");
    let (status, usage) = call(base.clone(), Method::GET, format!("/v1/licenses/{id}/usage"), None).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let counted = usage["validation_count"].as_u64().unwrap();
    assert!((BEFORE..=BEFORE + AFTER).contains(&counted), "{counted} of {BEFORE} flushed + {AFTER} not yet");
    // (Summed over the days: the run may cross midnight.)
    let sum =
        |field: &str| -> u64 { usage["days"].as_array().unwrap().iter().map(|d| d[field].as_u64().unwrap()).sum() };
    assert_eq!(sum("validations"), counted);
    assert!(sum("activations") >= 2, "the two flushed activations: {usage}");
    let m1 = machines["machines"].as_array().unwrap().iter().find(|m| m["fingerprint"] == "m1").unwrap().clone();
    assert!((BEFORE..=BEFORE + AFTER).contains(&m1["validation_count"].as_u64().unwrap()), "{m1}");
}
