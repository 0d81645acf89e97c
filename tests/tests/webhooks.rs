//! Webhooks end to end (docs/webhooks.md): a real issuer delivering to a real HTTP receiver on 127.0.0.1, which
//! fails the first attempts, then checks every signature with its own HMAC, the order of each license's events,
//! de-duplication by `webhook-id`, and that every change of a concurrent load arrives exactly once. Also: retries to
//! the end of the window and disabling, the end of a rotation's overlap, what counts as success (2xx; a redirect is
//! not followed; a timeout fails), a hung endpoint never holding up requests, outbound network rules, and two
//! instances on one PostgreSQL database. Across processes (kill -9, graceful stop, Python): webhook_processes.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use e2e_tests::receiver::{Received, Receiver, Script};
use e2e_tests::server::{assert_error, s, Server, NO_LIMIT};
use e2e_tests::{copy_key_ring, pg};
use issuer::Clock as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use time::Duration;

/// Retries after 50 ms, 100 ms, ...: the tests that wait in real time.
fn fast_retries(config: &mut issuer::Config) {
    config.webhooks.retry_base = StdDuration::from_millis(50);
    config.webhooks.timeout = StdDuration::from_secs(5);
}

async fn create_webhook(server: &Server, url: &str, events: &[&str]) -> Value {
    let body = json!({ "url": url, "events": events, "description": "test receiver" });
    let (status, hook) = server.admin(Method::POST, "/v1/webhooks", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert!(s(&hook["secret"]).starts_with("whsec_"), "{hook}");
    hook
}

async fn deliveries(server: &Server, hook: &str) -> Vec<Value> {
    let (status, page) = server.admin(Method::GET, &format!("/v1/webhooks/{hook}/deliveries?limit=1000"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["deliveries"].as_array().unwrap().clone()
}

/// A mixed concurrent load on `licenses` through `servers` (round robin): activations, deactivations, updates,
/// suspensions and reinstatements.
async fn load(servers: &[&Server], licenses: &[(String, String)], n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let server = servers[i % servers.len()];
            let (id, key) = licenses[i % licenses.len()].clone();
            let (client, base, admin) = (server.client.clone(), server.base.clone(), server.admin.clone());
            tokio::spawn(async move {
                let fp = format!("m{}", (i / 3) % 4);
                let req = match (i / 3) % 6 {
                    0 | 1 => client.post(format!("{base}/v1/activate")).json(&json!({ "key": key, "fingerprint": fp })),
                    2 => client.post(format!("{base}/v1/deactivate")).json(&json!({ "key": key, "fingerprint": fp })),
                    3 => client
                        .patch(format!("{base}/v1/licenses/{id}"))
                        .bearer_auth(&admin)
                        .json(&json!({ "max_machines": 3 + (i % 2) })),
                    4 => client.post(format!("{base}/v1/licenses/{id}/suspend")).bearer_auth(&admin),
                    _ => client.post(format!("{base}/v1/licenses/{id}/reinstate")).bearer_auth(&admin),
                };
                let status = req.send().await.unwrap().status();
                assert!(!status.is_server_error(), "{status}");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// What the receiver got, checked against the audit log: every event from `first_id` on arrived exactly once,
/// signed with `secret`, with the payload of its event, each license's events in order. Returns (events, requests).
fn check_against_log(receiver: &Receiver, log: &[Value], first_id: i64, secret: &str) -> (usize, usize) {
    let received = receiver.received();
    for r in &received {
        assert!(r.signed_by(secret), "a delivery not signed with the endpoint's secret: {r:?}");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((r.timestamp - now).abs() < 300, "webhook-timestamp {} is not now", r.timestamp);
        assert_eq!(r.json()["id"].to_string(), r.id, "the payload's id is the webhook-id");
    }
    let counts = receiver.accepted_counts();
    let by_id: HashMap<String, &Value> = log.iter().map(|e| (e["id"].to_string(), e)).collect();
    let expected: Vec<&Value> = log.iter().filter(|e| e["id"].as_i64().unwrap() >= first_id).collect();
    for e in &expected {
        assert_eq!(counts.get(&e["id"].to_string()).copied(), Some(1), "event {e} delivered once");
    }
    assert_eq!(counts.len(), expected.len(), "no delivery of an event the log does not have");
    let mut lanes: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in receiver.accepted() {
        let payload = r.json();
        let event = by_id[&r.id];
        assert_eq!(payload["type"], event["type"]);
        assert_eq!(payload["created_at"], event["at"]);
        assert_eq!(payload["data"]["license_id"], event["license_id"], "{payload}");
        let lane = event["license_id"].as_str().unwrap_or("").to_string();
        lanes.entry(lane).or_default().push(payload["id"].as_i64().unwrap());
    }
    for (lane, ids) in &lanes {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "license {lane}'s events arrived out of order: {ids:?}");
    }
    (expected.len(), received.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_of_a_concurrent_load_is_delivered_once_signed_and_in_order() {
    let receiver = Receiver::start(Script::FailFirst(5)).await;
    let created_only = Receiver::start(Script::FailFirst(0)).await;
    let server = Server::start_configured(NO_LIMIT, Arc::new(issuer::SystemClock), fast_retries).await;
    let hook = create_webhook(&server, &receiver.url, &["*"]).await;
    assert_eq!((hook["events"].clone(), hook["status"].clone()), (json!(["*"]), json!("enabled")));
    let narrow = create_webhook(&server, &created_only.url, &["license.created"]).await;
    let (status, listed) = server.admin(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(listed["webhooks"].as_array().unwrap().iter().all(|w| w.get("secret").is_none()), "{listed}");

    let mut licenses = Vec::new();
    for _ in 0..8 {
        let l = server
            .create_license(json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 3 }))
            .await;
        licenses.push((s(&l["id"]).to_string(), s(&l["key"]).to_string()));
    }
    load(&[&server], &licenses, 240).await;

    let log = server.audit_log("").await;
    let first = log.iter().find(|e| e["type"] == "webhook.created").unwrap()["id"].as_i64().unwrap();
    let want: HashSet<String> =
        log.iter().filter(|e| e["id"].as_i64().unwrap() >= first).map(|e| e["id"].to_string()).collect();
    receiver
        .wait_until(StdDuration::from_secs(120), |_| {
            receiver.accepted_counts().keys().cloned().collect::<HashSet<_>>() == want
        })
        .await;
    let (events, requests) = check_against_log(&receiver, &log, first, s(&hook["secret"]));
    assert_eq!(requests, events + 5, "each of the 5 failed attempts was retried once, nothing else twice");
    let listed = deliveries(&server, s(&hook["id"])).await;
    assert_eq!(listed.len(), events);
    assert!(listed.iter().all(|d| d["state"] == "delivered" && d["last_status"] == 204), "{listed:?}");
    let retries: u64 = listed.iter().map(|d| d["attempts"].as_u64().unwrap() - 1).sum();
    assert_eq!(retries, 5, "the 5 failed attempts, each retried once");
    eprintln!("webhook figures (SQLite): {events} events, {requests} attempts, 0 duplicates, 5 failed first attempts");

    // The narrow endpoint got the license.created events made after it, and nothing else.
    created_only.wait_until(StdDuration::from_secs(30), |r| r.len() >= 8).await;
    let types: Vec<Value> = created_only.accepted().iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(types, vec![json!("license.created"); 8]);
    assert!(created_only.received().iter().all(|r| r.signed_by(s(&narrow["secret"]))));

    // A resend delivers the same event again, under the same webhook-id.
    let one = &listed[3];
    let path = format!("/v1/webhooks/{}/deliveries/{}/resend", s(&hook["id"]), one["id"]);
    let (status, resent) = server.admin(Method::POST, &path, None).await;
    assert_eq!(
        (status, resent["event_id"].clone(), resent["state"].clone()),
        (StatusCode::ACCEPTED, one["event_id"].clone(), json!("pending"))
    );
    let id = one["event_id"].to_string();
    receiver.wait_until(StdDuration::from_secs(30), |_| receiver.accepted_counts().get(&id) == Some(&2)).await;
    let path = format!("/v1/webhooks/{}/deliveries/999999999/resend", s(&hook["id"]));
    assert_error(&server.admin(Method::POST, &path, None).await, StatusCode::NOT_FOUND, "delivery_not_found", "resend");

    // A rotation: the next deliveries carry both signatures for the overlap.
    let (status, rotated) =
        server.admin(Method::POST, &format!("/v1/webhooks/{}/rotate-secret", s(&hook["id"])), None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_ne!(rotated["secret"], hook["secret"]);
    assert!(rotated["previous_secret_until"].is_string(), "{rotated}");
    let before = receiver.received().len();
    server.create_license(json!({ "email": "rot@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    let got = receiver.wait_until(StdDuration::from_secs(30), |r| r.len() > before).await;
    let last: &Received = got.last().unwrap();
    assert_eq!(last.signatures.len(), 2, "{last:?}");
    assert!(last.signed_by(s(&rotated["secret"])) && last.signed_by(s(&hook["secret"])));
    let headers = receiver.headers().pop().unwrap();
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers["user-agent"].starts_with("issuer-webhooks/"), "{headers:?}");

    // Deleting an endpoint: gone, with its deliveries.
    let narrow_id = s(&narrow["id"]);
    let (status, _) = server.admin(Method::DELETE, &format!("/v1/webhooks/{narrow_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for path in [
        format!("/v1/webhooks/{narrow_id}"),
        format!("/v1/webhooks/{narrow_id}/deliveries"),
        "/v1/webhooks/not-a-uuid".into(),
    ] {
        assert_error(&server.admin(Method::GET, &path, None).await, StatusCode::NOT_FOUND, "webhook_not_found", &path);
    }
    let types: HashSet<String> = server.audit_log("").await.iter().map(|e| s(&e["type"]).to_string()).collect();
    for t in ["webhook.created", "webhook.secret_rotated", "webhook.deleted", "license.created", "machine.activated"] {
        assert!(types.contains(t), "{t} in {types:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_endpoint_is_retried_for_three_days_then_disabled_until_enabled() {
    let receiver = Receiver::start(Script::AlwaysFail).await;
    // No background dispatcher: the test delivers (`deliver_due`) at moments of its manual clock.
    let clock = Arc::new(issuer::ManualClock::starting_now());
    let server = Server::start_configured(NO_LIMIT, clock.clone(), |c| c.webhooks.deliver = false).await;
    let hook = create_webhook(&server, &receiver.url, &["license.created"]).await;
    let id = s(&hook["id"]).to_string();
    server.create_license(json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    let (mut attempts, mut advanced) = (0, Duration::ZERO);
    loop {
        assert_eq!(server.licensing.deliver_due().await.unwrap(), 1, "one due delivery after {advanced}");
        attempts += 1;
        assert_eq!(server.licensing.deliver_due().await.unwrap(), 0, "not due again before its retry time");
        let d = deliveries(&server, &id).await.remove(0);
        assert_eq!((d["attempts"].clone(), d["last_status"].clone()), (json!(attempts), json!(500)), "{d}");
        if d["state"] != "pending" {
            break;
        }
        assert!(ts_of(&d["next_attempt_at"]) <= clock.now() + Duration::hours(12), "{d}");
        clock.advance(Duration::hours(13));
        advanced += Duration::hours(13);
        assert!(advanced < Duration::days(4), "still retrying after {advanced}");
    }
    assert_eq!(receiver.received().len(), attempts);
    let delivery = &deliveries(&server, &id).await[0];
    assert_eq!(delivery["state"], "failed", "{delivery}");
    assert!(advanced >= Duration::days(3), "given up only after 3 days, not after {advanced}");
    assert_eq!(delivery["last_error"], "the endpoint answered 500 Internal Server Error");
    let (_, shown) = server.admin(Method::GET, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(shown["status"], "disabled", "{shown}");
    assert!(s(&shown["disabled_reason"]).contains("3 days"), "{shown}");
    assert_eq!(server.audit_log("type=webhook.disabled").await.len(), 1);
    eprintln!("webhook figures (retry window): {attempts} attempts over {advanced} of manual time, then disabled");

    // Disabled: new events queue nothing for it; enabled: they do again.
    server.create_license(json!({ "email": "b@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    assert_eq!(deliveries(&server, &id).await.len(), 1);
    let (status, enabled) = server.admin(Method::POST, &format!("/v1/webhooks/{id}/enable"), None).await;
    assert_eq!((status, enabled["status"].clone()), (StatusCode::OK, json!("enabled")));
    server.create_license(json!({ "email": "c@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    assert_eq!(deliveries(&server, &id).await.len(), 2);
    assert_eq!(server.licensing.deliver_due().await.unwrap(), 1);
    assert_eq!(receiver.received().len(), attempts + 1);
    assert_eq!(server.audit_log("type=webhook.enabled").await.len(), 1);

    // A rotation's overlap ends after 24 hours: then only the new secret signs.
    let (_, rotated) = server.admin(Method::POST, &format!("/v1/webhooks/{id}/rotate-secret"), None).await;
    let newest = |r: &[Received]| r.iter().max_by_key(|x| x.id.parse::<i64>().unwrap()).unwrap().clone();
    server.create_license(json!({ "email": "d@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    server.licensing.deliver_due().await.unwrap();
    let during = newest(&receiver.received());
    assert!(
        during.signatures.len() == 2 && during.signed_by(s(&hook["secret"])) && during.signed_by(s(&rotated["secret"]))
    );
    clock.advance(Duration::hours(25));
    server.create_license(json!({ "email": "e@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    server.licensing.deliver_due().await.unwrap();
    let after = newest(&receiver.received());
    assert!(
        after.id != during.id && after.signatures.len() == 1 && after.signed_by(s(&rotated["secret"])),
        "{after:?}"
    );
    let (_, shown) = server.admin(Method::GET, &format!("/v1/webhooks/{id}"), None).await;
    assert!(shown["previous_secret_until"].is_null(), "{shown}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbound_rules_refuse_metadata_addresses_and_configured_networks() {
    let receiver = Receiver::start(Script::FailFirst(0)).await;
    let deny_loopback = |c: &mut issuer::Config| {
        fast_retries(c);
        c.webhooks.networks.deny = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    };
    let server = Server::start_configured(NO_LIMIT, Arc::new(issuer::SystemClock), deny_loopback).await;
    let post = |body: Value| server.admin(Method::POST, "/v1/webhooks", Some(body));
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        &receiver.url,
    ] {
        let answer = post(json!({ "url": url, "events": ["*"] })).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "webhook_url_refused", url);
        assert_eq!(answer.1["field"], "url");
    }
    for (body, what) in [
        (json!({ "url": "ftp://example.com/", "events": ["*"] }), "scheme"),
        (json!({ "url": "http://user:pw@example.com/", "events": ["*"] }), "credentials"),
        (json!({ "url": "not a url", "events": ["*"] }), "not a url"),
        (json!({ "url": "http://example.com/", "events": [] }), "no events"),
        (json!({ "url": "http://example.com/", "events": ["license.exploded"] }), "unknown type"),
        (json!({ "url": "http://example.com/", "events": ["*", "license.created"] }), "* and more"),
        (json!({ "url": "http://example.com/", "events": ["*"], "secret": "mine" }), "unknown field"),
    ] {
        assert_error(&post(body).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", what);
    }
    // A hostname is checked where it resolves: localhost is loopback, which this instance denies.
    let port = receiver.url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_string();
    let hook = create_webhook(&server, &format!("http://localhost:{port}/hook"), &["*"]).await;
    server.create_license(json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    let wait = tokio::time::Instant::now() + StdDuration::from_secs(30);
    let failed = loop {
        let listed = deliveries(&server, s(&hook["id"])).await;
        if let Some(d) = listed.iter().find(|d| d["last_error"].is_string()) {
            break d.clone();
        }
        assert!(tokio::time::Instant::now() < wait, "no attempt recorded: {listed:?}");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    };
    assert!(s(&failed["last_error"]).contains("denied network"), "{failed}");
    assert!(receiver.received().is_empty(), "nothing reached a denied address");
    server.stop().await;

    // With allow rules, only their networks are reached.
    let allow_private = |c: &mut issuer::Config| c.webhooks.networks.allow = vec!["10.0.0.0/8".parse().unwrap()];
    let server = Server::start_configured(NO_LIMIT, Arc::new(issuer::SystemClock), allow_private).await;
    let answer =
        server.admin(Method::POST, "/v1/webhooks", Some(json!({ "url": receiver.url, "events": ["*"] }))).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "webhook_url_refused", "outside the allowed networks");
    assert!(s(&answer.1["message"]).contains("allow_networks"), "{}", answer.1);
    let hook = create_webhook(&server, "http://10.255.255.1:9/hook", &["license.created"]).await;
    assert_eq!(hook["status"], "enabled");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_2xx_succeeds_a_redirect_is_not_followed_and_a_hung_endpoint_holds_up_no_request() {
    let accepted = Receiver::start(Script::Status(202)).await;
    let target = Receiver::start(Script::FailFirst(0)).await;
    let redirecting = Receiver::start(Script::Redirect(target.url.clone())).await;
    let hung = Receiver::start(Script::HoldFirst).await;
    let short_timeout = |c: &mut issuer::Config| {
        fast_retries(c);
        c.webhooks.timeout = StdDuration::from_secs(1);
    };
    let server = Server::start_configured(NO_LIMIT, Arc::new(issuer::SystemClock), short_timeout).await;
    let hooks: Vec<Value> = futures::future::join_all(
        [&accepted, &redirecting, &hung].map(|r| create_webhook(&server, &r.url, &["license.created"])),
    )
    .await;
    // The hung endpoint holds its first attempt; requests go on meanwhile, every one answered.
    server.create_license(json!({ "email": "first@example.com", "product": "acme-cad", "max_machines": 1 })).await;
    hung.wait_until(StdDuration::from_secs(30), |r| !r.is_empty()).await;
    for i in 0..20 {
        let l = server
            .create_license(json!({ "email": format!("n{i}@example.com"), "product": "acme-cad", "max_machines": 1 }))
            .await;
        server.activated(s(&l["key"]), "fp").await;
    }
    let first = |hook: &Value| {
        let id = s(&hook["id"]).to_string();
        let server = &server;
        async move {
            let wait = tokio::time::Instant::now() + StdDuration::from_secs(30);
            loop {
                let d = deliveries(server, &id).await.remove(0);
                if d["attempts"].as_u64() >= Some(1) && (d["state"] != "pending" || d["last_error"].is_string()) {
                    return d;
                }
                assert!(tokio::time::Instant::now() < wait, "{d}");
                tokio::time::sleep(StdDuration::from_millis(20)).await;
            }
        }
    };
    let ok = first(&hooks[0]).await;
    assert_eq!(
        (ok["state"].clone(), ok["last_status"].clone(), ok["attempts"].clone()),
        (json!("delivered"), json!(202), json!(1))
    );
    let redirected = first(&hooks[1]).await;
    assert_eq!(
        (redirected["state"].clone(), redirected["last_status"].clone()),
        (json!("pending"), json!(302)),
        "{redirected}"
    );
    assert!(target.received().is_empty(), "the redirect was not followed");
    let timed_out = first(&hooks[2]).await;
    assert_eq!(timed_out["last_status"], Value::Null, "{timed_out}");
    assert!(s(&timed_out["last_error"]).starts_with("timed out"), "{timed_out}");
    // Its retry is answered (HoldFirst holds only the first request).
    hung.wait_until(StdDuration::from_secs(30), |r| r.iter().any(|x| x.answered == 204)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_deliver_each_event_once() {
    let Some(db) = pg::test_database("webhooks_two_instances").await else { return };
    let token = "iat_webhooks_pg_test";
    let options = e2e_tests::server::Options { env_admin_token: Some(token), ..NO_LIMIT };
    let url = db.url().to_string();
    let on_db = |url: String| {
        move |c: &mut issuer::Config| {
            fast_retries(c);
            c.database_url = Some(issuer::Secret::new(url));
        }
    };
    let a = Server::start_configured(options, Arc::new(issuer::SystemClock), on_db(url.clone())).await;
    let a_dir = a.data_dir();
    let b = Server::start_configured(options, Arc::new(issuer::SystemClock), move |c| {
        copy_key_ring(&a_dir, &c.data_dir);
        on_db(url)(c);
    })
    .await;
    let receiver = Receiver::start(Script::FailFirst(3)).await;
    // Answers take a while, so both instances' dispatchers find work.
    receiver.set_delay(StdDuration::from_millis(20));
    let hook = create_webhook(&a, &receiver.url, &["*"]).await;
    let mut licenses = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        let l = server
            .create_license(json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 3 }))
            .await;
        licenses.push((s(&l["id"]).to_string(), s(&l["key"]).to_string()));
    }
    load(&[&a, &b], &licenses, 180).await;
    let log = a.audit_log("").await;
    let first = hook_event_id(&log);
    let want: HashSet<String> =
        log.iter().filter(|e| e["id"].as_i64().unwrap() >= first).map(|e| e["id"].to_string()).collect();
    receiver
        .wait_until(StdDuration::from_secs(120), |_| {
            receiver.accepted_counts().keys().cloned().collect::<HashSet<_>>() == want
        })
        .await;
    // Let both dispatchers run a while longer: a duplicate would show now.
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    let (events, requests) = check_against_log(&receiver, &log, first, s(&hook["secret"]));
    assert_eq!(requests, events + 3, "each event attempted once by one of the instances, the 3 failures once more");
    let (by_a, by_b) = (a.licensing.webhook_attempts(), b.licensing.webhook_attempts());
    assert_eq!(by_a + by_b, requests as u64, "every request the receiver got was one instance's attempt");
    assert!(by_a > 0 && by_b > 0, "both instances delivered ({by_a} and {by_b} attempts)");
    eprintln!(
        "webhook figures (PostgreSQL, 2 instances): {events} events, {requests} attempts ({by_a} + {by_b}), 0 duplicates"
    );
    a.stop().await;
    b.stop().await;
}

fn ts_of(v: &Value) -> time::OffsetDateTime {
    e2e_tests::server::ts(v)
}

fn hook_event_id(log: &[Value]) -> i64 {
    log.iter().find(|e| e["type"] == "webhook.created").unwrap()["id"].as_i64().unwrap()
}
