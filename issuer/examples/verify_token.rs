//! Verifies a license token offline, the way an app does, with nothing but the vendor's public key line(s).
//!
//! ```text
//! cargo run -p issuer --example verify_token -- PRODUCT FINGERPRINT TOKEN PUBLIC_KEY_LINE...
//! ```
//! Prints the license the token carries, or why it was refused (exit code 1).

use std::process::ExitCode;

use verifier::{verify, KeySet, Validation};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [product, fingerprint, token, key_lines @ ..] = &args[..] else {
        eprintln!("usage: verify_token PRODUCT FINGERPRINT TOKEN PUBLIC_KEY_LINE...");
        return ExitCode::from(2);
    };
    let keys = match KeySet::from_lines(key_lines) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("bad public key: {e}");
            return ExitCode::from(2);
        }
    };
    match verify(token, &keys, &Validation::new(product.as_str(), fingerprint.as_str())) {
        Ok(verified) => {
            let l = &verified.license;
            println!(
                "valid ({:?}): license {} for {} ({}), key {}",
                verified.status, l.license_id, l.email, l.product, l.license_key
            );
            println!("entitlements: {}", l.entitlements.join(", "));
            println!("refresh after: {:?}, token expires: {:?}", l.refresh_after, l.token_expires_at);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("refused ({}): {e}", e.code());
            ExitCode::from(1)
        }
    }
}
