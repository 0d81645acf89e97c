//! Webhook endpoints, subscriptions and the delivery outbox in SQLite. Delivery times are unix milliseconds.

use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{events, millis, secs, time_from, time_from_millis, uuid_from};
use crate::store::{Attempt, Claimed, Delivery, DeliveryState, StoreError, WebhookEndpoint, SUCCESS_RESOLUTION_SECS};

/// The delivery `d` is the head of its lane: no pending delivery of the same endpoint and license was queued before
/// it. (A resend is queued last in its lane.)
macro_rules! lane_head {
    () => {
        "NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id \
         AND p.lane = d.lane AND p.state = 'pending' AND p.id < d.id)"
    };
}

pub(super) async fn insert(conn: &mut SqliteConnection, e: &WebhookEndpoint) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, description, secret, previous_secret, previous_secret_until, \
         created_at, disabled_at, disabled_reason, last_success_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(e.id.to_string())
    .bind(&e.url)
    .bind(&e.description)
    .bind(&e.secret)
    .bind(&e.previous_secret)
    .bind(e.previous_secret_until.map(secs))
    .bind(secs(e.created_at))
    .bind(e.disabled_at.map(secs))
    .bind(&e.disabled_reason)
    .bind(e.last_success_at.map(millis))
    .execute(&mut *conn)
    .await?;
    for kind in &e.events {
        sqlx::query("INSERT OR IGNORE INTO webhook_subscriptions (event_kind, endpoint_id) VALUES (?1, ?2)")
            .bind(kind)
            .bind(e.id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(super) async fn update(conn: &mut SqliteConnection, e: &WebhookEndpoint) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE webhook_endpoints SET description = ?2, secret = ?3, previous_secret = ?4, previous_secret_until = ?5, \
         disabled_at = ?6, disabled_reason = ?7 WHERE id = ?1",
    )
    .bind(e.id.to_string())
    .bind(&e.description)
    .bind(&e.secret)
    .bind(&e.previous_secret)
    .bind(e.previous_secret_until.map(secs))
    .bind(e.disabled_at.map(secs))
    .bind(&e.disabled_reason)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub(super) async fn delete(conn: &mut SqliteConnection, id: Uuid, at: OffsetDateTime) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = ?2, disabled_at = COALESCE(disabled_at, ?2) \
         WHERE id = ?1 AND deleted_at IS NULL",
    )
    .bind(id.to_string())
    .bind(secs(at))
    .execute(&mut *conn)
    .await?;
    Ok(n.rows_affected() == 1)
}

pub(super) async fn purge(conn: &mut SqliteConnection, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM webhook_endpoints WHERE deleted_at < ?1 ORDER BY deleted_at LIMIT ?2")
            .bind(secs(before))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
    for id in &ids {
        for sql in [
            "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1",
            "DELETE FROM webhook_subscriptions WHERE endpoint_id = ?1",
            "DELETE FROM webhook_endpoints WHERE id = ?1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *conn).await?;
        }
    }
    Ok(ids.len() as u64)
}

pub(super) async fn find<'e, E>(db: E, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let row = sqlx::query(&format!("{SELECT_ENDPOINTS} WHERE e.id = ?1 AND e.deleted_at IS NULL"))
        .bind(id.to_string())
        .fetch_optional(db)
        .await?;
    row.as_ref().map(endpoint_from_row).transpose()
}

pub(super) async fn list<'e, E>(db: E) -> Result<Vec<WebhookEndpoint>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query(&format!("{SELECT_ENDPOINTS} WHERE e.deleted_at IS NULL ORDER BY e.created_at, e.id"))
        .fetch_all(db)
        .await?;
    rows.iter().map(endpoint_from_row).collect()
}

/// Endpoints with their subscriptions as one JSON array.
const SELECT_ENDPOINTS: &str = "SELECT e.*, (SELECT json_group_array(event_kind) FROM \
     (SELECT event_kind FROM webhook_subscriptions s WHERE s.endpoint_id = e.id ORDER BY event_kind)) AS events \
     FROM webhook_endpoints e";

/// The claim: due heads of their lanes, at most `limit`; the writer holds SQLite's write lock, so no other process
/// claims meanwhile.
pub(super) async fn claim(
    conn: &mut SqliteConnection,
    now: OffsetDateTime,
    claim_until: OffsetDateTime,
    limit: u32,
    skip: &[Uuid],
) -> Result<Vec<Claimed>, StoreError> {
    let skip: Vec<String> = skip.iter().map(Uuid::to_string).collect();
    let rows = sqlx::query(concat!(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = ?1, next_attempt_at = ?2 \
         WHERE id IN (SELECT d.id FROM webhook_deliveries d \
           JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.disabled_at IS NULL \
           WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 \
           AND d.endpoint_id NOT IN (SELECT value FROM json_each(?4)) AND ",
        lane_head!(),
        " ORDER BY d.next_attempt_at, d.id LIMIT ?3) RETURNING *"
    ))
    .bind(millis(now))
    .bind(millis(claim_until))
    .bind(i64::from(limit))
    .bind(serde_json::to_string(&skip).map_err(|e| StoreError::Corrupt(e.to_string()))?)
    .fetch_all(&mut *conn)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let delivery = delivery_from_row(row)?;
        let endpoint = find(&mut *conn, delivery.endpoint_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a delivery of no endpoint".into()))?;
        let event = events::by_id(&mut *conn, delivery.event_id).await?;
        claimed.push(Claimed { delivery, endpoint, event });
    }
    Ok(claimed)
}

pub(super) async fn record_attempt(
    conn: &mut SqliteConnection,
    delivery_id: i64,
    attempts: u32,
    at: OffsetDateTime,
    attempt: &Attempt,
) -> Result<bool, StoreError> {
    let c = attempt.columns(at);
    let endpoint: Option<String> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET state = ?3, last_status = ?4, last_error = ?5, \
         next_attempt_at = COALESCE(?6, next_attempt_at), finished_at = ?7 \
         WHERE id = ?1 AND attempts = ?2 AND state = 'pending' RETURNING endpoint_id",
    )
    .bind(delivery_id)
    .bind(i64::from(attempts))
    .bind(c.state.as_str())
    .bind(c.status.map(i64::from))
    .bind(c.error)
    .bind(c.next_attempt_at.map(millis))
    .bind(c.finished_at.map(millis))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(endpoint) = endpoint else { return Ok(false) };
    if c.state == DeliveryState::Delivered {
        sqlx::query(
            "UPDATE webhook_endpoints SET last_success_at = ?2 WHERE id = ?1 \
             AND (last_success_at IS NULL OR last_success_at < ?2 - ?3)",
        )
        .bind(endpoint)
        .bind(millis(at))
        .bind(SUCCESS_RESOLUTION_SECS * 1000)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

pub(super) async fn resend(
    conn: &mut SqliteConnection,
    endpoint_id: Uuid,
    delivery_id: i64,
    at: OffsetDateTime,
) -> Result<Option<Delivery>, StoreError> {
    let row = sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, lane, state, created_at, next_attempt_at) \
         SELECT endpoint_id, event_id, lane, 'pending', ?3, ?3 FROM webhook_deliveries WHERE id = ?1 AND endpoint_id = ?2 \
         RETURNING *",
    )
    .bind(delivery_id)
    .bind(endpoint_id.to_string())
    .bind(millis(at))
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(delivery_from_row).transpose()
}

pub(super) async fn list_deliveries<'e, E>(
    db: E,
    endpoint_id: Uuid,
    after: i64,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query("SELECT * FROM webhook_deliveries WHERE endpoint_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
        .bind(endpoint_id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?;
    rows.iter().map(delivery_from_row).collect()
}

pub(super) async fn pending<'e, E>(db: E) -> Result<u64, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'").fetch_one(db).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn has_due<'e, E>(db: E, now: OffsetDateTime) -> Result<bool, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let due: bool = sqlx::query_scalar(concat!(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 AND e.disabled_at IS NULL AND ",
        lane_head!(),
        ")"
    ))
    .bind(millis(now))
    .fetch_one(db)
    .await?;
    Ok(due)
}

fn endpoint_from_row(row: &SqliteRow) -> Result<WebhookEndpoint, StoreError> {
    let id: String = row.try_get("id")?;
    let events: String = row.try_get("events")?;
    Ok(WebhookEndpoint {
        id: uuid_from(&id)?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: serde_json::from_str(&events).map_err(|_| StoreError::Corrupt("webhook subscriptions".into()))?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_secret_until: row.try_get::<Option<i64>, _>("previous_secret_until")?.map(time_from).transpose()?,
        created_at: time_from(row.try_get("created_at")?)?,
        disabled_at: row.try_get::<Option<i64>, _>("disabled_at")?.map(time_from).transpose()?,
        disabled_reason: row.try_get("disabled_reason")?,
        last_success_at: row.try_get::<Option<i64>, _>("last_success_at")?.map(time_from_millis).transpose()?,
    })
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let endpoint_id: String = row.try_get("endpoint_id")?;
    let state: String = row.try_get("state")?;
    let state = DeliveryState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("delivery state `{state}`")))?;
    let ms = |name: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        row.try_get::<Option<i64>, _>(name)?.map(time_from_millis).transpose()
    };
    Ok(Delivery {
        id: row.try_get("id")?,
        endpoint_id: uuid_from(&endpoint_id)?,
        event_id: row.try_get("event_id")?,
        state,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        created_at: time_from_millis(row.try_get("created_at")?)?,
        next_attempt_at: if state == DeliveryState::Pending { ms("next_attempt_at")? } else { None },
        last_attempt_at: ms("last_attempt_at")?,
        last_status: row.try_get::<Option<i64>, _>("last_status")?.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        finished_at: ms("finished_at")?,
    })
}
