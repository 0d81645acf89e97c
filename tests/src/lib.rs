//! End-to-end tests across the workspace's crates live in `tests/tests/`; this library holds what they share: the
//! generator of the frozen token test vectors (`verifier/tests/vectors/v1/`), the store conformance suite run against
//! every store backend (`conformance`), and a throwaway PostgreSQL for tests (`pg`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod conformance;
pub mod pg;
pub mod vectors;
