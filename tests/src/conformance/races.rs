//! Service operations racing on one license, over a real store: what the unit of work and the guarded transitions
//! promise. These cases drive [`Licensing`] rather than the store alone, because the guarantee is the service's (a
//! revocation answered as done stays done), and only a real backend underneath can keep it.

use std::sync::Arc;

use issuer::{Context, LicenseRef, LicenseStatus, Licensing, NewLicense, ServiceError, SharedKeyRing, Store};

use super::TestStore;
use time::OffsetDateTime;

/// A licensing service over `store` with a fresh key ring; keep the directory as long as the service.
pub fn licensing(store: Arc<dyn Store>) -> (Arc<Licensing>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    keys::KeyRing::create(&dir.path().join("keys")).unwrap();
    let ring = Arc::new(SharedKeyRing::open(&dir.path().join("keys")).unwrap());
    let policy =
        issuer::TokenPolicy { refresh_interval: time::Duration::days(7), offline_grace: time::Duration::days(7) };
    (Arc::new(Licensing::new(store, ring, policy, None)), dir)
}

pub(crate) fn ctx() -> Context {
    Context { now: OffsetDateTime::now_utc(), client_ip: None, actor: issuer::Actor::App }
}

pub(crate) fn new_license(max_machines: u32) -> NewLicense {
    NewLicense {
        email: "race@example.com".into(),
        product: Some("acme-cad".into()),
        max_machines: Some(max_machines),
        ..NewLicense::default()
    }
}

/// Rounds of the revoke/reinstate race.
pub const RACE_ROUNDS: usize = 300;

/// On a suspended license, a revoke, a reinstate and a suspend sent at once, [`RACE_ROUNDS`] times: whenever the
/// revoke was answered as done, the license ends revoked. `services` may be instances over one database.
pub async fn revocation_holds_against_concurrent_reinstate(services: &[Arc<Licensing>]) -> usize {
    let mut undone = 0;
    for round in 0..RACE_ROUNDS {
        let pick = |i: usize| services[(round + i) % services.len()].clone();
        let (license, _) = pick(0).create_license(new_license(1), None, &ctx()).await.unwrap();
        let which = LicenseRef::Id(license.id);
        pick(0).suspend(&which, &ctx()).await.unwrap();
        let (a, b, c) = (pick(0), pick(1), pick(2));
        let (w1, w2, w3) = (which.clone(), which.clone(), which.clone());
        let revoke = tokio::spawn(async move { a.revoke(&w1, &ctx()).await });
        let reinstate = tokio::spawn(async move { b.reinstate(&w2, &ctx()).await });
        let suspend = tokio::spawn(async move { c.suspend(&w3, &ctx()).await });
        let revoked = revoke.await.unwrap();
        for other in [reinstate.await.unwrap(), suspend.await.unwrap()] {
            match other {
                Ok(l) => assert_ne!(l.status, LicenseStatus::Revoked, "round {round}: answered with a revoked license"),
                Err(e) => assert!(!matches!(e, ServiceError::Store(_)), "round {round}: {e}"),
            }
        }
        let revoked = revoked.unwrap_or_else(|e| panic!("round {round}: revoke failed: {e}"));
        assert_eq!(revoked.status, LicenseStatus::Revoked, "round {round}");
        let now = pick(0).license(&which).await.unwrap();
        if now.status != LicenseStatus::Revoked {
            undone += 1;
        }
    }
    undone
}

/// The revoke/reinstate/suspend race of [`revocation_holds_against_concurrent_reinstate`] on one instance.
pub async fn concurrent_transitions_never_undo_a_revocation(test: &TestStore) {
    let (service, _dir) = licensing(test.store.clone());
    let undone = revocation_holds_against_concurrent_reinstate(&[service]).await;
    println!("{:?}: revocations undone: {undone} of {RACE_ROUNDS}", test.backend);
    assert_eq!(undone, 0, "{undone} of {RACE_ROUNDS} answered revocations were undone");
}
