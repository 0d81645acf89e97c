//! The storage interface: licenses, machines (activations), the event log and admin token hashes.
//!
//! [`Store`] is backend-neutral; one module per backend implements it ([`SqliteStore`], [`PostgresStore`]), and
//! [`connect`] picks one by the database URL's scheme. The service only ever holds an `Arc<dyn Store>`.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

mod postgres;
mod sqlite;

pub use postgres::{is_postgres_url, PostgresStore, DEFAULT_POOL_SIZE};
pub use sqlite::SqliteStore;

/// Opens the store a database URL names, by its scheme: `postgres://` or `postgresql://` opens a [`PostgresStore`]
/// with at most `pool_size` connections, `sqlite:` a [`SqliteStore`]. Pending migrations are applied.
pub async fn connect(url: &str, pool_size: u32) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if is_postgres_url(url) {
        Ok(std::sync::Arc::new(PostgresStore::connect(url, pool_size).await?))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
    } else {
        // Only the scheme is shown: the rest of the URL may hold a password.
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        Err(StoreError::UnsupportedUrl(format!("unknown scheme `{scheme}`; use postgres://, postgresql:// or sqlite:")))
    }
}

/// Whether a license can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    /// Usable (subject to its expiry).
    Active,
    /// Temporarily blocked; can be reinstated.
    Suspended,
    /// Permanently blocked.
    Revoked,
}

impl LicenseStatus {
    /// The lowercase word stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Active => "active",
            LicenseStatus::Suspended => "suspended",
            LicenseStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for LicenseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LicenseStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(LicenseStatus::Active),
            "suspended" => Ok(LicenseStatus::Suspended),
            "revoked" => Ok(LicenseStatus::Revoked),
            other => Err(format!("`{other}` is not a status (active, suspended, revoked)")),
        }
    }
}

/// A license as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct License {
    /// Its id (UUID v7, so ids sort by creation time).
    pub id: Uuid,
    /// The license key in canonical grouped form.
    pub key: String,
    /// The licensee's email.
    pub email: String,
    /// The product.
    pub product: String,
    /// Machine slots.
    pub max_machines: u32,
    /// When the license ends; `None` for perpetual.
    pub expires_at: Option<OffsetDateTime>,
    /// Feature names.
    pub entitlements: Vec<String>,
    /// Free-form JSON object for the vendor (order number, customer id, ...).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Active, suspended or revoked.
    pub status: LicenseStatus,
    /// When it was created (whole seconds).
    pub created_at: OffsetDateTime,
    /// When it last changed (whole seconds).
    pub updated_at: OffsetDateTime,
}

/// An idempotency key sent with a create request, and a hash of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// SHA-256 (hex) of the canonical request; the same key with another request is a conflict.
    pub request_hash: String,
}

/// What [`Store::create_license`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// A new license was stored.
    New(License),
    /// The idempotency key was seen before with the same request: the license created then.
    Replayed(License),
}

/// Filters and page of [`Store::list_licenses`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseFilter {
    /// Only licenses with this email (compared case-insensitively).
    pub email: Option<String>,
    /// Only licenses of this product.
    pub product: Option<String>,
    /// Only licenses with this status.
    pub status: Option<LicenseStatus>,
    /// Page size.
    pub limit: u32,
    /// Continue after this position (from a previous page's `next_cursor`).
    pub after: Option<Cursor>,
}

/// A position in the license list, ordered by creation time then id. Its text form is opaque to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last license of the previous page.
    pub created_at: OffsetDateTime,
    /// Its id.
    pub id: Uuid,
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at.unix_timestamp(), self.id))
    }

    /// Parses the opaque text form; `None` when it was not made by [`Cursor::encode`].
    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let (secs, id) = raw.split_once(':')?;
        let created_at = OffsetDateTime::from_unix_timestamp(secs.parse().ok()?).ok()?;
        Some(Cursor { created_at, id: Uuid::parse_str(id).ok()? })
    }
}

/// One page of licenses.
#[derive(Clone, Debug, PartialEq)]
pub struct LicensePage {
    /// The licenses, oldest first.
    pub licenses: Vec<License>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl LicensePage {
    /// The page out of up to `limit + 1` licenses in list order, as backends fetch them: the extra one only says that
    /// another page follows.
    pub(crate) fn from_overfetched(mut licenses: Vec<License>, limit: u32) -> Self {
        let more = licenses.len() > limit as usize;
        licenses.truncate(limit as usize);
        let next = match licenses.last() {
            Some(last) if more => Some(Cursor { created_at: last.created_at, id: last.id }),
            _ => None,
        };
        LicensePage { licenses, next }
    }
}

/// Changes to a license; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LicenseUpdate {
    /// New machine slots.
    pub max_machines: Option<u32>,
    /// New expiry; `Some(None)` makes the license perpetual.
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// New entitlements (replacing the old ones).
    pub entitlements: Option<Vec<String>>,
    /// New metadata (replacing the old object).
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl LicenseUpdate {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == LicenseUpdate::default()
    }
}

/// A machine a license is activated on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The license.
    pub license_id: Uuid,
    /// The machine's fingerprint (as the app computed it).
    pub fingerprint: String,
    /// A human name for the machine, if the app sent one.
    pub name: Option<String>,
    /// The platform (e.g. `linux-x86_64`), if the app sent one.
    pub platform: Option<String>,
    /// When it was activated.
    pub activated_at: OffsetDateTime,
    /// When it last activated or refreshed.
    pub last_seen_at: OffsetDateTime,
    /// Whether it holds an offline token (air-gapped activation), which it gives up with a deactivation code.
    pub offline: bool,
}

/// What [`Store::redeem_deactivation`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// The machine holding the token was removed; its slot is free.
    Freed {
        /// The machine's fingerprint.
        fingerprint: String,
        /// Active machines of the license afterwards.
        machines_used: u32,
    },
    /// This code was redeemed before; nothing changed.
    AlreadyRedeemed {
        /// The machine it freed then.
        fingerprint: String,
        /// When.
        redeemed_at: OffsetDateTime,
    },
    /// No machine of this license holds a token with this proof (wrong license, or a token since replaced).
    NoMatch,
}

/// What [`Store::activate_machine`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activated {
    /// The machine took a free slot.
    New {
        /// The stored machine.
        machine: Machine,
        /// Active machines of the license afterwards.
        machines_used: u32,
    },
    /// The machine was already active; no slot was used and its `last_seen_at` was updated.
    Existing {
        /// The stored machine.
        machine: Machine,
        /// Active machines of the license.
        machines_used: u32,
    },
    /// Every slot is taken.
    NoSlotLeft {
        /// Active machines of the license.
        machines_used: u32,
    },
    /// No license with this id.
    NoLicense,
}

/// Kinds of events in a license's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// License created.
    Created,
    /// Slots, expiry, entitlements or metadata changed.
    Updated,
    /// Suspended.
    Suspended,
    /// Reinstated after a suspension.
    Reinstated,
    /// Revoked.
    Revoked,
    /// A machine was activated (or re-activated).
    Activated,
    /// A machine deactivated itself.
    Deactivated,
    /// A validation request (the result code is in the detail).
    Validated,
    /// A token was refreshed (or the refresh refused; the detail says which).
    Refreshed,
    /// An admin removed a machine.
    MachineRemoved,
}

impl EventKind {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Suspended => "suspended",
            EventKind::Reinstated => "reinstated",
            EventKind::Revoked => "revoked",
            EventKind::Activated => "activated",
            EventKind::Deactivated => "deactivated",
            EventKind::Validated => "validated",
            EventKind::Refreshed => "refreshed",
            EventKind::MachineRemoved => "machine_removed",
        }
    }

    fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Created,
            EventKind::Updated,
            EventKind::Suspended,
            EventKind::Reinstated,
            EventKind::Revoked,
            EventKind::Activated,
            EventKind::Deactivated,
            EventKind::Validated,
            EventKind::Refreshed,
            EventKind::MachineRemoved,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// An event to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The license it concerns.
    pub license_id: Uuid,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: OffsetDateTime,
    /// The machine involved, if any.
    pub fingerprint: Option<String>,
    /// The client's IP address, if known.
    pub client_ip: Option<String>,
    /// Details (a JSON object), e.g. the result code of a validation.
    pub detail: serde_json::Value,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in the log (increasing).
    pub id: i64,
    /// The event itself.
    pub event: NewEvent,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The idempotency key was used before with a different request.
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    /// A unique value (license key) already exists.
    #[error("a record with this unique value already exists")]
    Duplicate,
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
    /// A batch of writes could not be committed (the whole batch was rolled back).
    #[error("the write could not be committed: {0}")]
    CommitFailed(String),
    /// The database failed (connection, I/O, lock timeout, ...).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The storage operations the issuer needs. Implementations must be safe to share between tasks
/// (`Arc<dyn Store>`), and [`Store::activate_machine`] must hold the slot limit under any concurrency.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new license. With `idempotency`, a second call with the same key and request hash returns
    /// [`Created::Replayed`] with the first license; the same key with another hash fails with
    /// [`StoreError::IdempotencyConflict`].
    async fn create_license(&self, license: &License, idempotency: Option<&Idempotency>)
        -> Result<Created, StoreError>;

    /// The license with this id.
    async fn license_by_id(&self, id: Uuid) -> Result<Option<License>, StoreError>;

    /// The license with this key (canonical grouped form).
    async fn license_by_key(&self, key: &str) -> Result<Option<License>, StoreError>;

    /// What a validation needs: the license with this key, how many machines are active on it, and whether
    /// `fingerprint` is one of them. Backends override it to answer in one round trip.
    async fn license_for_machine(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<(License, u32, bool)>, StoreError> {
        let Some(license) = self.license_by_key(key).await? else { return Ok(None) };
        let used = self.count_machines(license.id).await?;
        let active = self.machine(license.id, fingerprint).await?.is_some();
        Ok(Some((license, used, active)))
    }

    /// Whether the store answers: a cheap read, for health checks.
    async fn ping(&self) -> Result<(), StoreError> {
        self.license_by_id(Uuid::nil()).await.map(|_| ())
    }

    /// Licenses matching the filter, ordered by (created_at, id), one page.
    async fn list_licenses(&self, filter: &LicenseFilter) -> Result<LicensePage, StoreError>;

    /// Applies changes; `None` when no license has this id.
    async fn update_license(
        &self,
        id: Uuid,
        update: &LicenseUpdate,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError>;

    /// Sets the status; `None` when no license has this id.
    async fn set_status(
        &self,
        id: Uuid,
        status: LicenseStatus,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError>;

    /// Activates a machine atomically: an already active fingerprint is refreshed without using a slot; a new one
    /// is stored only while fewer machines than `max_machines` are active, checked and inserted in one step.
    async fn activate_machine(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Activated, StoreError>;

    /// [`Store::activate_machine`] and, when a machine was activated (new or existing), appending `event` in the same
    /// transaction, its detail object completed with `new_machine` and `machines_used`. Backends override it to do
    /// both in one round trip; the event log then never disagrees with the machines.
    async fn activate_machine_logged(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        event: &NewEvent,
    ) -> Result<Activated, StoreError> {
        let activated = self.activate_machine(license_id, fingerprint, name, platform, event.at).await?;
        if let Some(event) = activation_event(event, &activated) {
            self.append_event(&event).await?;
        }
        Ok(activated)
    }

    /// [`Store::touch_machine`] and, when the machine is active, appending `event`; returns the license's active
    /// machine count, or `None` (nothing logged) when the machine is not active.
    async fn touch_machine_logged(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        event: &NewEvent,
    ) -> Result<Option<u32>, StoreError> {
        if !self.touch_machine(license_id, fingerprint, event.at).await? {
            return Ok(None);
        }
        self.append_event(event).await?;
        Ok(Some(self.count_machines(license_id).await?))
    }

    /// [`Store::remove_machine`] and, when a machine was removed, appending `event`; returns the license's active
    /// machine count afterwards, or `None` (nothing logged) when the machine was not active.
    async fn remove_machine_logged(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        event: &NewEvent,
    ) -> Result<Option<u32>, StoreError> {
        if !self.remove_machine(license_id, fingerprint).await? {
            return Ok(None);
        }
        self.append_event(event).await?;
        Ok(Some(self.count_machines(license_id).await?))
    }

    /// Marks an active machine as seen (on refresh); `false` when it is not active.
    async fn touch_machine(&self, license_id: Uuid, fingerprint: &str, at: OffsetDateTime) -> Result<bool, StoreError>;

    /// Records the deactivation proof of the offline token just issued to an active machine (replacing an earlier
    /// one); `false` when the machine is not active.
    async fn set_offline_proof(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        proof: &[u8; 16],
    ) -> Result<bool, StoreError>;

    /// Redeems an offline deactivation atomically: removes the license's machine whose offline proof is `proof` and
    /// records the proof as redeemed, so one code frees one slot once, and only on its own license.
    async fn redeem_deactivation(
        &self,
        license_id: Uuid,
        proof: &[u8; 16],
        at: OffsetDateTime,
    ) -> Result<Redeemed, StoreError>;

    /// Removes a machine, freeing its slot; `false` when it was not active.
    async fn remove_machine(&self, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError>;

    /// The machine with this fingerprint, if active on the license.
    async fn machine(&self, license_id: Uuid, fingerprint: &str) -> Result<Option<Machine>, StoreError>;

    /// How many machines are active on the license.
    async fn count_machines(&self, license_id: Uuid) -> Result<u32, StoreError>;

    /// The license's active machines, oldest activation first.
    async fn list_machines(&self, license_id: Uuid) -> Result<Vec<Machine>, StoreError>;

    /// Appends an event to the log.
    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError>;

    /// The license's events with an id above `after`, oldest first, at most `limit`.
    async fn list_events(&self, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError>;

    /// Stores the SHA-256 of an admin token.
    async fn add_admin_token(&self, hash: &[u8; 32], label: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// The SHA-256 hashes of every stored admin token.
    async fn admin_token_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError>;
}

/// The event of an activation, its detail completed with what the activation did; `None` when nothing was activated.
pub(crate) fn activation_event(event: &NewEvent, activated: &Activated) -> Option<NewEvent> {
    let (new_machine, machines_used) = match activated {
        Activated::New { machines_used, .. } => (true, *machines_used),
        Activated::Existing { machines_used, .. } => (false, *machines_used),
        Activated::NoSlotLeft { .. } | Activated::NoLicense => return None,
    };
    let mut event = event.clone();
    if let serde_json::Value::Object(detail) = &mut event.detail {
        detail.insert("new_machine".into(), new_machine.into());
        detail.insert("machines_used".into(), machines_used.into());
    }
    Some(event)
}

pub(crate) fn event_kind_from_str(s: &str) -> Option<EventKind> {
    EventKind::parse(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cursor_round_trips_and_garbage_is_refused() {
        let c = Cursor { created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(), id: Uuid::now_v7() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("12:nope")), None);
    }

    #[tokio::test]
    async fn unknown_url_scheme_is_refused_without_showing_the_url() {
        let err = connect("mysql://root:hunter2@db/issuer", 4).await.err().unwrap();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("`mysql`") && text.contains("postgres://") && !text.contains("hunter2"), "{text}");
        assert!(connect("/var/lib/issuer.db", 4).await.is_err());
    }

    #[test]
    fn postgres_urls_are_recognised_by_scheme() {
        assert!(is_postgres_url("postgres://u@h/db") && is_postgres_url("postgresql://u@h/db"));
        assert!(!is_postgres_url("sqlite:///x.db") && !is_postgres_url("postgresx://h"));
    }

    #[test]
    fn event_kinds_round_trip() {
        for k in [EventKind::Created, EventKind::MachineRemoved, EventKind::Refreshed] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }
}
