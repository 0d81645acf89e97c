//! End-to-end tests across the workspace's crates live in `tests/tests/`; this library holds what they share: the
//! generators of the frozen test vectors (tokens in `verifier/tests/vectors/v1/`, certificates and revocation lists in
//! `verifier/tests/vectors/trust-v1/`), the store conformance suite run against
//! every store backend (`conformance`), a throwaway PostgreSQL for tests (`pg`), the issuer served over HTTP on a
//! temporary data directory for the HTTP tests (`server`), a real webhook receiver (`receiver`), the issuer as a
//! separate process (`process`), and the vendor CLI run in-process (`cli`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
pub mod conformance;
pub mod pg;
pub mod process;
pub mod receiver;
pub mod server;
pub mod trust_vectors;
pub mod vectors;

/// The migration versions the issuer applies on `backend` (`"sqlite"` or `"postgres"`): 1 to the number of files in
/// `issuer/migrations/<backend>/`, so a test of "each migration applied once" does not change with every migration.
pub fn migration_versions(backend: &str) -> Vec<i64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../issuer/migrations").join(backend);
    let files =
        std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension() == Some("sql".as_ref()));
    (1..=files.count() as i64).collect()
}

/// The `issuer` binary next to the running test binary (`target/<profile>/issuer`), which `cargo test` builds for
/// the issuer package's own binary tests; `None` when it is not there.
pub fn issuer_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join(format!("issuer{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

/// Copies the key ring of data directory `from` into data directory `to`, as the vendor distributes it to every
/// instance of one database (secret key files keep their 0600 mode).
pub fn copy_key_ring(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::DirBuilderExt as _;
    let (src, dst) = (from.join(issuer::KEYS_DIR), to.join(issuer::KEYS_DIR));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
}
