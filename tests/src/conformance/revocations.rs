//! What a revocation list is built from: the revoked licenses, read in one snapshot, as a set that only grows (its
//! size is the list's sequence number, so two reads of one size must be the same set).

use std::collections::BTreeSet;
use std::sync::Arc;

use issuer::{LicenseStatus, Store};
use uuid::Uuid;

use super::one::OneUnit as _;
use super::{created, now};

/// Revocations racing with reads: every read is a set of revoked licenses; any two reads are ordered by inclusion
/// (so reads of one size are equal); the last read is exactly the revoked set; suspended licenses are never listed.
pub async fn revoked_licenses_grow_as_one_set_under_concurrent_revocations(store: Arc<dyn Store>) {
    assert!(store.revoked_licenses().await.unwrap().is_empty());
    let mut revoke = Vec::new();
    for i in 0..24 {
        let l = created(&store, 1).await;
        if i % 4 == 0 {
            store.change_status(l.id, LicenseStatus::Active, LicenseStatus::Suspended, now()).await.unwrap();
        } else {
            revoke.push(l.id);
        }
    }
    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut reads = Vec::new();
            for _ in 0..40 {
                reads.push(store.revoked_licenses().await.unwrap().into_iter().collect::<BTreeSet<Uuid>>());
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    let writers: Vec<_> = revoke
        .iter()
        .map(|&id| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.change_status(id, LicenseStatus::Active, LicenseStatus::Revoked, now()).await.unwrap().unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut reads = reader.await.unwrap();
    let all: BTreeSet<Uuid> = revoke.iter().copied().collect();
    let last: BTreeSet<Uuid> = store.revoked_licenses().await.unwrap().into_iter().collect();
    assert_eq!(last, all, "exactly the revoked licenses");
    assert_eq!(store.revoked_licenses().await.unwrap().len(), all.len(), "no duplicates");
    reads.push(last);
    for a in &reads {
        assert!(a.is_subset(&all), "only revoked licenses are listed");
        for b in &reads {
            assert!(
                a.is_subset(b) || b.is_subset(a),
                "two reads of {} and {} licenses are not nested",
                a.len(),
                b.len()
            );
        }
    }
}
