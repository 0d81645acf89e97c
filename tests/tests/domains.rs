//! Domain-bound licenses end to end (docs/token-format.md §17, docs/network.md): activation normalises the domain as
//! the shared vectors say, `max_machines` counts domains (a wildcard is one), validation finds the activation that
//! covers a host, and the token an app gets verifies for its host with the verifier's own normalisation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::server::{assert_error, s, Server, NO_LIMIT, PRODUCT};
use issuer::StoreExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use time::OffsetDateTime;
use verifier::{verify_at, Error, Validation};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../verifier/tests/vectors");

fn vectors(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{VECTORS}/{file}")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
}

/// A domain license of its own with `domains` domains: (id, key).
async fn domain_license(server: &Server, domains: u32) -> (String, String) {
    let l = server
        .create_license(
            json!({ "email": "web@example.com", "product": PRODUCT, "max_machines": domains, "kind": "domain" }),
        )
        .await;
    assert_eq!(s(&l["kind"]), "domain");
    (s(&l["id"]).to_string(), s(&l["key"]).to_string())
}

#[tokio::test]
async fn activation_normalises_every_shared_vector_as_the_verifier_does() {
    let server = Server::start(NO_LIMIT).await;
    let cases = vectors("domains.json");
    assert!(cases.len() >= 40);
    let (_, key) = domain_license(&server, 1000).await;
    let keys = server.key_set().await;
    for case in &cases {
        let input = s(&case["input"]);
        let answer = server.activate(&key, input).await;
        match (case["normalized"].as_str(), case["error"].as_str()) {
            (Some(normalized), None) => {
                assert_eq!(answer.0, StatusCode::OK, "{input:?} -> {}", answer.1);
                let license = verifier::UntrustedToken::parse(s(&answer.1["token"])).unwrap().verify(&keys).unwrap();
                assert_eq!(license.fingerprint, format!("domain:{normalized}"), "{input:?}");
            }
            (None, Some(code)) => {
                assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain", input);
                assert_eq!(s(&answer.1["domain_error"]), code, "{input:?}");
            }
            _ => panic!("a vector has a result or an error: {case}"),
        }
    }
    // Every accepted form of one name is one activation: only the distinct normalised names hold a domain.
    let distinct: std::collections::BTreeSet<&str> = cases.iter().filter_map(|c| c["normalized"].as_str()).collect();
    assert_eq!(server.machines(&key).await.len(), distinct.len());
    server.stop().await;
}

#[tokio::test]
async fn validation_finds_the_covering_activation_as_the_shared_covering_vectors_say() {
    let server = Server::start(NO_LIMIT).await;
    for case in vectors("domain_covers.json") {
        let (_, key) = domain_license(&server, 1).await;
        server.activated(&key, s(&case["binding"])).await;
        let code = s(&server.validate(&key, s(&case["host"])).await["code"]).to_string();
        let expected = if case["covers"].as_bool().unwrap() { "VALID" } else { "DOMAIN_LIMIT_REACHED" };
        assert_eq!(code, expected, "{case}");
    }
    server.stop().await;
}

#[tokio::test]
async fn domains_are_counted_a_wildcard_as_one_and_tokens_verify_for_the_host() {
    let server = Server::start(NO_LIMIT).await;
    let (id, key) = domain_license(&server, 2).await;
    let keys = server.key_set().await;
    let now = OffsetDateTime::now_utc();

    let first = server.activated(&key, "Bücher.Example.").await;
    assert_eq!((first["machines_used"].as_u64(), s(&first["license"]["kind"])), (Some(1), "domain"));
    let token = s(&first["token"]);
    let for_host = |host: &str| Validation::for_domain(PRODUCT, host).unwrap();
    assert!(verify_at(token, &keys, &for_host("bücher.example"), now).is_ok(), "the Unicode form of the host");
    assert!(verify_at(token, &keys, &for_host("xn--bcher-kva.example"), now).is_ok(), "its ASCII form");
    let elsewhere = verify_at(token, &keys, &for_host("shop.bücher.example"), now).unwrap_err();
    assert!(matches!(elsewhere, Error::WrongDomain), "{elsewhere}");
    assert_eq!(elsewhere.code(), "wrong_domain");

    let wildcard = server.activated(&key, "*.Example.COM").await;
    assert_eq!(wildcard["machines_used"].as_u64(), Some(2));
    for host in ["example.com", "shop.example.com", "a.b.example.com"] {
        assert!(verify_at(s(&wildcard["token"]), &keys, &for_host(host), now).is_ok(), "{host}");
        assert_eq!(s(&server.validate(&key, host).await["code"]), "VALID", "{host}");
    }
    assert_eq!(s(&server.validate(&key, "badexample.com").await["code"]), "DOMAIN_LIMIT_REACHED");
    // Activating a covered name again is the same activation when it is the same binding, a new one otherwise.
    assert_eq!(server.activated(&key, "*.example.com").await["new_machine"], json!(false));
    let full = server.activate(&key, "other.org").await;
    assert_error(&full, StatusCode::CONFLICT, "domain_limit_reached", "a third domain on two");

    // The online token refreshes under its binding; deactivating by any form of it frees the domain.
    let (status, refreshed) = server.post("/v1/refresh", json!({ "token": wildcard["token"] })).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let (status, _) = server.deactivate(&key, "*.EXAMPLE.com.").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s(&server.validate(&key, "shop.example.com").await["code"]), "NOT_ACTIVATED", "a slot is free now");
    let fingerprints = server.fingerprints(&id).await;
    assert_eq!(fingerprints.into_iter().collect::<Vec<_>>(), ["domain:xn--bcher-kva.example"]);

    // Bad domains: activation and validation say why; a wildcard is no host.
    let bad = server.activate(&key, "https://example.com/").await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain", "a URL");
    assert_eq!(s(&bad.1["domain_error"]), "forbidden_character");
    let (status, bad) = server.post("/v1/validate", json!({ "key": key, "fingerprint": "*.example.com" })).await;
    assert_eq!(
        (status, s(&bad["code"]), s(&bad["domain_error"])),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain", "wildcard")
    );
    let (status, bad) = server.post("/v1/validate", json!({ "key": key, "fingerprint": "192.168.0.1" })).await;
    assert_eq!((status, s(&bad["domain_error"])), (StatusCode::UNPROCESSABLE_ENTITY, "ip_address"));
    server.stop().await;
}

#[tokio::test]
async fn kinds_are_fixed_by_the_policy_and_a_machine_license_takes_no_binding() {
    let server = Server::start(NO_LIMIT).await;
    let policy =
        server.create_policy(json!({ "name": "sites", "product": PRODUCT, "max_machines": 3, "kind": "domain" })).await;
    assert_eq!(s(&policy["kind"]), "domain");
    let (id, key) = server.license_of("sites").await;
    let (_, license) = server.admin(Method::GET, &format!("/v1/licenses/{id}"), None).await;
    assert_eq!(s(&license["kind"]), "domain", "a policy's licenses take its kind");
    server.activated(&key, "shop.example.net").await;
    let mismatch = server
        .admin(
            Method::POST,
            "/v1/licenses",
            Some(json!({ "email": "a@example.com", "policy": "sites", "kind": "machine" })),
        )
        .await;
    assert_error(&mismatch, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "a kind against the policy's");
    let unknown = server
        .admin(
            Method::POST,
            "/v1/licenses",
            Some(json!({ "email": "a@example.com", "product": PRODUCT, "max_machines": 1, "kind": "site" })),
        )
        .await;
    assert_error(&unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "an unknown kind");
    let unknown = server
        .admin(
            Method::POST,
            "/v1/policies",
            Some(json!({ "name": "x", "product": PRODUCT, "max_machines": 1, "kind": "site" })),
        )
        .await;
    assert_error(&unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "an unknown policy kind");
    let patch = server.admin(Method::PATCH, "/v1/policies/sites", Some(json!({ "kind": "machine" }))).await;
    assert!(patch.0.is_client_error(), "a kind never changes: {patch:?}");

    let machine =
        server.create_license(json!({ "email": "a@example.com", "product": PRODUCT, "max_machines": 2 })).await;
    assert_eq!(s(&machine["kind"]), "machine", "the default");
    let forged = server.activate(s(&machine["key"]), "domain:example.com").await;
    assert_error(&forged, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "a binding on a machine license");
    let idn = server.activate(s(&machine["key"]), "bücher.example").await;
    assert_error(&idn, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "not a machine fingerprint");
    // A machine token never verifies for a domain, and a domain token never for a machine.
    let token = server.activated(s(&machine["key"]), "example.com").await;
    let keys = server.key_set().await;
    let now = OffsetDateTime::now_utc();
    let err = verify_at(s(&token["token"]), &keys, &Validation::for_domain(PRODUCT, "example.com").unwrap(), now);
    assert!(matches!(err, Err(Error::WrongDomain)), "{err:?}");
    let site = server.activated(&key, "example.org").await;
    let err = verify_at(s(&site["token"]), &keys, &Validation::new(PRODUCT, "example.org"), now);
    assert!(matches!(err, Err(Error::WrongMachine)), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_machine_activation_named_like_a_binding_from_before_gets_no_new_token() {
    let server = Server::start(NO_LIMIT).await;
    let machine =
        server.create_license(json!({ "email": "a@example.com", "product": PRODUCT, "max_machines": 2 })).await;
    let id: uuid::Uuid = s(&machine["id"]).parse().unwrap();
    let at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    // As an issuer before domain licenses stored it: a machine fingerprint that reads as a binding.
    let stored = server
        .licensing
        .store()
        .transact(move |tx| {
            Box::pin(async move {
                let m = issuer::NewMachine {
                    fingerprint: "domain:example.com",
                    name: None,
                    platform: None,
                    at,
                    lease_expires_at: None,
                };
                tx.activate_machine(id, &m, 0).await
            })
        })
        .await
        .unwrap();
    assert!(matches!(stored, issuer::Activated::New { .. }));
    let claims = verifier::Claims {
        kind: verifier::TokenKind::Online,
        license_id: verifier::LicenseId(id.into_bytes()),
        license_key: s(&machine["key"]).into(),
        email: "a@example.com".into(),
        product: PRODUCT.into(),
        entitlements: vec![],
        max_machines: 2,
        fingerprint: "domain:example.com".into(),
        issued_at: at,
        license_expires_at: None,
        refresh_after: Some(at),
        token_expires_at: Some(at + time::Duration::days(1)),
    };
    let token = server.licensing.key_ring().sign(&claims).unwrap();
    let refused = server.post("/v1/refresh", json!({ "token": token })).await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "a binding on a machine license");
    server.stop().await;
}
