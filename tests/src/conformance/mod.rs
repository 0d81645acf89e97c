//! The store conformance suite: what every [`Store`] backend must do, written once against `Arc<dyn Store>` and run
//! against each backend by [`store_conformance_tests!`](crate::store_conformance_tests) (see
//! `tests/tests/store_conformance.rs`).
//!
//! Each case gets a fresh, empty store. The cases cover every store operation, and the guarantees that only show
//! under concurrency: the slot limit, idempotent creation and one-time redemption of a deactivation code. `units`
//! holds the unit-of-work cases (atomicity, a failure injected between the writes of one operation, a foreign writer
//! trying to undo a revocation), and `races` the service operations racing on one license.

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use issuer::{
    Activated, Actor, Created, Cursor, EffectiveStatus, EventKind, Idempotency, License, LicenseFilter, LicenseStatus,
    LicenseUpdate, NewEvent, NewMachine, Presence, Redeemed, Store, StoreError,
};
use one::OneUnit as _;

pub mod network;
pub mod one;
pub mod policies;
pub mod races;
pub mod revocations;
pub mod units;
pub mod usage;
pub mod webhooks;
pub use revocations::revoked_licenses_grow_as_one_set_under_concurrent_revocations;
use time::OffsetDateTime;
use uuid::Uuid;

/// The backend of a [`TestStore`], for cases that speak its SQL dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// [`issuer::SqliteStore`].
    Sqlite,
    /// [`issuer::PostgresStore`].
    Postgres,
}

/// Runs SQL statements on the test store's database over a connection of its own, as another writer would (the
/// failure-injection and foreign-writer cases). The error is the database's message.
pub type RawSql = Arc<dyn Fn(String) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A fresh store for one test, and whatever must live as long as it (a temporary directory, a test database).
pub struct TestStore {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Which backend it is.
    pub backend: Backend,
    /// SQL on the same database, beside the store.
    pub sql: RawSql,
    /// Kept alive until the test ends.
    pub keep: Box<dyn Any + Send>,
}

/// Generates one `#[tokio::test]` per conformance case. `$open` is an async function taking the case's name and
/// returning `Option<TestStore>`: a fresh store, or `None` when the backend is unavailable (after saying so).
#[macro_export]
macro_rules! store_conformance_tests {
    ($open:path) => {
        $crate::store_conformance_tests!(@cases $open;
            license_round_trips_by_id_and_key,
            duplicate_license_key_is_refused,
            idempotency_key_replays_the_same_request_and_refuses_another,
            concurrent_creates_with_one_idempotency_key_store_one_license,
            slot_limit_holds_under_concurrent_activation,
            concurrent_activations_of_one_fingerprint_use_one_slot,
            reactivation_uses_no_slot_and_removal_frees_one,
            machines_are_looked_up_listed_and_touched,
            list_filters_and_pages_with_a_cursor,
            update_changes_only_the_given_fields,
            events_are_appended_in_order_and_paged_per_license,
            offline_deactivation_frees_the_slot_once_and_only_on_its_license,
            concurrent_redemptions_of_one_code_free_one_slot_once,
            license_for_machine_answers_what_a_validation_needs,
            status_changes_are_compare_and_set_and_revoked_is_final,
            list_filters_by_status_as_it_stands_and_by_email_prefix,
            the_signing_key_ring_is_recorded_once_then_updated,
            revoked_licenses_grow_as_one_set_under_concurrent_revocations,
        );
        $crate::store_conformance_tests!(@store $open;
            policies::policies_round_trip_update_and_delete_only_while_unused,
            policies::ended_leases_are_culled_per_license_and_by_the_sweep,
            policies::a_lease_never_moves_earlier_and_offline_machines_take_none,
            policies::concurrent_checkouts_cull_ended_leases_and_give_out_exactly_the_seats,
            policies::concurrent_sweeps_cull_each_ended_lease_once,
            policies::deactivations_are_counted_after_a_time,
        );
        $crate::store_conformance_tests!(@whole $open;
            units::a_unit_commits_all_its_writes_or_none,
            units::a_failure_between_the_writes_of_an_operation_leaves_neither,
            units::a_foreign_writer_cannot_undo_a_revocation,
            units::every_change_has_exactly_one_event_after_a_concurrent_load,
            races::concurrent_transitions_never_undo_a_revocation,
        );
        $crate::store_conformance_tests!(@store $open;
            webhooks::admin_tokens_are_stored_by_hash_listed_and_revoked_once,
            webhooks::events_of_no_license_are_listed_and_filtered_by_type_and_license,
            webhooks::events_queue_deliveries_for_subscribed_enabled_endpoints_only,
            webhooks::claims_take_one_delivery_per_lane_in_event_order,
            webhooks::concurrent_claims_never_take_a_delivery_twice,
            webhooks::attempts_are_recorded_only_under_their_claim,
            webhooks::expiries_are_announced_once_and_again_after_a_change,
            webhooks::prune_deletes_old_events_unless_an_enabled_endpoint_still_waits_for_them,
        );
        $crate::store_conformance_tests!(@store $open;
            network::ip_rules_round_trip_and_every_change_moves_the_version,
            network::ip_counters_add_up_per_license_and_address,
            network::kinds_round_trip_and_presence_takes_the_best_of_several,
        );
        $crate::store_conformance_tests!(@store $open;
            usage::usage_adds_up_per_day_and_counts_each_machine_once_a_day,
            usage::concurrent_flushes_add_every_count_once,
        );
    };
    (@cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(test_store) = $open(stringify!($case)).await {
                    $crate::conformance::$case(test_store.store.clone()).await;
                    drop(test_store);
                }
            }
        )*
    };
    (@store $open:path; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(test_store) = $open(stringify!($case)).await {
                    $crate::conformance::$module::$case(test_store.store.clone()).await;
                    drop(test_store);
                }
            }
        )*
    };
    (@whole $open:path; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(test_store) = $open(stringify!($case)).await {
                    $crate::conformance::$module::$case(&test_store).await;
                    drop(test_store);
                }
            }
        )*
    };
}

pub(crate) fn now() -> OffsetDateTime {
    whole_seconds(OffsetDateTime::now_utc())
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap()
}

pub(crate) fn license(max_machines: u32) -> License {
    License {
        id: Uuid::now_v7(),
        key: issuer::LicenseKey::generate().unwrap().to_string(),
        email: "ada@example.com".into(),
        product: "acme-cad".into(),
        max_machines,
        expires_at: None,
        entitlements: vec!["pro".into()],
        metadata: serde_json::Map::new(),
        status: LicenseStatus::Active,
        policy: None,
        kind: issuer::LicenseKind::Machine,
        created_at: now(),
        updated_at: now(),
        validation_count: 0,
        last_validated_at: None,
    }
}

/// A check-in of `fingerprint` now, without a lease, name or platform.
pub(crate) fn machine(fingerprint: &str) -> NewMachine<'_> {
    NewMachine { fingerprint, name: None, platform: None, at: now(), lease_expires_at: None }
}

pub(crate) async fn created(store: &Arc<dyn Store>, max_machines: u32) -> License {
    let l = license(max_machines);
    store.create_license(&l, None).await.unwrap();
    l
}

/// A license reads back equal by id and by key, times in whole seconds; unknown ids and keys give `None`.
pub async fn license_round_trips_by_id_and_key(store: Arc<dyn Store>) {
    let mut l = license(3);
    l.expires_at = Some(now() + time::Duration::days(365));
    l.entitlements = vec!["pro".into(), "export".into()];
    l.metadata.insert("order".into(), serde_json::json!({ "number": "A-1001", "lines": [1, 2] }));
    assert_eq!(store.create_license(&l, None).await.unwrap(), Created::New(l.clone()));
    assert_eq!(store.license_by_id(l.id).await.unwrap(), Some(l.clone()));
    assert_eq!(store.license_by_key(&l.key).await.unwrap(), Some(l.clone()));
    assert_eq!(store.license_by_id(Uuid::now_v7()).await.unwrap(), None);
    assert_eq!(store.license_by_key("AAAAA-AAAAA-AAAAA-AAAAA").await.unwrap(), None);

    // Sub-second parts are dropped, as in every backend.
    let mut precise = license(1);
    precise.created_at = OffsetDateTime::now_utc().replace_nanosecond(123_456_789).unwrap();
    store.create_license(&precise, None).await.unwrap();
    let back = store.license_by_id(precise.id).await.unwrap().unwrap();
    assert_eq!(back.created_at, whole_seconds(precise.created_at));
}

/// A second license with an existing key is refused with [`StoreError::Duplicate`].
pub async fn duplicate_license_key_is_refused(store: Arc<dyn Store>) {
    let first = created(&store, 1).await;
    let mut second = license(1);
    second.key = first.key.clone();
    assert!(matches!(store.create_license(&second, None).await, Err(StoreError::Duplicate)));
    assert_eq!(store.license_by_id(second.id).await.unwrap(), None);
}

/// The same idempotency key and request replays the first license; another request with it is a conflict.
pub async fn idempotency_key_replays_the_same_request_and_refuses_another(store: Arc<dyn Store>) {
    let idem = Idempotency { key: "order-1".into(), request_hash: "h1".into() };
    let first = license(1);
    assert!(matches!(store.create_license(&first, Some(&idem)).await.unwrap(), Created::New(_)));
    let retry = license(1);
    assert_eq!(store.create_license(&retry, Some(&idem)).await.unwrap(), Created::Replayed(first.clone()));
    assert_eq!(store.license_by_id(retry.id).await.unwrap(), None, "the retry stored nothing");
    assert_eq!(store.license_by_key(&retry.key).await.unwrap(), None, "the retry stored nothing");
    let other = Idempotency { key: "order-1".into(), request_hash: "h2".into() };
    assert!(matches!(store.create_license(&license(1), Some(&other)).await, Err(StoreError::IdempotencyConflict)));
    let fresh = Idempotency { key: "order-2".into(), request_hash: "h1".into() };
    assert!(matches!(store.create_license(&license(1), Some(&fresh)).await.unwrap(), Created::New(_)));
}

/// Many simultaneous creates with one idempotency key store one license; every other call replays it.
pub async fn concurrent_creates_with_one_idempotency_key_store_one_license(store: Arc<dyn Store>) {
    for round in 0..3 {
        let idem = Idempotency { key: format!("webhook-{round}"), request_hash: "same".into() };
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (store, idem) = (store.clone(), idem.clone());
                tokio::spawn(async move { store.create_license(&license(2), Some(&idem)).await })
            })
            .collect();
        let mut new = Vec::new();
        let mut replayed = HashSet::new();
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Created::New(l) => new.push(l.id),
                Created::Replayed(l) => {
                    replayed.insert(l.id);
                }
            }
        }
        assert_eq!(new.len(), 1, "round {round}: exactly one create stores a license");
        assert!(replayed.iter().all(|id| *id == new[0]), "round {round}: replays return the stored license");
    }
    let all = store.list_licenses(&LicenseFilter { limit: 1000, ..LicenseFilter::default() }).await.unwrap();
    assert_eq!(all.licenses.len(), 3);
}

/// 200 simultaneous activations of distinct machines on a 3-slot license give exactly 3 new machines, every round.
pub async fn slot_limit_holds_under_concurrent_activation(store: Arc<dyn Store>) {
    for round in 0..3 {
        let l = created(&store, 3).await;
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.activate_machine(l.id, &format!("m{i}"), None, None, now()).await })
            })
            .collect();
        let (mut new, mut refused) = (0, 0);
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Activated::New { machines_used, .. } => {
                    assert!((1..=3).contains(&machines_used), "round {round}: {machines_used} used");
                    new += 1;
                }
                Activated::NoSlotLeft { machines_used } => {
                    assert_eq!(machines_used, 3, "round {round}");
                    refused += 1;
                }
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!((new, refused), (3, 197), "round {round}");
        assert_eq!(store.count_machines(l.id).await.unwrap(), 3, "round {round}");
        assert_eq!(store.list_machines(l.id).await.unwrap().len(), 3, "round {round}");
    }
}

/// One machine activating many times at once takes one slot.
pub async fn concurrent_activations_of_one_fingerprint_use_one_slot(store: Arc<dyn Store>) {
    let l = created(&store, 2).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.activate_machine(l.id, "same", None, None, now()).await })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Activated::New { .. } => new += 1,
            Activated::Existing { machines_used, .. } => assert_eq!(machines_used, 1),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(new, 1);
    assert_eq!(store.count_machines(l.id).await.unwrap(), 1);
}

/// Re-activating an active machine uses no slot and keeps its name; removing a machine frees its slot.
pub async fn reactivation_uses_no_slot_and_removal_frees_one(store: Arc<dyn Store>) {
    let l = created(&store, 1).await;
    let first = store.activate_machine(l.id, "a", Some("laptop"), Some("linux-x86_64"), now()).await.unwrap();
    assert!(
        matches!(&first, Activated::New { machine, machines_used: 1 } if machine.name.as_deref() == Some("laptop"))
    );
    let again = store.activate_machine(l.id, "a", None, None, now()).await.unwrap();
    assert!(matches!(&again, Activated::Existing { machine, machines_used: 1 }
        if machine.name.as_deref() == Some("laptop") && machine.platform.as_deref() == Some("linux-x86_64")));
    let renamed = store.activate_machine(l.id, "a", Some("desk"), None, now()).await.unwrap();
    assert!(matches!(&renamed, Activated::Existing { machine, .. } if machine.name.as_deref() == Some("desk")));
    assert_eq!(
        store.activate_machine(l.id, "b", None, None, now()).await.unwrap(),
        Activated::NoSlotLeft { machines_used: 1 }
    );
    assert!(store.remove_machine(l.id, "a").await.unwrap());
    assert!(!store.remove_machine(l.id, "a").await.unwrap());
    assert!(matches!(store.activate_machine(l.id, "b", None, None, now()).await.unwrap(), Activated::New { .. }));
    assert_eq!(store.activate_machine(Uuid::now_v7(), "b", None, None, now()).await.unwrap(), Activated::NoLicense);
}

/// Machines are found by fingerprint, listed oldest first, and touched on refresh.
pub async fn machines_are_looked_up_listed_and_touched(store: Arc<dyn Store>) {
    let l = created(&store, 5).await;
    let t0 = now() - time::Duration::hours(2);
    store.activate_machine(l.id, "zz-first", Some("one"), None, t0).await.unwrap();
    store.activate_machine(l.id, "aa-second", None, Some("macos"), t0 + time::Duration::hours(1)).await.unwrap();
    let listed: Vec<String> = store.list_machines(l.id).await.unwrap().into_iter().map(|m| m.fingerprint).collect();
    assert_eq!(listed, ["zz-first", "aa-second"], "oldest activation first");

    let m = store.machine(l.id, "zz-first").await.unwrap().unwrap();
    assert_eq!((m.license_id, m.name.as_deref(), m.activated_at, m.last_seen_at), (l.id, Some("one"), t0, t0));
    assert!(!m.offline);
    assert_eq!(store.machine(l.id, "unknown").await.unwrap(), None);
    assert_eq!(store.machine(Uuid::now_v7(), "zz-first").await.unwrap(), None);

    let later = now();
    assert!(store.touch_machine(l.id, "zz-first", later).await.unwrap());
    let m = store.machine(l.id, "zz-first").await.unwrap().unwrap();
    assert_eq!((m.activated_at, m.last_seen_at), (t0, later));
    assert!(!store.touch_machine(l.id, "unknown", later).await.unwrap());
    assert_eq!(store.count_machines(l.id).await.unwrap(), 2);
    assert_eq!(store.count_machines(Uuid::now_v7()).await.unwrap(), 0);
}

/// Listing filters by email (any case), product and status, and pages with a cursor in creation order.
pub async fn list_filters_and_pages_with_a_cursor(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut l = license(1);
        if i % 2 == 0 {
            l.email = "Bob@Example.com".into();
        }
        if i % 3 == 0 {
            l.product = "acme-viewer".into();
        }
        // Two licenses share each creation time: the id breaks the tie.
        l.created_at = now() - time::Duration::seconds(10 - i / 2);
        store.create_license(&l, None).await.unwrap();
        ids.push(l.id);
    }
    let mut filter = LicenseFilter { limit: 2, ..LicenseFilter::default() };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list_licenses(&filter).await.unwrap();
        pages += 1;
        assert!(page.licenses.len() <= 2);
        seen.extend(page.licenses.iter().map(|l| l.id));
        match page.next {
            // The cursor survives its text form, as clients carry it.
            Some(c) => filter.after = Some(Cursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 4);

    let all = |f: LicenseFilter| {
        let store = store.clone();
        async move { store.list_licenses(&LicenseFilter { limit: 100, ..f }).await.unwrap() }
    };
    let bobs = all(LicenseFilter { email: Some("bob@example.com".into()), ..LicenseFilter::default() }).await;
    assert_eq!(bobs.licenses.len(), 4);
    assert!(bobs.next.is_none());
    let viewers = all(LicenseFilter { product: Some("acme-viewer".into()), ..LicenseFilter::default() }).await;
    assert_eq!(viewers.licenses.iter().map(|l| l.id).collect::<Vec<_>>(), [ids[0], ids[3], ids[6]]);
    store.change_status(ids[3], LicenseStatus::Active, LicenseStatus::Suspended, now()).await.unwrap();
    let suspended = all(LicenseFilter { status: Some(EffectiveStatus::Suspended), ..LicenseFilter::default() }).await;
    assert_eq!(suspended.licenses.iter().map(|l| l.id).collect::<Vec<_>>(), [ids[3]]);
    let both = all(LicenseFilter {
        email: Some("BOB@EXAMPLE.COM".into()),
        product: Some("acme-viewer".into()),
        ..LicenseFilter::default()
    })
    .await;
    assert_eq!(both.licenses.iter().map(|l| l.id).collect::<Vec<_>>(), [ids[0], ids[6]]);
    let none = all(LicenseFilter { email: Some("nobody@example.com".into()), ..LicenseFilter::default() }).await;
    assert!(none.licenses.is_empty() && none.next.is_none());
}

/// An update changes the given fields only; `Some(None)` makes a license perpetual; unknown ids give `None`.
pub async fn update_changes_only_the_given_fields(store: Arc<dyn Store>) {
    let l = created(&store, 1).await;
    let at = now() + time::Duration::seconds(5);
    let expires = now() + time::Duration::days(30);
    let update = LicenseUpdate { max_machines: Some(5), expires_at: Some(Some(expires)), ..LicenseUpdate::default() };
    let updated = store.update_license(l.id, &update, at).await.unwrap().unwrap();
    assert_eq!((updated.max_machines, updated.expires_at, updated.updated_at), (5, Some(expires), at));
    assert_eq!(
        (&updated.entitlements, &updated.metadata, updated.created_at),
        (&l.entitlements, &l.metadata, l.created_at)
    );
    assert_eq!(store.license_by_id(l.id).await.unwrap(), Some(updated.clone()));

    let mut metadata = serde_json::Map::new();
    metadata.insert("crm".into(), serde_json::json!("C-7"));
    let update = LicenseUpdate {
        expires_at: Some(None),
        entitlements: Some(vec!["export".into()]),
        metadata: Some(metadata.clone()),
        ..LicenseUpdate::default()
    };
    let updated = store.update_license(l.id, &update, at).await.unwrap().unwrap();
    assert_eq!(updated.expires_at, None);
    assert_eq!(updated.entitlements, ["export"]);
    assert_eq!(updated.metadata, metadata);
    assert_eq!(updated.max_machines, 5);
    assert!(store.update_license(Uuid::now_v7(), &update, at).await.unwrap().is_none());
}

/// A status change is compare-and-set: it applies only from the status it names, and is stored with its time. The
/// database refuses any change away from revoked. Unknown ids give `None`.
pub async fn status_changes_are_compare_and_set_and_revoked_is_final(store: Arc<dyn Store>) {
    use LicenseStatus::{Active, Revoked, Suspended};
    let l = created(&store, 1).await;
    let at = now() + time::Duration::seconds(3);
    assert_eq!(store.change_status(l.id, Suspended, Active, at).await.unwrap(), None, "not suspended: no change");
    assert_eq!(store.license_by_id(l.id).await.unwrap().unwrap(), l);
    for (from, to) in [(Active, Suspended), (Suspended, Active), (Active, Suspended), (Suspended, Revoked)] {
        let changed = store.change_status(l.id, from, to, at).await.unwrap().unwrap();
        assert_eq!((changed.status, changed.updated_at), (to, at));
        assert_eq!(store.license_by_key(&l.key).await.unwrap().unwrap().status, to);
    }
    for to in [Active, Suspended] {
        let undo = store.change_status(l.id, Revoked, to, at).await;
        assert!(matches!(undo, Err(StoreError::RevokedIsFinal)), "{undo:?}");
    }
    assert_eq!(store.license_by_id(l.id).await.unwrap().unwrap().status, Revoked);
    assert!(store.change_status(Uuid::now_v7(), Active, Revoked, now()).await.unwrap().is_none());
}

/// Events read back equal, oldest first, only the license's own, paged by id.
pub async fn events_are_appended_in_order_and_paged_per_license(store: Arc<dyn Store>) {
    let (a, b) = (created(&store, 1).await, created(&store, 1).await);
    let kinds =
        [EventKind::Created, EventKind::Activated, EventKind::Validated, EventKind::Refreshed, EventKind::Revoked];
    let mut appended = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let actor = match i % 3 {
            0 => Some(Actor::AdminToken { id: "0123456789abcdef".into(), label: "ci".into() }),
            1 => Some(Actor::App),
            _ => None,
        };
        let event = NewEvent {
            license_id: Some(a.id),
            kind,
            at: now(),
            fingerprint: (i % 2 == 1).then(|| format!("fp-{i}")),
            client_ip: Some("192.0.2.7".into()),
            actor,
            detail: serde_json::json!({ "n": i, "code": "VALID" }),
        };
        store.append_event(&event).await.unwrap();
        store
            .append_event(&NewEvent {
                license_id: Some(b.id),
                client_ip: None,
                detail: serde_json::json!({}),
                ..event.clone()
            })
            .await
            .unwrap();
        appended.push(event);
    }
    let all = store.list_events(a.id, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), appended);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let first = store.list_events(a.id, 0, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.list_events(a.id, first[1].id, 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.event.kind).collect::<Vec<_>>(), &kinds[2..]);
    assert!(store.list_events(a.id, all[4].id, 100).await.unwrap().is_empty());
    assert_eq!(store.list_events(b.id, 0, 100).await.unwrap().len(), 5);
    assert!(store.list_events(Uuid::now_v7(), 0, 100).await.unwrap().is_empty());

    // Concurrent appends: every event is stored once, ids increasing.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let event = NewEvent { detail: serde_json::json!({ "n": 100 + i }), ..appended[2].clone() };
            tokio::spawn(async move { store.append_event(&event).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = store.list_events(a.id, 0, 1000).await.unwrap();
    assert_eq!(all.len(), 45);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
}

/// An offline deactivation code frees its machine's slot once, and only on its own license.
pub async fn offline_deactivation_frees_the_slot_once_and_only_on_its_license(store: Arc<dyn Store>) {
    let (a, b) = (created(&store, 1).await, created(&store, 1).await);
    store.activate_machine(a.id, "fp-a", None, None, now()).await.unwrap();
    assert!(!store.set_offline_proof(a.id, "not-active", &[1; 16]).await.unwrap());
    assert!(store.set_offline_proof(a.id, "fp-a", &[3; 16]).await.unwrap());
    // A newer offline token replaces the proof of the older one.
    assert!(store.set_offline_proof(a.id, "fp-a", &[1; 16]).await.unwrap());
    assert!(store.machine(a.id, "fp-a").await.unwrap().unwrap().offline);
    assert_eq!(store.redeem_deactivation(a.id, &[3; 16], now()).await.unwrap(), Redeemed::NoMatch);
    // Another license's code, or an unknown proof, frees nothing.
    assert_eq!(store.redeem_deactivation(b.id, &[1; 16], now()).await.unwrap(), Redeemed::NoMatch);
    assert_eq!(store.redeem_deactivation(a.id, &[2; 16], now()).await.unwrap(), Redeemed::NoMatch);
    let at = now();
    assert_eq!(
        store.redeem_deactivation(a.id, &[1; 16], at).await.unwrap(),
        Redeemed::Freed { fingerprint: "fp-a".into(), machines_used: 0 }
    );
    assert_eq!(
        store.redeem_deactivation(a.id, &[1; 16], now() + time::Duration::hours(1)).await.unwrap(),
        Redeemed::AlreadyRedeemed { fingerprint: "fp-a".into(), redeemed_at: at }
    );
    assert_eq!(store.redeem_deactivation(b.id, &[1; 16], now()).await.unwrap(), Redeemed::NoMatch);
    assert_eq!(store.count_machines(a.id).await.unwrap(), 0);
    assert!(matches!(store.activate_machine(a.id, "fp-new", None, None, now()).await.unwrap(), Activated::New { .. }));
}

/// Many simultaneous redemptions of one code free one slot once.
pub async fn concurrent_redemptions_of_one_code_free_one_slot_once(store: Arc<dyn Store>) {
    let l = created(&store, 3).await;
    for fp in ["x", "y", "z"] {
        store.activate_machine(l.id, fp, None, None, now()).await.unwrap();
    }
    assert!(store.set_offline_proof(l.id, "y", &[5; 16]).await.unwrap());
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.redeem_deactivation(l.id, &[5; 16], now()).await })
        })
        .collect();
    let mut freed = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Redeemed::Freed { fingerprint, machines_used } => {
                assert_eq!((fingerprint.as_str(), machines_used), ("y", 2));
                freed += 1;
            }
            Redeemed::AlreadyRedeemed { fingerprint, .. } => assert_eq!(fingerprint, "y"),
            Redeemed::NoMatch => panic!("a redemption found neither the machine nor the redemption record"),
        }
    }
    assert_eq!(freed, 1);
    assert_eq!(store.count_machines(l.id).await.unwrap(), 2);
}

/// The validation read: license, active machine count, and whether this machine is one of them.
pub async fn license_for_machine_answers_what_a_validation_needs(store: Arc<dyn Store>) {
    let l = created(&store, 3).await;
    store.activate_machine(l.id, "here", None, None, now()).await.unwrap();
    store.activate_machine(l.id, "there", None, None, now()).await.unwrap();
    let check = store.license_for_machine(&l.key, "here", now()).await.unwrap().unwrap();
    assert_eq!((check.license.id, check.machines_used, check.presence), (l.id, 2, Presence::Active));
    let check = store.license_for_machine(&l.key, "elsewhere", now()).await.unwrap().unwrap();
    assert_eq!((check.machines_used, check.presence), (2, Presence::Absent));
    assert!(store.license_for_machine("NOKEY-NOKEY-NOKEY-NOKEY", "here", now()).await.unwrap().is_none());
}

/// The status filter judges expiry at the filter's `now`: an active license past its expiry is expired, not active;
/// suspended and revoked ones are what they are whatever their expiry. The email prefix matches case-insensitively
/// and takes `%` and `_` literally.
pub async fn list_filters_by_status_as_it_stands_and_by_email_prefix(store: Arc<dyn Store>) {
    let t = now();
    let make = |email: &str, expires: Option<OffsetDateTime>| {
        let mut l = license(1);
        l.email = email.into();
        l.expires_at = expires;
        l
    };
    let perpetual = make("ada@example.com", None);
    let running = make("Ada.Lovelace@example.com", Some(t + time::Duration::days(1)));
    let lapsed = make("bob@example.com", Some(t - time::Duration::days(1)));
    let lapsed_suspended = make("a%b_c@example.com", Some(t - time::Duration::days(1)));
    for l in [&perpetual, &running, &lapsed, &lapsed_suspended] {
        store.create_license(l, None).await.unwrap();
    }
    store.change_status(lapsed_suspended.id, LicenseStatus::Active, LicenseStatus::Suspended, t).await.unwrap();
    let ids = |filter: LicenseFilter| {
        let store = store.clone();
        async move {
            let page = store.list_licenses(&LicenseFilter { limit: 100, ..filter }).await.unwrap();
            page.licenses.into_iter().map(|l| l.id).collect::<HashSet<_>>()
        }
    };
    let at = |status| LicenseFilter { status: Some(status), now: Some(t), ..LicenseFilter::default() };
    assert_eq!(ids(at(EffectiveStatus::Active)).await, HashSet::from([perpetual.id, running.id]));
    assert_eq!(ids(at(EffectiveStatus::Expired)).await, HashSet::from([lapsed.id]));
    assert_eq!(ids(at(EffectiveStatus::Suspended)).await, HashSet::from([lapsed_suspended.id]));
    assert!(ids(at(EffectiveStatus::Revoked)).await.is_empty());
    // Judged at another time, the same licenses stand otherwise.
    let later = LicenseFilter { now: Some(t + time::Duration::days(2)), ..at(EffectiveStatus::Expired) };
    assert_eq!(ids(later).await, HashSet::from([lapsed.id, running.id]));
    assert_eq!(lapsed.effective_status(t), EffectiveStatus::Expired);
    assert_eq!(running.effective_status(t), EffectiveStatus::Active);

    let prefix = |p: &str| LicenseFilter { email_prefix: Some(p.into()), ..LicenseFilter::default() };
    assert_eq!(ids(prefix("ADA")).await, HashSet::from([perpetual.id, running.id]));
    assert_eq!(ids(prefix("ada.")).await, HashSet::from([running.id]));
    assert_eq!(ids(prefix("a%")).await, HashSet::from([lapsed_suspended.id]), "% is a plain character");
    assert!(ids(prefix("a_")).await.is_empty(), "_ is a plain character");
    assert!(ids(prefix("zed")).await.is_empty());
}

fn recorded(key_id: &str, active: bool) -> issuer::RecordedKey {
    issuer::RecordedKey { key_id: key_id.into(), public_key: format!("lpk1.{key_id}"), active }
}

async fn record(store: &Arc<dyn Store>, keys: Vec<issuer::RecordedKey>, how: issuer::RecordKeys) -> bool {
    issuer::StoreExt::transact(&**store, move |tx| Box::pin(async move { tx.record_keys(&keys, how, now()).await }))
        .await
        .unwrap()
}

/// The first ring is recorded once, also when many instances try at the same moment; later updates are
/// compare-and-set on the recorded signing key, mark the new one and retire the old one, keep keys no longer given as
/// retired, and never make a retired key sign again.
pub async fn the_signing_key_ring_is_recorded_once_then_updated(store: Arc<dyn Store>) {
    use issuer::RecordKeys::{First, Update};
    assert!(store.recorded_keys().await.unwrap().is_empty());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { record(&store, vec![recorded(&format!("{i:016x}"), true)], First).await })
        })
        .collect();
    let mut first = 0;
    for t in tasks {
        first += usize::from(t.await.unwrap());
    }
    assert_eq!(first, 1, "exactly one first ring is recorded");
    let keys = store.recorded_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    let a = keys[0].key_id.clone();
    assert!(keys[0].active);
    assert!(!record(&store, vec![recorded("bbbbbbbbbbbbbbbb", true)], First).await, "a first ring only once");

    let update = |expect: &[&str]| Update { expect_active: expect.iter().map(|s| s.to_string()).collect() };
    // A rotation from a key the store does not record as signing is refused (an out-of-date copy, a lost race).
    assert!(!record(&store, vec![recorded("bbbbbbbbbbbbbbbb", true)], update(&["dddddddddddddddd"])).await);
    // A rotation: the new key signs, the old one is retired.
    assert!(record(&store, vec![recorded("bbbbbbbbbbbbbbbb", true), recorded(&a, false)], update(&[&a])).await);
    // The same rotation from the old ring again (a second machine rotating from the same copy) is refused.
    assert!(!record(&store, vec![recorded("eeeeeeeeeeeeeeee", true), recorded(&a, false)], update(&[&a])).await);
    // A retired key never signs again, whatever the caller expects.
    assert!(!record(&store, vec![recorded(&a, true)], update(&["bbbbbbbbbbbbbbbb"])).await);
    let keys = store.recorded_keys().await.unwrap();
    assert_eq!(
        keys,
        vec![
            recorded("bbbbbbbbbbbbbbbb", true),
            issuer::RecordedKey { public_key: format!("lpk1.{a}"), ..recorded(&a, false) }
        ]
    );
    // A retirement that drops the old key from the ring keeps it recorded, retired.
    assert!(record(&store, vec![recorded("cccccccccccccccc", true)], update(&["bbbbbbbbbbbbbbbb"])).await);
    let keys = store.recorded_keys().await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.active).map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["cccccccccccccccc"]);
    assert_eq!(keys.len(), 3);
}
