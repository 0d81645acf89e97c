//! Policies in PostgreSQL: reads, and the writes of a unit of work (insert, update, delete of an unused policy).

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Executor, PgConnection, Postgres, Row};

use super::{is_unique_violation, json, secs};
use crate::store::policy::{COLUMN_PREFIX, TERM_COLUMNS};
use crate::store::{Policy, PolicyDeleted, PolicyLock, StoreError};

/// The policy, its row locked as `lock` says until the transaction ends: `KeepAlive` is `FOR KEY SHARE` (what a
/// license insert's foreign key check takes anyway; it blocks only a delete), `Update` is `FOR NO KEY UPDATE` (it
/// does not block creating licenses of the policy, which take only a key-share lock). A plain read takes no lock, so
/// the activations of a policy's many licenses never contend on its row.
pub(super) async fn find<'e, E>(db: E, name: &str, lock: PolicyLock) -> Result<Option<Policy>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let sql = match lock {
        PolicyLock::None => "SELECT * FROM policies WHERE name = $1",
        PolicyLock::KeepAlive => "SELECT * FROM policies WHERE name = $1 FOR KEY SHARE",
        PolicyLock::Update => "SELECT * FROM policies WHERE name = $1 FOR NO KEY UPDATE",
    };
    let row = sqlx::query(sql).bind(name).fetch_optional(db).await?;
    row.as_ref().map(policy_from_row).transpose()
}

pub(super) async fn list<'e, E>(db: E) -> Result<Vec<Policy>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query("SELECT * FROM policies ORDER BY name").fetch_all(db).await?;
    rows.iter().map(policy_from_row).collect()
}

/// Binds the terms of `p` as `$1` (its name) to `$12`, in the column order of [`TERM_COLUMNS`].
fn bind_terms<'q>(
    q: Query<'q, Postgres, PgArguments>,
    p: &'q Policy,
) -> Result<Query<'q, Postgres, PgArguments>, StoreError> {
    Ok(q.bind(&p.name)
        .bind(i64::from(p.max_machines))
        .bind(p.duration_secs.map(db_secs))
        .bind(json(&p.entitlements)?)
        .bind(p.refresh_interval_secs.map(db_secs))
        .bind(p.offline_grace_secs.map(db_secs))
        .bind(p.lease_secs.map(db_secs))
        .bind(p.floating)
        .bind(p.overage.to_string())
        .bind(p.offline_allowed)
        .bind(p.deactivation_limit.map(i64::from))
        .bind(db_secs(p.deactivation_period_secs)))
}

pub(super) async fn insert(conn: &mut PgConnection, p: &Policy) -> Result<(), StoreError> {
    // ON CONFLICT DO NOTHING rather than catching the unique violation: an error would abort the whole unit.
    let sql = format!(
        "INSERT INTO policies (name, {}, product, created_at, updated_at, kind) VALUES ($1, {}, $13, $14, $15, $16) \
         ON CONFLICT (name) DO NOTHING",
        TERM_COLUMNS.join(", "),
        (2..=12).map(|i| format!("${i}")).collect::<Vec<_>>().join(", "),
    );
    let n = bind_terms(sqlx::query(&sql), p)?
        .bind(&p.product)
        .bind(secs(p.created_at))
        .bind(secs(p.updated_at))
        .bind(p.kind.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| if is_unique_violation(&e) { StoreError::Duplicate } else { StoreError::Database(e) })?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::Duplicate);
    }
    Ok(())
}

pub(super) async fn update(conn: &mut PgConnection, p: &Policy) -> Result<bool, StoreError> {
    let sets: Vec<String> = TERM_COLUMNS.iter().zip(2..).map(|(column, i)| format!("{column} = ${i}")).collect();
    let sql = format!("UPDATE policies SET {}, updated_at = $13 WHERE name = $1", sets.join(", "));
    let n = bind_terms(sqlx::query(&sql), p)?.bind(secs(p.updated_at)).execute(&mut *conn).await?.rows_affected();
    if n == 1 && p.lease_secs.is_none() {
        // No lease any more: no machine of the policy is culled from now on. The licenses are locked first, in one
        // order, as their units lock them: a check-in that read the old lease commits before its lease is ended here
        // (none survives the change), and this never deadlocks with a unit culling or checking in.
        sqlx::query("SELECT id FROM licenses WHERE policy = $1 ORDER BY id FOR NO KEY UPDATE")
            .bind(&p.name)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE machines SET lease_expires_at = NULL WHERE lease_expires_at IS NOT NULL \
             AND license_id IN (SELECT id FROM licenses WHERE policy = $1)",
        )
        .bind(&p.name)
        .execute(&mut *conn)
        .await?;
    }
    Ok(n == 1)
}

pub(super) async fn delete(conn: &mut PgConnection, name: &str) -> Result<PolicyDeleted, StoreError> {
    // Locks the row first (FOR UPDATE conflicts with the key-share lock a license insert takes on it), so the count
    // sees every license committed before, and none can be inserted after.
    let found: Option<String> = sqlx::query_scalar("SELECT name FROM policies WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Ok(PolicyDeleted::NotFound);
    }
    let used: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM licenses WHERE policy = $1").bind(name).fetch_one(&mut *conn).await?;
    if used > 0 {
        return Ok(PolicyDeleted::InUse(used.unsigned_abs()));
    }
    sqlx::query("DELETE FROM policies WHERE name = $1").bind(name).execute(&mut *conn).await?;
    Ok(PolicyDeleted::Deleted)
}

/// Seconds as PostgreSQL stores them (durations are validated far below `i64::MAX`).
fn db_secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

fn policy_from_row(row: &PgRow) -> Result<Policy, StoreError> {
    policy_from_columns(row, "")
}

/// The policy a query read with [`prefixed_columns`](crate::store::policy::prefixed_columns); `None` when there was
/// none (a license without a policy).
pub(super) fn prefixed_policy(row: &PgRow) -> Result<Option<Policy>, StoreError> {
    let name: Option<String> = row.try_get(format!("{COLUMN_PREFIX}name").as_str())?;
    name.map(|_| policy_from_columns(row, COLUMN_PREFIX)).transpose()
}

fn policy_from_columns(row: &PgRow, prefix: &str) -> Result<Policy, StoreError> {
    let column = |c: &str| format!("{prefix}{c}");
    let corrupt = |what: &str| StoreError::Corrupt(format!("policy {what}"));
    let unsigned = |what: &str, v: i64| u64::try_from(v).map_err(|_| corrupt(what));
    let opt = |what: &str, v: Option<i64>| v.map(|v| unsigned(what, v)).transpose();
    let entitlements: serde_json::Value = row.try_get(column("entitlements").as_str())?;
    let overage: String = row.try_get(column("overage").as_str())?;
    let max_machines: i64 = row.try_get(column("max_machines").as_str())?;
    let limit: Option<i64> = row.try_get(column("deactivation_limit").as_str())?;
    let kind: String = row.try_get(column("kind").as_str())?;
    Ok(Policy {
        name: row.try_get(column("name").as_str())?,
        product: row.try_get(column("product").as_str())?,
        kind: kind.parse().map_err(|_| corrupt("kind"))?,
        max_machines: u32::try_from(max_machines).map_err(|_| corrupt("max_machines"))?,
        duration_secs: opt("duration", row.try_get(column("duration_secs").as_str())?)?,
        entitlements: serde_json::from_value(entitlements).map_err(|_| corrupt("entitlements"))?,
        refresh_interval_secs: opt("refresh_interval", row.try_get(column("refresh_interval_secs").as_str())?)?,
        offline_grace_secs: opt("offline_grace", row.try_get(column("offline_grace_secs").as_str())?)?,
        lease_secs: opt("lease", row.try_get(column("lease_secs").as_str())?)?,
        floating: row.try_get(column("floating").as_str())?,
        overage: overage.parse().map_err(|_| corrupt("overage"))?,
        offline_allowed: row.try_get(column("offline_allowed").as_str())?,
        deactivation_limit: limit.map(|n| u32::try_from(n).map_err(|_| corrupt("deactivation_limit"))).transpose()?,
        deactivation_period_secs: unsigned(
            "deactivation_period",
            row.try_get(column("deactivation_period_secs").as_str())?,
        )?,
        created_at: row.try_get(column("created_at").as_str())?,
        updated_at: row.try_get(column("updated_at").as_str())?,
    })
}
