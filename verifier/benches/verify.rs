//! Token verification cost against its floor and against JWT (EdDSA) and PASETO v4.public carrying the same claims.
//!
//! Run: `cargo bench -p verifier --bench verify`. Prints the three tokens' lengths first, then criterion's timings:
//! - `floor/verify_strict`: one Ed25519 `verify_strict` over a message as long as a token's signed bytes;
//! - `token/verify_at`: our whole check (parse, key lookup, signature, claims decode, validation);
//! - `jwt/decode_eddsa`: jsonwebtoken decoding and validating the same claims as an EdDSA JWT;
//! - `paseto/v4_public_verify`: pasetors verifying and validating the same claims as a v4.public token.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use verifier::format::SIGNING_LABEL;
use verifier::{fingerprint, verify_at, Claims, KeySet, PublicKey, TokenKind, UnsignedToken, Validation};

/// The same claims as a JWT/PASETO payload (short standard names where one exists, as a JWT user would write them).
#[derive(Serialize, Deserialize)]
struct JsonClaims {
    kind: String,
    jti: String,
    key: String,
    email: String,
    product: String,
    entitlements: Vec<String>,
    max_machines: u32,
    fingerprint: String,
    iat: i64,
    license_exp: Option<i64>,
    refresh_after: Option<i64>,
    exp: i64,
}

fn typical_claims(now: OffsetDateTime) -> Claims {
    let issued_at = now.replace_nanosecond(0).unwrap();
    Claims {
        kind: TokenKind::Online,
        license_id: "0190f5a4-7c1e-7a3b-9c4d-5e6f708192a3".parse().unwrap(),
        license_key: "7KQ3M-9XW2T-H4RVD-PNC8J".into(),
        email: "ada@lovelace-labs.io".into(),
        product: "acme-cad".into(),
        entitlements: vec!["pro".into(), "export".into()],
        max_machines: 3,
        fingerprint: fingerprint("acme-cad", "bench-install"),
        issued_at,
        license_expires_at: Some(issued_at + Duration::days(365)),
        refresh_after: Some(issued_at + Duration::days(7)),
        token_expires_at: Some(issued_at + Duration::days(30)),
    }
}

fn json_claims(c: &Claims) -> JsonClaims {
    JsonClaims {
        kind: "online".into(),
        jti: c.license_id.to_string(),
        key: c.license_key.clone(),
        email: c.email.clone(),
        product: c.product.clone(),
        entitlements: c.entitlements.clone(),
        max_machines: c.max_machines,
        fingerprint: c.fingerprint.clone(),
        iat: c.issued_at.unix_timestamp(),
        license_exp: c.license_expires_at.map(|t| t.unix_timestamp()),
        refresh_after: c.refresh_after.map(|t| t.unix_timestamp()),
        exp: c.token_expires_at.unwrap().unix_timestamp(),
    }
}

fn benches(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let claims = typical_claims(now);
    let signing = SigningKey::from_bytes(&[0x5a; 32]);
    let public = PublicKey::from_bytes(signing.verifying_key().as_bytes()).unwrap();
    let keys = KeySet::from_lines(&[public.to_string()]).unwrap();

    // Ours.
    let unsigned = UnsignedToken::new(public.key_id(), &claims).unwrap();
    let signed_len = unsigned.message().len();
    let token =
        unsigned.finish(&signing.sign(UnsignedToken::new(public.key_id(), &claims).unwrap().message()).to_bytes());
    let validation = Validation::new("acme-cad", claims.fingerprint.clone());
    verify_at(&token, &keys, &validation, now).unwrap();

    // Floor: the signature check alone, over a message of the same length.
    let message = vec![0x42u8; signed_len];
    let floor_signature = signing.sign(&message);
    let verifying = signing.verifying_key();

    // JWT, EdDSA.
    let jwt_claims = json_claims(&claims);
    let der = signing.to_pkcs8_der().unwrap();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &jwt_claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    let jwt_key = jsonwebtoken::DecodingKey::from_ed_der(verifying.as_bytes());
    let mut jwt_validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    jwt_validation.validate_aud = false;
    jsonwebtoken::decode::<JsonClaims>(&jwt, &jwt_key, &jwt_validation).unwrap();

    // PASETO v4.public.
    use pasetors::claims::{Claims as PasetoClaims, ClaimsValidationRules};
    use pasetors::keys::{AsymmetricPublicKey, AsymmetricSecretKey};
    use pasetors::token::UntrustedToken;
    use pasetors::version4::V4;
    use pasetors::{public as paseto, Public};
    let mut keypair = [0u8; 64];
    keypair[..32].copy_from_slice(&signing.to_bytes());
    keypair[32..].copy_from_slice(verifying.as_bytes());
    let paseto_secret = AsymmetricSecretKey::<V4>::from(&keypair).unwrap();
    let paseto_public = AsymmetricPublicKey::<V4>::from(verifying.as_bytes()).unwrap();
    let mut pc = PasetoClaims::new().unwrap();
    let rfc = |t: OffsetDateTime| t.format(&Rfc3339).unwrap();
    pc.issued_at(&rfc(claims.issued_at)).unwrap();
    pc.not_before(&rfc(claims.issued_at)).unwrap();
    pc.expiration(&rfc(claims.token_expires_at.unwrap())).unwrap();
    pc.token_identifier(&claims.license_id.to_string()).unwrap();
    pc.add_additional("kind", "online").unwrap();
    pc.add_additional("key", claims.license_key.clone()).unwrap();
    pc.add_additional("email", claims.email.clone()).unwrap();
    pc.add_additional("product", claims.product.clone()).unwrap();
    pc.add_additional("entitlements", claims.entitlements.clone()).unwrap();
    pc.add_additional("max_machines", claims.max_machines).unwrap();
    pc.add_additional("fingerprint", claims.fingerprint.clone()).unwrap();
    pc.add_additional("license_exp", rfc(claims.license_expires_at.unwrap())).unwrap();
    pc.add_additional("refresh_after", rfc(claims.refresh_after.unwrap())).unwrap();
    let paseto_token = paseto::sign(&paseto_secret, &pc, None, None).unwrap();
    let rules = ClaimsValidationRules::new();
    let untrusted = UntrustedToken::<Public, V4>::try_from(&paseto_token).unwrap();
    paseto::verify(&paseto_public, &untrusted, &rules, None, None).unwrap();

    println!("token lengths (characters) for the same claims, 20-character email:");
    println!("  license token v1 : {}", token.len());
    println!("  JWT EdDSA        : {}", jwt.len());
    println!("  PASETO v4.public : {}", paseto_token.len());
    println!("  (signed message {} bytes incl. {}-byte label)", signed_len, SIGNING_LABEL.len());

    c.bench_function("floor/verify_strict", |b| {
        b.iter(|| verifying.verify_strict(black_box(&message), black_box(&floor_signature)).unwrap())
    });
    c.bench_function("token/verify_at", |b| b.iter(|| verify_at(black_box(&token), &keys, &validation, now).unwrap()));
    c.bench_function("jwt/decode_eddsa", |b| {
        b.iter(|| jsonwebtoken::decode::<JsonClaims>(black_box(&jwt), &jwt_key, &jwt_validation).unwrap())
    });
    c.bench_function("paseto/v4_public_verify", |b| {
        b.iter(|| {
            let untrusted = UntrustedToken::<Public, V4>::try_from(black_box(&paseto_token)).unwrap();
            paseto::verify(&paseto_public, &untrusted, &rules, None, None).unwrap()
        })
    });
}

criterion_group!(verify, benches);
criterion_main!(verify);
