//! The vendor's root key: it signs no token, only certificates of signing keys. Apps embed its public line
//! (`lrk1.`), so the signing key can be rotated without an app update.
//!
//! Keep the root apart from the issuer, ideally on a machine that is never online: it is needed only to certify a
//! new signing key, a few times a year. Layout of a root directory (mode 0700):
//! - `root.key`: the secret key, PKCS#8 PEM, mode 0600;
//! - `root.pub`: the root key line apps embed (`lrk1.…`), with a comment line.

use std::fs;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use verifier::{PublicKey, RootKey};

use crate::files::{read_secret_key, write_file, write_secret_key, Overwrite};
use crate::ring::create_private_dir;
use crate::{KeyError, SecretKey};

/// File name of the root's secret key in a root directory.
pub const ROOT_SECRET_FILE: &str = "root.key";
/// File name of the root's public key line in a root directory.
pub const ROOT_PUBLIC_FILE: &str = "root.pub";

/// A root key with its secret: what certifies signing keys.
#[derive(Debug)]
pub struct Root {
    secret: SecretKey,
    public: RootKey,
}

impl Root {
    /// Creates a root in `dir` (made with mode 0700 if missing), refusing to replace one.
    pub fn create(dir: &Path) -> Result<Self, KeyError> {
        let secret_path = dir.join(ROOT_SECRET_FILE);
        if secret_path.exists() {
            return Err(KeyError::AlreadyExists { path: secret_path });
        }
        create_private_dir(dir)?;
        let root = Root::from_secret(SecretKey::generate()?);
        write_secret_key(&root.secret, &secret_path, Overwrite::Refuse)?;
        let line =
            format!("# License root key {}: embed this line in your apps.\n{}\n", root.public.key_id(), root.public);
        write_file(&dir.join(ROOT_PUBLIC_FILE), line.as_bytes(), 0o644, Overwrite::Refuse)?;
        Ok(root)
    }

    /// Opens the root in `dir` (its secret key file must be private).
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        Ok(Root::from_secret(read_secret_key(&dir.join(ROOT_SECRET_FILE))?))
    }

    fn from_secret(secret: SecretKey) -> Self {
        let public = RootKey::from(secret.public_key().clone());
        Root { secret, public }
    }

    /// The root key line apps embed.
    pub fn public(&self) -> &RootKey {
        &self.public
    }

    /// Certifies the signing key `key` for signing times `not_before..=not_after`, for `scope`'s product only when
    /// given: the `lkc1.` text to add to the key ring (`issuer keys add-certificate`).
    pub fn certify(
        &self,
        key: &PublicKey,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        scope: Option<&str>,
    ) -> Result<String, KeyError> {
        self.secret.certify(key, not_before, not_after, scope)
    }
}

/// Reads a root key line from text that holds one (`root.pub`, or the line itself); `#` lines are skipped.
pub fn read_root_key(text: &str) -> Result<RootKey, KeyError> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default();
    Ok(line.parse()?)
}

/// Reads a signing key's public key from a file: a `.pub` file of a key ring (SPKI PEM), or a file holding an
/// `lpk1.` line.
pub fn read_public_key_file(path: &Path) -> Result<PublicKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|e| KeyError::io(PathBuf::from(path), e))?;
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        return crate::public_key_from_pem(&text);
    }
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default();
    Ok(line.parse()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use time::macros::datetime;
    use verifier::KeySet;

    use super::*;

    #[test]
    fn a_root_is_created_once_and_certifies_what_apps_then_trust() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::create(dir.path()).unwrap();
        assert!(matches!(Root::create(dir.path()).unwrap_err(), KeyError::AlreadyExists { .. }));
        let text = fs::read_to_string(dir.path().join(ROOT_PUBLIC_FILE)).unwrap();
        assert_eq!(read_root_key(&text).unwrap(), *root.public());
        let reopened = Root::open(dir.path()).unwrap();
        let signing = SecretKey::generate().unwrap();
        let cert = reopened
            .certify(signing.public_key(), datetime!(2026-01-01 0:00 UTC), datetime!(2027-01-01 0:00 UTC), None)
            .unwrap();
        let mut keys = KeySet::new();
        keys.insert_root(root.public().clone());
        assert_eq!(keys.add_certificate(&cert).unwrap().key_id(), signing.key_id());
    }
}
