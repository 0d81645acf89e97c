//! End-to-end tests of policies (docs/policies.md): named license terms served over HTTP (`/v1/policies`) — creating,
//! listing, patching and deleting them and every refusal — licenses created from them, a patched policy reaching the
//! licenses that use it, overage, `offline_allowed` and the sliding-window deactivation limit. Leases and floating
//! seats are in `leases.rs`.
//!
//! Each test runs a real server ([`e2e_tests::server::Server`]) on 127.0.0.1 port 0 with a real SQLite file, driven
//! over HTTP. Time is a [`issuer::ManualClock`] the tests move: nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use e2e_tests::server::{assert_error, rfc3339, s, ts, Server, NO_LIMIT, PRODUCT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};
use verifier::UntrustedToken;

/// The view without its times (checked apart).
fn without_times(view: &Value) -> Value {
    let mut v = view.clone();
    let map = v.as_object_mut().unwrap_or_else(|| panic!("not an object: {view}"));
    map.remove("created_at");
    map.remove("updated_at");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_crud_and_every_refusal() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    let created_at = server.now();

    // Create: every field, durations given in several forms and shown in the largest unit dividing them.
    let pro = server
        .create_policy(json!({
            "name": "pro-annual",
            "product": PRODUCT,
            "max_machines": 3,
            "duration": "52w",
            "entitlements": ["pro"],
            "refresh_interval": 86400,
            "offline_grace": "7d",
            "lease": "90m",
            "floating": false,
            "overage": "+2",
            "offline_allowed": true,
            "deactivation_limit": 3,
            "deactivation_period": "2w"
        }))
        .await;
    let pro_view = json!({
        "name": "pro-annual",
        "product": PRODUCT,
        "max_machines": 3,
        "duration": "364d",
        "entitlements": ["pro"],
        "refresh_interval": "1d",
        "offline_grace": "7d",
        "lease": "90m",
        "floating": false,
        "overage": "+2",
        "offline_allowed": true,
        "deactivation_limit": 3,
        "deactivation_period": "14d",
        "kind": "machine"
    });
    assert_eq!(without_times(&pro), pro_view, "the view of a policy created with every field");
    assert_eq!(ts(&pro["created_at"]), created_at, "created_at is the service clock's now: {pro}");
    assert_eq!(ts(&pro["updated_at"]), created_at, "a new policy was updated when it was created: {pro}");

    // The defaults of every optional field.
    let basic = server.create_policy(json!({ "name": "basic", "product": PRODUCT, "max_machines": 1 })).await;
    let basic_view = json!({
        "name": "basic",
        "product": PRODUCT,
        "max_machines": 1,
        "duration": null,
        "entitlements": [],
        "refresh_interval": null,
        "offline_grace": null,
        "lease": null,
        "floating": false,
        "overage": "none",
        "offline_allowed": true,
        "deactivation_limit": null,
        "deactivation_period": "30d",
        "kind": "machine"
    });
    assert_eq!(without_times(&basic), basic_view, "the defaults of a policy given only its required fields");

    // Seconds that no larger unit divides stay seconds; hours; a factor overage.
    let trial = server
        .create_policy(json!({
            "name": "trial",
            "product": PRODUCT,
            "max_machines": 1,
            "duration": 100000,
            "offline_grace": "36h",
            "overage": "1.25x"
        }))
        .await;
    assert_eq!(
        (&trial["duration"], &trial["offline_grace"], &trial["overage"]),
        (&json!("100000s"), &json!("36h"), &json!("1.25x")),
        "durations in the largest unit dividing them: {trial}"
    );
    let floating = server
        .create_policy(json!({
            "name": "lab-floating", "product": PRODUCT, "max_machines": 5, "floating": true, "lease": "10m"
        }))
        .await;
    assert_eq!((&floating["floating"], &floating["lease"]), (&json!(true), &json!("10m")), "{floating}");

    // Get, and the list ordered by name (not by creation).
    let (status, got) = server.admin(Method::GET, "/v1/policies/pro-annual", None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got, pro, "GET answers the view POST answered");
    let (status, list) = server.admin(Method::GET, "/v1/policies", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: Vec<&str> = list["policies"].as_array().unwrap().iter().map(|p| s(&p["name"])).collect();
    assert_eq!(names, ["basic", "lab-floating", "pro-annual", "trial"], "the list is ordered by name: {list}");
    assert_eq!(list["policies"][2], pro, "the list shows the same views");

    // Refusals of POST: nothing is created by any of them.
    let base = || json!({ "name": "refused", "product": PRODUCT, "max_machines": 1 });
    let with = |field: &str, value: Value| {
        let mut body = base();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = base();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    // (body, the field the message names, if the spec says which)
    let refused: Vec<(Value, Option<&str>)> = vec![
        (with("name", json!("Pro Annual")), Some("name")),
        (with("name", json!("-pro")), Some("name")),
        (with("name", json!("pro_annual")), Some("name")),
        (with("name", json!("")), Some("name")),
        (with("name", json!("a".repeat(65))), Some("name")),
        (with("floating", json!(true)), Some("floating")),
        (with("lease", json!("30s")), Some("lease")),
        (with("lease", json!(59)), Some("lease")),
        (with("overage", json!("abc")), Some("overage")),
        (with("overage", json!("0.5x")), Some("overage")),
        (with("overage", json!("+0")), Some("overage")),
        (with("overage", json!("1.005x")), Some("overage")),
        (with("overage", json!("1x")), Some("overage")),
        (with("overage", json!("11x")), Some("overage")),
        (with("overage", json!("-1")), Some("overage")),
        (with("deactivation_limit", json!(0)), None),
        (with("deactivation_period", json!("400d")), None),
        (with("deactivation_period", json!("12h")), None),
        (with("max_machines", json!(0)), None),
        (with("duration", json!("1y")), None),
        (with("colour", json!("red")), None),
        (without("product"), None),
        (without("max_machines"), None),
        (without("name"), None),
    ];
    for (body, field) in refused {
        let answer = server.admin(Method::POST, "/v1/policies", Some(body.clone())).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", &format!("POST {body}"));
        if let Some(field) = field {
            assert!(s(&answer.1["message"]).contains(field), "POST {body}: the message names {field}: {}", answer.1);
        }
    }
    // A lease of exactly one minute is the shortest allowed.
    let minute =
        server.create_policy(json!({ "name": "minute", "product": PRODUCT, "max_machines": 1, "lease": 60 })).await;
    assert_eq!(minute["lease"], "1m", "{minute}");
    let answer = server
        .admin(
            Method::POST,
            "/v1/policies",
            Some(json!({ "name": "basic", "product": "other-app", "max_machines": 2 })),
        )
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "policy_exists", "the same name again");
    let (_, list) = server.admin(Method::GET, "/v1/policies", None).await;
    let names: Vec<&str> = list["policies"].as_array().unwrap().iter().map(|p| s(&p["name"])).collect();
    assert_eq!(names, ["basic", "lab-floating", "minute", "pro-annual", "trial"], "refused requests created nothing");
    let (_, still) = server.admin(Method::GET, "/v1/policies/basic", None).await;
    assert_eq!(still, basic, "a refused duplicate changed nothing");

    // PATCH: fields change, null clears, the rest stays; updated_at moves, created_at does not.
    server.advance(Duration::seconds(1));
    let patched = server
        .patch_policy(
            "pro-annual",
            json!({
                "max_machines": 5,
                "duration": null,
                "entitlements": ["pro", "export"],
                "refresh_interval": "12h",
                "lease": null,
                "overage": "none",
                "offline_allowed": false,
                "deactivation_limit": null
            }),
        )
        .await;
    let patched_view = json!({
        "name": "pro-annual",
        "product": PRODUCT,
        "max_machines": 5,
        "duration": null,
        "entitlements": ["pro", "export"],
        "refresh_interval": "12h",
        "offline_grace": "7d",
        "lease": null,
        "floating": false,
        "overage": "none",
        "offline_allowed": false,
        "deactivation_limit": null,
        "deactivation_period": "14d",
        "kind": "machine"
    });
    assert_eq!(without_times(&patched), patched_view, "the view after a patch");
    assert_eq!(ts(&patched["created_at"]), created_at, "a patch keeps created_at: {patched}");
    assert_eq!(ts(&patched["updated_at"]), created_at + Duration::seconds(1), "a patch moves updated_at: {patched}");
    let (_, got) = server.admin(Method::GET, "/v1/policies/pro-annual", None).await;
    assert_eq!(got, patched, "GET shows the patched policy");
    let patched = server.patch_policy("pro-annual", json!({ "overage": "+5", "deactivation_period": 172800 })).await;
    assert_eq!((&patched["overage"], &patched["deactivation_period"]), (&json!("+5"), &json!("2d")), "{patched}");
    assert_eq!(patched["max_machines"], 5, "a patch leaves the fields it does not name: {patched}");

    // Refusals of PATCH.
    let refused_patches: Vec<(&str, Value, Option<&str>)> = vec![
        ("pro-annual", json!({ "name": "pro-2" }), Some("name")),
        ("pro-annual", json!({ "product": "other-app" }), Some("product")),
        ("pro-annual", json!({ "product": PRODUCT }), Some("product")),
        ("pro-annual", json!({ "colour": "red" }), None),
        ("pro-annual", json!({ "overage": "abc" }), Some("overage")),
        ("pro-annual", json!({ "lease": "30s" }), Some("lease")),
        ("pro-annual", json!({ "floating": true }), None),
        ("pro-annual", json!({ "deactivation_limit": 0 }), None),
        ("pro-annual", json!({ "deactivation_period": "400d" }), None),
        ("pro-annual", json!({ "max_machines": 0 }), None),
        ("lab-floating", json!({ "lease": null }), None),
    ];
    for (name, body, field) in refused_patches {
        let answer = server.admin(Method::PATCH, &format!("/v1/policies/{name}"), Some(body.clone())).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", &format!("PATCH {name} {body}"));
        if let Some(field) = field {
            assert!(s(&answer.1["message"]).contains(field), "PATCH {body}: the message names {field}: {}", answer.1);
        }
    }
    let (_, got) = server.admin(Method::GET, "/v1/policies/pro-annual", None).await;
    assert_eq!(got, patched, "refused patches changed nothing");
    let (_, got) = server.admin(Method::GET, "/v1/policies/lab-floating", None).await;
    assert_eq!(got, floating, "a floating policy keeps its lease");

    // Unknown policy.
    let answer = server.admin(Method::GET, "/v1/policies/nope", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "policy_not_found", "GET of an unknown policy");
    let answer = server.admin(Method::PATCH, "/v1/policies/nope", Some(json!({ "max_machines": 2 }))).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "policy_not_found", "PATCH of an unknown policy");
    let answer = server.admin(Method::DELETE, "/v1/policies/nope", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "policy_not_found", "DELETE of an unknown policy");

    // No admin token.
    let answer = server.send(Method::GET, "/v1/policies", None, false).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "GET /v1/policies without a token");
    let answer = server.send(Method::GET, "/v1/policies/basic", None, false).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "GET /v1/policies/basic without a token");
    let answer = server
        .send(Method::POST, "/v1/policies", Some(json!({ "name": "x", "product": PRODUCT, "max_machines": 1 })), false)
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "POST /v1/policies without a token");
    let answer = server.send(Method::PATCH, "/v1/policies/basic", Some(json!({ "max_machines": 9 })), false).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "PATCH without a token");
    let answer = server.send(Method::DELETE, "/v1/policies/basic", None, false).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "DELETE without a token");
    let (_, got) = server.admin(Method::GET, "/v1/policies/basic", None).await;
    assert_eq!(got, basic, "requests without a token changed nothing");

    // Delete: an unused policy goes for good; a used one stays.
    let (status, body) = server.admin(Method::DELETE, "/v1/policies/basic", None).await;
    assert_eq!((status, &body), (StatusCode::NO_CONTENT, &Value::Null), "DELETE of an unused policy");
    let answer = server.admin(Method::GET, "/v1/policies/basic", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "policy_not_found", "GET of a deleted policy");
    let answer = server.admin(Method::DELETE, "/v1/policies/basic", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "policy_not_found", "DELETE of a deleted policy");
    server.license_of("trial").await;
    let answer = server.admin(Method::DELETE, "/v1/policies/trial", None).await;
    assert_error(&answer, StatusCode::CONFLICT, "policy_in_use", "DELETE of a policy a license uses");
    assert_eq!(answer.1["licenses"], 1, "policy_in_use says how many licenses use it: {}", answer.1);
    let (status, got) = server.admin(Method::GET, "/v1/policies/trial", None).await;
    assert_eq!((status, &got), (StatusCode::OK, &trial), "a policy in use stays");
    // Its name is free again once deleted: a new policy may take it.
    server.create_policy(json!({ "name": "basic", "product": "other-app", "max_machines": 2 })).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_from_a_policy_takes_its_grants_and_explicit_fields_override() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    server
        .create_policy(json!({
            "name": "pro-annual", "product": PRODUCT, "max_machines": 3, "duration": "365d", "entitlements": ["pro"]
        }))
        .await;
    let now = server.now();

    // The grants of the policy.
    let license = server.create_license(json!({ "email": "ada@example.com", "policy": "pro-annual" })).await;
    assert_eq!(license["policy"], "pro-annual", "{license}");
    assert_eq!(license["product"], PRODUCT, "{license}");
    assert_eq!(license["max_machines"], 3, "{license}");
    assert_eq!(license["entitlements"], json!(["pro"]), "{license}");
    assert_eq!(license["status"], "active", "{license}");
    assert_eq!(ts(&license["created_at"]), now, "{license}");
    assert_eq!(
        ts(&license["expires_at"]),
        ts(&license["created_at"]) + Duration::days(365),
        "expiry = created + duration"
    );
    let id = s(&license["id"]).to_string();
    let (status, got) = server.admin(Method::GET, &format!("/v1/licenses/{id}"), None).await;
    assert_eq!((status, &got["policy"]), (StatusCode::OK, &json!("pro-annual")), "{got}");
    let (_, list) = server.admin(Method::GET, "/v1/licenses", None).await;
    assert_eq!(list["licenses"][0]["policy"], "pro-annual", "the list shows the policy: {list}");
    let activated = server.activated(s(&license["key"]), "m1").await;
    assert_eq!(activated["license"]["max_machines"], 3, "{activated}");
    assert_eq!(activated["machines_remaining"], 2, "{activated}");
    let claims = UntrustedToken::parse(s(&activated["token"])).unwrap().untrusted_claims().unwrap();
    assert_eq!(claims.entitlements, ["pro"]);
    assert_eq!(claims.license_expires_at, Some(now + Duration::days(365)));

    // Explicit fields override the grants.
    let overridden = server
        .create_license(json!({
            "email": "bob@example.com",
            "policy": "pro-annual",
            "max_machines": 10,
            "duration": "30d",
            "entitlements": ["pro", "export"],
            "metadata": { "order": "A-1001" }
        }))
        .await;
    assert_eq!(overridden["policy"], "pro-annual", "{overridden}");
    assert_eq!(overridden["max_machines"], 10, "{overridden}");
    assert_eq!(overridden["entitlements"], json!(["pro", "export"]), "{overridden}");
    assert_eq!(overridden["metadata"], json!({ "order": "A-1001" }), "{overridden}");
    assert_eq!(ts(&overridden["expires_at"]), now + Duration::days(30), "{overridden}");
    let at = now + Duration::days(100);
    let dated = server
        .create_license(json!({ "email": "cy@example.com", "policy": "pro-annual", "expires_at": rfc3339(at) }))
        .await;
    assert_eq!(ts(&dated["expires_at"]), at, "an explicit expires_at overrides the duration: {dated}");
    assert_eq!(dated["max_machines"], 3, "{dated}");
    let same_product =
        server.create_license(json!({ "email": "di@example.com", "policy": "pro-annual", "product": PRODUCT })).await;
    assert_eq!(same_product["policy"], "pro-annual", "the policy's own product may be given: {same_product}");

    // Refusals.
    let answer = server
        .admin(
            Method::POST,
            "/v1/licenses",
            Some(json!({ "email": "ed@example.com", "policy": "pro-annual", "product": "other-app" })),
        )
        .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "a product other than the policy's");
    assert!(s(&answer.1["message"]).contains("product"), "the message names product: {}", answer.1);
    let answer =
        server.admin(Method::POST, "/v1/licenses", Some(json!({ "email": "ed@example.com", "policy": "nope" }))).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "policy_not_found", "a license of an unknown policy");
    for body in [
        json!({ "email": "ed@example.com", "max_machines": 1 }),
        json!({ "email": "ed@example.com", "product": PRODUCT }),
        json!({ "email": "ed@example.com" }),
    ] {
        let answer = server.admin(Method::POST, "/v1/licenses", Some(body.clone())).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", &format!("without a policy: {body}"));
    }
    let (_, list) = server.admin(Method::GET, "/v1/licenses?limit=100", None).await;
    assert_eq!(list["licenses"].as_array().unwrap().len(), 4, "refused creations created nothing: {list}");

    // A license without a policy works as before: no lease, no overage.
    let plain =
        server.create_license(json!({ "email": "fay@example.com", "product": PRODUCT, "max_machines": 1 })).await;
    assert_eq!(plain["policy"], Value::Null, "{plain}");
    let key = s(&plain["key"]);
    let activated = server.activated(key, "m1").await;
    assert_eq!(activated["overage"], false, "{activated}");
    assert_eq!(activated["lease_expires_at"], Value::Null, "{activated}");
    assert!(activated["token_expires_at"].is_string(), "{activated}");
    let validated = server.validate(key, "m1").await;
    assert_eq!((&validated["valid"], &validated["code"]), (&json!(true), &json!("VALID")), "{validated}");
    assert_eq!(validated["overage"], false, "{validated}");
    let answer = server.activate(key, "m2").await;
    assert_error(&answer, StatusCode::CONFLICT, "too_many_machines", "no overage without a policy");
    let (status, refreshed) = server.post("/v1/refresh", json!({ "token": activated["token"] })).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!((&refreshed["overage"], &refreshed["lease_expires_at"]), (&json!(false), &Value::Null), "{refreshed}");
    let plain_id = s(&plain["id"]);
    let machines = server.machines(plain_id).await;
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0]["lease_expires_at"], Value::Null, "{machines:?}");
    let activated_events = server.events_of_kind(plain_id, "activated").await;
    assert_eq!(activated_events[0]["detail"]["overage"], false, "{activated_events:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patching_a_policy_reaches_existing_licenses() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    server.create_policy(json!({ "name": "standard", "product": PRODUCT, "max_machines": 1 })).await;
    let (id, key) = server.license_of("standard").await;
    let first = server.activated(&key, "m1").await;
    assert_eq!((&first["overage"], &first["lease_expires_at"]), (&json!(false), &Value::Null), "{first}");
    let answer = server.activate(&key, "m2").await;
    assert_error(&answer, StatusCode::CONFLICT, "too_many_machines", "no overage yet");

    // Overage is a rule: the existing license follows it at its next request.
    server.patch_policy("standard", json!({ "overage": "+1" })).await;
    let second = server.activated(&key, "m2").await;
    assert_eq!(second["overage"], true, "an activation above max_machines is flagged: {second}");
    assert_eq!(second["machines_used"], 2, "{second}");
    let validated = server.validate(&key, "m2").await;
    assert_eq!((&validated["valid"], &validated["code"]), (&json!(true), &json!("VALID")), "{validated}");
    assert_eq!(validated["overage"], true, "{validated}");
    let validated = server.validate(&key, "m1").await;
    assert_eq!((&validated["code"], &validated["overage"]), (&json!("VALID"), &json!(true)), "{validated}");
    let activated_events = server.events_of_kind(&id, "activated").await;
    let detail_of = |fingerprint: &str| {
        activated_events.iter().find(|e| e["fingerprint"] == fingerprint).unwrap_or_else(|| panic!("{fingerprint}"))
            ["detail"]["overage"]
            .clone()
    };
    assert_eq!(detail_of("m1"), json!(false), "{activated_events:?}");
    assert_eq!(detail_of("m2"), json!(true), "{activated_events:?}");
    let answer = server.activate(&key, "m3").await;
    assert_error(&answer, StatusCode::CONFLICT, "too_many_machines", "above max_machines plus the overage");

    // offline_allowed is a rule too, checked before anything is stored.
    let (status, body) = server.deactivate(&key, "m2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.patch_policy("standard", json!({ "offline_allowed": false })).await;
    let fingerprint = verifier::fingerprint(PRODUCT, "air-gapped-install");
    let answer = server.offline_activate(&key, &fingerprint).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "offline_not_allowed", "offline activation refused by the policy");
    assert_eq!(server.fingerprints(&id).await, BTreeSet::from(["m1".to_string()]), "nothing was stored");

    // max_machines is a grant: the existing license keeps its own; a new license takes the new one.
    server.patch_policy("standard", json!({ "max_machines": 4 })).await;
    let (status, license) = server.admin(Method::GET, &format!("/v1/licenses/{id}"), None).await;
    assert_eq!((status, &license["max_machines"]), (StatusCode::OK, &json!(1)), "{license}");
    let answer = server.activate(&key, "m2").await;
    assert_eq!(answer.0, StatusCode::OK, "still one slot plus one of overage: {}", answer.1);
    let answer = server.activate(&key, "m3").await;
    assert_error(&answer, StatusCode::CONFLICT, "too_many_machines", "the existing license keeps max_machines 1");
    let newer = server.create_license(json!({ "email": "new@example.com", "policy": "standard" })).await;
    assert_eq!(newer["max_machines"], 4, "a new license takes the policy's new grant: {newer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overage_factor_rounds_down() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    for (max, factor, allowed) in [(4, "1.25x", 5), (3, "1.25x", 3)] {
        let name = format!("factor-{max}");
        server.create_policy(json!({ "name": name, "product": PRODUCT, "max_machines": max, "overage": factor })).await;
        let (id, key) = server.license_of(&name).await;
        for i in 0..allowed {
            let activated = server.activated(&key, &format!("m{i}")).await;
            assert_eq!(
                activated["overage"],
                json!(i >= max),
                "activation {} of max {max} {factor}: {activated}",
                i + 1
            );
        }
        let answer = server.activate(&key, &format!("m{allowed}")).await;
        assert_error(
            &answer,
            StatusCode::CONFLICT,
            "too_many_machines",
            &format!("activation {} of max {max} with {factor}", allowed + 1),
        );
        assert_eq!(server.machines(&id).await.len(), allowed as usize);
    }
    // floor(3 × 1.5) = 4: a patched factor reaches the license at once.
    server.patch_policy("factor-3", json!({ "overage": "1.5x" })).await;
    let (status, license) = server.admin(Method::GET, "/v1/licenses?limit=100", None).await;
    assert_eq!(status, StatusCode::OK);
    let key = license["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["policy"] == "factor-3")
        .map(|l| s(&l["key"]).to_string())
        .unwrap();
    let fourth = server.activated(&key, "m3").await;
    assert_eq!(fourth["overage"], true, "{fourth}");
    let answer = server.activate(&key, "m4").await;
    assert_error(&answer, StatusCode::CONFLICT, "too_many_machines", "a fifth of max 3 with 1.5x");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deactivation_limit_counts_a_sliding_window() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    server
        .create_policy(json!({
            "name": "limited", "product": PRODUCT, "max_machines": 1,
            "deactivation_limit": 2, "deactivation_period": "30d"
        }))
        .await;
    let (id, key) = server.license_of("limited").await;
    let t0 = server.now();
    let check_refusal = |answer: &(StatusCode, Value), retry_at: OffsetDateTime, what: &str| {
        assert_error(answer, StatusCode::FORBIDDEN, "deactivation_limit_reached", what);
        assert_eq!(answer.1["deactivation_limit"], 2, "{what}: {}", answer.1);
        assert_eq!(answer.1["deactivation_period"], "30d", "{what}: {}", answer.1);
        assert_eq!(ts(&answer.1["retry_at"]), retry_at, "{what}: retry_at is when the oldest leaves: {}", answer.1);
    };

    // Two deactivations in the window are allowed.
    server.activated(&key, "m1").await;
    let (status, body) = server.deactivate(&key, "m1").await;
    assert_eq!(status, StatusCode::OK, "first deactivation: {body}");
    server.advance(Duration::days(1));
    server.activated(&key, "m2").await;
    let (status, body) = server.deactivate(&key, "m2").await;
    assert_eq!(status, StatusCode::OK, "second deactivation: {body}");

    // The third is refused and changes nothing.
    server.advance(Duration::days(1));
    server.activated(&key, "m3").await;
    let answer = server.deactivate(&key, "m3").await;
    check_refusal(&answer, t0 + Duration::days(30), "third deactivation in 30 days");
    let validated = server.validate(&key, "m3").await;
    assert_eq!((&validated["valid"], &validated["code"]), (&json!(true), &json!("VALID")), "{validated}");
    assert_eq!(server.fingerprints(&id).await, BTreeSet::from(["m3".to_string()]), "the machine stays active");
    assert_eq!(server.events_of_kind(&id, "deactivated").await.len(), 2, "the refusal recorded no deactivation");

    // Admin removals are never limited nor counted.
    let (status, body) = server.admin(Method::DELETE, &format!("/v1/licenses/{id}/machines/m3"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "an admin removal at the limit: {body}");
    server.activated(&key, "m4").await;
    let (status, body) = server.admin(Method::DELETE, &format!("/v1/licenses/{id}/machines/m4"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "a second admin removal: {body}");
    server.activated(&key, "m4").await;
    let answer = server.deactivate(&key, "m4").await;
    check_refusal(&answer, t0 + Duration::days(30), "admin removals did not move the window");

    // The first deactivation leaves the window.
    server.manual_clock().set(t0 + Duration::days(30) + Duration::seconds(1));
    let (status, body) = server.deactivate(&key, "m4").await;
    assert_eq!(status, StatusCode::OK, "after the oldest deactivation left the window: {body}");

    // A redeemed offline deactivation code counts too. At t0 + 31d + 1s the window holds the one just made.
    server.manual_clock().set(t0 + Duration::days(31) + Duration::seconds(1));
    let m5 = verifier::fingerprint(PRODUCT, "install-5");
    let (status, offline) = server.offline_activate(&key, &m5).await;
    assert_eq!(status, StatusCode::OK, "offline activation: {offline}");
    assert_eq!(offline["kind"], "offline", "{offline}");
    let (status, body) = server.offline_deactivate(s(&offline["token"])).await;
    assert_eq!(status, StatusCode::OK, "an offline deactivation within the limit: {body}");
    server.activated(&key, "m6").await;
    let answer = server.deactivate(&key, "m6").await;
    let oldest_counted = t0 + Duration::days(30) + Duration::seconds(1);
    check_refusal(&answer, oldest_counted + Duration::days(30), "the offline deactivation was counted");

    // And an offline deactivation over the limit is refused the same way, the machine staying.
    let (status, body) = server.admin(Method::DELETE, &format!("/v1/licenses/{id}/machines/m6"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let m7 = verifier::fingerprint(PRODUCT, "install-7");
    let (status, offline) = server.offline_activate(&key, &m7).await;
    assert_eq!(status, StatusCode::OK, "offline activation: {offline}");
    let answer = server.offline_deactivate(s(&offline["token"])).await;
    check_refusal(&answer, oldest_counted + Duration::days(30), "an offline deactivation over the limit");
    assert_eq!(server.fingerprints(&id).await, BTreeSet::from([m7.clone()]), "the offline machine stays");
    server.stop().await;
}

/// A limit lowered below the deactivations already in the window: the refusal's `retry_at` is when enough of them have
/// left it for one more (not when the oldest leaves), and a deactivation at that time is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_deactivation_limit_says_when_enough_deactivations_have_left_the_window() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    let policy = json!({ "name": "limited", "product": PRODUCT, "max_machines": 1, "deactivation_limit": 3 });
    server.create_policy(policy).await;
    let (_, key) = server.license_of("limited").await;
    let t0 = server.now();
    for day in 0..3 {
        server.manual_clock().set(t0 + Duration::days(day));
        server.activated(&key, "m").await;
        let (status, body) = server.deactivate(&key, "m").await;
        assert_eq!(status, StatusCode::OK, "deactivation on day {day}: {body}");
    }
    server.patch_policy("limited", json!({ "deactivation_limit": 1 })).await;
    server.manual_clock().set(t0 + Duration::days(3));
    server.activated(&key, "m").await;
    let answer = server.deactivate(&key, "m").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "deactivation_limit_reached", "three in the window, limit one");
    let retry_at = ts(&answer.1["retry_at"]);
    assert_eq!(retry_at, t0 + Duration::days(32), "all three must leave the 30-day window: {}", answer.1);
    server.manual_clock().set(t0 + Duration::days(31) + Duration::seconds(1));
    let answer = server.deactivate(&key, "m").await;
    assert_error(&answer, StatusCode::FORBIDDEN, "deactivation_limit_reached", "one still in the window on day 31");
    server.manual_clock().set(retry_at + Duration::seconds(1));
    let (status, body) = server.deactivate(&key, "m").await;
    assert_eq!(status, StatusCode::OK, "after retry_at: {body}");
    server.stop().await;
}

/// An explicit `null` for a field that has no null meaning is refused (422), not read as "left out"; and without a
/// policy, a field left out and the same field given as its default are one request for an Idempotency-Key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_is_refused_where_it_means_nothing_and_defaults_hash_as_given() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    server.create_policy(json!({ "name": "pro", "product": PRODUCT, "max_machines": 2 })).await;
    for (body, field) in [
        (json!({ "name": "a", "product": PRODUCT, "max_machines": 1, "overage": null }), "overage"),
        (json!({ "name": "b", "product": PRODUCT, "max_machines": 1, "offline_allowed": null }), "offline_allowed"),
        (json!({ "name": "c", "product": PRODUCT, "max_machines": 1, "deactivation_period": null }), "period"),
    ] {
        let answer = server.admin(Method::POST, "/v1/policies", Some(body)).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", field);
    }
    for body in [json!({ "max_machines": null }), json!({ "floating": null }), json!({ "entitlements": null })] {
        let answer = server.admin(Method::PATCH, "/v1/policies/pro", Some(body.clone())).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", &body.to_string());
    }
    for body in [
        json!({ "email": "ada@example.com", "policy": "pro", "product": null }),
        json!({ "email": "ada@example.com", "policy": "pro", "max_machines": null }),
        json!({ "email": "ada@example.com", "policy": null, "product": PRODUCT, "max_machines": 1 }),
    ] {
        let answer = server.admin(Method::POST, "/v1/licenses", Some(body.clone())).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", &body.to_string());
    }

    let send = |body: Value| {
        let request = server.client.post(format!("{}/v1/licenses", server.base)).bearer_auth(&server.admin);
        request.header("Idempotency-Key", "order-7").json(&body).send()
    };
    let short = json!({ "email": "ada@example.com", "product": PRODUCT, "max_machines": 1 });
    let first = send(short).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let spelled_out = json!({ "email": "ada@example.com", "product": PRODUCT, "max_machines": 1, "entitlements": [] });
    let again = send(spelled_out).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "the same request, its default spelled out: a replay");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    server.stop().await;
}
