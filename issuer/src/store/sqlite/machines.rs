//! Machines (activations) in SQLite: the slot-limited activation, touch and removal, offline deactivation proofs and
//! their one-time redemption, and the reads.

use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{count_from, hex, secs, time_from, uuid_from};
use crate::store::{Activated, Machine, Redeemed, StoreError};

/// Activates a machine. It runs inside the writer's transaction, which holds the write lock, so the count and the
/// insert see no other writer in between.
pub(super) async fn activate(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    fingerprint: &str,
    name: Option<&str>,
    platform: Option<&str>,
    at: OffsetDateTime,
) -> Result<Activated, StoreError> {
    let id = license_id.to_string();
    // An active fingerprint: refresh it, no slot used.
    let existing = sqlx::query(
        "UPDATE machines SET last_seen_at = ?1, name = COALESCE(?2, name), platform = COALESCE(?3, platform) \
         WHERE license_id = ?4 AND fingerprint = ?5",
    )
    .bind(secs(at))
    .bind(name)
    .bind(platform)
    .bind(&id)
    .bind(fingerprint)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let inserted = !existing
        && sqlx::query(
            "INSERT INTO machines (license_id, fingerprint, name, platform, activated_at, last_seen_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?5 FROM licenses \
             WHERE id = ?1 AND (SELECT COUNT(*) FROM machines WHERE license_id = ?1) < max_machines",
        )
        .bind(&id)
        .bind(fingerprint)
        .bind(name)
        .bind(platform)
        .bind(secs(at))
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
    let row = sqlx::query(
        "SELECT l.id IS NOT NULL AS found, (SELECT COUNT(*) FROM machines WHERE license_id = ?1) AS used, mm.* \
         FROM (SELECT ?1 AS lid) q LEFT JOIN licenses l ON l.id = q.lid \
         LEFT JOIN machines mm ON mm.license_id = q.lid AND mm.fingerprint = ?2",
    )
    .bind(&id)
    .bind(fingerprint)
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

pub(super) async fn touch(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    fingerprint: &str,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE machines SET last_seen_at = ?1 WHERE license_id = ?2 AND fingerprint = ?3")
        .bind(secs(at))
        .bind(license_id.to_string())
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

pub(super) async fn remove(
    conn: &mut SqliteConnection,
    license_id: Uuid,
    fingerprint: &str,
) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM machines WHERE license_id = ?1 AND fingerprint = ?2")
        .bind(license_id.to_string())
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
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
    })
}
