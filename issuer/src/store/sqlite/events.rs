//! The event log and admin token hashes in SQLite.

use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{hex, json_text, secs, time_from, unhex, uuid_from};
use crate::store::{Event, EventKind, NewEvent, StoreError};

pub(super) async fn insert(conn: &mut SqliteConnection, event: &NewEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (license_id, kind, at, fingerprint, client_ip, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(event.license_id.to_string())
    .bind(event.kind.as_str())
    .bind(secs(event.at))
    .bind(&event.fingerprint)
    .bind(&event.client_ip)
    .bind(json_text(&event.detail)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn list<'e, E>(db: E, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query("SELECT * FROM events WHERE license_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
        .bind(license_id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?;
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn add_admin_token(
    conn: &mut SqliteConnection,
    hash: &[u8; 32],
    label: &str,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO admin_tokens (token_hash, label, created_at) VALUES (?1, ?2, ?3)")
        .bind(hex(hash))
        .bind(label)
        .bind(secs(at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The insert only if the table is empty; the writer's transaction holds SQLite's write lock, so no other process
/// inserts in between.
pub(super) async fn add_first_admin_token(
    conn: &mut SqliteConnection,
    hash: &[u8; 32],
    label: &str,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO admin_tokens (token_hash, label, created_at) SELECT ?1, ?2, ?3 \
         WHERE NOT EXISTS (SELECT 1 FROM admin_tokens)",
    )
    .bind(hex(hash))
    .bind(label)
    .bind(secs(at))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub(super) async fn admin_token_hashes<'e, E>(db: E) -> Result<Vec<[u8; 32]>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM admin_tokens").fetch_all(db).await?;
    hashes.iter().map(|h| unhex(h).ok_or_else(|| StoreError::Corrupt("admin token hash".into()))).collect()
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    let license_id: String = row.try_get("license_id")?;
    let kind: String = row.try_get("kind")?;
    let detail: String = row.try_get("detail")?;
    Ok(Event {
        id: row.try_get("id")?,
        event: NewEvent {
            license_id: uuid_from(&license_id)?,
            kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind `{kind}`")))?,
            at: time_from(row.try_get("at")?)?,
            fingerprint: row.try_get("fingerprint")?,
            client_ip: row.try_get("client_ip")?,
            detail: serde_json::from_str(&detail).map_err(|_| StoreError::Corrupt("event detail".into()))?,
        },
    })
}
