//! Unit tests of the SQLite backend that need its private parts (the writer, migrations).

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::Arc;

use super::*;
use crate::store::StoreExt as _;

async fn create(store: &SqliteStore, license: &License) {
    let l = license.clone();
    store.transact(move |tx| Box::pin(async move { tx.insert_license(&l, None).await })).await.unwrap();
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap()
}

fn license(max_machines: u32) -> License {
    License {
        id: Uuid::now_v7(),
        key: crate::LicenseKey::generate().unwrap().to_string(),
        email: "ada@example.com".into(),
        product: "acme-cad".into(),
        max_machines,
        expires_at: None,
        entitlements: vec!["pro".into()],
        metadata: serde_json::Map::new(),
        status: LicenseStatus::Active,
        policy: None,
        kind: crate::store::LicenseKind::Machine,
        created_at: now(),
        updated_at: now(),
        validation_count: 0,
        last_validated_at: None,
    }
}

#[tokio::test]
async fn in_memory_database_is_one_database_for_writer_and_readers() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    let l = license(1);
    create(&store, &l).await;
    assert_eq!(store.license_by_id(l.id).await.unwrap(), Some(l));
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.db");
    let l = license(1);
    create(&SqliteStore::open(&path).await.unwrap(), &l).await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.license_by_id(l.id).await.unwrap(), Some(l));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_limit_holds_across_two_stores_on_one_file() {
    // Two pools, each with its own in-process write queue: only SQLite's write lock keeps the slot limit, as
    // it would between two processes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.db");
    let a = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b = Arc::new(SqliteStore::open(&path).await.unwrap());
    for round in 0..3 {
        let l = license(3);
        create(&a, &l).await;
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    let fingerprint = format!("m{i}");
                    store
                        .transact(move |tx| {
                            Box::pin(async move {
                                let m = NewMachine {
                                    fingerprint: &fingerprint,
                                    name: None,
                                    platform: None,
                                    at: now(),
                                    lease_expires_at: None,
                                };
                                tx.activate_machine(l.id, &m, 0).await
                            })
                        })
                        .await
                })
            })
            .collect();
        let mut new = 0;
        for t in tasks {
            if let Activated::New { .. } = t.await.unwrap().unwrap() {
                new += 1;
            }
        }
        assert_eq!(new, 3, "round {round}");
        assert_eq!(b.count_machines(l.id).await.unwrap(), 3, "round {round}");
    }
}
