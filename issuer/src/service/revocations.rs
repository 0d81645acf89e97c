//! The signed revocation list (`lrl1.`, docs/token-format.md §14): how a revocation reaches apps that never refresh
//! a token, by `GET /v1/revocations` or by a file (`issuer revocations export`).
//!
//! The list names every revoked license. Its sequence number is the number of revoked licenses: a revocation is
//! final and licenses are never deleted, so the set only grows, and every instance on one store numbers the same set
//! the same way without any counter to share. A signed list is kept for [`REVOCATION_LIST_TTL`] (a flood of
//! requests signs one list, not one per request); a revocation on this instance drops it at once, so only other
//! instances may answer with the previous list, for at most that long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use verifier::LicenseId;

use super::{Licensing, ServiceError};

/// How long a signed revocation list is served before it is made again.
pub const REVOCATION_LIST_TTL: Duration = Duration::from_secs(5);

/// A revocation list signed with the ring's active key, and the certificate apps need to trust that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRevocations {
    /// The list text (`lrl1.`).
    pub list: String,
    /// Its sequence number: the number of revoked licenses.
    pub sequence: u64,
    /// When it was signed.
    pub issued_at: OffsetDateTime,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The certificate (`lkc1.`) of that key, when the ring has roots.
    pub certificate: Option<String>,
}

impl SignedRevocations {
    /// The license file text: the list, then the certificate of its key (docs/token-format.md §15).
    pub fn file_text(&self) -> String {
        match &self.certificate {
            Some(certificate) => format!("{}\n{certificate}\n", self.list),
            None => format!("{}\n", self.list),
        }
    }
}

/// The list signed last, with when (monotonic clock) and by which key.
#[derive(Debug, Default)]
pub(super) struct RevocationCache(tokio::sync::Mutex<Option<(Instant, Arc<SignedRevocations>)>>);

impl RevocationCache {
    /// Forgets the signed list (after a revocation on this instance). Waits for a list being signed meanwhile,
    /// whose read may predate the revocation, and drops it too.
    pub(super) async fn clear(&self) {
        *self.0.lock().await = None;
    }
}

impl Licensing {
    /// The current revocation list, signed now or at most [`REVOCATION_LIST_TTL`] ago by the active key.
    pub async fn revocation_list(&self) -> Result<Arc<SignedRevocations>, ServiceError> {
        let mut cached = self.revocations.0.lock().await;
        let ring = self.ring.current();
        let signer = ring.active().key_id().to_string();
        if let Some((made, list)) = cached.as_ref() {
            if made.elapsed() < REVOCATION_LIST_TTL && list.key_id == signer {
                return Ok(Arc::clone(list));
            }
        }
        let at = self.context(None).at();
        let certificate = ring.signing_certificate(at, None)?.map(ToString::to_string);
        let revoked: Vec<LicenseId> =
            self.store.revoked_licenses().await?.into_iter().map(|id| LicenseId(id.into_bytes())).collect();
        let sequence = revoked.len() as u64;
        let list = ring.active().sign_revocation_list(sequence, at, &revoked)?;
        let signed = Arc::new(SignedRevocations { list, sequence, issued_at: at, key_id: signer, certificate });
        *cached = Some((Instant::now(), Arc::clone(&signed)));
        Ok(signed)
    }
}
