//! Webhook endpoints, subscriptions and the delivery outbox in PostgreSQL. Instances claim deliveries with
//! `FOR UPDATE SKIP LOCKED`, so under normal operation each delivery is attempted by one instance.

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{events, millis, secs};
use crate::store::{Attempt, Claimed, Delivery, DeliveryState, StoreError, WebhookEndpoint, SUCCESS_RESOLUTION_SECS};

/// The delivery `d` is the head of its lane: no pending delivery of the same endpoint and license was queued before
/// it. (A resend is queued last in its lane; per lane, delivery ids follow commit order, as the event insert that
/// queues them holds the license's advisory lock.)
macro_rules! lane_head {
    () => {
        "NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id \
         AND p.lane = d.lane AND p.state = 'pending' AND p.id < d.id)"
    };
}

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

/// A soft delete: a plain (no key) update, so it never conflicts with the key-share lock an event insert's foreign
/// key check takes on the endpoint, and an insert that chose this endpoint before the delete committed still finds
/// its row. The rows are removed by [`purge`] once no statement can still choose it.
pub(super) async fn delete(conn: &mut PgConnection, id: Uuid, at: OffsetDateTime) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = $2, disabled_at = COALESCE(disabled_at, $2) \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(secs(at))
    .execute(&mut *conn)
    .await?;
    Ok(n.rows_affected() == 1)
}

pub(super) async fn purge(conn: &mut PgConnection, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints WHERE deleted_at < $1 ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(secs(before))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    for sql in [
        "DELETE FROM webhook_deliveries WHERE endpoint_id = ANY($1)",
        "DELETE FROM webhook_subscriptions WHERE endpoint_id = ANY($1)",
        "DELETE FROM webhook_endpoints WHERE id = ANY($1)",
    ] {
        sqlx::query(sql).bind(&ids).execute(&mut *conn).await?;
    }
    Ok(ids.len() as u64)
}

/// Endpoints with their subscriptions as one array.
const SELECT_ENDPOINTS: &str = "SELECT e.*, ARRAY(SELECT event_kind FROM webhook_subscriptions s \
     WHERE s.endpoint_id = e.id ORDER BY event_kind) AS events FROM webhook_endpoints e";

pub(super) async fn find<'e, E>(db: E, id: Uuid, lock: bool) -> Result<Option<WebhookEndpoint>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let lock = if lock { " FOR NO KEY UPDATE OF e" } else { "" };
    let sql = format!("{SELECT_ENDPOINTS} WHERE e.id = $1 AND e.deleted_at IS NULL{lock}");
    let row = sqlx::query(&sql).bind(id).fetch_optional(db).await?;
    row.as_ref().map(endpoint_from_row).transpose()
}

pub(super) async fn list<'e, E>(db: E) -> Result<Vec<WebhookEndpoint>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query(&format!("{SELECT_ENDPOINTS} WHERE e.deleted_at IS NULL ORDER BY e.created_at, e.id"))
        .fetch_all(db)
        .await?;
    rows.iter().map(endpoint_from_row).collect()
}

pub(super) async fn claim(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    claim_until: OffsetDateTime,
    limit: u32,
    skip: &[Uuid],
) -> Result<Vec<Claimed>, StoreError> {
    let rows = sqlx::query(concat!(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = $1, next_attempt_at = $2 \
         WHERE id IN (SELECT d.id FROM webhook_deliveries d \
           JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.disabled_at IS NULL \
           WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND NOT (d.endpoint_id = ANY($4)) AND ",
        lane_head!(),
        " ORDER BY d.next_attempt_at, d.id LIMIT $3 FOR UPDATE OF d SKIP LOCKED) \
         AND state = 'pending' AND next_attempt_at <= $1 \
         RETURNING *"
    ))
    .bind(millis(now))
    .bind(millis(claim_until))
    .bind(i64::from(limit))
    .bind(skip)
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
    let c = attempt.columns(at);
    let endpoint: Option<Uuid> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET state = $3, last_status = $4, last_error = $5, \
         next_attempt_at = COALESCE($6, next_attempt_at), finished_at = $7 \
         WHERE id = $1 AND attempts = $2 AND state = 'pending' RETURNING endpoint_id",
    )
    .bind(delivery_id)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(c.state.as_str())
    .bind(c.status.map(i32::from))
    .bind(c.error)
    .bind(c.next_attempt_at.map(millis))
    .bind(c.finished_at.map(millis))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(endpoint) = endpoint else { return Ok(false) };
    if c.state == DeliveryState::Delivered {
        // Only when the stored time is a while old: a busy endpoint's successes do not all lock and write its row.
        sqlx::query(
            "UPDATE webhook_endpoints SET last_success_at = $2 WHERE id = $1 \
             AND (last_success_at IS NULL OR last_success_at < $2 - make_interval(secs => $3))",
        )
        .bind(endpoint)
        .bind(millis(at))
        .bind(SUCCESS_RESOLUTION_SECS as f64)
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
    let due: bool = sqlx::query_scalar(concat!(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND e.disabled_at IS NULL AND ",
        lane_head!(),
        ")"
    ))
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
