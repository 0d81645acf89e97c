//! Licenses in PostgreSQL: reading (by id or key, the validation read, pages), and the writes of a unit of work
//! (locking read, insert with its idempotency key, update, guarded status change).

use sqlx::postgres::PgRow;
use sqlx::{Acquire as _, Executor, PgConnection, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::super::like_prefix;
use super::{count_from, is_unique_violation, json, secs};
use crate::store::{
    Created, EffectiveStatus, Idempotency, License, LicenseFilter, LicensePage, LicenseStatus, LicenseUpdate, Lookup,
    MachineCheck, Presence, StoreError,
};

/// The license by id or key; with `lock`, its row is locked `FOR NO KEY UPDATE` until the transaction ends. That
/// lock conflicts with itself and with updates of the row, but not with the `FOR KEY SHARE` locks foreign-key checks
/// take, so inserting events and machines of the license is never blocked by it.
pub(super) async fn find<'e, E>(db: E, which: Lookup<'_>, lock: bool) -> Result<Option<License>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let row = match (which, lock) {
        (Lookup::Id(id), false) => sqlx::query("SELECT * FROM licenses WHERE id = $1").bind(id).fetch_optional(db),
        (Lookup::Id(id), true) => {
            sqlx::query("SELECT * FROM licenses WHERE id = $1 FOR NO KEY UPDATE").bind(id).fetch_optional(db)
        }
        (Lookup::Key(key), false) => {
            sqlx::query("SELECT * FROM licenses WHERE license_key = $1").bind(key.to_string()).fetch_optional(db)
        }
        (Lookup::Key(key), true) => sqlx::query("SELECT * FROM licenses WHERE license_key = $1 FOR NO KEY UPDATE")
            .bind(key.to_string())
            .fetch_optional(db),
    }
    .await?;
    row.as_ref().map(license_from_row).transpose()
}

/// The ids of the revoked licenses, in one statement (one snapshot).
pub(super) async fn revoked<'e, E>(db: E) -> Result<Vec<Uuid>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    Ok(sqlx::query_scalar("SELECT id FROM licenses WHERE status = 'revoked'").fetch_all(db).await?)
}

/// The validation read, the policy in the same query (one round trip with or without one); built once.
static FOR_MACHINE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT l.*, {}, (SELECT COUNT(*) FROM machines m WHERE m.license_id = l.id \
         AND (m.lease_expires_at IS NULL OR m.lease_expires_at > $3)) AS machines_used, \
         (SELECT m.lease_expires_at IS NULL OR m.lease_expires_at > $3 \
          FROM machines m WHERE m.license_id = l.id AND m.fingerprint = $2) AS machine_live, \
         EXISTS (SELECT 1 FROM culled_machines c WHERE c.license_id = l.id AND c.fingerprint = $2) AS culled \
         FROM licenses l LEFT JOIN policies p ON p.name = l.policy WHERE l.license_key = $1",
        crate::store::policy::prefixed_columns("p"),
    )
});

/// The validation read in one round trip: the license, its machines whose lease has not ended at `now`, whether
/// `fingerprint` is one of them, one whose lease ended (still there, or culled), or neither, and the license's policy.
pub(super) async fn for_machine<'e, E>(
    db: E,
    key: &str,
    fingerprint: &str,
    now: OffsetDateTime,
) -> Result<Option<MachineCheck>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let row = sqlx::query(&FOR_MACHINE).bind(key).bind(fingerprint).bind(secs(now)).fetch_optional(db).await?;
    let Some(row) = row else { return Ok(None) };
    let machines_used = count_from(row.try_get("machines_used")?)?;
    let presence = match row.try_get::<Option<bool>, _>("machine_live")? {
        Some(true) => Presence::Active,
        Some(false) => Presence::LeaseExpired,
        None if row.try_get::<bool, _>("culled")? => Presence::LeaseExpired,
        None => Presence::Absent,
    };
    let policy = super::policies::prefixed_policy(&row)?;
    Ok(Some(MachineCheck { license: license_from_row(&row)?, machines_used, presence, policy }))
}

/// One page of licenses matching the filter.
pub(super) async fn list<'e, E>(db: E, filter: &LicenseFilter) -> Result<LicensePage, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM licenses WHERE true");
    if let Some(email) = &filter.email {
        q.push(" AND lower(email) = lower(").push_bind(email.clone()).push(")");
    }
    if let Some(product) = &filter.product {
        q.push(" AND product = ").push_bind(product.clone());
    }
    if let Some(prefix) = &filter.email_prefix {
        q.push(" AND lower(email) LIKE lower(").push_bind(like_prefix(prefix)).push(") ESCAPE '\\'");
    }
    push_status(&mut q, filter);
    if let Some(after) = filter.after {
        q.push(" AND (created_at, id) > (").push_bind(secs(after.created_at));
        q.push(", ").push_bind(after.id).push(")");
    }
    // One extra row tells whether another page follows.
    q.push(" ORDER BY created_at, id LIMIT ").push_bind(i64::from(filter.limit) + 1);
    let rows = q.build().fetch_all(db).await?;
    let licenses = rows.iter().map(license_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(LicensePage::from_overfetched(licenses, filter.limit))
}

/// The status filter, expiry judged at `filter.now`.
fn push_status(q: &mut QueryBuilder<'_, Postgres>, filter: &LicenseFilter) {
    let Some(status) = filter.status else { return };
    match (status, filter.now.map(secs)) {
        (EffectiveStatus::Suspended | EffectiveStatus::Revoked, _) | (EffectiveStatus::Active, None) => {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        (EffectiveStatus::Active, Some(now)) => {
            q.push(" AND status = 'active' AND (expires_at IS NULL OR expires_at > ").push_bind(now).push(")");
        }
        (EffectiveStatus::Expired, Some(now)) => {
            q.push(" AND status = 'active' AND expires_at <= ").push_bind(now);
        }
        (EffectiveStatus::Expired, None) => {
            q.push(" AND false");
        }
    }
}

/// Inserts a license and its idempotency key in a savepoint, so a replay or a duplicate undoes only this insert and
/// the unit's transaction stays usable. The key's primary key with `ON CONFLICT DO NOTHING` makes a concurrent second
/// insert wait for the first transaction and then find the key taken: it replays the first license.
pub(super) async fn insert(
    conn: &mut PgConnection,
    license: &License,
    idempotency: Option<&Idempotency>,
) -> Result<Created, StoreError> {
    let mut sp = conn.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO licenses (id, license_key, email, product, max_machines, expires_at, entitlements, metadata, \
         status, created_at, updated_at, policy, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(license.id)
    .bind(&license.key)
    .bind(&license.email)
    .bind(&license.product)
    .bind(i64::from(license.max_machines))
    .bind(license.expires_at.map(secs))
    .bind(json(&license.entitlements)?)
    .bind(json(&license.metadata)?)
    .bind(license.status.as_str())
    .bind(secs(license.created_at))
    .bind(secs(license.updated_at))
    .bind(license.policy.as_deref())
    .bind(license.kind.as_str())
    .execute(&mut *sp)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            sp.rollback().await?;
            return Err(StoreError::Duplicate);
        }
        other => other?,
    };
    if let Some(idem) = idempotency {
        let fresh = sqlx::query(
            "INSERT INTO idempotency_keys (idempotency_key, request_hash, license_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&idem.key)
        .bind(&idem.request_hash)
        .bind(license.id)
        .bind(secs(license.created_at))
        .execute(&mut *sp)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            sp.rollback().await?;
            let row = sqlx::query("SELECT request_hash, license_id FROM idempotency_keys WHERE idempotency_key = $1")
                .bind(&idem.key)
                .fetch_one(&mut *conn)
                .await?;
            let hash: String = row.try_get("request_hash")?;
            if hash != idem.request_hash {
                return Err(StoreError::IdempotencyConflict);
            }
            let first: Uuid = row.try_get("license_id")?;
            return find(&mut *conn, Lookup::Id(first), false)
                .await?
                .map(Created::Replayed)
                .ok_or_else(|| StoreError::Corrupt("idempotency key names a missing license".into()));
        }
    }
    sp.commit().await?;
    Ok(Created::New(license.clone()))
}

/// Applies the given fields only.
pub(super) async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    update: &LicenseUpdate,
    at: OffsetDateTime,
) -> Result<Option<License>, StoreError> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE licenses SET updated_at = ");
    q.push_bind(secs(at));
    if let Some(n) = update.max_machines {
        q.push(", max_machines = ").push_bind(i64::from(n));
    }
    if let Some(expires) = update.expires_at {
        // An expiry moved into the future (or away) is announced again when it passes; one still in the past keeps
        // its announcement: a license expires once per expiry, not once per update.
        q.push(", expires_at = ").push_bind(expires.map(secs));
        q.push(", expiry_announced_at = CASE WHEN ").push_bind(expires.map(secs)).push(" IS NULL OR ");
        q.push_bind(expires.map(secs)).push(" > ").push_bind(secs(at));
        q.push(" THEN NULL ELSE expiry_announced_at END");
    }
    if let Some(e) = &update.entitlements {
        q.push(", entitlements = ").push_bind(json(e)?);
    }
    if let Some(m) = &update.metadata {
        q.push(", metadata = ").push_bind(json(m)?);
    }
    q.push(" WHERE id = ").push_bind(id).push(" RETURNING *");
    let row = q.build().fetch_optional(&mut *conn).await?;
    row.as_ref().map(license_from_row).transpose()
}

/// Compare and set: the status becomes `to` only where it is `from`. The trigger of migration 0002 refuses a
/// change away from revoked.
pub(super) async fn change_status(
    conn: &mut PgConnection,
    id: Uuid,
    from: LicenseStatus,
    to: LicenseStatus,
    at: OffsetDateTime,
) -> Result<Option<License>, StoreError> {
    let row = sqlx::query("UPDATE licenses SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4 RETURNING *")
        .bind(to.as_str())
        .bind(secs(at))
        .bind(id)
        .bind(from.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.message().contains("revoked_is_final") => StoreError::RevokedIsFinal,
            _ => StoreError::Database(e),
        })?;
    row.as_ref().map(license_from_row).transpose()
}

pub(super) fn license_from_row(row: &PgRow) -> Result<License, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("license {what}"));
    let status: String = row.try_get("status")?;
    let entitlements: serde_json::Value = row.try_get("entitlements")?;
    let metadata: serde_json::Value = row.try_get("metadata")?;
    let max_machines: i64 = row.try_get("max_machines")?;
    let kind: String = row.try_get("kind")?;
    Ok(License {
        id: row.try_get("id")?,
        key: row.try_get("license_key")?,
        email: row.try_get("email")?,
        product: row.try_get("product")?,
        max_machines: u32::try_from(max_machines).map_err(|_| corrupt("max_machines"))?,
        expires_at: row.try_get("expires_at")?,
        entitlements: serde_json::from_value(entitlements).map_err(|_| corrupt("entitlements"))?,
        metadata: serde_json::from_value(metadata).map_err(|_| corrupt("metadata"))?,
        status: status.parse().map_err(|_| corrupt("status"))?,
        policy: row.try_get("policy")?,
        kind: kind.parse().map_err(|_| corrupt("kind"))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        validation_count: u64::try_from(row.try_get::<i64, _>("validation_count")?)
            .map_err(|_| corrupt("validation_count"))?,
        last_validated_at: row.try_get("last_validated_at")?,
    })
}

/// Licenses whose expiry passed and was not announced, locked (`SKIP LOCKED`: a license a unit or another
/// instance's sweep holds is left for the next sweep) and marked announced, so each expiry is announced once.
pub(super) async fn announce_expiries(
    conn: &mut sqlx::PgConnection,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<License>, StoreError> {
    let rows = sqlx::query(
        "UPDATE licenses SET expiry_announced_at = expires_at WHERE id IN (SELECT id FROM licenses \
         WHERE expiry_announced_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $1 AND status = 'active' \
         ORDER BY expires_at, id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED) \
         AND expiry_announced_at IS NULL RETURNING *",
    )
    .bind(secs(now))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(license_from_row).collect()
}
