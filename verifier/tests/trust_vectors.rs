//! Every frozen certificate and revocation list vector is judged as `trust-v1/cases.json` says, using nothing but
//! this crate: the processing of docs/token-format.md §16.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use verifier::{verify_at, Error, KeySet, RevocationList, Status, Validation};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/trust-v1");

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(DIR).join(name)).unwrap()
}

/// §16: add the certificates in order, install the lists in order (keeping the newest), then verify the token.
fn judge(case: &Value, roots: &str, validation: &Validation, now: OffsetDateTime) -> Result<Status, Error> {
    let mut keys = KeySet::from_text(roots)?;
    for file in case["certificates"].as_array().unwrap() {
        keys.add_certificate(&read(file.as_str().unwrap()))?;
    }
    let mut held: Option<RevocationList> = None;
    for file in case["revocation_lists"].as_array().unwrap() {
        let list = RevocationList::verify(&read(file.as_str().unwrap()), &keys)?;
        if let Some(h) = &held {
            if list.sequence() < h.sequence() {
                return Err(Error::StaleRevocationList { held: h.sequence(), offered: list.sequence() });
            }
        }
        held = Some(list);
    }
    let mut validation = validation.clone();
    validation.revocation_list = held;
    verify_at(&read(case["file"].as_str().unwrap()), &keys, &validation, now).map(|v| v.status)
}

#[test]
fn every_trust_vector_is_judged_as_specified() {
    let manifest: Value = serde_json::from_str(&read("cases.json")).unwrap();
    let roots = read(manifest["trusted_keys"].as_str().unwrap());
    let v = &manifest["validation"];
    let mut validation = Validation::new(v["product"].as_str().unwrap(), v["fingerprint"].as_str().unwrap());
    validation.leeway_secs = v["leeway_secs"].as_u64().unwrap();
    let now = OffsetDateTime::parse(v["now"].as_str().unwrap(), &Rfc3339).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 13, "expected the full trust-v1 set, found {}", cases.len());
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        assert_eq!(
            file.starts_with("fail_"),
            !matches!(expect, "valid" | "refresh_due"),
            "{file}: name and expectation"
        );
        let got = match judge(case, &roots, &validation, now) {
            Ok(Status::Valid) => "valid".to_string(),
            Ok(Status::RefreshDue) => "refresh_due".to_string(),
            Ok(other) => format!("{other:?}"),
            Err(e) => e.code().to_string(),
        };
        assert_eq!(got, expect, "{file}: {}", case["about"]);
    }
}

#[test]
fn certificates_and_lists_re_encode_to_their_own_text() {
    let roots = KeySet::from_text(&read("roots.txt")).unwrap();
    let mut keys = roots.clone();
    for name in ["cert_key_a.cert", "cert_key_b_acme_viewer.cert", "cert_key_c_2025.cert"] {
        let text = read(name);
        assert_eq!(keys.add_certificate(&text).unwrap().to_string(), text.trim(), "{name}");
        assert!(text.trim().len() <= 200, "{name}: {} characters", text.trim().len());
    }
    for name in ["revocation_seq0_empty.revocation", "revocation_seq1.revocation", "revocation_seq2.revocation"] {
        let text = read(name);
        assert_eq!(RevocationList::verify(&text, &keys).unwrap().to_string(), text.trim(), "{name}");
    }
}
