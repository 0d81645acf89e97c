//! Generator of the frozen v1 token test vectors.
//!
//! The vectors are the contract other-language verifiers are written against, so they never change: this generator
//! exists to prove that the files on disk are exactly what the format and the `keys` crate produce (Ed25519 signing is
//! deterministic), and to write the files of a new vector once. `vectors_match_the_generator` compares every file.
//!
//! To add vectors (only ever for a new case or a new format version, never to edit one): add them at the end of
//! [`cases`] and run `VECTORS_WRITE=1 cargo test -p e2e-tests --test vectors`. It writes the new files and appends the
//! new cases to `cases.json`; no other existing file is ever overwritten, and `cases.json` is rewritten only when its
//! existing entries come out byte for byte as before.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer as _, SigningKey};
use keys::SecretKey;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::OffsetDateTime;
use verifier::format::{MAX_TOKEN_LEN, PUBLIC_KEY_PREFIX, SIGNING_LABEL, TOKEN_PREFIX};
use verifier::{fingerprint, Claims, KeyId, LicenseId, TokenKind, UnsignedToken};

/// Directory of the v1 vectors, relative to the workspace root.
pub const DIR: &str = "verifier/tests/vectors/v1";

/// The product every vector's validation expects.
pub const PRODUCT: &str = "acme-cad";

/// The install id whose fingerprint the vectors are bound to.
pub const INSTALL_ID: &str = "test-install-id";

/// The claims of `valid_online.token`: a typical online token (20-character email).
pub fn typical_claims() -> Claims {
    Claims {
        kind: TokenKind::Online,
        license_id: "0190f5a4-7c1e-7a3b-9c4d-5e6f708192a3".parse().unwrap(),
        license_key: "7KQ3M-9XW2T-H4RVD-PNC8J".into(),
        email: "ada@lovelace-labs.io".into(),
        product: PRODUCT.into(),
        entitlements: vec!["pro".into(), "export".into()],
        max_machines: 3,
        fingerprint: fingerprint(PRODUCT, INSTALL_ID),
        issued_at: datetime!(2026-11-22 10:00 UTC),
        license_expires_at: Some(datetime!(2027-11-22 10:00 UTC)),
        refresh_after: Some(datetime!(2026-11-29 10:00 UTC)),
        token_expires_at: Some(datetime!(2026-12-22 10:00 UTC)),
    }
}

fn offline_claims() -> Claims {
    Claims {
        kind: TokenKind::Offline,
        license_id: LicenseId([0x42; 16]),
        entitlements: vec![],
        max_machines: 1,
        license_expires_at: None,
        refresh_after: None,
        token_expires_at: None,
        ..typical_claims()
    }
}

/// One vector: a token file and how a verifier must judge it.
pub struct Case {
    /// File name of the token.
    pub file: &'static str,
    /// Token text.
    pub token: String,
    /// What the vector checks, in a sentence.
    pub about: &'static str,
    /// The time to verify at.
    pub now: OffsetDateTime,
    /// `valid`, `refresh_due`, or an error code of `verifier::Error::code`.
    pub expect: &'static str,
    /// For accepted tokens, the claims a verifier must decode.
    pub claims: Option<Claims>,
    /// A key set file to verify with instead of the manifest's `trusted_keys`; `None` for most cases (and then the
    /// case's JSON has no such field, so the entries written before this field existed stay byte for byte the same).
    pub trusted_keys: Option<&'static str>,
}

/// The keys of the vectors: the trusted test key, a second trusted (retired) key, and an untrusted one.
pub struct VectorKeys {
    /// Trusted, active.
    pub main: SecretKey,
    /// Trusted, retired: tokens it signed must still verify.
    pub retired: SecretKey,
    /// Not trusted: its tokens are `unknown_key`.
    pub stranger: SecretKey,
}

impl VectorKeys {
    /// Deterministic keys (seeds are fixed labels' hashes; these are test keys, public by design).
    pub fn fixed() -> Self {
        use sha2::Digest as _;
        let seed = |label: &str| -> [u8; 32] { sha2::Sha256::digest(label.as_bytes()).into() };
        VectorKeys {
            main: SecretKey::from_seed(&seed("license test vectors v1: main key")).unwrap(),
            retired: SecretKey::from_seed(&seed("license test vectors v1: retired key")).unwrap(),
            stranger: SecretKey::from_seed(&seed("license test vectors v1: untrusted key")).unwrap(),
        }
    }
}

fn dalek(key: &SecretKey) -> SigningKey {
    SigningKey::from_pkcs8_pem(key.to_pem().unwrap().split_once('\n').unwrap().1).unwrap()
}

/// Signs arbitrary header+claims bytes with the format's label: for vectors whose bytes the encoder refuses to make.
fn sign_raw(key: &SecretKey, raw: &[u8]) -> String {
    let mut message = SIGNING_LABEL.to_vec();
    message.extend_from_slice(raw);
    let signature = dalek(key).sign(&message);
    let mut all = raw.to_vec();
    all.extend_from_slice(&signature.to_bytes());
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(all))
}

fn raw_bytes(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token.strip_prefix(TOKEN_PREFIX).unwrap()).unwrap()
}

fn encode_raw(raw: &[u8]) -> String {
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// Header and claims bytes of a token signed by `key` (without its signature).
fn unsigned_raw(key: &SecretKey, claims: &Claims) -> Vec<u8> {
    let unsigned = UnsignedToken::new(key.key_id(), claims).unwrap();
    unsigned.message()[SIGNING_LABEL.len()..].to_vec()
}

/// Every v1 vector.
pub fn cases(keys: &VectorKeys) -> Vec<Case> {
    let typical = typical_claims();
    let online = keys.main.sign(&typical).unwrap();
    let offline = keys.main.sign(&offline_claims()).unwrap();
    let day_after = datetime!(2026-11-23 12:00 UTC);
    let case =
        |file, token, about, now, expect, claims| Case { file, token, about, now, expect, claims, trusted_keys: None };
    let mut out = vec![
        case("valid_online.token", online.clone(), "typical online token", day_after, "valid", Some(typical.clone())),
        case(
            "valid_offline.token",
            offline.clone(),
            "perpetual offline token, years later",
            datetime!(2030-01-01 0:00 UTC),
            "valid",
            Some(offline_claims()),
        ),
    ];
    out.push(case(
        "valid_online_refresh_due.token",
        online.clone(),
        "the same online token after refresh_after: still valid, refresh due",
        datetime!(2026-12-01 0:00 UTC),
        "refresh_due",
        Some(typical.clone()),
    ));
    out.push(case(
        "valid_retired_key.token",
        keys.retired.sign(&typical).unwrap(),
        "signed by a retired key still in the key set",
        day_after,
        "valid",
        Some(typical.clone()),
    ));
    let within_leeway = Claims { issued_at: datetime!(2026-11-23 12:00:30 UTC), ..typical.clone() };
    out.push(case(
        "valid_issued_within_leeway.token",
        keys.main.sign(&within_leeway).unwrap(),
        "issued 30 s after the verifier's clock: inside the 60 s leeway",
        day_after,
        "valid",
        Some(within_leeway),
    ));

    // Damaged tokens.
    let mut raw = raw_bytes(&online);
    raw[20] ^= 0x01;
    out.push(case(
        "fail_flipped_bit.token",
        encode_raw(&raw),
        "one bit of the claims flipped",
        day_after,
        "bad_signature",
        None,
    ));
    let mut raw = raw_bytes(&online);
    let last = raw.len() - 1;
    raw[last] ^= 0x80;
    out.push(case(
        "fail_flipped_signature_bit.token",
        encode_raw(&raw),
        "one bit of the signature flipped",
        day_after,
        "bad_signature",
        None,
    ));
    let raw = raw_bytes(&online);
    out.push(case(
        "fail_truncated.token",
        encode_raw(&raw[..raw.len() - 3]),
        "last 3 bytes cut off",
        day_after,
        "bad_signature",
        None,
    ));
    out.push(case(
        "fail_truncated_short.token",
        online[..40].to_string(),
        "cut to 40 characters: shorter than any token",
        day_after,
        "malformed",
        None,
    ));
    out.push(case("fail_empty.token", String::new(), "empty text", day_after, "malformed", None));
    out.push(case(
        "fail_not_a_token.token",
        "eyJhbGciOiJFZERTQSJ9.e30.sig".into(),
        "a JWT, not a license token",
        day_after,
        "malformed",
        None,
    ));
    out.push(case(
        "fail_unknown_version.token",
        online.replacen("lic1.", "lic2.", 1),
        "prefix declares format version 2",
        day_after,
        "unsupported_version",
        None,
    ));
    out.push(case(
        "fail_unknown_key.token",
        keys.stranger.sign(&typical).unwrap(),
        "validly signed by a key that is not trusted",
        day_after,
        "unknown_key",
        None,
    ));
    let mut raw = unsigned_raw(&keys.main, &typical);
    raw[0] = 2;
    out.push(case(
        "fail_header_version.token",
        sign_raw(&keys.main, &raw),
        "validly signed, but the header's version byte (2) disagrees with the lic1 prefix",
        day_after,
        "malformed",
        None,
    ));
    let mut raw = unsigned_raw(&keys.main, &typical);
    raw.push(0);
    out.push(case(
        "fail_trailing_bytes.token",
        sign_raw(&keys.main, &raw),
        "validly signed, one zero byte after the claims",
        day_after,
        "malformed",
        None,
    ));
    out.push(case(
        "fail_noncanonical_varint.token",
        sign_raw(&keys.main, &overlong_varint(&keys.main, &typical)),
        "validly signed, max_machines encoded as an overlong varint (0x83 0x00)",
        day_after,
        "malformed",
        None,
    ));
    let mut online_without_expiry = unsigned_raw(&keys.main, &offline_claims());
    online_without_expiry[9] = 0; // kind: offline -> online, which needs refresh_after and token_expires_at
    out.push(case(
        "fail_online_without_expiry.token",
        sign_raw(&keys.main, &online_without_expiry),
        "validly signed online token without refresh_after and token_expires_at",
        day_after,
        "malformed",
        None,
    ));
    out.push(case(
        "fail_base64_padding.token",
        format!("{online}="),
        "base64 padding added",
        day_after,
        "malformed",
        None,
    ));
    let noncanonical = noncanonical_base64(&online).or_else(|| noncanonical_base64(&offline)).unwrap();
    out.push(case(
        "fail_noncanonical_base64.token",
        noncanonical,
        "non-zero unused bits in the last base64 character",
        day_after,
        "malformed",
        None,
    ));
    out.push(case(
        "fail_noncanonical_scalar.token",
        add_group_order_to_s(&online),
        "signature scalar S replaced by S + L (the same signature, non-canonical): verify_strict refuses it",
        day_after,
        "bad_signature",
        None,
    ));
    out.push(case(
        "fail_internal_whitespace.token",
        format!("{} {}", &online[..100], &online[100..]),
        "a space inside the token",
        day_after,
        "malformed",
        None,
    ));

    // Well-formed tokens that validation refuses.
    let other_machine = Claims { fingerprint: fingerprint(PRODUCT, "another-install"), ..typical.clone() };
    out.push(case(
        "fail_wrong_machine.token",
        keys.main.sign(&other_machine).unwrap(),
        "bound to another machine's fingerprint",
        day_after,
        "wrong_machine",
        None,
    ));
    let other_product = Claims { product: "acme-viewer".into(), ..typical.clone() };
    out.push(case(
        "fail_wrong_product.token",
        keys.main.sign(&other_product).unwrap(),
        "for product acme-viewer",
        day_after,
        "wrong_product",
        None,
    ));
    let expired_license = Claims { license_expires_at: Some(datetime!(2026-11-23 0:00 UTC)), ..typical.clone() };
    out.push(case(
        "fail_license_expired.token",
        keys.main.sign(&expired_license).unwrap(),
        "license expired 12 h before now",
        day_after,
        "license_expired",
        None,
    ));
    out.push(case(
        "fail_token_expired.token",
        online.clone(),
        "online token at token_expires_at plus the 60 s leeway: the first rejected second",
        datetime!(2026-12-22 10:01:00 UTC),
        "token_expired",
        None,
    ));
    let future = Claims { issued_at: datetime!(2026-11-23 12:05 UTC), ..typical.clone() };
    out.push(case(
        "fail_not_yet_valid.token",
        keys.main.sign(&future).unwrap(),
        "issued 5 minutes after the verifier's clock",
        day_after,
        "not_yet_valid",
        None,
    ));

    // Added after the first 26: appended, so the entries above keep their place in cases.json.
    out.push(case(
        "fail_small_order_r.token",
        small_order_r(&keys.main, &typical),
        "signature R is the identity point (small order) and S = k*a, so the cofactorless equation holds: \
         non-strict verifiers accept it, strict verification refuses it",
        day_after,
        "bad_signature",
        None,
    ));
    for (file, trusted_keys, about) in [
        (
            "fail_noncanonical_key.token",
            "fail_noncanonical_key.keys.txt",
            "a valid token, but the key set holds a key line whose point encoding has y = p + 3 (non-canonical, with \
             its correct key id): the whole key set is refused",
        ),
        (
            "fail_small_order_key.token",
            "fail_small_order_key.keys.txt",
            "a valid token, but the key set holds a key line of a small-order point (order 8, with its correct key \
             id): the whole key set is refused",
        ),
        (
            "fail_key_id_mismatch.token",
            "fail_key_id_mismatch.keys.txt",
            "a valid token, but the key set holds a key line of the main key with the retired key's key id: the \
             whole key set is refused",
        ),
    ] {
        out.push(Case {
            trusted_keys: Some(trusted_keys),
            ..case(file, online.clone(), about, day_after, "invalid_public_key", None)
        });
    }

    // The prefix rules of §2.
    let body = online.strip_prefix(TOKEN_PREFIX).unwrap();
    for (file, prefix, about, expect) in [
        ("fail_version_leading_zero.token", "lic01.", "prefix version with a leading zero (lic01.)", "malformed"),
        (
            "fail_version_zero.token",
            "lic0.",
            "prefix version 0 (lic0.): well formed, not supported",
            "unsupported_version",
        ),
        (
            "fail_version_nine_digits.token",
            "lic999999999.",
            "prefix version 999999999, the largest 9-digit version: well formed, not supported",
            "unsupported_version",
        ),
        ("fail_version_ten_digits.token", "lic1000000000.", "a 10-digit prefix version (lic1000000000.)", "malformed"),
        ("fail_uppercase_prefix.token", "LIC1.", "uppercase prefix LIC1.", "malformed"),
    ] {
        out.push(case(file, format!("{prefix}{body}"), about, day_after, expect, None));
    }

    // Whitespace: exactly HT, LF, FF, CR and SP are trimmed, nothing else.
    out.push(case(
        "valid_surrounded_by_ascii_whitespace.token",
        format!("\t\n\x0c\r {online} \r\x0c\n\t"),
        "the typical token surrounded on both sides by all five trimmed characters (HT LF FF CR SP)",
        day_after,
        "valid",
        Some(typical.clone()),
    ));
    out.push(case(
        "fail_trailing_vertical_tab.token",
        format!("{online}\x0b"),
        "the typical token followed by a vertical tab (0B), which is not trimmed",
        day_after,
        "malformed",
        None,
    ));
    out.push(case(
        "fail_trailing_nbsp.token",
        format!("{online}\u{a0}"),
        "the typical token followed by U+00A0 NO-BREAK SPACE (C2 A0), which is not trimmed",
        day_after,
        "malformed",
        None,
    ));
    out.push(case(
        "fail_leading_bom.token",
        format!("\u{feff}{online}"),
        "the typical token after a byte order mark U+FEFF (EF BB BF), which is not trimmed",
        day_after,
        "malformed",
        None,
    ));

    // The 2048-byte limit. Nothing longer than 1561 characters can be a valid v1 token, so the limit only decides
    // between unsupported_version and malformed for another version's prefix.
    let at_limit = format!("lic2.{}", "A".repeat(MAX_TOKEN_LEN - "lic2.".len()));
    assert_eq!(at_limit.len(), MAX_TOKEN_LEN);
    out.push(case(
        "fail_unknown_version_2048_bytes.token",
        at_limit.clone(),
        "prefix lic2. and a body of 2043 base64 characters: exactly 2048 bytes, so the version is reported",
        day_after,
        "unsupported_version",
        None,
    ));
    out.push(case(
        "fail_unknown_version_2049_bytes.token",
        format!("{at_limit}A"),
        "prefix lic2. and a body of 2044 base64 characters: 2049 bytes, over the limit, which is checked first",
        day_after,
        "malformed",
        None,
    ));
    let padding = " ".repeat(1100);
    out.push(case(
        "valid_padded_beyond_2048_bytes.token",
        format!("{padding}{online}{padding}"),
        "the typical token between 1100 spaces on each side: trimming comes before the length limit",
        day_after,
        "valid",
        Some(typical.clone()),
    ));

    // Exact time boundaries (leeway 60 s).
    out.push(case(
        "valid_online_before_refresh_after.token",
        online.clone(),
        "the typical online token one second before refresh_after: valid, no refresh due yet",
        datetime!(2026-11-29 9:59:59 UTC),
        "valid",
        Some(typical.clone()),
    ));
    out.push(case(
        "valid_online_at_refresh_after.token",
        online.clone(),
        "the typical online token at exactly refresh_after: refresh due (no leeway)",
        datetime!(2026-11-29 10:00:00 UTC),
        "refresh_due",
        Some(typical.clone()),
    ));
    let at_leeway = Claims { issued_at: datetime!(2026-11-23 12:01:00 UTC), ..typical.clone() };
    out.push(case(
        "valid_issued_at_leeway_edge.token",
        keys.main.sign(&at_leeway).unwrap(),
        "issued exactly 60 s after the verifier's clock: the last second the 60 s leeway accepts",
        day_after,
        "valid",
        Some(at_leeway),
    ));
    let past_leeway = Claims { issued_at: datetime!(2026-11-23 12:01:01 UTC), ..typical.clone() };
    out.push(case(
        "fail_issued_past_leeway.token",
        keys.main.sign(&past_leeway).unwrap(),
        "issued 61 s after the verifier's clock: the first second past the 60 s leeway",
        day_after,
        "not_yet_valid",
        None,
    ));
    out
}

/// The public key line for `point` with its correctly derived key id, even for points `PublicKey` refuses.
fn key_line(point: &[u8; 32]) -> String {
    key_line_with_id(KeyId::derive(point), point)
}

fn key_line_with_id(key_id: KeyId, point: &[u8; 32]) -> String {
    let mut raw = key_id.to_bytes().to_vec();
    raw.extend_from_slice(point);
    format!("{PUBLIC_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// `y = p + 3`, little-endian with the sign bit clear: a non-canonical encoding of the large-order point with y = 3
/// (ed25519-dalek's `VerifyingKey::from_bytes` accepts it, reducing y mod p).
const NONCANONICAL_POINT: [u8; 32] = {
    let mut y = [0xff; 32];
    y[0] = 0xf0;
    y[31] = 0x7f;
    y
};

/// A point of order 8 (canonical encoding).
const SMALL_ORDER_POINT: [u8; 32] = [
    0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53,
    0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
];

/// The key set files of the `invalid_public_key` cases: the main key, then one line a verifier must refuse.
fn bad_key_sets(keys: &VectorKeys) -> Vec<(String, String)> {
    let main = keys.main.public_key();
    let sets = [
        (
            "fail_noncanonical_key.keys.txt",
            "# The main key, then a key line whose point has y = p + 3 (non-canonical encoding): refused.",
            key_line(&NONCANONICAL_POINT),
        ),
        (
            "fail_small_order_key.keys.txt",
            "# The main key, then a key line of a point of order 8: refused.",
            key_line(&SMALL_ORDER_POINT),
        ),
        (
            "fail_key_id_mismatch.keys.txt",
            "# The main key, then the main key's point under the retired key's key id: refused.",
            key_line_with_id(keys.retired.key_id(), &main.to_bytes()),
        ),
    ];
    sets.into_iter().map(|(file, comment, line)| (file.to_string(), format!("{comment}\n{main}\n{line}\n"))).collect()
}

/// The typical token signed with R = the identity point and S = k·a mod L, where k = SHA-512(R ‖ A ‖ M) mod L and a
/// is the key's secret scalar: [S]B − [k]A = identity = R, so the cofactorless equation holds, but R has small order.
fn small_order_r(key: &SecretKey, claims: &Claims) -> String {
    use curve25519_dalek::Scalar;
    use ed25519_dalek::hazmat::ExpandedSecretKey;
    use sha2::Digest as _;

    let raw = unsigned_raw(key, claims);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let k = sha2::Sha512::new()
        .chain_update(identity)
        .chain_update(key.public_key().to_bytes())
        .chain_update(SIGNING_LABEL)
        .chain_update(&raw)
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&k);
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    let a = ExpandedSecretKey::from(&dalek(key).to_bytes()).scalar;
    let mut all = raw;
    all.extend_from_slice(&identity);
    all.extend_from_slice((k * a).as_bytes());
    encode_raw(&all)
}

/// The typical claims' bytes with max_machines (3) written as the overlong varint 0x83 0x00.
fn overlong_varint(key: &SecretKey, claims: &Claims) -> Vec<u8> {
    let four = Claims { max_machines: 4, ..claims.clone() };
    let a = unsigned_raw(key, claims);
    let b = unsigned_raw(key, &four);
    let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap();
    assert_eq!((a[at], b[at]), (3, 4));
    let mut raw = a[..at].to_vec();
    raw.extend_from_slice(&[0x83, 0x00]);
    raw.extend_from_slice(&a[at + 1..]);
    raw
}

/// The token with its last base64 character's unused low bits set, if its length leaves any.
fn noncanonical_base64(token: &str) -> Option<String> {
    let body = token.strip_prefix(TOKEN_PREFIX).unwrap();
    let unused_bits = match body.len() % 4 {
        2 => 4,
        3 => 2,
        _ => return None,
    };
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = body.as_bytes()[body.len() - 1];
    let value = ALPHABET.iter().position(|&c| c == last).unwrap();
    let changed = ALPHABET[value | ((1 << unused_bits) - 1)] as char;
    Some(format!("{TOKEN_PREFIX}{}{changed}", &body[..body.len() - 1]))
}

/// Adds the group order L to the signature's S (little-endian), giving a non-canonical encoding of the same S.
fn add_group_order_to_s(token: &str) -> String {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut raw = raw_bytes(token);
    let s_at = raw.len() - 32;
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let sum = u16::from(raw[s_at + i]) + u16::from(*l) + carry;
        raw[s_at + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits since S < L < 2^253");
    encode_raw(&raw)
}

fn time_json(t: Option<OffsetDateTime>) -> Value {
    t.map(|t| Value::String(t.format(&Rfc3339).unwrap())).unwrap_or(Value::Null)
}

/// Claims as the JSON of `cases.json` (times as RFC 3339, kind as `online`/`offline`).
pub fn claims_json(c: &Claims) -> Value {
    json!({
        "kind": match c.kind { TokenKind::Online => "online", TokenKind::Offline => "offline" },
        "license_id": c.license_id.to_string(),
        "license_key": c.license_key,
        "email": c.email,
        "product": c.product,
        "entitlements": c.entitlements,
        "max_machines": c.max_machines,
        "fingerprint": c.fingerprint,
        "issued_at": time_json(Some(c.issued_at)),
        "license_expires_at": time_json(c.license_expires_at),
        "refresh_after": time_json(c.refresh_after),
        "token_expires_at": time_json(c.token_expires_at),
    })
}

/// Every file of the vector directory with its exact content.
pub fn files(keys: &VectorKeys) -> Vec<(String, String)> {
    let cases = cases(keys);
    let manifest = json!({
        "format": "license token v1; see docs/token-format.md",
        "trusted_keys": "keys.txt",
        "validation": { "product": PRODUCT, "fingerprint": fingerprint(PRODUCT, INSTALL_ID), "leeway_secs": 60 },
        "cases": cases.iter().map(|c| {
            let mut entry = json!({
                "file": c.file,
                "about": c.about,
                "now": time_json(Some(c.now)),
                "expect": c.expect,
                "claims": c.claims.as_ref().map(claims_json),
            });
            if let Some(trusted_keys) = c.trusted_keys {
                entry["trusted_keys"] = trusted_keys.into();
            }
            entry
        }).collect::<Vec<_>>(),
    });
    let mut files = vec![
        ("cases.json".to_string(), format!("{}\n", serde_json::to_string_pretty(&manifest).unwrap())),
        (
            "keys.txt".to_string(),
            format!(
                "# Trusted public keys of the v1 test vectors (main key, then a retired key).\n{}\n{}\n",
                keys.main.public_key(),
                keys.retired.public_key()
            ),
        ),
        ("test-key.pem".to_string(), keys.main.to_pem().unwrap().to_string()),
        ("untrusted-key.pub".to_string(), format!("{}\n", keys.stranger.public_key())),
    ];
    files.extend(bad_key_sets(keys));
    // Token files have no trailing newline: the bytes are exactly the token (verifiers must also accept one).
    files.extend(cases.into_iter().map(|c| (c.file.to_string(), c.token)));
    files
}
