//! Conformance cases of the usage counters (docs/usage.md): what every backend must do with a flush's batch.

use std::sync::Arc;

use issuer::{DayUsage, MachineUsage, Store, StoreExt as _, UsageBatch};
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

use super::created;
use super::one::OneUnit as _;

async fn record(store: &Arc<dyn Store>, batch: UsageBatch) {
    store.transact(move |tx| Box::pin(async move { tx.record_usage(&batch).await })).await.unwrap();
}

fn day(license_id: Uuid, at: OffsetDateTime, validations: u64, activations: u64) -> DayUsage {
    let last = (validations > 0).then_some(at);
    DayUsage { license_id, day: at.date(), validations, activations, last_validated_at: last }
}

fn machine(license_id: Uuid, fingerprint: &str, at: OffsetDateTime, validations: u64) -> MachineUsage {
    MachineUsage { license_id, fingerprint: fingerprint.into(), day: at.date(), validations, last_validated_at: at }
}

/// Flushes add up per license and day; a machine counts once a day among the day's machines however many flushes
/// see it (also deactivated and activated again), again on the next day, and also when it was deactivated before
/// the flush; the machine's and the license's totals and last times move (never back); a range reads only its days;
/// pruning takes the oldest days.
pub async fn usage_adds_up_per_day_and_counts_each_machine_once_a_day(store: Arc<dyn Store>) {
    let (a, b) = (created(&store, 3).await, created(&store, 1).await);
    let d1 = Date::from_calendar_date(2026, time::Month::March, 10).unwrap().midnight().assume_utc();
    let (t1, t2) = (d1 + Duration::hours(9), d1 + Duration::hours(10));
    let next = d1 + Duration::days(1) + Duration::minutes(5);
    for fp in ["m1", "m2", "m3"] {
        store.activate_machine(a.id, fp, None, None, d1).await.unwrap();
    }
    record(
        &store,
        UsageBatch {
            days: vec![day(a.id, t1, 5, 2), day(b.id, t1, 1, 0)],
            machines: vec![machine(a.id, "m1", t1, 3), machine(a.id, "m2", t1, 2)],
        },
    )
    .await;
    // Later the same day: m1 again (not a new machine of the day), m3 for the first time, and m4, activated in m2's
    // place, validated and deactivated before the flush (seen that day all the same).
    assert!(store.remove_machine(a.id, "m2").await.unwrap());
    store.activate_machine(a.id, "m4", None, None, t1).await.unwrap();
    assert!(store.remove_machine(a.id, "m4").await.unwrap());
    record(
        &store,
        UsageBatch {
            days: vec![day(a.id, t2, 4, 0)],
            machines: vec![machine(a.id, "m1", t2, 3), machine(a.id, "m3", t2, 1), machine(a.id, "m4", t2, 1)],
        },
    )
    .await;
    // m3 deactivated and activated again the same day, and seen again: the same machine of the day.
    assert!(store.remove_machine(a.id, "m3").await.unwrap());
    store.activate_machine(a.id, "m3", None, None, t2).await.unwrap();
    record(&store, UsageBatch { days: vec![], machines: vec![machine(a.id, "m3", t2, 1)] }).await;
    // Across midnight in one flush: m1 late on the first day and on the next.
    let late = d1 + Duration::hours(23) + Duration::minutes(59);
    record(
        &store,
        UsageBatch {
            days: vec![day(a.id, late, 1, 0), day(a.id, next, 1, 1)],
            machines: vec![machine(a.id, "m1", late, 1), machine(a.id, "m1", next, 1)],
        },
    )
    .await;
    // An older time reported late moves no last time back.
    record(&store, UsageBatch { days: vec![day(a.id, t1, 1, 0)], machines: vec![machine(a.id, "m1", t1, 1)] }).await;

    let days = store.license_usage(a.id, d1.date(), next.date()).await.unwrap();
    assert_eq!(days.len(), 2);
    assert_eq!((days[0].day, days[0].validations, days[0].activations, days[0].machines), (d1.date(), 11, 2, 4));
    assert_eq!((days[1].day, days[1].validations, days[1].activations, days[1].machines), (next.date(), 1, 1, 1));
    assert_eq!(store.license_usage(a.id, next.date(), next.date()).await.unwrap().len(), 1, "only the range");
    assert!(store.license_usage(Uuid::now_v7(), d1.date(), next.date()).await.unwrap().is_empty());

    let license = store.license_by_id(a.id).await.unwrap().unwrap();
    assert_eq!((license.validation_count, license.last_validated_at), (12, Some(next)));
    assert_eq!(license.updated_at, a.updated_at, "usage is not a change of the license");
    let m1 = store.machine(a.id, "m1").await.unwrap().unwrap();
    assert_eq!((m1.validation_count, m1.last_validated_at), (9, Some(next)));
    let m3 = store.machine(a.id, "m3").await.unwrap().unwrap();
    assert_eq!((m3.validation_count, m3.last_validated_at), (1, Some(t2)), "the new activation's own count");
    let other = store.license_by_id(b.id).await.unwrap().unwrap();
    assert_eq!((other.validation_count, other.last_validated_at), (1, Some(t1)));

    // Only activations: the license's last validation does not move.
    record(&store, UsageBatch { days: vec![day(b.id, next, 0, 1)], machines: vec![] }).await;
    let other = store.license_by_id(b.id).await.unwrap().unwrap();
    assert_eq!((other.validation_count, other.last_validated_at), (1, Some(t1)));

    let pruned = store.transact(move |tx| Box::pin(async move { tx.prune_usage(next.date(), 1).await })).await.unwrap();
    assert_eq!(pruned, 2, "at most the limit of each: a day and a fingerprint last counted before the cutoff");
    let pruned =
        store.transact(move |tx| Box::pin(async move { tx.prune_usage(next.date(), 100).await })).await.unwrap();
    assert_eq!(
        pruned, 3,
        "the other day before the cutoff and the two other fingerprints (m1 was counted on the cutoff day)"
    );
    assert_eq!(store.license_usage(a.id, d1.date(), next.date()).await.unwrap().len(), 1, "the cutoff's day stays");
    assert_eq!(store.license_usage(b.id, d1.date(), next.date()).await.unwrap().len(), 1);
}

/// Eight flushes at once over the same licenses and machines, half of them on the next day (new daily rows of the
/// same licenses: their foreign-key locks meet the flushes' license locks), beside activations of the same licenses
/// (units), lose no count and never deadlock.
pub async fn concurrent_flushes_add_every_count_once(store: Arc<dyn Store>) {
    let licenses = [created(&store, 4).await, created(&store, 4).await];
    let at = super::now();
    for l in &licenses {
        for fp in ["m1", "m2"] {
            store.activate_machine(l.id, fp, None, None, at).await.unwrap();
        }
    }
    let ids: Vec<Uuid> = licenses.iter().map(|l| l.id).collect();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (store, ids) = (store.clone(), ids.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..20 {
                // Each writer lists the keys in another order.
                let mut order = ids.clone();
                if w % 2 == 1 {
                    order.reverse();
                }
                let t = if w < 4 { at } else { at + Duration::days(1) };
                let batch = UsageBatch {
                    days: order.iter().map(|id| day(*id, t, 2, 1)).collect(),
                    machines: order
                        .iter()
                        .flat_map(|id| [machine(*id, "m2", t, 1), machine(*id, "m1", t, 1)])
                        .collect(),
                };
                record(&store, batch).await;
            }
        }));
    }
    for (i, l) in licenses.iter().enumerate() {
        let store = store.clone();
        let id = l.id;
        writers.push(tokio::spawn(async move {
            for n in 0..20 {
                store.activate_machine(id, &format!("unit-{i}-{n}"), None, None, at).await.unwrap();
                assert!(store.remove_machine(id, &format!("unit-{i}-{n}")).await.unwrap());
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    for l in &licenses {
        let days = store.license_usage(l.id, at.date(), at.date() + Duration::days(1)).await.unwrap();
        assert_eq!(days.len(), 2);
        for d in &days {
            assert_eq!((d.validations, d.activations, d.machines), (160, 80, 2), "{d:?}");
        }
        assert_eq!(store.license_by_id(l.id).await.unwrap().unwrap().validation_count, 320);
        assert_eq!(store.machine(l.id, "m1").await.unwrap().unwrap().validation_count, 160);
    }
}
