//! Usage counters in SQLite (docs/usage.md): a flush's batch added in a few statements, the daily counts read back,
//! and the oldest days pruned. Days are stored as Julian day numbers.

use sqlx::{Executor, QueryBuilder, Row, Sqlite, SqliteConnection};
use time::Date;
use uuid::Uuid;

use super::secs;
use crate::store::usage::{count_i64, last_days, totals};
use crate::store::{DailyUsage, StoreError, UsageBatch};

/// Rows a statement carries: at most 5 parameters each, under SQLite's 32,766.
const CHUNK: usize = 5000;

/// Adds a flush's counters: the days' validations and activations, the fingerprints seen for the first time on each
/// day (read before their last counted day moves), then the machines' and the licenses' totals.
pub(super) async fn record(conn: &mut SqliteConnection, batch: &UsageBatch) -> Result<(), StoreError> {
    for chunk in batch.days.chunks(CHUNK) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO license_usage (license_id, day, validations, activations) ");
        q.push_values(chunk, |mut row, d| {
            row.push_bind(d.license_id.to_string())
                .push_bind(i64::from(d.day.to_julian_day()))
                .push_bind(count_i64(d.validations))
                .push_bind(count_i64(d.activations));
        });
        q.push(
            " ON CONFLICT (license_id, day) DO UPDATE SET validations = validations + excluded.validations, \
             activations = activations + excluded.activations",
        );
        // Not kept in the connection's statement cache: each batch size is another statement, some of them
        // megabytes of bytecode, and a cache of 100 of them grew the writer by ~100 MiB under load.
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    for chunk in batch.machines.chunks(CHUNK) {
        // A fingerprint counts once a day: when the last day it was counted is before this one. Every chunk is
        // counted before any last day moves, so a machine seen on two days of one batch counts on both.
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH seen (license_id, fingerprint, day) AS (");
        q.push_values(chunk, |mut row, m| {
            row.push_bind(m.license_id.to_string())
                .push_bind(m.fingerprint.clone())
                .push_bind(i64::from(m.day.to_julian_day()));
        });
        q.push(
            ") INSERT INTO license_usage (license_id, day, machines) \
             SELECT seen.license_id, seen.day, COUNT(*) FROM seen LEFT JOIN machine_usage_days d \
             ON d.license_id = seen.license_id AND d.fingerprint = seen.fingerprint \
             WHERE d.last_day IS NULL OR d.last_day < seen.day \
             GROUP BY seen.license_id, seen.day \
             ON CONFLICT (license_id, day) DO UPDATE SET machines = machines + excluded.machines",
        );
        // Not kept in the connection's statement cache: each batch size is another statement, some of them
        // megabytes of bytecode, and a cache of 100 of them grew the writer by ~100 MiB under load.
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    let last_days: Vec<_> = last_days(batch).into_iter().collect();
    for chunk in last_days.chunks(CHUNK) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO machine_usage_days (license_id, fingerprint, last_day) ");
        q.push_values(chunk, |mut row, ((license_id, fingerprint), day)| {
            row.push_bind(license_id.to_string())
                .push_bind(fingerprint.to_string())
                .push_bind(i64::from(day.to_julian_day()));
        });
        q.push(" ON CONFLICT (license_id, fingerprint) DO UPDATE SET last_day = max(last_day, excluded.last_day)");
        // Not kept in the connection's statement cache: each batch size is another statement, some of them
        // megabytes of bytecode, and a cache of 100 of them grew the writer by ~100 MiB under load.
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    let machines = totals(
        batch
            .machines
            .iter()
            .map(|m| ((m.license_id, m.fingerprint.as_str()), m.validations, Some(m.last_validated_at))),
    );
    let machines: Vec<_> = machines.into_iter().collect();
    for chunk in machines.chunks(CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH given (license_id, fingerprint, n, last) AS (");
        q.push_values(chunk, |mut row, ((license_id, fingerprint), (n, last))| {
            row.push_bind(license_id.to_string())
                .push_bind(fingerprint.to_string())
                .push_bind(count_i64(*n))
                .push_bind(last.map(secs));
        });
        q.push(
            ") UPDATE machines SET validation_count = validation_count + given.n, \
             last_validated_at = coalesce(max(machines.last_validated_at, given.last), given.last, \
             machines.last_validated_at) FROM given WHERE machines.license_id = given.license_id AND machines.fingerprint = given.fingerprint",
        );
        // Not kept in the connection's statement cache: each batch size is another statement, some of them
        // megabytes of bytecode, and a cache of 100 of them grew the writer by ~100 MiB under load.
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    let licenses = totals(batch.days.iter().map(|d| (d.license_id, d.validations, d.last_validated_at)));
    let licenses: Vec<_> = licenses.into_iter().filter(|(_, (n, _))| *n > 0).collect();
    for chunk in licenses.chunks(CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH given (id, n, last) AS (");
        q.push_values(chunk, |mut row, (id, (n, last))| {
            row.push_bind(id.to_string()).push_bind(count_i64(*n)).push_bind(last.map(secs));
        });
        q.push(
            ") UPDATE licenses SET validation_count = validation_count + given.n, \
             last_validated_at = coalesce(max(licenses.last_validated_at, given.last), given.last, \
             licenses.last_validated_at) FROM given WHERE licenses.id = given.id",
        );
        // Not kept in the connection's statement cache: each batch size is another statement, some of them
        // megabytes of bytecode, and a cache of 100 of them grew the writer by ~100 MiB under load.
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The license's stored days from `from` to `to` (both included), oldest first; days without usage have no row.
pub(super) async fn daily<'e, E>(db: E, license_id: Uuid, from: Date, to: Date) -> Result<Vec<DailyUsage>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query(
        "SELECT day, validations, activations, machines FROM license_usage \
         WHERE license_id = ?1 AND day BETWEEN ?2 AND ?3 ORDER BY day",
    )
    .bind(license_id.to_string())
    .bind(i64::from(from.to_julian_day()))
    .bind(i64::from(to.to_julian_day()))
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|row| {
            let corrupt = |what: &str| StoreError::Corrupt(format!("license usage {what}"));
            let count = |c: &str| -> Result<u64, StoreError> {
                u64::try_from(row.try_get::<i64, _>(c)?).map_err(|_| corrupt(c))
            };
            let day: i64 = row.try_get("day")?;
            let day =
                i32::try_from(day).ok().and_then(|d| Date::from_julian_day(d).ok()).ok_or_else(|| corrupt("day"))?;
            Ok(DailyUsage {
                day,
                validations: count("validations")?,
                activations: count("activations")?,
                machines: count("machines")?,
            })
        })
        .collect()
}

/// Deletes at most `limit` of the daily rows before `before`, oldest first, and as many fingerprints last counted
/// before it; how many rows.
pub(super) async fn prune(conn: &mut SqliteConnection, before: Date, limit: u32) -> Result<u64, StoreError> {
    let mut total = 0;
    for sql in [
        "DELETE FROM license_usage WHERE (license_id, day) IN \
         (SELECT license_id, day FROM license_usage WHERE day < ?1 ORDER BY day LIMIT ?2)",
        "DELETE FROM machine_usage_days WHERE (license_id, fingerprint) IN \
         (SELECT license_id, fingerprint FROM machine_usage_days WHERE last_day < ?1 ORDER BY last_day LIMIT ?2)",
    ] {
        let done =
            sqlx::query(sql).bind(i64::from(before.to_julian_day())).bind(i64::from(limit)).execute(&mut *conn).await?;
        total += done.rows_affected();
    }
    Ok(total)
}
