//! The records the store keeps and the answers its operations give: licenses, machines, events, and the outcomes of
//! creating a license, activating a machine and redeeming a deactivation code.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// Whether a license can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    /// Usable (subject to its expiry).
    Active,
    /// Temporarily blocked; can be reinstated.
    Suspended,
    /// Permanently blocked.
    Revoked,
}

impl LicenseStatus {
    /// The lowercase word stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Active => "active",
            LicenseStatus::Suspended => "suspended",
            LicenseStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for LicenseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LicenseStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(LicenseStatus::Active),
            "suspended" => Ok(LicenseStatus::Suspended),
            "revoked" => Ok(LicenseStatus::Revoked),
            other => Err(format!("`{other}` is not a status (active, suspended, revoked)")),
        }
    }
}

/// What a license's status means at a moment: its stored [`LicenseStatus`], with an active license past its expiry
/// shown as expired. Lists, filters and views use it; only the stored status is ever written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EffectiveStatus {
    /// Active and not expired.
    Active,
    /// Suspended (whatever its expiry).
    Suspended,
    /// Revoked (whatever its expiry).
    Revoked,
    /// Active, but its `expires_at` has passed.
    Expired,
}

impl EffectiveStatus {
    /// The lowercase word shown in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectiveStatus::Active => "active",
            EffectiveStatus::Suspended => "suspended",
            EffectiveStatus::Revoked => "revoked",
            EffectiveStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for EffectiveStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EffectiveStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(EffectiveStatus::Active),
            "suspended" => Ok(EffectiveStatus::Suspended),
            "revoked" => Ok(EffectiveStatus::Revoked),
            "expired" => Ok(EffectiveStatus::Expired),
            other => Err(format!("`{other}` is not a status (active, suspended, revoked, expired)")),
        }
    }
}

/// A license as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct License {
    /// Its id (UUID v7, so ids sort by creation time).
    pub id: Uuid,
    /// The license key in canonical grouped form.
    pub key: String,
    /// The licensee's email.
    pub email: String,
    /// The product.
    pub product: String,
    /// Machine slots.
    pub max_machines: u32,
    /// When the license ends; `None` for perpetual.
    pub expires_at: Option<OffsetDateTime>,
    /// Feature names.
    pub entitlements: Vec<String>,
    /// Free-form JSON object for the vendor (order number, customer id, ...).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Active, suspended or revoked.
    pub status: LicenseStatus,
    /// The policy it was created from, whose rules it follows (docs/policies.md); `None` for a license of its own.
    pub policy: Option<String>,
    /// What its activations are bound to: machines or domains. It never changes.
    pub kind: super::LicenseKind,
    /// When it was created (whole seconds).
    pub created_at: OffsetDateTime,
    /// When it last changed (whole seconds).
    pub updated_at: OffsetDateTime,
    /// Validations of it, whatever their answer, as the usage counters last wrote them (docs/usage.md: up to a
    /// second behind). Not a change: `updated_at` does not move.
    pub validation_count: u64,
    /// The last validation the usage counters wrote (whole seconds); `None` before the first.
    pub last_validated_at: Option<OffsetDateTime>,
}

impl License {
    /// The status as it stands at `now`: an active license whose expiry has passed (`expires_at <= now`) is expired.
    pub fn effective_status(&self, now: OffsetDateTime) -> EffectiveStatus {
        match self.status {
            LicenseStatus::Suspended => EffectiveStatus::Suspended,
            LicenseStatus::Revoked => EffectiveStatus::Revoked,
            LicenseStatus::Active if self.expires_at.is_some_and(|e| e <= now) => EffectiveStatus::Expired,
            LicenseStatus::Active => EffectiveStatus::Active,
        }
    }
}

/// An idempotency key sent with a create request, and a hash of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// SHA-256 (hex) of the canonical request; the same key with another request is a conflict.
    pub request_hash: String,
}

/// What [`Store::create_license`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// A new license was stored.
    New(License),
    /// The idempotency key was seen before with the same request: the license created then.
    Replayed(License),
}

/// Filters and page of [`Store::list_licenses`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseFilter {
    /// Only licenses with this email (compared case-insensitively).
    pub email: Option<String>,
    /// Only licenses whose email starts with this (compared case-insensitively; `%` and `_` are plain characters).
    pub email_prefix: Option<String>,
    /// Only licenses of this product.
    pub product: Option<String>,
    /// Only licenses with this status as it stands at `now` ([`License::effective_status`]).
    pub status: Option<EffectiveStatus>,
    /// The time expiry is judged at for `status` (the service's clock); `None` judges no expiry (then
    /// [`EffectiveStatus::Expired`] matches nothing and active matches every active license).
    pub now: Option<OffsetDateTime>,
    /// Page size.
    pub limit: u32,
    /// Continue after this position (from a previous page's `next_cursor`).
    pub after: Option<Cursor>,
}

/// A position in the license list, ordered by creation time then id. Its text form is opaque to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last license of the previous page.
    pub created_at: OffsetDateTime,
    /// Its id.
    pub id: Uuid,
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at.unix_timestamp(), self.id))
    }

    /// Parses the opaque text form; `None` when it was not made by [`Cursor::encode`].
    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let (secs, id) = raw.split_once(':')?;
        // Only times a license can have (1970 to 9999): PostgreSQL refuses far dates, and no page starts there.
        let secs: i64 = secs.parse().ok()?;
        if !(0..=253_402_300_799).contains(&secs) {
            return None;
        }
        let created_at = OffsetDateTime::from_unix_timestamp(secs).ok()?;
        Some(Cursor { created_at, id: Uuid::parse_str(id).ok()? })
    }
}

/// One page of licenses.
#[derive(Clone, Debug, PartialEq)]
pub struct LicensePage {
    /// The licenses, oldest first.
    pub licenses: Vec<License>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl LicensePage {
    /// The page out of up to `limit + 1` licenses in list order, as backends fetch them: the extra one only says that
    /// another page follows.
    pub(crate) fn from_overfetched(mut licenses: Vec<License>, limit: u32) -> Self {
        let more = licenses.len() > limit as usize;
        licenses.truncate(limit as usize);
        let next = match licenses.last() {
            Some(last) if more => Some(Cursor { created_at: last.created_at, id: last.id }),
            _ => None,
        };
        LicensePage { licenses, next }
    }
}

/// Changes to a license; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LicenseUpdate {
    /// New machine slots.
    pub max_machines: Option<u32>,
    /// New expiry; `Some(None)` makes the license perpetual.
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// New entitlements (replacing the old ones).
    pub entitlements: Option<Vec<String>>,
    /// New metadata (replacing the old object).
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl LicenseUpdate {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == LicenseUpdate::default()
    }
}

/// A machine a license is activated on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The license.
    pub license_id: Uuid,
    /// The machine's fingerprint (as the app computed it).
    pub fingerprint: String,
    /// A human name for the machine, if the app sent one.
    pub name: Option<String>,
    /// The platform (e.g. `linux-x86_64`), if the app sent one.
    pub platform: Option<String>,
    /// When it was activated.
    pub activated_at: OffsetDateTime,
    /// When it last activated or refreshed.
    pub last_seen_at: OffsetDateTime,
    /// Whether it holds an offline token (air-gapped activation), which it gives up with a deactivation code.
    pub offline: bool,
    /// When its lease ends unless it checks in again; `None` is no lease.
    pub lease_expires_at: Option<OffsetDateTime>,
    /// Validations that found it since its activation, as the usage counters last wrote them (docs/usage.md).
    pub validation_count: u64,
    /// The last of them (whole seconds); `None` before the first.
    pub last_validated_at: Option<OffsetDateTime>,
}

/// What [`Store::redeem_deactivation`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// The machine holding the token was removed; its slot is free.
    Freed {
        /// The machine's fingerprint.
        fingerprint: String,
        /// Active machines of the license afterwards.
        machines_used: u32,
    },
    /// This code was redeemed before; nothing changed.
    AlreadyRedeemed {
        /// The machine it freed then.
        fingerprint: String,
        /// When.
        redeemed_at: OffsetDateTime,
    },
    /// No machine of this license holds a token with this proof (wrong license, or a token since replaced).
    NoMatch,
}

/// What [`Store::activate_machine`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activated {
    /// The machine took a free slot.
    New {
        /// The stored machine.
        machine: Machine,
        /// Active machines of the license afterwards.
        machines_used: u32,
    },
    /// The machine was already active; no slot was used and its `last_seen_at` was updated.
    Existing {
        /// The stored machine.
        machine: Machine,
        /// Active machines of the license.
        machines_used: u32,
    },
    /// Every slot is taken.
    NoSlotLeft {
        /// Active machines of the license.
        machines_used: u32,
    },
    /// No license with this id.
    NoLicense,
}

/// Which license a unit of work reads ([`Tx::license`](super::Tx::license)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// By id.
    Id(Uuid),
    /// By key (canonical grouped form).
    Key(&'a str),
}

/// A signing key as the store records it: the public half of a key of the ring every instance signs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedKey {
    /// The key id (16 hex digits).
    pub key_id: String,
    /// The public key line (`lpk1.`...).
    pub public_key: String,
    /// Whether this key signs (exactly one recorded key does, once any is recorded).
    pub active: bool,
}

impl RecordedKey {
    /// The key of `keys` that signs, if any.
    pub fn signing(keys: &[RecordedKey]) -> Option<&RecordedKey> {
        keys.iter().find(|k| k.active)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cursor_round_trips_and_garbage_is_refused() {
        let c = Cursor { created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(), id: Uuid::now_v7() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("12:nope")), None);
        let far = format!("-300000000000:{}", Uuid::now_v7());
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode(far)), None, "a date PostgreSQL cannot hold");
    }
}
