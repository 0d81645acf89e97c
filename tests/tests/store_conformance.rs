//! The store conformance suite (`e2e_tests::conformance`) run against every backend: SQLite (a file in a temporary
//! directory) and PostgreSQL (a fresh database per test, see `e2e_tests::pg`), plus what only one backend has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use e2e_tests::conformance::{races, Backend, RawSql, TestStore};
use e2e_tests::pg;
use issuer::{PostgresStore, SqliteStore, Store};
use sqlx::{Connection as _, Executor as _};

/// SQL on the SQLite file over a connection of its own, as another process would write.
fn sqlite_sql(path: std::path::PathBuf) -> RawSql {
    Arc::new(move |sql: String| {
        let path = path.clone();
        Box::pin(async move {
            let options =
                sqlx::sqlite::SqliteConnectOptions::new().filename(&path).busy_timeout(Duration::from_secs(15));
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.map_err(|e| e.to_string())?;
            conn.execute(sql.as_str()).await.map(|_| ()).map_err(|e| e.to_string())
        })
    })
}

/// SQL on the PostgreSQL database over a connection of its own.
fn postgres_sql(url: String) -> RawSql {
    Arc::new(move |sql: String| {
        let url = url.clone();
        Box::pin(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.map_err(|e| e.to_string())?;
            conn.execute(sql.as_str()).await.map(|_| ()).map_err(|e| e.to_string())
        })
    })
}

/// A fresh SQLite store in a temporary directory.
async fn sqlite(_test: &str) -> Option<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.db");
    let store = SqliteStore::open(&path).await.unwrap();
    Some(TestStore { store: Arc::new(store), backend: Backend::Sqlite, sql: sqlite_sql(path), keep: Box::new(dir) })
}

/// A fresh PostgreSQL store on its own database, opened through the URL dispatch the service uses.
async fn postgres(test: &str) -> Option<TestStore> {
    let db = pg::test_database(test).await?;
    let store = issuer::connect_store(db.url(), 20).await.unwrap();
    let sql = postgres_sql(db.url().to_string());
    Some(TestStore { store, backend: Backend::Postgres, sql, keep: Box::new(db) })
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
        policy: None,
        kind: issuer::LicenseKind::Machine,
        created_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        updated_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        validation_count: 0,
        last_validated_at: None,
    };
    let stored = l.clone();
    let _: issuer::Created = issuer::StoreExt::transact(&stores[0], move |tx| {
        Box::pin(async move { tx.insert_license(&stored, None).await })
    })
    .await
    .unwrap();
    let reopened = PostgresStore::connect(db.url(), 2).await.unwrap();
    assert_eq!(reopened.license_by_id(l.id).await.unwrap(), Some(l));
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version").fetch_all(&mut conn).await.unwrap();
    assert_eq!(versions, e2e_tests::migration_versions("postgres"), "each migration recorded once");
    for s in stores {
        s.close().await;
    }
    reopened.close().await;
}

/// Two instances on one PostgreSQL database (two pools, two services, as two processes would be): the
/// revoke/reinstate/suspend race sent to both, alternately, never undoes a revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_instances_never_undo_a_revocation() {
    let Some(db) = pg::test_database("two_instances_revocation").await else { return };
    let a = issuer::connect_store(db.url(), 10).await.unwrap();
    let b = issuer::connect_store(db.url(), 10).await.unwrap();
    let ((a, _da), (b, _db)) = (races::licensing(a), races::licensing(b));
    let undone = races::revocation_holds_against_concurrent_reinstate(&[a, b]).await;
    println!("Postgres, two instances: revocations undone: {undone} of {}", races::RACE_ROUNDS);
    assert_eq!(undone, 0);
}

/// Two SQLite stores on one file (each with its own writer, as two processes would have): only the database's
/// write lock orders them, and the race still never undoes a revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_stores_on_one_file_never_undo_a_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let ((a, _da), (b, _db)) = (races::licensing(a), races::licensing(b));
    let undone = races::revocation_holds_against_concurrent_reinstate(&[a, b]).await;
    println!("SQLite, two stores: revocations undone: {undone} of {}", races::RACE_ROUNDS);
    assert_eq!(undone, 0);
}

/// A database that refuses connections is reported as refused at once, not as a pool time-out 15 s later.
#[tokio::test]
async fn an_unreachable_postgres_says_connection_refused() {
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(14),
        PostgresStore::connect("postgres://issuer@127.0.0.1:1/issuer", 2),
    )
    .await
    .expect("an answer before the pool's 15 s acquire timeout")
    .unwrap_err();
    let text = err.to_string();
    assert!(text.to_lowercase().contains("refused"), "{text}");
    println!("refused after {:?}: {text}", started.elapsed());
}

/// PostgreSQL: the sweep skips a license a unit of work holds (it neither waits for it nor culls its machines under
/// it), so a sweep and a unit never deadlock on machine rows and event locks; the next sweep culls what was skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lease_sweep_skips_a_license_a_unit_holds() {
    use e2e_tests::conformance::one::OneUnit as _;
    use issuer::StoreExt as _;
    let Some(test_store) = postgres("postgres_lease_sweep_skips_a_license_a_unit_holds").await else { return };
    let store = test_store.store.clone();
    let now = time::OffsetDateTime::from_unix_timestamp(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    let (held, free) = (license(), license());
    for l in [&held, &free] {
        store.create_license(l, None).await.unwrap();
        store.activate_leased(l.id, "dead", now - time::Duration::hours(1), Some(now), 0).await.unwrap();
    }
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let unit_store = store.clone();
    let id = held.id;
    let unit = tokio::spawn(async move {
        unit_store
            .transact::<_, issuer::StoreError, _>(move |tx| {
                Box::pin(async move {
                    tx.license(issuer::Lookup::Id(id)).await?;
                    let _ = locked_tx.send(());
                    // A test may hold its unit open; the service never does.
                    let _ = tokio::time::timeout(Duration::from_secs(30), release_rx).await;
                    Ok(())
                })
            })
            .await
    });
    locked_rx.await.unwrap();
    let swept = tokio::time::timeout(Duration::from_secs(10), store.cull_expired_leases(now, 100))
        .await
        .expect("the sweep does not wait for the held license")
        .unwrap();
    assert_eq!(swept.iter().map(|c| c.license_id).collect::<Vec<_>>(), [free.id], "the held license is skipped");
    release_tx.send(()).unwrap();
    unit.await.unwrap().unwrap();
    let swept = store.cull_expired_leases(now, 100).await.unwrap();
    assert_eq!(swept.iter().map(|c| c.license_id).collect::<Vec<_>>(), [held.id], "culled once it is free");
}

fn license() -> issuer::License {
    let now = time::OffsetDateTime::from_unix_timestamp(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    issuer::License {
        id: uuid::Uuid::now_v7(),
        key: issuer::LicenseKey::generate().unwrap().to_string(),
        email: "ada@example.com".into(),
        product: "acme-cad".into(),
        max_machines: 3,
        expires_at: None,
        entitlements: vec![],
        metadata: serde_json::Map::new(),
        status: issuer::LicenseStatus::Active,
        policy: None,
        kind: issuer::LicenseKind::Machine,
        created_at: now,
        updated_at: now,
        validation_count: 0,
        last_validated_at: None,
    }
}
