//! Licenses: create, read, list, update, the status transitions (suspend, reinstate, revoke), admin removal of a
//! machine, and the event log.
//!
//! Each change is one unit of work: the license is read under the unit's lock, the change is decided on what was
//! read, and the change and its event are written together. A status change is also written as compare-and-set on
//! the status read, and the database refuses any change away from revoked, so a revocation answered as done stays
//! done whatever runs beside it. Updates (`PATCH`) are merged field by field into the locked license: two updates
//! of different fields both apply; of the same field, the later one wins (documented in docs/api.md).

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::checks::{check_fingerprint, check_license, hex};
use super::error::invalid;
use super::policies::known_name;
use super::{Context, Licensing, ServiceError};
use crate::license_key::LicenseKey;
use crate::store::{
    Created, Event, EventKind, Idempotency, License, LicenseFilter, LicenseKind, LicensePage, LicenseStatus,
    LicenseUpdate, Lookup, Machine, Policy, PolicyLock, StoreExt as _,
};

/// When a new license ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// Perpetual.
    Never,
    /// At this time.
    At(#[serde(with = "time::serde::timestamp")] OffsetDateTime),
    /// This many seconds after creation.
    After(u64),
}

/// What a new license holds. With a `policy`, the fields left `None` are the policy's grants (its product, slots,
/// duration and entitlements); without one, `product` and `max_machines` are required and the others default to
/// perpetual with no entitlements.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NewLicense {
    /// The licensee's email.
    pub email: String,
    /// The product (with a policy: the policy's, which it must equal if given).
    pub product: Option<String>,
    /// Machine slots (at least 1).
    pub max_machines: Option<u32>,
    /// Expiry.
    pub expiry: Option<Expiry>,
    /// Feature names.
    pub entitlements: Option<Vec<String>>,
    /// Free-form JSON object.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The policy whose grants it takes and whose rules it follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What its activations are bound to (with a policy: the policy's, which it must equal if given; else
    /// machines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<LicenseKind>,
}

impl NewLicense {
    /// The license this describes, created at `at` with `id` and `key`, from `policy` when it names one.
    fn resolve(
        self,
        policy: Option<&Policy>,
        id: Uuid,
        key: String,
        at: OffsetDateTime,
    ) -> Result<License, ServiceError> {
        let product = match (self.product, policy) {
            (Some(p), Some(policy)) if p != policy.product => {
                return Err(invalid(
                    "product",
                    format!("the policy `{}` is for the product `{}`", policy.name, policy.product),
                ))
            }
            (Some(p), _) => p,
            (None, Some(policy)) => policy.product.clone(),
            (None, None) => return Err(invalid("product", "is required without a policy")),
        };
        let max_machines = self
            .max_machines
            .or(policy.map(|p| p.max_machines))
            .ok_or_else(|| invalid("max_machines", "is required without a policy"))?;
        let expiry = match (self.expiry, policy.and_then(|p| p.duration_secs)) {
            (Some(e), _) => e,
            (None, Some(secs)) => Expiry::After(secs),
            (None, None) => Expiry::Never,
        };
        let expires_at = match expiry {
            Expiry::Never => None,
            Expiry::At(t) => Some(t.replace_nanosecond(0).unwrap_or(t)),
            Expiry::After(secs) => Some(
                i64::try_from(secs)
                    .ok()
                    .and_then(|s| at.checked_add(Duration::seconds(s)))
                    .ok_or_else(|| invalid("duration", "is too long"))?,
            ),
        };
        let entitlements = self.entitlements.or_else(|| policy.map(|p| p.entitlements.clone())).unwrap_or_default();
        let kind = match (self.kind, policy) {
            (Some(k), Some(policy)) if k != policy.kind => {
                return Err(invalid("kind", format!("the policy `{}` is for {} licenses", policy.name, policy.kind)))
            }
            (Some(k), _) => k,
            (None, Some(policy)) => policy.kind,
            (None, None) => LicenseKind::Machine,
        };
        let license = License {
            id,
            key,
            email: self.email.trim().to_string(),
            product,
            max_machines,
            expires_at,
            entitlements,
            metadata: self.metadata,
            status: LicenseStatus::Active,
            policy: policy.map(|p| p.name.clone()),
            kind,
            created_at: at,
            updated_at: at,
            validation_count: 0,
            last_validated_at: None,
        };
        check_license(&license)?;
        Ok(license)
    }
}

/// A license given by id or by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LicenseRef {
    /// By id.
    Id(Uuid),
    /// By key.
    Key(LicenseKey),
}

impl LicenseRef {
    /// A UUID, or else a license key.
    pub fn parse(text: &str) -> Result<LicenseRef, ServiceError> {
        if let Ok(id) = Uuid::parse_str(text.trim()) {
            return Ok(LicenseRef::Id(id));
        }
        LicenseKey::parse(text)
            .map(LicenseRef::Key)
            .map_err(|_| invalid("id", "expected a license id (UUID) or a license key (XXXXX-XXXXX-XXXXX-XXXXX)"))
    }

    /// How the store looks it up.
    pub(super) fn lookup(&self) -> Lookup<'_> {
        match self {
            LicenseRef::Id(id) => Lookup::Id(*id),
            LicenseRef::Key(key) => Lookup::Key(key.as_str()),
        }
    }
}

/// A license being created: made already, or to be made from its policy inside the unit.
enum Making {
    Made(License),
    FromPolicy { name: String, new: NewLicense, key: String },
}

impl Licensing {
    /// Creates a license, with its `created` event. With an idempotency key, a retry of the same request returns
    /// the first license (`false` in the pair) and another request with the same key is a conflict.
    pub async fn create_license(
        &self,
        mut new: NewLicense,
        idempotency_key: Option<&str>,
        ctx: &Context,
    ) -> Result<(License, bool), ServiceError> {
        let at = ctx.at();
        if let Some(name) = &new.policy {
            known_name(name)?;
        } else {
            // Without a policy the defaults are what they always were, and are hashed as such: a retry keeps its
            // idempotency hash whether a field was left out or given as its default, and across upgrades.
            new.expiry.get_or_insert(Expiry::Never);
            new.entitlements.get_or_insert_with(Vec::new);
        }
        let idempotency = match idempotency_key {
            Some(key) => {
                if key.is_empty() || key.len() > 255 || key.chars().any(char::is_control) {
                    return Err(invalid("Idempotency-Key", "must be 1-255 characters without control characters"));
                }
                let canonical = serde_json::to_vec(&new).map_err(|e| invalid("body", e.to_string()))?;
                Some(Idempotency { key: key.into(), request_hash: hex(&Sha256::digest(&canonical)) })
            }
            None => None,
        };
        let key = LicenseKey::generate().map_err(|e| ServiceError::Random(e.to_string()))?.to_string();
        let id = Uuid::now_v7();
        // Without a policy the license is made and checked here, so a bad request never waits for the writer; with
        // one it is made in the unit, from the policy as it is when the license is stored.
        let making = match new.policy.clone() {
            None => Making::Made(new.resolve(None, id, key, at)?),
            Some(name) => Making::FromPolicy { name, new, key },
        };
        let ctx = ctx.clone();
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let license = match making {
                        Making::Made(license) => license,
                        Making::FromPolicy { name, new, key } => {
                            // Kept alive until the license is stored: a concurrent delete of the (so far unused)
                            // policy waits, then finds the license and refuses.
                            let policy =
                                tx.policy(&name, PolicyLock::KeepAlive).await?.ok_or(ServiceError::PolicyNotFound)?;
                            new.resolve(Some(&policy), id, key, at)?
                        }
                    };
                    match tx.insert_license(&license, idempotency.as_ref()).await? {
                        Created::New(license) => {
                            let mut detail = serde_json::json!({
                                "email": license.email, "product": license.product,
                                "max_machines": license.max_machines,
                            });
                            if let Some(policy) = &license.policy {
                                detail["policy"] = policy.clone().into();
                            }
                            detail["license"] = snapshot(&license, ctx.now);
                            tx.append_event(&ctx.event(license.id, EventKind::Created, None, detail)).await?;
                            Ok((license, true))
                        }
                        Created::Replayed(license) => Ok((license, false)),
                    }
                })
            })
            .await
    }

    /// A license by id or key.
    pub async fn license(&self, which: &LicenseRef) -> Result<License, ServiceError> {
        let found = match which {
            LicenseRef::Id(id) => self.store.license_by_id(*id).await?,
            LicenseRef::Key(key) => self.store.license_by_key(key.as_str()).await?,
        };
        found.ok_or(ServiceError::LicenseNotFound)
    }

    /// A page of licenses. A status filter judges expiry at `filter.now`, or else at the service clock's now.
    pub async fn list_licenses(&self, filter: &LicenseFilter) -> Result<LicensePage, ServiceError> {
        let printable =
            |v: &Option<String>| v.as_deref().is_none_or(|v| v.len() <= 254 && !v.chars().any(char::is_control));
        if !printable(&filter.email) {
            return Err(invalid("email", "must be at most 254 bytes without control characters"));
        }
        if !printable(&filter.product) {
            return Err(invalid("product", "must be at most 254 bytes without control characters"));
        }
        if !printable(&filter.email_prefix) || filter.email_prefix.as_deref() == Some("") {
            return Err(invalid("email_prefix", "must be 1-254 bytes without control characters"));
        }
        let filter = LicenseFilter { now: filter.now.or_else(|| Some(self.now())), ..filter.clone() };
        Ok(self.store.list_licenses(&filter).await?)
    }

    /// Changes slots, expiry, entitlements or metadata, with an `updated` event naming the fields. The update is
    /// merged into the license as it is under the unit's lock and checked as a whole before it is written.
    pub async fn update_license(
        &self,
        which: &LicenseRef,
        update: LicenseUpdate,
        ctx: &Context,
    ) -> Result<License, ServiceError> {
        let (which, ctx) = (which.clone(), ctx.clone());
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let mut current = tx.license(which.lookup()).await?.ok_or(ServiceError::LicenseNotFound)?;
                    if update.is_empty() {
                        return Ok(current);
                    }
                    let mut detail = serde_json::Map::new();
                    let expired_before = current.expires_at;
                    if let Some(n) = update.max_machines {
                        current.max_machines = n;
                        detail.insert("max_machines".into(), n.into());
                    }
                    if let Some(e) = update.expires_at {
                        current.expires_at = e;
                        detail.insert("expires_at".into(), e.map(|t| t.unix_timestamp()).into());
                    }
                    if let Some(e) = &update.entitlements {
                        current.entitlements.clone_from(e);
                        detail.insert("entitlements".into(), e.clone().into());
                    }
                    if let Some(m) = &update.metadata {
                        current.metadata.clone_from(m);
                        detail.insert("metadata".into(), true.into());
                    }
                    check_license(&current)?;
                    let updated =
                        tx.update_license(current.id, &update, ctx.at()).await?.ok_or(ServiceError::LicenseNotFound)?;
                    detail.insert("license".into(), snapshot(&updated, ctx.now));
                    tx.append_event(&ctx.event(updated.id, EventKind::Updated, None, detail.into())).await?;
                    let later = match (expired_before, updated.expires_at) {
                        (Some(before), Some(after)) => after > before,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if update.expires_at.is_some() && later {
                        let detail = serde_json::json!({
                            "expires_at_before": expired_before.map(|t| t.unix_timestamp()),
                            "license": snapshot(&updated, ctx.now),
                        });
                        tx.append_event(&ctx.event(updated.id, EventKind::Renewed, None, detail)).await?;
                    }
                    Ok(updated)
                })
            })
            .await
    }

    /// Suspends an active license (a suspended one stays suspended, unchanged); a revoked license cannot be
    /// suspended ([`ServiceError::StatusConflict`]).
    pub async fn suspend(&self, which: &LicenseRef, ctx: &Context) -> Result<License, ServiceError> {
        self.transition(which, LicenseStatus::Suspended, ctx).await
    }

    /// Reinstates a suspended license (an active one stays active, unchanged); a revoked license cannot be
    /// reinstated ([`ServiceError::StatusConflict`]).
    pub async fn reinstate(&self, which: &LicenseRef, ctx: &Context) -> Result<License, ServiceError> {
        self.transition(which, LicenseStatus::Active, ctx).await
    }

    /// Revokes a license for good (a revoked one stays revoked, unchanged). Once this returns `Ok`, nothing changes
    /// the status again.
    pub async fn revoke(&self, which: &LicenseRef, ctx: &Context) -> Result<License, ServiceError> {
        let revoked = self.transition(which, LicenseStatus::Revoked, ctx).await;
        // The next revocation list this instance serves lists it.
        self.revocations.clear().await;
        revoked
    }

    /// One status transition as a unit: read under the lock, decide, compare-and-set, event.
    async fn transition(&self, which: &LicenseRef, to: LicenseStatus, ctx: &Context) -> Result<License, ServiceError> {
        let (which, ctx) = (which.clone(), ctx.clone());
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let current = tx.license(which.lookup()).await?.ok_or(ServiceError::LicenseNotFound)?;
                    if current.status == to {
                        return Ok(current);
                    }
                    if current.status == LicenseStatus::Revoked {
                        return Err(ServiceError::StatusConflict {
                            current: current.status,
                            wanted: to,
                            license: Some(Box::new(current)),
                        });
                    }
                    let kind = match to {
                        LicenseStatus::Active => EventKind::Reinstated,
                        LicenseStatus::Suspended => EventKind::Suspended,
                        LicenseStatus::Revoked => EventKind::Revoked,
                    };
                    // The lock makes a mismatch impossible here; the compare-and-set keeps it so if a backend's lock
                    // ever did not hold.
                    let changed =
                        tx.change_status(current.id, current.status, to, ctx.at()).await.map_err(|e| match e {
                            // The database's own guard (a writer beside this one): the same answer as above.
                            crate::store::StoreError::RevokedIsFinal => ServiceError::StatusConflict {
                                current: LicenseStatus::Revoked,
                                wanted: to,
                                license: None,
                            },
                            other => ServiceError::from(other),
                        })?;
                    let Some(updated) = changed else {
                        return Err(ServiceError::StatusConflict {
                            current: current.status,
                            wanted: to,
                            license: None,
                        });
                    };
                    let detail =
                        serde_json::json!({ "from": current.status.as_str(), "license": snapshot(&updated, ctx.now) });
                    tx.append_event(&ctx.event(updated.id, kind, None, detail)).await?;
                    Ok(updated)
                })
            })
            .await
    }

    /// The license's active machines.
    pub async fn machines(&self, which: &LicenseRef) -> Result<(License, Vec<Machine>), ServiceError> {
        let license = self.license(which).await?;
        let machines = self.store.list_machines(license.id).await?;
        Ok((license, machines))
    }

    /// Removes a machine from a license (admin), freeing its slot, with a `machine_removed` event.
    pub async fn remove_machine(
        &self,
        which: &LicenseRef,
        fingerprint: &str,
        ctx: &Context,
    ) -> Result<(), ServiceError> {
        check_fingerprint(fingerprint)?;
        let (which, fingerprint, ctx) = (which.clone(), fingerprint.to_string(), ctx.clone());
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let license = tx.license(which.lookup()).await?.ok_or(ServiceError::LicenseNotFound)?;
                    if !tx.remove_machine(license.id, &fingerprint).await? {
                        return Err(ServiceError::NotActivated);
                    }
                    let event =
                        ctx.event(license.id, EventKind::MachineRemoved, Some(&fingerprint), serde_json::json!({}));
                    tx.append_event(&event).await?;
                    Ok(())
                })
            })
            .await
    }

    /// The license's latest `count` events, oldest first.
    pub async fn recent_events(&self, which: &LicenseRef, count: usize) -> Result<Vec<Event>, ServiceError> {
        const PAGE: u32 = 1000;
        let license = self.license(which).await?;
        let mut recent = std::collections::VecDeque::with_capacity(count + 1);
        let mut after = 0;
        loop {
            let page = self.store.list_events(license.id, after, PAGE).await?;
            let full = page.len() == PAGE as usize;
            for event in page {
                after = event.id;
                recent.push_back(event);
                if recent.len() > count {
                    recent.pop_front();
                }
            }
            if !full {
                return Ok(recent.into());
            }
        }
    }

    /// The license's events after event id `after`, at most `limit`.
    pub async fn events(&self, which: &LicenseRef, after: i64, limit: u32) -> Result<Vec<Event>, ServiceError> {
        let license = self.license(which).await?;
        Ok(self.store.list_events(license.id, after, limit).await?)
    }
}

/// The license as `GET /v1/licenses/{id}` shows it at `now`: the `license` of license events' data.
pub(super) fn snapshot(license: &License, now: time::OffsetDateTime) -> serde_json::Value {
    serde_json::to_value(crate::views::LicenseView::at(license.clone(), now)).unwrap_or_default()
}
