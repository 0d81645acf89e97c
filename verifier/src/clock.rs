//! Clock-rollback guard: remembers the latest trusted time seen on this machine so a clock set back is caught.
//!
//! Setting the clock back is the cheapest way to stretch an expired license or token on an offline machine. The guard
//! keeps a high-water mark in a file the app chooses: every check raises it, and so does every verified token's
//! `issued_at` (the issuer's clock). A clock earlier than the mark by more than the leeway is
//! [`Error::ClockRolledBack`]. It stops casual rollback; someone who also edits the guard file defeats it, as they
//! would any purely local check.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

use crate::fingerprint::temp_beside;
use crate::Error;

/// Default rollback leeway in seconds. Generous on purpose: time syncs step clocks by minutes, and refusing a paying
/// customer costs more than a few minutes gained by a cheat.
pub const DEFAULT_ROLLBACK_LEEWAY_SECS: u64 = 600;

/// Keeps the latest trusted time in a file and reports a clock set back beyond the leeway.
#[derive(Debug)]
pub struct ClockGuard {
    path: PathBuf,
    last_seen: Option<i64>,
    leeway_secs: u64,
}

impl ClockGuard {
    /// Opens the guard file at `path` (absent means nothing seen yet; it is created on the first check).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        let last_seen = match fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().parse::<i64>().map_err(|_| {
                let source = io::Error::new(io::ErrorKind::InvalidData, "the clock guard file is corrupted");
                Error::Io { path: path.clone(), source }
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(Error::Io { path, source }),
        };
        Ok(ClockGuard { path, last_seen, leeway_secs: DEFAULT_ROLLBACK_LEEWAY_SECS })
    }

    /// Sets the leeway in seconds (default [`DEFAULT_ROLLBACK_LEEWAY_SECS`]).
    pub fn with_leeway_secs(mut self, leeway_secs: u64) -> Self {
        self.leeway_secs = leeway_secs;
        self
    }

    /// The latest trusted time recorded, if any.
    pub fn last_seen(&self) -> Option<OffsetDateTime> {
        self.last_seen.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
    }

    /// Checks `now` against the high-water mark and raises the mark to it; returns `now` for use with
    /// [`crate::verify_at`].
    pub fn check(&mut self, now: OffsetDateTime) -> Result<OffsetDateTime, Error> {
        if let Some(last_seen) = self.last_seen() {
            let leeway = Duration::seconds(i64::try_from(self.leeway_secs).unwrap_or(i64::MAX));
            if now.checked_add(leeway).is_some_and(|t| t < last_seen) {
                return Err(Error::ClockRolledBack { last_seen, now });
            }
        }
        self.observe(now)?;
        Ok(now)
    }

    /// [`ClockGuard::check`] with the system clock.
    pub fn now(&mut self) -> Result<OffsetDateTime, Error> {
        self.check(OffsetDateTime::now_utc())
    }

    /// Raises the high-water mark to a trusted time, such as a verified token's `issued_at`. Lower times are ignored.
    pub fn observe(&mut self, trusted: OffsetDateTime) -> Result<(), Error> {
        let t = trusted.unix_timestamp();
        if self.last_seen.is_some_and(|s| s >= t) {
            return Ok(());
        }
        write_atomic(&self.path, format!("{t}\n").as_bytes())
            .map_err(|source| Error::Io { path: self.path.clone(), source })?;
        self.last_seen = Some(t);
        Ok(())
    }
}

/// Replaces `path` with `contents` through a synced temporary file beside it: readers see the old or the new file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn clock_set_back_beyond_leeway_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock");
        let mut guard = ClockGuard::open(&path).unwrap();
        guard.check(datetime!(2026-11-22 12:00 UTC)).unwrap();
        let mut reopened = ClockGuard::open(&path).unwrap();
        let err = reopened.check(datetime!(2026-11-01 12:00 UTC)).unwrap_err();
        assert!(
            matches!(err, Error::ClockRolledBack { last_seen, .. } if last_seen == datetime!(2026-11-22 12:00 UTC))
        );
        assert_eq!(err.code(), "clock_rolled_back");
    }

    #[test]
    fn clock_set_back_within_leeway_is_accepted_and_mark_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = ClockGuard::open(dir.path().join("clock")).unwrap();
        guard.check(datetime!(2026-11-22 12:00 UTC)).unwrap();
        guard.check(datetime!(2026-11-22 11:55 UTC)).unwrap();
        assert_eq!(guard.last_seen(), Some(datetime!(2026-11-22 12:00 UTC)));
    }

    #[test]
    fn observed_issuer_time_raises_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = ClockGuard::open(dir.path().join("clock")).unwrap().with_leeway_secs(0);
        guard.observe(datetime!(2026-11-22 12:00 UTC)).unwrap();
        assert!(guard.check(datetime!(2026-11-22 11:59 UTC)).is_err());
        assert!(guard.check(datetime!(2026-11-22 12:00 UTC)).is_ok());
    }

    #[test]
    fn corrupted_guard_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock");
        fs::write(&path, "yesterday").unwrap();
        assert_eq!(ClockGuard::open(&path).unwrap_err().code(), "io");
    }
}
