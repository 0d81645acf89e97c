//! Machine fingerprints: a per-install random id, hashed with the product so the raw id never leaves the machine.

use alloc::string::String;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::format::B64;

/// Domain-separation label hashed in front of product and install id.
pub const FINGERPRINT_LABEL: &[u8] = b"license-fingerprint/v1\0";

/// The fingerprint of an install id for a product: base64url (no padding) of the first 16 bytes of
/// SHA-256(label || product || 0x00 || install id), 22 characters.
///
/// Two products on one machine get unrelated fingerprints, and the install id cannot be recovered from either.
pub fn fingerprint(product: &str, install_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(FINGERPRINT_LABEL)
        .chain_update(product.as_bytes())
        .chain_update([0u8])
        .chain_update(install_id.as_bytes())
        .finalize();
    B64.encode(&digest[..16])
}

#[cfg(feature = "std")]
pub use self::install::InstallId;

#[cfg(feature = "std")]
mod install {
    use std::fs;
    use std::io::{self, Write as _};
    use std::path::{Path, PathBuf};

    use crate::Error;

    /// The raw per-install id a fingerprint is made from.
    ///
    /// Normally a random id kept in a file the app chooses ([`InstallId::load_or_create`]). Containers and cloned VMs
    /// copy that file along with everything else, so every clone would look like one machine: give each one an
    /// explicit id instead ([`InstallId::from_override`], or [`InstallId::from_env_or_file`]).
    #[derive(Clone, PartialEq, Eq)]
    pub struct InstallId(String);

    impl core::fmt::Debug for InstallId {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            // The raw id stays on this machine; logs get only that it exists.
            f.write_str("InstallId(..)")
        }
    }

    impl InstallId {
        /// Reads the install id from `path`, creating it with 32 random bytes (as hex) on first use.
        ///
        /// Creation is atomic: concurrent first starts of the app agree on one id. A corrupted file is an error, not
        /// silently replaced, since a new id means a new machine (and a new activation).
        pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, Error> {
            let path = path.as_ref();
            match read_id(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => return other.map(InstallId).map_err(|source| io_error(path, source)),
            }
            let mut raw = [0u8; 32];
            getrandom::getrandom(&mut raw).map_err(|e| io_error(path, io::Error::other(e)))?;
            let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            publish_once(path, format!("{id}\n").as_bytes()).map_err(|source| io_error(path, source))?;
            // Read back: if another process won the race, its id is the one.
            read_id(path).map(InstallId).map_err(|source| io_error(path, source))
        }

        /// Uses `id` as the install id instead of a file, e.g. one provisioned per container or VM clone.
        pub fn from_override(id: impl Into<String>) -> Self {
            InstallId(id.into())
        }

        /// Uses the environment variable `var` when it is set and not empty, otherwise [`InstallId::load_or_create`].
        pub fn from_env_or_file(var: &str, path: impl AsRef<Path>) -> Result<Self, Error> {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(InstallId::from_override(v.trim())),
                _ => InstallId::load_or_create(path),
            }
        }

        /// This install's fingerprint for `product` (see [`crate::fingerprint()`]).
        pub fn fingerprint(&self, product: &str) -> String {
            super::fingerprint(product, &self.0)
        }
    }

    fn io_error(path: &Path, source: io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }

    fn read_id(path: &Path) -> io::Result<String> {
        let text = fs::read_to_string(path)?;
        let id = text.trim();
        if id.len() != 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the install id file is corrupted; restore it from a backup, or delete it to make a new one \
                 (this machine then needs a new activation)",
            ));
        }
        Ok(id.to_ascii_lowercase())
    }

    /// Writes `contents` to `path` only if `path` does not exist yet, never leaving a partly written file there.
    fn publish_once(path: &Path, contents: &[u8]) -> io::Result<()> {
        let tmp = temp_beside(path);
        let result = (|| {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            // A hard link fails if the target exists, which makes "create if absent" atomic.
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(_) if !path.exists() => fs::rename(&tmp, path),
                Err(e) => Err(e),
            }
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// A temporary file name next to `path`, unique to this process and call.
    pub(crate) fn temp_beside(path: &Path) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(format!(".{}.{n}.tmp", std::process::id()));
        path.with_file_name(name)
    }
}

#[cfg(feature = "std")]
pub(crate) use self::install::temp_beside;

#[cfg(all(test, feature = "std"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fingerprint_is_short_and_product_specific() {
        let a = fingerprint("acme-cad", "id-1");
        assert_eq!(a.len(), 22);
        assert_ne!(a, fingerprint("acme-viewer", "id-1"));
        assert_ne!(a, fingerprint("acme-cad", "id-2"));
        assert_eq!(a, fingerprint("acme-cad", "id-1"));
    }

    #[test]
    fn install_id_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install-id");
        let first = InstallId::load_or_create(&path).unwrap();
        let second = InstallId::load_or_create(&path).unwrap();
        assert_eq!(first, second);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install-id");
        let ids: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || InstallId::load_or_create(&path).unwrap().fingerprint("p"))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn corrupted_install_id_is_an_error_not_a_new_machine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install-id");
        std::fs::write(&path, "garbage").unwrap();
        let err = InstallId::load_or_create(&path).unwrap_err();
        assert_eq!(err.code(), "io");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage");
    }

    #[test]
    fn override_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install-id");
        let id = InstallId::from_override("vm-clone-7");
        assert_eq!(id.fingerprint("p"), fingerprint("p", "vm-clone-7"));
        assert!(!path.exists());
        assert_eq!(format!("{id:?}"), "InstallId(..)");
    }
}
