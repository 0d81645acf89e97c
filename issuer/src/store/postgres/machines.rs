//! Machines (activations) in PostgreSQL: the slot-limited activation, touch and removal, offline deactivation proofs
//! and their one-time redemption, and the reads.

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{count_from, secs};
use crate::store::{Activated, Machine, Redeemed, StoreError};

/// Activates a machine. It first locks the license row (`FOR NO KEY UPDATE`; a no-op when the unit locked it
/// already), then counts and inserts: every activation of a license, from any instance, queues on that lock, and
/// under READ COMMITTED each statement after it takes a fresh snapshot, so the count sees every machine the previous
/// holder committed. (A plain `INSERT ... SELECT ... WHERE (SELECT COUNT(*) ...) < max` would not do: two
/// transactions can both count before either commits.)
pub(super) async fn activate(
    conn: &mut PgConnection,
    license_id: Uuid,
    fingerprint: &str,
    name: Option<&str>,
    platform: Option<&str>,
    at: OffsetDateTime,
) -> Result<Activated, StoreError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT max_machines FROM licenses WHERE id = $1 FOR NO KEY UPDATE")
        .bind(license_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(max) = max else { return Ok(Activated::NoLicense) };
    // An active fingerprint: refresh it, no slot used.
    let existing = sqlx::query(
        "UPDATE machines SET last_seen_at = $1, name = COALESCE($2, name), platform = COALESCE($3, platform) \
         WHERE license_id = $4 AND fingerprint = $5 RETURNING *",
    )
    .bind(secs(at))
    .bind(name)
    .bind(platform)
    .bind(license_id)
    .bind(fingerprint)
    .fetch_optional(&mut *conn)
    .await?;
    let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = $1")
        .bind(license_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(match existing {
        Some(row) => Activated::Existing { machine: machine_from_row(&row)?, machines_used: count_from(used)? },
        None if used >= max => Activated::NoSlotLeft { machines_used: count_from(used)? },
        None => {
            let row = sqlx::query(
                "INSERT INTO machines (license_id, fingerprint, name, platform, activated_at, last_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING *",
            )
            .bind(license_id)
            .bind(fingerprint)
            .bind(name)
            .bind(platform)
            .bind(secs(at))
            .fetch_one(&mut *conn)
            .await?;
            Activated::New { machine: machine_from_row(&row)?, machines_used: count_from(used + 1)? }
        }
    })
}

pub(super) async fn touch(
    conn: &mut PgConnection,
    license_id: Uuid,
    fingerprint: &str,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE machines SET last_seen_at = $1 WHERE license_id = $2 AND fingerprint = $3")
        .bind(secs(at))
        .bind(license_id)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub(super) async fn remove(conn: &mut PgConnection, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM machines WHERE license_id = $1 AND fingerprint = $2")
        .bind(license_id)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
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
    })
}
