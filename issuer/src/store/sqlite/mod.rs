//! The SQLite backend: one database file, WAL journal, `synchronous=NORMAL` (a committed write survives a crash of
//! the process), foreign keys on.
//!
//! Writes go through one writer task with its own connection that commits them in batches (group commit): each batch
//! is one `BEGIN IMMEDIATE` transaction, and a write's caller gets its result only after the batch committed, so an
//! acknowledged write is durable while a thousand concurrent writers cost a handful of commits instead of a thousand.
//! `BEGIN IMMEDIATE` takes SQLite's write lock up front, so the slot limit's count-and-insert sees no other writer in
//! between, whichever process writes. Reads use a pool of connections. A checkpointer task copies the WAL into the
//! database file beside the writer; memory-mapping the file was measured slower (every growth of the file remaps it
//! in every connection).
//!
//! Every change is a unit of work ([`Store::run`]): one savepoint inside a writer batch, so its writes commit together
//! or are undone together, and while it runs no other writer runs, so a license it read cannot change under it.
//!
//! Layout: `writer` (group commit and checkpoints), then one file per domain: `licenses`, `machines` (with leases
//! and deactivation counts), `policies`, `events` (with admin tokens), `webhooks`, `keys`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqliteConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Activated, AdminToken, Attempt, BestPresence, Claimed, Created, Culled, DailyUsage, Delivery, Event, EventFilter,
    Idempotency, IpRule, IpUsage, License, LicenseFilter, LicensePage, LicenseStatus, LicenseUpdate, Lookup, Machine,
    MachineCheck, NewEvent, NewMachine, Policy, PolicyDeleted, PolicyLock, RecordKeys, RecordedKey, Redeemed, Store,
    StoreError, Touched, Tx, UsageBatch, WebhookEndpoint, Work,
};

mod backup;
mod events;
mod keys;
mod licenses;
mod machines;
mod network;
mod policies;
mod usage;
mod webhooks;
mod writer;

use super::metrics::{BatchMetrics, PoolGauges};
pub use backup::{backup, integrity_of, Backup, BackupError};
use writer::Writer;

/// Migrations in order: (version, SQL). Applied at start-up; `schema_version` records those applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../../migrations/sqlite/0002_offline.sql")),
    (3, include_str!("../../../migrations/sqlite/0003_revoked_is_final.sql")),
    (4, include_str!("../../../migrations/sqlite/0004_signing_keys.sql")),
    (5, include_str!("../../../migrations/sqlite/0005_policies.sql")),
    (6, include_str!("../../../migrations/sqlite/0006_webhooks.sql")),
    (7, include_str!("../../../migrations/sqlite/0007_network.sql")),
    (8, include_str!("../../../migrations/sqlite/0008_event_retention.sql")),
    (9, include_str!("../../../migrations/sqlite/0009_usage.sql")),
];

/// The schema version this build's migrations bring an SQLite store to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// The SQLite implementation of [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    /// Connections for reads.
    pool: SqlitePool,
    /// The writer task, which owns the only write connection.
    writer: Writer,
    /// The writer's pool (its one connection), for the pool gauges.
    writer_pool: SqlitePool,
    /// Sizes and times of the writer's batches.
    batches: BatchMetrics,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        SqliteStore::with_options(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens a `sqlite:` URL (e.g. `sqlite:///var/lib/issuer/issuer.db` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl("an SQLite URL starts with sqlite:".into()));
        }
        let options = SqliteConnectOptions::from_str(url)?;
        SqliteStore::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The writer never checkpoints: an automatic checkpoint would run inside a commit and stall every queued
        // write for milliseconds (it was the whole p99 tail); the checkpointer task does it beside the writer.
        // After the WAL starts over, it is truncated back to 64 MiB so a burst does not keep its disk space forever.
        let writer_options = options.clone().pragma("wal_autocheckpoint", "0").pragma("journal_size_limit", "67108864");
        let writer_pool =
            SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(writer_options).await?;
        migrate(&writer_pool).await?;
        let pool = SqlitePoolOptions::new().max_connections(8).min_connections(1).connect_with(options).await?;
        let batches = BatchMetrics::default();
        let writer = Writer::start(writer_pool.clone(), pool.clone(), batches.clone());
        Ok(SqliteStore { pool, writer, writer_pool, batches })
    }
}

/// Applies the pending migrations in one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock before reading
/// the schema version (waiting up to [`BUSY_TIMEOUT`] for another process), so of several processes opening one new
/// file at once, one migrates and the others then find nothing to do.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let applied = apply_pending(&mut conn).await;
    match applied {
        Ok(versions) => {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            for version in versions {
                tracing::info!(version, "applied database migration");
            }
            Ok(())
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

/// The migrations newer than the recorded version, inside the caller's transaction; the versions applied.
async fn apply_pending(conn: &mut SqliteConnection) -> Result<Vec<i64>, StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetch_one(&mut *conn).await?;
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let run = async {
            sqlx::raw_sql(sql).execute(&mut *conn).await?;
            sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)")
                .bind(version)
                .bind(OffsetDateTime::now_utc().unix_timestamp())
                .execute(&mut *conn)
                .await
        };
        run.await.map_err(|source| StoreError::Migration { version, source })?;
        applied.push(version);
    }
    Ok(applied)
}

/// A unit of work's view of the writer's connection, inside the batch transaction and the unit's savepoint.
struct SqliteTx<'c> {
    conn: &'c mut SqliteConnection,
}

#[async_trait]
impl Tx for SqliteTx<'_> {
    async fn license(&mut self, which: Lookup<'_>) -> Result<Option<License>, StoreError> {
        licenses::find(&mut *self.conn, which).await
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

    async fn policy(&mut self, name: &str, _lock: PolicyLock) -> Result<Option<Policy>, StoreError> {
        // The writer holds SQLite's write lock for the whole unit: every read in it is locked already.
        policies::find(&mut *self.conn, name).await
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
        events::insert(self.conn, event).await
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
        events::insert_admin_token(self.conn, hash, token, true).await
    }

    async fn insert_admin_token(&mut self, hash: &[u8; 32], token: &AdminToken) -> Result<(), StoreError> {
        events::insert_admin_token(self.conn, hash, token, false).await.map(|_| ())
    }

    async fn revoke_admin_token(&mut self, id: &str, at: OffsetDateTime) -> Result<Option<AdminToken>, StoreError> {
        events::revoke_admin_token(self.conn, id, at).await
    }

    async fn touch_admin_token(&mut self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        events::touch_admin_token(self.conn, id, at).await
    }

    async fn webhook(&mut self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
        webhooks::find(&mut *self.conn, id).await
    }

    async fn insert_webhook(&mut self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        webhooks::insert(self.conn, endpoint).await
    }

    async fn update_webhook(&mut self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError> {
        webhooks::update(self.conn, endpoint).await
    }

    async fn delete_webhook(&mut self, id: Uuid, at: OffsetDateTime) -> Result<bool, StoreError> {
        webhooks::delete(self.conn, id, at).await
    }

    async fn purge_deleted_webhooks(&mut self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        webhooks::purge(self.conn, before, limit).await
    }

    async fn prune_events(&mut self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        events::prune(self.conn, before, limit).await
    }

    async fn claim_deliveries(
        &mut self,
        now: OffsetDateTime,
        claim_until: OffsetDateTime,
        limit: u32,
        skip: &[Uuid],
    ) -> Result<Vec<Claimed>, StoreError> {
        webhooks::claim(self.conn, now, claim_until, limit, skip).await
    }

    async fn record_attempt(
        &mut self,
        delivery_id: i64,
        attempts: u32,
        at: OffsetDateTime,
        attempt: &Attempt,
    ) -> Result<bool, StoreError> {
        webhooks::record_attempt(self.conn, delivery_id, attempts, at, attempt).await
    }

    async fn resend_delivery(
        &mut self,
        endpoint_id: Uuid,
        delivery_id: i64,
        at: OffsetDateTime,
    ) -> Result<Option<Delivery>, StoreError> {
        webhooks::resend(self.conn, endpoint_id, delivery_id, at).await
    }

    async fn announce_expiries(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<License>, StoreError> {
        licenses::announce_expiries(self.conn, now, limit).await
    }

    async fn insert_ip_rule(&mut self, rule: &IpRule) -> Result<(), StoreError> {
        network::insert_rule(self.conn, rule).await
    }

    async fn delete_ip_rule(&mut self, id: Uuid) -> Result<Option<IpRule>, StoreError> {
        network::delete_rule(self.conn, id).await
    }

    async fn delete_policy_ip_rules(&mut self, policy: &str) -> Result<Vec<IpRule>, StoreError> {
        network::delete_policy_rules(self.conn, policy).await
    }

    async fn record_ip_usage(&mut self, usage: &[IpUsage]) -> Result<(), StoreError> {
        network::record_usage(self.conn, usage).await
    }

    async fn record_usage(&mut self, batch: &UsageBatch) -> Result<(), StoreError> {
        usage::record(self.conn, batch).await
    }

    async fn prune_usage(&mut self, before: time::Date, limit: u32) -> Result<u64, StoreError> {
        usage::prune(self.conn, before, limit).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.batches.register(registry);
        let pools = vec![("read", self.pool.clone()), ("write", self.writer_pool.clone())];
        registry.register_collector(Box::new(PoolGauges { pools }));
    }

    async fn run(&self, work: Work) -> Result<(), StoreError> {
        self.writer.write(true, move |conn| Box::pin(async move { work(&mut SqliteTx { conn }).await })).await
    }

    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        // One statement (its deliveries are queued by a trigger of it): no savepoint needed, SQLite undoes a failed
        // statement by itself.
        let event = event.clone();
        self.writer.write(false, move |conn| Box::pin(async move { events::insert(conn, &event).await })).await
    }

    async fn license_by_id(&self, id: Uuid) -> Result<Option<License>, StoreError> {
        licenses::find(&self.pool, Lookup::Id(id)).await
    }

    async fn license_by_key(&self, key: &str) -> Result<Option<License>, StoreError> {
        licenses::find(&self.pool, Lookup::Key(key)).await
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
        policies::find(&self.pool, name).await
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
        webhooks::find(&self.pool, id).await
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

fn count_from(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt("machine count out of range".into()))
}

fn secs(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// Unix milliseconds, as the webhook outbox keeps its times.
fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn time_from_millis(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("time {ms} ms out of range")))
}

fn time_from(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| StoreError::Corrupt(format!("time {secs} out of range")))
}

fn uuid_from(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| StoreError::Corrupt(format!("bad id `{text}`")))
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SQLite-only behaviour. What every backend must do is the store conformance suite
/// (`tests/src/conformance.rs`, run against this backend by `tests/tests/store_conformance.rs`).
#[cfg(test)]
mod tests;
