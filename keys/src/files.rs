//! Key files on disk: secret keys written create-new with mode 0600 and refused when others can read them.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::{KeyError, SecretKey};

/// Whether writing a key file may replace an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse with [`KeyError::AlreadyExists`] (the default everywhere).
    Refuse,
    /// Replace the existing file atomically (`--force`).
    Replace,
}

/// Writes `key` to `path` as PKCS#8 PEM with mode 0600. The file appears complete or not at all.
pub fn write_secret_key(key: &SecretKey, path: &Path, overwrite: Overwrite) -> Result<(), KeyError> {
    let pem = key.to_pem()?;
    write_file(path, pem.as_bytes(), 0o600, overwrite)
}

/// Reads a secret key file, refusing it when group or others may read it (on Unix).
pub fn read_secret_key(path: &Path) -> Result<SecretKey, KeyError> {
    let file = fs::File::open(path).map_err(|e| KeyError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file.metadata().map_err(|e| KeyError::io(path, e))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions { path: path.into(), mode });
        }
    }
    let text = zeroize::Zeroizing::new(io::read_to_string(file).map_err(|e| KeyError::io(path, e))?);
    SecretKey::from_pem_at(&text, Some(path))
}

/// Writes `contents` to `path` with `mode` via a temporary file in the same directory, so a crash never leaves a
/// partly written file. With [`Overwrite::Refuse`] the final step is a hard link, which fails if `path` exists, so
/// two writers cannot both win.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32, overwrite: Overwrite) -> Result<(), KeyError> {
    if overwrite == Overwrite::Refuse && path.exists() {
        return Err(KeyError::AlreadyExists { path: path.into() });
    }
    let tmp = temp_beside(path);
    let result = (|| -> Result<(), KeyError> {
        let mut f = create_new_with_mode(&tmp, mode).map_err(|e| KeyError::io(path, e))?;
        f.write_all(contents).map_err(|e| KeyError::io(path, e))?;
        f.sync_all().map_err(|e| KeyError::io(path, e))?;
        match overwrite {
            Overwrite::Replace => fs::rename(&tmp, path).map_err(|e| KeyError::io(path, e)),
            Overwrite::Refuse => fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => KeyError::AlreadyExists { path: path.into() },
                _ => KeyError::io(path, e),
            }),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(path);
    Ok(())
}

fn create_new_with_mode(path: &Path, mode: u32) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

/// Makes a rename or link durable; best effort, since not every platform can open a directory.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            let _ = d.sync_all();
        }
    }
}

fn temp_beside(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn secret_key_file_is_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = SecretKey::generate().unwrap();
        write_secret_key(&key, &path, Overwrite::Refuse).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_secret_key(&path).unwrap().key_id(), key.key_id());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }

    #[test]
    fn existing_key_file_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let first = SecretKey::generate().unwrap();
        write_secret_key(&first, &path, Overwrite::Refuse).unwrap();
        let second = SecretKey::generate().unwrap();
        let err = write_secret_key(&second, &path, Overwrite::Refuse).unwrap_err();
        assert!(matches!(err, KeyError::AlreadyExists { .. }));
        assert_eq!(read_secret_key(&path).unwrap().key_id(), first.key_id());
        write_secret_key(&second, &path, Overwrite::Replace).unwrap();
        assert_eq!(read_secret_key(&path).unwrap().key_id(), second.key_id());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_secret_key(&SecretKey::generate().unwrap(), &path, Overwrite::Refuse).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_key(&path).unwrap_err();
        assert!(matches!(err, KeyError::InsecurePermissions { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn openssl_reads_the_secret_key_file() {
        if std::process::Command::new("openssl").arg("version").output().is_err() {
            eprintln!("SKIPPED: openssl is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = SecretKey::generate().unwrap();
        write_secret_key(&key, &path, Overwrite::Refuse).unwrap();
        let out =
            std::process::Command::new("openssl").args(["pkey", "-in"]).arg(&path).args(["-pubout"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // The public key OpenSSL derives is the one we derive.
        let public = crate::public_key_from_pem(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(public, *key.public_key());
    }
}
