//! The data directory: created private (0700), tightened when it is not, and locked while a process initializes
//! it, so that any number of `serve` and `init` processes started at once on an empty directory end with one key
//! ring, one migrated database and one first admin token.
//!
//! The lock is an exclusive advisory lock (`flock`) on `.lock` in the directory, held from before the store is opened
//! until the key ring and the first admin token exist. A running service does not hold it.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = ".lock";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// The directory (or a file in it) could not be created, read, locked or changed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The directory is open to other users and this process may not tighten it.
    #[error("{} is accessible to other users (mode {mode:04o}) and cannot be made private: {source}; run `chmod 700 {}` as its owner", path.display(), path.display())]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// Why it could not be changed.
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_path_buf(), source }
}

/// Held while the data directory is initialized; dropping it releases the lock.
#[derive(Debug)]
pub struct InitLock {
    _file: File,
}

/// Creates `dir` (and parents) with mode 0700, or makes an existing one private: a directory that group or others
/// may enter (0755 from a package manager, 0777) would let every local user read the license database and the
/// signing keys. Its mode is set to 0700 with a warning; if that is not allowed, it is refused.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir).map_err(io_error(dir))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|source| DataDirError::NotPrivate { path: dir.to_path_buf(), mode, source })?;
            tracing::warn!(dir = %dir.display(), was = format!("{mode:04o}"), "made the data directory private (0700)");
        }
    }
    Ok(())
}

/// Takes the initialization lock of `dir`, waiting while another process holds it.
pub async fn lock(dir: &Path) -> Result<InitLock, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_error(&path))?;
    // `File::lock` blocks until the lock is free: off the async threads.
    let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
    match locked {
        Ok(Ok(file)) => Ok(InitLock { _file: file }),
        Ok(Err(e)) => Err(io_error(&path)(e)),
        Err(e) => Err(io_error(&path)(io::Error::other(e))),
    }
}

/// Makes the SQLite database file and its WAL and shared-memory files readable by the owner only (0600): they hold
/// license keys and customers' emails. Files that do not exist (yet) are skipped.
pub fn make_database_files_private(database: &Path) -> Result<(), DataDirError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let name = database.as_os_str().to_os_string();
        for suffix in ["", "-wal", "-shm"] {
            let mut path = name.clone();
            path.push(suffix);
            let path = PathBuf::from(path);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io_error(&path))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
    }
    let _ = database;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_data_directory_is_private_and_an_open_one_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        prepare(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        for open in [0o755, 0o777, 0o750] {
            let dir = root.path().join(format!("open-{open:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(open)).unwrap();
            prepare(&dir).unwrap();
            assert_eq!(mode(&dir), 0o700, "{open:o}");
        }
    }

    #[test]
    fn database_files_are_made_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("issuer.db");
        for suffix in ["", "-wal"] {
            let path = root.path().join(format!("issuer.db{suffix}"));
            std::fs::write(&path, b"x").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        make_database_files_private(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&root.path().join("issuer.db-wal")), 0o600);
    }

    #[tokio::test]
    async fn the_init_lock_is_exclusive_across_handles() {
        let root = tempfile::tempdir().unwrap();
        let first = lock(root.path()).await.unwrap();
        let path = root.path().to_path_buf();
        let second = tokio::spawn(async move { lock(&path).await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "waits while the first holds it");
        drop(first);
        second.await.unwrap().unwrap();
    }
}
