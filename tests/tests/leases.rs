//! End-to-end tests of leases (docs/policies.md): a policy's `lease` makes every activation and refresh a check-in,
//! a machine that stops checking in is culled — by the next activation in the same unit of work, or by the sweep —
//! and is then told `LEASE_EXPIRED`; floating seats are checked out and in under concurrent requests.
//!
//! Each test runs a real server ([`e2e_tests::server::Server`]) on 127.0.0.1 port 0 with a real SQLite file, driven
//! over HTTP. Time is a [`issuer::ManualClock`] the tests move: nothing sleeps to wait for a lease, and the background
//! sweep is set far apart so that only the tests sweep (through [`issuer::Licensing::cull_expired_leases`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use e2e_tests::server::{assert_error, s, ts, Server, NO_LIMIT, PRODUCT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use time::Duration;
use verifier::UntrustedToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_expires_and_the_machine_is_culled_by_the_next_activation() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    server.create_policy(json!({ "name": "leased", "product": PRODUCT, "max_machines": 1, "lease": "1h" })).await;
    let (id, key) = server.license_of("leased").await;
    let t0 = server.now();

    let a = server.activated(&key, "machine-a").await;
    let lease_end = ts(&a["lease_expires_at"]);
    assert_eq!(lease_end, t0 + Duration::hours(1), "the lease ends one lease after the check-in: {a}");
    assert_eq!(a["overage"], false, "{a}");
    let token_a = s(&a["token"]).to_string();
    let claims = UntrustedToken::parse(&token_a).unwrap().untrusted_claims().unwrap();
    assert_eq!(claims.issued_at, t0);
    let refresh_after = claims.refresh_after.unwrap();
    let token_expires = claims.token_expires_at.unwrap();
    assert!(refresh_after <= t0 + Duration::minutes(30), "refresh_after {refresh_after} is after issue + lease/2");
    assert!(token_expires <= lease_end, "the token ({token_expires}) outlives its lease ({lease_end})");
    assert_eq!(ts(&a["refresh_after"]), refresh_after, "the answer's refresh_after is the token's: {a}");
    assert_eq!(ts(&a["token_expires_at"]), token_expires, "the answer's token_expires_at is the token's: {a}");
    let machines = server.machines(&id).await;
    assert_eq!(ts(&machines[0]["lease_expires_at"]), lease_end, "the machine list shows the lease: {machines:?}");
    assert_eq!(server.validate(&key, "machine-a").await["code"], "VALID");

    // The lease ends; no sweep runs: validation still tells the machine apart.
    server.advance(Duration::minutes(61));
    let validated = server.validate(&key, "machine-a").await;
    assert_eq!((&validated["valid"], &validated["code"]), (&json!(false), &json!("LEASE_EXPIRED")), "{validated}");

    // Another machine's activation frees the dead slot in the same request.
    let b = server.activated(&key, "machine-b").await;
    assert_eq!(b["machines_used"], 1, "the dead machine is not counted: {b}");
    assert_eq!(b["overage"], false, "{b}");
    assert_eq!(server.fingerprints(&id).await, BTreeSet::from(["machine-b".to_string()]));
    let culled = server.events_of_kind(&id, "machine.culled").await;
    assert_eq!(culled.len(), 1, "one machine.culled event: {culled:?}");
    assert_eq!(culled[0]["fingerprint"], "machine-a", "{culled:?}");
    assert_eq!(culled[0]["detail"]["by"], "activation", "{culled:?}");
    assert_eq!(culled[0]["detail"]["lease_expired_at"], lease_end.unix_timestamp(), "{culled:?}");

    // The culled machine is remembered: validation and refresh say its lease ended.
    let validated = server.validate(&key, "machine-a").await;
    assert_eq!((&validated["valid"], &validated["code"]), (&json!(false), &json!("LEASE_EXPIRED")), "{validated}");
    let answer = server.post("/v1/refresh", json!({ "token": token_a })).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "lease_expired", "refresh of a culled machine");
    // A checkout again takes a slot only if one is free.
    let answer = server.activate(&key, "machine-a").await;
    assert_error(&answer, StatusCode::CONFLICT, "too_many_machines", "machine-b holds the only slot");
    let (status, body) = server.deactivate(&key, "machine-b").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again = server.activated(&key, "machine-a").await;
    assert_eq!(ts(&again["lease_expires_at"]), server.now() + Duration::hours(1), "{again}");
    let validated = server.validate(&key, "machine-a").await;
    assert_eq!((&validated["valid"], &validated["code"]), (&json!(true), &json!("VALID")), "{validated}");
    assert_eq!(server.events_of_kind(&id, "machine.culled").await.len(), 1, "nothing else was culled");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_the_lease_and_the_sweep_culls_what_stopped_checking_in() {
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    server.create_policy(json!({ "name": "leased", "product": PRODUCT, "max_machines": 3, "lease": "1h" })).await;
    let (id, key) = server.license_of("leased").await;
    let t0 = server.now();
    let a = server.activated(&key, "machine-a").await;
    server.activated(&key, "machine-b").await;
    assert_eq!(server.machines(&id).await.len(), 2);

    server.advance(Duration::minutes(40));
    let (status, refreshed) = server.post("/v1/refresh", json!({ "token": a["token"] })).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let a_lease = t0 + Duration::minutes(100);
    assert_eq!(ts(&refreshed["lease_expires_at"]), a_lease, "a refresh is a check-in: {refreshed}");
    let claims = UntrustedToken::parse(s(&refreshed["token"])).unwrap().untrusted_claims().unwrap();
    assert!(claims.refresh_after.unwrap() <= server.now() + Duration::minutes(30), "refresh_after <= issue + lease/2");
    assert!(claims.token_expires_at.unwrap() <= a_lease, "the refreshed token outlives its lease");

    // B stopped checking in at t0: its lease ended at t0 + 1h; the sweep culls it, and only it.
    server.advance(Duration::minutes(40));
    let culled = server.licensing.cull_expired_leases().await.unwrap();
    assert_eq!(culled, 1, "the sweep culls machine-b only");
    let machines = server.machines(&id).await;
    assert_eq!(machines.len(), 1, "{machines:?}");
    assert_eq!(machines[0]["fingerprint"], "machine-a", "{machines:?}");
    assert_eq!(ts(&machines[0]["lease_expires_at"]), a_lease, "{machines:?}");
    let events = server.events_of_kind(&id, "machine.culled").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["fingerprint"], "machine-b", "{events:?}");
    assert_eq!(events[0]["detail"]["by"], "sweep", "{events:?}");
    assert_eq!(events[0]["detail"]["lease_expired_at"], (t0 + Duration::hours(1)).unix_timestamp(), "{events:?}");
    assert_eq!(server.licensing.cull_expired_leases().await.unwrap(), 0, "a second sweep finds nothing");
    assert_eq!(server.validate(&key, "machine-b").await["code"], "LEASE_EXPIRED");
    assert_eq!(server.validate(&key, "machine-a").await["code"], "VALID");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_checkouts_give_exactly_the_seats_under_200_concurrent_requests_and_an_expired_lease_returns_the_seat()
{
    let server = Server::start_with_manual_clock(NO_LIMIT).await;
    server
        .create_policy(json!({
            "name": "lab-floating", "product": PRODUCT, "max_machines": 5, "floating": true, "lease": "10m",
            "deactivation_limit": 1
        }))
        .await;
    let (id, key) = server.license_of("lab-floating").await;
    let tally = |results: &[(String, StatusCode, Value)], round: &str| -> BTreeSet<String> {
        let full =
            |status: &StatusCode, body: &Value| *status == StatusCode::CONFLICT && body["code"] == "too_many_machines";
        let ok: BTreeSet<String> =
            results.iter().filter(|(_, status, _)| status.is_success()).map(|(f, _, _)| f.clone()).collect();
        let refused = results.iter().filter(|(_, status, body)| full(status, body)).count();
        let other: Vec<_> =
            results.iter().filter(|(_, status, body)| !status.is_success() && !full(status, body)).take(3).collect();
        assert!(other.is_empty(), "{round}: answers neither 2xx nor 409 too_many_machines: {other:?}");
        assert_eq!((ok.len(), refused), (5, 195), "{round}: checkouts given out / refused");
        ok
    };

    // 200 concurrent checkouts of 5 seats.
    let t0 = server.now();
    let results = server.concurrent_checkouts(&key, "r1-m", 200).await;
    let holders = tally(&results, "round 1");
    for (fingerprint, status, body) in &results {
        if status.is_success() {
            assert_eq!(ts(&body["lease_expires_at"]), t0 + Duration::minutes(10), "{fingerprint}: {body}");
            assert_eq!(body["overage"], false, "{fingerprint}: {body}");
        }
    }
    assert_eq!(server.fingerprints(&id).await, holders, "the machines are the 5 that got a seat");

    // A check-in returns a seat; check-ins are not counted by the deactivation limit (1 here).
    let mut holders: Vec<String> = holders.into_iter().collect();
    for (i, extra) in ["r1-extra-0", "r1-extra-1"].into_iter().enumerate() {
        let answer = server.activate(&key, extra).await;
        assert_error(&answer, StatusCode::CONFLICT, "too_many_machines", "every seat is taken");
        let gone = holders.remove(0);
        let (status, body) = server.deactivate(&key, &gone).await;
        assert_eq!(status, StatusCode::OK, "check-in {} of {gone} (deactivation_limit 1): {body}", i + 1);
        let answer = server.activate(&key, extra).await;
        assert_eq!(answer.0, StatusCode::OK, "a checkout after a check-in: {}", answer.1);
        holders.push(extra.to_string());
    }
    let holders: BTreeSet<String> = holders.into_iter().collect();
    assert_eq!(server.fingerprints(&id).await, holders);

    // Every lease ends; no sweep runs. The next round of checkouts culls the dead seats in its own transactions.
    server.advance(Duration::minutes(11));
    let results = server.concurrent_checkouts(&key, "r2-m", 200).await;
    let new_holders = tally(&results, "round 2 (after every lease ended)");
    assert_eq!(server.fingerprints(&id).await, new_holders, "the machines are the 5 new holders");
    let culled = server.events_of_kind(&id, "machine.culled").await;
    assert_eq!(culled.len(), 5, "exactly the 5 dead seats were culled: {culled:?}");
    let culled_fingerprints: BTreeSet<String> = culled.iter().map(|e| s(&e["fingerprint"]).to_string()).collect();
    assert_eq!(culled_fingerprints, holders, "the culled machines are the 5 that held a seat");
    for event in &culled {
        assert_eq!(event["detail"]["by"], "activation", "{event}");
        assert_eq!(event["detail"]["lease_expired_at"], (t0 + Duration::minutes(10)).unix_timestamp(), "{event}");
    }
    let old = holders.iter().next().unwrap();
    assert_eq!(server.validate(&key, old).await["code"], "LEASE_EXPIRED", "a culled seat's machine");
    assert_eq!(server.licensing.cull_expired_leases().await.unwrap(), 0, "nothing was left for the sweep");
    server.stop().await;
}
