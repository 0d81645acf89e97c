//! The signing key ring shared by the tasks of one instance, reloaded when its files change.
//!
//! Several instances on one database sign with the same key ring: the vendor distributes the same ring directory to
//! every instance (see docs/operations.md). After a rotation the new `ring.txt` reaches each instance, which must
//! then sign with the new active key without a restart. [`SharedKeyRing`] holds the ring loaded last and reloads it
//! when the manifest's content changed: periodically ([`SharedKeyRing::spawn_watcher`]), and on demand, e.g. when a
//! client presents a token signed by a key id this instance does not know yet ([`SharedKeyRing::reload_if_changed`]).
//!
//! A ring that fails to load (say `ring.txt` arrived before the new key file) leaves the previous ring in use; the
//! next check tries again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keys::{KeyError, KeyRing};
use verifier::{KeyId, KeySet};

use crate::store::{RecordedKey, Store, StoreError};

/// The manifest file of a key ring directory (see the `keys` crate).
const MANIFEST: &str = "ring.txt";

/// A key ring directory's current content, swapped atomically when the files change.
#[derive(Debug)]
pub struct SharedKeyRing {
    dir: PathBuf,
    loaded: RwLock<Loaded>,
    /// When set, a reloaded ring is taken only if this key signs in it: the signing key the store records.
    admitted: RwLock<Option<KeyId>>,
}

#[derive(Debug)]
struct Loaded {
    ring: Arc<KeyRing>,
    /// The ring's public keys, built once per load: every refresh verifies against them.
    keys: Arc<KeySet>,
    /// The manifest's bytes when `ring` was loaded.
    manifest: Vec<u8>,
}

impl SharedKeyRing {
    /// Loads the key ring in `dir`.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let manifest = read_manifest(dir)?;
        let ring = Arc::new(KeyRing::open(dir)?);
        Ok(SharedKeyRing {
            dir: dir.to_path_buf(),
            loaded: RwLock::new(Loaded::new(ring, manifest)),
            admitted: RwLock::new(None),
        })
    }

    /// The directory the ring is loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ring loaded last. Take it once per request: it stays the same ring for as long as it is held, even if a
    /// reload happens meanwhile.
    pub fn current(&self) -> Arc<KeyRing> {
        self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner()).ring.clone()
    }

    /// The public keys of the ring loaded last.
    pub fn public_keys(&self) -> Arc<KeySet> {
        self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner()).keys.clone()
    }

    /// From now on, take a reloaded ring only if `key` is its active key (`None`: any ring). The service sets it to
    /// the signing key the store records, so no instance signs with a key that was not recorded: a ring whose files
    /// arrived before the rotation was recorded waits for the record (the next reload takes it).
    pub fn admit_only(&self, key: Option<KeyId>) {
        *self.admitted.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
    }

    /// Reloads the ring when `ring.txt` changed since the last load; `Ok(true)` when a new ring is now in use.
    ///
    /// Cheap when nothing changed (one read of a small file). On error the previous ring stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let manifest = read_manifest(&self.dir)?;
        if self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner()).manifest == manifest {
            return Ok(false);
        }
        let ring = Arc::new(KeyRing::open(&self.dir)?);
        let admitted = *self.admitted.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(admitted) = admitted.filter(|id| *id != ring.active().key_id()) {
            tracing::warn!(
                key_id = %ring.active().key_id(),
                recorded = %admitted,
                dir = %self.dir.display(),
                "the key ring files changed, but their active key is not the signing key the store records; still \
                 signing with the previous ring (record the rotation with `issuer keys rotate` on the instance that made it)"
            );
            return Ok(false);
        }
        if let Err(e) = ring.signing_certificate(time::OffsetDateTime::now_utc(), None) {
            tracing::warn!(
                error = %e,
                dir = %self.dir.display(),
                "the key ring files changed, but no certificate covers their active key now; still signing with the \
                 previous ring"
            );
            return Ok(false);
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if loaded.manifest == manifest {
            return Ok(false); // another task reloaded the same files meanwhile
        }
        tracing::info!(
            key_id = %ring.active().key_id(),
            keys = ring.entries().len(),
            dir = %self.dir.display(),
            "reloaded the signing key ring"
        );
        *loaded = Loaded::new(ring, manifest);
        Ok(true)
    }

    /// Whether `ring.txt` differs from the one of the ring in use (one read of a small file).
    pub fn files_changed(&self) -> Result<bool, KeyError> {
        let manifest = read_manifest(&self.dir)?;
        Ok(self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner()).manifest != manifest)
    }

    /// Asks `store` which key signs and admits only that key from now on ([`SharedKeyRing::admit_only`]); returns it.
    pub async fn admit_recorded(&self, store: &dyn Store) -> Result<Option<KeyId>, StoreError> {
        let keys = store.recorded_keys().await?;
        let recorded = RecordedKey::signing(&keys).and_then(|k| k.key_id.parse().ok());
        self.admit_only(recorded);
        Ok(recorded)
    }

    /// Reloads the ring if its files changed and their active key is the one `store` records: the check of a
    /// request that presents a token of a key this instance has not loaded. Unchanged files (the usual case, also
    /// under a flood of such tokens) cost one small file read and no store query. Whether a new ring is in use.
    pub async fn reload_if_recorded(self: &Arc<Self>, store: &dyn Store) -> bool {
        let ring = Arc::clone(self);
        match tokio::task::spawn_blocking(move || ring.files_changed()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) => return false,
            Ok(Err(e)) => {
                self.log_reload_error(&e);
                return false;
            }
        }
        if let Err(e) = self.admit_recorded(store).await {
            tracing::warn!(error = %e, "cannot read the recorded signing keys; not reloading the key ring");
            return false;
        }
        self.reload_logged().await
    }

    /// [`SharedKeyRing::reload_if_changed`] off the async threads (file reads and key parsing block), failures logged;
    /// whether a new ring is in use.
    async fn reload_logged(self: &Arc<Self>) -> bool {
        let ring = Arc::clone(self);
        match tokio::task::spawn_blocking(move || ring.reload_if_changed()).await {
            Ok(Ok(reloaded)) => reloaded,
            Ok(Err(e)) => {
                self.log_reload_error(&e);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the key ring reload task failed");
                false
            }
        }
    }

    fn log_reload_error(&self, e: &KeyError) {
        tracing::warn!(error = %e, dir = %self.dir.display(), "cannot reload the signing key ring; still using the previous one");
    }

    /// Starts a task that calls [`SharedKeyRing::reload_if_changed`] every `every`, logging failures, until the
    /// returned handle is aborted or the runtime shuts down.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let ring = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate; the ring was just loaded
            loop {
                ticks.tick().await;
                ring.reload_logged().await;
            }
        })
    }

    /// [`SharedKeyRing::spawn_watcher`] that first asks `store` which key signs ([`SharedKeyRing::admit_recorded`]),
    /// each time, and says so (at most once a [`STALE_WARNING_EVERY`]) while the ring in use signs with another key.
    pub fn spawn_watcher_with_store(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let ring = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let mut warned: Option<std::time::Instant> = None;
            let mut warned_expiry: Option<std::time::Instant> = None;
            loop {
                ticks.tick().await;
                if warned_expiry.is_none_or(|t| t.elapsed() >= EXPIRY_WARNING_EVERY)
                    && warn_if_certificate_ends_soon(&ring.current(), time::OffsetDateTime::now_utc())
                {
                    warned_expiry = Some(std::time::Instant::now());
                }
                let recorded = match ring.admit_recorded(&*store).await {
                    Ok(recorded) => recorded,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the recorded signing keys; not reloading the key ring");
                        continue;
                    }
                };
                let signing = ring.current().active().key_id();
                let due = warned.is_none_or(|t| t.elapsed() >= STALE_WARNING_EVERY);
                if let Some(recorded) = recorded.filter(|r| *r != signing && due) {
                    tracing::warn!(
                        key_id = %signing,
                        recorded = %recorded,
                        dir = %ring.dir.display(),
                        "signing with a key the store records as retired: copy the current keys/ directory here"
                    );
                    warned = Some(std::time::Instant::now());
                }
                ring.reload_logged().await;
            }
        })
    }
}

/// How often a running instance says it signs with a key the store records as retired.
const STALE_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long before its signing certificate ends an instance starts saying so.
pub const CERTIFICATE_WARNING_AHEAD: time::Duration = time::Duration::days(30);

/// How often it says so.
const EXPIRY_WARNING_EVERY: Duration = Duration::from_secs(3600);

/// Logs a warning when the ring has roots and the certificate its active key signs under now ends within
/// [`CERTIFICATE_WARNING_AHEAD`] (or none covers it); whether it warned.
pub fn warn_if_certificate_ends_soon(ring: &KeyRing, now: time::OffsetDateTime) -> bool {
    match ring.signing_certificate(now, None) {
        Ok(Some(certificate)) if certificate.not_after() - now < CERTIFICATE_WARNING_AHEAD => {
            tracing::warn!(
                key_id = %certificate.key_id(),
                not_after = %certificate.not_after(),
                "the signing key's certificate ends soon: prepare, certify and rotate to a new key before then \
                 (docs/operations.md, \"Rotating a certified key\"); after it ends this instance refuses to sign"
            );
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::error!(error = %e, "this instance cannot sign: no certificate covers its signing key now");
            true
        }
    }
}

impl Loaded {
    fn new(ring: Arc<KeyRing>, manifest: Vec<u8>) -> Self {
        Loaded { keys: Arc::new(ring.public_key_set()), ring, manifest }
    }
}

/// What decides whether the ring changed: `ring.txt`, and the roots and certificates beside it (adding a root or a
/// renewed certificate changes no manifest line, and must reach a running instance too). A few small files.
fn read_manifest(dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = dir.join(MANIFEST);
    let mut seen = std::fs::read(&path).map_err(|source| KeyError::Io { path, source })?;
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
        move |source| KeyError::Io { path: path.to_path_buf(), source }
    }
    let mut certified: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cert") || p.file_name().is_some_and(|n| n == "roots.txt"))
        .collect();
    certified.sort();
    for path in certified {
        seen.push(0);
        seen.extend_from_slice(path.file_name().unwrap_or_default().as_encoded_bytes());
        seen.push(0);
        match std::fs::read(&path) {
            Ok(bytes) => seen.extend_from_slice(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // removed meanwhile
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn unchanged_files_keep_the_ring_and_a_rotation_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let original = KeyRing::create(dir.path()).unwrap();
        let shared = SharedKeyRing::open(dir.path()).unwrap();
        assert!(!shared.reload_if_changed().unwrap());
        let held = shared.current();
        assert_eq!(held.active().key_id(), original.active().key_id());

        // The vendor rotates on another machine and distributes the files; here they are written in place.
        let mut rotated = KeyRing::open(dir.path()).unwrap();
        let new_id = rotated.rotate().unwrap();
        rotated.save(dir.path()).unwrap();

        assert!(shared.reload_if_changed().unwrap());
        assert_eq!(shared.current().active().key_id(), new_id);
        assert_eq!(shared.current().entries().len(), 2, "the old key stays as a retired key");
        assert_eq!(held.active().key_id(), original.active().key_id(), "a ring already taken does not change");
        assert!(!shared.reload_if_changed().unwrap());
    }

    #[test]
    fn a_new_root_or_certificate_is_a_change_of_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        KeyRing::create(dir.path()).unwrap();
        let shared = SharedKeyRing::open(dir.path()).unwrap();
        let root = keys::Root::create(&root_dir.path().join("root")).unwrap();
        let mut ring = KeyRing::open(dir.path()).unwrap();
        ring.add_root(root.public().clone());
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        ring.add_certificate(&root.certify(ring.active().public_key(), now - day, now + day, None).unwrap()).unwrap();
        ring.save(dir.path()).unwrap();
        assert!(shared.reload_if_changed().unwrap(), "ring.txt is unchanged, roots.txt and the .cert file are new");
        assert!(shared.current().has_roots());
        assert!(!shared.reload_if_changed().unwrap());
        // A renewed certificate alone is a change too.
        let mut ring = KeyRing::open(dir.path()).unwrap();
        ring.add_certificate(&root.certify(ring.active().public_key(), now, now + day * 30, None).unwrap()).unwrap();
        ring.save(dir.path()).unwrap();
        assert!(shared.reload_if_changed().unwrap());
        assert_eq!(shared.current().certificates().count(), 2);
    }

    #[test]
    fn a_broken_ring_keeps_the_previous_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let original = KeyRing::create(dir.path()).unwrap();
        let shared = SharedKeyRing::open(dir.path()).unwrap();
        // A manifest naming a key whose file has not arrived yet.
        std::fs::write(dir.path().join(MANIFEST), "active 0000000000000000 2025-01-01T00:00:00Z\n").unwrap();
        assert!(shared.reload_if_changed().is_err());
        assert_eq!(shared.current().active().key_id(), original.active().key_id());
        // Once the files are consistent again the next check succeeds.
        original.save(dir.path()).unwrap();
        assert!(!shared.reload_if_changed().unwrap(), "same manifest as the ring in use");
    }

    #[tokio::test]
    async fn the_watcher_reloads_a_rotated_ring() {
        let dir = tempfile::tempdir().unwrap();
        KeyRing::create(dir.path()).unwrap();
        let shared = Arc::new(SharedKeyRing::open(dir.path()).unwrap());
        let watcher = shared.spawn_watcher(Duration::from_millis(20));
        let mut rotated = KeyRing::open(dir.path()).unwrap();
        let new_id = rotated.rotate().unwrap();
        rotated.save(dir.path()).unwrap();
        for _ in 0..100 {
            if shared.current().active().key_id() == new_id {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(shared.current().active().key_id(), new_id);
        watcher.abort();
    }
}
