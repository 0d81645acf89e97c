//! Machines (activations) in SQLite: the slot-limited activation, touch and removal, culling of ended leases,
//! the deactivations a limit counts, offline deactivation proofs and their one-time redemption, and the reads.

use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{count_from, hex, secs, time_from, uuid_from};
use crate::store::{Activated, Culled, Machine, NewMachine, Redeemed, StoreError, Touched};

/// Activates a machine. It runs inside the writer's transaction, which holds the write lock, so the count and the
/// insert see no other writer in between.
pub(super) async fn activate(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    m: &NewMachine<'_>,
    overage: u32,
) -> Result<Activated, StoreError> {
    let id = license_id.to_string();
    let lease = m.lease_expires_at.map(secs);
    // An active fingerprint: refresh it, no slot used.
    let existing = sqlx::query(&format!(
        "UPDATE machines SET last_seen_at = ?1, name = COALESCE(?2, name), platform = COALESCE(?3, platform), \
         lease_expires_at = {MOVED_LEASE} WHERE license_id = ?5 AND fingerprint = ?6"
    ))
    .bind(secs(m.at))
    .bind(m.name)
    .bind(m.platform)
    .bind(lease)
    .bind(&id)
    .bind(m.fingerprint)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let inserted = !existing
        && sqlx::query(
            "INSERT INTO machines (license_id, fingerprint, name, platform, activated_at, last_seen_at, \
             lease_expires_at) SELECT ?1, ?2, ?3, ?4, ?5, ?5, ?6 FROM licenses \
             WHERE id = ?1 AND (SELECT COUNT(*) FROM machines WHERE license_id = ?1) < max_machines + ?7",
        )
        .bind(&id)
        .bind(m.fingerprint)
        .bind(m.name)
        .bind(m.platform)
        .bind(secs(m.at))
        .bind(lease)
        .bind(i64::from(overage))
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
    if inserted {
        forget_culled(conn, &id, m.fingerprint).await?;
    }
    let row = sqlx::query(
        "SELECT l.id IS NOT NULL AS found, (SELECT COUNT(*) FROM machines WHERE license_id = ?1) AS used, mm.* \
         FROM (SELECT ?1 AS lid) q LEFT JOIN licenses l ON l.id = q.lid \
         LEFT JOIN machines mm ON mm.license_id = q.lid AND mm.fingerprint = ?2",
    )
    .bind(&id)
    .bind(m.fingerprint)
    .fetch_one(&mut *conn)
    .await?;
    if !row.try_get::<bool, _>("found")? {
        return Ok(Activated::NoLicense);
    }
    let machines_used = count_from(row.try_get("used")?)?;
    if !(existing || inserted) {
        return Ok(Activated::NoSlotLeft { machines_used });
    }
    let machine = machine_from_row(&row)?;
    Ok(if inserted {
        Activated::New { machine, machines_used }
    } else {
        Activated::Existing { machine, machines_used }
    })
}

/// The lease a check-in leaves, the new one being `?4`: none without one, never earlier than it was, never for a
/// machine holding an offline token (which cannot check in).
const MOVED_LEASE: &str = "CASE WHEN offline_proof IS NOT NULL OR ?4 IS NULL THEN NULL \
                           ELSE MAX(COALESCE(lease_expires_at, ?4), ?4) END";

async fn forget_culled(conn: &mut SqliteConnection, license_id: &str, fingerprint: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM culled_machines WHERE license_id = ?1 AND fingerprint = ?2")
        .bind(license_id)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn touch(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    fingerprint: &str,
    at: OffsetDateTime,
    lease_expires_at: Option<OffsetDateTime>,
) -> Result<Touched, StoreError> {
    let id = license_id.to_string();
    let touched: Option<Option<i64>> = sqlx::query_scalar(&format!(
        "UPDATE machines SET last_seen_at = ?1, lease_expires_at = {MOVED_LEASE} \
         WHERE license_id = ?2 AND fingerprint = ?3 RETURNING lease_expires_at"
    ))
    .bind(secs(at))
    .bind(&id)
    .bind(fingerprint)
    .bind(lease_expires_at.map(secs))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(lease) = touched {
        return Ok(Touched::Active { lease_expires_at: lease.map(time_from).transpose()? });
    }
    let culled: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM culled_machines WHERE license_id = ?1 AND fingerprint = ?2)")
            .bind(&id)
            .bind(fingerprint)
            .fetch_one(&mut *conn)
            .await?;
    Ok(if culled { Touched::LeaseExpired } else { Touched::Absent })
}

/// Culls the machines `filter` selects among those whose lease ended (`?1` is now, `?2` the filter's value, `?3`
/// the limit): deletes them and marks them culled, in the writer's transaction.
async fn cull_where(
    conn: &mut SqliteConnection,
    filter: &str,
    value: Option<String>,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<Culled>, StoreError> {
    let sql = format!(
        "DELETE FROM machines WHERE rowid IN (SELECT rowid FROM machines WHERE lease_expires_at <= ?1 AND {filter} \
         ORDER BY lease_expires_at LIMIT ?3) RETURNING license_id, fingerprint, lease_expires_at"
    );
    let rows = sqlx::query(&sql).bind(secs(now)).bind(value).bind(i64::from(limit)).fetch_all(&mut *conn).await?;
    let mut culled = Vec::with_capacity(rows.len());
    for row in rows {
        let (license_id, fingerprint): (String, String) = (row.try_get("license_id")?, row.try_get("fingerprint")?);
        let ended: i64 = row.try_get("lease_expires_at")?;
        sqlx::query(
            "INSERT INTO culled_machines (license_id, fingerprint, lease_expired_at, culled_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (license_id, fingerprint) DO UPDATE SET lease_expired_at = ?3, culled_at = ?4",
        )
        .bind(&license_id)
        .bind(&fingerprint)
        .bind(ended)
        .bind(secs(now))
        .execute(&mut *conn)
        .await?;
        culled.push(Culled { license_id: uuid_from(&license_id)?, fingerprint, lease_expired_at: time_from(ended)? });
    }
    Ok(culled)
}

pub(super) async fn cull(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    now: OffsetDateTime,
) -> Result<Vec<Culled>, StoreError> {
    cull_where(conn, "license_id = ?2", Some(license_id.to_string()), now, u32::MAX).await
}

/// The sweep. SQLite has one writer at a time, so nothing else culls or checks in meanwhile.
pub(super) async fn cull_expired(
    conn: &mut SqliteConnection,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<Culled>, StoreError> {
    cull_where(conn, "?2 IS NULL", None, now, limit).await
}

pub(super) async fn record_deactivation(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO deactivations (license_id, at) VALUES (?1, ?2)")
        .bind(license_id.to_string())
        .bind(secs(at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn prune_deactivations(
    conn: &mut SqliteConnection,
    before: OffsetDateTime,
    limit: u32,
) -> Result<u64, StoreError> {
    let n = sqlx::query(
        "DELETE FROM deactivations WHERE rowid IN (SELECT rowid FROM deactivations WHERE at < ?1 LIMIT ?2)",
    )
    .bind(secs(before))
    .bind(i64::from(limit))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n)
}

pub(super) async fn deactivations_since(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    since: OffsetDateTime,
) -> Result<Vec<OffsetDateTime>, StoreError> {
    let times: Vec<i64> =
        sqlx::query_scalar("SELECT at FROM deactivations WHERE license_id = ?1 AND at > ?2 ORDER BY at")
            .bind(license_id.to_string())
            .bind(secs(since))
            .fetch_all(&mut *conn)
            .await?;
    times.into_iter().map(time_from).collect()
}

pub(super) async fn remove(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    fingerprint: &str,
) -> Result<bool, StoreError> {
    let id = license_id.to_string();
    let n = sqlx::query("DELETE FROM machines WHERE license_id = ?1 AND fingerprint = ?2")
        .bind(&id)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    forget_culled(conn, &id, fingerprint).await?;
    Ok(n == 1)
}

pub(super) async fn set_offline_proof(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    fingerprint: &str,
    proof: &[u8; 16],
) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE machines SET offline_proof = ?1 WHERE license_id = ?2 AND fingerprint = ?3")
        .bind(hex(proof))
        .bind(license_id.to_string())
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Removes the machine holding `proof` and records the redemption, or says why nothing was freed.
pub(super) async fn redeem(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    proof: &[u8; 16],
    at: OffsetDateTime,
) -> Result<Redeemed, StoreError> {
    let (id, proof) = (license_id.to_string(), hex(proof));
    let freed: Option<String> =
        sqlx::query_scalar("DELETE FROM machines WHERE license_id = ?1 AND offline_proof = ?2 RETURNING fingerprint")
            .bind(&id)
            .bind(&proof)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(fingerprint) = freed else {
        let row = sqlx::query(
            "SELECT fingerprint, redeemed_at FROM redeemed_deactivations WHERE proof = ?1 AND license_id = ?2",
        )
        .bind(&proof)
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?;
        return match row {
            Some(row) => Ok(Redeemed::AlreadyRedeemed {
                fingerprint: row.try_get("fingerprint")?,
                redeemed_at: time_from(row.try_get("redeemed_at")?)?,
            }),
            None => Ok(Redeemed::NoMatch),
        };
    };
    sqlx::query(
        "INSERT INTO redeemed_deactivations (proof, license_id, fingerprint, redeemed_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(&proof)
    .bind(&id)
    .bind(&fingerprint)
    .bind(secs(at))
    .execute(&mut *conn)
    .await?;
    Ok(Redeemed::Freed { fingerprint, machines_used: count(&mut *conn, license_id).await? })
}

pub(super) async fn count<'e, E>(db: E, license_id: Uuid) -> Result<u32, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = ?1")
        .bind(license_id.to_string())
        .fetch_one(db)
        .await?;
    count_from(n)
}

pub(super) async fn find<'e, E>(db: E, license_id: Uuid, fingerprint: &str) -> Result<Option<Machine>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let row = sqlx::query("SELECT * FROM machines WHERE license_id = ?1 AND fingerprint = ?2")
        .bind(license_id.to_string())
        .bind(fingerprint)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(machine_from_row).transpose()
}

pub(super) async fn list<'e, E>(db: E, license_id: Uuid) -> Result<Vec<Machine>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query("SELECT * FROM machines WHERE license_id = ?1 ORDER BY activated_at, fingerprint")
        .bind(license_id.to_string())
        .fetch_all(db)
        .await?;
    rows.iter().map(machine_from_row).collect()
}

fn machine_from_row(row: &SqliteRow) -> Result<Machine, StoreError> {
    let license_id: String = row.try_get("license_id")?;
    Ok(Machine {
        license_id: uuid_from(&license_id)?,
        fingerprint: row.try_get("fingerprint")?,
        name: row.try_get("name")?,
        platform: row.try_get("platform")?,
        activated_at: time_from(row.try_get("activated_at")?)?,
        last_seen_at: time_from(row.try_get("last_seen_at")?)?,
        offline: row.try_get::<Option<String>, _>("offline_proof")?.is_some(),
        lease_expires_at: row.try_get::<Option<i64>, _>("lease_expires_at")?.map(time_from).transpose()?,
        validation_count: u64::try_from(row.try_get::<i64, _>("validation_count")?)
            .map_err(|_| StoreError::Corrupt("machine validation_count".into()))?,
        last_validated_at: row.try_get::<Option<i64>, _>("last_validated_at")?.map(time_from).transpose()?,
    })
}
