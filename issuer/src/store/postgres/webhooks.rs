//! Webhook endpoints, subscriptions and the delivery outbox in PostgreSQL. Instances claim deliveries with
//! `FOR UPDATE SKIP LOCKED`, so under normal operation each delivery is attempted by one instance.

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{events, millis, secs};
use crate::store::{Attempt, Claimed, Delivery, DeliveryState, StoreError, WebhookEndpoint};

pub(super) async fn insert(conn: &mut PgConnection, e: &WebhookEndpoint) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, description, secret, previous_secret, previous_secret_until, \
         created_at, disabled_at, disabled_reason, last_success_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.id)
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
    sqlx::query(
        "INSERT INTO webhook_subscriptions (event_kind, endpoint_id) SELECT DISTINCT k, $2 FROM unnest($1::text[]) k",
    )
    .bind(&e.events)
    .bind(e.id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn update(conn: &mut PgConnection, e: &WebhookEndpoint) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE webhook_endpoints SET description = $2, secret = $3, previous_secret = $4, previous_secret_until = $5, \
         disabled_at = $6, disabled_reason = $7 WHERE id = $1",
    )
    .bind(e.id)
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

pub(super) async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, StoreError> {
    // The endpoint row first: a concurrent event insert (which key-share locks it) waits or is waited for, and no
    // delivery is queued for an endpoint being deleted.
    let found = sqlx::query("SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Ok(false);
    }
    for sql in [
        "DELETE FROM webhook_deliveries WHERE endpoint_id = $1",
        "DELETE FROM webhook_subscriptions WHERE endpoint_id = $1",
        "DELETE FROM webhook_endpoints WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    }
    Ok(true)
}

/// Endpoints with their subscriptions as one array.
const SELECT_ENDPOINTS: &str = "SELECT e.*, ARRAY(SELECT event_kind FROM webhook_subscriptions s \
     WHERE s.endpoint_id = e.id ORDER BY event_kind) AS events FROM webhook_endpoints e";

pub(super) async fn find<'e, E>(db: E, id: Uuid, lock: bool) -> Result<Option<WebhookEndpoint>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let sql = format!("{SELECT_ENDPOINTS} WHERE e.id = $1{}", if lock { " FOR NO KEY UPDATE OF e" } else { "" });
    let row = sqlx::query(&sql).bind(id).fetch_optional(db).await?;
    row.as_ref().map(endpoint_from_row).transpose()
}

pub(super) async fn list<'e, E>(db: E) -> Result<Vec<WebhookEndpoint>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query(&format!("{SELECT_ENDPOINTS} ORDER BY e.created_at, e.id")).fetch_all(db).await?;
    rows.iter().map(endpoint_from_row).collect()
}

pub(super) async fn claim(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    claim_until: OffsetDateTime,
    limit: u32,
) -> Result<Vec<Claimed>, StoreError> {
    let rows = sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = $1, next_attempt_at = $2 \
         WHERE id IN (SELECT d.id FROM webhook_deliveries d \
           JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.disabled_at IS NULL \
           WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id \
             AND p.lane = d.lane AND p.state = 'pending' \
             AND (p.event_id < d.event_id OR (p.event_id = d.event_id AND p.id < d.id))) \
           ORDER BY d.next_attempt_at, d.id LIMIT $3 FOR UPDATE OF d SKIP LOCKED) \
         AND state = 'pending' AND next_attempt_at <= $1 \
         RETURNING *",
    )
    .bind(millis(now))
    .bind(millis(claim_until))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    let deliveries = rows.iter().map(delivery_from_row).collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<i64> = deliveries.iter().map(|d| d.event_id).collect();
    let events = events::by_ids(&mut *conn, &ids).await?;
    let mut claimed = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let endpoint = find(&mut *conn, delivery.endpoint_id, false)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a delivery of no endpoint".into()))?;
        let event = events
            .iter()
            .find(|e| e.id == delivery.event_id)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt("a delivery of no event".into()))?;
        claimed.push(Claimed { delivery, endpoint, event });
    }
    Ok(claimed)
}

pub(super) async fn record_attempt(
    conn: &mut PgConnection,
    delivery_id: i64,
    attempts: u32,
    at: OffsetDateTime,
    attempt: &Attempt,
) -> Result<bool, StoreError> {
    let (state, status, error, next, finished) = match attempt {
        Attempt::Delivered { status } => (DeliveryState::Delivered, Some(*status), None, None, Some(at)),
        Attempt::Failed { status, error, retry_at: Some(retry) } => {
            (DeliveryState::Pending, *status, Some(error.as_str()), Some(*retry), None)
        }
        Attempt::Failed { status, error, retry_at: None } => {
            (DeliveryState::Failed, *status, Some(error.as_str()), None, Some(at))
        }
    };
    let endpoint: Option<Uuid> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET state = $3, last_status = $4, last_error = $5, \
         next_attempt_at = COALESCE($6, next_attempt_at), finished_at = $7 \
         WHERE id = $1 AND attempts = $2 AND state = 'pending' RETURNING endpoint_id",
    )
    .bind(delivery_id)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(state.as_str())
    .bind(status.map(i32::from))
    .bind(error)
    .bind(next.map(millis))
    .bind(finished.map(millis))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(endpoint) = endpoint else { return Ok(false) };
    if state == DeliveryState::Delivered {
        sqlx::query("UPDATE webhook_endpoints SET last_success_at = GREATEST(last_success_at, $2) WHERE id = $1")
            .bind(endpoint)
            .bind(millis(at))
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

pub(super) async fn resend(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    delivery_id: i64,
    at: OffsetDateTime,
) -> Result<Option<Delivery>, StoreError> {
    let row = sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, lane, state, created_at, next_attempt_at) \
         SELECT endpoint_id, event_id, lane, 'pending', $3, $3 FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2 \
         RETURNING *",
    )
    .bind(delivery_id)
    .bind(endpoint_id)
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
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query("SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 AND id > $2 ORDER BY id LIMIT $3")
        .bind(endpoint_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?;
    rows.iter().map(delivery_from_row).collect()
}

pub(super) async fn pending<'e, E>(db: E) -> Result<u64, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'").fetch_one(db).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn has_due<'e, E>(db: E, now: OffsetDateTime) -> Result<bool, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let due: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND e.disabled_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id \
           AND p.lane = d.lane AND p.state = 'pending' \
             AND (p.event_id < d.event_id OR (p.event_id = d.event_id AND p.id < d.id))))",
    )
    .bind(millis(now))
    .fetch_one(db)
    .await?;
    Ok(due)
}

fn endpoint_from_row(row: &PgRow) -> Result<WebhookEndpoint, StoreError> {
    Ok(WebhookEndpoint {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: row.try_get("events")?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_secret_until: row.try_get("previous_secret_until")?,
        created_at: row.try_get("created_at")?,
        disabled_at: row.try_get("disabled_at")?,
        disabled_reason: row.try_get("disabled_reason")?,
        last_success_at: row.try_get("last_success_at")?,
    })
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, StoreError> {
    let state: String = row.try_get("state")?;
    let state = DeliveryState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("delivery state `{state}`")))?;
    Ok(Delivery {
        id: row.try_get("id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        event_id: row.try_get("event_id")?,
        state,
        attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
        created_at: row.try_get("created_at")?,
        next_attempt_at: if state == DeliveryState::Pending { row.try_get("next_attempt_at")? } else { None },
        last_attempt_at: row.try_get("last_attempt_at")?,
        last_status: row.try_get::<Option<i32>, _>("last_status")?.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        finished_at: row.try_get("finished_at")?,
    })
}
