//! End-to-end tests across the workspace's crates live in `tests/tests/`; this library holds what they share: the
//! generators of the frozen test vectors (tokens in `verifier/tests/vectors/v1/`, certificates and revocation lists in
//! `verifier/tests/vectors/trust-v1/`), the store conformance suite run against
//! every store backend (`conformance`), and a throwaway PostgreSQL for tests (`pg`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod conformance;
pub mod pg;
pub mod trust_vectors;
pub mod vectors;

/// The `issuer` binary next to the running test binary (`target/<profile>/issuer`), which `cargo test` builds for
/// the issuer package's own binary tests; `None` when it is not there.
pub fn issuer_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join(format!("issuer{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}
