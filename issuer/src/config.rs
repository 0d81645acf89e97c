//! Service configuration in layers: defaults < TOML config file < `ISSUER_*` environment < command-line flags.

mod webhooks;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address: loopback only, so a fresh install is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Longest accepted refresh interval or offline grace: ten years.
pub const MAX_TOKEN_PERIOD_SECS: u64 = 3650 * 86_400;
/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./issuer-data";

/// A secret string (admin token, database URL with a password): `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; use it, do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The issuer's settings after every layer was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Address the HTTP server binds. Default `127.0.0.1:8080`. Env `ISSUER_LISTEN`, flag `--listen`.
    pub listen: SocketAddr,
    /// Directory of the SQLite store (`issuer.db`) and the key ring (`keys/`). Default `./issuer-data`.
    /// Env `ISSUER_DATA_DIR`, flag `--data-dir`.
    pub data_dir: PathBuf,
    /// Database URL; `None` means the SQLite file in the data directory. The scheme picks the backend:
    /// `postgres://` or `postgresql://` for PostgreSQL, `sqlite:` for SQLite.
    /// Env `ISSUER_DATABASE_URL`, flag `--database-url`.
    pub database_url: Option<Secret>,
    /// Most PostgreSQL connections this instance opens (SQLite ignores it). Default 10.
    /// Config `database_pool_size`, env `ISSUER_DATABASE_POOL_SIZE`.
    pub database_pool_size: u32,
    /// An extra accepted admin token for automation. Env `ISSUER_ADMIN_TOKEN` only (never a flag: flags show in `ps`).
    pub admin_token: Option<Secret>,
    /// Seconds after issue when an online app should refresh its token. Default 86,400 (24 h).
    /// Config `refresh_interval = "24h"`, env `ISSUER_REFRESH_INTERVAL`.
    pub refresh_interval_secs: u64,
    /// Seconds a token stays valid past its refresh time, for apps that are offline for a while. Default 604,800
    /// (7 days). Config `offline_grace = "7d"`, env `ISSUER_OFFLINE_GRACE`.
    pub offline_grace_secs: u64,
    /// Seconds between two sweeps that cull machines whose lease ended (docs/policies.md); culling at activation does
    /// not wait for it. Default 60. Config `lease_sweep_interval = "60s"`, env `ISSUER_LEASE_SWEEP_INTERVAL`.
    pub lease_sweep_interval_secs: u64,
    /// How long events are kept: the sweep deletes older ones in small batches (docs/operations.md, "Event
    /// retention"); `None` keeps them forever. Default 400 days. Config `event_retention = "400d"` (or `"off"`), env
    /// `ISSUER_EVENT_RETENTION`.
    pub event_retention_secs: Option<u64>,
    /// Requests per second each client IP may make to the public endpoints; 0 switches the limit off. Default 10.
    /// Config `rate_limit_per_second`, env `ISSUER_RATE_LIMIT_PER_SECOND`.
    pub rate_limit_per_second: u32,
    /// Requests a client IP may make in a burst above the steady rate. Default 30.
    /// Config `rate_limit_burst`, env `ISSUER_RATE_LIMIT_BURST`.
    pub rate_limit_burst: u32,
    /// Largest accepted request body in bytes. Default 65,536. Config `max_body_bytes`, env `ISSUER_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// Addresses or networks of reverse proxies / load balancers in front of this instance. A request from one of
    /// them is attributed (rate limit, network rules, event log) to the client named in its `X-Forwarded-For`
    /// header. Default none: the header is ignored, so clients cannot forge their address. Config
    /// `trusted_proxies = ["10.0.0.5", "10.1.0.0/16"]`, env `ISSUER_TRUSTED_PROXIES` (comma-separated).
    pub trusted_proxies: Vec<crate::net::Cidr>,
    /// Global client network rules of the configuration, beside those stored through the API (docs/network.md).
    /// Config `ip_allow = ["10.0.0.0/8"]`, `ip_deny = [...]`, env `ISSUER_IP_ALLOW`, `ISSUER_IP_DENY`
    /// (comma-separated).
    pub ip_rules: crate::service::IpRuleSettings,
    /// Connection limits and timeouts of the HTTP server. Config section `[http]`, env `ISSUER_HTTP_*`.
    pub http: HttpSettings,
    /// Webhook delivery: retries, timeout, outbound network rules. Config section `[webhooks]`, env
    /// `ISSUER_WEBHOOK_*` (docs/webhooks.md).
    pub webhooks: crate::service::WebhookSettings,
}

/// Connection limits and timeouts of the HTTP server: what keeps one client from holding every connection or file
/// descriptor (idle connections, half-sent heads, slow bodies). Config section `[http]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpSettings {
    /// Most connections open at once. When every one is taken, the connection idle the longest (between requests,
    /// or not done sending its head) is closed to make room; when none is idle, the new one is closed. Lowered at
    /// start to fit the process's open-file limit. Default 4,096. Config `max_connections`, env
    /// `ISSUER_HTTP_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// Seconds a client has to send a complete request head: from connecting, or from the first byte of a later
    /// request on a kept-alive connection. Default 10. Config `header_timeout = "10s"`, env
    /// `ISSUER_HTTP_HEADER_TIMEOUT`.
    pub header_timeout_secs: u64,
    /// Seconds a request body has to arrive in full after its head; slower is 408 `body_timeout`. Default 30.
    /// Config `body_timeout = "30s"`, env `ISSUER_HTTP_BODY_TIMEOUT`.
    pub body_timeout_secs: u64,
    /// Seconds a kept-alive connection may stay idle between requests before the server closes it. Default 75:
    /// longer than reverse proxies keep idle upstream connections (nginx 60 s), so a proxy never reuses a connection
    /// the issuer is closing. Config `keepalive_timeout = "75s"`, env `ISSUER_HTTP_KEEPALIVE_TIMEOUT`.
    pub keepalive_timeout_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_connections: 4096,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            keepalive_timeout_secs: 75,
        }
    }
}

/// The `[http]` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    max_connections: Option<usize>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    keepalive_timeout: Option<String>,
}

impl HttpSettings {
    fn apply_file(&mut self, file: HttpFile) -> Result<(), ConfigError> {
        if let Some(n) = file.max_connections {
            self.max_connections = n;
        }
        if let Some(d) = file.header_timeout {
            self.header_timeout_secs = parse_setting_duration("http.header_timeout", &d)?;
        }
        if let Some(d) = file.body_timeout {
            self.body_timeout_secs = parse_setting_duration("http.body_timeout", &d)?;
        }
        if let Some(d) = file.keepalive_timeout {
            self.keepalive_timeout_secs = parse_setting_duration("http.keepalive_timeout", &d)?;
        }
        Ok(())
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("ISSUER_HTTP_MAX_CONNECTIONS") {
            self.max_connections = parse_number("ISSUER_HTTP_MAX_CONNECTIONS", &v)?;
        }
        for (name, field) in [
            ("ISSUER_HTTP_HEADER_TIMEOUT", &mut self.header_timeout_secs),
            ("ISSUER_HTTP_BODY_TIMEOUT", &mut self.body_timeout_secs),
            ("ISSUER_HTTP_KEEPALIVE_TIMEOUT", &mut self.keepalive_timeout_secs),
        ] {
            if let Some(v) = get(name) {
                *field = parse_setting_duration(name, &v)?;
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |name: &str, message: &str| Err(ConfigError::Invalid { name: name.into(), message: message.into() });
        if self.max_connections == 0 {
            return bad("http.max_connections", "must be at least 1");
        }
        for (name, secs) in [
            ("http.header_timeout", self.header_timeout_secs),
            ("http.body_timeout", self.body_timeout_secs),
            ("http.keepalive_timeout", self.keepalive_timeout_secs),
        ] {
            if secs == 0 || secs > 86_400 {
                return bad(name, "must be between 1s and 1d");
            }
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            database_pool_size: crate::store::DEFAULT_POOL_SIZE,
            admin_token: None,
            refresh_interval_secs: 24 * 3600,
            offline_grace_secs: 7 * 24 * 3600,
            lease_sweep_interval_secs: 60,
            event_retention_secs: Some(DEFAULT_EVENT_RETENTION_SECS),
            rate_limit_per_second: 10,
            rate_limit_burst: 30,
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            ip_rules: crate::service::IpRuleSettings::default(),
            http: HttpSettings::default(),
            webhooks: crate::service::WebhookSettings::default(),
        }
    }
}

/// The config file: every key optional. Unknown keys are refused so a typo does not silently do nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<Secret>,
    database_pool_size: Option<u32>,
    refresh_interval: Option<String>,
    offline_grace: Option<String>,
    lease_sweep_interval: Option<String>,
    event_retention: Option<String>,
    rate_limit_per_second: Option<u32>,
    rate_limit_burst: Option<u32>,
    max_body_bytes: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
    ip_allow: Option<Vec<String>>,
    ip_deny: Option<Vec<String>>,
    http: Option<HttpFile>,
    webhooks: Option<webhooks::WebhooksFile>,
}

/// Settings given on the command line; `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Flags {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<Secret>,
}

impl Flags {
    /// Flags with the given values.
    pub fn new(listen: Option<SocketAddr>, data_dir: Option<PathBuf>, database_url: Option<String>) -> Self {
        Flags { listen, data_dir, database_url: database_url.map(Secret) }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message.
        message: String,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid setting {name}: {message}")]
    Invalid {
        /// Where the setting came from, e.g. `ISSUER_LISTEN` or `listen` (config file).
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads the layers: defaults, then `file` (when given), then the environment read through `env`, then `flags`.
    ///
    /// `env` looks up a variable; pass `|name| std::env::var(name).ok()` for the real environment.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: Flags,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
            config.apply_file(&text).map_err(|e| match e {
                ConfigError::Invalid { name, message } => {
                    ConfigError::Invalid { name: format!("{name} (in {})", path.display()), message }
                }
                ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
                other => other,
            })?;
        }
        config.apply_env(env)?;
        if let Some(listen) = flags.listen {
            config.listen = listen;
        }
        if let Some(dir) = flags.data_dir {
            config.data_dir = dir;
        }
        if let Some(url) = flags.database_url {
            config.database_url = Some(url);
        }
        config.check()?;
        Ok(config)
    }

    /// Applies the config file text on top of the current values.
    fn apply_file(&mut self, text: &str) -> Result<(), ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        if let Some(listen) = file.listen {
            self.listen = parse_addr("listen", &listen)?;
        }
        if let Some(dir) = file.data_dir {
            self.data_dir = dir;
        }
        if let Some(url) = file.database_url {
            self.database_url = Some(url);
        }
        if let Some(n) = file.database_pool_size {
            self.database_pool_size = n;
        }
        if let Some(d) = file.refresh_interval {
            self.refresh_interval_secs = parse_setting_duration("refresh_interval", &d)?;
        }
        if let Some(d) = file.offline_grace {
            self.offline_grace_secs = parse_setting_duration("offline_grace", &d)?;
        }
        if let Some(d) = file.lease_sweep_interval {
            self.lease_sweep_interval_secs = parse_setting_duration("lease_sweep_interval", &d)?;
        }
        if let Some(d) = file.event_retention {
            self.event_retention_secs = parse_retention("event_retention", &d)?;
        }
        if let Some(n) = file.rate_limit_per_second {
            self.rate_limit_per_second = n;
        }
        if let Some(n) = file.rate_limit_burst {
            self.rate_limit_burst = n;
        }
        if let Some(n) = file.max_body_bytes {
            self.max_body_bytes = n;
        }
        if let Some(list) = file.trusted_proxies {
            self.trusted_proxies = parse_networks("trusted_proxies", list.iter().map(String::as_str))?;
        }
        if let Some(list) = file.ip_allow {
            self.ip_rules.allow = parse_networks("ip_allow", list.iter().map(String::as_str))?;
        }
        if let Some(list) = file.ip_deny {
            self.ip_rules.deny = parse_networks("ip_deny", list.iter().map(String::as_str))?;
        }
        if let Some(http) = file.http {
            self.http.apply_file(http)?;
        }
        if let Some(section) = file.webhooks {
            webhooks::apply_file(&mut self.webhooks, section)?;
        }
        Ok(())
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(v) = get("ISSUER_LISTEN") {
            self.listen = parse_addr("ISSUER_LISTEN", &v)?;
        }
        if let Some(v) = get("ISSUER_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("ISSUER_DATABASE_URL") {
            self.database_url = Some(Secret(v));
        }
        if let Some(v) = get("ISSUER_DATABASE_POOL_SIZE") {
            self.database_pool_size = parse_number("ISSUER_DATABASE_POOL_SIZE", &v)?;
        }
        if let Some(v) = get("ISSUER_ADMIN_TOKEN") {
            self.admin_token = Some(Secret(v));
        }
        if let Some(v) = get("ISSUER_REFRESH_INTERVAL") {
            self.refresh_interval_secs = parse_setting_duration("ISSUER_REFRESH_INTERVAL", &v)?;
        }
        if let Some(v) = get("ISSUER_OFFLINE_GRACE") {
            self.offline_grace_secs = parse_setting_duration("ISSUER_OFFLINE_GRACE", &v)?;
        }
        if let Some(v) = get("ISSUER_LEASE_SWEEP_INTERVAL") {
            self.lease_sweep_interval_secs = parse_setting_duration("ISSUER_LEASE_SWEEP_INTERVAL", &v)?;
        }
        if let Some(v) = get("ISSUER_EVENT_RETENTION") {
            self.event_retention_secs = parse_retention("ISSUER_EVENT_RETENTION", &v)?;
        }
        if let Some(v) = get("ISSUER_RATE_LIMIT_PER_SECOND") {
            self.rate_limit_per_second = parse_number("ISSUER_RATE_LIMIT_PER_SECOND", &v)?;
        }
        if let Some(v) = get("ISSUER_RATE_LIMIT_BURST") {
            self.rate_limit_burst = parse_number("ISSUER_RATE_LIMIT_BURST", &v)?;
        }
        if let Some(v) = get("ISSUER_MAX_BODY_BYTES") {
            self.max_body_bytes = parse_number("ISSUER_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = get("ISSUER_TRUSTED_PROXIES") {
            self.trusted_proxies = parse_networks("ISSUER_TRUSTED_PROXIES", v.split(','))?;
        }
        if let Some(v) = get("ISSUER_IP_ALLOW") {
            self.ip_rules.allow = parse_networks("ISSUER_IP_ALLOW", v.split(','))?;
        }
        if let Some(v) = get("ISSUER_IP_DENY") {
            self.ip_rules.deny = parse_networks("ISSUER_IP_DENY", v.split(','))?;
        }
        self.http.apply_env(get)?;
        webhooks::apply_env(&mut self.webhooks, get)?;
        Ok(())
    }

    /// The database file of an SQLite store: the data directory's, or the `sqlite:` URL's; `None` for PostgreSQL or
    /// a URL that names no file (`sqlite::memory:`).
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match self.database_url.as_ref().map(Secret::expose) {
            None => Some(self.data_dir.join(crate::DATABASE_FILE)),
            Some(url) if crate::is_postgres_url(url) => None,
            Some(url) => match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
                Some(path) if !path.is_empty() && !path.starts_with(':') => {
                    Some(PathBuf::from(path.split('?').next().unwrap_or(path)))
                }
                _ => None,
            },
        }
    }

    /// Refuses values the service cannot work with.
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |name: &str, message: &str| Err(ConfigError::Invalid { name: name.into(), message: message.into() });
        if self.refresh_interval_secs == 0 || self.refresh_interval_secs > MAX_TOKEN_PERIOD_SECS {
            return bad("refresh_interval", "must be between 1s and 3650d");
        }
        if self.offline_grace_secs > MAX_TOKEN_PERIOD_SECS {
            return bad("offline_grace", "must be at most 3650d");
        }
        if self.lease_sweep_interval_secs == 0 || self.lease_sweep_interval_secs > 86_400 {
            return bad("lease_sweep_interval", "must be between 1s and 1d");
        }
        if self.event_retention_secs.is_some_and(|r| !(86_400..=MAX_EVENT_RETENTION_SECS).contains(&r)) {
            return bad("event_retention", "must be between 1d and 36500d, or off");
        }
        if self.database_pool_size == 0 || self.database_pool_size > 1000 {
            return bad("database_pool_size", "must be between 1 and 1000");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        self.http.check()?;
        webhooks::check(&self.webhooks)
    }

    /// An example config file with every key and its default, printed by `issuer config example`.
    pub fn example() -> &'static str {
        EXAMPLE
    }
}

const EXAMPLE: &str = r#"# issuer configuration. Every key is optional; the values shown are the defaults.
# Precedence: defaults < this file (--config FILE) < ISSUER_* environment variables < command-line flags.

# Address to listen on (ISSUER_LISTEN, --listen). Keep it on loopback behind a TLS-terminating proxy.
listen = "127.0.0.1:8080"

# Directory of the SQLite store issuer.db and the signing key ring keys/ (ISSUER_DATA_DIR, --data-dir).
data_dir = "./issuer-data"

# Database URL (ISSUER_DATABASE_URL, --database-url). Unset: the SQLite file in data_dir. The scheme picks the
# backend; several instances behind a load balancer share one PostgreSQL database (see docs/operations.md).
# database_url = "sqlite:///var/lib/issuer/issuer.db"
# database_url = "postgres://issuer:PASSWORD@db.internal:5432/issuer"

# Most PostgreSQL connections this instance opens (ISSUER_DATABASE_POOL_SIZE); SQLite ignores it.
database_pool_size = 10

# Online tokens: refresh after this long, and stay valid this much longer for apps that are offline for a while
# (ISSUER_REFRESH_INTERVAL, ISSUER_OFFLINE_GRACE). Units: s, m, h, d, w.
refresh_interval = "24h"
offline_grace = "7d"

# How often machines whose policy lease ended are culled (ISSUER_LEASE_SWEEP_INTERVAL); an activation culls its own
# license's dead machines at once, whatever this is (docs/policies.md).
lease_sweep_interval = "60s"

# How long events (the audit log, GET /v1/licenses/{id}/events) are kept; the sweep deletes older ones in batches
# of 500 (ISSUER_EVENT_RETENTION). "off" keeps them forever.
event_retention = "400d"

# Per-client-IP limit on the public endpoints (activate, validate, refresh, deactivate, keys, offline/activate,
# offline/deactivate): a steady rate in requests per second and a burst above it (ISSUER_RATE_LIMIT_PER_SECOND,
# ISSUER_RATE_LIMIT_BURST). 0 switches it off.
rate_limit_per_second = 10
rate_limit_burst = 30

# Largest accepted request body in bytes (ISSUER_MAX_BODY_BYTES).
max_body_bytes = 65536

# Reverse proxies / load balancers in front of this instance, as addresses or networks ("10.0.0.5", "10.1.0.0/16";
# ISSUER_TRUSTED_PROXIES, comma-separated). Requests from them are attributed to the client in X-Forwarded-For, for
# the rate limit, the network rules and the event log; from anyone else the header is ignored. Empty: every request
# is attributed to its TCP peer.
trusted_proxies = []

# Global client network rules (ISSUER_IP_ALLOW, ISSUER_IP_DENY; docs/network.md), beside those created with
# `POST /v1/ip-rules`. A deny rule refuses the networks it names; with allow rules, only what they name is admitted.
# Applied to activate, validate, refresh, deactivate and the offline endpoints.
ip_allow = []
ip_deny = []

# Connection limits and timeouts (ISSUER_HTTP_MAX_CONNECTIONS, ISSUER_HTTP_HEADER_TIMEOUT, ISSUER_HTTP_BODY_TIMEOUT,
# ISSUER_HTTP_KEEPALIVE_TIMEOUT). When max_connections are open, the longest-idle one is closed for a new client;
# max_connections is lowered at start to fit the open-file limit (which the issuer raises to its hard limit).
[http]
max_connections = 4096
header_timeout = "10s"
body_timeout = "30s"
keepalive_timeout = "75s"

# Webhook delivery (docs/webhooks.md): whether this instance delivers (ISSUER_WEBHOOK_DELIVERY=on|off; events are
# queued either way), the first retry's delay (ISSUER_WEBHOOK_RETRY_BASE; each next one doubles, to at most 12h,
# for at least 3 days), one attempt's timeout (ISSUER_WEBHOOK_TIMEOUT), and which networks deliveries may reach
# (ISSUER_WEBHOOK_ALLOW_NETWORKS, ISSUER_WEBHOOK_DENY_NETWORKS, comma-separated CIDRs). Deny rules always refuse;
# with allow rules only their networks are reached; without, every address but link-local and cloud metadata ones
# (169.254.0.0/16, fe80::/10, fd00:ec2::254).
[webhooks]
deliver = true
retry_base = "10s"
timeout = "10s"
allow_networks = []
deny_networks = []

# Admin API tokens are not configured here: one is created and printed at first start, more with
# `issuer admin-token create` or POST /v1/admin-tokens, and ISSUER_ADMIN_TOKEN (environment only) adds one for
# automation.
"#;

/// Networks in CIDR notation (a bare address is a /32 or /128), host bits cleared.
fn parse_networks<'a>(name: &str, values: impl Iterator<Item = &'a str>) -> Result<Vec<crate::net::Cidr>, ConfigError> {
    values
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<crate::net::Cidr>().map(crate::net::Cidr::network).map_err(|_| ConfigError::Invalid {
                name: name.into(),
                message: format!("`{v}` is not an IP address or network such as 10.0.0.5 or 10.0.0.0/8"),
            })
        })
        .collect()
}

fn parse_addr(name: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Invalid {
        name: name.into(),
        message: format!("`{value}` is not an address such as 127.0.0.1:8080"),
    })
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::Invalid { name: name.into(), message: format!("`{value}` is not a valid number") })
}

/// Events are kept this long unless configured otherwise: a year and a month, so a yearly license's whole term and
/// its renewal stay in the audit log.
pub const DEFAULT_EVENT_RETENTION_SECS: u64 = 400 * 86_400;

/// The longest retention accepted (a hundred years); longer is `off`.
const MAX_EVENT_RETENTION_SECS: u64 = 36_500 * 86_400;

/// A retention: a duration, or `off` (keep forever).
fn parse_retention(name: &str, value: &str) -> Result<Option<u64>, ConfigError> {
    if value.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_setting_duration(name, value).map(Some)
}

fn parse_setting_duration(name: &str, value: &str) -> Result<u64, ConfigError> {
    parse_duration_secs(value).map_err(|message| ConfigError::Invalid { name: name.into(), message })
}

/// Parses a duration such as `90s`, `15m`, `12h`, `365d` or `2w` into seconds; a bare number is seconds.
pub fn parse_duration_secs(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let bad = || format!("`{value}` is not a duration such as 12h, 7d or 365d (units s, m, h, d, w)");
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// A duration in seconds as [`parse_duration_secs`] reads it back, in the largest of days, hours, minutes and seconds
/// that divides it (`86400` is `1d`, `5400` is `90m`).
pub fn format_duration_secs(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests;
