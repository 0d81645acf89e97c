//! The usage counters (docs/usage.md): what the service's usage flush writes in one unit, and the daily counts a
//! license's usage is read as. Validations write no row of their own: they are counted in memory and added here at
//! most once a second.

use std::collections::BTreeMap;

use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// Counters of one flush, added to the stored ones by [`crate::store::Tx::record_usage`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageBatch {
    /// Per license and UTC day.
    pub days: Vec<DayUsage>,
    /// Per machine and UTC day: the validations that found the machine.
    pub machines: Vec<MachineUsage>,
}

/// One license's counts of one day, as a flush adds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayUsage {
    /// The license.
    pub license_id: Uuid,
    /// The UTC day.
    pub day: Date,
    /// Validations of the license, whatever their answer.
    pub validations: u64,
    /// Activations (new machines and re-activations alike).
    pub activations: u64,
    /// The last validation counted (whole seconds); `None` when only activations are counted.
    pub last_validated_at: Option<OffsetDateTime>,
}

/// One machine's validations of one day, as a flush adds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineUsage {
    /// The license.
    pub license_id: Uuid,
    /// The activation's fingerprint (a domain license's binding), as stored.
    pub fingerprint: String,
    /// The UTC day.
    pub day: Date,
    /// Validations that found the machine that day.
    pub validations: u64,
    /// The last of them (whole seconds).
    pub last_validated_at: OffsetDateTime,
}

/// A license's counts of one UTC day, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyUsage {
    /// The UTC day.
    pub day: Date,
    /// Validations of the license, whatever their answer.
    pub validations: u64,
    /// Activations.
    pub activations: u64,
    /// Distinct machines whose validation found them that day.
    pub machines: u64,
}

/// The latest day of each (license, fingerprint) of the batch, in key order.
pub(crate) fn last_days(batch: &UsageBatch) -> BTreeMap<(Uuid, &str), Date> {
    let mut last = BTreeMap::new();
    for m in &batch.machines {
        let day = last.entry((m.license_id, m.fingerprint.as_str())).or_insert(m.day);
        *day = (*day).max(m.day);
    }
    last
}

/// Saturating conversion of a counter for the database's signed 64-bit integers.
pub(crate) fn count_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counts and last times summed per key, in key order (so concurrent writers lock rows in one order).
pub(crate) fn totals<K: Ord>(
    entries: impl Iterator<Item = (K, u64, Option<OffsetDateTime>)>,
) -> BTreeMap<K, (u64, Option<OffsetDateTime>)> {
    let mut sums = BTreeMap::new();
    for (key, n, last) in entries {
        let entry: &mut (u64, Option<OffsetDateTime>) = sums.entry(key).or_default();
        entry.0 = entry.0.saturating_add(n);
        entry.1 = entry.1.max(last);
    }
    sums
}
