//! The store conformance suite (`e2e_tests::conformance`) run against every backend: SQLite (a file in a temporary
//! directory) and PostgreSQL (a fresh database per test, see `e2e_tests::pg`), plus what only one backend has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use e2e_tests::conformance::TestStore;
use e2e_tests::pg;
use issuer::{PostgresStore, SqliteStore, Store};

/// A fresh SQLite store in a temporary directory.
async fn sqlite(_test: &str) -> Option<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("issuer.db")).await.unwrap();
    Some(TestStore { store: Arc::new(store), keep: Box::new(dir) })
}

/// A fresh PostgreSQL store on its own database, opened through the URL dispatch the service uses.
async fn postgres(test: &str) -> Option<TestStore> {
    let db = pg::test_database(test).await?;
    let store = issuer::connect_store(db.url(), 20).await.unwrap();
    Some(TestStore { store, keep: Box::new(db) })
}

mod sqlite {
    e2e_tests::store_conformance_tests!(super::sqlite);
}

mod postgres {
    e2e_tests::store_conformance_tests!(super::postgres);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together_migrate_once() {
    let Some(db) = pg::test_database("migrate_once").await else { return };
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url().to_string();
            tokio::spawn(async move { PostgresStore::connect(&url, 2).await })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap().unwrap());
    }
    // Reopening applies nothing and keeps the data.
    let l = issuer::License {
        id: uuid::Uuid::now_v7(),
        key: issuer::LicenseKey::generate().unwrap().to_string(),
        email: "ada@example.com".into(),
        product: "acme-cad".into(),
        max_machines: 1,
        expires_at: None,
        entitlements: vec![],
        metadata: serde_json::Map::new(),
        status: issuer::LicenseStatus::Active,
        created_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        updated_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
    };
    stores[0].create_license(&l, None).await.unwrap();
    let reopened = PostgresStore::connect(db.url(), 2).await.unwrap();
    assert_eq!(reopened.license_by_id(l.id).await.unwrap(), Some(l));
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version").fetch_all(&mut conn).await.unwrap();
    assert_eq!(versions, [1], "each migration recorded once");
    for s in stores {
        s.close().await;
    }
    reopened.close().await;
}
