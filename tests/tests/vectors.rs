//! The frozen v1 vectors on disk are exactly what the format and the `keys` crate produce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use e2e_tests::vectors::{files, VectorKeys, DIR};

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(DIR)
}

#[test]
fn vectors_match_the_generator() {
    let dir = vector_dir();
    let write = std::env::var_os("VECTORS_WRITE").is_some();
    let mut missing = Vec::new();
    for (name, content) in files(&VectorKeys::fixed()) {
        let path = dir.join(&name);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) => assert_eq!(
                on_disk, content,
                "{name} differs from the generator: frozen vectors never change; a format change is a new version"
            ),
            Err(_) if write => {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &content).unwrap();
            }
            Err(_) => missing.push(name),
        }
    }
    assert!(missing.is_empty(), "vector files missing (VECTORS_WRITE=1 writes new ones): {missing:?}");
}

#[test]
fn test_key_file_is_the_generators_key() {
    let pem = std::fs::read_to_string(vector_dir().join("test-key.pem")).unwrap();
    let key = keys::SecretKey::from_pem(&pem).unwrap();
    assert_eq!(key.key_id(), VectorKeys::fixed().main.key_id());
}
