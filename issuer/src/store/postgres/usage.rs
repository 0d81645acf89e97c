//! Usage counters in PostgreSQL (docs/usage.md): a flush's batch added in a few statements, the daily counts read
//! back, and the oldest days pruned.
//!
//! Lock order: a flush locks its daily rows (by license and day), its fingerprints' last counted days (by license
//! and fingerprint), its licenses (by id, `FOR NO KEY UPDATE`, as units lock them: the foreign-key checks of the
//! first two steps take only `KEY SHARE`, which does not conflict with it), then its machines (by license and
//! fingerprint). Every flush takes its locks in this one order, and units take a license before its machines and
//! none of the flush's own rows, so flushes and units never wait on each other in a cycle.
//!
//! A batch must not repeat a (license, day) of `days` or a (license, fingerprint, day) of `machines` (PostgreSQL
//! refuses to update a row twice in one statement); the service's batches come from maps, so they never do.

use sqlx::{Executor, PgConnection, Postgres, Row};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::secs;
use crate::store::usage::{count_i64, last_days, totals};
use crate::store::{DailyUsage, StoreError, UsageBatch};

/// Adds a flush's counters: the days' validations and activations, the machines seen for the first time on each
/// day (read before the machines' `last_validated_at` moves), then the licenses' and the machines' totals.
pub(super) async fn record(conn: &mut PgConnection, batch: &UsageBatch) -> Result<(), StoreError> {
    let mut days: Vec<_> = batch.days.iter().collect();
    days.sort_by_key(|d| (d.license_id, d.day));
    if !days.is_empty() {
        sqlx::query(
            "INSERT INTO license_usage (license_id, day, validations, activations) \
             SELECT * FROM unnest($1::uuid[], $2::date[], $3::bigint[], $4::bigint[]) \
             ON CONFLICT (license_id, day) DO UPDATE SET \
             validations = license_usage.validations + excluded.validations, \
             activations = license_usage.activations + excluded.activations",
        )
        .bind(days.iter().map(|d| d.license_id).collect::<Vec<_>>())
        .bind(days.iter().map(|d| d.day).collect::<Vec<_>>())
        .bind(days.iter().map(|d| count_i64(d.validations)).collect::<Vec<_>>())
        .bind(days.iter().map(|d| count_i64(d.activations)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let mut machines: Vec<_> = batch.machines.iter().collect();
    machines.sort_by(|a, b| (a.license_id, &a.fingerprint, a.day).cmp(&(b.license_id, &b.fingerprint, b.day)));
    if !machines.is_empty() {
        // A fingerprint counts once a day: when the last day it was counted is before this one (read before any
        // last day moves, so a machine seen on two days of one batch counts on both).
        sqlx::query(
            "INSERT INTO license_usage (license_id, day, machines) \
             SELECT s.license_id, s.day, COUNT(*) \
             FROM unnest($1::uuid[], $2::text[], $3::date[]) AS s (license_id, fingerprint, day) \
             LEFT JOIN machine_usage_days d ON d.license_id = s.license_id AND d.fingerprint = s.fingerprint \
             WHERE d.last_day IS NULL OR d.last_day < s.day \
             GROUP BY s.license_id, s.day ORDER BY s.license_id, s.day \
             ON CONFLICT (license_id, day) DO UPDATE SET machines = license_usage.machines + excluded.machines",
        )
        .bind(machines.iter().map(|m| m.license_id).collect::<Vec<_>>())
        .bind(machines.iter().map(|m| m.fingerprint.clone()).collect::<Vec<_>>())
        .bind(machines.iter().map(|m| m.day).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        let last = last_days(batch);
        sqlx::query(
            "INSERT INTO machine_usage_days (license_id, fingerprint, last_day) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::date[]) \
             ON CONFLICT (license_id, fingerprint) DO UPDATE SET \
             last_day = GREATEST(machine_usage_days.last_day, excluded.last_day)",
        )
        .bind(last.keys().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(last.keys().map(|(_, fp)| fp.to_string()).collect::<Vec<_>>())
        .bind(last.values().copied().collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let licenses = totals(batch.days.iter().map(|d| (d.license_id, d.validations, d.last_validated_at)));
    let licenses: Vec<_> = licenses.into_iter().filter(|(_, (n, _))| *n > 0).collect();
    if !licenses.is_empty() {
        let ids: Vec<Uuid> = licenses.iter().map(|(id, _)| *id).collect();
        sqlx::query("SELECT id FROM licenses WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE licenses l SET validation_count = l.validation_count + g.n, \
             last_validated_at = GREATEST(l.last_validated_at, g.last) \
             FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS g (id, n, last) WHERE l.id = g.id",
        )
        .bind(&ids)
        .bind(licenses.iter().map(|(_, (n, _))| count_i64(*n)).collect::<Vec<_>>())
        .bind(licenses.iter().map(|(_, (_, last))| last.map(secs)).collect::<Vec<Option<OffsetDateTime>>>())
        .execute(&mut *conn)
        .await?;
    }
    let per_machine = totals(
        batch
            .machines
            .iter()
            .map(|m| ((m.license_id, m.fingerprint.as_str()), m.validations, Some(m.last_validated_at))),
    );
    if !per_machine.is_empty() {
        let ids: Vec<Uuid> = per_machine.keys().map(|(id, _)| *id).collect();
        let fps: Vec<String> = per_machine.keys().map(|(_, fp)| fp.to_string()).collect();
        sqlx::query(
            "SELECT 1 FROM machines m JOIN unnest($1::uuid[], $2::text[]) AS g (license_id, fingerprint) \
             ON m.license_id = g.license_id AND m.fingerprint = g.fingerprint \
             ORDER BY m.license_id, m.fingerprint FOR NO KEY UPDATE OF m",
        )
        .bind(&ids)
        .bind(&fps)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE machines m SET validation_count = m.validation_count + g.n, \
             last_validated_at = GREATEST(m.last_validated_at, g.last) \
             FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[]) AS g (license_id, fingerprint, n, last) \
             WHERE m.license_id = g.license_id AND m.fingerprint = g.fingerprint",
        )
        .bind(&ids)
        .bind(&fps)
        .bind(per_machine.values().map(|(n, _)| count_i64(*n)).collect::<Vec<_>>())
        .bind(per_machine.values().map(|(_, last)| last.map(secs)).collect::<Vec<Option<OffsetDateTime>>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The license's stored days from `from` to `to` (both included), oldest first; days without usage have no row.
pub(super) async fn daily<'e, E>(db: E, license_id: Uuid, from: Date, to: Date) -> Result<Vec<DailyUsage>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query(
        "SELECT day, validations, activations, machines FROM license_usage \
         WHERE license_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
    )
    .bind(license_id)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|row| {
            let count = |c: &str| -> Result<u64, StoreError> {
                u64::try_from(row.try_get::<i64, _>(c)?).map_err(|_| StoreError::Corrupt(format!("license usage {c}")))
            };
            Ok(DailyUsage {
                day: row.try_get("day")?,
                validations: count("validations")?,
                activations: count("activations")?,
                machines: count("machines")?,
            })
        })
        .collect()
}

/// Deletes at most `limit` of the daily rows before `before`, oldest first, and as many fingerprints last counted
/// before it; how many rows. Rows another instance is pruning (or a flush is adding to) are skipped.
pub(super) async fn prune(conn: &mut PgConnection, before: Date, limit: u32) -> Result<u64, StoreError> {
    let mut total = 0;
    for sql in [
        "DELETE FROM license_usage WHERE (license_id, day) IN \
         (SELECT license_id, day FROM license_usage WHERE day < $1 ORDER BY day LIMIT $2 FOR UPDATE SKIP LOCKED)",
        "DELETE FROM machine_usage_days WHERE (license_id, fingerprint) IN \
         (SELECT license_id, fingerprint FROM machine_usage_days WHERE last_day < $1 \
         ORDER BY last_day LIMIT $2 FOR UPDATE SKIP LOCKED)",
    ] {
        let done = sqlx::query(sql).bind(before).bind(i64::from(limit)).execute(&mut *conn).await?;
        total += done.rows_affected();
    }
    Ok(total)
}
