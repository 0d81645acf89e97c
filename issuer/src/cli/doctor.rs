//! `issuer doctor`: checks what a start needs (configuration, data directory permissions, the store and its schema,
//! the key ring against the store, certificates, the clock) without changing anything, and says what to fix. Exit
//! code 0 when every check passes, 1 otherwise.

use std::io::Write;
use std::path::Path;

use sqlx::{ConnectOptions as _, Connection as _};
use time::OffsetDateTime;

use super::{load_config, CliError, CliResult, GlobalArgs};
use crate::store::{POSTGRES_SCHEMA_VERSION, SQLITE_SCHEMA_VERSION};
use crate::{is_postgres_url, Config, KEYS_DIR};

/// Clock difference from the database server (PostgreSQL) beyond which tokens and leases go wrong.
const MAX_SKEW_SECS: i64 = 5;

/// The findings, printed as they come.
struct Report<'a> {
    out: &'a mut dyn Write,
    problems: usize,
    /// The reader went away (`issuer doctor | head -1`): the checks go on unprinted, because the exit code is the
    /// verdict a script reads.
    closed: bool,
}

impl Report<'_> {
    fn ok(&mut self, what: impl std::fmt::Display) -> CliResult {
        self.print(format_args!("ok       {what}"))
    }

    fn problem(&mut self, what: impl std::fmt::Display, fix: impl std::fmt::Display) -> CliResult {
        self.problems += 1;
        self.print(format_args!("PROBLEM  {what}\n         fix: {fix}"))
    }

    fn print(&mut self, line: std::fmt::Arguments<'_>) -> CliResult {
        if self.closed {
            return Ok(());
        }
        match writeln!(self.out, "{line}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => Ok(other?),
        }
    }
}

pub(crate) async fn run(global: &GlobalArgs, out: &mut dyn Write) -> CliResult {
    let config = match load_config(global, None) {
        Ok(config) => config,
        Err(e) => {
            // A problem found, like every other: exit code 1, also when the reader went away.
            let _ = writeln!(
                out,
                "PROBLEM  the configuration cannot be loaded\n         fix: correct the setting it names"
            );
            return Err(match e {
                CliError::Usage(message) => CliError::Failed(message),
                other => other,
            });
        }
    };
    let mut report = Report { out, problems: 0, closed: false };
    report.ok("configuration loads")?;
    let dir = config.data_dir.clone();
    if !dir.is_dir() {
        report.problem(
            format!("data directory {} does not exist", dir.display()),
            "run `issuer init` (or `issuer serve`) with this --data-dir, or point --data-dir at the right one",
        )?;
        return finish(report);
    }
    permissions(&mut report, &dir, config.sqlite_file().as_deref())?;
    let recorded = store(&mut report, &config).await?;
    key_ring(&mut report, &dir.join(KEYS_DIR), recorded.as_deref())?;
    finish(report)
}

fn finish(report: Report<'_>) -> CliResult {
    match report.problems {
        0 => {
            let mut report = report;
            report.print(format_args!("healthy: every check passed"))
        }
        n => Err(CliError::Failed(format!("{n} problem{} found; see the fixes above", if n == 1 { "" } else { "s" }))),
    }
}

/// The data directory and the secrets in it are the owner's only.
fn permissions(report: &mut Report<'_>, dir: &Path, database: Option<&Path>) -> CliResult {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let meta = std::fs::metadata(dir)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            report.problem(
                format!("{} is open to other users (mode {mode:04o})", dir.display()),
                format!("chmod 700 {}", dir.display()),
            )?;
        } else {
            report.ok(format!("{} is private (mode {mode:04o})", dir.display()))?;
        }
        if let Some((database, db)) = database.and_then(|d| std::fs::metadata(d).ok().map(|m| (d, m))) {
            let mode = db.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                report.problem(
                    format!("{} is readable by other users (mode {mode:04o})", database.display()),
                    format!("chmod 600 {}", database.display()),
                )?;
            }
            if db.uid() != meta.uid() {
                report.problem(
                    format!("{} belongs to another user than its directory", database.display()),
                    format!("chown --reference={} {}", dir.display(), database.display()),
                )?;
            }
        }
    }
    let _ = (dir, database);
    Ok(())
}

/// What the store says, read over a read-only connection of its own.
struct Facts {
    version: i64,
    newest_event: Option<i64>,
    db_now: Option<i64>,
    /// The recorded signing keys (id, active); `None` before the table exists.
    keys: Option<Vec<(String, bool)>>,
}

/// The store answers, its schema is this version's, and the clock agrees with it; the signing keys it records.
async fn store(report: &mut Report<'_>, config: &Config) -> Result<Option<Vec<(String, bool)>>, CliError> {
    let url = config.database_url.as_ref().map(|u| u.expose().to_string());
    let postgres = url.as_deref().is_some_and(is_postgres_url);
    let facts = if postgres {
        match postgres_facts(url.as_deref().unwrap_or_default()).await {
            Ok(facts) => facts,
            Err(e) => {
                report.problem(
                    format!("the PostgreSQL database does not answer: {e}"),
                    "check ISSUER_DATABASE_URL (host, port, user, password, database) and that the server runs",
                )?;
                return Ok(None);
            }
        }
    } else {
        let Some(path) = config.sqlite_file() else {
            report.problem("the database URL names no SQLite file", "give sqlite:///path/to/issuer.db")?;
            return Ok(None);
        };
        if !path.is_file() {
            report.problem(
                format!("{} does not exist", path.display()),
                "run `issuer init`, or restore it from a backup (docs/operations.md, Backups)",
            )?;
            return Ok(None);
        }
        match sqlite_facts(&path).await {
            Ok(facts) => facts,
            Err(e) => {
                report.problem(
                    format!("{} cannot be read: {e}", path.display()),
                    "check its owner and permissions; if it is damaged, restore it from a backup",
                )?;
                return Ok(None);
            }
        }
    };
    let known = if postgres { POSTGRES_SCHEMA_VERSION } else { SQLITE_SCHEMA_VERSION };
    let version = facts.version;
    if version > known {
        report.problem(
            format!("the store's schema is version {version}, newer than this issuer's {known}"),
            "run the issuer version that migrated it (downgrades are not supported)",
        )?;
        return Ok(None);
    } else if version < known {
        report.ok(format!("the store answers; schema {version}, `issuer serve` migrates it to {known} at start"))?;
    } else {
        report.ok(format!("the store answers; schema {version} is this version's"))?;
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if let Some(db_now) = facts.db_now {
        let skew = now - db_now;
        if skew.abs() > MAX_SKEW_SECS {
            report.problem(
                format!("this machine's clock is {skew} s off the database server's"),
                "synchronise both clocks (NTP, e.g. `timedatectl set-ntp true`)",
            )?;
        } else {
            report.ok(format!("the clock agrees with the database server ({skew} s)"))?;
        }
    }
    match facts.newest_event {
        Some(at) if at > now + 60 => report.problem(
            format!("the newest stored event is {} s in the future: the clock was set back", at - now),
            "set the clock right (NTP) before serving: leases and expiries are judged by it",
        )?,
        _ => report.ok("the clock is not behind the store's newest event")?,
    }
    Ok(Some(facts.keys.unwrap_or_default()))
}

/// A query's answer, or `None` when its table does not exist yet (an older or empty schema); other errors stand.
async fn optional<T>(answer: Result<T, sqlx::Error>) -> Result<Option<T>, sqlx::Error> {
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(sqlx::Error::Database(e))
            if e.message().contains("no such table") || e.message().contains("does not exist") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

const VERSION_SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
const KEYS_SQL: &str = "SELECT key_id, status = 'active' FROM signing_keys";

/// What an SQLite file says, read-only (nothing is written, not even its journal mode).
async fn sqlite_facts(path: &Path) -> Result<Facts, sqlx::Error> {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await?;
    let version = optional(sqlx::query_scalar::<_, i64>(VERSION_SQL).fetch_one(&mut conn).await).await?.unwrap_or(0);
    let newest =
        optional(sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(at) FROM events").fetch_one(&mut conn).await)
            .await?
            .flatten();
    let keys = optional(sqlx::query_as::<_, (String, bool)>(KEYS_SQL).fetch_all(&mut conn).await).await?;
    conn.close().await?;
    Ok(Facts { version, newest_event: newest, db_now: None, keys })
}

/// What a PostgreSQL database says, read-only, with the server's clock.
async fn postgres_facts(url: &str) -> Result<Facts, sqlx::Error> {
    let connect = sqlx::PgConnection::connect(url);
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let version = optional(sqlx::query_scalar::<_, i64>(VERSION_SQL).fetch_one(&mut conn).await).await?.unwrap_or(0);
    let newest_sql = "SELECT CAST(EXTRACT(EPOCH FROM MAX(at)) AS BIGINT) FROM events";
    let newest = optional(sqlx::query_scalar::<_, Option<i64>>(newest_sql).fetch_one(&mut conn).await).await?.flatten();
    let keys = optional(sqlx::query_as::<_, (String, bool)>(KEYS_SQL).fetch_all(&mut conn).await).await?;
    let db_now: i64 =
        sqlx::query_scalar("SELECT CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(Facts { version, newest_event: newest, db_now: Some(db_now), keys })
}

/// The key ring opens, signs with the key the store records, and a certified key has a certificate now.
fn key_ring(report: &mut Report<'_>, keys_dir: &Path, recorded: Option<&[(String, bool)]>) -> CliResult {
    let signing = |keys: &[(String, bool)]| keys.iter().find(|(_, active)| *active).map(|(id, _)| id.clone());
    if !keys_dir.join("ring.txt").is_file() {
        let fix = match recorded.and_then(signing) {
            Some(id) => format!("copy the keys/ directory of an instance that signs with key {id} here"),
            None => "run `issuer init`".to_string(),
        };
        return report.problem(format!("{} holds no key ring", keys_dir.display()), fix);
    }
    let ring = match keys::KeyRing::open(keys_dir) {
        Ok(ring) => ring,
        Err(e) => return report.problem(format!("the key ring cannot be opened: {e}"), "see the error"),
    };
    let local = ring.active().key_id().to_string();
    match recorded.map(signing) {
        Some(Some(signing)) if signing == local => report.ok(format!("the key ring signs with {local}, as the store records"))?,
        Some(Some(signing)) => report.problem(
            format!("the key ring signs with {local}, the store records {signing}"),
            format!("copy the current keys/ of an instance that signs with {signing} (docs/operations.md), or record this ring with `issuer keys record` if it is the newer one"),
        )?,
        Some(None) => report.ok(format!("the key ring signs with {local}; the store records none yet (the start records it)"))?,
        None => report.ok(format!("the key ring opens and signs with {local} (not compared: the store was not read)"))?,
    }
    let now = OffsetDateTime::now_utc();
    if ring.roots().next().is_some() {
        match ring.signing_certificate(now, None) {
            Ok(_) => report.ok("a certificate covers the signing key now")?,
            Err(e) => {
                report.problem(format!("{e}"), "certify the signing key (`issuer root certify`, docs/operations.md)")?
            }
        }
    }
    Ok(())
}
