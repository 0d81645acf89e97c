//! The license issuer: an HTTP service that creates licenses, activates machines within their slot limits, and signs
//! the tokens apps verify offline with the `verifier` crate.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use issuer::{Config, Flags};
//!
//! let config = Config::load(None, |name| std::env::var(name).ok(), Flags::default())?;
//! let started = issuer::start(&config).await?; // data dir, SQLite store, key ring, first admin token
//! if let Some(token) = &started.new_admin_token {
//!     println!("admin token: {token}");
//! }
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! issuer::http::serve(listener, started.state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `config`: [`Config`] in layers (defaults, TOML file, `ISSUER_*` environment, flags).
//! - `license_key`: [`LicenseKey`], random keys with a check character.
//! - `store`: the [`Store`] trait and its backends ([`SqliteStore`], [`PostgresStore`]), picked by [`connect_store`].
//! - `net`: [`Cidr`] networks and the canonical form of client addresses.
//! - `keyring`: [`SharedKeyRing`], the signing key ring reloaded when its files change (several instances).
//! - `service`: [`Licensing`], the logic shared by the HTTP API and the CLI.
//! - [`http`]: the router ([`http::app`]), [`http::serve`], errors and rate limiting.

use std::path::PathBuf;
use std::sync::Arc;

pub mod cli;
mod clock;
mod config;
pub mod datadir;
pub mod http;
mod keyring;
mod license_key;
mod net;
mod service;
mod store;
mod views;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    format_duration_secs, parse_duration_secs, Config, ConfigError, Flags, HttpSettings, Secret, DEFAULT_DATA_DIR,
    DEFAULT_LISTEN, MAX_TOKEN_PERIOD_SECS,
};
pub use keyring::SharedKeyRing;
pub use license_key::{LicenseKey, LicenseKeyError, ALPHABET, KEY_CHARS, RANDOM_CHARS};
pub use net::Cidr;
pub use service::{
    is_policy_name, new_admin_token, token_hash, Blocked, Caller, Context, Expiry, Flush, IpRuleSettings, Issued,
    LicenseRef, LicenseUsage, Licensing, NetworkRules, NewIpRule, NewLicense, NewWebhook, OfflineDeactivated, RuleRef,
    ServiceError, SignedRevocations, TokenPolicy, Unusable, Validated, ValidationCode, WebhookSettings, MAX_USAGE_DAYS,
    NETWORK_TASK_INTERVAL, REVOCATION_LIST_TTL, SECRET_OVERLAP, USAGE_FLUSH_INTERVAL,
};
pub use store::{
    backup_sqlite, connect as connect_store, is_postgres_url, sqlite_integrity, Backup, BackupError, DEFAULT_POOL_SIZE,
};
pub use store::{
    Activated, Actor, AdminToken, Attempt, Claimed, Delivery, DeliveryState, EventFilter, IpAction, IpRule, IpScope,
    IpUsage, LicenseKind, Scope, WebhookEndpoint, ALL_EVENTS,
};
pub use store::{BestPresence, DailyUsage, DayUsage, MachineUsage, UsageBatch};
pub use store::{
    Created, Culled, Cursor, EffectiveStatus, Event, EventKind, Idempotency, License, LicenseFilter, LicensePage,
    LicenseStatus, LicenseUpdate, Lookup, Machine, MachineCheck, NewEvent, NewMachine, Overage, Policy, PolicyDeleted,
    PolicyLock, PolicyUpdate, PostgresStore, Presence, RecordKeys, RecordedKey, Redeemed, SqliteStore, Store,
    StoreError, StoreExt, Touched, Tx, Work, DEFAULT_DEACTIVATION_PERIOD_SECS,
};

/// Name of the SQLite database file in the data directory.
pub const DATABASE_FILE: &str = "issuer.db";
/// How often a running service checks its key ring files for a rotation.
pub const KEY_RING_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Name of the key ring directory in the data directory.
pub const KEYS_DIR: &str = "keys";

/// A ready service: the HTTP state, and the admin token created at first start (shown once, never stored).
#[derive(Debug)]
pub struct Started {
    /// State for [`http::app`] / [`http::serve`].
    pub state: http::AppState,
    /// The admin token created because the store had none; `None` on later starts.
    pub new_admin_token: Option<String>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be created, made private or locked.
    #[error("cannot use the data directory: {0}")]
    DataDir(#[from] datadir::DataDirError),
    /// The store records a signing key ring, and this data directory has none: copy the ring, never make another.
    #[error("the store's tokens are signed with key {recorded}, but {} holds no key ring: copy the keys/ directory of an instance that has it there (docs/operations.md, \"One key ring for every instance\"); no key was created", keys_dir.display())]
    KeyRingMissing {
        /// The data directory's key ring directory.
        keys_dir: PathBuf,
        /// The key the store records as signing.
        recorded: String,
    },
    /// The data directory's key ring signs with a key the store has never recorded.
    #[error("the key ring in {} signs with key {local}, which the store has never recorded; the store records key {recorded} as the signing key: copy the current keys/ directory of an instance that signs with it (docs/operations.md), or, if this ring is the newer one, record it with `issuer keys record` on this data directory; refusing to sign with a key apps may not trust", keys_dir.display())]
    KeyRingMismatch {
        /// The data directory's key ring directory.
        keys_dir: PathBuf,
        /// Its active key.
        local: String,
        /// The key the store records as signing.
        recorded: String,
    },
    /// The store holds licenses or admin tokens but records no key ring (it was used by a version before the
    /// record), and this data directory has no ring: a new key would sign tokens no deployed app trusts.
    #[error("the store has licenses or admin tokens but records no signing key ring, and {} holds none: copy the keys/ directory of an instance that signs for this store there (its first start records it); no key was created", keys_dir.display())]
    KeyRingUnrecorded {
        /// The data directory's key ring directory.
        keys_dir: PathBuf,
    },
    /// `init` found the data directory initialized already (decided under the initialization lock).
    #[error("{} is already initialized (its key ring {} exists); nothing was changed", data_dir.display(), data_dir.join(KEYS_DIR).display())]
    AlreadyInitialized {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The store could not be opened or migrated.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The key ring could not be created or opened.
    #[error("cannot use the signing key ring: {0}")]
    Keys(#[from] keys::KeyError),
    /// Creating the first admin token failed.
    #[error("cannot create the admin token: {0}")]
    Service(#[from] ServiceError),
}

/// An opened issuer: the licensing service over the store and the key ring, without the HTTP layer (the CLI uses it).
#[derive(Debug)]
pub struct Opened {
    /// The licensing service.
    pub licensing: Arc<Licensing>,
    /// The admin token created because the store had none; `None` when it had one.
    pub new_admin_token: Option<String>,
}

/// Opens (creating on first start) the data directory, the store, the key ring and the first admin token, and builds
/// the HTTP state over them.
pub async fn start(config: &Config) -> Result<Started, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] with the service reading `clock` instead of the system clock (tests move a [`ManualClock`]).
pub async fn start_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Started, StartError> {
    let opened = open_with_clock(config, clock).await?;
    // With roots, a key no certificate covers cannot sign: a service refuses to start rather than answer 503 to
    // every activation. (The CLI opens the same way but may still list, revoke or export: only signing refuses.)
    let now = time::OffsetDateTime::now_utc();
    opened.licensing.key_ring().signing_certificate(now, None)?;
    keyring::warn_if_certificate_ends_soon(&opened.licensing.key_ring(), now);
    // A rotation done elsewhere (`issuer keys rotate`, or the vendor's distribution of the ring to every instance)
    // reaches this service without a restart.
    let store = opened.licensing.store().clone();
    opened.licensing.key_ring_handle().spawn_watcher_with_store(store, KEY_RING_RELOAD_INTERVAL);
    opened.licensing.spawn_sweeper(std::time::Duration::from_secs(config.lease_sweep_interval_secs));
    opened.licensing.spawn_webhook_dispatcher();
    opened.licensing.spawn_network_tasks();
    opened.licensing.spawn_usage_flush();
    let state = http::AppState::new(
        opened.licensing,
        config.rate_limit_per_second,
        config.rate_limit_burst,
        config.max_body_bytes,
    )
    .with_trusted_proxies(&config.trusted_proxies)
    .with_http_settings(http_settings_for_this_process(config.http));
    Ok(Started { state, new_admin_token: opened.new_admin_token })
}

/// The connection limits under the process's open-file limit, which is raised to its hard limit first: each
/// connection holds a file descriptor, and running out of them stops `accept` for everyone.
fn http_settings_for_this_process(mut http: HttpSettings) -> HttpSettings {
    let limit = http::raise_open_file_limit();
    let fitted = http::fit_connections(http.max_connections, limit);
    if fitted < http.max_connections {
        tracing::warn!(
            open_file_limit = limit,
            configured = http.max_connections,
            max_connections = fitted,
            "the open-file limit is too low for http.max_connections; serving fewer connections"
        );
    } else {
        tracing::info!(open_file_limit = limit, max_connections = fitted, "connection limit");
    }
    http.max_connections = fitted;
    http
}

/// Opens (creating on first start) the data directory, the store, the key ring and the first admin token.
pub async fn open(config: &Config) -> Result<Opened, StartError> {
    open_with_clock(config, Arc::new(SystemClock)).await
}

/// [`open`] with the service reading `clock` instead of the system clock.
pub async fn open_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Opened, StartError> {
    open_locked(config, clock, false).await
}

/// `issuer init`: [`open`] for a data directory that must not be initialized yet; one that is (also by a process
/// that won a race to it) is [`StartError::AlreadyInitialized`], with nothing changed.
pub async fn initialize(config: &Config) -> Result<Opened, StartError> {
    open_locked(config, Arc::new(SystemClock), true).await
}

/// Opens the data directory under its initialization lock: the store (migrations), the key ring and the first admin
/// token are created by exactly one of any number of processes starting at once; the others find them.
async fn open_locked(config: &Config, clock: Arc<dyn Clock>, fresh_only: bool) -> Result<Opened, StartError> {
    let dir = &config.data_dir;
    datadir::prepare(dir)?;
    let _init = datadir::lock(dir).await?;
    let keys_dir = dir.join(KEYS_DIR);
    if fresh_only && keys_dir.join("ring.txt").exists() {
        return Err(StartError::AlreadyInitialized { data_dir: dir.clone() });
    }
    let store = open_store(config).await?;
    let ring = Arc::new(adopt_key_ring(&store, &keys_dir).await?);
    let policy = TokenPolicy {
        refresh_interval: seconds(config.refresh_interval_secs),
        offline_grace: seconds(config.offline_grace_secs),
    };
    let extra = config.admin_token.as_ref().map(Secret::expose);
    let licensing = Arc::new(
        // Every store call of the service is timed for `GET /metrics`.
        Licensing::new(store::Measured::wrap(store.clone()), ring, policy, extra)
            .with_clock(clock)
            .with_webhook_settings(config.webhooks.clone())
            .with_event_retention(config.event_retention_secs)
            .with_ip_rules(config.ip_rules.clone()),
    );
    // Decided in the store, so one database shared by several data directories also gets one first token.
    let new_admin_token = licensing.create_first_admin_token("created at first start").await?;
    Ok(Opened { licensing, new_admin_token })
}

/// The store the configuration names (applying pending migrations): the database URL's, or the SQLite file in the
/// data directory (made owner-only).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    Ok(match &config.database_url {
        Some(url) => connect_store(url.expose(), config.database_pool_size).await?,
        None => {
            let path = config.data_dir.join(DATABASE_FILE);
            let store = SqliteStore::open(&path).await?;
            datadir::make_database_files_private(&path)?;
            Arc::new(store)
        }
    })
}

/// The public keys of `ring` as the store records them. A pending key is left out: it has never signed, and
/// recording it as not signing would read as retired, so it could not become the signing key later.
pub fn recorded_keys_of(ring: &keys::KeyRing) -> Vec<store::RecordedKey> {
    ring.entries()
        .iter()
        .filter(|e| e.status != keys::KeyStatus::Pending)
        .map(|e| store::RecordedKey {
            key_id: e.public.key_id().to_string(),
            public_key: e.public.to_string(),
            active: e.status == keys::KeyStatus::Active,
        })
        .collect()
}

/// The data directory's key ring, held to the one the store records, so every instance signs with one ring:
///
/// - a store without a recorded ring records this one (a first start; of instances starting at once on one empty
///   database, exactly one records its ring, and one that created a ring just now and lost removes it again). A
///   store that already holds licenses or admin tokens but records no ring (from a version before the record) gets
///   no new key: a data directory without a ring is refused there, and one with a ring records it;
/// - a data directory without a ring, on a store that records one, is refused: the ring must be copied, never made;
/// - a ring whose active key the store does not know is refused; one whose active key the store records as retired
///   (a rotation recorded, its files not here yet) starts with a warning and signs with that still-trusted key, as
///   a running instance in the same state does.
async fn adopt_key_ring(store: &Arc<dyn Store>, keys_dir: &std::path::Path) -> Result<SharedKeyRing, StartError> {
    let recorded = store.recorded_keys().await?;
    let recorded_active = |keys: &[store::RecordedKey]| store::RecordedKey::signing(keys).map(|k| k.key_id.clone());
    let dir_existed = keys_dir.exists();
    let mut created = None;
    if !keys_dir.join("ring.txt").exists() {
        if let Some(active) = recorded_active(&recorded) {
            return Err(StartError::KeyRingMissing { keys_dir: keys_dir.to_path_buf(), recorded: active });
        }
        if store_has_data(store).await? {
            return Err(StartError::KeyRingUnrecorded { keys_dir: keys_dir.to_path_buf() });
        }
        let ring = keys::KeyRing::create(keys_dir)?;
        tracing::info!(key_id = %ring.active().key_id(), dir = %keys_dir.display(), "created the signing key ring");
        created = Some(ring.active().key_id());
    }
    let ring = SharedKeyRing::open(keys_dir)?;
    let local = ring.current().active().key_id().to_string();
    let mut recorded = recorded;
    if recorded_active(&recorded).is_none() {
        let keys = recorded_keys_of(&ring.current());
        let at = time::OffsetDateTime::now_utc();
        let first = store
            .transact(move |tx| Box::pin(async move { tx.record_keys(&keys, store::RecordKeys::First, at).await }))
            .await?;
        if first {
            tracing::info!(key_id = %local, "recorded the signing key ring in the store");
            return Ok(ring);
        }
        // Another instance recorded its ring in the meantime.
        recorded = store.recorded_keys().await?;
        if let Some(made) = created {
            remove_created_ring(keys_dir, made, dir_existed);
            let active = recorded_active(&recorded).unwrap_or_default();
            return Err(StartError::KeyRingMissing { keys_dir: keys_dir.to_path_buf(), recorded: active });
        }
    }
    match recorded_active(&recorded) {
        Some(active) if active == local => Ok(ring),
        Some(active) if recorded.iter().any(|k| k.key_id == local) => {
            tracing::warn!(
                key_id = %local,
                recorded = %active,
                dir = %keys_dir.display(),
                "this key ring signs with a key the store records as retired (a rotation is recorded whose files have \
                 not reached this instance): copy the current keys/ directory here; until then tokens are signed with \
                 the retired, still trusted key"
            );
            ring.admit_only(active.parse().ok());
            Ok(ring)
        }
        Some(active) => Err(StartError::KeyRingMismatch { keys_dir: keys_dir.to_path_buf(), local, recorded: active }),
        None => Ok(ring),
    }
}

/// Whether the store holds licenses or admin tokens: it has been used, by a version that recorded no ring.
async fn store_has_data(store: &Arc<dyn Store>) -> Result<bool, StoreError> {
    let one = store::LicenseFilter { limit: 1, ..store::LicenseFilter::default() };
    Ok(!store.list_licenses(&one).await?.licenses.is_empty() || !store.list_admin_tokens().await?.is_empty())
}

/// Removes the files of the ring this process created (and the directory, if it made it); nothing else in it.
fn remove_created_ring(keys_dir: &std::path::Path, key_id: verifier::KeyId, dir_existed: bool) {
    let result = if dir_existed {
        ["ring.txt".to_string(), format!("{key_id}.key"), format!("{key_id}.pub")]
            .iter()
            .map(|name| keys_dir.join(name))
            .filter(|path| path.exists())
            .try_for_each(std::fs::remove_file)
    } else {
        std::fs::remove_dir_all(keys_dir)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, dir = %keys_dir.display(), "cannot remove the key ring created just now");
    }
}

fn seconds(secs: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}
