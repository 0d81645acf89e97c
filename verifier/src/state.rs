//! What an app keeps between runs to trust certified keys and honour revocations: the certificates it has seen and
//! the newest revocation list, each in a file the app chooses (beside its token and clock guard file).
//!
//! Both files hold only signed, public data, so they need no secrecy; they are checked again whenever they are read.
//! Someone who deletes the revocation file undoes revocations on that machine until the app gets a list again, as
//! someone who edits the clock guard file defeats it: a purely local record cannot do better.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::clock::write_atomic;
use crate::{Error, KeySet, RevocationList};

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// The signing-key certificates an app has seen, one `lkc1.` line each.
///
/// ```no_run
/// # fn run(response_certificate: &str) -> Result<(), verifier::Error> {
/// use verifier::{CertificateFile, KeySet};
/// let mut keys = KeySet::from_lines(&["lrk1.…the vendor's root…"])?;
/// let certificates = CertificateFile::new("/var/lib/acme-cad/certificates.txt");
/// certificates.load_into(&mut keys)?;
/// // Beside every token the issuer answers with the certificate of the key that signed it:
/// certificates.remember(response_certificate, &mut keys)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CertificateFile {
    path: PathBuf,
}

impl CertificateFile {
    /// The file at `path` (absent until the first certificate is remembered).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CertificateFile { path: path.into() }
    }

    /// Adds the file's certificates to `keys`, checked against its roots; returns how many were added. Lines that
    /// do not verify (a root the app no longer trusts, a damaged line) are skipped: one bad line must not stop the
    /// app from using the others.
    pub fn load_into(&self, keys: &mut KeySet) -> Result<usize, Error> {
        let Some(text) = read_optional(&self.path)? else { return Ok(0) };
        Ok(text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .filter(|line| keys.add_certificate(line).is_ok())
            .count())
    }

    /// Checks `certificate` against the roots of `keys` and adds it; a certificate not yet in the file is appended
    /// (the file is replaced atomically). Whether it was new to the file. A certificate that does not verify is
    /// refused and not stored.
    pub fn remember(&self, certificate: &str, keys: &mut KeySet) -> Result<bool, Error> {
        let text = keys.add_certificate(certificate)?.to_string();
        let existing = read_optional(&self.path)?.unwrap_or_default();
        if existing.lines().any(|line| line.trim() == text) {
            return Ok(false);
        }
        let mut contents = existing;
        if !contents.is_empty() && !contents.ends_with('\n') {
            contents.push('\n');
        }
        contents.push_str(&text);
        contents.push('\n');
        write_atomic(&self.path, contents.as_bytes()).map_err(|e| io_error(&self.path, e))?;
        Ok(true)
    }
}

/// The newest revocation list an app holds; a newer one replaces it, an older one is refused.
#[derive(Debug)]
pub struct RevocationFile {
    path: PathBuf,
    current: Option<RevocationList>,
}

impl RevocationFile {
    /// Opens the file at `path` and checks the list in it with `keys` (load certificates into `keys` first: the list
    /// may be signed by a certified key). Absent means no list yet; a list that does not verify is an error, never
    /// silently dropped, because dropping it would undo revocations.
    pub fn open(path: impl Into<PathBuf>, keys: &KeySet) -> Result<Self, Error> {
        let path = path.into();
        let current = match read_optional(&path)? {
            None => None,
            Some(text) => Some(RevocationList::verify(&text, keys).map_err(|e| {
                let source = io::Error::new(io::ErrorKind::InvalidData, format!("the stored revocation list: {e}"));
                io_error(&path, source)
            })?),
        };
        Ok(RevocationFile { path, current })
    }

    /// The list held, if any: pass it to [`crate::Validation::revocation_list`].
    pub fn current(&self) -> Option<&RevocationList> {
        self.current.as_ref()
    }

    /// Verifies `text` with `keys` and keeps it if it is newer (a larger sequence number) than the list held;
    /// whether it replaced it. The same sequence again changes nothing; an older one is
    /// [`Error::StaleRevocationList`].
    pub fn install(&mut self, text: &str, keys: &KeySet) -> Result<bool, Error> {
        let list = RevocationList::verify(text, keys)?;
        if let Some(held) = &self.current {
            if list.sequence() < held.sequence() {
                return Err(Error::StaleRevocationList { held: held.sequence(), offered: list.sequence() });
            }
            if list.sequence() == held.sequence() {
                return Ok(false);
            }
        }
        write_atomic(&self.path, format!("{list}\n").as_bytes()).map_err(|e| io_error(&self.path, e))?;
        self.current = Some(list);
        Ok(true)
    }
}
