//! Codes for air-gapped machines: the activation request an app makes offline, and the deactivation code that proves
//! it held a token. Both are text a person can read out or type, carried to a connected machine by hand or file.
//!
//! Text form: a prefix naming kind and version (`ACT1-`, `DEA1-`), then Crockford base32 (digits and letters without
//! I, L, O, U) of the postcard body and a 4-byte check, in groups of 5 joined by `-`. Reading is forgiving where it is
//! safe (case, spaces, dashes, I/L read as 1 and O as 0) and strict where it matters: a wrong check character is
//! [`Error::MistypedCode`], so a typo is reported as a typo before anything is looked up.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use base64::Engine as _;

use crate::format::{limits, B64, TOKEN_PREFIX};
use crate::{ClaimsError, Error, KeySet, LicenseId, UntrustedToken};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CHECK_LEN: usize = 4;
/// Longest code text accepted before decoding.
const MAX_CODE_LEN: usize = 1024;
/// Longest machine name in an activation request, in bytes.
pub const MAX_MACHINE_NAME_LEN: usize = 64;

const ACTIVATION_PREFIX: &str = "ACT1";
const DEACTIVATION_PREFIX: &str = "DEA1";

/// Why a deactivation code is refused where an activation request is expected.
pub(crate) const WRONG_KIND_DEACTIVATION: &str =
    "this is a DEA1 deactivation code, not an ACT1 activation request; redeem it as a deactivation code";
/// Whether `reason` says the code is of the other kind (fine in itself, sent to the wrong place).
pub(crate) fn is_wrong_kind(reason: &str) -> bool {
    reason == WRONG_KIND_DEACTIVATION || reason == WRONG_KIND_ACTIVATION
}

/// Why an activation request is refused where a deactivation code is expected.
pub(crate) const WRONG_KIND_ACTIVATION: &str =
    "this is an ACT1 activation request, not a DEA1 deactivation code; activate with it instead";
const DEACTIVATION_LABEL: &[u8] = b"license-deactivation/v1\0";

/// What an offline machine asks the vendor for: a token for this license key, bound to this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRequest {
    /// The license key as the customer typed it (the issuer normalises it).
    pub license_key: String,
    /// This machine's fingerprint for the product.
    pub fingerprint: String,
    /// A name for the machine, shown to the vendor and customer (may be empty).
    pub machine_name: String,
    /// Random bytes that make each request distinct, so a request in a log is not mistaken for a new one.
    pub nonce: [u8; 8],
}

impl ActivationRequest {
    /// A request with a fresh random nonce from the operating system.
    #[cfg(feature = "std")]
    pub fn new(
        license_key: impl Into<String>,
        fingerprint: impl Into<String>,
        machine_name: impl Into<String>,
    ) -> Result<Self, Error> {
        let mut nonce = [0u8; 8];
        getrandom::getrandom(&mut nonce).map_err(|e| Error::Io {
            path: std::path::PathBuf::from("<operating system random source>"),
            source: std::io::Error::from(e),
        })?;
        let request = ActivationRequest {
            license_key: license_key.into(),
            fingerprint: fingerprint.into(),
            machine_name: machine_name.into(),
            nonce,
        };
        request.check()?;
        Ok(request)
    }

    fn check(&self) -> Result<(), ClaimsError> {
        let graphic = |s: &str| s.bytes().all(|c| c.is_ascii_graphic() || c == b' ');
        let key = self.license_key.trim();
        if key.is_empty() || key.len() > limits::MAX_LICENSE_KEY_LEN || !graphic(key) {
            return Err(ClaimsError { field: "license_key", problem: "must be 1-64 printable ASCII characters" });
        }
        if self.fingerprint.is_empty()
            || self.fingerprint.len() > limits::MAX_FINGERPRINT_LEN
            || !self.fingerprint.bytes().all(|c| c.is_ascii_graphic())
        {
            return Err(ClaimsError {
                field: "fingerprint",
                problem: "must be 1-128 printable ASCII characters without spaces",
            });
        }
        if self.machine_name.len() > MAX_MACHINE_NAME_LEN || self.machine_name.chars().any(char::is_control) {
            return Err(ClaimsError {
                field: "machine_name",
                problem: "must be at most 64 bytes without control characters",
            });
        }
        Ok(())
    }

    /// The request as a code, e.g. `ACT1-3N9QF-...`.
    pub fn to_code(&self) -> Result<String, ClaimsError> {
        self.check()?;
        let body = postcard::to_allocvec(self)
            .map_err(|_| ClaimsError { field: "activation_request", problem: "cannot be encoded" })?;
        Ok(encode_code(ACTIVATION_PREFIX, &body))
    }

    /// Reads a request code; a typo is [`Error::MistypedCode`], anything else wrong is [`Error::InvalidCode`].
    pub fn from_code(code: &str) -> Result<Self, Error> {
        let body = decode_code(ACTIVATION_PREFIX, code)?;
        let request: ActivationRequest = decode_body(&body)?;
        request.check().map_err(|e| Error::InvalidCode { reason: e.problem })?;
        Ok(request)
    }
}

/// Proof that a machine held a particular token, given when it gives the token up (offline deactivation).
///
/// The proof is a hash of the token's bytes, signature included: only the issuer and the holder of that token can
/// compute it, and it names one activation, so a code frees one slot once and only for its own license.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivationCode {
    /// The license the token was for.
    pub license_id: LicenseId,
    /// The first 16 bytes of SHA-256(label || the token's bytes).
    pub proof: [u8; 16],
}

impl DeactivationCode {
    /// The code for a token this machine holds; the token must verify against `keys` (its claims name the license).
    pub fn for_token(token: &str, keys: &KeySet) -> Result<Self, Error> {
        let license = UntrustedToken::parse(token)?.verify(keys)?;
        Ok(DeactivationCode { license_id: license.license_id, proof: token_proof(token)? })
    }

    /// The code as text, e.g. `DEA1-...`.
    pub fn to_code(&self) -> String {
        // A fixed-size struct: postcard cannot fail on it.
        let body = postcard::to_allocvec(self).unwrap_or_default();
        encode_code(DEACTIVATION_PREFIX, &body)
    }

    /// Reads a deactivation code; a typo is [`Error::MistypedCode`].
    pub fn from_code(code: &str) -> Result<Self, Error> {
        decode_body(&decode_code(DEACTIVATION_PREFIX, code)?)
    }
}

/// The deactivation proof of a token: what the issuer stores when it issues an offline token, and compares a
/// redeemed [`DeactivationCode`] against.
pub fn token_proof(token: &str) -> Result<[u8; 16], Error> {
    // Parse first so only a well-formed token gets a proof; hash the decoded bytes, not the text.
    UntrustedToken::parse(token)?;
    let body = token.trim_ascii().get(TOKEN_PREFIX.len()..).unwrap_or_default();
    let raw = B64.decode(body).map_err(|_| Error::malformed("not canonical base64url without padding"))?;
    let digest = Sha256::new().chain_update(DEACTIVATION_LABEL).chain_update(&raw).finalize();
    let mut proof = [0u8; 16];
    proof.copy_from_slice(&digest[..16]);
    Ok(proof)
}

fn decode_body<T: serde::de::DeserializeOwned + Serialize>(body: &[u8]) -> Result<T, Error> {
    let (value, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|_| Error::InvalidCode { reason: "the content does not decode" })?;
    if !rest.is_empty() {
        return Err(Error::InvalidCode { reason: "trailing bytes" });
    }
    if postcard::to_allocvec(&value).ok().as_deref() != Some(body) {
        return Err(Error::InvalidCode { reason: "not canonically encoded" });
    }
    Ok(value)
}

fn check_bytes(prefix: &str, body: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::new().chain_update(prefix.as_bytes()).chain_update([0]).chain_update(body).finalize();
    let mut check = [0u8; CHECK_LEN];
    check.copy_from_slice(&digest[..CHECK_LEN]);
    check
}

fn encode_code(prefix: &str, body: &[u8]) -> String {
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&check_bytes(prefix, body));
    let chars = base32_encode(&bytes);
    let mut out = String::with_capacity(prefix.len() + chars.len() * 6 / 5 + 1);
    out.push_str(prefix);
    for group in chars.chunks(5) {
        out.push('-');
        out.extend(group.iter().map(|&c| c as char));
    }
    out
}

fn decode_code(prefix: &str, code: &str) -> Result<Vec<u8>, Error> {
    if code.len() > MAX_CODE_LEN {
        return Err(Error::InvalidCode { reason: "too long" });
    }
    let normalised: Vec<u8> = code
        .bytes()
        .filter(|c| !matches!(c, b'-' | b' ' | b'\t' | b'\r' | b'\n'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let Some(rest) = normalised.strip_prefix(prefix.as_bytes()) else {
        let other = if prefix == ACTIVATION_PREFIX { DEACTIVATION_PREFIX } else { ACTIVATION_PREFIX };
        return Err(Error::InvalidCode {
            reason: match (normalised.starts_with(other.as_bytes()), prefix == ACTIVATION_PREFIX) {
                (true, true) => WRONG_KIND_DEACTIVATION,
                (true, false) => WRONG_KIND_ACTIVATION,
                (false, _) => "unknown code kind or version",
            },
        });
    };
    let bytes = base32_decode(rest).ok_or(Error::MistypedCode)?;
    if bytes.len() <= CHECK_LEN {
        return Err(Error::InvalidCode { reason: "too short" });
    }
    let (body, check) = bytes.split_at(bytes.len() - CHECK_LEN);
    if check != check_bytes(prefix, body) {
        return Err(Error::MistypedCode);
    }
    Ok(body.to_vec())
}

fn base32_encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize]);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize]);
    }
    out
}

/// Decodes Crockford base32 (I and L read as 1, O as 0); `None` on a character outside the alphabet or non-zero
/// padding bits, both of which only a typo produces.
fn base32_decode(chars: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(chars.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in chars {
        let c = match c {
            b'I' | b'L' => b'1',
            b'O' => b'0',
            c => c,
        };
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = ((acc << 5) | v) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 5 || acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request() -> ActivationRequest {
        ActivationRequest {
            license_key: "7KQ3M-9XW2T-H4RVD-PNC8J".into(),
            fingerprint: "cPFviWOfAHrkBhGe49wRxw".into(),
            machine_name: "lab-pc-07".into(),
            nonce: [1, 2, 3, 4, 5, 6, 7, 8],
        }
    }

    #[test]
    fn activation_request_round_trips_through_its_code() {
        let code = request().to_code().unwrap();
        assert!(code.starts_with("ACT1-"), "{code}");
        assert!(code.len() < 150, "{} characters: {code}", code.len());
        assert_eq!(ActivationRequest::from_code(&code).unwrap(), request());
        // Read back forgivingly: lower case, spaces for dashes, O for 0.
        let sloppy = code.to_lowercase().replace('-', " ").replace('0', "o");
        assert_eq!(ActivationRequest::from_code(&sloppy).unwrap(), request());
    }

    #[test]
    fn every_single_character_typo_is_reported_as_a_typo() {
        let code = request().to_code().unwrap();
        for i in ACTIVATION_PREFIX.len()..code.len() {
            if code.as_bytes()[i] == b'-' {
                continue;
            }
            for &c in ALPHABET {
                let mut bytes = code.clone().into_bytes();
                if bytes[i] == c {
                    continue;
                }
                bytes[i] = c;
                let typo = String::from_utf8(bytes).unwrap();
                let err = ActivationRequest::from_code(&typo).unwrap_err();
                assert_eq!(err.code(), "mistyped_code", "{typo}");
            }
        }
    }

    #[test]
    fn wrong_kind_of_code_is_named() {
        let code = DeactivationCode { license_id: LicenseId([5; 16]), proof: [9; 16] }.to_code();
        let err = ActivationRequest::from_code(&code).unwrap_err();
        assert!(err.to_string().contains("not an ACT1 activation request"), "{err}");
        assert!(!err.to_string().contains("ask for a new one"), "the code is fine, the place is wrong: {err}");
        assert_eq!(DeactivationCode::from_code(&code).unwrap().proof, [9; 16]);
        assert_eq!(ActivationRequest::from_code("hello").unwrap_err().code(), "invalid_code");
    }

    #[test]
    fn request_with_bad_fields_is_refused() {
        let bad = ActivationRequest { fingerprint: "has space".into(), ..request() };
        assert_eq!(bad.to_code().unwrap_err().field, "fingerprint");
        let bad = ActivationRequest { machine_name: "x".repeat(65), ..request() };
        assert_eq!(bad.to_code().unwrap_err().field, "machine_name");
        assert!(ActivationRequest::new("KEY", "fp", "name").unwrap().nonce != [0; 8]);
    }

    #[test]
    fn deactivation_code_proves_the_token_and_round_trips() {
        let keys = KeySet::from_text(include_str!("../tests/vectors/v1/keys.txt")).unwrap();
        let token = include_str!("../tests/vectors/v1/valid_offline.token");
        let code = DeactivationCode::for_token(token, &keys).unwrap();
        assert_eq!(code.proof, token_proof(token).unwrap());
        assert_eq!(DeactivationCode::from_code(&code.to_code()).unwrap(), code);
        // Another token of the same license gives another proof.
        let other = include_str!("../tests/vectors/v1/valid_online.token");
        assert_ne!(token_proof(other).unwrap(), code.proof);
        // A token that does not verify gets no code.
        let forged = include_str!("../tests/vectors/v1/fail_flipped_bit.token");
        assert_eq!(DeactivationCode::for_token(forged, &keys).unwrap_err().code(), "bad_signature");
    }
}
