//! The key ring: one active signing key plus retired keys whose tokens stay valid, kept in a directory.
//!
//! Layout of a key ring directory (mode 0700):
//! - `ring.txt`: the manifest, one line per key: `active|retired <key id> <created, RFC 3339>`; `#` starts a comment.
//! - `<key id>.key`: the secret key, PKCS#8 PEM, mode 0600.
//! - `<key id>.pub`: the public key, SPKI PEM with its one-line form in the comment.
//!
//! File names and comments are not trusted: every key id is recomputed from the key and must match the manifest.

use std::fs;
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use verifier::{Claims, KeyId, KeySet, PublicKey};

use crate::files::{read_secret_key, write_file, write_secret_key, Overwrite};
use crate::{public_key_from_pem, public_key_pem, KeyError, SecretKey};

const MANIFEST: &str = "ring.txt";

/// Whether a ring key signs new tokens or only keeps verifying old ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Signs every new token. Exactly one key is active.
    Active,
    /// No longer signs; tokens it signed still verify while its public key is published.
    Retired,
}

impl KeyStatus {
    /// The word used in the manifest and by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Retired => "retired",
        }
    }
}

/// One key of the ring, as listed to people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingEntry {
    /// The public key (its key id included).
    pub public: PublicKey,
    /// When the key was generated.
    pub created_at: OffsetDateTime,
    /// Active or retired.
    pub status: KeyStatus,
}

/// One active signing key plus retired public keys.
#[derive(Debug)]
pub struct KeyRing {
    active: SecretKey,
    /// Every key, the active one first.
    entries: Vec<RingEntry>,
}

impl KeyRing {
    /// A ring with one freshly generated active key.
    pub fn generate() -> Result<Self, KeyError> {
        let active = SecretKey::generate()?;
        let entry = RingEntry { public: active.public_key().clone(), created_at: now(), status: KeyStatus::Active };
        Ok(KeyRing { active, entries: vec![entry] })
    }

    /// The active signing key.
    pub fn active(&self) -> &SecretKey {
        &self.active
    }

    /// Every key, the active one first, then retired keys from newest to oldest.
    pub fn entries(&self) -> &[RingEntry] {
        &self.entries
    }

    /// The public keys apps should trust: the active key and every retired one.
    pub fn public_key_set(&self) -> KeySet {
        let mut set = KeySet::new();
        for e in &self.entries {
            set.insert(e.public.clone());
        }
        set
    }

    /// Signs claims with the active key.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        self.active.sign(claims)
    }

    /// Generates a new active key; the previous one becomes retired (its tokens keep verifying). Returns the new id.
    pub fn rotate(&mut self) -> Result<KeyId, KeyError> {
        let next = SecretKey::generate()?;
        for e in &mut self.entries {
            e.status = KeyStatus::Retired;
        }
        self.entries
            .insert(0, RingEntry { public: next.public_key().clone(), created_at: now(), status: KeyStatus::Active });
        self.active = next;
        Ok(self.active.key_id())
    }

    /// Drops a retired key from the ring: tokens it signed stop verifying once apps get the new public key set.
    pub fn remove(&mut self, key_id: KeyId) -> Result<(), KeyError> {
        if key_id == self.active.key_id() {
            return Err(KeyError::ActiveKey(key_id));
        }
        let before = self.entries.len();
        self.entries.retain(|e| e.public.key_id() != key_id);
        if self.entries.len() == before {
            return Err(KeyError::UnknownKey(key_id));
        }
        Ok(())
    }

    /// Creates a ring with one new key in `dir` (made with mode 0700 if missing), refusing to replace an existing ring.
    pub fn create(dir: &Path) -> Result<Self, KeyError> {
        if dir.join(MANIFEST).exists() {
            return Err(KeyError::AlreadyExists { path: dir.join(MANIFEST) });
        }
        create_private_dir(dir)?;
        let ring = KeyRing::generate()?;
        ring.save(dir)?;
        Ok(ring)
    }

    /// Loads the ring in `dir`, checking every key against the manifest.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let manifest_path = dir.join(MANIFEST);
        refuse_writable_by_others(dir)?;
        refuse_writable_by_others(&manifest_path)?;
        let text = fs::read_to_string(&manifest_path).map_err(|e| KeyError::io(&manifest_path, e))?;
        let invalid = |reason: String| KeyError::InvalidRing { dir: dir.into(), reason };
        let mut active = None;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [status, id, created] = fields[..] else {
                return Err(invalid(format!("{MANIFEST} line {n}: expected `<status> <key id> <created>`")));
            };
            let key_id: KeyId = id.parse().map_err(|_| invalid(format!("{MANIFEST} line {n}: bad key id `{id}`")))?;
            let created_at = OffsetDateTime::parse(created, &Rfc3339)
                .map_err(|_| invalid(format!("{MANIFEST} line {n}: bad time `{created}`")))?;
            let (status, public) = match status {
                "active" if active.is_some() => return Err(invalid("more than one active key".into())),
                "active" => {
                    let secret = read_secret_key(&key_path(dir, key_id, "key"))?;
                    let public = secret.public_key().clone();
                    active = Some(secret);
                    (KeyStatus::Active, public)
                }
                "retired" => {
                    let path = key_path(dir, key_id, "pub");
                    let text = fs::read_to_string(&path).map_err(|e| KeyError::io(&path, e))?;
                    (KeyStatus::Retired, public_key_from_pem(&text)?)
                }
                other => return Err(invalid(format!("{MANIFEST} line {n}: unknown status `{other}`"))),
            };
            if public.key_id() != key_id {
                return Err(invalid(format!(
                    "{MANIFEST} line {n}: the key file holds key {}, not {key_id}",
                    public.key_id()
                )));
            }
            if entries.iter().any(|e: &RingEntry| e.public.key_id() == key_id) {
                return Err(invalid(format!("{MANIFEST} line {n}: key {key_id} is listed twice")));
            }
            entries.push(RingEntry { public, created_at, status });
        }
        let active = active.ok_or_else(|| invalid("no active key".into()))?;
        // Active first, then newest first: the order `entries` promises.
        entries.sort_by_key(|e| (e.status != KeyStatus::Active, std::cmp::Reverse(e.created_at)));
        Ok(KeyRing { active, entries })
    }

    /// Writes the ring to `dir`: key files that are missing, then the manifest (atomically replaced).
    ///
    /// Files of keys no longer in the ring are left in place; delete them by hand once no app trusts them.
    pub fn save(&self, dir: &Path) -> Result<(), KeyError> {
        let secret_path = key_path(dir, self.active.key_id(), "key");
        if !secret_path.exists() {
            write_secret_key(&self.active, &secret_path, Overwrite::Refuse)?;
        }
        for e in &self.entries {
            let path = key_path(dir, e.public.key_id(), "pub");
            if !path.exists() {
                write_file(&path, public_key_pem(&e.public)?.as_bytes(), 0o644, Overwrite::Refuse)?;
            }
        }
        let mut manifest =
            String::from("# License signing key ring: `<status> <key id> <created>`, active key first.\n");
        for e in &self.entries {
            let created = e.created_at.format(&Rfc3339).map_err(|err| KeyError::InvalidRing {
                dir: dir.into(),
                reason: format!("cannot format time: {err}"),
            })?;
            manifest.push_str(&format!("{} {} {created}\n", e.status.as_str(), e.public.key_id()));
        }
        write_file(&dir.join(MANIFEST), manifest.as_bytes(), 0o644, Overwrite::Replace)
    }
}

fn key_path(dir: &Path, key_id: KeyId, ext: &str) -> PathBuf {
    dir.join(format!("{key_id}.{ext}"))
}

fn now() -> OffsetDateTime {
    // Whole seconds: the manifest stores RFC 3339 without fractions, so a saved ring reads back equal.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| KeyError::io(dir, e))
}

/// Refuses a manifest or ring directory that group or others may write (on Unix): whoever can write `ring.txt`
/// chooses the active signing key.
fn refuse_writable_by_others(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(path).map_err(|e| KeyError::io(path, e))?.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(KeyError::WritableByOthers { path: path.into(), mode });
        }
    }
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ring_saves_and_reopens_equal() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::create(dir.path()).unwrap();
        let reopened = KeyRing::open(dir.path()).unwrap();
        assert_eq!(reopened.entries(), ring.entries());
        assert_eq!(reopened.active().key_id(), ring.active().key_id());
    }

    #[cfg(unix)]
    #[test]
    fn a_manifest_or_directory_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        KeyRing::create(dir.path()).unwrap();
        let manifest = dir.path().join(MANIFEST);
        fs::set_permissions(&manifest, fs::Permissions::from_mode(0o666)).unwrap();
        let err = KeyRing::open(dir.path()).unwrap_err();
        assert!(matches!(&err, KeyError::WritableByOthers { mode: 0o666, .. }), "{err}");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        fs::set_permissions(&manifest, fs::Permissions::from_mode(0o644)).unwrap();
        KeyRing::open(dir.path()).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(KeyRing::open(dir.path()).unwrap_err(), KeyError::WritableByOthers { mode: 0o777, .. }));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn create_refuses_an_existing_ring() {
        let dir = tempfile::tempdir().unwrap();
        KeyRing::create(dir.path()).unwrap();
        assert!(matches!(KeyRing::create(dir.path()).unwrap_err(), KeyError::AlreadyExists { .. }));
    }

    #[test]
    fn rotation_keeps_old_keys_trusted_and_signs_with_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = KeyRing::create(dir.path()).unwrap();
        let old = ring.active().key_id();
        let new = ring.rotate().unwrap();
        ring.save(dir.path()).unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        assert_eq!(ring.active().key_id(), new);
        let statuses: Vec<_> = ring.entries().iter().map(|e| (e.public.key_id(), e.status)).collect();
        assert_eq!(statuses, vec![(new, KeyStatus::Active), (old, KeyStatus::Retired)]);
        let set = ring.public_key_set();
        assert!(set.get(old).is_some() && set.get(new).is_some());
    }

    #[test]
    fn removing_the_active_key_is_refused_and_retired_key_can_go() {
        let mut ring = KeyRing::generate().unwrap();
        let old = ring.active().key_id();
        assert!(matches!(ring.remove(old).unwrap_err(), KeyError::ActiveKey(_)));
        ring.rotate().unwrap();
        ring.remove(old).unwrap();
        assert!(ring.public_key_set().get(old).is_none());
        assert!(matches!(ring.remove(old).unwrap_err(), KeyError::UnknownKey(_)));
    }

    #[test]
    fn manifest_naming_the_wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::create(dir.path()).unwrap();
        let id = ring.active().key_id();
        let manifest = fs::read_to_string(dir.path().join(MANIFEST)).unwrap();
        // Point the manifest at a file holding another key.
        let other = SecretKey::generate().unwrap();
        fs::remove_file(key_path(dir.path(), id, "key")).unwrap();
        write_secret_key(&other, &key_path(dir.path(), id, "key"), Overwrite::Refuse).unwrap();
        fs::write(dir.path().join(MANIFEST), manifest).unwrap();
        let err = KeyRing::open(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::InvalidRing { .. }), "{err}");
    }

    #[test]
    fn corrupted_manifest_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        KeyRing::create(dir.path()).unwrap();
        fs::write(dir.path().join(MANIFEST), "active nothex 2026-01-01T00:00:00Z\n").unwrap();
        let err = KeyRing::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
