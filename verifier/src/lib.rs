//! Offline verification of signed license tokens. No networking; `#![no_std]` + `alloc` without the default `std`
//! feature.
//!
//! An app embeds its vendor's public key(s), computes this machine's fingerprint, and checks the token it stored:
//!
//! ```
//! use verifier::{verify_at, Error, KeySet, Status, Validation};
//! use time::macros::datetime;
//!
//! // The vendor's public key line (from `issuer keys export`), embedded in the app.
//! const PUBLIC_KEYS: &[&str] = &["lpk1.ndT5vQD0h0r77YnxU2Cbhn5xnQZMc2XQRuOnoEuOtXVYwo-xbq44cg"];
//! // A token the issuer signed for this machine (a frozen test vector).
//! const TOKEN: &str = include_str!("../tests/vectors/v1/valid_online.token");
//!
//! let keys = KeySet::from_lines(PUBLIC_KEYS)?;
//! let validation = Validation::new("acme-cad", "cPFviWOfAHrkBhGe49wRxw");
//! let verified = verify_at(TOKEN, &keys, &validation, datetime!(2026-11-23 12:00 UTC))?;
//! assert_eq!(verified.status, Status::Valid);
//! assert!(verified.license.has_entitlement("export"));
//!
//! // The same token on another machine is refused.
//! let elsewhere = Validation::new("acme-cad", "another-machine");
//! let err = verify_at(TOKEN, &keys, &elsewhere, datetime!(2026-11-23 12:00 UTC)).unwrap_err();
//! assert!(matches!(err, Error::WrongMachine));
//! # Ok::<(), Error>(())
//! ```
//!
//! # Layout
//! - `token`: text → [`UntrustedToken`] → (signature) → [`License`]; and [`UnsignedToken`] for signers.
//! - `claims`: [`Claims`] and their postcard encoding and limits.
//! - `key`: [`KeyId`], [`PublicKey`] and [`RootKey`] lines and the trusted [`KeySet`] (several keys for rotation,
//!   roots and the signing keys they certified).
//! - `cert`: [`Certificate`], a root's signature on a signing key for a window of time (and optionally a product).
//! - `revocation`: [`RevocationList`], the signed list of revoked licenses an offline app honours.
//! - `bundle`: [`Bundle`], a license file's lines (token, certificates, revocation list).
//! - `state` (`std`): [`CertificateFile`] and [`RevocationFile`], what an app keeps between runs.
//! - `validation`: [`Validation`] (product, machine or domain, time) and [`verify_at`].
//! - `domain` (`domain`): [`Domain`], the normalised domain a web app's token is bound to (`domain:` fingerprints).
//! - `fingerprint`: [`fingerprint()`] and, with `std`, [`InstallId`] (the random per-install id file).
//! - `clock` (`std`): [`ClockGuard`], which catches a clock set back.
//! - `offline`: [`ActivationRequest`] and [`DeactivationCode`], the typed codes of air-gapped activation.
//! - `format`: the constants of format v1; docs/token-format.md specifies it byte by byte.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod bundle;
mod cert;
mod claims;
#[cfg(feature = "std")]
mod clock;
#[cfg(feature = "domain")]
mod domain;
mod error;
mod fingerprint;
pub mod format;
mod key;
mod offline;
mod revocation;
#[cfg(feature = "std")]
mod state;
mod token;
mod validation;

pub use bundle::Bundle;
pub use cert::{Certificate, UnsignedCertificate, UntrustedCertificate};
pub use claims::{Claims, LicenseId, TokenKind};
#[cfg(feature = "std")]
pub use clock::{ClockGuard, DEFAULT_ROLLBACK_LEEWAY_SECS};
#[cfg(feature = "domain")]
pub use domain::{Domain, DomainError, DOMAIN_BINDING_PREFIX, MAX_DOMAIN_LEN};
pub use error::{ClaimsError, Error};
#[cfg(feature = "std")]
pub use fingerprint::InstallId;
pub use fingerprint::{fingerprint, FINGERPRINT_LABEL};
pub use key::{KeyId, KeySet, PublicKey, RootKey};
pub use offline::{token_proof, ActivationRequest, DeactivationCode, MAX_MACHINE_NAME_LEN};
pub use revocation::{revoked_entry, RevocationList, UnsignedRevocationList};
#[cfg(feature = "std")]
pub use state::{CertificateFile, RevocationFile};
pub use time::OffsetDateTime;
pub use token::{License, UnsignedToken, UntrustedToken};
#[cfg(feature = "std")]
pub use validation::verify;
pub use validation::{verify_at, Status, Validation, Verified, DEFAULT_LEEWAY_SECS};

/// The README's examples compile and run as doc tests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
