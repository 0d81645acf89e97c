//! The PostgreSQL backend, for several issuer instances on one database.
//!
//! Every multi-statement operation runs in a transaction at PostgreSQL's default isolation, READ COMMITTED, and is
//! made race-free by a lock rather than by a stricter isolation level (no serialization failures to retry):
//!
//! - **Slot limit.** [`Store::activate_machine`] first locks the license row (`SELECT ... FOR NO KEY UPDATE`), then
//!   counts the machines and inserts. Every activation of a license, from any instance, queues on that row lock, and
//!   under READ COMMITTED each statement after the lock takes a fresh snapshot, so the count sees every machine the
//!   previous lock holder committed. (`FOR NO KEY UPDATE` conflicts with itself and with updates of the row, but not
//!   with the `FOR KEY SHARE` locks foreign-key checks take, so inserting events is never blocked by an activation.)
//!   A plain `INSERT ... SELECT ... WHERE (SELECT COUNT(*) ...) < max` would not do: two transactions can both count
//!   before either commits.
//! - **Idempotent create.** The license and its idempotency key are inserted in one transaction; the key's primary
//!   key with `ON CONFLICT DO NOTHING` makes a concurrent second insert wait for the first transaction and then find
//!   the key taken, so it rolls back and replays the first license.
//! - **Offline deactivation.** `DELETE ... RETURNING` takes the machine row's lock: of two concurrent redemptions of
//!   one code, the second waits, finds the row gone, and then sees the first one's redemption record.
//! - **Event order.** Appending an event takes a per-license advisory transaction lock before the identity value is
//!   drawn, so one license's events commit in id order and paging with `after` never skips an event that commits
//!   late.
//!
//! Migrations (`migrations/postgres/*.sql`) are applied at start-up, each in a transaction holding an advisory lock,
//! so instances starting together apply each migration once. Statements are prepared and cached per connection
//! (sqlx's default).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor as _, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    event_kind_from_str, Activated, Created, Event, Idempotency, License, LicenseFilter, LicensePage, LicenseStatus,
    LicenseUpdate, Machine, NewEvent, Redeemed, Store, StoreError,
};

/// Migrations in order: (version, SQL). Applied at start-up; `schema_version` records those applied.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/postgres/0001_init.sql"))];

/// Advisory lock key held while migrating (the bytes of "issuer" and a 1).
const MIGRATION_LOCK: i64 = 0x6973_7375_6572_0001;

/// Class (first key) of the per-license advisory locks taken when appending events.
const EVENT_LOCK_CLASS: i32 = 0x6973_0002;

/// Default connections per instance when the configuration gives none.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// How long a request waits for a free pooled connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to a `postgres://` or `postgresql://` URL with a pool of at most `pool_size` connections, and applies
    /// pending migrations.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        if !is_postgres_url(url) {
            return Err(StoreError::UnsupportedUrl("a PostgreSQL URL starts with postgres:// or postgresql://".into()));
        }
        let mut options = PgConnectOptions::from_str(url)?;
        if !url.contains("application_name=") {
            // Shows the issuer's connections as such in pg_stat_activity.
            options = options.application_name("issuer");
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(PostgresStore { pool })
    }

    /// Closes every pooled connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn count(&self, license_id: Uuid) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = $1")
            .bind(license_id)
            .fetch_one(&self.pool)
            .await?;
        count_from(n)
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    for &(version, sql) in MIGRATIONS {
        if apply(pool, version, sql).await.map_err(|source| StoreError::Migration { version, source })? {
            tracing::info!(version, "applied database migration");
        }
    }
    let newest: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetch_one(pool).await?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if newest > known {
        tracing::warn!(newest, known, "the database schema is newer than this issuer version; upgrade this instance");
    }
    Ok(())
}

/// Applies one migration unless it is recorded as applied; `true` when it was applied now.
async fn apply(pool: &PgPool, version: i64, sql: &'static str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Released at commit or rollback; another instance starting now waits here, then finds this version applied.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    // A query string without arguments runs as a simple query, which may hold several statements. (Not
    // `sqlx::raw_sql(..).execute(..)`: its future is not provably `Send`, launchbadge/sqlx#3150.)
    (&mut *tx)
        .execute(
            "CREATE TABLE IF NOT EXISTS schema_version \
             (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM schema_version WHERE version = $1)")
        .bind(version)
        .fetch_one(&mut *tx)
        .await?;
    if !applied {
        (&mut *tx).execute(sql).await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)").bind(version).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(!applied)
}

/// Whole seconds, as SQLite stores them, so both backends read back equal values.
fn secs(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn count_from(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt("machine count out of range".into()))
}

fn license_from_row(row: &PgRow) -> Result<License, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("license {what}"));
    let status: String = row.try_get("status")?;
    let entitlements: serde_json::Value = row.try_get("entitlements")?;
    let metadata: serde_json::Value = row.try_get("metadata")?;
    let max_machines: i64 = row.try_get("max_machines")?;
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
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
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

fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Event {
        id: row.try_get("id")?,
        event: NewEvent {
            license_id: row.try_get("license_id")?,
            kind: event_kind_from_str(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind `{kind}`")))?,
            at: row.try_get("at")?,
            fingerprint: row.try_get("fingerprint")?,
            client_ip: row.try_get("client_ip")?,
            detail: row.try_get("detail")?,
        },
    })
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_license(
        &self,
        license: &License,
        idempotency: Option<&Idempotency>,
    ) -> Result<Created, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO licenses (id, license_key, email, product, max_machines, expires_at, entitlements, metadata, \
             status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Duplicate),
            other => other?,
        };
        if let Some(idem) = idempotency {
            // A concurrent transaction inserting the same key makes this one wait for its outcome.
            let fresh = sqlx::query(
                "INSERT INTO idempotency_keys (idempotency_key, request_hash, license_id, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(license.id)
            .bind(secs(license.created_at))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !fresh {
                tx.rollback().await?;
                let row =
                    sqlx::query("SELECT request_hash, license_id FROM idempotency_keys WHERE idempotency_key = $1")
                        .bind(&idem.key)
                        .fetch_one(&self.pool)
                        .await?;
                let hash: String = row.try_get("request_hash")?;
                if hash != idem.request_hash {
                    return Err(StoreError::IdempotencyConflict);
                }
                let found = self.license_by_id(row.try_get("license_id")?).await?;
                return found
                    .map(Created::Replayed)
                    .ok_or_else(|| StoreError::Corrupt("idempotency key names a missing license".into()));
            }
        }
        tx.commit().await?;
        Ok(Created::New(license.clone()))
    }

    async fn license_by_id(&self, id: Uuid) -> Result<Option<License>, StoreError> {
        let row = sqlx::query("SELECT * FROM licenses WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(license_from_row).transpose()
    }

    async fn license_by_key(&self, key: &str) -> Result<Option<License>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM licenses WHERE license_key = $1").bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(license_from_row).transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn license_for_machine(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<(License, u32, bool)>, StoreError> {
        // One round trip instead of three: validation is the hottest read.
        let row = sqlx::query(
            "SELECT l.*, (SELECT COUNT(*) FROM machines m WHERE m.license_id = l.id) AS machines_used, \
             EXISTS (SELECT 1 FROM machines m WHERE m.license_id = l.id AND m.fingerprint = $2) AS machine_active \
             FROM licenses l WHERE l.license_key = $1",
        )
        .bind(key)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let used = count_from(row.try_get("machines_used")?)?;
        Ok(Some((license_from_row(&row)?, used, row.try_get("machine_active")?)))
    }

    async fn list_licenses(&self, filter: &LicenseFilter) -> Result<LicensePage, StoreError> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM licenses WHERE true");
        if let Some(email) = &filter.email {
            q.push(" AND lower(email) = lower(").push_bind(email.clone()).push(")");
        }
        if let Some(product) = &filter.product {
            q.push(" AND product = ").push_bind(product.clone());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(after) = filter.after {
            q.push(" AND (created_at, id) > (").push_bind(secs(after.created_at));
            q.push(", ").push_bind(after.id).push(")");
        }
        // One extra row tells whether another page follows.
        q.push(" ORDER BY created_at, id LIMIT ").push_bind(i64::from(filter.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let licenses = rows.iter().map(license_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(LicensePage::from_overfetched(licenses, filter.limit))
    }

    async fn update_license(
        &self,
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
            q.push(", expires_at = ").push_bind(expires.map(secs));
        }
        if let Some(e) = &update.entitlements {
            q.push(", entitlements = ").push_bind(json(e)?);
        }
        if let Some(m) = &update.metadata {
            q.push(", metadata = ").push_bind(json(m)?);
        }
        q.push(" WHERE id = ").push_bind(id).push(" RETURNING *");
        let row = q.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(license_from_row).transpose()
    }

    async fn set_status(
        &self,
        id: Uuid,
        status: LicenseStatus,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError> {
        let row = sqlx::query("UPDATE licenses SET status = $1, updated_at = $2 WHERE id = $3 RETURNING *")
            .bind(status.as_str())
            .bind(secs(at))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(license_from_row).transpose()
    }

    async fn activate_machine(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Activated, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Every activation of this license, from every instance, waits here for the previous one to commit.
        let max: Option<i64> = sqlx::query_scalar("SELECT max_machines FROM licenses WHERE id = $1 FOR NO KEY UPDATE")
            .bind(license_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(max) = max else {
            tx.rollback().await?;
            return Ok(Activated::NoLicense);
        };
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
        .fetch_optional(&mut *tx)
        .await?;
        let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = $1")
            .bind(license_id)
            .fetch_one(&mut *tx)
            .await?;
        let outcome = match existing {
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
                .fetch_one(&mut *tx)
                .await?;
                Activated::New { machine: machine_from_row(&row)?, machines_used: count_from(used + 1)? }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn touch_machine(&self, license_id: Uuid, fingerprint: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE machines SET last_seen_at = $1 WHERE license_id = $2 AND fingerprint = $3")
            .bind(secs(at))
            .bind(license_id)
            .bind(fingerprint)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn set_offline_proof(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        proof: &[u8; 16],
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE machines SET offline_proof = $1 WHERE license_id = $2 AND fingerprint = $3")
            .bind(&proof[..])
            .bind(license_id)
            .bind(fingerprint)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn redeem_deactivation(
        &self,
        license_id: Uuid,
        proof: &[u8; 16],
        at: OffsetDateTime,
    ) -> Result<Redeemed, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A concurrent redemption of the same code waits on the machine row's lock, then finds it gone.
        let freed: Option<String> = sqlx::query_scalar(
            "DELETE FROM machines WHERE license_id = $1 AND offline_proof = $2 RETURNING fingerprint",
        )
        .bind(license_id)
        .bind(&proof[..])
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match freed {
            Some(fingerprint) => {
                sqlx::query(
                    "INSERT INTO redeemed_deactivations (proof, license_id, fingerprint, redeemed_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&proof[..])
                .bind(license_id)
                .bind(&fingerprint)
                .bind(secs(at))
                .execute(&mut *tx)
                .await?;
                let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = $1")
                    .bind(license_id)
                    .fetch_one(&mut *tx)
                    .await?;
                Redeemed::Freed { fingerprint, machines_used: count_from(used)? }
            }
            None => {
                let row = sqlx::query(
                    "SELECT fingerprint, redeemed_at FROM redeemed_deactivations WHERE proof = $1 AND license_id = $2",
                )
                .bind(&proof[..])
                .bind(license_id)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some(row) => Redeemed::AlreadyRedeemed {
                        fingerprint: row.try_get("fingerprint")?,
                        redeemed_at: row.try_get("redeemed_at")?,
                    },
                    None => Redeemed::NoMatch,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn remove_machine(&self, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM machines WHERE license_id = $1 AND fingerprint = $2")
            .bind(license_id)
            .bind(fingerprint)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn machine(&self, license_id: Uuid, fingerprint: &str) -> Result<Option<Machine>, StoreError> {
        let row = sqlx::query("SELECT * FROM machines WHERE license_id = $1 AND fingerprint = $2")
            .bind(license_id)
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(machine_from_row).transpose()
    }

    async fn count_machines(&self, license_id: Uuid) -> Result<u32, StoreError> {
        self.count(license_id).await
    }

    async fn list_machines(&self, license_id: Uuid) -> Result<Vec<Machine>, StoreError> {
        let rows = sqlx::query("SELECT * FROM machines WHERE license_id = $1 ORDER BY activated_at, fingerprint")
            .bind(license_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(machine_from_row).collect()
    }

    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        // Draw the id only after the license's previous event committed, so ids commit in order per license: the
        // CTE takes the per-license advisory lock before the row (and its id) is made, and the statement's own
        // transaction holds it until commit. One round trip instead of four (BEGIN, lock, INSERT, COMMIT).
        sqlx::query(
            "WITH locked AS (SELECT pg_advisory_xact_lock($7, hashtext($1::text))) \
             INSERT INTO events (license_id, kind, at, fingerprint, client_ip, detail) \
             SELECT $1, $2, $3, $4, $5, $6 FROM locked",
        )
        .bind(event.license_id)
        .bind(event.kind.as_str())
        .bind(secs(event.at))
        .bind(&event.fingerprint)
        .bind(&event.client_ip)
        .bind(&event.detail)
        .bind(EVENT_LOCK_CLASS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_events(&self, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query("SELECT * FROM events WHERE license_id = $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(license_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn add_admin_token(&self, hash: &[u8; 32], label: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO admin_tokens (token_hash, label, created_at) VALUES ($1, $2, $3)")
            .bind(&hash[..])
            .bind(label)
            .bind(secs(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn admin_token_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let hashes: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT token_hash FROM admin_tokens ORDER BY created_at").fetch_all(&self.pool).await?;
        hashes
            .into_iter()
            .map(|h| <[u8; 32]>::try_from(h).map_err(|_| StoreError::Corrupt("admin token hash".into())))
            .collect()
    }
}
