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
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    // A file of this backup's own, owner-only from its first byte (VACUUM INTO writes into an existing empty file).
    let mut partial = out.as_os_str().to_os_string();
    partial.push(format!(".{}.partial", uuid::Uuid::now_v7().simple()));
    let partial = PathBuf::from(partial);
    create_private(&partial).map_err(io(&partial))?;
    let written = write_checked(database, &partial).await;
    let placed = written.and_then(|integrity| {
        place(&partial, out)?;
        Ok(integrity)
    });
    let _ = std::fs::remove_file(&partial);
    let integrity = placed?;
    let bytes = std::fs::metadata(out).map_err(io(out))?.len();
    Ok(Backup { path: out.to_path_buf(), bytes, integrity })
}

/// Copies the snapshot into `partial`, makes it durable and checks it.
async fn write_checked(database: &Path, partial: &Path) -> Result<String, BackupError> {
    let options = SqliteConnectOptions::new()
        .filename(database)
        .read_only(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(BUSY_TIMEOUT);
    let mut conn = options.connect().await?;
    let io = |source| BackupError::Io { path: partial.to_path_buf(), source };
    let path_text = partial
        .to_str()
        .ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8")))?;
    let copied = sqlx::query("VACUUM INTO ?1").bind(path_text).execute(&mut conn).await;
    conn.close().await?;
    copied?;
    // VACUUM INTO does not sync its output: a backup reported done must survive a power loss.
    std::fs::File::open(partial).and_then(|f| f.sync_all()).map_err(io)?;
    let integrity = integrity_of(partial).await?;
    if integrity != "ok" {
        return Err(StoreError::Corrupt(format!("the copy failed its integrity check: {integrity}")).into());
    }
    Ok(integrity)
}

/// Puts the finished copy at `out`, never over an existing file: a hard link (where the file system has none, a
/// rename after checking), then the directory entry synced.
fn place(partial: &Path, out: &Path) -> Result<(), BackupError> {
    let io = |source| BackupError::Io { path: out.to_path_buf(), source };
    match std::fs::hard_link(partial, out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(BackupError::Exists(out.to_path_buf())),
        Err(_) if !out.exists() => std::fs::rename(partial, out).map_err(io)?,
        Err(_) => return Err(BackupError::Exists(out.to_path_buf())),
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: some file systems cannot open a directory for syncing.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// An empty file only its owner can read, created anew (never an existing one).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).map(drop)
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
