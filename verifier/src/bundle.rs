//! License files: the text an issuer hands an app in one piece, a token with the certificate of the key that signed
//! it, or a revocation list with its signer's certificate. One item per line, told apart by prefix.
//!
//! A file holding only a token (all that existed before certificates) is a valid license file, so an app reads both
//! with [`Bundle::parse`].

use alloc::vec::Vec;

use crate::format::{CERTIFICATE_PREFIX, REVOCATION_LIST_PREFIX};
use crate::Error;

/// The items of a license file, in file order, each still text (untrusted until verified).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bundle<'a> {
    /// Token lines (`lic…`).
    pub tokens: Vec<&'a str>,
    /// Certificate lines (`lkc1.`).
    pub certificates: Vec<&'a str>,
    /// Revocation list lines (`lrl1.`).
    pub revocation_lists: Vec<&'a str>,
}

impl<'a> Bundle<'a> {
    /// Splits a license file into its items. Lines are trimmed of ASCII whitespace; blank lines and lines starting
    /// with `#` are skipped; any other line must start with `lic`, `lkc1.` or `lrl1.`, or the file is
    /// [`Error::Malformed`]. Items are not verified here.
    pub fn parse(text: &'a str) -> Result<Self, Error> {
        let mut bundle = Bundle::default();
        for line in text.split('\n').map(str::trim_ascii) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with(CERTIFICATE_PREFIX) {
                bundle.certificates.push(line);
            } else if line.starts_with(REVOCATION_LIST_PREFIX) {
                bundle.revocation_lists.push(line);
            } else if line.starts_with("lic") {
                bundle.tokens.push(line);
            } else {
                return Err(Error::malformed("a license file line is a token, a certificate or a revocation list"));
            }
        }
        Ok(bundle)
    }

    /// The file's token: the first one (a license file holds one).
    pub fn token(&self) -> Option<&'a str> {
        self.tokens.first().copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_splits_by_prefix_and_a_lone_token_is_a_file() {
        let b = Bundle::parse("# for acme-cad\r\nlic1.AAAA\n\nlkc1.BBBB\nlrl1.CCCC\n").unwrap();
        assert_eq!(
            (b.token(), b.certificates.as_slice(), b.revocation_lists.as_slice()),
            (Some("lic1.AAAA"), &["lkc1.BBBB"][..], &["lrl1.CCCC"][..])
        );
        assert_eq!(Bundle::parse("lic1.AAAA").unwrap().token(), Some("lic1.AAAA"));
        assert_eq!(Bundle::parse("hello\n").unwrap_err().code(), "malformed");
        assert_eq!(Bundle::parse("").unwrap().token(), None);
    }
}
