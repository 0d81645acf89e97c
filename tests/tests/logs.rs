//! `ISSUER_LOG_FORMAT=json`: one JSON object a line on stderr, every line of a request carrying its request id,
//! which the answer's `x-request-id` names (a client's own kept when it is plain, replaced otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_request_id_of_every_line_of_a_request() {
    let Some(binary) = e2e_tests::issuer_binary() else {
        assert!(!e2e_tests::pg::ci(), "the issuer binary is not built next to the tests");
        eprintln!("SKIPPED: the issuer binary is not built");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = tokio::process::Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ISSUER_DATA_DIR", dir.path().join("data"))
        .env("ISSUER_LOG_FORMAT", "json")
        .env("ISSUER_LOG", "info,issuer=debug")
        .env_remove("ISSUER_ADMIN_TOKEN")
        .env_remove("ISSUER_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("issuer listening on http://") {
                return format!("http://{}", addr.trim());
            }
        }
        panic!("issuer exited before listening");
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let chosen = client.get(format!("{base}/v1/nope")).header("x-request-id", "lb-7f3a.1").send().await.unwrap();
    assert_eq!(chosen.headers()["x-request-id"], "lb-7f3a.1", "a plain client id is kept");
    let replaced = client.get(format!("{base}/healthz")).header("x-request-id", "has space").send().await.unwrap();
    let new_id = replaced.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(new_id.len() == 32 && new_id.bytes().all(|b| b.is_ascii_hexdigit()), "{new_id}");
    // A path that holds a license key: the log names the route's template, never the key.
    let keyed = client.get(format!("{base}/v1/licenses/7KQ3M-9XW2T-H4RVD-PNC8J")).send().await.unwrap();
    assert_eq!(keyed.status(), 401);
    // Stop it gracefully, so every line is written.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");

    let text = std::fs::read_to_string(&log).unwrap();
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(entries.iter().any(|e| e["fields"]["message"] == "starting"), "{text}");
    let of = |id: &str| entries.iter().filter(|e| e["span"]["request_id"] == id).cloned().collect::<Vec<_>>();
    let first = of("lb-7f3a.1");
    assert!(!first.is_empty(), "no line names the client's id: {text}");
    assert!(first.iter().all(|e| e["span"]["route"] == "(no route)" && e["span"]["method"] == "GET"));
    assert!(first.iter().any(|e| e["fields"]["message"] == "answered" && e["fields"]["status"] == 404), "{first:?}");
    let second = of(&new_id);
    assert!(second.iter().any(|e| e["fields"]["status"] == 200 && e["span"]["route"] == "/healthz"), "{second:?}");
    assert!(entries.iter().all(|e| e["level"].is_string() && e["timestamp"].is_string()));
    assert!(!text.contains("7KQ3M"), "a license key reached the log");
    assert!(entries.iter().any(|e| e["span"]["route"] == "/v1/licenses/{id}"), "{text}");
}

#[test]
fn an_unknown_log_format_stops_the_start_with_a_clear_error() {
    let Some(binary) = e2e_tests::issuer_binary() else {
        assert!(!e2e_tests::pg::ci(), "the issuer binary is not built next to the tests");
        eprintln!("SKIPPED: the issuer binary is not built");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ISSUER_DATA_DIR", dir.path().join("data"))
        .env("ISSUER_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("ISSUER_LOG_FORMAT") && err.contains("xml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_validations_and_activations_behind_the_admin_token() {
    use e2e_tests::server::{Server, NO_LIMIT, PRODUCT};
    let server = Server::start(NO_LIMIT).await;
    let license = server
        .create_license(serde_json::json!({ "email": "a@example.com", "product": PRODUCT, "max_machines": 1 }))
        .await;
    let key = license["key"].as_str().unwrap();
    server.activated(key, "fp-1").await;
    server.activated(key, "fp-1").await;
    let _ = server.activate(key, "fp-2").await;
    server.validate(key, "fp-1").await;
    server.validate(key, "nope").await;
    let unauthorized = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    let (_, reader) = server
        .admin(reqwest::Method::POST, "/v1/admin-tokens", Some(serde_json::json!({ "label": "prom", "scope": "read" })))
        .await;
    let scraped = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(reader["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200, "a read token may scrape");
    assert!(scraped.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = scraped.text().await.unwrap();
    for line in [
        r#"issuer_activations_total{outcome="new"} 1"#,
        r#"issuer_activations_total{outcome="existing"} 1"#,
        r#"issuer_activations_total{outcome="refused"} 1"#,
        r#"issuer_validations_total{code="VALID"} 1"#,
        r#"issuer_validations_total{code="NOT_ACTIVATED"} 1"#,
        r#"issuer_http_requests_total{route="/v1/activate",method="POST",status="200"} 2"#,
        r#"issuer_http_requests_total{route="/v1/activate",method="POST",status="409"} 1"#,
        r#"issuer_http_requests_total{route="/metrics",method="GET",status="401"} 1"#,
        "issuer_webhook_deliveries_pending 0",
        "issuer_signing_certificate_expires_in_seconds -1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    assert!(
        text.contains(r#"issuer_http_request_duration_seconds_bucket{le="0.0001",route="/v1/validate"}"#)
            || text.contains(r#"issuer_http_request_duration_seconds_bucket{route="/v1/validate",le="0.0001"}"#),
        "{text}"
    );
    assert!(text.contains("issuer_signing_key_age_seconds ") && text.trim_end().ends_with("# EOF"), "{text}");
    // The store's share: every call timed by operation, SQLite's batches, both pools; and the connections.
    let value = |series: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.unwrap_or_else(|| panic!("missing `{series}` in:\n{text}"))[series.len() + 1..].parse().unwrap()
    };
    // Three activations and an admin token are units of work; two validations read the license for the machine.
    assert!(value(r#"issuer_store_operation_duration_seconds_count{operation="run"}"#) >= 4.0, "{text}");
    assert!(value(r#"issuer_store_operation_duration_seconds_count{operation="license_for_machine"}"#) >= 2.0);
    let batches = value("issuer_store_write_batch_size_count");
    assert!(batches >= 1.0 && value("issuer_store_write_batch_size_sum") >= batches, "{text}");
    assert!(value("issuer_store_write_batch_duration_seconds_count") == batches, "{text}");
    for pool in ["read", "write"] {
        let open = value(&format!(r#"issuer_store_pool_connections{{pool="{pool}",state="idle"}}"#))
            + value(&format!(r#"issuer_store_pool_connections{{pool="{pool}",state="in_use"}}"#));
        assert!(open >= 1.0, "the {pool} pool keeps a connection open:\n{text}");
    }
    assert!(value("issuer_http_open_connections") >= 1.0, "the scrape's own connection is open:\n{text}");
    assert_eq!(value("issuer_http_connections_refused_total"), 0.0);
    server.stop().await;
}
