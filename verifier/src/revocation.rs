//! Signed revocation lists: how a license revoked after its token was handed out is revoked on a machine that never
//! asks the issuer again. The app installs the newest list it is given (by file, app update or `GET /v1/revocations`)
//! and passes it to [`crate::Validation`]; a token of a listed license is then [`Error::LicenseRevoked`].
//!
//! Text form (docs/token-format.md §14): `lrl1.` then base64url (no padding) of
//! `version || signing key id || sequence || issued-at || count || entries || signature`, where each entry is the
//! first 8 bytes of SHA-256 over a label and the license id, sorted ascending.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64::Engine as _;
use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::cert::{array, time_at};
use crate::format::limits::MAX_TIME;
use crate::format::revocation::{ENTRY_LEN, FIXED_LEN, MAX_ENTRIES, MAX_TEXT_LEN};
use crate::format::SIGNATURE_LEN;
use crate::format::{B64, FORMAT_VERSION, KEY_ID_LEN, REVOCATION_LIST_LABEL, REVOCATION_LIST_PREFIX, REVOKED_ID_LABEL};
use crate::key::Trusted;
use crate::{Error, KeyId, KeySet, LicenseId};

/// A license's entry in a revocation list: the first 8 bytes of `SHA-256(REVOKED_ID_LABEL || license id)`.
///
/// Hashed rather than cut from the id, because license ids are time-ordered UUIDs whose first bytes are shared by
/// every license made in the same millisecond. Two licenses share an entry with probability 2⁻⁶⁴ per pair.
pub fn revoked_entry(license: &LicenseId) -> [u8; ENTRY_LEN] {
    let digest = Sha256::new().chain_update(REVOKED_ID_LABEL).chain_update(license.0).finalize();
    array(&digest[..ENTRY_LEN])
}

/// A revocation list whose signature verified against a trusted signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct RevocationList {
    signer: KeyId,
    sequence: u64,
    issued_at: OffsetDateTime,
    /// Sorted ascending, no duplicates.
    entries: Vec<[u8; ENTRY_LEN]>,
    signature: [u8; SIGNATURE_LEN],
}

impl RevocationList {
    /// Parses list text and checks its signature with the signing key it names in `keys` (trusted directly, or
    /// certified with a window that covers the list's `issued_at`; a certificate's product scope does not apply,
    /// since a list only withdraws trust).
    ///
    /// Errors: [`Error::InvalidRevocationList`] (text, layout or signature), [`Error::UnknownKey`], and the
    /// certificate window errors.
    pub fn verify(text: &str, keys: &KeySet) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidRevocationList { reason };
        let text = text.trim_ascii();
        if text.len() > MAX_TEXT_LEN {
            return Err(invalid("longer than a list of 1,000,000 licenses"));
        }
        let body =
            text.strip_prefix(REVOCATION_LIST_PREFIX).ok_or(invalid("not a v1 revocation list (expected `lrl1.`)"))?;
        let mut buf = Vec::with_capacity(REVOCATION_LIST_LABEL.len() + body.len() * 3 / 4 + 1);
        buf.extend_from_slice(REVOCATION_LIST_LABEL);
        B64.decode_vec(body, &mut buf).map_err(|_| invalid("not canonical base64url without padding"))?;
        let raw = &buf[REVOCATION_LIST_LABEL.len()..];
        if raw.len() < FIXED_LEN + SIGNATURE_LEN {
            return Err(invalid("too short"));
        }
        if raw[0] != FORMAT_VERSION {
            return Err(invalid("version byte is not 1"));
        }
        let count = u32::from_be_bytes(array(&raw[25..29])) as usize;
        if count > MAX_ENTRIES {
            return Err(invalid("more than 1,000,000 entries"));
        }
        if raw.len() != FIXED_LEN + count * ENTRY_LEN + SIGNATURE_LEN {
            return Err(invalid("length does not match the entry count"));
        }
        let signer = KeyId::from_bytes(array(&raw[1..1 + KEY_ID_LEN]));
        let trusted = keys.trusted(signer).ok_or(Error::UnknownKey { key_id: signer })?;
        let (message, signature) = buf.split_at(buf.len() - SIGNATURE_LEN);
        let signature: [u8; SIGNATURE_LEN] = array(signature);
        trusted
            .key()
            .verifying_key()
            .verify_strict(message, &Signature::from_bytes(&signature))
            .map_err(|_| invalid("the signature does not verify: it was altered or not issued by the vendor"))?;
        let raw = &message[REVOCATION_LIST_LABEL.len()..];
        let sequence = u64::from_be_bytes(array(&raw[9..17]));
        let issued_at = time_at(&raw[17..25]).ok_or(invalid("issued-at is after 9999-12-31T23:59:59Z"))?;
        let entries: Vec<[u8; ENTRY_LEN]> = raw[FIXED_LEN..].chunks_exact(ENTRY_LEN).map(array).collect();
        if entries.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(invalid("entries are not sorted ascending without duplicates"));
        }
        if let Trusted::Certified(_) = trusted {
            keys.check_certified(signer, issued_at, None)?;
        }
        Ok(RevocationList { signer, sequence, issued_at, entries, signature })
    }

    /// Whether the license is on the list.
    pub fn contains(&self, license: &LicenseId) -> bool {
        self.entries.binary_search(&revoked_entry(license)).is_ok()
    }

    /// The list's sequence number: a later list of the same issuer has a larger one.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// When the issuer made the list.
    pub fn issued_at(&self) -> OffsetDateTime {
        self.issued_at
    }

    /// The key that signed it.
    pub fn signer(&self) -> KeyId {
        self.signer
    }

    /// How many licenses it lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it lists no license.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationList")
            .field("signer", &self.signer)
            .field("sequence", &self.sequence)
            .field("issued_at", &self.issued_at)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl fmt::Display for RevocationList {
    /// The list text, `lrl1.<base64url(...)>`; the same text it was read from, apart from whitespace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unsigned = UnsignedRevocationList::from_entries(self.signer, self.sequence, self.issued_at, &self.entries)
            .map_err(|_| fmt::Error)?;
        f.write_str(&unsigned.finish(&self.signature))
    }
}

/// A revocation list ready to be signed: the signing side of the format (the `keys` crate uses it).
#[derive(Clone, Debug)]
pub struct UnsignedRevocationList {
    /// `REVOCATION_LIST_LABEL || body`.
    message: Vec<u8>,
}

impl UnsignedRevocationList {
    /// Encodes the list of `revoked` licenses (any order, duplicates allowed) as number `sequence`, made at
    /// `issued_at`, to be signed by `signer`.
    pub fn new(signer: KeyId, sequence: u64, issued_at: OffsetDateTime, revoked: &[LicenseId]) -> Result<Self, Error> {
        let mut entries: Vec<[u8; ENTRY_LEN]> = revoked.iter().map(revoked_entry).collect();
        entries.sort_unstable();
        entries.dedup();
        UnsignedRevocationList::from_entries(signer, sequence, issued_at, &entries)
    }

    fn from_entries(
        signer: KeyId,
        sequence: u64,
        issued_at: OffsetDateTime,
        entries: &[[u8; ENTRY_LEN]],
    ) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidRevocationList { reason };
        let issued = u64::try_from(issued_at.unix_timestamp())
            .ok()
            .filter(|s| *s <= MAX_TIME)
            .ok_or(invalid("issued-at is outside 1970..=9999"))?;
        if entries.len() > MAX_ENTRIES {
            return Err(invalid("more than 1,000,000 entries"));
        }
        let count = u32::try_from(entries.len()).map_err(|_| invalid("more than 1,000,000 entries"))?;
        let mut message =
            Vec::with_capacity(REVOCATION_LIST_LABEL.len() + FIXED_LEN + entries.len() * ENTRY_LEN + SIGNATURE_LEN);
        message.extend_from_slice(REVOCATION_LIST_LABEL);
        message.push(FORMAT_VERSION);
        message.extend_from_slice(&signer.to_bytes());
        message.extend_from_slice(&sequence.to_be_bytes());
        message.extend_from_slice(&issued.to_be_bytes());
        message.extend_from_slice(&count.to_be_bytes());
        for entry in entries {
            message.extend_from_slice(entry);
        }
        Ok(UnsignedRevocationList { message })
    }

    /// The exact bytes the Ed25519 signature covers: the list label and the body.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Appends the signature and returns the list text.
    pub fn finish(&self, signature: &[u8; SIGNATURE_LEN]) -> String {
        let raw = &self.message[REVOCATION_LIST_LABEL.len()..];
        let mut text = String::with_capacity(REVOCATION_LIST_PREFIX.len() + (raw.len() + SIGNATURE_LEN) * 4 / 3 + 2);
        text.push_str(REVOCATION_LIST_PREFIX);
        let mut all = Vec::with_capacity(raw.len() + SIGNATURE_LEN);
        all.extend_from_slice(raw);
        all.extend_from_slice(signature);
        B64.encode_string(&all, &mut text);
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use alloc::string::ToString;
    use alloc::vec;

    use ed25519_dalek::{Signer as _, SigningKey};
    use time::macros::datetime;

    use super::*;
    use crate::PublicKey;

    fn signer() -> (SigningKey, KeySet) {
        let key = SigningKey::from_bytes(&[5; 32]);
        let mut keys = KeySet::new();
        keys.insert(PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap());
        (key, keys)
    }

    fn list(key: &SigningKey, sequence: u64, revoked: &[LicenseId]) -> String {
        let id = PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap().key_id();
        let unsigned = UnsignedRevocationList::new(id, sequence, datetime!(2026-12-01 0:00 UTC), revoked).unwrap();
        unsigned.finish(&key.sign(unsigned.message()).to_bytes())
    }

    #[test]
    fn a_list_round_trips_and_answers_membership() {
        let (key, keys) = signer();
        let revoked = vec![LicenseId([1; 16]), LicenseId([2; 16]), LicenseId([1; 16])];
        let text = list(&key, 7, &revoked);
        let parsed = RevocationList::verify(&text, &keys).unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!((parsed.sequence(), parsed.len()), (7, 2));
        assert!(parsed.contains(&LicenseId([1; 16])) && parsed.contains(&LicenseId([2; 16])));
        assert!(!parsed.contains(&LicenseId([3; 16])));
    }

    #[test]
    fn ten_thousand_licenses_make_a_list_of_about_104_kib() {
        let (key, keys) = signer();
        let revoked: Vec<LicenseId> = (0u32..10_000)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                LicenseId(id)
            })
            .collect();
        let text = list(&key, 1, &revoked);
        assert_eq!(text.len(), 5 + (4 * (FIXED_LEN + 10_000 * ENTRY_LEN + SIGNATURE_LEN)).div_ceil(3));
        assert_eq!(text.len(), 106_796);
        assert_eq!(RevocationList::verify(&text, &keys).unwrap().len(), 10_000);
    }

    #[test]
    fn a_tampered_unsorted_or_unknown_list_is_refused() {
        let (key, keys) = signer();
        let text = list(&key, 1, &[LicenseId([1; 16]), LicenseId([2; 16])]);
        let mut raw = B64.decode(text.strip_prefix("lrl1.").unwrap()).unwrap();
        raw[FIXED_LEN] ^= 1;
        let tampered = alloc::format!("lrl1.{}", B64.encode(&raw));
        assert_eq!(RevocationList::verify(&tampered, &keys).unwrap_err().code(), "invalid_revocation_list");
        assert_eq!(RevocationList::verify(&text, &KeySet::new()).unwrap_err().code(), "unknown_key");
        for bad in ["", "lrl1.", "lrl2.AAAA", "lic1.AAAA", &alloc::format!("{text}A")] {
            assert_eq!(RevocationList::verify(bad, &keys).unwrap_err().code(), "invalid_revocation_list", "{bad}");
        }
        // Entries out of order, signed: the encoder never makes this, a verifier must refuse it.
        let id = keys.iter().next().unwrap().key_id();
        let mut entries = vec![revoked_entry(&LicenseId([1; 16])), revoked_entry(&LicenseId([2; 16]))];
        entries.sort_unstable();
        entries.reverse();
        let unsigned = UnsignedRevocationList::from_entries(id, 1, datetime!(2026-12-01 0:00 UTC), &entries).unwrap();
        let unsorted = unsigned.finish(&key.sign(unsigned.message()).to_bytes());
        assert_eq!(RevocationList::verify(&unsorted, &keys).unwrap_err().code(), "invalid_revocation_list");
    }
}
