//! Arbitrary text through the whole verifier: parse, key lookup, signature, claims, validation. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verifier::{verify_at, KeySet, OffsetDateTime, Validation};

const KEYS: &str = include_str!("../../verifier/tests/vectors/v1/keys.txt");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(keys) = KeySet::from_text(KEYS) else { return };
    let validation = Validation::new("acme-cad", "cPFviWOfAHrkBhGe49wRxw");
    let _ = verify_at(text, &keys, &validation, OffsetDateTime::UNIX_EPOCH);
    // Also as a public key line and a key set, the other untrusted text an app parses.
    let _ = text.parse::<verifier::PublicKey>();
    let _ = KeySet::from_text(text);
});
