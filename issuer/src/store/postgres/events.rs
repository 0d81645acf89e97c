//! The event log and admin token hashes in PostgreSQL.

use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::secs;
use crate::store::{Event, EventKind, NewEvent, StoreError};

/// Class (first key) of the per-license advisory locks taken when appending events.
const EVENT_LOCK_CLASS: i32 = 0x6973_0002;

/// Advisory lock held while deciding whether the first admin token is stored.
const FIRST_ADMIN_LOCK: i64 = 0x6973_7375_6572_0003;

/// Appends an event. The id is drawn only after the license's previous event committed, so one license's ids commit
/// in order and paging with `after` never skips an event that commits late: the CTE takes the per-license advisory
/// transaction lock before the row (and its id) is made, and the transaction holds it until it ends. Alone, this is
/// one round trip (no BEGIN, lock, INSERT, COMMIT).
pub(super) async fn insert<'e, E>(db: E, event: &NewEvent) -> Result<(), StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    sqlx::query(
        "WITH locked AS (SELECT pg_advisory_xact_lock($7, hashtext($1::text))) \
         INSERT INTO events (license_id, kind, at, fingerprint, client_ip, detail) \
         SELECT $1, $2, $3, $4, $5, $6 FROM locked",
    )
    .bind(event.license_id)
    .bind(event.kind.as_str())
    .bind(secs(event.at))
    .bind(&event.fingerprint)
    .bind(&event.client_ip)
    .bind(&event.detail)
    .bind(EVENT_LOCK_CLASS)
    .execute(db)
    .await?;
    Ok(())
}

pub(super) async fn list<'e, E>(db: E, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query("SELECT * FROM events WHERE license_id = $1 AND id > $2 ORDER BY id LIMIT $3")
        .bind(license_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?;
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn add_admin_token<'e, E>(
    db: E,
    hash: &[u8; 32],
    label: &str,
    at: OffsetDateTime,
) -> Result<(), StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    sqlx::query("INSERT INTO admin_tokens (token_hash, label, created_at) VALUES ($1, $2, $3)")
        .bind(&hash[..])
        .bind(label)
        .bind(secs(at))
        .execute(db)
        .await?;
    Ok(())
}

/// The insert only if the table is empty. Under READ COMMITTED two transactions could both see it empty, so the
/// check and the insert run under an advisory transaction lock: the second waits, then sees the first's token.
pub(super) async fn add_first_admin_token(
    conn: &mut sqlx::PgConnection,
    hash: &[u8; 32],
    label: &str,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FIRST_ADMIN_LOCK).execute(&mut *conn).await?;
    let n = sqlx::query(
        "INSERT INTO admin_tokens (token_hash, label, created_at) SELECT $1, $2, $3 \
         WHERE NOT EXISTS (SELECT 1 FROM admin_tokens)",
    )
    .bind(&hash[..])
    .bind(label)
    .bind(secs(at))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub(super) async fn admin_token_hashes<'e, E>(db: E) -> Result<Vec<[u8; 32]>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let hashes: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT token_hash FROM admin_tokens ORDER BY created_at").fetch_all(db).await?;
    hashes
        .into_iter()
        .map(|h| <[u8; 32]>::try_from(h).map_err(|_| StoreError::Corrupt("admin token hash".into())))
        .collect()
}

fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Event {
        id: row.try_get("id")?,
        event: NewEvent {
            license_id: row.try_get("license_id")?,
            kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind `{kind}`")))?,
            at: row.try_get("at")?,
            fingerprint: row.try_get("fingerprint")?,
            client_ip: row.try_get("client_ip")?,
            detail: row.try_get("detail")?,
        },
    })
}
