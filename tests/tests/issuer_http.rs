//! End-to-end tests of the issuer's HTTP API: a real server ([`e2e_tests::server::Server`]) on 127.0.0.1 port 0 with
//! a real SQLite file, driven over HTTP, with tokens checked offline by the `verifier` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::server::{s, Options, Server, NO_LIMIT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use verifier::{verify_at, KeySet, OffsetDateTime, Validation};

fn license_body(max_machines: u32) -> Value {
    json!({
        "email": "ada@example.com",
        "product": "acme-cad",
        "max_machines": max_machines,
        "duration": "365d",
        "entitlements": ["pro", "export"],
        "metadata": { "order": "A-1001" }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_activates_validates_refreshes_deactivates_and_token_verifies_offline() {
    let server = Server::start(NO_LIMIT).await;
    let license = server.create_license(license_body(2)).await;
    let key = s(&license["key"]);
    assert_eq!(key.len(), 23);
    assert_eq!(license["status"], "active");
    assert_eq!(license["metadata"]["order"], "A-1001");

    let (status, activated) = server.activate(key, "machine-one").await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    assert_eq!(activated["machines_used"], 1);
    assert_eq!(activated["machines_remaining"], 1);
    assert_eq!(activated["license"]["product"], "acme-cad");
    let token = s(&activated["token"]).to_string();

    // Offline check with nothing but the published public keys.
    let (status, keys) = server.send(Method::GET, "/v1/keys", None, false).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = keys["keys"].as_array().unwrap().iter().map(|k| s(&k["public_key"])).collect();
    assert_eq!(keys["keys"][0]["status"], "active");
    let key_set = KeySet::from_lines(&lines).unwrap();
    let now = OffsetDateTime::now_utc();
    let verified = verify_at(&token, &key_set, &Validation::new("acme-cad", "machine-one"), now).unwrap();
    assert_eq!(verified.license.license_key, key);
    assert_eq!(verified.license.email, "ada@example.com");
    assert!(verified.license.has_entitlement("export"));
    assert_eq!(verified.license.max_machines, 2);
    assert!(verified.license.license_expires_at.is_some());
    let refresh_after = verified.license.refresh_after.unwrap();
    let token_expires = verified.license.token_expires_at.unwrap();
    assert_eq!((refresh_after - verified.license.issued_at).whole_hours(), 24);
    assert_eq!((token_expires - refresh_after).whole_days(), 7);
    assert!(verify_at(&token, &key_set, &Validation::new("acme-cad", "another-machine"), now).is_err());

    let validated = server.validate(key, "machine-one").await;
    assert_eq!(validated["valid"], true);
    assert_eq!(validated["code"], "VALID");

    // Around a token only the whitespace the format trims (HT LF FF CR SP, docs/token-format.md §2) is ignored: a
    // no-break space or a vertical tab is part of the text, so the token is malformed, as an app's verifier says.
    for text in [format!("{token}\u{a0}"), format!("{token}\u{b}")] {
        let (status, body) = server.post("/v1/refresh", json!({ "token": text })).await;
        assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_token"), "{text:?}");
        assert!(s(&body["message"]).contains("malformed"), "{body}");
    }
    let (status, refreshed) = server.post("/v1/refresh", json!({ "token": format!("\t {token}\r\n") })).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let new_token = s(&refreshed["token"]);
    verify_at(new_token, &key_set, &Validation::new("acme-cad", "machine-one"), now).unwrap();

    let (status, deactivated) =
        server.post("/v1/deactivate", json!({ "key": key, "fingerprint": "machine-one" })).await;
    assert_eq!(status, StatusCode::OK, "{deactivated}");
    assert_eq!(deactivated["machines_used"], 0);
    assert_eq!(deactivated["machines_remaining"], 2);
    assert_eq!(server.validate(key, "machine-one").await["code"], "NOT_ACTIVATED");
    let (status, again) = server.post("/v1/deactivate", json!({ "key": key, "fingerprint": "machine-one" })).await;
    assert_eq!((status, s(&again["code"])), (StatusCode::NOT_FOUND, "not_activated"));

    // A refresh after deactivation says why it is refused.
    let (status, refused) = server.post("/v1/refresh", json!({ "token": token })).await;
    assert_eq!((status, s(&refused["code"])), (StatusCode::FORBIDDEN, "not_activated"));

    // The event log has every change, with the client's address; a validation is counted, not logged, and the
    // refused one is logged once its minute is over (here: at the flush of a stopping service).
    let id = s(&license["id"]);
    let (status, events) = server.admin(Method::GET, &format!("/v1/licenses/{id}/events"), None).await;
    assert_eq!(status, StatusCode::OK);
    // (The refusal's minute may have ended meanwhile: it is checked below.)
    let kinds: Vec<&str> =
        events["events"].as_array().unwrap().iter().map(|e| s(&e["kind"])).filter(|k| *k != "validated").collect();
    assert_eq!(kinds, ["created", "activated", "refreshed", "deactivated", "refreshed"]);
    server.licensing.flush_usage(issuer::Flush::All).await.unwrap();
    let refused = server.events_of_kind(id, "validated").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["detail"]["code"], "NOT_ACTIVATED");
    assert_eq!(refused[0]["detail"]["count"], 1);
    let (status, usage) = server.admin(Method::GET, &format!("/v1/licenses/{id}/usage"), None).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["validation_count"], 2, "{usage}");
    let today = usage["days"].as_array().unwrap().last().unwrap();
    assert_eq!((&today["validations"], &today["activations"], &today["machines"]), (&json!(2), &json!(1), &json!(1)));
    let (_, shown) = server.admin(Method::GET, &format!("/v1/licenses/{id}"), None).await;
    assert_eq!(shown["validation_count"], 2, "{shown}");
    assert!(shown["last_validated_at"].is_string(), "{shown}");
    let activation = &events["events"][1];
    assert_eq!(activation["fingerprint"], "machine-one");
    assert_eq!(activation["client_ip"], "127.0.0.1");

    // Token size (docs/token-format.md §1): an ordinary activation, with a real 22-character fingerprint, a
    // 23-character key, a 20-character email, two entitlements and an expiry, gives a token of at most 300 characters.
    let mut typical_body = license_body(1);
    typical_body["email"] = json!("ada@lovelace-labs.io");
    let typical = server.create_license(typical_body).await;
    let fingerprint = verifier::fingerprint("acme-cad", "test-install-id");
    assert_eq!(fingerprint.len(), 22);
    let (status, activated) = server.activate(s(&typical["key"]), &fingerprint).await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    let typical_token = s(&activated["token"]);
    assert!(typical_token.len() <= 300, "{} characters: {typical_token}", typical_token.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_every_result_code() {
    let server = Server::start(NO_LIMIT).await;
    let license = server.create_license(license_body(2)).await;
    let key = s(&license["key"]).to_string();
    let id = s(&license["id"]).to_string();
    server.activate(&key, "m1").await;

    assert_eq!(server.validate(&key, "m1").await["code"], "VALID");
    assert_eq!(server.validate(&key, "m-unknown").await["code"], "NOT_ACTIVATED");

    let unknown_key = issuer::LicenseKey::generate().unwrap().to_string();
    let not_found = server.validate(&unknown_key, "m1").await;
    assert_eq!((not_found["valid"].clone(), not_found["code"].clone()), (json!(false), json!("NOT_FOUND")));

    let (_, mismatch) =
        server.post("/v1/validate", json!({ "key": key, "fingerprint": "m1", "product": "other-app" })).await;
    assert_eq!(mismatch["code"], "PRODUCT_MISMATCH");
    let (_, matching) =
        server.post("/v1/validate", json!({ "key": key, "fingerprint": "m1", "product": "acme-cad" })).await;
    assert_eq!(matching["code"], "VALID");

    // Slots lowered below the machines in use.
    server.activate(&key, "m2").await;
    let (status, _) =
        server.admin(Method::PATCH, &format!("/v1/licenses/{id}"), Some(json!({ "max_machines": 1 }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.validate(&key, "m1").await["code"], "TOO_MANY_MACHINES");
    server.admin(Method::PATCH, &format!("/v1/licenses/{id}"), Some(json!({ "max_machines": 2 }))).await;

    let (status, _) = server.admin(Method::POST, &format!("/v1/licenses/{id}/suspend"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.validate(&key, "m1").await["code"], "SUSPENDED");
    let (status, reinstated) = server.admin(Method::POST, &format!("/v1/licenses/{id}/reinstate"), None).await;
    assert_eq!((status, s(&reinstated["status"])), (StatusCode::OK, "active"));
    assert_eq!(server.validate(&key, "m1").await["code"], "VALID");

    let (status, _) = server.admin(Method::POST, &format!("/v1/licenses/{id}/revoke"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.validate(&key, "m1").await["code"], "REVOKED");
    let (status, refused) = server.admin(Method::POST, &format!("/v1/licenses/{id}/reinstate"), None).await;
    assert_eq!((status, s(&refused["code"])), (StatusCode::CONFLICT, "status_conflict"));
    // The answer carries the state the request lost to.
    assert_eq!((s(&refused["status"]), s(&refused["license"]["id"])), ("revoked", id.as_str()));
    assert!(s(&refused["message"]).contains("revocation is final"), "{refused}");
    let (status, again) = server.admin(Method::POST, &format!("/v1/licenses/{id}/revoke"), None).await;
    assert_eq!((status, s(&again["status"])), (StatusCode::OK, "revoked"), "revoking again is a no-op");

    let mut expired_body = license_body(1);
    expired_body["duration"] = Value::Null;
    expired_body["expires_at"] = json!("2020-01-01T00:00:00Z");
    let expired = server.create_license(expired_body).await;
    let expired_key = s(&expired["key"]);
    assert_eq!(server.validate(expired_key, "m1").await["code"], "EXPIRED");
    let (status, body) = server.activate(expired_key, "m1").await;
    assert_eq!((status, s(&body["code"])), (StatusCode::FORBIDDEN, "expired"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_activations_on_three_slots_give_exactly_three() {
    let server = Server::start(NO_LIMIT).await;
    for round in 0..5 {
        let license = server.create_license(license_body(3)).await;
        let key = s(&license["key"]).to_string();
        let id = s(&license["id"]).to_string();
        let requests = (0..200).map(|i| {
            let client = server.client.clone();
            let url = format!("{}/v1/activate", server.base);
            let body = json!({ "key": key, "fingerprint": format!("round{round}-machine{i}") });
            tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
        });
        let statuses = futures::future::join_all(requests).await;
        let ok = statuses.iter().filter(|s| *s.as_ref().unwrap() == StatusCode::OK).count();
        let full = statuses.iter().filter(|s| *s.as_ref().unwrap() == StatusCode::CONFLICT).count();
        assert_eq!((ok, full), (3, 197), "round {round}");
        let (_, machines) = server.admin(Method::GET, &format!("/v1/licenses/{id}/machines"), None).await;
        assert_eq!(machines["machines"].as_array().unwrap().len(), 3, "round {round}");
        println!("round {round}: {ok} activations succeeded, {full} refused with 409, 3 machines stored");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactivating_an_active_machine_returns_a_fresh_token_without_using_a_slot() {
    let clock = std::sync::Arc::new(issuer::ManualClock::starting_now());
    let server = Server::start_with_clock(NO_LIMIT, clock.clone()).await;
    let license = server.create_license(license_body(1)).await;
    let key = s(&license["key"]);
    let (_, first) = server.activate(key, "m1").await;
    assert_eq!(first["new_machine"], true);
    clock.advance(time::Duration::seconds(1)); // tokens carry whole seconds: a later second, another token
    let (status, second) = server.activate(key, "m1").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["new_machine"], false);
    assert_eq!(second["machines_used"], 1);
    assert_ne!(first["token"], second["token"]);
    let (status, third) = server.activate(key, "m2").await;
    assert_eq!((status, s(&third["code"])), (StatusCode::CONFLICT, "too_many_machines"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_creates_one_license_and_refuses_a_different_body() {
    let server = Server::start(NO_LIMIT).await;
    let post = |body: Value, idem: &'static str| {
        server
            .client
            .post(format!("{}/v1/licenses", server.base))
            .bearer_auth(&server.admin)
            .header("Idempotency-Key", idem)
            .json(&body)
            .send()
    };
    let first = post(license_body(3), "order-42").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let retry = post(license_body(3), "order-42").await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(retry["key"], first["key"]);
    let other = post(license_body(5), "order-42").await.unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT);
    assert_eq!(other.json::<Value>().await.unwrap()["code"], "idempotency_conflict");
    let (_, list) = server.admin(Method::GET, "/v1/licenses", None).await;
    assert_eq!(list["licenses"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_refuse_missing_and_wrong_tokens_and_accept_the_env_token() {
    let server = Server::start(Options { env_admin_token: Some("automation-token"), ..NO_LIMIT }).await;
    let url = format!("{}/v1/licenses", server.base);
    let missing = server.client.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "unauthorized");
    let wrong = server.client.get(&url).bearer_auth("iat_wrong").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let basic = server.client.get(&url).basic_auth("admin", Some("x")).send().await.unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let from_env = server.client.get(&url).bearer_auth("automation-token").send().await.unwrap();
    assert_eq!(from_env.status(), StatusCode::OK);
    let printed = server.client.get(&url).bearer_auth(&server.admin).send().await.unwrap();
    assert_eq!(printed.status(), StatusCode::OK);
    let post = server.client.post(&url).json(&license_body(1)).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let server = Server::start(NO_LIMIT).await;
    let url = |p: &str| format!("{}{p}", server.base);
    let code_of = |r: reqwest::Response| async move {
        let status = r.status();
        let body: Value = r.json().await.expect("every error is JSON");
        assert!(body["message"].is_string(), "{body}");
        (status, body["code"].as_str().unwrap().to_string())
    };
    let json_ct = "application/json";

    let malformed = server.client.post(url("/v1/activate")).header("content-type", json_ct).body("{\"key\":");
    assert_eq!(code_of(malformed.send().await.unwrap()).await, (StatusCode::BAD_REQUEST, "malformed_json".into()));

    let no_ct = server.client.post(url("/v1/activate")).body("{}");
    assert_eq!(
        code_of(no_ct.send().await.unwrap()).await,
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type".into())
    );

    let huge = format!("{{\"key\":\"{}\",\"fingerprint\":\"x\"}}", "A".repeat(100 * 1024));
    let too_large = server.client.post(url("/v1/activate")).header("content-type", json_ct).body(huge);
    assert_eq!(
        code_of(too_large.send().await.unwrap()).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into())
    );

    let missing_field = server.client.post(url("/v1/activate")).json(&json!({ "key": "x" }));
    assert_eq!(
        code_of(missing_field.send().await.unwrap()).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field".into())
    );

    let typo =
        server.client.post(url("/v1/validate")).json(&json!({ "key": "7KQ3M-9XW2T-H4RVD-PNC8", "fingerprint": "m" }));
    let (status, code) = code_of(typo.send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_license_key"));
    let (_, body) = server.post("/v1/activate", json!({ "key": "7KQ3M-9XW2T-H4RVD-PNC8J", "fingerprint": "m" })).await;
    if body["code"] == "invalid_license_key" {
        assert!(s(&body["message"]).contains("mistyped"), "{body}");
    }

    let license = server.create_license(license_body(1)).await;
    let key = s(&license["key"]);
    let (status, body) = server.post("/v1/activate", json!({ "key": key, "fingerprint": "has space" })).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"));
    let (status, body) = server.post("/v1/refresh", json!({ "token": "lic1.garbage" })).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_token"));

    let invalid_creates = [
        json!({ "email": "not-an-email", "product": "p", "max_machines": 1 }),
        json!({ "email": "a@b.c", "product": "bad product", "max_machines": 1 }),
        json!({ "email": "a@b.c", "product": "p", "max_machines": 0 }),
        json!({ "email": "a@b.c", "product": "p", "max_machines": -1 }),
        json!({ "email": "a@b.c", "product": "p", "max_machines": 1, "expires_at": "tomorrow" }),
        json!({ "email": "a@b.c", "product": "p", "max_machines": 1, "duration": "1y" }),
        json!({ "email": "a@b.c", "product": "p", "max_machines": 1, "duration": "1d", "expires_at": "2030-01-01T00:00:00Z" }),
        json!({ "email": "a@b.c", "product": "p", "max_machines": 1, "metadata": [1, 2] }),
        json!({ "email": "a@b.c", "product": "p", "max_machines": 1, "entitlements": ["a", "a"] }),
        json!({ "email": "a@b.c", "product": "p", "max_machines": 1, "max_machine": 3 }),
        json!({ "email": "a@b.c", "product": "p" }),
    ];
    for body in invalid_creates {
        let (status, answer) = server.admin(Method::POST, "/v1/licenses", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {answer}");
        assert_eq!(answer["code"], "invalid_field", "{body} -> {answer}");
    }
    let (status, body) = server.admin(Method::GET, "/v1/licenses?status=bogus", None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"));
    let (status, body) = server.admin(Method::GET, "/v1/licenses?limit=abc", None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"));
    let (status, body) = server.admin(Method::GET, "/v1/licenses?cursor=zzz", None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"));
    let (status, body) = server.admin(Method::GET, "/v1/licenses/not-an-id", None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"));
    let missing_id = "0190f5a4-7c1e-7a3b-9c4d-5e6f708192a3";
    let (status, body) = server.admin(Method::GET, &format!("/v1/licenses/{missing_id}"), None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::NOT_FOUND, "license_not_found"));

    let (status, body) = server.send(Method::GET, "/v1/nothing-here", None, false).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::NOT_FOUND, "route_not_found"));
    let (status, body) = server.send(Method::GET, "/v1/activate", None, false).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let (status, body) = server.admin(Method::PUT, "/v1/licenses", None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_suspension_reach_refresh() {
    let server = Server::start(NO_LIMIT).await;
    let license = server.create_license(license_body(1)).await;
    let (key, id) = (s(&license["key"]), s(&license["id"]));
    let (_, activated) = server.activate(key, "m1").await;
    let token = s(&activated["token"]);

    server.admin(Method::POST, &format!("/v1/licenses/{id}/suspend"), None).await;
    let (status, body) = server.post("/v1/refresh", json!({ "token": token })).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::FORBIDDEN, "suspended"));
    server.admin(Method::POST, &format!("/v1/licenses/{id}/reinstate"), None).await;
    let (status, _) = server.post("/v1/refresh", json!({ "token": token })).await;
    assert_eq!(status, StatusCode::OK);

    server.admin(Method::POST, &format!("/v1/licenses/{id}/revoke"), None).await;
    let (status, body) = server.post("/v1/refresh", json!({ "token": token })).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::FORBIDDEN, "revoked"));
    let (status, body) = server.activate(key, "m2").await;
    assert_eq!((status, s(&body["code"])), (StatusCode::FORBIDDEN, "revoked"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_filters_pages_gets_by_key_and_removes_machines() {
    let server = Server::start(NO_LIMIT).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let mut body = license_body(2);
        body["email"] = json!(if i % 2 == 0 { "even@example.com" } else { "odd@example.com" });
        created.push(server.create_license(body).await);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/licenses?limit=2".to_string();
    loop {
        let (status, page) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["licenses"].as_array().unwrap().iter().map(|l| l["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/licenses?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, created.iter().map(|l| l["id"].clone()).collect::<Vec<_>>());
    let (_, evens) = server.admin(Method::GET, "/v1/licenses?email=EVEN@example.com&product=acme-cad", None).await;
    assert_eq!(evens["licenses"].as_array().unwrap().len(), 3);
    server.admin(Method::POST, &format!("/v1/licenses/{}/suspend", s(&created[0]["id"])), None).await;
    let (_, suspended) = server.admin(Method::GET, "/v1/licenses?status=suspended", None).await;
    assert_eq!(suspended["licenses"].as_array().unwrap().len(), 1);

    let key = s(&created[1]["key"]);
    let lowercase = key.to_lowercase();
    let (status, by_key) = server.admin(Method::GET, &format!("/v1/licenses/{lowercase}"), None).await;
    assert_eq!((status, &by_key["id"]), (StatusCode::OK, &created[1]["id"]));

    server.activate(key, "m1").await;
    server.activate(key, "m2").await;
    let (status, full) = server.activate(key, "m3").await;
    assert_eq!(status, StatusCode::CONFLICT, "{full}");
    let machines_path = format!("/v1/licenses/{key}/machines");
    let (_, machines) = server.admin(Method::GET, &machines_path, None).await;
    assert_eq!(machines["machines"].as_array().unwrap().len(), 2);
    let (status, _) = server.admin(Method::DELETE, &format!("{machines_path}/m1"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.admin(Method::DELETE, &format!("{machines_path}/m1"), None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::NOT_FOUND, "machine_not_found"));
    let (status, _) = server.activate(key, "m3").await;
    assert_eq!(status, StatusCode::OK);

    let (status, updated) = server
        .admin(
            Method::PATCH,
            &format!("/v1/licenses/{key}"),
            Some(json!({ "expires_at": null, "entitlements": ["basic"], "metadata": { "note": "upgraded" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["expires_at"], Value::Null);
    assert_eq!(updated["entitlements"], json!(["basic"]));
    assert_eq!(updated["metadata"], json!({ "note": "upgraded" }));
    let (_, events) = server.admin(Method::GET, &format!("/v1/licenses/{key}/events?limit=100"), None).await;
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| s(&e["kind"])).collect();
    assert!(kinds.contains(&"machine_removed") && kinds.contains(&"updated"), "{kinds:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_are_rate_limited_per_ip_with_retry_after() {
    let server = Server::start(Options { rate_per_second: 1, rate_burst: 3, ..NO_LIMIT }).await;
    let key = issuer::LicenseKey::generate().unwrap().to_string();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let resp = server
            .client
            .post(format!("{}/v1/validate", server.base))
            .json(&json!({ "key": key, "fingerprint": "m" }))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            assert_eq!(resp.json::<Value>().await.unwrap()["code"], "rate_limited");
        }
    }
    assert_eq!(statuses[..3], [StatusCode::OK; 3]);
    assert!(statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    assert!(retry_after.is_some_and(|s| s >= 1));
    // Health checks and the admin API are not limited.
    let (status, _) = server.send(Method::GET, "/healthz", None, false).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.admin(Method::GET, "/v1/licenses", None).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served_and_lists_every_route() {
    let server = Server::start(NO_LIMIT).await;
    let (status, doc) = server.send(Method::GET, "/v1/openapi.json", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s(&doc["openapi"]).starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/healthz", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/activate", "post"),
        ("/v1/validate", "post"),
        ("/v1/refresh", "post"),
        ("/v1/deactivate", "post"),
        ("/v1/keys", "get"),
        ("/v1/offline/activate", "post"),
        ("/v1/offline/deactivate", "post"),
        ("/v1/licenses", "post"),
        ("/v1/licenses", "get"),
        ("/v1/licenses/{id}", "get"),
        ("/v1/licenses/{id}", "patch"),
        ("/v1/licenses/{id}/suspend", "post"),
        ("/v1/licenses/{id}/reinstate", "post"),
        ("/v1/licenses/{id}/revoke", "post"),
        ("/v1/licenses/{id}/machines", "get"),
        ("/v1/licenses/{id}/machines/{fingerprint}", "delete"),
        ("/v1/licenses/{id}/events", "get"),
        ("/v1/licenses/{id}/ips", "get"),
        ("/v1/licenses/{id}/usage", "get"),
        ("/v1/ip-rules", "post"),
        ("/v1/ip-rules", "get"),
        ("/v1/ip-rules/{id}", "delete"),
        ("/v1/revocations", "get"),
        ("/v1/policies", "post"),
        ("/v1/policies", "get"),
        ("/v1/policies/{name}", "get"),
        ("/v1/policies/{name}", "patch"),
        ("/v1/policies/{name}", "delete"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/{id}", "get"),
        ("/v1/webhooks/{id}", "delete"),
        ("/v1/webhooks/{id}/rotate-secret", "post"),
        ("/v1/webhooks/{id}/enable", "post"),
        ("/v1/webhooks/{id}/deliveries", "get"),
        ("/v1/webhooks/{id}/deliveries/{delivery}/resend", "post"),
        ("/v1/admin-tokens", "post"),
        ("/v1/admin-tokens", "get"),
        ("/v1/admin-tokens/{id}", "delete"),
        ("/v1/events", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from the document");
    }
    // And every documented operation is served (never the unknown-route or wrong-method answer).
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "0190f5a4-7c1e-7a3b-9c4d-5e6f708192a3")
            .replace("{fingerprint}", "m")
            .replace("{name}", "pro-annual")
            .replace("{delivery}", "1");
        for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
            let (status, answer) = server.send(method.clone(), &concrete, body, true).await;
            let code = answer.get("code").and_then(Value::as_str).unwrap_or("");
            assert!(code != "route_not_found" && code != "method_not_allowed", "{method} {path}: {status} {answer}");
            assert!(status != StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}: {answer}");
            operations += 1;
        }
    }
    assert_eq!(operations, expected.len(), "the document lists exactly the served operations");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_reaches_the_running_service_without_a_restart() {
    let server = Server::start(NO_LIMIT).await;
    let license = server.create_license(license_body(2)).await;
    let (status, activated) = server.activate(s(&license["key"]), "machine-one").await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    let old_token = s(&activated["token"]).to_string();
    let old_key = verifier::UntrustedToken::parse(&old_token).unwrap().key_id();

    // Rotate the ring as `issuer keys rotate` does: the files, then the record in the store (an instance takes a
    // reloaded ring only when the store records its signing key).
    let data_dir = server.data_dir();
    let keys_dir = data_dir.join(issuer::KEYS_DIR);
    let mut ring = keys::KeyRing::open(&keys_dir).unwrap();
    let new_key = ring.rotate().unwrap();
    ring.save(&keys_dir).unwrap();
    let config = issuer::Config::load(None, |_| None, issuer::Flags::new(None, Some(data_dir), None)).unwrap();
    let store = issuer::open_store(&config).await.unwrap();
    let (records, at) = (issuer::recorded_keys_of(&ring), OffsetDateTime::now_utc());
    let _: bool = issuer::StoreExt::transact(&*store, move |tx| {
        let how = issuer::RecordKeys::Update { expect_active: vec![old_key.to_string()] };
        Box::pin(async move { tx.record_keys(&records, how, at).await })
    })
    .await
    .unwrap();

    // A token signed with the new key (as another instance that already reloaded would issue) is refreshed at once:
    // the unknown key id makes this instance reload its ring instead of refusing.
    let claims = verifier::UntrustedToken::parse(&old_token).unwrap().untrusted_claims().unwrap();
    let from_elsewhere = ring.sign(&claims).unwrap();
    let (status, refreshed) = server.post("/v1/refresh", json!({ "token": from_elsewhere })).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let signed_by = verifier::UntrustedToken::parse(s(&refreshed["token"])).unwrap().key_id();
    assert_eq!(signed_by, new_key, "new tokens are signed with the new active key");

    // The published key set has both keys, and tokens of the retired key still refresh.
    let (_, keys) = server.send(Method::GET, "/v1/keys", None, false).await;
    let ids: Vec<&str> = keys["keys"].as_array().unwrap().iter().map(|k| s(&k["key_id"])).collect();
    assert_eq!(ids, [new_key.to_string(), old_key.to_string()]);
    let (status, body) = server.post("/v1/refresh", json!({ "token": old_token })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_clients_are_told_apart_by_x_forwarded_for() {
    let validate = |server: &Server, forwarded_for: &'static str| {
        let req = server.client.post(format!("{}/v1/validate", server.base));
        let key = issuer::LicenseKey::generate().unwrap().to_string();
        async move {
            req.header("X-Forwarded-For", forwarded_for)
                .json(&json!({ "key": key, "fingerprint": "m" }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // 127.0.0.1 (the test client) is the proxy: each forwarded client has its own bucket of 2.
    let server =
        Server::start(Options { rate_per_second: 1, rate_burst: 2, trusted_proxies: &["127.0.0.1"], ..NO_LIMIT }).await;
    for _ in 0..2 {
        assert_eq!(validate(&server, "203.0.113.7").await, StatusCode::OK);
    }
    assert_eq!(validate(&server, "203.0.113.7").await, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not limited by the first one; a forged left part is ignored.
    assert_eq!(validate(&server, "198.51.100.1, 203.0.113.8").await, StatusCode::OK);
    assert_eq!(validate(&server, "203.0.113.8").await, StatusCode::OK);
    // The event log records the forwarded client.
    let license = server.create_license(license_body(1)).await;
    let req = server.client.post(format!("{}/v1/activate", server.base)).header("X-Forwarded-For", "192.0.2.44");
    let resp = req.json(&json!({ "key": s(&license["key"]), "fingerprint": "m1" })).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id = s(&license["id"]);
    let (_, events) = server.admin(Method::GET, &format!("/v1/licenses/{id}/events"), None).await;
    assert_eq!(events["events"][1]["client_ip"], "192.0.2.44");
    server.stop().await;

    // Without trusted proxies the header is ignored: every request is the TCP peer's.
    let server = Server::start(Options { rate_per_second: 1, rate_burst: 2, ..NO_LIMIT }).await;
    assert_eq!(validate(&server, "203.0.113.7").await, StatusCode::OK);
    assert_eq!(validate(&server, "203.0.113.8").await, StatusCode::OK);
    assert_eq!(validate(&server, "203.0.113.9").await, StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_refuse_unknown_parameters_show_expired_licenses_and_search_by_email_prefix() {
    let server = Server::start(NO_LIMIT).await;
    let mut lapsed = license_body(1);
    lapsed["duration"] = Value::Null;
    lapsed["expires_at"] = json!("2020-01-01T00:00:00Z");
    lapsed["email"] = json!("Old.Customer@example.com");
    let lapsed = server.create_license(lapsed).await;
    assert_eq!(lapsed["status"], "expired", "a license created already past its expiry shows as expired");
    let current = server.create_license(license_body(1)).await;
    assert_eq!(current["status"], "active");

    let (status, body) = server.admin(Method::GET, "/v1/licenses?emial=ada@example.com", None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::BAD_REQUEST, "unknown_parameter"), "{body}");
    assert!(s(&body["message"]).contains("emial"), "{body}");
    let (status, body) =
        server.admin(Method::GET, &format!("/v1/licenses/{}/events?limt=5", s(&current["id"])), None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::BAD_REQUEST, "unknown_parameter"));

    let ids =
        |list: &Value| list["licenses"].as_array().unwrap().iter().map(|l| s(&l["id"]).to_string()).collect::<Vec<_>>();
    let (_, expired) = server.admin(Method::GET, "/v1/licenses?status=expired", None).await;
    assert_eq!(ids(&expired), [s(&lapsed["id"])]);
    assert_eq!(expired["licenses"][0]["status"], "expired");
    let (_, active) = server.admin(Method::GET, "/v1/licenses?status=active", None).await;
    assert_eq!(ids(&active), [s(&current["id"])], "active excludes expired");
    let (_, shown) = server.admin(Method::GET, &format!("/v1/licenses/{}", s(&lapsed["id"])), None).await;
    assert_eq!(shown["status"], "expired");

    let (_, found) = server.admin(Method::GET, "/v1/licenses?email_prefix=old.", None).await;
    assert_eq!(ids(&found), [s(&lapsed["id"])]);
    let (_, exact) = server.admin(Method::GET, "/v1/licenses?email=old.", None).await;
    assert!(ids(&exact).is_empty(), "email is an exact match");
    let (status, body) = server.admin(Method::GET, "/v1/licenses?email_prefix=", None).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_sent_to_the_wrong_offline_route_says_which_code_it_is() {
    let server = Server::start(NO_LIMIT).await;
    let dea1 = verifier::DeactivationCode { license_id: verifier::LicenseId([7; 16]), proof: [9; 16] }.to_code();
    let (status, body) = server.post("/v1/offline/activate", json!({ "request": dea1 })).await;
    assert_eq!((status, s(&body["code"])), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_code"), "{body}");
    let message = s(&body["message"]);
    assert!(message.contains("DEA1 deactivation code") && !message.contains("ask for a new one"), "{message}");
    server.stop().await;
}
