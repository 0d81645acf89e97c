//! Arbitrary claims bytes, correctly signed, so the fuzzer reaches the claims decoder behind the signature check.
//! Must never panic; whatever decodes must re-encode to the same bytes (one canonical form).
#![no_main]

use ed25519_dalek::{Signer as _, SigningKey};
use libfuzzer_sys::fuzz_target;
use verifier::format::{FORMAT_VERSION, SIGNING_LABEL, TOKEN_PREFIX};
use verifier::{KeySet, PublicKey, UnsignedToken, UntrustedToken};

fuzz_target!(|payload: &[u8]| {
    let key = SigningKey::from_bytes(&[0x24; 32]);
    let Ok(public) = PublicKey::from_bytes(key.verifying_key().as_bytes()) else { return };
    let mut keys = KeySet::new();
    keys.insert(public.clone());
    let mut message = SIGNING_LABEL.to_vec();
    message.push(FORMAT_VERSION);
    message.extend_from_slice(&public.key_id().to_bytes());
    message.extend_from_slice(payload);
    let signature = key.sign(&message).to_bytes();
    let mut raw = message[SIGNING_LABEL.len()..].to_vec();
    raw.extend_from_slice(&signature);
    use base64::Engine as _;
    let text = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    if let Ok(license) = UntrustedToken::parse(&text).and_then(|t| t.verify(&keys)) {
        let again = UnsignedToken::new(public.key_id(), license.claims()).expect("decoded claims re-encode");
        assert_eq!(&again.message()[SIGNING_LABEL.len() + 9..], payload, "one canonical encoding");
    }
});
