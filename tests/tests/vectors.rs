//! The frozen v1 vectors on disk are exactly what the format and the `keys` crate produce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use e2e_tests::vectors::{files, VectorKeys, DIR};

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(DIR)
}

#[test]
fn trust_vectors_match_the_generator() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(e2e_tests::trust_vectors::DIR);
    let write = std::env::var_os("VECTORS_WRITE").is_some();
    let mut missing = Vec::new();
    for (name, content) in e2e_tests::trust_vectors::files(&e2e_tests::trust_vectors::TrustKeys::fixed()) {
        let path = dir.join(&name);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) => {
                assert_eq!(on_disk, content, "{name} differs from the generator: frozen vectors never change")
            }
            Err(_) if write => {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &content).unwrap();
            }
            Err(_) => missing.push(name),
        }
    }
    assert!(missing.is_empty(), "trust vector files missing (VECTORS_WRITE=1 writes new ones): {missing:?}");
}

#[test]
fn vectors_match_the_generator() {
    let dir = vector_dir();
    let write = std::env::var_os("VECTORS_WRITE").is_some();
    let mut missing = Vec::new();
    for (name, content) in files(&VectorKeys::fixed()) {
        let path = dir.join(&name);
        if name == "cases.json" {
            if !manifest_only_grew(&path, &content, write) {
                missing.push(name);
            }
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(on_disk) => assert_eq!(
                on_disk, content,
                "{name} differs from the generator: frozen vectors never change; a format change is a new version"
            ),
            Err(_) if write => {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &content).unwrap();
            }
            Err(_) => missing.push(name),
        }
    }
    assert!(missing.is_empty(), "vector files missing (VECTORS_WRITE=1 writes new ones): {missing:?}");
}

/// `cases.json` only grows: the file on disk must be exactly the generated manifest cut to the cases it already holds,
/// so every existing entry keeps its bytes and new cases go at the end. With `write`, the grown manifest replaces it.
/// Returns false when cases are missing on disk (and not written).
fn manifest_only_grew(path: &std::path::Path, generated: &str, write: bool) -> bool {
    let on_disk = std::fs::read_to_string(path).unwrap();
    if on_disk == generated {
        return true;
    }
    let old: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
    let mut cut: serde_json::Value = serde_json::from_str(generated).unwrap();
    let old_len = old["cases"].as_array().unwrap().len();
    let cases = cut["cases"].as_array_mut().unwrap();
    assert!(
        old_len < cases.len(),
        "cases.json has {old_len} cases, the generator {}: cases are never removed",
        cases.len()
    );
    cases.truncate(old_len);
    assert_eq!(
        format!("{}\n", serde_json::to_string_pretty(&cut).unwrap()),
        on_disk,
        "an existing entry of cases.json (or its header) differs from the generator: existing cases never change, \
         new ones are appended"
    );
    if write {
        std::fs::write(path, generated).unwrap();
    }
    write
}

#[test]
fn test_key_file_is_the_generators_key() {
    let pem = std::fs::read_to_string(vector_dir().join("test-key.pem")).unwrap();
    let key = keys::SecretKey::from_pem(&pem).unwrap();
    assert_eq!(key.key_id(), VectorKeys::fixed().main.key_id());
}

fn raw_of(token: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body = token.trim_ascii().strip_prefix(verifier::format::TOKEN_PREFIX).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap()
}

#[test]
fn small_order_r_vector_passes_non_strict_verification_only() {
    use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
    let raw = raw_of(&std::fs::read_to_string(vector_dir().join("fail_small_order_r.token")).unwrap());
    let (signed, signature) = raw.split_at(raw.len() - 64);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(signature[..32], identity, "R is the identity point's encoding");
    let message = [verifier::format::SIGNING_LABEL, signed].concat();
    let main = VectorKeys::fixed().main;
    assert_eq!(signed[1..9], main.key_id().to_bytes(), "signed under the main key's id");
    let key = VerifyingKey::from_bytes(&main.public_key().to_bytes()).unwrap();
    let signature = Signature::from_slice(signature).unwrap();
    // What OpenSSL and other cofactorless, non-strict verifiers do: the equation holds, so they accept it.
    key.verify(&message, &signature).expect("non-strict verification accepts a small-order R");
    assert!(key.verify_strict(&message, &signature).is_err(), "strict verification refuses it");
    // The claims are the typical token's, so a non-strict verifier would report `valid`.
    assert_eq!(
        signed,
        &raw_of(&std::fs::read_to_string(vector_dir().join("valid_online.token")).unwrap())[..signed.len()]
    );
}

/// The 40 bytes (key id, point) of the last key line of a key set file.
fn last_key_line(file: &str) -> ([u8; 8], [u8; 32]) {
    use base64::Engine as _;
    let text = std::fs::read_to_string(vector_dir().join(file)).unwrap();
    let line = text.lines().last().unwrap().strip_prefix(verifier::format::PUBLIC_KEY_PREFIX).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(line).unwrap();
    (raw[..8].try_into().unwrap(), raw[8..].try_into().unwrap())
}

#[test]
fn bad_key_set_vectors_hold_what_their_names_say() {
    use ed25519_dalek::VerifyingKey;
    use verifier::KeyId;
    let keys = VectorKeys::fixed();
    for file in ["fail_noncanonical_key.keys.txt", "fail_small_order_key.keys.txt", "fail_key_id_mismatch.keys.txt"] {
        let text = std::fs::read_to_string(vector_dir().join(file)).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], keys.main.public_key().to_string(), "{file}: the main key comes first");
        assert_eq!(verifier::KeySet::from_text(&text).unwrap_err().code(), "invalid_public_key", "{file}");
    }

    // y = p + 3 with its own key id: ed25519-dalek alone accepts the point (it reduces y mod p).
    let (id, point) = last_key_line("fail_noncanonical_key.keys.txt");
    assert_eq!(id, KeyId::derive(&point).to_bytes());
    let mut p_plus_3 = [0xff; 32];
    p_plus_3[0] = 0xf0; // p = 2^255 - 19 ends in 0xed
    p_plus_3[31] = 0x7f;
    assert_eq!(point, p_plus_3, "y is p + 3, sign bit clear");
    assert!(!VerifyingKey::from_bytes(&point).unwrap().is_weak());

    // A small-order point with its own key id: it decodes, but is weak.
    let (id, point) = last_key_line("fail_small_order_key.keys.txt");
    assert_eq!(id, KeyId::derive(&point).to_bytes());
    assert!(VerifyingKey::from_bytes(&point).unwrap().is_weak());

    // The main key's point under the retired key's id.
    let (id, point) = last_key_line("fail_key_id_mismatch.keys.txt");
    assert_eq!((id, point), (keys.retired.key_id().to_bytes(), keys.main.public_key().to_bytes()));
}
