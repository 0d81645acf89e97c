//! Network rules and per-license IP counters in SQLite, and the presence read of domain-bound validation.

use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{secs, time_from, uuid_from};
use crate::store::{BestPresence, IpRule, IpScope, IpUsage, Presence, StoreError};

pub(super) async fn insert_rule(conn: &mut SqliteConnection, rule: &IpRule) -> Result<(), StoreError> {
    let (license, policy) = scope_columns(&rule.scope);
    sqlx::query(
        "INSERT INTO ip_rules (id, cidr, action, license_id, policy, note, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(rule.id.to_string())
    .bind(rule.cidr.to_string())
    .bind(rule.action.as_str())
    .bind(license)
    .bind(policy)
    .bind(&rule.note)
    .bind(secs(rule.created_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn delete_rule(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<IpRule>, StoreError> {
    let row =
        sqlx::query("DELETE FROM ip_rules WHERE id = ?1 RETURNING *").bind(id.to_string()).fetch_optional(conn).await?;
    row.as_ref().map(rule_from_row).transpose()
}

pub(super) async fn delete_policy_rules(conn: &mut SqliteConnection, policy: &str) -> Result<Vec<IpRule>, StoreError> {
    let rows = sqlx::query("DELETE FROM ip_rules WHERE policy = ?1 RETURNING *").bind(policy).fetch_all(conn).await?;
    let mut rules = rows.iter().map(rule_from_row).collect::<Result<Vec<_>, _>>()?;
    rules.sort_by_key(|r| r.id);
    Ok(rules)
}

pub(super) async fn rules<'e, E>(db: E) -> Result<Vec<IpRule>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query("SELECT * FROM ip_rules ORDER BY id").fetch_all(db).await?;
    rows.iter().map(rule_from_row).collect()
}

pub(super) async fn version<'e, E>(db: E) -> Result<i64, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    Ok(sqlx::query_scalar("SELECT version FROM ip_rules_version WHERE id = 1").fetch_one(db).await?)
}

/// Adds the counters of `usage` to the stored ones, one statement for the whole batch.
pub(super) async fn record_usage(conn: &mut SqliteConnection, usage: &[IpUsage]) -> Result<(), StoreError> {
    // 6 parameters a row, under SQLite's 32,766.
    for chunk in usage.chunks(5000) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO license_ips (license_id, ip, first_seen, last_seen, requests, blocked) ");
        q.push_values(chunk, |mut row, u| {
            row.push_bind(u.license_id.to_string())
                .push_bind(u.ip.to_string())
                .push_bind(secs(u.first_seen))
                .push_bind(secs(u.last_seen))
                .push_bind(i64::try_from(u.requests).unwrap_or(i64::MAX))
                .push_bind(i64::try_from(u.blocked).unwrap_or(i64::MAX));
        });
        q.push(
            " ON CONFLICT (license_id, ip) DO UPDATE SET first_seen = min(first_seen, excluded.first_seen), \
             last_seen = max(last_seen, excluded.last_seen), requests = requests + excluded.requests, \
             blocked = blocked + excluded.blocked",
        );
        // Not kept in the connection's statement cache: each batch size is another statement, some of them
        // megabytes of bytecode, and a cache of 100 of them grew the writer by ~100 MiB under load.
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

pub(super) async fn usage<'e, E>(db: E, license_id: Uuid) -> Result<Vec<IpUsage>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query("SELECT * FROM license_ips WHERE license_id = ?1 ORDER BY last_seen DESC, ip")
        .bind(license_id.to_string())
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| {
            let corrupt = |what: &str| StoreError::Corrupt(format!("license ip {what}"));
            let ip: String = row.try_get("ip")?;
            let count = |c: &str| -> Result<u64, StoreError> {
                u64::try_from(row.try_get::<i64, _>(c)?).map_err(|_| corrupt(c))
            };
            Ok(IpUsage {
                license_id,
                ip: ip.parse().map_err(|_| corrupt("address"))?,
                first_seen: time_from(row.try_get("first_seen")?)?,
                last_seen: time_from(row.try_get("last_seen")?)?,
                requests: count("requests")?,
                blocked: count("blocked")?,
            })
        })
        .collect()
}

/// The best presence of any of `fingerprints` on the license: active, else one whose lease ended (still there, or
/// culled), else absent; and the first of them that is active.
pub(super) async fn presence<'e, E>(
    db: E,
    license_id: Uuid,
    fingerprints: &[String],
    now: OffsetDateTime,
) -> Result<BestPresence, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    if fingerprints.is_empty() {
        return Ok(BestPresence { presence: Presence::Absent, active: None });
    }
    let id = license_id.to_string();
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT (SELECT fingerprint FROM machines WHERE license_id = ");
    q.push_bind(id.clone());
    push_in(&mut q, fingerprints);
    q.push(" AND (lease_expires_at IS NULL OR lease_expires_at > ")
        .push_bind(secs(now))
        .push(") ORDER BY CASE fingerprint");
    for (i, f) in fingerprints.iter().enumerate() {
        q.push(" WHEN ").push_bind(f.clone()).push(" THEN ").push(i.to_string());
    }
    q.push(" END LIMIT 1) AS active, EXISTS (SELECT 1 FROM machines WHERE license_id = ").push_bind(id.clone());
    push_in(&mut q, fingerprints);
    q.push(") AS stored, EXISTS (SELECT 1 FROM culled_machines WHERE license_id = ").push_bind(id);
    push_in(&mut q, fingerprints);
    q.push(") AS culled");
    let row = q.build().fetch_one(db).await?;
    let active: Option<String> = row.try_get("active")?;
    let presence = match active {
        Some(_) => Presence::Active,
        // Stored but none active: their leases ended.
        None if row.try_get::<bool, _>("stored")? || row.try_get::<bool, _>("culled")? => Presence::LeaseExpired,
        None => Presence::Absent,
    };
    Ok(BestPresence { presence, active })
}

/// ` AND fingerprint IN (...)` with every fingerprint bound.
fn push_in(q: &mut QueryBuilder<'_, Sqlite>, fingerprints: &[String]) {
    q.push(" AND fingerprint IN (");
    let mut list = q.separated(", ");
    for f in fingerprints {
        list.push_bind(f.clone());
    }
    q.push(")");
}

fn scope_columns(scope: &IpScope) -> (Option<String>, Option<&str>) {
    match scope {
        IpScope::Global => (None, None),
        IpScope::Policy(name) => (None, Some(name.as_str())),
        IpScope::License(id) => (Some(id.to_string()), None),
    }
}

fn rule_from_row(row: &SqliteRow) -> Result<IpRule, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("ip rule {what}"));
    let id: String = row.try_get("id")?;
    let cidr: String = row.try_get("cidr")?;
    let action: String = row.try_get("action")?;
    let license: Option<String> = row.try_get("license_id")?;
    let policy: Option<String> = row.try_get("policy")?;
    let scope = match (license, policy) {
        (Some(id), _) => IpScope::License(uuid_from(&id)?),
        (None, Some(name)) => IpScope::Policy(name),
        (None, None) => IpScope::Global,
    };
    Ok(IpRule {
        id: uuid_from(&id)?,
        cidr: cidr.parse().map_err(|_| corrupt("cidr"))?,
        action: action.parse().map_err(|_| corrupt("action"))?,
        scope,
        note: row.try_get("note")?,
        created_at: time_from(row.try_get("created_at")?)?,
    })
}
