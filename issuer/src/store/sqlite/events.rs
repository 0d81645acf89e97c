//! The event log (with its webhook outbox rows) and admin tokens in SQLite.

use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{hex, json_text, secs, time_from, uuid_from};
use crate::store::{Actor, AdminToken, Event, EventFilter, EventKind, NewEvent, Scope, StoreError};

/// Appends the event; the trigger `events_queue_deliveries` (migration 0006) queues, in the same statement, one
/// pending delivery per enabled endpoint subscribed to its kind: the outbox row is never without its event, nor the
/// event without it.
pub(super) async fn insert(conn: &mut SqliteConnection, event: &NewEvent) -> Result<(), StoreError> {
    let (actor_type, actor_id, actor_label) = event.actor.as_ref().map(Actor::columns).unwrap_or_default();
    sqlx::query(
        "INSERT INTO events (license_id, kind, at, fingerprint, client_ip, detail, actor_type, actor_id, actor_label) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(event.license_id.map(|id| id.to_string()))
    .bind(event.kind.stored_name())
    .bind(secs(event.at))
    .bind(&event.fingerprint)
    .bind(&event.client_ip)
    .bind(json_text(&event.detail)?)
    .bind((!actor_type.is_empty()).then_some(actor_type))
    .bind(actor_id)
    .bind(actor_label)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn list<'e, E>(db: E, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let filter = EventFilter { kind: None, license_id: Some(license_id), after, limit };
    filtered(db, &filter).await
}

pub(super) async fn filtered<'e, E>(db: E, filter: &EventFilter) -> Result<Vec<Event>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM events WHERE id > ");
    q.push_bind(filter.after);
    if let Some(kind) = filter.kind {
        q.push(" AND kind = ").push_bind(kind.stored_name());
    }
    if let Some(license) = filter.license_id {
        q.push(" AND license_id = ").push_bind(license.to_string());
    }
    q.push(" ORDER BY id LIMIT ").push_bind(i64::from(filter.limit));
    let rows = q.build().fetch_all(db).await?;
    rows.iter().map(event_from_row).collect()
}

/// The event with this id (for the webhook dispatcher).
pub(super) async fn by_id(conn: &mut SqliteConnection, id: i64) -> Result<Event, StoreError> {
    let row = sqlx::query("SELECT * FROM events WHERE id = ?1").bind(id).fetch_one(&mut *conn).await?;
    event_from_row(&row)
}

pub(super) async fn insert_admin_token(
    conn: &mut SqliteConnection,
    hash: &[u8; 32],
    token: &AdminToken,
    only_first: bool,
) -> Result<bool, StoreError> {
    // The writer's transaction holds SQLite's write lock: no other process inserts between the check and the insert.
    let sql = if only_first {
        "INSERT INTO admin_tokens (token_hash, id, label, scope, created_at) SELECT ?1, ?2, ?3, ?4, ?5 \
         WHERE NOT EXISTS (SELECT 1 FROM admin_tokens)"
    } else {
        "INSERT INTO admin_tokens (token_hash, id, label, scope, created_at) VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    let n = sqlx::query(sql)
        .bind(hex(hash))
        .bind(&token.id)
        .bind(&token.label)
        .bind(token.scope.as_str())
        .bind(secs(token.created_at))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub(super) async fn revoke_admin_token(
    conn: &mut SqliteConnection,
    id: &str,
    at: OffsetDateTime,
) -> Result<Option<AdminToken>, StoreError> {
    let before = sqlx::query("SELECT * FROM admin_tokens WHERE id = ?1").bind(id).fetch_optional(&mut *conn).await?;
    let Some(before) = before.as_ref().map(token_from_row).transpose()? else { return Ok(None) };
    sqlx::query("UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
        .bind(id)
        .bind(secs(at))
        .execute(&mut *conn)
        .await?;
    Ok(Some(before))
}

pub(super) async fn touch_admin_token(
    conn: &mut SqliteConnection,
    id: &str,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE admin_tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE id = ?1")
        .bind(id)
        .bind(secs(at))
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn admin_token_by_hash<'e, E>(db: E, hash: &[u8; 32]) -> Result<Option<AdminToken>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let row =
        sqlx::query("SELECT * FROM admin_tokens WHERE token_hash = ?1").bind(hex(hash)).fetch_optional(db).await?;
    row.as_ref().map(token_from_row).transpose()
}

pub(super) async fn list_admin_tokens<'e, E>(db: E) -> Result<Vec<AdminToken>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query("SELECT * FROM admin_tokens ORDER BY created_at, id").fetch_all(db).await?;
    rows.iter().map(token_from_row).collect()
}

fn token_from_row(row: &SqliteRow) -> Result<AdminToken, StoreError> {
    let scope: String = row.try_get("scope")?;
    Ok(AdminToken {
        id: row.try_get("id")?,
        label: row.try_get("label")?,
        scope: scope.parse::<Scope>().map_err(StoreError::Corrupt)?,
        created_at: time_from(row.try_get("created_at")?)?,
        last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(time_from).transpose()?,
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(time_from).transpose()?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    let license_id: Option<String> = row.try_get("license_id")?;
    let kind: String = row.try_get("kind")?;
    let detail: String = row.try_get("detail")?;
    let actor_type: Option<String> = row.try_get("actor_type")?;
    Ok(Event {
        id: row.try_get("id")?,
        event: NewEvent {
            license_id: license_id.as_deref().map(uuid_from).transpose()?,
            kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind `{kind}`")))?,
            at: time_from(row.try_get("at")?)?,
            fingerprint: row.try_get("fingerprint")?,
            client_ip: row.try_get("client_ip")?,
            actor: Actor::from_columns(actor_type.as_deref(), row.try_get("actor_id")?, row.try_get("actor_label")?),
            detail: serde_json::from_str(&detail).map_err(|_| StoreError::Corrupt("event detail".into()))?,
        },
    })
}

/// Deletes the oldest events recorded before `before`, at most `limit`, with their outbox rows; how many. Only the
/// `limit` oldest rows by id are looked at, so a batch costs the same however large the log is; an event with a
/// delivery still pending to an enabled endpoint stays until the delivery ends (the pending deliveries of a disabled
/// endpoint would otherwise hold the oldest events, and with them every later prune, forever).
pub(super) async fn prune(conn: &mut SqliteConnection, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
    // The same rows both times: the writer is alone, and the chosen events' deliveries hold none of them back.
    const CHOSEN: &str = "SELECT e.id FROM (SELECT id, at FROM events ORDER BY id LIMIT ?2) e WHERE e.at < ?1 \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
         WHERE d.event_id = e.id AND d.state = 'pending' AND w.disabled_at IS NULL AND w.deleted_at IS NULL)";
    sqlx::query(&format!("DELETE FROM webhook_deliveries WHERE event_id IN ({CHOSEN})"))
        .bind(secs(before))
        .bind(i64::from(limit))
        .execute(&mut *conn)
        .await?;
    let pruned = sqlx::query(&format!("DELETE FROM events WHERE id IN ({CHOSEN})"))
        .bind(secs(before))
        .bind(i64::from(limit))
        .execute(&mut *conn)
        .await?;
    Ok(pruned.rows_affected())
}
