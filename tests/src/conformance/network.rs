//! Conformance cases of network rules, per-license address counters, license kinds and the presence read of
//! domain-bound validation (docs/network.md): what every backend must do.

use std::net::IpAddr;
use std::sync::Arc;

use issuer::{IpAction, IpRule, IpScope, IpUsage, LicenseKind, Policy, Presence, Store, StoreError, StoreExt as _};
use time::Duration;
use uuid::Uuid;

use super::one::OneUnit as _;
use super::{created, license, now};

fn rule(cidr: &str, action: IpAction, scope: IpScope) -> IpRule {
    IpRule {
        id: Uuid::now_v7(),
        cidr: cidr.parse::<issuer::Cidr>().unwrap().network(),
        action,
        scope,
        note: format!("note of {cidr}"),
        created_at: now(),
    }
}

async fn insert(store: &Arc<dyn Store>, r: &IpRule) -> Result<(), StoreError> {
    let r = r.clone();
    store.transact(move |tx| Box::pin(async move { tx.insert_ip_rule(&r).await })).await
}

async fn delete(store: &Arc<dyn Store>, id: Uuid) -> Option<IpRule> {
    store.transact(move |tx| Box::pin(async move { tx.delete_ip_rule(id).await })).await.unwrap()
}

async fn record(store: &Arc<dyn Store>, usage: Vec<IpUsage>) {
    store.transact(move |tx| Box::pin(async move { tx.record_ip_usage(&usage).await })).await.unwrap();
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Rules of every level round-trip; each change moves the version (a policy's deletion, which takes its rules with
/// it, too); rules of an unknown license or policy are refused.
pub async fn ip_rules_round_trip_and_every_change_moves_the_version(store: Arc<dyn Store>) {
    let l = created(&store, 1).await;
    store.insert_policy(&Policy::new("net-pro", "acme-cad", 2)).await.unwrap();
    let v0 = store.ip_rules_version().await.unwrap();
    let rules = [
        rule("10.0.0.0/8", IpAction::Allow, IpScope::Global),
        rule("2001:db8::/32", IpAction::Deny, IpScope::Policy("net-pro".into())),
        rule("198.51.100.7", IpAction::Deny, IpScope::License(l.id)),
    ];
    for r in &rules {
        insert(&store, r).await.unwrap();
    }
    let v1 = store.ip_rules_version().await.unwrap();
    assert_ne!(v0, v1, "inserts move the version");
    assert_eq!(store.ip_rules().await.unwrap(), rules, "read back equal, oldest first");
    assert_eq!(rules[2].cidr.to_string(), "198.51.100.7/32");

    let unknown_license = rule("192.0.2.0/24", IpAction::Deny, IpScope::License(Uuid::now_v7()));
    assert!(insert(&store, &unknown_license).await.is_err(), "a rule of no license");
    let unknown_policy = rule("192.0.2.0/24", IpAction::Deny, IpScope::Policy("nope".into()));
    assert!(insert(&store, &unknown_policy).await.is_err(), "a rule of no policy");
    assert_eq!(store.ip_rules_version().await.unwrap(), v1, "a refused insert changes nothing");

    assert_eq!(delete(&store, rules[0].id).await, Some(rules[0].clone()));
    assert_eq!(delete(&store, rules[0].id).await, None, "deleted once");
    let v2 = store.ip_rules_version().await.unwrap();
    assert_ne!(v1, v2, "a delete moves the version");

    let deleted =
        store.transact(|tx| Box::pin(async move { tx.delete_policy_ip_rules("net-pro").await })).await.unwrap();
    assert_eq!(deleted, [rules[1].clone()]);
    insert(&store, &rule("203.0.113.0/24", IpAction::Allow, IpScope::Policy("net-pro".into()))).await.unwrap();
    let v3 = store.ip_rules_version().await.unwrap();
    assert!(matches!(store.delete_policy("net-pro").await.unwrap(), issuer::PolicyDeleted::Deleted));
    assert_ne!(store.ip_rules_version().await.unwrap(), v3, "a cascade moves the version too");
    assert_eq!(store.ip_rules().await.unwrap(), [rules[2].clone()]);
}

/// Counters are added per (license, address), widened in time, listed most recent first; batches from several
/// writers at once add up exactly.
pub async fn ip_counters_add_up_per_license_and_address(store: Arc<dyn Store>) {
    let (a, b) = (created(&store, 1).await, created(&store, 1).await);
    let t = now();
    let usage = |license_id, addr: &str, at, requests, blocked| IpUsage {
        license_id,
        ip: ip(addr),
        first_seen: at,
        last_seen: at,
        requests,
        blocked,
    };
    record(&store, vec![usage(a.id, "192.0.2.1", t, 3, 0), usage(a.id, "2001:db8::1", t - Duration::hours(1), 1, 2)])
        .await;
    record(&store, vec![usage(a.id, "192.0.2.1", t - Duration::days(1), 2, 1), usage(b.id, "192.0.2.1", t, 1, 0)])
        .await;
    let ips = store.license_ips(a.id).await.unwrap();
    assert_eq!(ips.len(), 2);
    assert_eq!(ips[0].ip, ip("192.0.2.1"), "most recently seen first");
    assert_eq!((ips[0].requests, ips[0].blocked), (5, 1));
    assert_eq!((ips[0].first_seen, ips[0].last_seen), (t - Duration::days(1), t));
    assert_eq!((ips[1].ip, ips[1].requests, ips[1].blocked), (ip("2001:db8::1"), 1, 2));
    assert_eq!(store.license_ips(b.id).await.unwrap().len(), 1);
    assert!(store.license_ips(Uuid::now_v7()).await.unwrap().is_empty());

    // Eight writers at once, each 50 batches over the same 20 addresses of one license.
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (store, id) = (store.clone(), b.id);
        writers.push(tokio::spawn(async move {
            for _ in 0..50 {
                record(&store, (0..20).map(|i| usage(id, &format!("10.0.0.{i}"), t, 1, 0)).collect()).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total: u64 = store.license_ips(b.id).await.unwrap().iter().map(|u| u.requests).sum();
    assert_eq!(total, 1 + 8 * 50 * 20, "every counted request is stored exactly once");
}

/// A license's kind and a policy's kind are stored and read back; the presence read finds the best of several
/// fingerprints (active, then an ended lease or a culled mark, then none).
pub async fn kinds_round_trip_and_presence_takes_the_best_of_several(store: Arc<dyn Store>) {
    let mut domain = license(3);
    domain.kind = LicenseKind::Domain;
    store.create_license(&domain, None).await.unwrap();
    assert_eq!(store.license_by_id(domain.id).await.unwrap().unwrap().kind, LicenseKind::Domain);
    let mut p = Policy::new("web-sites", "acme-cad", 3);
    p.kind = LicenseKind::Domain;
    store.insert_policy(&p).await.unwrap();
    assert_eq!(store.policy("web-sites").await.unwrap().unwrap().kind, LicenseKind::Domain);
    assert_eq!(store.policy("web-sites").await.unwrap().unwrap(), store.list_policies().await.unwrap()[0]);

    let t = now();
    let fps = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        store.machine_presence(domain.id, &fps(&["domain:a.example"]), t).await.unwrap().presence,
        Presence::Absent
    );
    assert_eq!(store.machine_presence(domain.id, &[], t).await.unwrap().presence, Presence::Absent);
    store.activate_leased(domain.id, "domain:*.example.com", t, Some(t + Duration::minutes(5)), 0).await.unwrap();
    store.activate_leased(domain.id, "domain:old.example", t, Some(t + Duration::minutes(1)), 0).await.unwrap();
    let covering = fps(&["domain:shop.example.com", "domain:*.shop.example.com", "domain:*.example.com"]);
    let best = store.machine_presence(domain.id, &covering, t).await.unwrap();
    assert_eq!((best.presence, best.active.as_deref()), (Presence::Active, Some("domain:*.example.com")));
    // The host's own binding is more specific than a wildcard: it is the one found.
    store.activate_leased(domain.id, "domain:shop.example.com", t, None, 0).await.unwrap();
    let best = store.machine_presence(domain.id, &covering, t).await.unwrap();
    assert_eq!(best.active.as_deref(), Some("domain:shop.example.com"), "the first given");
    assert!(store.remove_machine(domain.id, "domain:shop.example.com").await.unwrap());
    let later = t + Duration::minutes(2);
    assert_eq!(
        store.machine_presence(domain.id, &fps(&["domain:old.example", "domain:x"]), later).await.unwrap().presence,
        Presence::LeaseExpired,
        "an ended lease, not yet culled"
    );
    store.cull_machines(domain.id, later).await.unwrap();
    assert_eq!(
        store.machine_presence(domain.id, &fps(&["domain:old.example"]), later).await.unwrap().presence,
        Presence::LeaseExpired,
        "a culled mark"
    );
    assert_eq!(
        store
            .machine_presence(domain.id, &fps(&["domain:old.example", "domain:*.example.com"]), later)
            .await
            .unwrap()
            .presence,
        Presence::Active,
        "active beats ended"
    );
    let other = created(&store, 1).await;
    assert_eq!(store.machine_presence(other.id, &covering, t).await.unwrap().presence, Presence::Absent, "per license");
}
