//! Domain normalisation and covering, judged by the shared vectors `vectors/domains.json` and
//! `vectors/domain_covers.json` (docs/token-format.md §17), and the properties the issuer relies on.
#![cfg(feature = "domain")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::Value;
use verifier::{Domain, DOMAIN_BINDING_PREFIX, MAX_DOMAIN_LEN};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn read(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{DIR}/{file}")).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str::<Value>(&text).unwrap().as_array().expect("a JSON array").clone()
}

#[test]
fn every_domain_vector_normalises_as_specified() {
    let cases = read("domains.json");
    assert!(cases.len() >= 40, "expected the full domain vector set, found {}", cases.len());
    for case in &cases {
        let keys: Vec<&str> = case.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.iter().all(|k| ["input", "host", "normalized", "error"].contains(k)), "{case}: schema");
        let input = case["input"].as_str().unwrap();
        let normalized = case["normalized"].as_str();
        let error = case["error"].as_str();
        assert_ne!(normalized.is_some(), error.is_some(), "{input:?}: exactly one of normalized and error");

        let parsed = Domain::parse(input);
        assert_eq!(parsed.as_ref().ok().map(Domain::as_str), normalized, "{input:?}: normalized");
        assert_eq!(parsed.as_ref().err().map(|e| e.code()), error, "{input:?}: error");

        // `host` is written only where it differs from what `parse` does.
        let host_accepts = case.get("host").map_or(parsed.is_ok(), |h| h.as_bool().unwrap());
        assert!(case.get("host").is_none_or(|_| host_accepts != parsed.is_ok()), "{input:?}: redundant `host`");
        let host = Domain::host(input);
        assert_eq!(host.is_ok(), host_accepts, "{input:?}: host");
        if let Ok(host) = host {
            assert_eq!(Some(host.as_str()), normalized, "{input:?}: host normalises as parse does");
        }

        if let Ok(d) = parsed {
            assert_eq!(Domain::parse(d.as_str()), Ok(d.clone()), "{input:?}: idempotent");
            assert_eq!(Domain::from_binding(&d.binding()), Some(Ok(d)), "{input:?}: binding round trip");
        }
    }
}

#[test]
fn every_covers_vector_is_judged_as_specified() {
    let cases = read("domain_covers.json");
    assert!(cases.len() >= 10, "expected the full covers vector set, found {}", cases.len());
    for case in &cases {
        let binding = Domain::parse(case["binding"].as_str().unwrap()).unwrap();
        let host = Domain::host(case["host"].as_str().unwrap()).unwrap();
        let covers = case["covers"].as_bool().unwrap();
        assert_eq!(binding.covers(&host), covers, "{case}");
        assert_eq!(host.covering_bindings().contains(&binding.binding()), covers, "{case}: covering_bindings");
    }
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9-]{1,20}"
}

fn unicode_label() -> impl Strategy<Value = String> {
    "[a-zäöüßéçñÄÖÜÉαβγσςΣжзийЖ例えテスト中文한국어0-9-]{1,12}"
}

fn name(label: impl Strategy<Value = String>, max_labels: usize) -> impl Strategy<Value = String> {
    (proptest::collection::vec(label, 1..=max_labels), any::<bool>(), any::<bool>()).prop_map(|(labels, star, dot)| {
        let mut s = if star { String::from("*.") } else { String::new() };
        s.push_str(&labels.join("."));
        if dot {
            s.push('.');
        }
        s
    })
}

/// The properties every accepted name has, whatever the input.
fn check_normalised(input: &str) -> Result<(), TestCaseError> {
    let Ok(d) = Domain::parse(input) else { return Ok(()) };
    let text = d.as_str();
    prop_assert_eq!(Domain::parse(text), Ok(d.clone()), "idempotent");
    prop_assert!(text.len() <= MAX_DOMAIN_LEN);
    prop_assert!(d.base().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
    prop_assert_eq!(text.starts_with("*."), d.is_wildcard());
    let binding = d.binding();
    prop_assert!(binding.len() <= verifier::format::limits::MAX_FINGERPRINT_LEN);
    prop_assert_eq!(binding.strip_prefix(DOMAIN_BINDING_PREFIX), Some(text));
    prop_assert_eq!(Domain::from_binding(&binding), Some(Ok(d.clone())));
    prop_assert_eq!(Domain::host(input).is_ok(), !d.is_wildcard());
    for covering in d.covering_bindings() {
        let b = Domain::from_binding(&covering).unwrap().unwrap();
        prop_assert!(b.covers(&d), "{} does not cover {}", covering, text);
    }
    Ok(())
}

proptest! {
    #[test]
    fn ascii_names_normalise_idempotently(input in name(label(), 6)) {
        check_normalised(&input)?;
    }

    #[test]
    fn unicode_names_normalise_idempotently(input in name(unicode_label(), 4)) {
        check_normalised(&input)?;
    }

    #[test]
    fn any_text_is_refused_or_normalised_without_panicking(input in "\\PC{0,40}") {
        check_normalised(&input)?;
    }

    #[test]
    fn covers_agrees_with_covering_bindings(binding in name("[ab]", 4), host in name("[ab]", 5)) {
        // Labels from two letters, so that bindings and hosts often nest.
        if let (Ok(binding), Ok(host)) = (Domain::parse(&binding), Domain::host(&host)) {
            prop_assert_eq!(binding.covers(&host), host.covering_bindings().contains(&binding.binding()));
        }
    }
}
