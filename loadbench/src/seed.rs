//! Seeding: the data directory is created by the issuer library itself (store, key ring, admin token), then filled
//! with licenses and one activation each, written through the `Store` trait in the backend the issuer will use.

use std::path::Path;

use issuer::{Config, Flags, License, LicenseKey, LicenseStatus, NewMachine, Policy, Store, StoreExt as _};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use verifier::{Claims, KeySet, LicenseId, TokenKind};

use crate::BenchError;

/// Product of every seeded license.
pub const PRODUCT: &str = "bench-app";

/// A seeded license with the machine activated on it and a valid online token for that machine.
#[derive(Clone, Debug)]
pub struct SeededLicense {
    /// License key (grouped form).
    pub key: String,
    /// The activated machine's fingerprint.
    pub fingerprint: String,
    /// An online token for it, as the issuer would sign it.
    pub token: String,
}

/// What the store holds after seeding.
#[derive(Debug)]
pub struct Seeded {
    /// Every seeded license (index = seed order).
    pub licenses: Vec<SeededLicense>,
    /// The trusted public keys (to verify tokens the issuer returns).
    pub keys: KeySet,
    /// Seconds spent seeding.
    pub seconds: f64,
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Seed(e.to_string())
}

/// Creates `data_dir` through `issuer::start` and stores `n` licenses of `slots` machine slots each, one machine
/// activated on each; signs a token per machine with the issuer's own key ring. With `policy_lease` (seconds), the
/// licenses are of a policy with that lease, and each machine holds a lease from now.
pub async fn seed(
    data_dir: &Path,
    database_url: Option<&str>,
    n: usize,
    slots: u32,
    policy_lease: Option<u64>,
) -> Result<Seeded, BenchError> {
    let started_at = std::time::Instant::now();
    let flags = Flags::new(None, Some(data_dir.to_path_buf()), database_url.map(str::to_string));
    let config = Config::load(None, |_| None, flags).map_err(err)?;
    let started = issuer::start(&config).await.map_err(err)?;
    let licensing = started.state.licensing.clone();
    let store = licensing.store().clone();
    let ring = licensing.key_ring();
    let now = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).map_err(err)?;
    let policy = match policy_lease {
        Some(lease) => {
            let mut policy = Policy::new("bench", PRODUCT, slots);
            policy.lease_secs = Some(lease);
            let created = licensing.create_policy(policy, &licensing.context(None)).await.map_err(err)?;
            Some(created.name)
        }
        None => None,
    };
    let lease_expires_at = policy_lease.map(|l| now + Duration::seconds(i64::try_from(l).unwrap_or(i64::MAX)));
    let mut licenses = Vec::with_capacity(n);
    // Many writes in flight: the store commits them in batches (group commit), so seeding runs at batch speed.
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..n {
        let key = LicenseKey::generate().map_err(err)?.to_string();
        let license = License {
            id: Uuid::now_v7(),
            key: key.clone(),
            email: format!("user{i}@example.com"),
            product: PRODUCT.into(),
            max_machines: slots,
            expires_at: Some(now + Duration::days(365)),
            entitlements: vec!["pro".into()],
            metadata: serde_json::Map::new(),
            status: LicenseStatus::Active,
            policy: policy.clone(),
            kind: issuer::LicenseKind::Machine,
            created_at: now,
            updated_at: now,
            validation_count: 0,
            last_validated_at: None,
        };
        let fingerprint = format!("seed-machine-{i}");
        let claims = Claims {
            kind: TokenKind::Online,
            license_id: LicenseId(license.id.into_bytes()),
            license_key: key.clone(),
            email: license.email.clone(),
            product: PRODUCT.into(),
            entitlements: license.entitlements.clone(),
            max_machines: slots,
            fingerprint: fingerprint.clone(),
            issued_at: now,
            license_expires_at: license.expires_at,
            refresh_after: Some(now + Duration::hours(24)),
            token_expires_at: Some(now + Duration::days(8)),
        };
        let token = ring.sign(&claims).map_err(err)?;
        licenses.push(SeededLicense { key, fingerprint: fingerprint.clone(), token });
        let store: std::sync::Arc<dyn Store> = store.clone();
        batch.spawn(async move {
            // One unit per license: the license and its machine, as an activation would leave them.
            store
                .transact(move |tx| {
                    Box::pin(async move {
                        tx.insert_license(&license, None).await?;
                        let machine = NewMachine {
                            fingerprint: &fingerprint,
                            name: Some("seed"),
                            platform: None,
                            at: now,
                            lease_expires_at,
                        };
                        tx.activate_machine(license.id, &machine, 0).await.map(|_| ())
                    })
                })
                .await
        });
        if batch.len() >= 256 {
            if let Some(r) = batch.join_next().await {
                r.map_err(err)?.map_err(err)?;
            }
        }
    }
    while let Some(r) = batch.join_next().await {
        r.map_err(err)?.map_err(err)?;
    }
    let keys = licensing.public_keys();
    Ok(Seeded { licenses, keys, seconds: started_at.elapsed().as_secs_f64() })
}
