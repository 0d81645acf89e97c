//! A consistent copy of the SQLite store while a service runs: `VACUUM INTO` reads one snapshot of the database
//! (WAL included) through a connection of its own and writes it as a compact, self-contained file, without
//! blocking the writer for longer than its read transaction holds a snapshot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions as _, Connection as _};

use super::BUSY_TIMEOUT;
use crate::store::StoreError;

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// There is no database file to copy.
    #[error("{} does not exist: is this the data directory of an issuer on SQLite?", .0.display())]
    NoDatabase(PathBuf),
    /// The target exists: a backup never overwrites a file.
    #[error("{} exists already; choose a new file", .0.display())]
    Exists(PathBuf),
    /// A file could not be written, moved or made private.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for BackupError {
    fn from(e: sqlx::Error) -> Self {
        BackupError::Store(StoreError::Database(e))
    }
}

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The copy's `PRAGMA integrity_check` answer (`ok` for a sound copy).
    pub integrity: String,
}

/// Copies the database at `database` to `out` (which must not exist) as one consistent snapshot, then checks the
/// copy. The copy is written beside `out` first and linked into place (never over an existing file), so `out` is
/// never a partial file; it is readable by its owner only (it holds webhook secrets and admin token hashes).
pub async fn backup(database: &Path, out: &Path) -> Result<Backup, BackupError> {
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database.to_path_buf()));
    }
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let mut partial = out.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let options = SqliteConnectOptions::new()
        .filename(database)
        .read_only(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(BUSY_TIMEOUT);
    let mut conn = options.connect().await?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    let path_text = partial
        .to_str()
        .ok_or_else(|| io(&partial)(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8")))?;
    let copied = sqlx::query("VACUUM INTO ?1").bind(path_text).execute(&mut conn).await;
    conn.close().await?;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e.into());
    }
    restrict(&partial).map_err(io(&partial))?;
    let integrity = integrity_of(&partial).await?;
    if integrity != "ok" {
        let _ = std::fs::remove_file(&partial);
        return Err(StoreError::Corrupt(format!("the copy failed its integrity check: {integrity}")).into());
    }
    // A link, not a rename: it fails rather than replace a file that appeared meanwhile.
    let linked = std::fs::hard_link(&partial, out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => BackupError::Exists(out.to_path_buf()),
        _ => io(out)(e),
    });
    let _ = std::fs::remove_file(&partial);
    linked?;
    let bytes = std::fs::metadata(out).map_err(io(out))?.len();
    Ok(Backup { path: out.to_path_buf(), bytes, integrity })
}

/// `PRAGMA integrity_check` of a database file, opened read-only.
pub async fn integrity_of(path: &Path) -> Result<String, StoreError> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&mut conn).await?;
    conn.close().await?;
    Ok(rows.join("; "))
}

fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = path;
    Ok(())
}
