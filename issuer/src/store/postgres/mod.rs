//! The PostgreSQL backend, for several issuer instances on one database.
//!
//! A unit of work ([`Store::run`]) is one transaction at PostgreSQL's default isolation, READ COMMITTED, made
//! race-free by locks rather than by a stricter isolation level (no serialization failures to retry):
//!
//! - **The license lock.** [`Tx::license`] reads the license `FOR NO KEY UPDATE`: every unit that reads a license,
//!   from any instance, waits for the previous one to commit, and under READ COMMITTED each statement after the lock
//!   takes a fresh snapshot, so it sees what the previous holder committed. A status change decided on what the unit
//!   read is then written as compare-and-set (`WHERE status = <read>`), and a trigger refuses any change away from
//!   revoked (migration 0002), so a revocation cannot be undone by a race or by another writer.
//! - **Slot limit.** Activation locks the license row, then counts and inserts (see `machines`).
//! - **Idempotent create.** The license and its idempotency key are inserted in a savepoint (see `licenses`).
//! - **Offline deactivation.** `DELETE ... RETURNING` takes the machine row's lock (see `machines`).
//! - **Leases.** A unit culls its license's dead machines under the license lock; the sweep locks the licenses it
//!   culls on `SKIP LOCKED`, so it never touches a license a unit (or another sweep) holds (see `machines`).
//! - **Event order.** Appending an event takes a per-license advisory transaction lock before the identity value is
//!   drawn, so one license's events commit in id order, and its webhook deliveries are queued in the same statement
//!   (see `events`).
//! - **Webhook deliveries.** Instances claim due deliveries `FOR UPDATE OF d SKIP LOCKED` and move their next attempt
//!   past the attempt's timeout in the same statement, so each is attempted by one instance (see `webhooks`).
//!
//! Migrations (`migrations/postgres/*.sql`) are applied at start-up, each in a transaction holding an advisory lock,
//! so instances starting together apply each migration once. Statements are prepared and cached per connection
//! (sqlx's default).
//!
//! Layout: this file (connection, migrations, the unit of work), then one file per domain: `licenses`, `machines`,
//! `policies`, `events` (with admin tokens), `webhooks`, `keys`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Executor as _, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Activated, AdminToken, Attempt, BestPresence, Claimed, Created, Culled, DailyUsage, Delivery, Event, EventFilter,
    Idempotency, IpRule, IpUsage, License, LicenseFilter, LicensePage, LicenseStatus, LicenseUpdate, Lookup, Machine,
    MachineCheck, NewEvent, NewMachine, Policy, PolicyDeleted, PolicyLock, RecordKeys, RecordedKey, Redeemed, Store,
    StoreError, Touched, Tx, UsageBatch, WebhookEndpoint, Work,
};

mod events;
mod keys;
mod licenses;
mod machines;
mod network;
mod policies;
mod usage;
mod webhooks;

/// Migrations in order: (version, SQL). Applied at start-up; `schema_version` records those applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../../migrations/postgres/0002_revoked_is_final.sql")),
    (3, include_str!("../../../migrations/postgres/0003_signing_keys.sql")),
    (4, include_str!("../../../migrations/postgres/0004_policies.sql")),
    (5, include_str!("../../../migrations/postgres/0005_webhooks.sql")),
    (6, include_str!("../../../migrations/postgres/0006_network.sql")),
    (7, include_str!("../../../migrations/postgres/0007_event_retention.sql")),
    (8, include_str!("../../../migrations/postgres/0008_usage.sql")),
];

/// The schema version this build's migrations bring a PostgreSQL store to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Advisory lock key held while migrating (the bytes of "issuer" and a 1).
const MIGRATION_LOCK: i64 = 0x6973_7375_6572_0001;

/// Default connections per instance when the configuration gives none.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// How long the first connection at start may take before the database is called unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
        // NOTICEs (such as "relation schema_version already exists, skipping" when instances start together) would
        // reach the log at INFO; warnings and errors still do.
        options = options.options([("client_min_messages", "warning")]);
        // One connection first, to say why the database cannot be reached: the pool retries until its acquire
        // timeout and then says only "pool timed out".
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(StoreError::Database(e)),
            Err(_) => return Err(StoreError::ConnectTimeout(CONNECT_TIMEOUT)),
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

/// Whole milliseconds, as SQLite stores the webhook outbox's times.
fn millis(t: OffsetDateTime) -> OffsetDateTime {
    let ms = t.nanosecond() / 1_000_000 * 1_000_000;
    t.replace_nanosecond(ms).unwrap_or(t)
}

fn count_from(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt("machine count out of range".into()))
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A unit of work's view of its transaction.
struct PgTx<'c> {
    conn: &'c mut PgConnection,
}

#[async_trait]
impl Tx for PgTx<'_> {
    async fn license(&mut self, which: Lookup<'_>) -> Result<Option<License>, StoreError> {
        licenses::find(&mut *self.conn, which, true).await
    }

    async fn insert_license(
        &mut self,
        license: &License,
        idempotency: Option<&Idempotency>,
    ) -> Result<Created, StoreError> {
        licenses::insert(self.conn, license, idempotency).await
    }

    async fn update_license(
        &mut self,
        id: Uuid,
        update: &LicenseUpdate,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError> {
        licenses::update(self.conn, id, update, at).await
    }

    async fn change_status(
        &mut self,
        id: Uuid,
        from: LicenseStatus,
        to: LicenseStatus,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError> {
        licenses::change_status(self.conn, id, from, to, at).await
    }

    async fn activate_machine(
        &mut self,
        license_id: Uuid,
        machine: &NewMachine<'_>,
        overage: u32,
    ) -> Result<Activated, StoreError> {
        machines::activate(self.conn, license_id, machine, overage).await
    }

    async fn touch_machine(
        &mut self,
        license_id: Uuid,
        fingerprint: &str,
        at: OffsetDateTime,
        lease_expires_at: Option<OffsetDateTime>,
    ) -> Result<Touched, StoreError> {
        machines::touch(self.conn, license_id, fingerprint, at, lease_expires_at).await
    }

    async fn cull_machines(&mut self, license_id: Uuid, now: OffsetDateTime) -> Result<Vec<Culled>, StoreError> {
        machines::cull(self.conn, license_id, now).await
    }

    async fn cull_expired_leases(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<Culled>, StoreError> {
        machines::cull_expired(self.conn, now, limit).await
    }

    async fn record_deactivation(&mut self, license_id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
        machines::record_deactivation(self.conn, license_id, at).await
    }

    async fn prune_deactivations(&mut self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        machines::prune_deactivations(self.conn, before, limit).await
    }

    async fn deactivations_since(
        &mut self,
        license_id: Uuid,
        since: OffsetDateTime,
    ) -> Result<Vec<OffsetDateTime>, StoreError> {
        machines::deactivations_since(self.conn, license_id, since).await
    }

    async fn policy(&mut self, name: &str, lock: PolicyLock) -> Result<Option<Policy>, StoreError> {
        policies::find(&mut *self.conn, name, lock).await
    }

    async fn insert_policy(&mut self, policy: &Policy) -> Result<(), StoreError> {
        policies::insert(self.conn, policy).await
    }

    async fn update_policy(&mut self, policy: &Policy) -> Result<bool, StoreError> {
        policies::update(self.conn, policy).await
    }

    async fn delete_policy(&mut self, name: &str) -> Result<PolicyDeleted, StoreError> {
        policies::delete(self.conn, name).await
    }

    async fn remove_machine(&mut self, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError> {
        machines::remove(self.conn, license_id, fingerprint).await
    }

    async fn set_offline_proof(
        &mut self,
        license_id: Uuid,
        fingerprint: &str,
        proof: &[u8; 16],
    ) -> Result<bool, StoreError> {
        machines::set_offline_proof(self.conn, license_id, fingerprint, proof).await
    }

    async fn redeem_deactivation(
        &mut self,
        license_id: Uuid,
        proof: &[u8; 16],
        at: OffsetDateTime,
    ) -> Result<Redeemed, StoreError> {
        machines::redeem(self.conn, license_id, proof, at).await
    }

    async fn count_machines(&mut self, license_id: Uuid) -> Result<u32, StoreError> {
        machines::count(&mut *self.conn, license_id).await
    }

    async fn append_event(&mut self, event: &NewEvent) -> Result<(), StoreError> {
        events::insert(&mut *self.conn, event).await
    }

    async fn record_keys(
        &mut self,
        keys: &[RecordedKey],
        how: RecordKeys,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        keys::record(self.conn, keys, &how, at).await
    }

    async fn add_first_admin_token(&mut self, hash: &[u8; 32], token: &AdminToken) -> Result<bool, StoreError> {
        events::insert_admin_token(&mut *self.conn, hash, token, true).await
    }

    async fn insert_admin_token(&mut self, hash: &[u8; 32], token: &AdminToken) -> Result<(), StoreError> {
        events::insert_admin_token(&mut *self.conn, hash, token, false).await.map(|_| ())
    }

    async fn revoke_admin_token(&mut self, id: &str, at: OffsetDateTime) -> Result<Option<AdminToken>, StoreError> {
        events::revoke_admin_token(&mut *self.conn, id, at).await
    }

    async fn touch_admin_token(&mut self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        events::touch_admin_token(&mut *self.conn, id, at).await
    }

    async fn webhook(&mut self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
        webhooks::find(&mut *self.conn, id, true).await
    }

    async fn insert_webhook(&mut self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        webhooks::insert(&mut *self.conn, endpoint).await
    }

    async fn update_webhook(&mut self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError> {
        webhooks::update(&mut *self.conn, endpoint).await
    }

    async fn delete_webhook(&mut self, id: Uuid, at: OffsetDateTime) -> Result<bool, StoreError> {
        webhooks::delete(&mut *self.conn, id, at).await
    }

    async fn purge_deleted_webhooks(&mut self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        webhooks::purge(&mut *self.conn, before, limit).await
    }

    async fn prune_events(&mut self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        events::prune(&mut *self.conn, before, limit).await
    }

    async fn claim_deliveries(
        &mut self,
        now: OffsetDateTime,
        claim_until: OffsetDateTime,
        limit: u32,
        skip: &[Uuid],
    ) -> Result<Vec<Claimed>, StoreError> {
        webhooks::claim(&mut *self.conn, now, claim_until, limit, skip).await
    }

    async fn record_attempt(
        &mut self,
        delivery_id: i64,
        attempts: u32,
        at: OffsetDateTime,
        attempt: &Attempt,
    ) -> Result<bool, StoreError> {
        webhooks::record_attempt(&mut *self.conn, delivery_id, attempts, at, attempt).await
    }

    async fn resend_delivery(
        &mut self,
        endpoint_id: Uuid,
        delivery_id: i64,
        at: OffsetDateTime,
    ) -> Result<Option<Delivery>, StoreError> {
        webhooks::resend(&mut *self.conn, endpoint_id, delivery_id, at).await
    }

    async fn announce_expiries(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<License>, StoreError> {
        licenses::announce_expiries(&mut *self.conn, now, limit).await
    }

    async fn insert_ip_rule(&mut self, rule: &IpRule) -> Result<(), StoreError> {
        network::insert_rule(&mut *self.conn, rule).await
    }

    async fn delete_ip_rule(&mut self, id: Uuid) -> Result<Option<IpRule>, StoreError> {
        network::delete_rule(&mut *self.conn, id).await
    }

    async fn delete_policy_ip_rules(&mut self, policy: &str) -> Result<Vec<IpRule>, StoreError> {
        network::delete_policy_rules(&mut *self.conn, policy).await
    }

    async fn record_ip_usage(&mut self, usage: &[IpUsage]) -> Result<(), StoreError> {
        network::record_usage(&mut *self.conn, usage).await
    }

    async fn record_usage(&mut self, batch: &UsageBatch) -> Result<(), StoreError> {
        usage::record(&mut *self.conn, batch).await
    }

    async fn prune_usage(&mut self, before: time::Date, limit: u32) -> Result<u64, StoreError> {
        usage::prune(&mut *self.conn, before, limit).await
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let pools = vec![("main", self.pool.clone())];
        registry.register_collector(Box::new(super::metrics::PoolGauges { pools }));
    }

    async fn run(&self, work: Work) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let result = work(&mut PgTx { conn: &mut tx }).await;
        match result {
            Ok(()) => Ok(tx.commit().await?),
            Err(e) => {
                // A failed rollback leaves nothing committed either: the server rolls back when the connection ends.
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "cannot roll a unit of work back; the connection is discarded");
                }
                Err(e)
            }
        }
    }

    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        events::insert(&self.pool, event).await
    }

    async fn license_by_id(&self, id: Uuid) -> Result<Option<License>, StoreError> {
        licenses::find(&self.pool, Lookup::Id(id), false).await
    }

    async fn license_by_key(&self, key: &str) -> Result<Option<License>, StoreError> {
        licenses::find(&self.pool, Lookup::Key(key), false).await
    }

    async fn license_for_machine(
        &self,
        key: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<MachineCheck>, StoreError> {
        licenses::for_machine(&self.pool, key, fingerprint, now).await
    }

    async fn policy(&self, name: &str) -> Result<Option<Policy>, StoreError> {
        policies::find(&self.pool, name, PolicyLock::None).await
    }

    async fn list_policies(&self) -> Result<Vec<Policy>, StoreError> {
        policies::list(&self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn list_licenses(&self, filter: &LicenseFilter) -> Result<LicensePage, StoreError> {
        licenses::list(&self.pool, filter).await
    }

    async fn machine(&self, license_id: Uuid, fingerprint: &str) -> Result<Option<Machine>, StoreError> {
        machines::find(&self.pool, license_id, fingerprint).await
    }

    async fn count_machines(&self, license_id: Uuid) -> Result<u32, StoreError> {
        machines::count(&self.pool, license_id).await
    }

    async fn list_machines(&self, license_id: Uuid) -> Result<Vec<Machine>, StoreError> {
        machines::list(&self.pool, license_id).await
    }

    async fn list_events(&self, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        events::list(&self.pool, license_id, after, limit).await
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        events::filtered(&self.pool, filter).await
    }

    async fn admin_token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<AdminToken>, StoreError> {
        events::admin_token_by_hash(&self.pool, hash).await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        events::list_admin_tokens(&self.pool).await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        webhooks::list(&self.pool).await
    }

    async fn webhook(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
        webhooks::find(&self.pool, id, false).await
    }

    async fn list_deliveries(&self, endpoint_id: Uuid, after: i64, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        webhooks::list_deliveries(&self.pool, endpoint_id, after, limit).await
    }

    async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        webhooks::pending(&self.pool).await
    }

    async fn has_due_deliveries(&self, now: OffsetDateTime) -> Result<bool, StoreError> {
        webhooks::has_due(&self.pool, now).await
    }

    async fn ip_rules(&self) -> Result<Vec<IpRule>, StoreError> {
        network::rules(&self.pool).await
    }

    async fn ip_rules_version(&self) -> Result<i64, StoreError> {
        network::version(&self.pool).await
    }

    async fn license_ips(&self, license_id: Uuid) -> Result<Vec<IpUsage>, StoreError> {
        network::usage(&self.pool, license_id).await
    }

    async fn license_usage(
        &self,
        license_id: Uuid,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<DailyUsage>, StoreError> {
        usage::daily(&self.pool, license_id, from, to).await
    }

    async fn machine_presence(
        &self,
        license_id: Uuid,
        fingerprints: &[String],
        now: OffsetDateTime,
    ) -> Result<BestPresence, StoreError> {
        network::presence(&self.pool, license_id, fingerprints, now).await
    }

    async fn recorded_keys(&self) -> Result<Vec<RecordedKey>, StoreError> {
        keys::list(&self.pool).await
    }

    async fn revoked_licenses(&self) -> Result<Vec<Uuid>, StoreError> {
        licenses::revoked(&self.pool).await
    }
}
