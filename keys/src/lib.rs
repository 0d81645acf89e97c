//! Ed25519 signing keys for license tokens: generation, key files, key ids, the key ring and signing.
//!
//! ```
//! use keys::KeyRing;
//! use verifier::{Claims, LicenseId, TokenKind, Validation, verify_at};
//! use time::macros::datetime;
//!
//! let dir = tempfile::tempdir()?;
//! let ring = KeyRing::create(dir.path())?; // one active key, files 0600
//! let claims = Claims {
//!     kind: TokenKind::Offline,
//!     license_id: LicenseId([7; 16]),
//!     license_key: "7KQ3M-9XW2T-H4RVD-PNC8J".into(),
//!     email: "ada@example.com".into(),
//!     product: "acme-cad".into(),
//!     entitlements: vec!["pro".into()],
//!     max_machines: 3,
//!     fingerprint: "cWJjS0ZOb2VQVDhrR3lTZw".into(),
//!     issued_at: datetime!(2026-11-22 10:00 UTC),
//!     license_expires_at: None,
//!     refresh_after: None,
//!     token_expires_at: None,
//! };
//! let token = ring.sign(&claims)?;
//!
//! // What the app embeds: the public key set, one line per key.
//! let keys = ring.public_key_set();
//! let verified = verify_at(&token, &keys, &Validation::new("acme-cad", "cWJjS0ZOb2VQVDhrR3lTZw"), datetime!(2026-11-23 0:00 UTC))?;
//! assert_eq!(verified.license.email, "ada@example.com");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - `secret`: [`SecretKey`] (generate, PKCS#8 PEM, sign) and SPKI PEM for public keys.
//! - `files`: key files written create-new with mode 0600, refused when others can read them.
//! - `ring`: [`KeyRing`], one active key, a pending one and retired ones, their certificates and the roots, stored
//!   in a directory.
//! - `root`: [`Root`], the vendor's root key that certifies signing keys.
//! - `error`: [`KeyError`].
//!
//! Key ids, public key lines and the token format itself are defined once, in the `verifier` crate.

mod error;
mod files;
mod ring;
mod root;
mod secret;

pub use error::KeyError;
pub use files::{read_secret_key, write_secret_key, Overwrite};
pub use ring::{KeyRing, KeyStatus, RingEntry};
pub use root::{read_public_key_file, read_root_key, Root, ROOT_PUBLIC_FILE, ROOT_SECRET_FILE};
pub use secret::{public_key_from_pem, public_key_pem, SecretKey};
