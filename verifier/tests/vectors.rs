//! Every frozen v1 vector is judged as `cases.json` says, using nothing but this crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use verifier::{verify_at, Claims, KeySet, Status, TokenKind, Validation};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/v1");

fn time(v: &Value) -> Option<OffsetDateTime> {
    v.as_str().map(|s| OffsetDateTime::parse(s, &Rfc3339).unwrap())
}

fn claims_from_json(c: &Value) -> Claims {
    Claims {
        kind: match c["kind"].as_str().unwrap() {
            "online" => TokenKind::Online,
            _ => TokenKind::Offline,
        },
        license_id: c["license_id"].as_str().unwrap().parse().unwrap(),
        license_key: c["license_key"].as_str().unwrap().into(),
        email: c["email"].as_str().unwrap().into(),
        product: c["product"].as_str().unwrap().into(),
        entitlements: c["entitlements"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().into()).collect(),
        max_machines: c["max_machines"].as_u64().unwrap() as u32,
        fingerprint: c["fingerprint"].as_str().unwrap().into(),
        issued_at: time(&c["issued_at"]).unwrap(),
        license_expires_at: time(&c["license_expires_at"]),
        refresh_after: time(&c["refresh_after"]),
        token_expires_at: time(&c["token_expires_at"]),
    }
}

/// The result of §1.1 for `token` as `cases.json` spells it; a key set that does not load is the result too.
fn judge(token: &str, keys: &Result<KeySet, verifier::Error>, validation: &Validation, now: OffsetDateTime) -> String {
    let keys = match keys {
        Ok(keys) => keys,
        Err(e) => return e.code().to_string(),
    };
    match verify_at(token, keys, validation, now) {
        Ok(verified) => match verified.status {
            Status::Valid => "valid",
            Status::RefreshDue => "refresh_due",
            _ => "unknown status",
        }
        .to_string(),
        Err(e) => e.code().to_string(),
    }
}

#[test]
fn every_vector_is_judged_as_specified() {
    let dir = Path::new(DIR);
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let manifest: Value = serde_json::from_str(&read("cases.json")).unwrap();
    let default_keys = manifest["trusted_keys"].as_str().unwrap();
    let v = &manifest["validation"];
    let mut validation = Validation::new(v["product"].as_str().unwrap(), v["fingerprint"].as_str().unwrap());
    validation.leeway_secs = v["leeway_secs"].as_u64().unwrap();

    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 46, "expected the full v1 vector set, found {}", cases.len());
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let token = read(file);
        // A case may name its own key set file; otherwise the manifest's applies.
        let keys_file = match &case["trusted_keys"] {
            Value::Null => default_keys,
            other => other.as_str().expect("trusted_keys is a file name"),
        };
        let keys = KeySet::from_text(&read(keys_file));
        let now = time(&case["now"]).unwrap();
        let expect = case["expect"].as_str().unwrap();
        let accepted = matches!(expect, "valid" | "refresh_due");
        assert_eq!(file.starts_with("fail_"), !accepted, "{file}: name and expectation");
        assert_eq!(file.starts_with("valid_"), accepted, "{file}: name and expectation");
        let got = judge(&token, &keys, &validation, now);
        assert_eq!(got, expect, "{file}: {}", case["about"]);
        if accepted {
            let verified = verify_at(&token, keys.as_ref().unwrap(), &validation, now).unwrap();
            assert_eq!(*verified.license.claims(), claims_from_json(&case["claims"]), "{file}: decoded claims");
        } else {
            assert_eq!(case["claims"], Value::Null, "{file}: a refused token has no claims");
        }
        // A trailing newline, as when the token is kept in a text file, changes nothing.
        assert_eq!(judge(&format!("{token}\n"), &keys, &validation, now), expect, "{file} + newline");
    }
}

#[test]
fn untrusted_key_file_is_not_in_the_trusted_set() {
    let dir = Path::new(DIR);
    let keys = KeySet::from_text(&std::fs::read_to_string(dir.join("keys.txt")).unwrap()).unwrap();
    let stranger: verifier::PublicKey =
        std::fs::read_to_string(dir.join("untrusted-key.pub")).unwrap().parse().unwrap();
    assert!(keys.get(stranger.key_id()).is_none());
    assert_eq!(keys.len(), 2);
}

#[test]
fn untrusted_claims_show_what_a_refused_token_says() {
    let dir = Path::new(DIR);
    let token = std::fs::read_to_string(dir.join("fail_unknown_key.token")).unwrap();
    let untrusted = verifier::UntrustedToken::parse(&token).unwrap();
    assert_eq!(untrusted.untrusted_claims().unwrap().email, "ada@lovelace-labs.io");
    let trailing = std::fs::read_to_string(dir.join("fail_trailing_bytes.token")).unwrap();
    assert_eq!(verifier::UntrustedToken::parse(&trailing).unwrap().untrusted_claims().unwrap_err().code(), "malformed");
}
