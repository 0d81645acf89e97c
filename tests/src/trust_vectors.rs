//! Generator of the frozen vectors of certificates (`lkc1.`) and revocation lists (`lrl1.`), with the tokens they
//! judge: `verifier/tests/vectors/trust-v1/` (docs/token-format.md §16). Frozen like the token vectors: this proves
//! the files on disk are what the formats produce (Ed25519 signing is deterministic), and writes new files once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keys::SecretKey;
use serde_json::{json, Value};
use time::macros::datetime;
use verifier::{Claims, LicenseId, RootKey};

use crate::vectors::{claims_json, typical_claims, INSTALL_ID, PRODUCT};

/// Directory of the trust vectors, relative to the workspace root.
pub const DIR: &str = "verifier/tests/vectors/trust-v1";

/// The keys of the trust vectors: a trusted root, an untrusted one, and three signing keys no app trusts directly.
pub struct TrustKeys {
    /// The root in `roots.txt`.
    pub root: SecretKey,
    /// A root no app trusts.
    pub stranger_root: SecretKey,
    /// Certified by the root for every product, 2026.
    pub key_a: SecretKey,
    /// Certified by the root for `acme-viewer` only.
    pub key_b: SecretKey,
    /// Certified by the root for 2025 only.
    pub key_c: SecretKey,
}

impl TrustKeys {
    /// Deterministic test keys (seeds are hashes of fixed labels; public by design).
    pub fn fixed() -> Self {
        use sha2::Digest as _;
        let key = |label: &str| {
            let seed: [u8; 32] = sha2::Sha256::digest(format!("license test vectors trust-v1: {label}")).into();
            SecretKey::from_seed(&seed).unwrap()
        };
        TrustKeys {
            root: key("root"),
            stranger_root: key("untrusted root"),
            key_a: key("signing key a"),
            key_b: key("signing key b"),
            key_c: key("signing key c"),
        }
    }
}

/// One case: a token, the certificates and lists given before it, and the result.
struct Case {
    file: &'static str,
    token: String,
    about: &'static str,
    certificates: &'static [&'static str],
    revocation_lists: &'static [&'static str],
    expect: &'static str,
    claims: Option<Claims>,
}

fn root_line(key: &SecretKey) -> String {
    RootKey::from(key.public_key().clone()).to_string()
}

fn flip(text: &str, prefix: &str, byte: usize) -> String {
    let mut raw = URL_SAFE_NO_PAD.decode(text.strip_prefix(prefix).unwrap()).unwrap();
    raw[byte] ^= 0x01;
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// The other license of the vectors: valid while the typical one is revoked.
fn other_claims() -> Claims {
    Claims {
        license_id: "0190f5a4-7c1e-7a3b-9c4d-000000000002".parse().unwrap(),
        license_key: "8KQ3M-9XW2T-H4RVD-PNC8K".into(),
        email: "grace@hopper.example".into(),
        ..typical_claims()
    }
}

/// Every file of the trust vectors: name and content.
pub fn files(keys: &TrustKeys) -> Vec<(String, String)> {
    let window = |key: &SecretKey, root: &SecretKey, nb, na, scope: Option<&str>| {
        format!("{}\n", root.certify(key.public_key(), nb, na, scope).unwrap())
    };
    let year_2026 = (datetime!(2026-01-01 0:00 UTC), datetime!(2026-12-31 23:59:59 UTC));
    let cert_a = window(&keys.key_a, &keys.root, year_2026.0, year_2026.1, None);
    let cert_b = window(&keys.key_b, &keys.root, year_2026.0, year_2026.1, Some("acme-viewer"));
    let cert_c =
        window(&keys.key_c, &keys.root, datetime!(2025-01-01 0:00 UTC), datetime!(2025-12-31 23:59:59 UTC), None);
    let cert_a_stranger = window(&keys.key_a, &keys.stranger_root, year_2026.0, year_2026.1, None);
    // Byte 45 lies in not-before: a changed window must not verify.
    let cert_a_tampered = format!("{}\n", flip(cert_a.trim(), "lkc1.", 45));

    let typical = typical_claims();
    let listed = [typical.license_id];
    let at = datetime!(2026-11-23 0:00 UTC);
    let list = |key: &SecretKey, sequence, revoked: &[LicenseId]| {
        format!("{}\n", key.sign_revocation_list(sequence, at, revoked).unwrap())
    };
    let list_1 = list(&keys.key_a, 1, &listed);
    let list_2 = list(&keys.key_a, 2, &[listed[0], LicenseId([0x42; 16])]);
    let list_empty = list(&keys.key_a, 0, &[]);
    let list_stranger = list(&keys.stranger_root, 3, &listed);
    // Byte 30 lies in the first entry.
    let list_tampered = format!("{}\n", flip(list_1.trim(), "lrl1.", 30));

    let token_a = keys.key_a.sign(&typical).unwrap();
    let early = Claims { issued_at: datetime!(2025-12-31 23:59:59 UTC), ..typical.clone() };
    let case = |file, token: &String, about, certificates, revocation_lists, expect, claims: Option<&Claims>| Case {
        file,
        token: token.clone(),
        about,
        certificates,
        revocation_lists,
        expect,
        claims: claims.cloned(),
    };
    let cases = vec![
        case(
            "valid_cert_signed.token",
            &token_a,
            "signed by key a, which the root certified for 2026 and every product",
            &["cert_key_a.cert"],
            &[],
            "valid",
            Some(&typical),
        ),
        case(
            "fail_cert_missing.token",
            &token_a,
            "the same token without key a's certificate",
            &[],
            &[],
            "unknown_key",
            None,
        ),
        case(
            "fail_cert_unknown_root.token",
            &token_a,
            "key a's certificate by a root the app does not trust",
            &["fail_cert_unknown_root.cert"],
            &[],
            "unknown_root",
            None,
        ),
        case(
            "fail_cert_tampered.token",
            &token_a,
            "key a's certificate with one bit of not-before flipped",
            &["fail_cert_tampered.cert"],
            &[],
            "invalid_certificate",
            None,
        ),
        case(
            "fail_cert_expired.token",
            &keys.key_c.sign(&typical).unwrap(),
            "signed in 2026 by key c, whose certificate ended with 2025",
            &["cert_key_c_2025.cert"],
            &[],
            "certificate_expired",
            None,
        ),
        case(
            "fail_cert_outside_window.token",
            &keys.key_a.sign(&early).unwrap(),
            "signed by key a one second before its certificate's window starts",
            &["cert_key_a.cert"],
            &[],
            "certificate_not_yet_valid",
            None,
        ),
        case(
            "fail_cert_scope.token",
            &keys.key_b.sign(&typical).unwrap(),
            "an acme-cad token by key b, certified for acme-viewer only",
            &["cert_key_b_acme_viewer.cert"],
            &[],
            "certificate_scope",
            None,
        ),
        case(
            "fail_revocation_listed.token",
            &token_a,
            "the license is on the newest list (sequence 2, after sequence 1)",
            &["cert_key_a.cert"],
            &["revocation_seq1.revocation", "revocation_seq2.revocation"],
            "license_revoked",
            None,
        ),
        case(
            "valid_revocation_not_listed.token",
            &keys.key_a.sign(&other_claims()).unwrap(),
            "another license is not on the list",
            &["cert_key_a.cert"],
            &["revocation_seq2.revocation"],
            "valid",
            Some(&other_claims()),
        ),
        case(
            "valid_revocation_empty.token",
            &token_a,
            "an empty list (sequence 0) revokes nothing",
            &["cert_key_a.cert"],
            &["revocation_seq0_empty.revocation"],
            "valid",
            Some(&typical),
        ),
        case(
            "fail_revocation_older_sequence.token",
            &token_a,
            "list 1 offered after list 2 is refused",
            &["cert_key_a.cert"],
            &["revocation_seq2.revocation", "revocation_seq1.revocation"],
            "stale_revocation_list",
            None,
        ),
        case(
            "fail_revocation_tampered.token",
            &token_a,
            "a list with one bit of its first entry flipped",
            &["cert_key_a.cert"],
            &["fail_revocation_tampered.revocation"],
            "invalid_revocation_list",
            None,
        ),
        case(
            "fail_revocation_unknown_signer.token",
            &token_a,
            "a list signed by a key the app does not trust",
            &["cert_key_a.cert"],
            &["fail_revocation_unknown_signer.revocation"],
            "unknown_key",
            None,
        ),
    ];
    let manifest = json!({
        "format": "license key certificates (lkc1) and revocation lists (lrl1); see docs/token-format.md §16",
        "trusted_keys": "roots.txt",
        "validation": {
            "product": PRODUCT,
            "fingerprint": verifier::fingerprint(PRODUCT, INSTALL_ID),
            "leeway_secs": 60,
            "now": "2026-11-23T12:00:00Z",
        },
        "cases": cases.iter().map(|c| json!({
            "file": c.file,
            "about": c.about,
            "certificates": c.certificates,
            "revocation_lists": c.revocation_lists,
            "expect": c.expect,
            "claims": c.claims.as_ref().map(claims_json).unwrap_or(Value::Null),
        })).collect::<Vec<_>>(),
    });
    let mut files = vec![
        ("cases.json".to_string(), format!("{}\n", serde_json::to_string_pretty(&manifest).unwrap())),
        ("roots.txt".to_string(), format!("# The trusted root of the trust-v1 vectors.\n{}\n", root_line(&keys.root))),
        ("cert_key_a.cert".into(), cert_a),
        ("cert_key_b_acme_viewer.cert".into(), cert_b),
        ("cert_key_c_2025.cert".into(), cert_c),
        ("fail_cert_unknown_root.cert".into(), cert_a_stranger),
        ("fail_cert_tampered.cert".into(), cert_a_tampered),
        ("revocation_seq0_empty.revocation".into(), list_empty),
        ("revocation_seq1.revocation".into(), list_1),
        ("revocation_seq2.revocation".into(), list_2),
        ("fail_revocation_tampered.revocation".into(), list_tampered),
        ("fail_revocation_unknown_signer.revocation".into(), list_stranger),
    ];
    files.extend(cases.into_iter().map(|c| (c.file.to_string(), c.token)));
    files
}
