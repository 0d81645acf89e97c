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
//! - `keyring`: [`SharedKeyRing`], the signing key ring reloaded when its files change (several instances).
//! - `service`: [`Licensing`], the logic shared by the HTTP API and the CLI.
//! - [`http`]: the router ([`http::app`]), [`http::serve`], errors and rate limiting.

use std::path::PathBuf;
use std::sync::Arc;

pub mod cli;
mod clock;
mod config;
pub mod http;
mod keyring;
mod license_key;
mod service;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    parse_duration_secs, Config, ConfigError, Flags, Secret, DEFAULT_DATA_DIR, DEFAULT_LISTEN, MAX_TOKEN_PERIOD_SECS,
};
pub use keyring::SharedKeyRing;
pub use license_key::{LicenseKey, LicenseKeyError, ALPHABET, KEY_CHARS, RANDOM_CHARS};
pub use service::{
    new_admin_token, token_hash, Context, Expiry, Issued, LicenseRef, Licensing, NewLicense, OfflineDeactivated,
    ServiceError, TokenPolicy, Unusable, Validated, ValidationCode,
};
pub use store::{connect as connect_store, is_postgres_url, DEFAULT_POOL_SIZE};
pub use store::{
    Activated, Created, Cursor, Event, EventKind, Idempotency, License, LicenseFilter, LicensePage, LicenseStatus,
    LicenseUpdate, Lookup, Machine, NewEvent, PostgresStore, Redeemed, SqliteStore, Store, StoreError, StoreExt, Tx,
    Work,
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
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
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
    // A rotation done elsewhere (`issuer keys rotate`, or the vendor's distribution of the ring to every instance)
    // reaches this service without a restart.
    opened.licensing.key_ring_handle().spawn_watcher(KEY_RING_RELOAD_INTERVAL);
    let state = http::AppState::new(
        opened.licensing,
        config.rate_limit_per_second,
        config.rate_limit_burst,
        config.max_body_bytes,
    )
    .with_trusted_proxies(&config.trusted_proxies);
    Ok(Started { state, new_admin_token: opened.new_admin_token })
}

/// Opens (creating on first start) the data directory, the store, the key ring and the first admin token.
pub async fn open(config: &Config) -> Result<Opened, StartError> {
    open_with_clock(config, Arc::new(SystemClock)).await
}

/// [`open`] with the service reading `clock` instead of the system clock.
pub async fn open_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Opened, StartError> {
    let dir = &config.data_dir;
    create_private_dir(dir).map_err(|source| StartError::DataDir { path: dir.clone(), source })?;
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => connect_store(url.expose(), config.database_pool_size).await?,
        None => Arc::new(SqliteStore::open(&dir.join(DATABASE_FILE)).await?),
    };
    let keys_dir = dir.join(KEYS_DIR);
    if !keys_dir.join("ring.txt").exists() {
        let ring = keys::KeyRing::create(&keys_dir)?;
        tracing::info!(key_id = %ring.active().key_id(), dir = %keys_dir.display(), "created the signing key ring");
    }
    let ring = Arc::new(SharedKeyRing::open(&keys_dir)?);
    let policy = TokenPolicy {
        refresh_interval: seconds(config.refresh_interval_secs),
        offline_grace: seconds(config.offline_grace_secs),
    };
    let extra = config.admin_token.as_ref().map(Secret::expose);
    let licensing = Arc::new(Licensing::new(store.clone(), ring, policy, extra).with_clock(clock));
    let new_admin_token = if store.admin_token_hashes().await?.is_empty() {
        Some(licensing.create_admin_token("created at first start").await?)
    } else {
        None
    };
    Ok(Opened { licensing, new_admin_token })
}

fn seconds(secs: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Creates the data directory (and parents) with mode 0700: it holds the signing keys and the license database.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}
