//! The audit log and admin tokens over HTTP (docs/webhooks.md, "The audit log" and "Admin tokens"): scopes, revocation,
//! the actor and client address of every admin action, only hashes stored; and the license events the service
//! records by itself (`license.expired` once per expiry, `license.renewed`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::server::{assert_error, s, Server, NO_LIMIT};
use reqwest::{Method, StatusCode};
use serde_json::json;
use time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_tokens_are_scoped_and_revocable_and_every_admin_action_names_its_actor() {
    let server = Server::start(NO_LIMIT).await;
    let create = |label: &str, scope: &str| {
        server.admin(Method::POST, "/v1/admin-tokens", Some(json!({ "label": label, "scope": scope })))
    };
    let (status, reader) = create("dashboard", "read").await;
    assert_eq!(status, StatusCode::CREATED, "{reader}");
    let (_, writer) = create("billing sync", "write").await;
    let (read, write) = (s(&reader["token"]).to_string(), s(&writer["token"]).to_string());
    assert_eq!((reader["scope"].clone(), writer["scope"].clone()), (json!("read"), json!("write")));
    assert_error(&create("x", "admin").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "bad scope");
    assert_error(&create("", "read").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "empty label");

    // Read scope: every GET, no change.
    for path in ["/v1/licenses", "/v1/policies", "/v1/webhooks", "/v1/admin-tokens", "/v1/events"] {
        assert_eq!(server.send_as(&read, Method::GET, path, None).await.0, StatusCode::OK, "{path}");
    }
    let license = json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 1 });
    for (method, path, body) in [
        (Method::POST, "/v1/licenses".to_string(), Some(license.clone())),
        (Method::POST, "/v1/webhooks".into(), Some(json!({ "url": "http://127.0.0.1:9/", "events": ["*"] }))),
        (Method::POST, "/v1/admin-tokens".into(), Some(json!({ "label": "escalate", "scope": "write" }))),
        (Method::DELETE, format!("/v1/admin-tokens/{}", s(&writer["id"])), None),
    ] {
        let answer = server.send_as(&read, method, &path, body).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "insufficient_scope", &path);
    }
    assert_eq!(server.audit_log("type=license.created").await.len(), 0, "the refused writes changed nothing");

    // A write token's actions name it, and the client's address.
    let (status, made) = server.send_as(&write, Method::POST, "/v1/licenses", Some(license.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    let events = server.audit_log("type=license.created").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], json!({ "type": "admin_token", "id": writer["id"], "label": "billing sync" }));
    assert_eq!(events[0]["client_ip"], "127.0.0.1");
    assert_eq!(events[0]["license_id"], made["id"]);
    assert_eq!(events[0]["detail"]["license"]["key"], made["key"], "the license as it was made");
    let key = s(&made["key"]).to_string();
    server.activated(&key, "fp-1").await;
    let activated = server.audit_log("type=machine.activated").await;
    assert_eq!(activated[0]["actor"], json!({ "type": "app" }));
    let created = server.audit_log("type=admin_token.created").await;
    assert_eq!(created.len(), 3, "first-start, dashboard, billing sync: {created:?}");
    assert_eq!(created[0]["actor"], json!({ "type": "system" }));
    assert_error(
        &server.admin(Method::GET, "/v1/events?type=nope", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "type",
    );
    assert_error(
        &server.admin(Method::GET, "/v1/events?limit=0", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "limit",
    );
    assert_error(
        &server.admin(Method::GET, "/v1/events?colour=red", None).await,
        StatusCode::BAD_REQUEST,
        "unknown_parameter",
        "param",
    );
    let per_license = server.events(s(&made["id"])).await;
    assert_eq!(
        (per_license[0]["kind"].clone(), per_license[0]["type"].clone()),
        (json!("created"), json!("license.created"))
    );

    // Every kind of admin action names its token and the client's address.
    let id = s(&made["id"]).to_string();
    for path in [format!("/v1/licenses/{id}/suspend"), format!("/v1/licenses/{id}/reinstate")] {
        assert_eq!(server.send_as(&write, Method::POST, &path, None).await.0, StatusCode::OK, "{path}");
    }
    let (status, _) =
        server.send_as(&write, Method::PATCH, &format!("/v1/licenses/{id}"), Some(json!({ "max_machines": 2 }))).await;
    assert_eq!(status, StatusCode::OK);
    let policy = json!({ "name": "pro", "product": "acme-cad", "max_machines": 2 });
    assert_eq!(server.send_as(&write, Method::POST, "/v1/policies", Some(policy)).await.0, StatusCode::CREATED);
    let hook = json!({ "url": "http://127.0.0.1:9/hook", "events": ["license.revoked"] });
    assert_eq!(server.send_as(&write, Method::POST, "/v1/webhooks", Some(hook)).await.0, StatusCode::CREATED);
    let (status, _) = server.send_as(&write, Method::DELETE, &format!("/v1/licenses/{id}/machines/fp-1"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.send_as(&write, Method::POST, &format!("/v1/licenses/{id}/revoke"), None).await.0,
        StatusCode::OK
    );
    let by_writer = json!({ "type": "admin_token", "id": writer["id"], "label": "billing sync" });
    for kind in [
        "license.suspended",
        "license.reinstated",
        "license.updated",
        "policy.created",
        "webhook.created",
        "machine.removed",
        "license.revoked",
    ] {
        let events = server.audit_log(&format!("type={kind}")).await;
        assert_eq!(events.len(), 1, "{kind}: {events:?}");
        assert_eq!(
            (events[0]["actor"].clone(), events[0]["client_ip"].clone()),
            (by_writer.clone(), json!("127.0.0.1")),
            "{kind}"
        );
    }

    // Only hashes of admin tokens are stored: no secret is in the database files.
    let dir = server.data_dir();
    for file in ["issuer.db", "issuer.db-wal"] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        for secret in [&read, &write, &server.admin] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "a token secret in {file}");
        }
    }

    // The list: labels, scopes, last use; never a secret.
    let (_, listed) = server.admin(Method::GET, "/v1/admin-tokens", None).await;
    let tokens = listed["admin_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    let text = listed.to_string();
    assert!(!text.contains(&read) && !text.contains(&write) && !text.contains(&server.admin), "no secret listed");
    let billing = tokens.iter().find(|t| t["label"] == "billing sync").unwrap();
    assert!(billing["last_used_at"].is_string() && billing["revoked_at"].is_null(), "{billing}");

    // Revocation, also of the first-start token: refused at once.
    let first = tokens.iter().find(|t| t["label"] == "created at first start").unwrap();
    let first_id = s(&first["id"]).to_string();
    let (status, revoked) = server.send_as(&write, Method::DELETE, &format!("/v1/admin-tokens/{first_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    assert_error(
        &server.admin(Method::GET, "/v1/licenses", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "revoked first-start token",
    );
    let (status, again) = server.send_as(&write, Method::DELETE, &format!("/v1/admin-tokens/{first_id}"), None).await;
    assert_eq!(
        (status, again["revoked_at"].clone()),
        (StatusCode::OK, revoked["revoked_at"].clone()),
        "revoking twice keeps the first time"
    );
    let (_, revocations) = server.send_as(&write, Method::GET, "/v1/events?type=admin_token.revoked", None).await;
    assert_eq!(revocations["events"].as_array().unwrap().len(), 1, "{revocations}");
    let answer = server.send_as(&write, Method::DELETE, "/v1/admin-tokens/ffffffffffffffff", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "admin_token_not_found", "unknown id");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_is_announced_once_and_a_renewal_is_an_event() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    let l = server
        .create_license(
            json!({ "email": "ada@example.com", "product": "acme-cad", "max_machines": 1, "duration": "1h" }),
        )
        .await;
    let id = s(&l["id"]).to_string();
    assert_eq!(server.licensing.announce_expiries().await.unwrap(), 0);
    server.advance(Duration::hours(2));
    assert_eq!(server.licensing.announce_expiries().await.unwrap(), 1);
    assert_eq!(server.licensing.announce_expiries().await.unwrap(), 0, "once");
    let expired = server.audit_log("type=license.expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0]["license_id"].clone(), expired[0]["actor"].clone()),
        (json!(id), json!({ "type": "system" }))
    );
    assert_eq!(expired[0]["detail"]["license"]["status"], "expired");

    let (status, _) =
        server.admin(Method::PATCH, &format!("/v1/licenses/{id}"), Some(json!({ "duration": "1d" }))).await;
    assert_eq!(status, StatusCode::OK);
    let renewed = server.audit_log("type=license.renewed").await;
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0]["detail"]["license"]["status"], "active");
    let (status, _) =
        server.admin(Method::PATCH, &format!("/v1/licenses/{id}"), Some(json!({ "max_machines": 5 }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.audit_log("type=license.renewed").await.len(), 1, "an update that does not extend is no renewal");
    server.advance(Duration::days(2));
    assert_eq!(server.licensing.announce_expiries().await.unwrap(), 1, "the new expiry is announced when it passes");
    server.stop().await;
}

/// Retention (docs/operations.md, "Event retention"): once the clock passes `event_retention` (default 400 days),
/// the sweep's prune deletes the older events in batches and keeps the newer ones; the license itself is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_the_retention_are_pruned_and_newer_ones_kept() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    let license = server
        .create_license(json!({ "email": "old@example.com", "product": e2e_tests::server::PRODUCT, "max_machines": 2 }))
        .await;
    let (id, key) = (s(&license["id"]).to_string(), s(&license["key"]).to_string());
    server.activated(&key, "fp-old").await;
    for _ in 0..3 {
        server.validate(&key, "fp-old").await;
    }
    let path = format!("/v1/licenses/{id}/events");
    let events = || async {
        let (status, body) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["events"].as_array().unwrap().iter().map(|e| s(&e["kind"]).to_string()).collect::<Vec<_>>()
    };
    let before = events().await;
    assert!(before.len() >= 2, "{before:?}");
    assert_eq!(server.licensing.prune_events().await.unwrap(), 0, "nothing is old yet");

    server.advance(Duration::days(401));
    server.activated(&key, "fp-new").await;
    let pruned = server.licensing.prune_events().await.unwrap();
    assert!(pruned >= before.len() as u64, "the license's old events went: {pruned}");
    let after = events().await;
    assert_eq!(after, ["activated"], "only the new activation is left: {after:?}");
    let (status, kept) = server.admin(Method::GET, &format!("/v1/licenses/{id}"), None).await;
    assert_eq!((status, kept["status"].clone()), (StatusCode::OK, json!("active")), "the license stays");
    assert_eq!(server.licensing.prune_events().await.unwrap(), 0, "a second prune finds nothing");
}
