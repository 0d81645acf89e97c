//! Network rules and per-license IP counters in PostgreSQL, and the presence read of domain-bound validation.

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::secs;
use crate::store::{BestPresence, IpRule, IpScope, IpUsage, Presence, StoreError};

pub(super) async fn insert_rule(conn: &mut PgConnection, rule: &IpRule) -> Result<(), StoreError> {
    let (license, policy) = scope_columns(&rule.scope);
    sqlx::query(
        "INSERT INTO ip_rules (id, cidr, action, license_id, policy, note, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(rule.id)
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

pub(super) async fn delete_rule(conn: &mut PgConnection, id: Uuid) -> Result<Option<IpRule>, StoreError> {
    let row = sqlx::query("DELETE FROM ip_rules WHERE id = $1 RETURNING *").bind(id).fetch_optional(conn).await?;
    row.as_ref().map(rule_from_row).transpose()
}

pub(super) async fn delete_policy_rules(conn: &mut PgConnection, policy: &str) -> Result<Vec<IpRule>, StoreError> {
    let rows = sqlx::query("DELETE FROM ip_rules WHERE policy = $1 RETURNING *").bind(policy).fetch_all(conn).await?;
    let mut rules = rows.iter().map(rule_from_row).collect::<Result<Vec<_>, _>>()?;
    rules.sort_by_key(|r| r.id);
    Ok(rules)
}

pub(super) async fn rules<'e, E>(db: E) -> Result<Vec<IpRule>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query("SELECT * FROM ip_rules ORDER BY id").fetch_all(db).await?;
    rows.iter().map(rule_from_row).collect()
}

pub(super) async fn version<'e, E>(db: E) -> Result<i64, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    Ok(sqlx::query_scalar("SELECT version FROM ip_rules_version WHERE id = 1").fetch_one(db).await?)
}

/// Adds the counters of `usage` to the stored ones, one statement for the whole batch. Rows are sorted by key first,
/// so two instances flushing at once lock them in the same order (no deadlock).
pub(super) async fn record_usage(conn: &mut PgConnection, usage: &[IpUsage]) -> Result<(), StoreError> {
    if usage.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&IpUsage> = usage.iter().collect();
    sorted.sort_by_key(|u| (u.license_id, u.ip.to_string()));
    let ids: Vec<Uuid> = sorted.iter().map(|u| u.license_id).collect();
    let ips: Vec<String> = sorted.iter().map(|u| u.ip.to_string()).collect();
    let first: Vec<OffsetDateTime> = sorted.iter().map(|u| secs(u.first_seen)).collect();
    let last: Vec<OffsetDateTime> = sorted.iter().map(|u| secs(u.last_seen)).collect();
    let requests: Vec<i64> = sorted.iter().map(|u| i64::try_from(u.requests).unwrap_or(i64::MAX)).collect();
    let blocked: Vec<i64> = sorted.iter().map(|u| i64::try_from(u.blocked).unwrap_or(i64::MAX)).collect();
    sqlx::query(
        "INSERT INTO license_ips (license_id, ip, first_seen, last_seen, requests, blocked) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[], $6::bigint[]) \
         ON CONFLICT (license_id, ip) DO UPDATE SET \
         first_seen = LEAST(license_ips.first_seen, excluded.first_seen), \
         last_seen = GREATEST(license_ips.last_seen, excluded.last_seen), \
         requests = license_ips.requests + excluded.requests, blocked = license_ips.blocked + excluded.blocked",
    )
    .bind(ids)
    .bind(ips)
    .bind(first)
    .bind(last)
    .bind(requests)
    .bind(blocked)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn usage<'e, E>(db: E, license_id: Uuid) -> Result<Vec<IpUsage>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query("SELECT * FROM license_ips WHERE license_id = $1 ORDER BY last_seen DESC, ip")
        .bind(license_id)
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
                first_seen: row.try_get("first_seen")?,
                last_seen: row.try_get("last_seen")?,
                requests: count("requests")?,
                blocked: count("blocked")?,
            })
        })
        .collect()
}

/// The best presence of any of `fingerprints` on the license: active, else one whose lease ended (still there, or
/// culled), else absent.
pub(super) async fn presence<'e, E>(
    db: E,
    license_id: Uuid,
    fingerprints: &[String],
    now: OffsetDateTime,
) -> Result<BestPresence, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let row = sqlx::query(
        "SELECT (SELECT fingerprint FROM machines WHERE license_id = $1 AND fingerprint = ANY($2) \
         AND (lease_expires_at IS NULL OR lease_expires_at > $3) ORDER BY array_position($2, fingerprint) LIMIT 1) \
         AS active, \
         EXISTS (SELECT 1 FROM machines WHERE license_id = $1 AND fingerprint = ANY($2)) AS stored, \
         EXISTS (SELECT 1 FROM culled_machines WHERE license_id = $1 AND fingerprint = ANY($2)) AS culled",
    )
    .bind(license_id)
    .bind(fingerprints)
    .bind(secs(now))
    .fetch_one(db)
    .await?;
    let active: Option<String> = row.try_get("active")?;
    let presence = match active {
        Some(_) => Presence::Active,
        // Stored but none active: their leases ended.
        None if row.try_get::<bool, _>("stored")? || row.try_get::<bool, _>("culled")? => Presence::LeaseExpired,
        None => Presence::Absent,
    };
    Ok(BestPresence { presence, active })
}

fn scope_columns(scope: &IpScope) -> (Option<Uuid>, Option<&str>) {
    match scope {
        IpScope::Global => (None, None),
        IpScope::Policy(name) => (None, Some(name.as_str())),
        IpScope::License(id) => (Some(*id), None),
    }
}

fn rule_from_row(row: &PgRow) -> Result<IpRule, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("ip rule {what}"));
    let cidr: String = row.try_get("cidr")?;
    let action: String = row.try_get("action")?;
    let license: Option<Uuid> = row.try_get("license_id")?;
    let policy: Option<String> = row.try_get("policy")?;
    let scope = match (license, policy) {
        (Some(id), _) => IpScope::License(id),
        (None, Some(name)) => IpScope::Policy(name),
        (None, None) => IpScope::Global,
    };
    Ok(IpRule {
        id: row.try_get("id")?,
        cidr: cidr.parse().map_err(|_| corrupt("cidr"))?,
        action: action.parse().map_err(|_| corrupt("action"))?,
        scope,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
    })
}
