//! Client network rules end to end (docs/network.md): CIDR allow and deny rules at three levels over HTTP and the
//! CLI, applied to every public endpoint, deny before allow, IPv4 and IPv6, X-Forwarded-For from trusted and
//! untrusted peers, the addresses each license is used from, and two instances on one PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::cli;
use e2e_tests::server::{assert_error, s, Options, Server, NO_LIMIT, PRODUCT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Trusts the test client (loopback), so `X-Forwarded-For` names the client address a request is judged by.
const BEHIND_PROXY: Options = Options { trusted_proxies: &["127.0.0.0/8", "::1"], ..NO_LIMIT };

async fn rule(server: &Server, body: Value) -> Value {
    let (status, rule) = server.admin(Method::POST, "/v1/ip-rules", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body} -> {rule}");
    rule
}

async fn validate_from(server: &Server, ip: &str, key: &str, fingerprint: &str) -> Value {
    let (status, body) = server.post_from(ip, "/v1/validate", json!({ "key": key, "fingerprint": fingerprint })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn code_from(server: &Server, ip: &str, key: &str) -> String {
    s(&validate_from(server, ip, key, "fp-1").await["code"]).to_string()
}

async fn activate_from(server: &Server, ip: &str, key: &str, fingerprint: &str) -> (StatusCode, Value) {
    server.post_from(ip, "/v1/activate", json!({ "key": key, "fingerprint": fingerprint })).await
}

/// A license of its own with `slots` slots: (id, key).
async fn license(server: &Server, slots: u32) -> (String, String) {
    let l =
        server.create_license(json!({ "email": "ada@example.com", "product": PRODUCT, "max_machines": slots })).await;
    (s(&l["id"]).to_string(), s(&l["key"]).to_string())
}

#[tokio::test]
async fn rules_at_three_levels_refuse_with_deny_before_allow_on_every_endpoint() {
    let server = Server::start(BEHIND_PROXY).await;
    server.create_policy(json!({ "name": "corp", "product": PRODUCT, "max_machines": 5 })).await;
    let (a_id, a) = server.license_of("corp").await;
    let (b_id, b) = license(&server, 5).await;
    for key in [&a, &b] {
        assert_eq!(activate_from(&server, "10.1.2.3", key, "fp-1").await.0, StatusCode::OK);
    }
    assert_eq!(code_from(&server, "203.0.113.5", &a).await, "VALID", "no rules: every address");

    // Global deny: refused before the key is looked up, so a refused network learns nothing, not even NOT_FOUND.
    let global = rule(&server, json!({ "cidr": "198.51.100.0/24", "action": "deny", "note": "abuse" })).await;
    assert_eq!((s(&global["level"]), s(&global["cidr"])), ("global", "198.51.100.0/24"));
    let blocked = validate_from(&server, "198.51.100.9", &a, "fp-1").await;
    assert_eq!((blocked["valid"].as_bool(), s(&blocked["code"])), (Some(false), "IP_BLOCKED"));
    assert!(blocked.get("license").is_none() && blocked.get("machines_used").is_none(), "{blocked}");
    assert_eq!(
        code_from(&server, "198.51.100.9", &issuer::LicenseKey::generate().unwrap().to_string()).await,
        "IP_BLOCKED"
    );
    let refused = activate_from(&server, "198.51.100.9", &a, "fp-2").await;
    assert_error(&refused, StatusCode::FORBIDDEN, "ip_blocked", "activate");
    assert!(!refused.1["message"].as_str().unwrap().contains("198.51.100"), "the answer names no rule: {}", refused.1);
    let unknown = issuer::LicenseKey::generate().unwrap().to_string();
    for (path, body) in [
        ("/v1/activate", json!({ "key": unknown, "fingerprint": "fp-1" })),
        ("/v1/deactivate", json!({ "key": unknown, "fingerprint": "fp-1" })),
    ] {
        // The same answer for a key that exists and one that does not: a refused network learns nothing.
        assert_error(&server.post_from("198.51.100.9", path, body).await, StatusCode::FORBIDDEN, "ip_blocked", path);
    }
    assert_eq!(code_from(&server, "::ffff:198.51.100.9", &a).await, "IP_BLOCKED", "an IPv4-mapped address is IPv4");

    // Policy allow list: the policy's licenses only from 10.0.0.0/8; the other license is not concerned.
    rule(&server, json!({ "cidr": "10.0.0.0/8", "action": "allow", "policy": "corp" })).await;
    assert_eq!(code_from(&server, "203.0.113.5", &a).await, "IP_BLOCKED");
    assert_eq!(code_from(&server, "10.9.9.9", &a).await, "VALID");
    assert_eq!(code_from(&server, "203.0.113.5", &b).await, "VALID");

    // A license deny inside the policy's allowed network: deny before allow.
    let own = rule(&server, json!({ "cidr": "10.1.0.0/16", "action": "deny", "license": a })).await;
    assert_eq!((s(&own["level"]), s(&own["license_id"])), ("license", a_id.as_str()), "by key, stored by id");
    assert_eq!(code_from(&server, "10.1.2.3", &a).await, "IP_BLOCKED");
    assert_eq!(code_from(&server, "10.2.0.1", &a).await, "VALID");

    // IPv6 at the license level, by id.
    rule(&server, json!({ "cidr": "2001:db8::/32", "action": "deny", "license": b_id })).await;
    assert_eq!(code_from(&server, "2001:db8::7", &b).await, "IP_BLOCKED");
    assert_eq!(code_from(&server, "2001:db9::1", &b).await, "VALID");

    // Every other public endpoint refuses the same way, and changes nothing.
    let token = server.activated(&b, "fp-2").await["token"].as_str().unwrap().to_string();
    let refused = server.post_from("2001:db8::7", "/v1/refresh", json!({ "token": token })).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "ip_blocked", "refresh");
    let refused = server.post_from("2001:db8::7", "/v1/deactivate", json!({ "key": b, "fingerprint": "fp-2" })).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "ip_blocked", "deactivate");
    assert!(server.fingerprints(&b).await.contains("fp-2"), "a refused deactivation frees nothing");
    let request = verifier::ActivationRequest::new(&b, "air-gapped-1", "lab-pc").unwrap().to_code().unwrap();
    let refused = server.post_from("2001:db8::7", "/v1/offline/activate", json!({ "request": request })).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "ip_blocked", "offline activate");
    let (status, offline) =
        server.post_from("2001:db9::1", "/v1/offline/activate", json!({ "request": request })).await;
    assert_eq!(status, StatusCode::OK, "{offline}");
    let code = verifier::DeactivationCode::for_token(s(&offline["token"]), &server.key_set().await).unwrap().to_code();
    let refused = server.post_from("2001:db8::7", "/v1/offline/deactivate", json!({ "code": code })).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "ip_blocked", "offline deactivate");
    let (status, _) = server.post_from("2001:db9::1", "/v1/offline/deactivate", json!({ "code": code })).await;
    assert_eq!(status, StatusCode::OK, "from an admitted address the same code works");

    // Each refusal is an ip.blocked event naming the address, the operation and the rule.
    let events = server.audit_log("type=ip.blocked").await;
    let ops: Vec<&str> = events.iter().map(|e| s(&e["detail"]["operation"])).collect();
    for op in ["validate", "activate", "refresh", "deactivate", "offline_activate", "offline_deactivate"] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
    let first = &events[0];
    assert_eq!(first["license_id"], Value::Null, "a global refusal before the lookup names no license");
    assert_eq!((s(&first["detail"]["ip"]), s(&first["detail"]["reason"])), ("198.51.100.9", "denied"));
    assert_eq!(first["detail"]["rule"]["id"], global["id"]);
    let not_allowed = events.iter().find(|e| e["detail"]["reason"] == "not_allowed").unwrap();
    assert_eq!((s(&not_allowed["detail"]["level"]), s(&not_allowed["license_id"])), ("policy", a_id.as_str()));

    // Listing and filters; the license's own rule is in its event log.
    let (_, all) = server.admin(Method::GET, "/v1/ip-rules", None).await;
    assert_eq!(all["ip_rules"].as_array().unwrap().len(), 4, "{all}");
    let (_, of_a) = server.admin(Method::GET, &format!("/v1/ip-rules?license={a}"), None).await;
    assert_eq!(of_a["ip_rules"].as_array().unwrap().len(), 1);
    let (_, of_corp) = server.admin(Method::GET, "/v1/ip-rules?policy=corp", None).await;
    assert_eq!(s(&of_corp["ip_rules"][0]["cidr"]), "10.0.0.0/8");
    assert!(server.events(&a_id).await.iter().any(|e| e["type"] == "ip_rule.created"));

    // Deleting a rule admits again, once; the audit log has both changes with their actor.
    let (status, deleted) = server.admin(Method::DELETE, &format!("/v1/ip-rules/{}", s(&global["id"])), None).await;
    assert_eq!((status, &deleted["id"]), (StatusCode::OK, &global["id"]));
    assert_eq!(code_from(&server, "198.51.100.9", &b).await, "VALID");
    let again = server.admin(Method::DELETE, &format!("/v1/ip-rules/{}", s(&global["id"])), None).await;
    assert_error(&again, StatusCode::NOT_FOUND, "ip_rule_not_found", "deleted twice");
    let changes = server.audit_log("type=ip_rule.deleted").await;
    assert_eq!((changes.len(), s(&changes[0]["actor"]["type"])), (1, "admin_token"));
    assert_eq!(server.audit_log("type=ip_rule.created").await.len(), 4);

    // Deleting a policy deletes its rules, each with its event, and the instance stops applying them at once.
    server.create_policy(json!({ "name": "gone", "product": PRODUCT, "max_machines": 1 })).await;
    let doomed = rule(&server, json!({ "cidr": "192.0.2.0/24", "action": "deny", "policy": "gone" })).await;
    let (status, _) = server.admin(Method::DELETE, "/v1/policies/gone", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deleted = server.audit_log("type=ip_rule.deleted").await;
    assert_eq!(deleted.last().unwrap()["detail"]["rule"]["id"], doomed["id"]);
    let (_, all) = server.admin(Method::GET, "/v1/ip-rules?policy=corp", None).await;
    assert_eq!(all["ip_rules"].as_array().unwrap().len(), 1, "only the deleted policy's rules went");
    server.stop().await;
}

#[tokio::test]
async fn bad_rules_get_clear_errors_and_change_nothing() {
    let server = Server::start(NO_LIMIT).await;
    let (_, key) = license(&server, 1).await;
    server.create_policy(json!({ "name": "corp", "product": PRODUCT, "max_machines": 5 })).await;
    let post = |body: Value| {
        let server = &server;
        async move { server.admin(Method::POST, "/v1/ip-rules", Some(body)).await }
    };
    for (body, code) in [
        (json!({ "cidr": "nope", "action": "deny" }), "invalid_field"),
        (json!({ "cidr": "10.0.0.0/33", "action": "deny" }), "invalid_field"),
        (json!({ "cidr": "10.0.0.0/+8", "action": "deny" }), "invalid_field"),
        (json!({ "cidr": "10.0.0.0/8", "action": "block" }), "invalid_field"),
        (json!({ "cidr": "10.0.0.0/8", "action": "deny", "license": key, "policy": "corp" }), "invalid_field"),
        (json!({ "cidr": "10.0.0.0/8", "action": "deny", "license": "not-a-key" }), "invalid_field"),
        (json!({ "cidr": "10.0.0.0/8", "action": "deny", "note": "x".repeat(201) }), "invalid_field"),
        (json!({ "cidr": "10.0.0.0/8", "action": "deny", "extra": 1 }), "invalid_field"),
        (json!({ "action": "deny" }), "invalid_field"),
    ] {
        let answer = post(body.clone()).await;
        assert_eq!(
            (answer.0, s(&answer.1["code"])),
            (StatusCode::UNPROCESSABLE_ENTITY, code),
            "{body} -> {}",
            answer.1
        );
    }
    let unknown =
        post(json!({ "cidr": "10.0.0.0/8", "action": "deny", "license": uuid::Uuid::now_v7().to_string() })).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "license_not_found", "unknown license");
    let unknown = post(json!({ "cidr": "10.0.0.0/8", "action": "deny", "policy": "nope" })).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "policy_not_found", "unknown policy");
    let unknown = server.admin(Method::DELETE, "/v1/ip-rules/not-a-uuid", None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "ip_rule_not_found", "not a rule id");
    let unknown = server.admin(Method::GET, "/v1/licenses/AAAAA-AAAAA-AAAAA-AAAAA/ips", None).await;
    assert_eq!(unknown.0, StatusCode::UNPROCESSABLE_ENTITY, "a mistyped key: {}", unknown.1);
    let (_, reader) =
        server.admin(Method::POST, "/v1/admin-tokens", Some(json!({ "label": "ro", "scope": "read" }))).await;
    let read_only = server
        .send_as(
            s(&reader["token"]),
            Method::POST,
            "/v1/ip-rules",
            Some(json!({ "cidr": "10.0.0.0/8", "action": "deny" })),
        )
        .await;
    assert_error(&read_only, StatusCode::FORBIDDEN, "insufficient_scope", "read token");
    let (status, listed) = server.send_as(s(&reader["token"]), Method::GET, "/v1/ip-rules", None).await;
    assert_eq!((status, listed["ip_rules"].as_array().unwrap().len()), (StatusCode::OK, 0), "nothing was stored");
    assert_eq!(server.audit_log("type=ip_rule.created").await.len(), 0);
    // The host bits of a network are cleared, and an IPv4-mapped IPv6 network is stored as IPv4.
    let stored = rule(&server, json!({ "cidr": "10.1.2.3/8", "action": "deny" })).await;
    assert_eq!(s(&stored["cidr"]), "10.0.0.0/8");
    let stored = rule(&server, json!({ "cidr": "::ffff:192.0.2.0/120", "action": "deny" })).await;
    assert_eq!(s(&stored["cidr"]), "192.0.2.0/24");
    server.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies_given_as_networks() {
    // Trusted: the whole loopback network and an inner proxy tier. The client is the right-most untrusted hop.
    let trusted = Server::start(Options { trusted_proxies: &["127.0.0.0/8", "10.0.0.0/8"], ..NO_LIMIT }).await;
    let (_, key) = license(&trusted, 3).await;
    trusted.activated(&key, "fp-1").await;
    rule(&trusted, json!({ "cidr": "203.0.113.5", "action": "deny" })).await;
    assert_eq!(code_from(&trusted, "203.0.113.5", &key).await, "IP_BLOCKED");
    assert_eq!(code_from(&trusted, "203.0.113.5, 10.0.0.7", &key).await, "IP_BLOCKED", "a proxy tier is skipped");
    assert_eq!(code_from(&trusted, "203.0.113.5, 192.0.2.1", &key).await, "VALID", "only what proxies appended");
    trusted.stop().await;

    // Not trusted: the header is ignored and the TCP peer is judged, whatever the header says.
    let direct = Server::start(Options { trusted_proxies: &["10.0.0.0/8"], ..NO_LIMIT }).await;
    let (_, key) = license(&direct, 3).await;
    direct.activated(&key, "fp-1").await;
    rule(&direct, json!({ "cidr": "203.0.113.5", "action": "deny" })).await;
    assert_eq!(code_from(&direct, "203.0.113.5", &key).await, "VALID", "a forged header is not believed");
    rule(&direct, json!({ "cidr": "127.0.0.0/8", "action": "deny" })).await;
    assert_eq!(code_from(&direct, "192.0.2.1", &key).await, "IP_BLOCKED", "the peer itself is refused");
    let events = direct.audit_log("type=ip.blocked").await;
    assert_eq!(s(&events[0]["detail"]["ip"]), "127.0.0.1");
    direct.stop().await;
}

#[tokio::test]
async fn an_ipv6_peer_is_judged_by_its_own_address() {
    let server = Server::start(Options { loopback: "::1", ..NO_LIMIT }).await;
    let (id, key) = license(&server, 3).await;
    server.activated(&key, "fp-1").await;
    rule(&server, json!({ "cidr": "127.0.0.0/8", "action": "deny" })).await;
    assert_eq!(s(&server.validate(&key, "fp-1").await["code"]), "VALID", "an IPv4 rule does not name ::1");
    rule(&server, json!({ "cidr": "::1/128", "action": "deny", "license": id })).await;
    assert_eq!(s(&server.validate(&key, "fp-1").await["code"]), "IP_BLOCKED");
    assert_error(&server.activate(&key, "fp-2").await, StatusCode::FORBIDDEN, "ip_blocked", "activate from ::1");
    let (_, ips) = server.admin(Method::GET, &format!("/v1/licenses/{id}/ips"), None).await;
    assert_eq!(
        ips["ips"][0],
        json!({ "ip": "::1", "first_seen": ips["ips"][0]["first_seen"], "last_seen": ips["ips"][0]["last_seen"], "requests": 2, "blocked": 2 })
    );
    server.stop().await;
}

#[tokio::test]
async fn configured_global_rules_apply_beside_stored_ones_and_are_listed() {
    let server = Server::start_configured(BEHIND_PROXY, Arc::new(issuer::SystemClock), |config| {
        config.ip_rules.deny = vec!["192.0.2.0/24".parse().unwrap()];
        config.ip_rules.allow = vec!["192.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
    })
    .await;
    let (_, key) = license(&server, 3).await;
    assert_eq!(activate_from(&server, "192.1.0.1", &key, "fp-1").await.0, StatusCode::OK);
    assert_eq!(code_from(&server, "192.1.0.1", &key).await, "VALID");
    assert_eq!(code_from(&server, "2001:db8::1", &key).await, "VALID");
    assert_eq!(code_from(&server, "192.0.2.1", &key).await, "IP_BLOCKED", "the configured deny before its allow");
    assert_eq!(code_from(&server, "203.0.113.1", &key).await, "IP_BLOCKED", "outside the configured allow list");
    let (_, listed) = server.admin(Method::GET, "/v1/ip-rules", None).await;
    assert_eq!(
        listed["configured"],
        json!([
            { "cidr": "192.0.0.0/8", "action": "allow" },
            { "cidr": "2001:db8::/32", "action": "allow" },
            { "cidr": "192.0.2.0/24", "action": "deny" }
        ])
    );
    let event = &server.audit_log("type=ip.blocked").await[0];
    assert_eq!(event["detail"]["rule"]["id"], Value::Null, "a rule of the configuration has no id");
    server.stop().await;
}

// Multi-threaded: the CLI runs on a thread of its own and this test waits for it, while the service (on this
// runtime) may hold SQLite's write lock in a batch it must be able to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_license_counts_the_addresses_it_was_used_from() {
    let server = Server::start(BEHIND_PROXY).await;
    let (id, key) = license(&server, 3).await;
    let (other_id, other) = license(&server, 3).await;
    let before = server.now().replace_nanosecond(0).unwrap();
    assert_eq!(activate_from(&server, "192.0.2.10", &key, "fp-1").await.0, StatusCode::OK);
    for _ in 0..5 {
        validate_from(&server, "192.0.2.10", &key, "fp-1").await;
    }
    validate_from(&server, "2001:db8::10", &key, "fp-1").await;
    validate_from(&server, "::ffff:192.0.2.10", &key, "fp-1").await;
    validate_from(&server, "198.51.100.1", &other, "fp-1").await;
    // A refusal for another reason than a rule (here a full license) is still a request from the address.
    for fingerprint in ["fp-a", "fp-b", "fp-c"] {
        activate_from(&server, "198.51.100.1", &other, fingerprint).await;
    }
    let full = activate_from(&server, "198.51.100.1", &other, "fp-d").await;
    assert_error(&full, StatusCode::CONFLICT, "too_many_machines", "full");
    rule(&server, json!({ "cidr": "2001:db8::/32", "action": "deny", "license": key })).await;
    validate_from(&server, "2001:db8::10", &key, "fp-1").await;
    let (status, ips) = server.admin(Method::GET, &format!("/v1/licenses/{key}/ips"), None).await;
    assert_eq!(status, StatusCode::OK, "{ips}");
    assert_eq!(s(&ips["license_id"]), id);
    let list = ips["ips"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{ips}");
    let v4 = list.iter().find(|u| u["ip"] == "192.0.2.10").unwrap();
    assert_eq!((v4["requests"].as_u64(), v4["blocked"].as_u64()), (Some(7), Some(0)), "activate + 5 + the mapped form");
    assert!(e2e_tests::server::ts(&v4["first_seen"]) >= before);
    let v6 = list.iter().find(|u| u["ip"] == "2001:db8::10").unwrap();
    assert_eq!((v6["requests"].as_u64(), v6["blocked"].as_u64()), (Some(1), Some(1)));
    let (_, others) = server.admin(Method::GET, &format!("/v1/licenses/{other_id}/ips"), None).await;
    assert_eq!(others["ips"].as_array().unwrap().len(), 1, "per license");
    assert_eq!(others["ips"][0]["requests"].as_u64(), Some(5), "a validation and four activations: {others}");

    // The CLI reads the same counters (JSON is the API's object) beside the running service.
    let dir = server.data_dir();
    let dir = dir.to_str().unwrap();
    let cli_view = cli::run(&["--data-dir", dir, "license", "ips", &key, "--json"]).json();
    assert_eq!(cli_view["ips"].as_array().unwrap().len(), 2, "{cli_view}");
    let table = cli::run(&["--data-dir", dir, "license", "ips", &id]).ok();
    assert!(table.contains("192.0.2.10") && table.contains("REQUESTS"), "{table}");
    server.stop().await;
}

// Multi-threaded: the CLI runs on a thread of its own and this test waits for it, while the service (on this
// runtime) may hold SQLite's write lock in a batch it must be able to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_rules_and_a_running_service_applies_them_within_seconds() {
    let server = Server::start(BEHIND_PROXY).await;
    let (_, key) = license(&server, 3).await;
    server.activated(&key, "fp-1").await;
    let dir = server.data_dir();
    let dir = dir.to_str().unwrap();
    let created = cli::run(&[
        "--data-dir",
        dir,
        "ip-rule",
        "create",
        "deny",
        "203.0.113.0/24",
        "--license",
        &key,
        "--note",
        "fraud",
        "--json",
    ])
    .json();
    assert_eq!((s(&created["level"]), s(&created["note"])), ("license", "fraud"));
    // Written by another process: the service sees it at its next rule check (once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while code_from(&server, "203.0.113.9", &key).await != "IP_BLOCKED" {
        assert!(Instant::now() < deadline, "the running service never applied the CLI's rule");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = cli::run(&["--data-dir", dir, "ip-rule", "list"]).ok();
    assert!(listed.contains("203.0.113.0/24") && listed.contains("fraud"), "{listed}");
    let err = cli::run(&["--data-dir", dir, "ip-rule", "create", "block", "10.0.0.0/8"]).failed(2);
    assert!(err.contains("action"), "{err}");
    let err = cli::run(&["--data-dir", dir, "ip-rule", "create", "deny", "10.0.0.0/99"]).failed(2);
    assert!(err.contains("10.0.0.0/99"), "{err}");
    let err = cli::run(&["--data-dir", dir, "ip-rule", "delete", "nope"]).failed(1);
    assert!(err.contains("no network rule"), "{err}");
    cli::run(&["--data-dir", dir, "ip-rule", "delete", s(&created["id"])]).ok();
    while code_from(&server, "203.0.113.9", &key).await != "VALID" {
        assert!(Instant::now() < deadline + Duration::from_secs(10), "the deletion never reached the service");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let actors: Vec<String> =
        server.audit_log("type=ip_rule.deleted").await.iter().map(|e| s(&e["actor"]["type"]).to_string()).collect();
    assert_eq!(actors, ["cli"]);
    server.stop().await;
}

#[tokio::test]
async fn rules_and_counters_reach_every_instance_on_one_postgres_database() {
    let Some(db) = e2e_tests::pg::test_database("network_two_instances").await else { return };
    let url = db.url().to_string();
    let token = "iat_network-two-instances-shared-admin-token";
    let options = Options { env_admin_token: Some(token), ..BEHIND_PROXY };
    let on_db = |url: String| move |c: &mut issuer::Config| c.database_url = Some(issuer::Secret::new(url));
    let a = Server::start_configured(options, Arc::new(issuer::SystemClock), on_db(url.clone())).await;
    let a_dir = a.data_dir();
    let b = Server::start_configured(options, Arc::new(issuer::SystemClock), move |c| {
        e2e_tests::copy_key_ring(&a_dir, &c.data_dir);
        c.database_url = Some(issuer::Secret::new(url));
    })
    .await;
    let (id, key) = license(&a, 3).await;
    a.activated(&key, "fp-1").await;
    assert_eq!(code_from(&b, "203.0.113.9", &key).await, "VALID");
    rule(&a, json!({ "cidr": "203.0.113.0/24", "action": "deny", "license": id })).await;
    assert_eq!(code_from(&a, "203.0.113.9", &key).await, "IP_BLOCKED", "at once on the instance that made it");
    let deadline = Instant::now() + Duration::from_secs(10);
    while code_from(&b, "203.0.113.9", &key).await != "IP_BLOCKED" {
        assert!(Instant::now() < deadline, "the other instance never applied the rule");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B's requests are counted by B and written within a second; A's answer shows them.
    for _ in 0..3 {
        validate_from(&b, "192.0.2.77", &key, "fp-1").await;
    }
    loop {
        let (_, ips) = a.admin(Method::GET, &format!("/v1/licenses/{id}/ips"), None).await;
        let seen = ips["ips"].as_array().unwrap().iter().find(|u| u["ip"] == "192.0.2.77").cloned();
        if seen.as_ref().and_then(|u| u["requests"].as_u64()) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(10), "B's counts never reached the store: {ips}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}

/// A flood from refused networks writes one `ip.blocked` event per license, address, operation and rule a minute,
/// with its count, however many requests it sends; nothing of it before the minute is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_a_refused_network_is_one_event_per_address_and_minute() {
    let server = Server::start_with_manual_clock(BEHIND_PROXY).await;
    // At the start of a minute, so the flood stays in it.
    let into_minute = server.now().unix_timestamp().rem_euclid(60);
    server.advance(time::Duration::seconds(60 - into_minute));
    let (id, key) = license(&server, 2).await;
    server.activated(&key, "fp-1").await;
    rule(&server, json!({ "cidr": "198.51.100.0/24", "action": "deny" })).await;
    rule(&server, json!({ "cidr": "203.0.113.0/24", "action": "deny", "license": id })).await;
    for _ in 0..40 {
        assert_eq!(code_from(&server, "198.51.100.9", &key).await, "IP_BLOCKED");
        assert_eq!(code_from(&server, "203.0.113.5", &key).await, "IP_BLOCKED");
    }
    for _ in 0..3 {
        assert_eq!(activate_from(&server, "203.0.113.5", &key, "fp-2").await.0, StatusCode::FORBIDDEN);
    }
    server.licensing.flush_usage(issuer::Flush::Due).await.unwrap();
    let (_, held) = server.admin(Method::GET, "/v1/events?type=ip.blocked", None).await;
    assert_eq!(held["events"], json!([]), "the minute is not over");
    server.advance(time::Duration::seconds(60));
    server.licensing.flush_usage(issuer::Flush::Due).await.unwrap();
    let (_, written) = server.admin(Method::GET, "/v1/events?type=ip.blocked", None).await;
    let events = written["events"].as_array().unwrap();
    let seen: Vec<(&str, &str, &Value, &Value)> = events
        .iter()
        .map(|e| (s(&e["detail"]["ip"]), s(&e["detail"]["operation"]), &e["license_id"], &e["detail"]["count"]))
        .collect();
    assert_eq!(
        seen,
        [
            ("198.51.100.9", "validate", &Value::Null, &json!(40)),
            ("203.0.113.5", "activate", &json!(id), &json!(3)),
            ("203.0.113.5", "validate", &json!(id), &json!(40)),
        ],
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["detail"]["first_seen"].as_i64() <= e["detail"]["last_seen"].as_i64()));
    // The license's address counters still count every refusal.
    let (_, ips) = server.admin(Method::GET, &format!("/v1/licenses/{id}/ips"), None).await;
    let refused = ips["ips"].as_array().unwrap().iter().find(|u| u["ip"] == "203.0.113.5").unwrap().clone();
    assert_eq!(refused["blocked"], 43, "{refused}");
    server.stop().await;
}
