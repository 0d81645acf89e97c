//! Property tests: encode/decode round trips, and any single-byte change to a token is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use proptest::prelude::*;
use time::OffsetDateTime;
use verifier::format::{limits, TOKEN_PREFIX};
use verifier::{Claims, KeySet, LicenseId, PublicKey, TokenKind, UnsignedToken, UntrustedToken};

fn signer() -> (SigningKey, KeySet) {
    let key = SigningKey::from_bytes(&[0x11; 32]);
    let public = PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap();
    (key, KeySet::from_lines(&[public.to_string()]).unwrap())
}

fn sign(key: &SigningKey, claims: &Claims) -> String {
    let id = PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap().key_id();
    let unsigned = UnsignedToken::new(id, claims).unwrap();
    let signature = key.sign(unsigned.message()).to_bytes();
    unsigned.finish(&signature)
}

fn time_secs() -> impl Strategy<Value = u64> {
    0..=limits::MAX_TIME
}

fn at(s: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(s as i64).unwrap()
}

prop_compose! {
    fn any_claims()(
        online in any::<bool>(),
        id in any::<[u8; 16]>(),
        key in "[!-~]{1,64}",
        email in "[a-z0-9.+]{1,60}@[a-zé0-9.-]{1,60}",
        product in "[A-Za-z0-9._-]{1,64}",
        entitlements in proptest::collection::btree_set("[A-Za-z0-9._:-]{1,32}", 0..=limits::MAX_ENTITLEMENTS),
        max_machines in 1..=u32::MAX,
        fingerprint in "[!-~]{1,128}",
        mut times in proptest::collection::vec(time_secs(), 3),
        license_expires_at in proptest::option::of(time_secs()),
    ) -> Claims {
        times.sort_unstable();
        Claims {
            kind: if online { TokenKind::Online } else { TokenKind::Offline },
            license_id: LicenseId(id),
            license_key: key,
            email,
            product,
            entitlements: entitlements.into_iter().collect(),
            max_machines,
            fingerprint,
            issued_at: at(times[0]),
            license_expires_at: license_expires_at.map(at),
            refresh_after: online.then(|| at(times[1])),
            token_expires_at: online.then(|| at(times[2])),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn claims_round_trip_through_a_signed_token(claims in any_claims()) {
        let (key, keys) = signer();
        let token = sign(&key, &claims);
        prop_assert!(token.len() <= verifier::format::MAX_TOKEN_LEN);
        let license = UntrustedToken::parse(&token).unwrap().verify(&keys).unwrap();
        prop_assert_eq!(license.claims(), &claims);
    }

    #[test]
    fn any_single_character_change_is_rejected(claims in any_claims(), pos in any::<prop::sample::Index>(), c in 0x20u8..0x7f) {
        let (key, keys) = signer();
        let token = sign(&key, &claims);
        let i = pos.index(token.len());
        prop_assume!(token.as_bytes()[i] != c);
        let mut bytes = token.into_bytes();
        bytes[i] = c;
        let changed = String::from_utf8(bytes).unwrap();
        // Whitespace at either end is trimmed by design; that is the only change that may be accepted.
        let trimmed_only = c == b' ' && (i == 0 || i == changed.len() - 1);
        let result = UntrustedToken::parse(&changed).and_then(|t| t.verify(&keys));
        if !trimmed_only {
            prop_assert!(result.is_err(), "accepted after changing character {} to {:?}", i, c as char);
        }
    }

    #[test]
    fn any_single_byte_change_of_the_signed_bytes_is_rejected(claims in any_claims(), pos in any::<prop::sample::Index>(), delta in 1u8..=255) {
        let (key, keys) = signer();
        let token = sign(&key, &claims);
        let mut raw = URL_SAFE_NO_PAD.decode(&token[TOKEN_PREFIX.len()..]).unwrap();
        let i = pos.index(raw.len());
        raw[i] = raw[i].wrapping_add(delta);
        let changed = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
        let err = UntrustedToken::parse(&changed).and_then(|t| t.verify(&keys)).unwrap_err();
        let expected: &[&str] = if i == 0 { &["malformed"] } else if i < 9 { &["unknown_key"] } else { &["bad_signature"] };
        prop_assert!(expected.contains(&err.code()), "byte {} changed: got {}", i, err.code());
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,600}") {
        let (_, keys) = signer();
        let _ = UntrustedToken::parse(&text).and_then(|t| t.verify(&keys));
        let with_prefix = format!("{TOKEN_PREFIX}{text}");
        let _ = UntrustedToken::parse(&with_prefix).and_then(|t| t.verify(&keys));
    }
}

#[test]
fn claims_beyond_the_limits_are_refused_by_the_encoder() {
    let (key, _) = signer();
    let id = PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap().key_id();
    let good = Claims {
        kind: TokenKind::Offline,
        license_id: LicenseId([1; 16]),
        license_key: "K".into(),
        email: "a@b".into(),
        product: "p".into(),
        entitlements: vec![],
        max_machines: 1,
        fingerprint: "f".into(),
        issued_at: at(1),
        license_expires_at: None,
        refresh_after: None,
        token_expires_at: None,
    };
    assert!(UnsignedToken::new(id, &good).is_ok());
    let cases: Vec<(&str, Claims)> = vec![
        ("license_key", Claims { license_key: "x".repeat(65), ..good.clone() }),
        ("license_key", Claims { license_key: "has space".into(), ..good.clone() }),
        ("email", Claims { email: "no-at-sign".into(), ..good.clone() }),
        ("email", Claims { email: format!("{}@b", "a".repeat(253)), ..good.clone() }),
        ("product", Claims { product: "acme cad".into(), ..good.clone() }),
        ("entitlements", Claims { entitlements: vec!["pro".into(), "pro".into()], ..good.clone() }),
        ("entitlements", Claims { entitlements: (0..17).map(|i| format!("e{i}")).collect(), ..good.clone() }),
        ("entitlements", Claims { entitlements: vec!["x".repeat(33)], ..good.clone() }),
        ("max_machines", Claims { max_machines: 0, ..good.clone() }),
        ("fingerprint", Claims { fingerprint: String::new(), ..good.clone() }),
        ("issued_at", Claims { issued_at: at(0) - time::Duration::seconds(1), ..good.clone() }),
        ("token_expires_at", Claims { kind: TokenKind::Online, ..good.clone() }),
        ("token_expires_at", Claims { token_expires_at: Some(at(5)), ..good.clone() }),
        (
            "refresh_after",
            Claims {
                kind: TokenKind::Online,
                refresh_after: Some(at(0)),
                token_expires_at: Some(at(9)),
                ..good.clone()
            },
        ),
    ];
    for (field, claims) in cases {
        let err = UnsignedToken::new(id, &claims).unwrap_err();
        assert_eq!(err.field, field, "{claims:?}");
    }
}
