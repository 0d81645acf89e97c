//! The event log (with its webhook outbox rows) and admin tokens in PostgreSQL.

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::secs;
use crate::store::{Actor, AdminToken, Event, EventFilter, EventKind, NewEvent, Scope, StoreError};

/// Class (first key) of the per-license advisory locks taken when appending events.
const EVENT_LOCK_CLASS: i32 = 0x6973_0002;

/// Advisory lock held while deciding whether the first admin token is stored.
const FIRST_ADMIN_LOCK: i64 = 0x6973_7375_6572_0003;

/// Appends an event, and one pending delivery per enabled endpoint subscribed to its kind (the outbox), in one
/// statement. The id is drawn only after the license's previous event committed, so one license's ids commit in
/// order and paging with `after` never skips one of its events that commits late, and an endpoint's deliveries of
/// one license are queued in event order: the CTE takes the per-license advisory transaction lock (events of no
/// license share one lock) before the row (and its id) is made, and the transaction holds it until it ends. Alone,
/// this is one round trip.
pub(super) async fn insert<'e, E>(db: E, event: &NewEvent) -> Result<(), StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let (actor_type, actor_id, actor_label) = event.actor.as_ref().map(Actor::columns).unwrap_or_default();
    sqlx::query(
        "WITH locked AS (SELECT pg_advisory_xact_lock($7, hashtext(coalesce($1::text, '')))), \
         ev AS (INSERT INTO events (license_id, kind, at, fingerprint, client_ip, detail, actor_type, actor_id, \
           actor_label) SELECT $1, $2, $3, $4, $5, $6, $8, $9, $10 FROM locked RETURNING id) \
         INSERT INTO webhook_deliveries (endpoint_id, event_id, lane, state, created_at, next_attempt_at) \
         SELECT DISTINCT s.endpoint_id, ev.id, coalesce($1::text, ''), 'pending', $3, $3 FROM ev \
         JOIN webhook_subscriptions s ON s.event_kind IN ('*', $2) \
         JOIN webhook_endpoints e ON e.id = s.endpoint_id AND e.disabled_at IS NULL",
    )
    .bind(event.license_id)
    .bind(event.kind.stored_name())
    .bind(secs(event.at))
    .bind(&event.fingerprint)
    .bind(&event.client_ip)
    .bind(&event.detail)
    .bind(EVENT_LOCK_CLASS)
    .bind((!actor_type.is_empty()).then_some(actor_type))
    .bind(actor_id)
    .bind(actor_label)
    .execute(db)
    .await?;
    Ok(())
}

pub(super) async fn list<'e, E>(db: E, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let filter = EventFilter { kind: None, license_id: Some(license_id), after, limit };
    filtered(db, &filter).await
}

pub(super) async fn filtered<'e, E>(db: E, filter: &EventFilter) -> Result<Vec<Event>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM events WHERE id > ");
    q.push_bind(filter.after);
    if let Some(kind) = filter.kind {
        q.push(" AND kind = ").push_bind(kind.stored_name());
    }
    if let Some(license) = filter.license_id {
        q.push(" AND license_id = ").push_bind(license);
    }
    q.push(" ORDER BY id LIMIT ").push_bind(i64::from(filter.limit));
    let rows = q.build().fetch_all(db).await?;
    rows.iter().map(event_from_row).collect()
}

/// The events with these ids.
pub(super) async fn by_ids(conn: &mut sqlx::PgConnection, ids: &[i64]) -> Result<Vec<Event>, StoreError> {
    let rows = sqlx::query("SELECT * FROM events WHERE id = ANY($1)").bind(ids).fetch_all(&mut *conn).await?;
    rows.iter().map(event_from_row).collect()
}

/// Stores a token; with `only_first`, only if the table is empty. Under READ COMMITTED two transactions could both
/// see it empty, so that check and the insert run under an advisory transaction lock: the second waits, then sees
/// the first's token.
pub(super) async fn insert_admin_token(
    conn: &mut sqlx::PgConnection,
    hash: &[u8; 32],
    token: &AdminToken,
    only_first: bool,
) -> Result<bool, StoreError> {
    let sql = if only_first {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FIRST_ADMIN_LOCK).execute(&mut *conn).await?;
        "INSERT INTO admin_tokens (token_hash, id, label, scope, created_at) SELECT $1, $2, $3, $4, $5 \
         WHERE NOT EXISTS (SELECT 1 FROM admin_tokens)"
    } else {
        "INSERT INTO admin_tokens (token_hash, id, label, scope, created_at) VALUES ($1, $2, $3, $4, $5)"
    };
    let n = sqlx::query(sql)
        .bind(&hash[..])
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
    conn: &mut sqlx::PgConnection,
    id: &str,
    at: OffsetDateTime,
) -> Result<Option<AdminToken>, StoreError> {
    let before =
        sqlx::query("SELECT * FROM admin_tokens WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *conn).await?;
    let Some(before) = before.as_ref().map(token_from_row).transpose()? else { return Ok(None) };
    sqlx::query("UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(secs(at))
        .execute(&mut *conn)
        .await?;
    Ok(Some(before))
}

pub(super) async fn touch_admin_token(
    conn: &mut sqlx::PgConnection,
    id: &str,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE admin_tokens SET last_used_at = GREATEST(last_used_at, $2) WHERE id = $1")
        .bind(id)
        .bind(secs(at))
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn admin_token_by_hash<'e, E>(db: E, hash: &[u8; 32]) -> Result<Option<AdminToken>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let row =
        sqlx::query("SELECT * FROM admin_tokens WHERE token_hash = $1").bind(&hash[..]).fetch_optional(db).await?;
    row.as_ref().map(token_from_row).transpose()
}

pub(super) async fn list_admin_tokens<'e, E>(db: E) -> Result<Vec<AdminToken>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query("SELECT * FROM admin_tokens ORDER BY created_at, id").fetch_all(db).await?;
    rows.iter().map(token_from_row).collect()
}

fn token_from_row(row: &PgRow) -> Result<AdminToken, StoreError> {
    let scope: String = row.try_get("scope")?;
    Ok(AdminToken {
        id: row.try_get("id")?,
        label: row.try_get("label")?,
        scope: scope.parse::<Scope>().map_err(StoreError::Corrupt)?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    let kind: String = row.try_get("kind")?;
    let actor_type: Option<String> = row.try_get("actor_type")?;
    Ok(Event {
        id: row.try_get("id")?,
        event: NewEvent {
            license_id: row.try_get("license_id")?,
            kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind `{kind}`")))?,
            at: row.try_get("at")?,
            fingerprint: row.try_get("fingerprint")?,
            client_ip: row.try_get("client_ip")?,
            actor: Actor::from_columns(actor_type.as_deref(), row.try_get("actor_id")?, row.try_get("actor_label")?),
            detail: row.try_get("detail")?,
        },
    })
}

/// Deletes the oldest events recorded before `before`, at most `limit`, with their outbox rows; how many. Only the
/// `limit` oldest rows by id are looked at, so a batch costs the same however large the log is; an event with a
/// delivery still pending to an enabled endpoint stays until the delivery ends (the pending deliveries of a disabled
/// endpoint would otherwise hold the oldest events, and with them every later prune, forever). Rows another instance is pruning are skipped.
pub(super) async fn prune(conn: &mut PgConnection, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT e.id FROM (SELECT id, at FROM events ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) e \
         WHERE e.at < $1 AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
         WHERE d.event_id = e.id AND d.state = 'pending' AND w.disabled_at IS NULL AND w.deleted_at IS NULL)",
    )
    .bind(secs(before))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    for sql in ["DELETE FROM webhook_deliveries WHERE event_id = ANY($1)", "DELETE FROM events WHERE id = ANY($1)"] {
        sqlx::query(sql).bind(&ids).execute(&mut *conn).await?;
    }
    Ok(ids.len() as u64)
}
