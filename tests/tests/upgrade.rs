//! A store made by the previous release's schema upgrades in place, keeping its data: the migration of webhooks and
//! the audit log (sqlite 0006, postgres 0005) rebuilds or alters the events table, gives admin tokens ids and
//! scopes, and marks licenses already expired as announced. Run on both backends from the migration files
//! themselves, then opened by the current store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use e2e_tests::pg;
use issuer::{EventFilter, EventKind, Scope, Store, StoreExt as _};
use sha2::{Digest as _, Sha256};
use sqlx::{Connection as _, Executor as _};

/// The SQL of the migrations of `backend` numbered below `upto`, in order.
fn migrations_before(backend: &str, upto: u32) -> Vec<(i64, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../issuer/migrations").join(backend);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let n: u32 = p.file_name()?.to_str()?.get(..4)?.parse().ok()?;
            (n < upto).then(|| (i64::from(n), std::fs::read_to_string(&p).unwrap()))
        })
        .collect()
}

const LICENSE_A: &str = "0190f5a4-7c1e-7a3b-9c4d-5e6f708192a3";
const LICENSE_OLD: &str = "0190f5a4-7c1e-7a3b-9c4d-5e6f708192a4";
const LICENSE_SOON: &str = "0190f5a4-7c1e-7a3b-9c4d-5e6f708192a5";

fn token_hash() -> [u8; 32] {
    Sha256::digest(b"iat_the_token_of_an_older_release").into()
}

/// What every backend must show after the upgrade.
async fn check_upgraded(store: Arc<dyn Store>, old_max_event: i64) {
    let now = time::OffsetDateTime::now_utc();
    let events = store.events(&EventFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(events.len(), 3, "the events of the older release are kept: {events:?}");
    assert_eq!(events[0].event.kind, EventKind::Created);
    assert_eq!(events[0].event.actor, None, "no actor recorded before");
    assert_eq!(events[1].event.kind, EventKind::Activated);
    assert_eq!(events[1].event.license_id.unwrap().to_string(), LICENSE_A);

    // A new event continues the ids, and queues deliveries.
    let id = uuid::Uuid::parse_str(LICENSE_A).unwrap();
    let event = issuer::NewEvent {
        license_id: Some(id),
        kind: EventKind::Updated,
        at: now.replace_nanosecond(0).unwrap(),
        fingerprint: None,
        client_ip: None,
        actor: Some(issuer::Actor::Cli),
        detail: serde_json::json!({}),
    };
    store.append_event(&event).await.unwrap();
    let after = store.events(&EventFilter { after: events[2].id, limit: 10, ..Default::default() }).await.unwrap();
    assert!(after[0].id > old_max_event, "ids continue after the older release's sequence");

    // The older token works, as a write token with its id.
    let token = store.admin_token_by_hash(&token_hash()).await.unwrap().unwrap();
    assert_eq!(token.scope, Scope::Write);
    assert_eq!(token.id, issuer::AdminToken::id_of(&token_hash()));
    assert_eq!(token.label, "from the older release");

    // A license expired before the upgrade is not announced; one expiring after it is, once.
    let later = now + time::Duration::days(2);
    let announced =
        store.transact(move |tx| Box::pin(async move { tx.announce_expiries(later, 100).await })).await.unwrap();
    let ids: Vec<String> = announced.iter().map(|l| l.id.to_string()).collect();
    assert_eq!(ids, vec![LICENSE_SOON.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_of_the_previous_schema_upgrades_keeping_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true).foreign_keys(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)")
        .await
        .unwrap();
    for (version, sql) in migrations_before("sqlite", 6) {
        conn.execute(sql.as_str()).await.unwrap();
        sqlx::query("INSERT INTO schema_version VALUES (?1, 0)").bind(version).execute(&mut conn).await.unwrap();
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let license = |id: &str, key: &str, expires: Option<i64>| {
        format!(
            "INSERT INTO licenses (id, license_key, email, product, max_machines, expires_at, entitlements, metadata, \
             status, created_at, updated_at) VALUES ('{id}', '{key}', 'ada@example.com', 'acme-cad', 2, {}, '[]', \
             '{{}}', 'active', {now}, {now})",
            expires.map_or("NULL".into(), |e| e.to_string())
        )
    };
    conn.execute(license(LICENSE_A, "AAAAA-AAAAA-AAAAA-AAAAA", None).as_str()).await.unwrap();
    conn.execute(license(LICENSE_OLD, "BBBBB-BBBBB-BBBBB-BBBBB", Some(now - 86_400)).as_str()).await.unwrap();
    conn.execute(license(LICENSE_SOON, "CCCCC-CCCCC-CCCCC-CCCCC", Some(now + 86_400)).as_str()).await.unwrap();
    for (kind, fp) in [("created", "NULL"), ("activated", "'fp-1'"), ("validated", "'fp-1'"), ("validated", "'fp-1'")] {
        conn.execute(
            format!(
                "INSERT INTO events (license_id, kind, at, fingerprint, client_ip, detail) \
                 VALUES ('{LICENSE_A}', '{kind}', {now}, {fp}, '192.0.2.1', '{{}}')"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    // The last event is gone (as retention may remove one later): its id must not be given again.
    conn.execute("DELETE FROM events WHERE id = 4").await.unwrap();
    let hash: String = token_hash().iter().map(|b| format!("{b:02x}")).collect();
    conn.execute(
        format!("INSERT INTO admin_tokens (token_hash, label, created_at) VALUES ('{hash}', 'from the older release', {now})")
            .as_str(),
    )
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = issuer::SqliteStore::open(&path).await.unwrap();
    check_upgraded(Arc::new(store), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_of_the_previous_schema_upgrades_keeping_its_data() {
    let Some(db) = pg::test_database("upgrade_previous_schema").await else { return };
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    conn.execute(
        "CREATE TABLE schema_version (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for (version, sql) in migrations_before("postgres", 5) {
        conn.execute(sql.as_str()).await.unwrap();
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)").bind(version).execute(&mut conn).await.unwrap();
    }
    let license = |id: &str, key: &str, expires: &str| {
        format!(
            "INSERT INTO licenses (id, license_key, email, product, max_machines, expires_at, entitlements, metadata, \
             status, created_at, updated_at) VALUES ('{id}', '{key}', 'ada@example.com', 'acme-cad', 2, {expires}, \
             '[]', '{{}}', 'active', date_trunc('second', now()), date_trunc('second', now()))"
        )
    };
    conn.execute(license(LICENSE_A, "AAAAA-AAAAA-AAAAA-AAAAA", "NULL").as_str()).await.unwrap();
    let old = "date_trunc('second', now()) - interval '1 day'";
    conn.execute(license(LICENSE_OLD, "BBBBB-BBBBB-BBBBB-BBBBB", old).as_str()).await.unwrap();
    let soon = "date_trunc('second', now()) + interval '1 day'";
    conn.execute(license(LICENSE_SOON, "CCCCC-CCCCC-CCCCC-CCCCC", soon).as_str()).await.unwrap();
    for (kind, fp) in [("created", "NULL"), ("activated", "'fp-1'"), ("validated", "'fp-1'"), ("validated", "'fp-1'")] {
        conn.execute(
            format!(
                "INSERT INTO events (license_id, kind, at, fingerprint, client_ip, detail) \
                 VALUES ('{LICENSE_A}', '{kind}', date_trunc('second', now()), {fp}, '192.0.2.1', '{{}}')"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    conn.execute("DELETE FROM events WHERE id = 4").await.unwrap();
    sqlx::query(
        "INSERT INTO admin_tokens (token_hash, label, created_at) VALUES ($1, 'from the older release', now())",
    )
    .bind(&token_hash()[..])
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = issuer::connect_store(db.url(), 4).await.unwrap();
    check_upgraded(store, 4).await;
}
