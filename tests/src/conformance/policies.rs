//! Conformance cases of policies, leases and deactivation counts: what every backend must do for docs/policies.md,
//! including the guarantees that only show under concurrency (the slot limit while dead machines are culled, each
//! machine culled once by sweeps running together).

use std::collections::HashSet;
use std::sync::Arc;

use issuer::{Activated, License, Overage, Policy, PolicyDeleted, Presence, Store, StoreError, StoreExt as _, Touched};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::one::OneUnit as _;
use super::{license, now};

fn policy(name: &str) -> Policy {
    let mut p = Policy::new(name, "acme-cad", 3);
    p.duration_secs = Some(365 * 86_400);
    p.entitlements = vec!["pro".into()];
    p.created_at = now();
    p.updated_at = now();
    p
}

async fn licensed(store: &Arc<dyn Store>, policy: Option<&str>, max_machines: u32) -> License {
    let mut l = license(max_machines);
    l.policy = policy.map(str::to_string);
    store.create_license(&l, None).await.unwrap();
    l
}

/// Policies round-trip with every field, list by name, refuse a taken name, update in place and are deleted only
/// while no license uses them. A lease set to none ends the leases of the policy's machines.
pub async fn policies_round_trip_update_and_delete_only_while_unused(store: Arc<dyn Store>) {
    let mut full = policy("pro-annual");
    full.refresh_interval_secs = Some(3600);
    full.offline_grace_secs = Some(0);
    full.lease_secs = Some(600);
    full.floating = true;
    full.overage = Overage::Factor(125);
    full.offline_allowed = false;
    full.deactivation_limit = Some(3);
    full.deactivation_period_secs = 7 * 86_400;
    store.insert_policy(&full).await.unwrap();
    store.insert_policy(&policy("basic")).await.unwrap();
    assert_eq!(store.policy("pro-annual").await.unwrap(), Some(full.clone()));
    assert_eq!(store.policy("nope").await.unwrap(), None);
    let names: Vec<_> = store.list_policies().await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["basic", "pro-annual"]);
    assert!(matches!(store.insert_policy(&policy("basic")).await, Err(StoreError::Duplicate)));

    let l = licensed(&store, Some("pro-annual"), 3).await;
    assert_eq!(store.license_by_id(l.id).await.unwrap().unwrap().policy.as_deref(), Some("pro-annual"));
    let lease_end = now() + Duration::minutes(10);
    store.activate_leased(l.id, "m1", now(), Some(lease_end), 0).await.unwrap();
    assert_eq!(store.machine(l.id, "m1").await.unwrap().unwrap().lease_expires_at, Some(lease_end));
    let check = store.license_for_machine(&l.key, "m1", now()).await.unwrap().unwrap();
    assert_eq!(check.policy, Some(full.clone()), "the validation read carries the license's policy");
    let plain = licensed(&store, None, 1).await;
    assert_eq!(store.license_for_machine(&plain.key, "m1", now()).await.unwrap().unwrap().policy, None);

    let mut changed = full.clone();
    changed.max_machines = 9;
    changed.overage = Overage::Plus(2);
    changed.lease_secs = None;
    changed.floating = false;
    changed.deactivation_limit = None;
    changed.updated_at = now() + Duration::seconds(5);
    assert!(store.update_policy(&changed).await.unwrap());
    assert_eq!(store.policy("pro-annual").await.unwrap(), Some(changed.clone()));
    assert_eq!(store.machine(l.id, "m1").await.unwrap().unwrap().lease_expires_at, None, "no lease any more");
    assert!(!store.update_policy(&policy("missing")).await.unwrap());

    assert_eq!(store.delete_policy("pro-annual").await.unwrap(), PolicyDeleted::InUse(1));
    assert_eq!(store.delete_policy("basic").await.unwrap(), PolicyDeleted::Deleted);
    assert_eq!(store.delete_policy("basic").await.unwrap(), PolicyDeleted::NotFound);
    assert!(store.policy("pro-annual").await.unwrap().is_some(), "a used policy stays");
}

/// A machine whose lease ended stops counting at once, is culled by its license's unit or by the sweep (once), then
/// reads as culled until the fingerprint activates again; machines without a lease are never culled.
pub async fn ended_leases_are_culled_per_license_and_by_the_sweep(store: Arc<dyn Store>) {
    let t = now();
    let (ended, live) = (Some(t - Duration::seconds(1)), Some(t + Duration::minutes(10)));
    let l = licensed(&store, None, 5).await;
    let other = licensed(&store, None, 5).await;
    store.activate_leased(l.id, "live", t - Duration::minutes(5), live, 0).await.unwrap();
    store.activate_leased(l.id, "dead", t - Duration::minutes(5), ended, 0).await.unwrap();
    store.activate_leased(l.id, "forever", t - Duration::minutes(5), None, 0).await.unwrap();
    store.activate_leased(other.id, "dead-too", t - Duration::minutes(5), ended, 0).await.unwrap();

    let check = store.license_for_machine(&l.key, "dead", t).await.unwrap().unwrap();
    assert_eq!((check.machines_used, check.presence), (2, Presence::LeaseExpired), "ended: not counted, told apart");
    let check = store.license_for_machine(&l.key, "live", t).await.unwrap().unwrap();
    assert_eq!(check.presence, Presence::Active);
    let later = store.license_for_machine(&l.key, "live", t + Duration::minutes(10)).await.unwrap().unwrap();
    assert_eq!(later.presence, Presence::LeaseExpired, "a lease ends at its expiry, inclusive");

    let culled = store.cull_machines(l.id, t).await.unwrap();
    assert_eq!(culled.len(), 1);
    assert_eq!((culled[0].license_id, culled[0].fingerprint.as_str()), (l.id, "dead"));
    assert_eq!(Some(culled[0].lease_expired_at), ended);
    assert!(store.cull_machines(l.id, t).await.unwrap().is_empty(), "culled once");
    assert_eq!(store.count_machines(l.id).await.unwrap(), 2);
    assert_eq!(store.license_for_machine(&l.key, "dead", t).await.unwrap().unwrap().presence, Presence::LeaseExpired);
    assert_eq!(store.touch_leased(l.id, "dead", t, live).await.unwrap(), Touched::LeaseExpired);
    assert_eq!(store.touch_leased(l.id, "never", t, live).await.unwrap(), Touched::Absent);

    let swept = store.cull_expired_leases(t, 100).await.unwrap();
    assert_eq!(swept.iter().map(|c| c.fingerprint.as_str()).collect::<Vec<_>>(), ["dead-too"]);
    assert!(store.cull_expired_leases(t, 100).await.unwrap().is_empty());

    // A check-in moves the lease; a new activation forgets the culled mark; removal forgets it too.
    let moved = t + Duration::hours(1);
    let touched = store.touch_leased(l.id, "live", t, Some(moved)).await.unwrap();
    assert_eq!(touched, Touched::Active { lease_expires_at: Some(moved) });
    assert_eq!(store.machine(l.id, "live").await.unwrap().unwrap().lease_expires_at, Some(moved));
    assert!(matches!(store.activate_leased(l.id, "dead", t, live, 0).await.unwrap(), Activated::New { .. }));
    assert_eq!(store.license_for_machine(&l.key, "dead", t).await.unwrap().unwrap().presence, Presence::Active);
    assert!(store.remove_machine(l.id, "dead").await.unwrap());
    assert_eq!(store.license_for_machine(&l.key, "dead", t).await.unwrap().unwrap().presence, Presence::Absent);
    let swept = store.cull_expired_leases(t + Duration::days(1), 100).await.unwrap();
    assert_eq!(swept.iter().map(|c| c.fingerprint.as_str()).collect::<Vec<_>>(), ["live"]);
    assert_eq!(store.list_machines(l.id).await.unwrap().len(), 1, "only the machine without a lease stays");
}

/// A check-in never moves a lease earlier (of two committing out of their clocks' order, the later lease stays, so
/// no token outlives the stored lease), `None` ends it, and a machine holding an offline token never takes one.
pub async fn a_lease_never_moves_earlier_and_offline_machines_take_none(store: Arc<dyn Store>) {
    let t = now();
    let l = licensed(&store, None, 3).await;
    let (early, late) = (t + Duration::minutes(10), t + Duration::minutes(20));
    store.activate_leased(l.id, "m", t, Some(late), 0).await.unwrap();
    let touched = store.touch_leased(l.id, "m", t - Duration::seconds(5), Some(early)).await.unwrap();
    assert_eq!(touched, Touched::Active { lease_expires_at: Some(late) }, "a slower check-in keeps the later lease");
    let Activated::Existing { machine, .. } = store.activate_leased(l.id, "m", t, Some(early), 0).await.unwrap() else {
        panic!("an active machine re-activates");
    };
    assert_eq!(machine.lease_expires_at, Some(late));
    assert_eq!(store.touch_leased(l.id, "m", t, None).await.unwrap(), Touched::Active { lease_expires_at: None });
    assert_eq!(store.machine(l.id, "m").await.unwrap().unwrap().lease_expires_at, None, "no lease any more");

    store.activate_leased(l.id, "air", t, None, 0).await.unwrap();
    assert!(store.set_offline_proof(l.id, "air", &[7; 16]).await.unwrap());
    let Activated::Existing { machine, .. } = store.activate_leased(l.id, "air", t, Some(late), 0).await.unwrap()
    else {
        panic!("an active machine re-activates");
    };
    assert_eq!(machine.lease_expires_at, None, "an online check-in of a machine holding an offline token: no lease");
    assert_eq!(
        store.touch_leased(l.id, "air", t, Some(late)).await.unwrap(),
        Touched::Active { lease_expires_at: None }
    );
    assert!(store.cull_expired_leases(late + Duration::days(1), 100).await.unwrap().is_empty(), "never culled");
}

/// 200 concurrent checkouts on a license whose 5 seats are all held by ended leases: every unit culls, then
/// activates within the limit plus the overage. Exactly the seats there are are given out, and each dead machine
/// is culled by exactly one unit.
pub async fn concurrent_checkouts_cull_ended_leases_and_give_out_exactly_the_seats(store: Arc<dyn Store>) {
    for (seats, overage) in [(5u32, 0u32), (2, 1)] {
        let t = now();
        let l = licensed(&store, None, seats).await;
        for i in 0..seats + overage {
            let at = t - Duration::minutes(20);
            store.activate_leased(l.id, &format!("old{i}"), at, Some(t - Duration::minutes(1)), overage).await.unwrap();
        }
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .transact::<_, StoreError, _>(move |tx| {
                            Box::pin(async move {
                                let culled = tx.cull_machines(l.id, t).await?;
                                let fp = format!("new{i}");
                                let m = issuer::NewMachine {
                                    fingerprint: &fp,
                                    name: None,
                                    platform: None,
                                    at: t,
                                    lease_expires_at: Some(t + Duration::minutes(10)),
                                };
                                Ok((culled, tx.activate_machine(l.id, &m, overage).await?))
                            })
                        })
                        .await
                })
            })
            .collect();
        let (mut new, mut culled) = (0, Vec::new());
        for task in tasks {
            let (c, activated) = task.await.unwrap().unwrap();
            culled.extend(c.into_iter().map(|c| c.fingerprint));
            if let Activated::New { machines_used, .. } = activated {
                assert!(machines_used <= seats + overage);
                new += 1;
            }
        }
        assert_eq!(new, seats + overage, "seats {seats} overage {overage}");
        let unique: HashSet<_> = culled.iter().collect();
        assert_eq!((culled.len(), unique.len()), ((seats + overage) as usize, (seats + overage) as usize));
        assert_eq!(store.count_machines(l.id).await.unwrap(), seats + overage);
    }
}

/// Sweeps running at once (several instances) cull every ended lease exactly once between them.
pub async fn concurrent_sweeps_cull_each_ended_lease_once(store: Arc<dyn Store>) {
    let t = now();
    let mut expected = HashSet::new();
    for _ in 0..10 {
        let l = licensed(&store, None, 40).await;
        for i in 0..30 {
            let fp = format!("m{i}");
            store
                .activate_leased(l.id, &fp, t - Duration::hours(1), Some(t - Duration::seconds(i + 1)), 0)
                .await
                .unwrap();
            expected.insert((l.id, fp));
        }
        store.activate_leased(l.id, "live", t, Some(t + Duration::hours(1)), 0).await.unwrap();
    }
    let sweepers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine: Vec<(Uuid, String)> = Vec::new();
                loop {
                    let batch = store.cull_expired_leases(t, 25).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|c| (c.license_id, c.fingerprint)));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for s in sweepers {
        all.extend(s.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "no machine culled twice");
    assert_eq!(unique, expected, "every ended lease culled, no live one");
}

/// Deactivations are counted in a window (how many after a time, and the oldest of them) and pruned in batches from
/// before a time.
pub async fn deactivations_are_counted_after_a_time(store: Arc<dyn Store>) {
    let t = now();
    let l = licensed(&store, None, 1).await;
    let other = licensed(&store, None, 1).await;
    for days in [40, 10, 5] {
        store.record_deactivation(l.id, t - Duration::days(days)).await.unwrap();
    }
    store.record_deactivation(other.id, t).await.unwrap();
    let (ten, five) = (t - Duration::days(10), t - Duration::days(5));
    assert_eq!(store.deactivations_since(l.id, t - Duration::days(30)).await.unwrap(), [ten, five], "oldest first");
    assert_eq!(store.deactivations_since(l.id, ten).await.unwrap(), [five], "after, not at");
    assert_eq!(store.deactivations_since(l.id, t).await.unwrap(), Vec::<OffsetDateTime>::new());
    for days in [400, 390, 380] {
        store.record_deactivation(other.id, t - Duration::days(days)).await.unwrap();
    }
    let year = t - Duration::days(365);
    assert_eq!(store.prune_deactivations(year, 2).await.unwrap(), 2, "a batch at most");
    assert_eq!(store.prune_deactivations(year, 2).await.unwrap(), 1);
    assert_eq!(store.prune_deactivations(year, 2).await.unwrap(), 0);
    assert_eq!(store.deactivations_since(other.id, t - Duration::days(1000)).await.unwrap(), [t]);
    assert_eq!(store.deactivations_since(l.id, t - Duration::days(1000)).await.unwrap().len(), 3, "newer ones stay");
}
