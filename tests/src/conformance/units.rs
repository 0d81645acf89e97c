//! The unit of work: a unit's writes commit together or not at all; a failure injected between the writes of one
//! service operation leaves neither write; another writer on the database cannot undo a revocation; and after a
//! concurrent load of every kind of operation, each change has exactly one event.

use std::collections::{BTreeSet, HashMap};

use issuer::{
    Activated, EventKind, LicenseRef, LicenseStatus, LicenseUpdate, Licensing, NewEvent, ServiceError, StoreError,
    StoreExt as _,
};
use verifier::{DeactivationCode, TokenKind};

use super::races::{ctx, licensing, new_license};
use super::{created, license, machine, now, Backend, TestStore};

fn event(license_id: uuid::Uuid, kind: EventKind) -> NewEvent {
    NewEvent {
        license_id: Some(license_id),
        kind,
        at: now(),
        fingerprint: None,
        client_ip: None,
        actor: Some(issuer::Actor::App),
        detail: serde_json::json!({}),
    }
}

/// A unit that returns an error leaves none of its writes; one that returns `Ok` keeps all of them; a store error
/// inside a unit (a duplicate key) can be handled by the unit without spoiling its other writes.
pub async fn a_unit_commits_all_its_writes_or_none(test: &TestStore) {
    let store = test.store.clone();
    let l = created(&store, 3).await;
    let id = l.id;
    let undone: Result<(), StoreError> = store
        .transact(move |tx| {
            Box::pin(async move {
                assert!(matches!(tx.activate_machine(id, &machine("a"), 0).await?, Activated::New { .. }));
                tx.append_event(&event(id, EventKind::Activated)).await?;
                assert_eq!(tx.count_machines(id).await?, 1, "the unit sees its own writes");
                Err(StoreError::Corrupt("the unit asks to roll back".into()))
            })
        })
        .await;
    assert!(matches!(undone, Err(StoreError::Corrupt(_))), "the unit's own error comes back: {undone:?}");
    assert_eq!(store.count_machines(id).await.unwrap(), 0, "rolled back: no machine");
    assert!(store.list_events(id, 0, 10).await.unwrap().is_empty(), "rolled back: no event");

    let kept: Result<u32, StoreError> = store
        .transact(move |tx| {
            Box::pin(async move {
                tx.activate_machine(id, &machine("a"), 0).await?;
                tx.activate_machine(id, &machine("b"), 0).await?;
                tx.append_event(&event(id, EventKind::Activated)).await?;
                tx.count_machines(id).await
            })
        })
        .await;
    assert_eq!(kept.unwrap(), 2);
    assert_eq!(store.count_machines(id).await.unwrap(), 2);
    assert_eq!(store.list_events(id, 0, 10).await.unwrap().len(), 1);

    // A duplicate license key inside a unit: the unit handles it and goes on; its other writes commit.
    let mut twin = license(1);
    twin.key = l.key.clone();
    let handled: Result<(), StoreError> = store
        .transact(move |tx| {
            Box::pin(async move {
                assert!(matches!(tx.insert_license(&twin, None).await, Err(StoreError::Duplicate)));
                tx.activate_machine(id, &machine("c"), 0).await?;
                tx.append_event(&event(id, EventKind::Activated)).await
            })
        })
        .await;
    handled.unwrap();
    assert_eq!(store.count_machines(id).await.unwrap(), 3);
    assert_eq!(store.list_events(id, 0, 10).await.unwrap().len(), 2);

    // Concurrent units that each fail leave nothing, and do not disturb the ones that succeed beside them.
    let l2 = created(&store, 100).await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .transact(move |tx| {
                        Box::pin(async move {
                            tx.activate_machine(l2.id, &machine(&format!("m{i}")), 0).await?;
                            tx.append_event(&event(l2.id, EventKind::Activated)).await?;
                            if i % 2 == 1 {
                                return Err(StoreError::Corrupt("odd".into()));
                            }
                            Ok(())
                        })
                    })
                    .await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().is_ok(), i % 2 == 0);
    }
    let machines: BTreeSet<String> =
        store.list_machines(l2.id).await.unwrap().into_iter().map(|m| m.fingerprint).collect();
    assert_eq!(machines, (0..60).filter(|i| i % 2 == 0).map(|i| format!("m{i}")).collect());
    assert_eq!(store.list_events(l2.id, 0, 100).await.unwrap().len(), 30);
}

/// The SQL that makes every insert into `events` fail, and the SQL that stops it, in the backend's dialect.
fn event_failure_sql(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Sqlite => (
            "CREATE TRIGGER inject_event_failure BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'injected'); END",
            "DROP TRIGGER inject_event_failure",
        ),
        Backend::Postgres => (
            "CREATE FUNCTION inject_failure() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected'; \
             END $$; CREATE TRIGGER inject_event_failure BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION \
             inject_failure()",
            "DROP TRIGGER inject_event_failure ON events",
        ),
    }
}

/// What a case can see of one license's state.
async fn snapshot(service: &Licensing, id: uuid::Uuid) -> (issuer::License, Vec<issuer::Machine>, usize) {
    let which = LicenseRef::Id(id);
    let (license, machines) = service.machines(&which).await.unwrap();
    let events = service.events(&which, 0, 1000).await.unwrap().len();
    (license, machines, events)
}

/// With the event insert failing in the database (a trigger, installed by another connection), every operation
/// that changes state fails with a store error and leaves no trace: the change is undone with its event. Once the
/// failure is gone, each operation succeeds with exactly one event.
pub async fn a_failure_between_the_writes_of_an_operation_leaves_neither(test: &TestStore) {
    let (service, _dir) = licensing(test.store.clone());
    let (l, _) = service.create_license(new_license(3), None, &ctx()).await.unwrap();
    let which = LicenseRef::Id(l.id);
    let online = service.activate(&l.key, "online-1", None, None, &ctx()).await.unwrap();
    let offline = service.activate_license(&which, "offline-1", None, None, TokenKind::Offline, &ctx()).await.unwrap();
    let code = DeactivationCode::for_token(&offline.token, &service.public_keys()).unwrap();
    let before = snapshot(&service, l.id).await;
    let all = issuer::LicenseFilter { limit: 100, ..Default::default() };
    let licenses_before = test.store.list_licenses(&all).await.unwrap().licenses.len();

    let (inject, heal) = event_failure_sql(test.backend);
    (test.sql)(inject.to_string()).await.unwrap();
    let failed = |what: &str, result: Result<(), ServiceError>| match result {
        Err(ServiceError::Store(_)) => {}
        other => panic!("{what}: expected a store failure, got {other:?}"),
    };
    let update = LicenseUpdate { max_machines: Some(5), ..LicenseUpdate::default() };
    failed("create", service.create_license(new_license(1), Some("order-9"), &ctx()).await.map(|_| ()));
    failed("update", service.update_license(&which, update.clone(), &ctx()).await.map(|_| ()));
    failed("suspend", service.suspend(&which, &ctx()).await.map(|_| ()));
    failed("revoke", service.revoke(&which, &ctx()).await.map(|_| ()));
    failed("activate", service.activate(&l.key, "online-2", None, None, &ctx()).await.map(|_| ()));
    failed(
        "activate offline",
        service.activate_license(&which, "offline-2", None, None, TokenKind::Offline, &ctx()).await.map(|_| ()),
    );
    failed("re-activate offline (new proof)", {
        service.activate_license(&which, "offline-1", None, None, TokenKind::Offline, &ctx()).await.map(|_| ())
    });
    failed("refresh", service.refresh(&online.token, &ctx()).await.map(|_| ()));
    failed("deactivate", service.deactivate(&l.key, "online-1", &ctx()).await.map(|_| ()));
    failed("remove machine", service.remove_machine(&which, "online-1", &ctx()).await);
    failed("redeem deactivation", service.redeem_deactivation(&code, &ctx()).await.map(|_| ()));
    // A validation writes nothing of its own (it is counted in memory, docs/usage.md): it still answers.
    let validated = service.validate(&l.key, "online-1", None, &ctx()).await.unwrap();
    assert_eq!(validated.code, issuer::ValidationCode::Valid);
    assert_eq!(snapshot(&service, l.id).await, before, "no operation left a change without its event");
    let licenses_after = test.store.list_licenses(&all).await.unwrap().licenses.len();
    assert_eq!(licenses_after, licenses_before, "the failed create stored nothing");

    (test.sql)(heal.to_string()).await.unwrap();
    let events = |n: usize| before.2 + n;
    service.update_license(&which, update, &ctx()).await.unwrap();
    assert_eq!(snapshot(&service, l.id).await.2, events(1));
    service.suspend(&which, &ctx()).await.unwrap();
    service.reinstate(&which, &ctx()).await.unwrap();
    service.refresh(&online.token, &ctx()).await.unwrap();
    service.redeem_deactivation(&code, &ctx()).await.unwrap();
    service.deactivate(&l.key, "online-1", &ctx()).await.unwrap();
    let (after, machines, n) = snapshot(&service, l.id).await;
    assert_eq!((after.max_machines, after.status, machines.len(), n), (5, LicenseStatus::Active, 0, events(6)));
    // The create that failed under its idempotency key can be retried with it: nothing of it was kept.
    let (_, new) = service.create_license(new_license(1), Some("order-9"), &ctx()).await.unwrap();
    assert!(new, "the retried create is new");
}

/// A writer beside the issuer (another tool, a hand-typed UPDATE) cannot undo a revocation: the database refuses.
pub async fn a_foreign_writer_cannot_undo_a_revocation(test: &TestStore) {
    let (service, _dir) = licensing(test.store.clone());
    let (l, _) = service.create_license(new_license(1), None, &ctx()).await.unwrap();
    service.revoke(&LicenseRef::Id(l.id), &ctx()).await.unwrap();
    for status in ["active", "suspended"] {
        let undo = (test.sql)(format!("UPDATE licenses SET status = '{status}' WHERE id = '{}'", l.id)).await;
        let message = undo.expect_err("the database refused the update");
        assert!(message.contains("revoked_is_final"), "{message}");
    }
    // Other fields of a revoked license may still change (a support note, say), and it stays revoked.
    (test.sql)(format!("UPDATE licenses SET email = 'new@example.com' WHERE id = '{}'", l.id)).await.unwrap();
    assert_eq!(test.store.license_by_id(l.id).await.unwrap().unwrap().status, LicenseStatus::Revoked);
}

/// Operations of every kind at once on a few licenses; afterwards each answered change has exactly one event: the
/// counts match per kind, the status events form a chain that ends in the stored status, and replaying the machine
/// events gives the stored machines.
pub async fn every_change_has_exactly_one_event_after_a_concurrent_load(test: &TestStore) {
    let (service, _dir) = licensing(test.store.clone());
    // An endpoint of every event: the outbox must hold exactly one delivery per event (nobody delivers here).
    let hook = issuer::NewWebhook {
        url: "http://127.0.0.1:9/hook".into(),
        events: vec!["*".into()],
        description: String::new(),
    };
    let hook = service.create_webhook(hook, &ctx()).await.unwrap();
    let mut licenses = Vec::new();
    for _ in 0..3 {
        let (l, _) = service.create_license(new_license(3), None, &ctx()).await.unwrap();
        let token = service.activate(&l.key, "seed", None, None, &ctx()).await.unwrap().token;
        licenses.push((l, token));
    }
    let tasks: Vec<_> = (0..240)
        .map(|i| {
            let (service, (l, token)) = (service.clone(), licenses[i % licenses.len()].clone());
            tokio::spawn(async move {
                let which = LicenseRef::Id(l.id);
                let fp = format!("m{}", (i / 3) % 5);
                // (kind of event the operation writes when answered, whether it was answered as done)
                let (kind, done) = match (i / 3) % 7 {
                    0 | 1 => (EventKind::Activated, service.activate(&l.key, &fp, None, None, &ctx()).await.is_ok()),
                    2 => (EventKind::Deactivated, service.deactivate(&l.key, &fp, &ctx()).await.is_ok()),
                    3 => {
                        let update = LicenseUpdate { max_machines: Some(3 + (i % 2) as u32), ..Default::default() };
                        (EventKind::Updated, service.update_license(&which, update, &ctx()).await.is_ok())
                    }
                    4 => (EventKind::Suspended, service.suspend(&which, &ctx()).await.is_ok()),
                    5 => (EventKind::Reinstated, service.reinstate(&which, &ctx()).await.is_ok()),
                    _ => match service.refresh(&token, &ctx()).await {
                        // A refused refresh is answered too, and recorded as such.
                        Err(ServiceError::Store(e)) => panic!("refresh: {e}"),
                        _ => (EventKind::Refreshed, true),
                    },
                };
                (kind, done)
            })
        })
        .collect();
    let mut answered: HashMap<EventKind, usize> = HashMap::new();
    for t in tasks {
        let (kind, done) = t.await.unwrap();
        if done && !matches!(kind, EventKind::Suspended | EventKind::Reinstated) {
            *answered.entry(kind).or_default() += 1;
        }
    }
    let mut logged: HashMap<EventKind, usize> = HashMap::new();
    for (l, _) in &licenses {
        let events = service.events(&LicenseRef::Id(l.id), 0, 10_000).await.unwrap();
        let mut status = LicenseStatus::Active;
        let mut machines = BTreeSet::new();
        for e in &events {
            let e = &e.event;
            *logged.entry(e.kind).or_default() += 1;
            let fp = e.fingerprint.clone();
            match e.kind {
                EventKind::Suspended | EventKind::Reinstated => {
                    assert_eq!(e.detail["from"], status.as_str(), "status events chain: {events:?}");
                    status =
                        if e.kind == EventKind::Suspended { LicenseStatus::Suspended } else { LicenseStatus::Active };
                }
                EventKind::Activated if e.detail["new_machine"] == true => assert!(machines.insert(fp.unwrap())),
                EventKind::Deactivated => assert!(machines.remove(&fp.unwrap())),
                _ => {}
            }
        }
        let stored = service.license(&LicenseRef::Id(l.id)).await.unwrap();
        assert_eq!(stored.status, status, "the last status event is the stored status");
        let stored: BTreeSet<String> =
            service.machines(&LicenseRef::Id(l.id)).await.unwrap().1.into_iter().map(|m| m.fingerprint).collect();
        assert_eq!(stored, machines, "replaying the machine events gives the stored machines");
    }
    // Seeding wrote one created and one activated event per license.
    let seeded = licenses.len();
    for kind in [EventKind::Activated, EventKind::Deactivated, EventKind::Updated, EventKind::Refreshed] {
        let extra = if kind == EventKind::Activated { seeded } else { 0 };
        assert_eq!(
            logged.get(&kind).copied().unwrap_or(0),
            answered.get(&kind).copied().unwrap_or(0) + extra,
            "{kind:?}"
        );
    }
    assert_eq!(logged[&EventKind::Created], seeded);

    let events = service.audit_events(&issuer::EventFilter { limit: 100_000, ..Default::default() }).await.unwrap();
    let mut deliveries = Vec::new();
    loop {
        let after = deliveries.last().map_or(0, |d: &issuer::Delivery| d.id);
        let page = service.deliveries(hook.id, after, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        deliveries.extend(page);
    }
    let mut delivered: Vec<i64> = deliveries.iter().map(|d| d.event_id).collect();
    delivered.sort_unstable();
    let logged: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(delivered, logged, "exactly one queued delivery per event, and none without its event");
}
