//! The storage interface: licenses, machines (activations), the event log and admin token hashes.
//!
//! [`Store`] is backend-neutral; one module per backend implements it ([`SqliteStore`], [`PostgresStore`]), and
//! [`connect`] picks one by the database URL's scheme. The service only ever holds an `Arc<dyn Store>`.
//!
//! Reads are methods of [`Store`]. Every change goes through a unit of work ([`StoreExt::transact`]): the writes it
//! makes through its [`Tx`] commit together or not at all, so a change is never stored without its event, and what a
//! unit read under its lock cannot change under it before it commits.
//!
//! Layout: `model` holds the records and outcomes, `network` the network rules, IP counters and license kinds, `unit`
//! the unit of work, `usage` the usage counters, `metrics` what the store reports to `GET /metrics`, `sqlite/` and `postgres/` one backend each,
//! split by domain (licenses, machines, events).

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

mod admin_token;
mod event;
mod metrics;
mod model;
mod network;
mod policy;
mod postgres;
mod sqlite;
mod unit;
mod usage;
mod webhook;

pub use admin_token::{AdminToken, Scope};
pub use event::{Actor, Event, EventFilter, EventKind, NewEvent};
pub use metrics::Measured;
pub use model::{
    Activated, Created, Cursor, EffectiveStatus, Idempotency, License, LicenseFilter, LicensePage, LicenseStatus,
    LicenseUpdate, Lookup, Machine, RecordedKey, Redeemed,
};
pub use network::{IpAction, IpRule, IpScope, IpUsage, LicenseKind};
pub use policy::{
    BestPresence, Culled, MachineCheck, NewMachine, Overage, Policy, PolicyDeleted, PolicyLock, PolicyUpdate, Presence,
    Touched, DEFAULT_DEACTIVATION_PERIOD_SECS,
};
pub use postgres::{is_postgres_url, PostgresStore, DEFAULT_POOL_SIZE, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION};
pub use sqlite::{
    backup as backup_sqlite, integrity_of as sqlite_integrity, Backup, BackupError, SqliteStore,
    SCHEMA_VERSION as SQLITE_SCHEMA_VERSION,
};
pub use unit::{RecordKeys, StoreExt, Tx, Work};
pub use usage::{DailyUsage, DayUsage, MachineUsage, UsageBatch};
pub use webhook::{Attempt, Claimed, Delivery, DeliveryState, WebhookEndpoint, ALL_EVENTS, SUCCESS_RESOLUTION_SECS};

/// Opens the store a database URL names, by its scheme: `postgres://` or `postgresql://` opens a [`PostgresStore`]
/// with at most `pool_size` connections, `sqlite:` a [`SqliteStore`]. Pending migrations are applied.
pub async fn connect(url: &str, pool_size: u32) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres_url(url) {
        Ok(Arc::new(PostgresStore::connect(url, pool_size).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        // Only the scheme is shown: the rest of the URL may hold a password.
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        Err(StoreError::UnsupportedUrl(format!("unknown scheme `{scheme}`; use postgres://, postgresql:// or sqlite:")))
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The idempotency key was used before with a different request.
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    /// A unique value (license key, policy name) already exists.
    #[error("a record with this unique value already exists")]
    Duplicate,
    /// A status change the database refuses: a revoked license stays revoked, whoever writes.
    #[error("the license is revoked; its status cannot change")]
    RevokedIsFinal,
    /// The database URL cannot be used.
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    /// Stored data could not be read back (corruption or a foreign writer).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A migration failed.
    #[error("database migration {version} failed: {source}")]
    Migration {
        /// The migration's number.
        version: i64,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The unit of work asked to roll back (its own error is what the caller of [`StoreExt::transact`] gets).
    #[error("the unit of work was rolled back")]
    RolledBack,
    /// A batch of writes could not be committed (the whole batch was rolled back).
    #[error("the write could not be committed: {0}")]
    CommitFailed(String),
    /// The database did not answer the first connection within this time (start-up).
    #[error("the database did not answer within {0:?}; check the host, port and network")]
    ConnectTimeout(std::time::Duration),
    /// The database failed (connection, I/O, lock timeout, ...).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The storage operations the issuer needs. Implementations must be safe to share between tasks
/// (`Arc<dyn Store>`).
///
/// Reads answer from committed data. Changes are units of work ([`Store::run`], used through
/// [`StoreExt::transact`]); the only write outside one is [`Store::append_event`], for an event that records an
/// observation and goes with no change (a validation, a refused refresh).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Runs `work` as one transaction: what it wrote commits when it returns `Ok`, and none of it when it returns
    /// `Err` (then this returns that error) or when the commit fails. Licenses the work reads through
    /// [`Tx::license`] stay locked against other units until it ends, on every instance sharing the database.
    async fn run(&self, work: Work) -> Result<(), StoreError>;

    /// Appends one event that goes with no change (an observation: a validation, a refused refresh).
    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError>;

    /// The license with this id.
    async fn license_by_id(&self, id: Uuid) -> Result<Option<License>, StoreError>;

    /// The license with this key (canonical grouped form).
    async fn license_by_key(&self, key: &str) -> Result<Option<License>, StoreError>;

    /// What a validation needs, in one round trip: the license with this key, how many of its machines hold a lease
    /// that has not ended at `now` (a machine without a lease always counts), and whether `fingerprint` is one of
    /// them, one whose lease ended (culled or not yet), or neither.
    async fn license_for_machine(
        &self,
        key: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<MachineCheck>, StoreError>;

    /// The policy with this name.
    async fn policy(&self, name: &str) -> Result<Option<Policy>, StoreError>;

    /// Every policy, by name.
    async fn list_policies(&self) -> Result<Vec<Policy>, StoreError>;

    /// Whether the store answers: a cheap read, for health checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Licenses matching the filter, ordered by (created_at, id), one page.
    async fn list_licenses(&self, filter: &LicenseFilter) -> Result<LicensePage, StoreError>;

    /// The machine with this fingerprint, if active on the license.
    async fn machine(&self, license_id: Uuid, fingerprint: &str) -> Result<Option<Machine>, StoreError>;

    /// How many machines are active on the license.
    async fn count_machines(&self, license_id: Uuid) -> Result<u32, StoreError>;

    /// The license's active machines, oldest activation first.
    async fn list_machines(&self, license_id: Uuid) -> Result<Vec<Machine>, StoreError>;

    /// The license's events with an id above `after`, oldest first, at most `limit`.
    async fn list_events(&self, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError>;

    /// Events of any license (or none) matching the filter, oldest first.
    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError>;

    /// The admin token whose secret has this SHA-256 (revoked ones too).
    async fn admin_token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<AdminToken>, StoreError>;

    /// Every admin token (revoked ones too), by creation time (whole seconds), then id.
    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError>;

    /// Every webhook endpoint, oldest first.
    async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;

    /// The webhook endpoint with this id.
    async fn webhook(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// The endpoint's deliveries with an id above `after`, oldest first, at most `limit`.
    async fn list_deliveries(&self, endpoint_id: Uuid, after: i64, limit: u32) -> Result<Vec<Delivery>, StoreError>;

    /// How many deliveries are pending, of every endpoint (the outbox's depth).
    async fn pending_deliveries(&self) -> Result<u64, StoreError>;

    /// Whether a pending delivery of an enabled endpoint is due at `now`: a cheap read, so an idle dispatcher
    /// claims (a write) only when there is something to claim.
    async fn has_due_deliveries(&self, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// Every stored network rule, oldest first.
    async fn ip_rules(&self) -> Result<Vec<IpRule>, StoreError>;

    /// A number that changes whenever a network rule is stored or deleted (by any instance): a cheap read, so each
    /// instance reloads its rules only when they changed.
    async fn ip_rules_version(&self) -> Result<i64, StoreError>;

    /// The addresses the license was used from, the most recently seen first.
    async fn license_ips(&self, license_id: Uuid) -> Result<Vec<IpUsage>, StoreError>;

    /// The license's daily usage from `from` to `to` (UTC days, both included), oldest first; a day without usage
    /// has no entry.
    async fn license_usage(
        &self,
        license_id: Uuid,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<DailyUsage>, StoreError>;

    /// Whether any of `fingerprints` is active on the license at `now` (holding a lease that has not ended, or none),
    /// else whether one's lease ended (still stored, or culled), else absent: how a domain-bound validation finds the
    /// activation (exact or wildcard) that covers a host; with the first of `fingerprints` that is active.
    async fn machine_presence(
        &self,
        license_id: Uuid,
        fingerprints: &[String],
        now: OffsetDateTime,
    ) -> Result<BestPresence, StoreError>;

    /// The signing keys the store records (empty before any instance recorded its ring), active first.
    async fn recorded_keys(&self) -> Result<Vec<RecordedKey>, StoreError>;

    /// The ids of every revoked license, read in one snapshot. A revocation is final (the store refuses any change
    /// of a revoked license's status) and licenses are never deleted, so the set only grows: two answers of the
    /// same length are the same set, which is what makes the count a revocation list's sequence number.
    async fn revoked_licenses(&self) -> Result<Vec<Uuid>, StoreError>;

    /// Registers what the backend measures of itself (its connection pools; SQLite's write batches) for
    /// `GET /metrics`. [`Measured`] adds the time of every call.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}
}

/// A LIKE pattern (with `ESCAPE '\\'`) matching text that starts with `prefix` literally: `%`, `_` and `\\` in it
/// are escaped.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn unknown_url_scheme_is_refused_without_showing_the_url() {
        let err = connect("mysql://root:hunter2@db/issuer", 4).await.err().unwrap();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("`mysql`") && text.contains("postgres://") && !text.contains("hunter2"), "{text}");
        assert!(connect("/var/lib/issuer.db", 4).await.is_err());
    }

    #[test]
    fn like_prefix_matches_wildcards_literally() {
        assert_eq!(like_prefix("ada"), "ada%");
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
    }

    #[test]
    fn postgres_urls_are_recognised_by_scheme() {
        assert!(is_postgres_url("postgres://u@h/db") && is_postgres_url("postgresql://u@h/db"));
        assert!(!is_postgres_url("sqlite:///x.db") && !is_postgres_url("postgresx://h"));
    }
}
