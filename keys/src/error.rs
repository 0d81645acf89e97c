//! Errors of key generation, key files, the key ring and signing.

use std::path::PathBuf;

use verifier::{ClaimsError, KeyId};

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file or directory could not be read or written.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key ring's manifest (or its directory) may be changed by other users, who could then switch the active
    /// key; it is refused until its mode is fixed.
    #[error("{} is writable by other users (mode {mode:04o}); run `chmod go-w {}`", path.display(), path.display())]
    WritableByOthers {
        /// The file or directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A secret key file is readable by group or others; it is refused until its mode is fixed.
    #[error("{} is readable by other users (mode {mode:04o}); run `chmod 600 {}` and check who copied it", path.display(), path.display())]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Writing would overwrite an existing file and `force` was not given.
    #[error("{} already exists; refusing to overwrite it (use --force to replace it)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A key file's content is not a valid key of the expected kind.
    #[error("invalid key file{}: {reason}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    InvalidKeyFile {
        /// The file, when the key came from one.
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },
    /// The key ring's manifest is inconsistent with itself or with its key files.
    #[error("invalid key ring at {}: {reason}", dir.display())]
    InvalidRing {
        /// The key ring directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No key with this id is in the ring.
    #[error("key {0} is not in the key ring")]
    UnknownKey(KeyId),
    /// The active signing key cannot be removed; rotate first.
    #[error("key {0} is the active signing key; rotate to a new key before removing it")]
    ActiveKey(KeyId),
    /// The operating system's random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    /// A certificate, root key or revocation list is refused by the format (its message says why).
    #[error(transparent)]
    Format(#[from] verifier::Error),
    /// A key is already waiting to become the active key; certify and activate it, or retire it, first.
    #[error("key {0} is already pending (prepared to become the active key); rotate to it or retire it first")]
    PendingExists(KeyId),
    /// With root keys in the ring, a key may sign only while a certificate covers it.
    #[error("key {key_id} has no certificate that covers {what}; with root keys configured, a key signs only while a root's certificate covers it: certify its public key with `issuer root certify` and add it with `issuer keys add-certificate`")]
    Uncertified {
        /// The key.
        key_id: KeyId,
        /// What it would sign: a time, and a product when there is one.
        what: String,
    },
    /// The claims break a limit of the token format.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
}

impl KeyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KeyError::Io { path: path.into(), source }
    }
}
