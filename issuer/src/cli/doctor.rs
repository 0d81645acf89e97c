//! `issuer doctor`: checks what a start needs (configuration, data directory permissions, the store and its schema,
//! the key ring against the store, certificates, the clock) without changing anything, and says what to fix. Exit
//! code 0 when every check passes, 1 otherwise.

use std::io::Write;
use std::path::Path;

use sqlx::{ConnectOptions as _, Connection as _};
use time::OffsetDateTime;

use super::{load_config, CliError, CliResult, GlobalArgs};
use crate::store::{RecordedKey, POSTGRES_SCHEMA_VERSION, SQLITE_SCHEMA_VERSION};
use crate::{is_postgres_url, Config, DATABASE_FILE, KEYS_DIR};

/// Clock difference from the database server (PostgreSQL) beyond which tokens and leases go wrong.
const MAX_SKEW_SECS: i64 = 5;

/// The findings, printed as they come.
struct Report<'a> {
    out: &'a mut dyn Write,
    problems: usize,
}

impl Report<'_> {
    fn ok(&mut self, what: impl std::fmt::Display) -> CliResult {
        writeln!(self.out, "ok       {what}")?;
        Ok(())
    }

    fn problem(&mut self, what: impl std::fmt::Display, fix: impl std::fmt::Display) -> CliResult {
        self.problems += 1;
        writeln!(self.out, "PROBLEM  {what}\n         fix: {fix}")?;
        Ok(())
    }
}

pub(crate) async fn run(global: &GlobalArgs, out: &mut dyn Write) -> CliResult {
    let config = match load_config(global, None) {
        Ok(config) => config,
        Err(e) => {
            writeln!(out, "PROBLEM  the configuration cannot be loaded\n         fix: correct the setting it names")?;
            return Err(e);
        }
    };
    let mut report = Report { out, problems: 0 };
    report.ok("configuration loads")?;
    let dir = config.data_dir.clone();
    if !dir.is_dir() {
        report.problem(
            format!("data directory {} does not exist", dir.display()),
            "run `issuer init` (or `issuer serve`) with this --data-dir, or point --data-dir at the right one",
        )?;
        return finish(report);
    }
    permissions(&mut report, &dir)?;
    let recorded = store(&mut report, &config).await?;
    key_ring(&mut report, &dir.join(KEYS_DIR), recorded.as_deref())?;
    finish(report)
}

fn finish(report: Report<'_>) -> CliResult {
    match report.problems {
        0 => {
            writeln!(report.out, "healthy: every check passed")?;
            Ok(())
        }
        n => Err(CliError::Failed(format!("{n} problem{} found; see the fixes above", if n == 1 { "" } else { "s" }))),
    }
}

/// The data directory and the secrets in it are the owner's only.
fn permissions(report: &mut Report<'_>, dir: &Path) -> CliResult {
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
        let database = dir.join(DATABASE_FILE);
        if let Ok(db) = std::fs::metadata(&database) {
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
                    format!("chown the data directory's owner {}", database.display()),
                )?;
            }
        }
    }
    let _ = dir;
    Ok(())
}

/// The store answers, its schema is this version's, and the clock agrees with it; the signing keys it records.
async fn store(report: &mut Report<'_>, config: &Config) -> Result<Option<Vec<RecordedKey>>, CliError> {
    let url = config.database_url.as_ref().map(|u| u.expose().to_string());
    let (version, newest_event, db_now) = match url.as_deref() {
        Some(url) if is_postgres_url(url) => match postgres_facts(url).await {
            Ok(facts) => facts,
            Err(e) => {
                report.problem(
                    format!("the PostgreSQL database does not answer: {e}"),
                    "check ISSUER_DATABASE_URL (host, port, user, password, database) and that the server runs",
                )?;
                return Ok(None);
            }
        },
        _ => {
            let path = config.data_dir.join(DATABASE_FILE);
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
        }
    };
    let known =
        if url.as_deref().is_some_and(is_postgres_url) { POSTGRES_SCHEMA_VERSION } else { SQLITE_SCHEMA_VERSION };
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
    if let Some(db_now) = db_now {
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
    match newest_event {
        Some(at) if at > now + 60 => report.problem(
            format!("the newest stored event is {} s in the future: the clock was set back", at - now),
            "set the clock right (NTP) before serving: leases and expiries are judged by it",
        )?,
        _ => report.ok("the clock is not behind the store's newest event")?,
    }
    if version < known {
        // Reading the keys needs this version's schema; the start migrates first.
        return Ok(None);
    }
    // Opened as a start would, minus its changes (nothing is pending; permissions are left as they are).
    let opened: Result<std::sync::Arc<dyn crate::Store>, crate::StoreError> = match url.as_deref() {
        Some(url) => crate::connect_store(url, 2).await,
        None => crate::SqliteStore::open(&config.data_dir.join(DATABASE_FILE))
            .await
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn crate::Store>),
    };
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            report.problem(format!("the store cannot be opened: {e}"), "see the error; check the database")?;
            return Ok(None);
        }
    };
    Ok(Some(store.recorded_keys().await.map_err(|e| CliError::Failed(e.to_string()))?))
}

type Facts = (i64, Option<i64>, Option<i64>);

/// Schema version and newest event time of an SQLite file, read-only.
async fn sqlite_facts(path: &Path) -> Result<Facts, sqlx::Error> {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true).connect().await?;
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(0);
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(at) FROM events").fetch_one(&mut conn).await.unwrap_or(None);
    conn.close().await?;
    Ok((version, newest, None))
}

/// Schema version, newest event time and the server's clock of a PostgreSQL database, read-only.
async fn postgres_facts(url: &str) -> Result<Facts, sqlx::Error> {
    let connect = sqlx::PgConnection::connect(url);
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(0);
    let newest: Option<i64> = sqlx::query_scalar("SELECT CAST(EXTRACT(EPOCH FROM MAX(at)) AS BIGINT) FROM events")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(None);
    let db_now: i64 =
        sqlx::query_scalar("SELECT CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok((version, newest, Some(db_now)))
}

/// The key ring opens, signs with the key the store records, and a certified key has a certificate now.
fn key_ring(report: &mut Report<'_>, keys_dir: &Path, recorded: Option<&[RecordedKey]>) -> CliResult {
    if !keys_dir.join("ring.txt").is_file() {
        let fix = match recorded.and_then(RecordedKey::signing) {
            Some(k) => format!("copy the keys/ directory of an instance that signs with key {} here", k.key_id),
            None => "run `issuer init`".to_string(),
        };
        return report.problem(format!("{} holds no key ring", keys_dir.display()), fix);
    }
    let ring = match keys::KeyRing::open(keys_dir) {
        Ok(ring) => ring,
        Err(e) => return report.problem(format!("the key ring cannot be opened: {e}"), "see the error"),
    };
    let local = ring.active().key_id().to_string();
    match recorded.map(|keys| RecordedKey::signing(keys).map(|k| k.key_id.clone())) {
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
