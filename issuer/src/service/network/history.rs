//! The addresses each license is used from, counted in memory and written in one batch at most every second, so a
//! validation costs no write of its own. A crash loses at most the counts of the last second (never a state change:
//! those are units of work of their own).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::IpUsage;

/// Most (license, address) pairs held between two flushes; beyond it new pairs wait for the next second's flush
/// (their requests are not counted), so a flood of addresses cannot grow memory without bound.
const MAX_PENDING: usize = 100_000;

/// Counts not yet written.
#[derive(Debug, Default)]
pub(super) struct IpHistory {
    pending: Mutex<HashMap<(Uuid, IpAddr), IpUsage>>,
}

impl IpHistory {
    /// Counts one request of `license_id` from `ip` at `at`: admitted, or refused by a rule (`blocked`).
    pub(super) fn note(&self, license_id: Uuid, ip: IpAddr, at: OffsetDateTime, blocked: bool) {
        let ip = ip.to_canonical();
        let Ok(mut pending) = self.pending.lock() else { return };
        let full = pending.len() >= MAX_PENDING;
        let entry = match pending.get_mut(&(license_id, ip)) {
            Some(entry) => entry,
            None if full => return,
            None => pending.entry((license_id, ip)).or_insert(IpUsage {
                license_id,
                ip,
                first_seen: at,
                last_seen: at,
                requests: 0,
                blocked: 0,
            }),
        };
        entry.first_seen = entry.first_seen.min(at);
        entry.last_seen = entry.last_seen.max(at);
        if blocked {
            entry.blocked += 1;
        } else {
            entry.requests += 1;
        }
    }

    /// Takes every pending count (the caller writes them, and gives them back with [`IpHistory::restore`] if the
    /// write fails).
    pub(super) fn take(&self) -> Vec<IpUsage> {
        match self.pending.lock() {
            Ok(mut pending) => pending.drain().map(|(_, usage)| usage).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Puts counts whose write failed back, merged with what arrived meanwhile.
    pub(super) fn restore(&self, usage: Vec<IpUsage>) {
        let Ok(mut pending) = self.pending.lock() else { return };
        for u in usage {
            let entry = pending.entry((u.license_id, u.ip)).or_insert(IpUsage { requests: 0, blocked: 0, ..u.clone() });
            entry.first_seen = entry.first_seen.min(u.first_seen);
            entry.last_seen = entry.last_seen.max(u.last_seen);
            entry.requests += u.requests;
            entry.blocked += u.blocked;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use time::Duration;

    use super::*;

    #[test]
    fn requests_are_counted_per_license_and_canonical_address() {
        let history = IpHistory::default();
        let (a, t) = (Uuid::now_v7(), OffsetDateTime::UNIX_EPOCH + Duration::days(1));
        history.note(a, "192.0.2.1".parse().unwrap(), t, false);
        history.note(a, "::ffff:192.0.2.1".parse().unwrap(), t - Duration::seconds(5), true);
        history.note(a, "2001:db8::1".parse().unwrap(), t, false);
        let mut taken = history.take();
        taken.sort_by_key(|u| u.ip);
        assert_eq!(taken.len(), 2);
        let v4 = &taken[0];
        assert_eq!((v4.requests, v4.blocked, v4.first_seen, v4.last_seen), (1, 1, t - Duration::seconds(5), t));
        assert!(history.take().is_empty(), "taken once");
        history.restore(taken);
        history.note(a, "192.0.2.1".parse().unwrap(), t + Duration::seconds(1), false);
        let v4 = history.take().into_iter().find(|u| u.ip.is_ipv4()).unwrap();
        assert_eq!((v4.requests, v4.blocked, v4.last_seen), (2, 1, t + Duration::seconds(1)));
    }
}
