//! Machines (activations) in PostgreSQL: the slot-limited activation, touch and removal, culling of ended leases, the
//! deactivations a limit counts, offline deactivation proofs and their one-time redemption, and the reads.

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{count_from, secs};
use crate::store::{Activated, Culled, Machine, NewMachine, Redeemed, StoreError, Touched};

/// Activates a machine. It first locks the license row (`FOR NO KEY UPDATE`; a no-op when the unit locked it
/// already), then counts and inserts: every activation of a license, from any instance, queues on that lock, and
/// under READ COMMITTED each statement after it takes a fresh snapshot, so the count sees every machine the previous
/// holder committed. (A plain `INSERT ... SELECT ... WHERE (SELECT COUNT(*) ...) < max` would not do: two
/// transactions can both count before either commits.)
pub(super) async fn activate(
    conn: &mut PgConnection,
    license_id: Uuid,
    m: &NewMachine<'_>,
    overage: u32,
) -> Result<Activated, StoreError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT max_machines FROM licenses WHERE id = $1 FOR NO KEY UPDATE")
        .bind(license_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(max) = max else { return Ok(Activated::NoLicense) };
    let lease = m.lease_expires_at.map(secs);
    // An active fingerprint: refresh it, no slot used.
    let existing = sqlx::query(&format!(
        "UPDATE machines SET last_seen_at = $1, name = COALESCE($2, name), platform = COALESCE($3, platform), \
         lease_expires_at = {MOVED_LEASE} WHERE license_id = $5 AND fingerprint = $6 RETURNING *"
    ))
    .bind(secs(m.at))
    .bind(m.name)
    .bind(m.platform)
    .bind(lease)
    .bind(license_id)
    .bind(m.fingerprint)
    .fetch_optional(&mut *conn)
    .await?;
    let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = $1")
        .bind(license_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(match existing {
        Some(row) => Activated::Existing { machine: machine_from_row(&row)?, machines_used: count_from(used)? },
        None if used >= max + i64::from(overage) => Activated::NoSlotLeft { machines_used: count_from(used)? },
        None => {
            let row = sqlx::query(
                "INSERT INTO machines (license_id, fingerprint, name, platform, activated_at, last_seen_at, \
                 lease_expires_at) VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING *",
            )
            .bind(license_id)
            .bind(m.fingerprint)
            .bind(m.name)
            .bind(m.platform)
            .bind(secs(m.at))
            .bind(lease)
            .fetch_one(&mut *conn)
            .await?;
            forget_culled(conn, license_id, m.fingerprint).await?;
            Activated::New { machine: machine_from_row(&row)?, machines_used: count_from(used + 1)? }
        }
    })
}

/// The lease a check-in leaves, the new one being `$4`: none without one, never earlier than it was (`GREATEST`
/// ignores a NULL), never for a machine holding an offline token (which cannot check in).
const MOVED_LEASE: &str = "CASE WHEN offline_proof IS NOT NULL OR $4::timestamptz IS NULL THEN NULL \
                           ELSE GREATEST(lease_expires_at, $4::timestamptz) END";

async fn forget_culled(conn: &mut PgConnection, license_id: Uuid, fingerprint: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM culled_machines WHERE license_id = $1 AND fingerprint = $2")
        .bind(license_id)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn touch(
    conn: &mut PgConnection,
    license_id: Uuid,
    fingerprint: &str,
    at: OffsetDateTime,
    lease_expires_at: Option<OffsetDateTime>,
) -> Result<Touched, StoreError> {
    let touched: Option<Option<OffsetDateTime>> = sqlx::query_scalar(&format!(
        "UPDATE machines SET last_seen_at = $1, lease_expires_at = {MOVED_LEASE} \
         WHERE license_id = $2 AND fingerprint = $3 RETURNING lease_expires_at"
    ))
    .bind(secs(at))
    .bind(license_id)
    .bind(fingerprint)
    .bind(lease_expires_at.map(secs))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(lease_expires_at) = touched {
        return Ok(Touched::Active { lease_expires_at });
    }
    let culled: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM culled_machines WHERE license_id = $1 AND fingerprint = $2)")
            .bind(license_id)
            .bind(fingerprint)
            .fetch_one(&mut *conn)
            .await?;
    Ok(if culled { Touched::LeaseExpired } else { Touched::Absent })
}

/// Deletes the machines whose lease ended that `filter` selects (`$1` now, `$2` the filter's license or NULL, `$3`
/// the limit), taking the rows as `lock` says, and marks them culled.
async fn cull_where(
    conn: &mut PgConnection,
    filter: &str,
    lock: &str,
    license_id: Option<Uuid>,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<Culled>, StoreError> {
    let sql = format!(
        "WITH dead AS (SELECT m.license_id, m.fingerprint FROM machines m JOIN licenses l ON l.id = m.license_id \
         WHERE m.lease_expires_at <= $1 AND {filter} ORDER BY m.lease_expires_at LIMIT $3 {lock}), \
         gone AS (DELETE FROM machines m USING dead WHERE m.license_id = dead.license_id \
         AND m.fingerprint = dead.fingerprint RETURNING m.license_id, m.fingerprint, m.lease_expires_at) \
         INSERT INTO culled_machines (license_id, fingerprint, lease_expired_at, culled_at) \
         SELECT license_id, fingerprint, lease_expires_at, $1 FROM gone \
         ON CONFLICT (license_id, fingerprint) DO UPDATE \
         SET lease_expired_at = EXCLUDED.lease_expired_at, culled_at = EXCLUDED.culled_at \
         RETURNING license_id, fingerprint, lease_expired_at"
    );
    let rows = sqlx::query(&sql).bind(secs(now)).bind(license_id).bind(i64::from(limit)).fetch_all(&mut *conn).await?;
    let mut culled = rows
        .iter()
        .map(|row| {
            Ok(Culled {
                license_id: row.try_get("license_id")?,
                fingerprint: row.try_get("fingerprint")?,
                lease_expired_at: row.try_get("lease_expired_at")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // One order for the events the caller appends.
    culled.sort_by_key(|c| (c.license_id, c.lease_expired_at));
    Ok(culled)
}

/// A unit's culling of its own license, whose lock it holds: no sweep takes its machines meanwhile (a sweep skips a
/// locked license), so it waits for nothing but its own rows.
pub(super) async fn cull(
    conn: &mut PgConnection,
    license_id: Uuid,
    now: OffsetDateTime,
) -> Result<Vec<Culled>, StoreError> {
    cull_where(conn, "m.license_id = $2", "FOR UPDATE OF m", Some(license_id), now, u32::MAX).await
}

/// The sweep. It locks the licenses of the machines it culls (`FOR NO KEY UPDATE OF l SKIP LOCKED`), as a unit of
/// work would, skipping every license a unit or another instance's sweep holds: instances sweeping together split
/// the licenses between them and cull each machine once, and since a unit holds its license's lock from its first
/// read, the sweep and a unit never wait on each other's machine rows or event locks (no deadlock).
pub(super) async fn cull_expired(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<Culled>, StoreError> {
    let lock = "FOR NO KEY UPDATE OF l SKIP LOCKED FOR UPDATE OF m SKIP LOCKED";
    cull_where(conn, "$2::uuid IS NULL", lock, None, now, limit).await
}

pub(super) async fn record_deactivation(
    conn: &mut PgConnection,
    license_id: Uuid,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO deactivations (license_id, at) VALUES ($1, $2)")
        .bind(license_id)
        .bind(secs(at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Rows another instance's sweep is pruning are skipped, not waited for.
pub(super) async fn prune_deactivations(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    limit: u32,
) -> Result<u64, StoreError> {
    let n = sqlx::query(
        "DELETE FROM deactivations WHERE ctid IN \
         (SELECT ctid FROM deactivations WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(secs(before))
    .bind(i64::from(limit))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n)
}

pub(super) async fn deactivations_since(
    conn: &mut PgConnection,
    license_id: Uuid,
    since: OffsetDateTime,
) -> Result<Vec<OffsetDateTime>, StoreError> {
    let times = sqlx::query_scalar("SELECT at FROM deactivations WHERE license_id = $1 AND at > $2 ORDER BY at")
        .bind(license_id)
        .bind(secs(since))
        .fetch_all(&mut *conn)
        .await?;
    Ok(times)
}

pub(super) async fn remove(conn: &mut PgConnection, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM machines WHERE license_id = $1 AND fingerprint = $2")
        .bind(license_id)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    forget_culled(conn, license_id, fingerprint).await?;
    Ok(n == 1)
}

pub(super) async fn set_offline_proof(
    conn: &mut PgConnection,
    license_id: Uuid,
    fingerprint: &str,
    proof: &[u8; 16],
) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE machines SET offline_proof = $1 WHERE license_id = $2 AND fingerprint = $3")
        .bind(&proof[..])
        .bind(license_id)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Removes the machine holding `proof` and records the redemption. `DELETE ... RETURNING` takes the machine row's
/// lock: of two concurrent redemptions of one code, the second waits, finds the row gone, and then sees the first
/// one's redemption record.
pub(super) async fn redeem(
    conn: &mut PgConnection,
    license_id: Uuid,
    proof: &[u8; 16],
    at: OffsetDateTime,
) -> Result<Redeemed, StoreError> {
    let freed: Option<String> =
        sqlx::query_scalar("DELETE FROM machines WHERE license_id = $1 AND offline_proof = $2 RETURNING fingerprint")
            .bind(license_id)
            .bind(&proof[..])
            .fetch_optional(&mut *conn)
            .await?;
    let Some(fingerprint) = freed else {
        let row = sqlx::query(
            "SELECT fingerprint, redeemed_at FROM redeemed_deactivations WHERE proof = $1 AND license_id = $2",
        )
        .bind(&proof[..])
        .bind(license_id)
        .fetch_optional(&mut *conn)
        .await?;
        return Ok(match row {
            Some(row) => Redeemed::AlreadyRedeemed {
                fingerprint: row.try_get("fingerprint")?,
                redeemed_at: row.try_get("redeemed_at")?,
            },
            None => Redeemed::NoMatch,
        });
    };
    sqlx::query(
        "INSERT INTO redeemed_deactivations (proof, license_id, fingerprint, redeemed_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&proof[..])
    .bind(license_id)
    .bind(&fingerprint)
    .bind(secs(at))
    .execute(&mut *conn)
    .await?;
    Ok(Redeemed::Freed { fingerprint, machines_used: count(&mut *conn, license_id).await? })
}

pub(super) async fn count<'e, E>(db: E, license_id: Uuid) -> Result<u32, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = $1")
        .bind(license_id)
        .fetch_one(db)
        .await?;
    count_from(n)
}

pub(super) async fn find<'e, E>(db: E, license_id: Uuid, fingerprint: &str) -> Result<Option<Machine>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let row = sqlx::query("SELECT * FROM machines WHERE license_id = $1 AND fingerprint = $2")
        .bind(license_id)
        .bind(fingerprint)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(machine_from_row).transpose()
}

pub(super) async fn list<'e, E>(db: E, license_id: Uuid) -> Result<Vec<Machine>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query("SELECT * FROM machines WHERE license_id = $1 ORDER BY activated_at, fingerprint")
        .bind(license_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(machine_from_row).collect()
}

fn machine_from_row(row: &PgRow) -> Result<Machine, StoreError> {
    Ok(Machine {
        license_id: row.try_get("license_id")?,
        fingerprint: row.try_get("fingerprint")?,
        name: row.try_get("name")?,
        platform: row.try_get("platform")?,
        activated_at: row.try_get("activated_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        offline: row.try_get::<Option<Vec<u8>>, _>("offline_proof")?.is_some(),
        lease_expires_at: row.try_get("lease_expires_at")?,
        validation_count: u64::try_from(row.try_get::<i64, _>("validation_count")?)
            .map_err(|_| StoreError::Corrupt("machine validation_count".into()))?,
        last_validated_at: row.try_get("last_validated_at")?,
    })
}
