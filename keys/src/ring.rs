//! The key ring: one active signing key, at most one pending key (made ahead of a rotation, so its public key can be
//! certified or published before it signs), and retired keys whose tokens stay valid, kept in a directory. With root
//! keys in the ring, each key carries the certificates the roots signed for it.
//!
//! Layout of a key ring directory (mode 0700):
//! - `ring.txt`: the manifest, one line per key: `active|pending|retired <key id> <created, RFC 3339>`; `#` starts a
//!   comment.
//! - `<key id>.key`: the secret key of the active or pending key, PKCS#8 PEM, mode 0600.
//! - `<key id>.pub`: the public key, SPKI PEM with its one-line form in the comment.
//! - `<key id>.cert`: the key's certificates (`lkc1.` lines), when roots certified it.
//! - `roots.txt`: the root keys (`lrk1.` lines) whose certificates the ring holds; with roots, a key signs only while
//!   a certificate covers it.
//!
//! File names and comments are not trusted: every key id is recomputed from the key and must match the manifest, and
//! every certificate is checked against the roots.

use std::fs;
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use verifier::{Certificate, Claims, KeyId, KeySet, PublicKey, RootKey};

use crate::files::{read_secret_key, write_file, write_secret_key, Overwrite};
use crate::{public_key_from_pem, public_key_pem, KeyError, SecretKey};

const MANIFEST: &str = "ring.txt";
const ROOTS: &str = "roots.txt";

/// Whether a ring key signs new tokens or only keeps verifying old ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Signs every new token. Exactly one key is active.
    Active,
    /// No longer signs; tokens it signed still verify while its public key is published.
    Retired,
    /// Made ahead of a rotation: signs nothing yet. Its public key can be certified by a root (or published to apps)
    /// before `rotate` makes it the active key.
    Pending,
}

impl KeyStatus {
    /// The word used in the manifest and by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Retired => "retired",
            KeyStatus::Pending => "pending",
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

/// One active signing key, an optional pending key, retired public keys, and the roots with their certificates.
#[derive(Debug)]
pub struct KeyRing {
    active: SecretKey,
    pending: Option<SecretKey>,
    /// Every key: the active one first, then the pending one, then retired keys from newest to oldest.
    entries: Vec<RingEntry>,
    /// The roots and the certificates of ring keys they signed (no plain key).
    certified: KeySet,
}

impl KeyRing {
    /// A ring with one freshly generated active key.
    pub fn generate() -> Result<Self, KeyError> {
        let active = SecretKey::generate()?;
        let entry = RingEntry { public: active.public_key().clone(), created_at: now(), status: KeyStatus::Active };
        Ok(KeyRing { active, pending: None, entries: vec![entry], certified: KeySet::new() })
    }

    /// The active signing key.
    pub fn active(&self) -> &SecretKey {
        &self.active
    }

    /// The pending key, made ahead of a rotation ([`KeyRing::prepare`]).
    pub fn pending(&self) -> Option<&SecretKey> {
        self.pending.as_ref()
    }

    /// Every key: the active one first, then the pending one, then retired keys from newest to oldest.
    pub fn entries(&self) -> &[RingEntry] {
        &self.entries
    }

    /// What apps may trust: every key of the ring (active, pending, retired), the roots, and the certificates.
    pub fn public_key_set(&self) -> KeySet {
        let mut set = self.certified.clone();
        for e in &self.entries {
            set.insert(e.public.clone());
        }
        set
    }

    /// The root keys: with any, a key signs only while one of its certificates covers it.
    pub fn roots(&self) -> impl Iterator<Item = &RootKey> {
        self.certified.roots()
    }

    /// Whether the ring has root keys (and so signs only with certified keys).
    pub fn has_roots(&self) -> bool {
        self.certified.roots().next().is_some()
    }

    /// The certificates of the ring's keys.
    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.certified.certificates()
    }

    /// The certificates of one key.
    pub fn certificates_of(&self, key_id: KeyId) -> impl Iterator<Item = &Certificate> {
        self.certified.certificates().filter(move |c| c.key_id() == key_id)
    }

    /// Adds a root key: from now on, the ring signs only with keys it certified.
    pub fn add_root(&mut self, root: RootKey) {
        self.certified.insert_root(root);
    }

    /// Adds a certificate of one of the ring's keys, checked against the ring's roots. Returns it.
    pub fn add_certificate(&mut self, text: &str) -> Result<Certificate, KeyError> {
        let untrusted = verifier::UntrustedCertificate::parse(text)?;
        let certificate = untrusted.verify(&self.certified)?;
        if !self.entries.iter().any(|e| e.public.key_id() == certificate.key_id()) {
            return Err(KeyError::UnknownKey(certificate.key_id()));
        }
        Ok(self.certified.add_certificate(text)?.clone())
    }

    /// The certificate of `key_id` that covers signing at `at` (for `product`, when given) and ends last.
    pub fn covering_certificate(
        &self,
        key_id: KeyId,
        at: OffsetDateTime,
        product: Option<&str>,
    ) -> Option<&Certificate> {
        self.certificates_of(key_id).filter(|c| c.covers(at, product).is_ok()).max_by_key(|c| c.not_after())
    }

    /// The certificate the active key signs under at `at` (for `product`): `Ok(None)` for a ring without roots,
    /// [`KeyError::Uncertified`] when the ring has roots and no certificate covers it.
    pub fn signing_certificate(
        &self,
        at: OffsetDateTime,
        product: Option<&str>,
    ) -> Result<Option<&Certificate>, KeyError> {
        if !self.has_roots() {
            return Ok(None);
        }
        let key_id = self.active.key_id();
        match self.covering_certificate(key_id, at, product) {
            Some(certificate) => Ok(Some(certificate)),
            None => {
                let at = at.format(&Rfc3339).unwrap_or_else(|_| at.to_string());
                let what = match product {
                    Some(product) => format!("{at} for product `{product}`"),
                    None => at,
                };
                Err(KeyError::Uncertified { key_id, what })
            }
        }
    }

    /// Signs claims with the active key.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        self.active.sign(claims)
    }

    /// Makes the pending key the active one, or, without a pending key, generates a new active key; the previous
    /// active key becomes retired (its tokens keep verifying). Returns the new id.
    pub fn rotate(&mut self) -> Result<KeyId, KeyError> {
        let next = match self.pending.take() {
            Some(pending) => pending,
            None => {
                let next = SecretKey::generate()?;
                let entry =
                    RingEntry { public: next.public_key().clone(), created_at: now(), status: KeyStatus::Active };
                self.entries.push(entry);
                next
            }
        };
        for e in &mut self.entries {
            e.status = if e.public.key_id() == next.key_id() { KeyStatus::Active } else { KeyStatus::Retired };
        }
        self.active = next;
        self.sort_entries();
        Ok(self.active.key_id())
    }

    /// Generates the pending key of the next rotation: it signs nothing until [`KeyRing::rotate`], so its public key
    /// can be certified by a root, or published to apps, first. Returns its id.
    pub fn prepare(&mut self) -> Result<KeyId, KeyError> {
        if let Some(pending) = &self.pending {
            return Err(KeyError::PendingExists(pending.key_id()));
        }
        let next = SecretKey::generate()?;
        let id = next.key_id();
        self.entries.push(RingEntry {
            public: next.public_key().clone(),
            created_at: now(),
            status: KeyStatus::Pending,
        });
        self.pending = Some(next);
        self.sort_entries();
        Ok(id)
    }

    fn sort_entries(&mut self) {
        let rank = |s: KeyStatus| match s {
            KeyStatus::Active => 0,
            KeyStatus::Pending => 1,
            KeyStatus::Retired => 2,
        };
        self.entries.sort_by_key(|e| (rank(e.status), std::cmp::Reverse(e.created_at)));
    }

    /// Drops a retired (or pending) key from the ring: tokens it signed stop verifying once apps get the new public
    /// key set.
    pub fn remove(&mut self, key_id: KeyId) -> Result<(), KeyError> {
        if key_id == self.active.key_id() {
            return Err(KeyError::ActiveKey(key_id));
        }
        let before = self.entries.len();
        self.entries.retain(|e| e.public.key_id() != key_id);
        if self.entries.len() == before {
            return Err(KeyError::UnknownKey(key_id));
        }
        if self.pending.as_ref().is_some_and(|p| p.key_id() == key_id) {
            self.pending = None;
        }
        let mut kept = KeySet::new();
        for root in self.certified.roots() {
            kept.insert_root(root.clone());
        }
        for certificate in self.certified.certificates().filter(|c| c.key_id() != key_id) {
            kept.add_certificate(&certificate.to_string())?;
        }
        self.certified = kept;
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
        let mut pending = None;
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
                "pending" if pending.is_some() => return Err(invalid("more than one pending key".into())),
                "pending" => {
                    let secret = read_secret_key(&key_path(dir, key_id, "key"))?;
                    let public = secret.public_key().clone();
                    pending = Some(secret);
                    (KeyStatus::Pending, public)
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
        let certified = read_certified(dir, &entries)?;
        let mut ring = KeyRing { active, pending, entries, certified };
        ring.sort_entries();
        Ok(ring)
    }

    /// Writes the ring to `dir`: key files that are missing, then the manifest (atomically replaced).
    ///
    /// Files of keys no longer in the ring are left in place; delete them by hand once no app trusts them.
    pub fn save(&self, dir: &Path) -> Result<(), KeyError> {
        for secret in std::iter::once(&self.active).chain(&self.pending) {
            let secret_path = key_path(dir, secret.key_id(), "key");
            if !secret_path.exists() {
                write_secret_key(secret, &secret_path, Overwrite::Refuse)?;
            }
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
        self.save_certified(dir)?;
        write_file(&dir.join(MANIFEST), manifest.as_bytes(), 0o644, Overwrite::Replace)
    }

    /// Writes `roots.txt` and the `.cert` files: before the manifest, so a ring whose manifest names a new key
    /// already has that key's certificate when the manifest arrives.
    fn save_certified(&self, dir: &Path) -> Result<(), KeyError> {
        if !self.has_roots() {
            return Ok(());
        }
        let mut roots = String::from("# Root keys that certify this ring's signing keys (`lrk1.` lines).\n");
        for root in self.certified.roots() {
            roots.push_str(&format!("{root}\n"));
        }
        write_file(&dir.join(ROOTS), roots.as_bytes(), 0o644, Overwrite::Replace)?;
        for e in &self.entries {
            let lines: String = self.certificates_of(e.public.key_id()).map(|c| format!("{c}\n")).collect();
            if !lines.is_empty() {
                write_file(&key_path(dir, e.public.key_id(), "cert"), lines.as_bytes(), 0o644, Overwrite::Replace)?;
            }
        }
        Ok(())
    }
}

/// The roots in `roots.txt` (if any) and the certificates of `entries` in their `.cert` files, each checked.
fn read_certified(dir: &Path, entries: &[RingEntry]) -> Result<KeySet, KeyError> {
    let mut certified = KeySet::new();
    let roots_path = dir.join(ROOTS);
    match fs::read_to_string(&roots_path) {
        Ok(text) => {
            refuse_writable_by_others(&roots_path)?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                certified.insert_root(
                    line.parse()
                        .map_err(|e| KeyError::InvalidRing { dir: dir.into(), reason: format!("{ROOTS}: {e}") })?,
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(KeyError::io(&roots_path, e)),
    }
    for e in entries {
        let path = key_path(dir, e.public.key_id(), "cert");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(KeyError::io(&path, err)),
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let certificate = certified.add_certificate(line).map_err(|err| KeyError::InvalidRing {
                dir: dir.into(),
                reason: format!("{}: {err}", path.display()),
            })?;
            if certificate.key_id() != e.public.key_id() {
                return Err(KeyError::InvalidRing {
                    dir: dir.into(),
                    reason: format!(
                        "{} certifies key {}, not {}",
                        path.display(),
                        certificate.key_id(),
                        e.public.key_id()
                    ),
                });
            }
        }
    }
    Ok(certified)
}

fn key_path(dir: &Path, key_id: KeyId, ext: &str) -> PathBuf {
    dir.join(format!("{key_id}.{ext}"))
}

fn now() -> OffsetDateTime {
    // Whole seconds: the manifest stores RFC 3339 without fractions, so a saved ring reads back equal.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
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
    fn a_pending_key_is_published_first_and_signs_only_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = KeyRing::create(dir.path()).unwrap();
        let first = ring.active().key_id();
        let pending = ring.prepare().unwrap();
        assert!(matches!(ring.prepare().unwrap_err(), KeyError::PendingExists(id) if id == pending));
        ring.save(dir.path()).unwrap();
        let mut ring = KeyRing::open(dir.path()).unwrap();
        assert_eq!(ring.active().key_id(), first, "a pending key does not sign");
        assert_eq!(ring.pending().unwrap().key_id(), pending);
        assert!(ring.public_key_set().get(pending).is_some(), "published ahead of the rotation");
        assert_eq!(ring.rotate().unwrap(), pending);
        ring.save(dir.path()).unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        let statuses: Vec<_> = ring.entries().iter().map(|e| (e.public.key_id(), e.status)).collect();
        assert_eq!(statuses, vec![(pending, KeyStatus::Active), (first, KeyStatus::Retired)]);
        assert!(ring.pending().is_none());
    }

    #[test]
    fn with_roots_the_ring_signs_only_under_a_covering_certificate() {
        use time::macros::datetime;
        let dir = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let root = crate::Root::create(&root_dir.path().join("root")).unwrap();
        let mut ring = KeyRing::create(dir.path()).unwrap();
        let at = datetime!(2026-06-01 0:00 UTC);
        assert!(ring.signing_certificate(at, None).unwrap().is_none(), "no roots: plain keys sign");
        ring.add_root(root.public().clone());
        assert!(matches!(ring.signing_certificate(at, None).unwrap_err(), KeyError::Uncertified { .. }));
        let cert = root
            .certify(
                ring.active().public_key(),
                datetime!(2026-01-01 0:00 UTC),
                datetime!(2027-01-01 0:00 UTC),
                Some("acme-cad"),
            )
            .unwrap();
        ring.add_certificate(&cert).unwrap();
        ring.save(dir.path()).unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        assert_eq!(ring.signing_certificate(at, Some("acme-cad")).unwrap().unwrap().to_string(), cert);
        assert!(ring.signing_certificate(at, Some("acme-viewer")).is_err(), "outside the scope");
        assert!(ring.signing_certificate(datetime!(2027-01-02 0:00 UTC), Some("acme-cad")).is_err(), "expired");
        // A certificate of a key that is not in the ring is refused.
        let stranger = SecretKey::generate().unwrap();
        let other = root.certify(stranger.public_key(), at, at, None).unwrap();
        let mut ring = ring;
        assert!(matches!(ring.add_certificate(&other).unwrap_err(), KeyError::UnknownKey(_)));
        // A damaged certificate file is refused when the ring is opened.
        let path = key_path(dir.path(), ring.active().key_id(), "cert");
        fs::write(&path, "lkc1.AAAA\n").unwrap();
        assert!(matches!(KeyRing::open(dir.path()).unwrap_err(), KeyError::InvalidRing { .. }));
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
