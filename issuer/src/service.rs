//! The licensing logic, independent of HTTP: create and manage licenses, activate, validate, refresh, deactivate,
//! and sign tokens. The HTTP handlers and the vendor CLI both call [`Licensing`].

use std::sync::Arc;

use keys::{KeyError, KeyRing};

use crate::keyring::SharedKeyRing;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use verifier::format::limits::{MAX_FINGERPRINT_LEN, MAX_TIME};
use verifier::{
    ActivationRequest, Claims, DeactivationCode, KeyId, KeySet, LicenseId, TokenKind, UnsignedToken, UntrustedToken,
};

use crate::license_key::{LicenseKey, LicenseKeyError};
use crate::store::{
    Activated, Created, Event, EventKind, Idempotency, License, LicenseFilter, LicensePage, LicenseStatus,
    LicenseUpdate, Machine, NewEvent, Redeemed, Store, StoreError,
};

/// Longest machine name or platform accepted on activation.
pub const MAX_MACHINE_TEXT_LEN: usize = 128;

/// How online tokens are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Time from issue to `refresh_after`.
    pub refresh_interval: Duration,
    /// Time from `refresh_after` to `token_expires_at`.
    pub offline_grace: Duration,
}

/// Who asked and when: recorded in the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The current time (whole seconds are used).
    pub now: OffsetDateTime,
    /// The client's IP address, if known.
    pub client_ip: Option<String>,
}

impl Context {
    /// The current time, for a request from `client_ip`.
    pub fn now(client_ip: Option<String>) -> Self {
        Context { now: OffsetDateTime::now_utc(), client_ip }
    }

    fn at(&self) -> OffsetDateTime {
        self.now.replace_nanosecond(0).unwrap_or(self.now)
    }
}

/// Why a license cannot be used right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Suspended by the vendor.
    Suspended,
    /// Revoked by the vendor.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// Why a licensing operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The license key is malformed (caught before any lookup).
    #[error(transparent)]
    InvalidLicenseKey(#[from] LicenseKeyError),
    /// A field of the request is invalid.
    #[error("invalid {field}: {message}")]
    InvalidField {
        /// The field's name in the request.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No license has this key or id.
    #[error("no license with this key or id exists")]
    LicenseNotFound,
    /// The machine is not activated on the license.
    #[error("this machine is not activated on the license")]
    NotActivated,
    /// The license is suspended, revoked or expired.
    #[error("the license is {}", match .0 { Unusable::Suspended => "suspended", Unusable::Revoked => "revoked", Unusable::Expired => "expired" })]
    Unusable(Unusable),
    /// Every machine slot is taken.
    #[error("all {max_machines} machine slots of the license are in use; deactivate a machine first")]
    NoSlotLeft {
        /// The license's slots.
        max_machines: u32,
        /// Active machines.
        machines_used: u32,
    },
    /// The token is malformed, altered or not signed by this issuer.
    #[error("invalid token: {0}")]
    InvalidToken(verifier::Error),
    /// An activation request or deactivation code is mistyped ([`verifier::Error::MistypedCode`]) or not valid
    /// ([`verifier::Error::InvalidCode`]).
    #[error("{0}")]
    InvalidCode(verifier::Error),
    /// The deactivation code was redeemed before; nothing changed.
    #[error("this deactivation code was already redeemed at {} (it freed machine {fingerprint}); nothing changed", rfc3339(*.redeemed_at))]
    AlreadyRedeemed {
        /// The machine it freed then.
        fingerprint: String,
        /// When.
        redeemed_at: OffsetDateTime,
    },
    /// No machine of the code's license holds the token the code was made for: a code of another license, or of a
    /// token the machine has since replaced.
    #[error("no machine of the license holds the token this deactivation code is for (a code of another license, or of a token since replaced)")]
    UnknownDeactivationCode,
    /// The request conflicts with the current state (idempotency key reuse, reinstating a revoked license).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(#[from] KeyError),
    /// The operating system's random source failed.
    #[error("the random source failed: {0}")]
    Random(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyConflict => ServiceError::Conflict(
                "this Idempotency-Key was already used with a different request; use a new key for a new license"
                    .into(),
            ),
            other => ServiceError::Store(other),
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidField { field, message: message.into() }
}

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

/// What a new license holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewLicense {
    /// The licensee's email.
    pub email: String,
    /// The product.
    pub product: String,
    /// Machine slots (at least 1).
    pub max_machines: u32,
    /// Expiry.
    pub expiry: Expiry,
    /// Feature names.
    pub entitlements: Vec<String>,
    /// Free-form JSON object.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A signed token and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct Issued {
    /// The token text.
    pub token: String,
    /// The claims it carries.
    pub claims: Claims,
    /// When the app should refresh the token; `None` for an offline token.
    pub refresh_after: Option<OffsetDateTime>,
    /// When the token stops being valid; `None` for an offline token (the license's own expiry still applies).
    pub token_expires_at: Option<OffsetDateTime>,
    /// The license.
    pub license: License,
    /// Machines active on the license.
    pub machines_used: u32,
    /// Whether this activation took a new slot (`false` for a re-activation or a refresh).
    pub new_machine: bool,
}

/// What redeeming an offline deactivation code did.
#[derive(Clone, Debug, PartialEq)]
pub struct OfflineDeactivated {
    /// The license.
    pub license: License,
    /// The machine that was freed.
    pub fingerprint: String,
    /// Machines still active on the license.
    pub machines_used: u32,
}

/// Result codes of validation, stable for clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValidationCode {
    /// The license is good and this machine is activated.
    Valid,
    /// No license has this key.
    NotFound,
    /// The license is suspended.
    Suspended,
    /// The license is revoked.
    Revoked,
    /// The license expired.
    Expired,
    /// This machine is not activated on the license.
    NotActivated,
    /// More machines are active than the license has slots (slots were lowered).
    TooManyMachines,
    /// The license is for another product than the one asked about.
    ProductMismatch,
}

impl ValidationCode {
    /// The code as sent to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationCode::Valid => "VALID",
            ValidationCode::NotFound => "NOT_FOUND",
            ValidationCode::Suspended => "SUSPENDED",
            ValidationCode::Revoked => "REVOKED",
            ValidationCode::Expired => "EXPIRED",
            ValidationCode::NotActivated => "NOT_ACTIVATED",
            ValidationCode::TooManyMachines => "TOO_MANY_MACHINES",
            ValidationCode::ProductMismatch => "PRODUCT_MISMATCH",
        }
    }

    /// A sentence for people.
    pub fn message(self) -> &'static str {
        match self {
            ValidationCode::Valid => "the license is valid on this machine",
            ValidationCode::NotFound => "no license has this key",
            ValidationCode::Suspended => "the license is suspended",
            ValidationCode::Revoked => "the license is revoked",
            ValidationCode::Expired => "the license has expired",
            ValidationCode::NotActivated => "this machine is not activated on the license",
            ValidationCode::TooManyMachines => "more machines are active than the license allows",
            ValidationCode::ProductMismatch => "the license is for another product",
        }
    }
}

/// The outcome of a validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    /// The result code; only [`ValidationCode::Valid`] means valid.
    pub code: ValidationCode,
    /// The license, when the key was found.
    pub license: Option<License>,
    /// Machines active on the license, when found.
    pub machines_used: Option<u32>,
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
}

/// The licensing service.
pub struct Licensing {
    store: Arc<dyn Store>,
    ring: Arc<SharedKeyRing>,
    policy: TokenPolicy,
    extra_admin_hash: Option<[u8; 32]>,
}

impl std::fmt::Debug for Licensing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Licensing").field("ring", &self.ring).field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Licensing {
    /// A service over `store`, signing with `ring`. `extra_admin_token` (from `ISSUER_ADMIN_TOKEN`) is accepted
    /// besides the tokens whose hashes the store holds.
    pub fn new(
        store: Arc<dyn Store>,
        ring: Arc<SharedKeyRing>,
        policy: TokenPolicy,
        extra_admin_token: Option<&str>,
    ) -> Self {
        Licensing { store, ring, policy, extra_admin_hash: extra_admin_token.map(token_hash) }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The reloadable key ring itself.
    pub fn key_ring_handle(&self) -> &Arc<SharedKeyRing> {
        &self.ring
    }

    /// The key ring in use now (it is reloaded when its files change; see [`SharedKeyRing`]).
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.ring.current()
    }

    /// Whether `token` is an accepted admin token. Compares SHA-256 hashes in constant time.
    pub async fn is_admin_token(&self, token: &str) -> Result<bool, ServiceError> {
        let hash = token_hash(token);
        let mut ok = subtle::Choice::from(0u8);
        if let Some(extra) = &self.extra_admin_hash {
            ok |= extra.ct_eq(&hash);
        }
        for stored in self.store.admin_token_hashes().await? {
            ok |= stored.ct_eq(&hash);
        }
        Ok(bool::from(ok))
    }

    /// Creates and stores a new admin token; returns it (the store keeps only its hash).
    pub async fn create_admin_token(&self, label: &str) -> Result<String, ServiceError> {
        let token = new_admin_token()?;
        self.store.add_admin_token(&token_hash(&token), label, Context::now(None).at()).await?;
        Ok(token)
    }

    // ---- admin ----

    /// Creates a license. With an idempotency key, a retry of the same request returns the first license
    /// (`false` in the pair) and another request with the same key is a conflict.
    pub async fn create_license(
        &self,
        new: NewLicense,
        idempotency_key: Option<&str>,
        ctx: &Context,
    ) -> Result<(License, bool), ServiceError> {
        let at = ctx.at();
        let expires_at = match new.expiry {
            Expiry::Never => None,
            Expiry::At(t) => Some(t.replace_nanosecond(0).unwrap_or(t)),
            Expiry::After(secs) => Some(
                i64::try_from(secs)
                    .ok()
                    .and_then(|s| at.checked_add(Duration::seconds(s)))
                    .ok_or_else(|| invalid("duration", "is too long"))?,
            ),
        };
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
        let key = LicenseKey::generate().map_err(|e| ServiceError::Random(e.to_string()))?;
        let license = License {
            id: Uuid::now_v7(),
            key: key.to_string(),
            email: new.email.trim().to_string(),
            product: new.product,
            max_machines: new.max_machines,
            expires_at,
            entitlements: new.entitlements,
            metadata: new.metadata,
            status: LicenseStatus::Active,
            created_at: at,
            updated_at: at,
        };
        check_license(&license)?;
        match self.store.create_license(&license, idempotency.as_ref()).await? {
            Created::New(license) => {
                let detail = serde_json::json!({
                    "email": license.email, "product": license.product, "max_machines": license.max_machines,
                });
                self.log(license.id, EventKind::Created, None, ctx, detail).await?;
                Ok((license, true))
            }
            Created::Replayed(license) => Ok((license, false)),
        }
    }

    /// A license by id or key.
    pub async fn license(&self, which: &LicenseRef) -> Result<License, ServiceError> {
        let found = match which {
            LicenseRef::Id(id) => self.store.license_by_id(*id).await?,
            LicenseRef::Key(key) => self.store.license_by_key(key.as_str()).await?,
        };
        found.ok_or(ServiceError::LicenseNotFound)
    }

    /// A page of licenses.
    pub async fn list_licenses(&self, filter: &LicenseFilter) -> Result<LicensePage, ServiceError> {
        let printable =
            |v: &Option<String>| v.as_deref().is_none_or(|v| v.len() <= 254 && !v.chars().any(char::is_control));
        if !printable(&filter.email) {
            return Err(invalid("email", "must be at most 254 bytes without control characters"));
        }
        if !printable(&filter.product) {
            return Err(invalid("product", "must be at most 254 bytes without control characters"));
        }
        Ok(self.store.list_licenses(filter).await?)
    }

    /// Changes slots, expiry, entitlements or metadata.
    pub async fn update_license(
        &self,
        which: &LicenseRef,
        update: LicenseUpdate,
        ctx: &Context,
    ) -> Result<License, ServiceError> {
        let mut current = self.license(which).await?;
        if update.is_empty() {
            return Ok(current);
        }
        let mut detail = serde_json::Map::new();
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
            self.store.update_license(current.id, &update, ctx.at()).await?.ok_or(ServiceError::LicenseNotFound)?;
        self.log(updated.id, EventKind::Updated, None, ctx, detail.into()).await?;
        Ok(updated)
    }

    /// Suspends an active license (a suspended one stays suspended); a revoked license cannot be suspended.
    pub async fn suspend(&self, which: &LicenseRef, ctx: &Context) -> Result<License, ServiceError> {
        self.transition(which, LicenseStatus::Suspended, ctx).await
    }

    /// Reinstates a suspended license (an active one stays active); a revoked license cannot be reinstated.
    pub async fn reinstate(&self, which: &LicenseRef, ctx: &Context) -> Result<License, ServiceError> {
        self.transition(which, LicenseStatus::Active, ctx).await
    }

    /// Revokes a license for good.
    pub async fn revoke(&self, which: &LicenseRef, ctx: &Context) -> Result<License, ServiceError> {
        self.transition(which, LicenseStatus::Revoked, ctx).await
    }

    async fn transition(&self, which: &LicenseRef, to: LicenseStatus, ctx: &Context) -> Result<License, ServiceError> {
        let current = self.license(which).await?;
        if current.status == to {
            return Ok(current);
        }
        if current.status == LicenseStatus::Revoked {
            return Err(ServiceError::Conflict("the license is revoked; a revocation cannot be undone".into()));
        }
        let kind = match to {
            LicenseStatus::Active => EventKind::Reinstated,
            LicenseStatus::Suspended => EventKind::Suspended,
            LicenseStatus::Revoked => EventKind::Revoked,
        };
        let updated = self.store.set_status(current.id, to, ctx.at()).await?.ok_or(ServiceError::LicenseNotFound)?;
        self.log(updated.id, kind, None, ctx, serde_json::json!({ "from": current.status.as_str() })).await?;
        Ok(updated)
    }

    /// The license's active machines.
    pub async fn machines(&self, which: &LicenseRef) -> Result<(License, Vec<Machine>), ServiceError> {
        let license = self.license(which).await?;
        let machines = self.store.list_machines(license.id).await?;
        Ok((license, machines))
    }

    /// Removes a machine from a license (admin), freeing its slot.
    pub async fn remove_machine(
        &self,
        which: &LicenseRef,
        fingerprint: &str,
        ctx: &Context,
    ) -> Result<(), ServiceError> {
        check_fingerprint(fingerprint)?;
        let license = self.license(which).await?;
        if !self.store.remove_machine(license.id, fingerprint).await? {
            return Err(ServiceError::NotActivated);
        }
        self.log(license.id, EventKind::MachineRemoved, Some(fingerprint), ctx, serde_json::json!({})).await?;
        Ok(())
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

    // ---- public ----

    /// Activates this machine on the license and returns a fresh online token. An already active machine gets a new
    /// token without using another slot.
    pub async fn activate(
        &self,
        key: &str,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        ctx: &Context,
    ) -> Result<Issued, ServiceError> {
        let key = LicenseKey::parse(key)?;
        self.activate_license(&LicenseRef::Key(key), fingerprint, name, platform, TokenKind::Online, ctx).await
    }

    /// Activates a machine on a license given by id or key, exactly as [`Licensing::activate`] does (slot limit,
    /// events), and signs a token of `kind`. An [`TokenKind::Offline`] token has no token expiry, and its
    /// deactivation proof is stored so a [`DeactivationCode`] can free the slot later. The vendor CLI's
    /// `token issue` calls this.
    pub async fn activate_license(
        &self,
        which: &LicenseRef,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        kind: TokenKind,
        ctx: &Context,
    ) -> Result<Issued, ServiceError> {
        check_fingerprint(fingerprint)?;
        check_machine_text("name", name)?;
        check_machine_text("platform", platform)?;
        let license = self.license(which).await?;
        let at = ctx.at();
        if let Err(why) = usable(&license, at) {
            return Err(ServiceError::Unusable(why));
        }
        let offline = kind == TokenKind::Offline;
        let detail = if offline { serde_json::json!({ "offline": true }) } else { serde_json::json!({}) };
        // The store completes the detail with new_machine and machines_used, in the activation's transaction.
        let event = self.event(license.id, EventKind::Activated, Some(fingerprint), ctx, detail);
        let (new_machine, machines_used) =
            match self.store.activate_machine_logged(license.id, fingerprint, name, platform, &event).await? {
                Activated::New { machines_used, .. } => (true, machines_used),
                Activated::Existing { machines_used, .. } => (false, machines_used),
                Activated::NoSlotLeft { machines_used } => {
                    return Err(ServiceError::NoSlotLeft { max_machines: license.max_machines, machines_used });
                }
                Activated::NoLicense => return Err(ServiceError::LicenseNotFound),
            };
        let license_id = license.id;
        let issued = self.issue(license, fingerprint, at, machines_used, new_machine, kind)?;
        if offline {
            let proof = verifier::token_proof(&issued.token).map_err(ServiceError::InvalidToken)?;
            // The machine can only be gone if it was removed in the instant since it was activated.
            if !self.store.set_offline_proof(license_id, fingerprint, &proof).await? {
                return Err(ServiceError::NotActivated);
            }
        }
        Ok(issued)
    }

    /// Air-gapped activation: turns an [`ActivationRequest`] (made offline by the app) into an offline token,
    /// recording the activation exactly as an online one (slot limit, events with `"offline": true`).
    /// Re-activating a machine that is already active uses no slot, and its earlier offline token's deactivation
    /// code stops matching (only the newest token can free the slot).
    pub async fn activate_offline(&self, request: &ActivationRequest, ctx: &Context) -> Result<Issued, ServiceError> {
        let key = LicenseKey::parse(&request.license_key)?;
        let name = Some(request.machine_name.trim()).filter(|n| !n.is_empty());
        self.activate_license(&LicenseRef::Key(key), &request.fingerprint, name, None, TokenKind::Offline, ctx).await
    }

    /// Redeems an offline [`DeactivationCode`]: removes the machine holding the token it proves, freeing its slot.
    /// A code frees one slot once ([`ServiceError::AlreadyRedeemed`] afterwards) and only on its own license
    /// ([`ServiceError::UnknownDeactivationCode`]).
    pub async fn redeem_deactivation(
        &self,
        code: &DeactivationCode,
        ctx: &Context,
    ) -> Result<OfflineDeactivated, ServiceError> {
        let license_id = Uuid::from_bytes(code.license_id.0);
        let license = self.store.license_by_id(license_id).await?.ok_or(ServiceError::UnknownDeactivationCode)?;
        match self.store.redeem_deactivation(license.id, &code.proof, ctx.at()).await? {
            Redeemed::Freed { fingerprint, machines_used } => {
                let detail = serde_json::json!({ "offline": true, "machines_used": machines_used });
                self.log(license.id, EventKind::Deactivated, Some(&fingerprint), ctx, detail).await?;
                Ok(OfflineDeactivated { license, fingerprint, machines_used })
            }
            Redeemed::AlreadyRedeemed { fingerprint, redeemed_at } => {
                Err(ServiceError::AlreadyRedeemed { fingerprint, redeemed_at })
            }
            Redeemed::NoMatch => Err(ServiceError::UnknownDeactivationCode),
        }
    }

    /// Checks the license and this machine's activation.
    pub async fn validate(
        &self,
        key: &str,
        fingerprint: &str,
        product: Option<&str>,
        ctx: &Context,
    ) -> Result<Validated, ServiceError> {
        let key = LicenseKey::parse(key)?;
        check_fingerprint(fingerprint)?;
        let Some((license, machines_used, machine_active)) =
            self.store.license_for_machine(key.as_str(), fingerprint).await?
        else {
            return Ok(Validated { code: ValidationCode::NotFound, license: None, machines_used: None });
        };
        let code = if product.is_some_and(|p| p != license.product) {
            ValidationCode::ProductMismatch
        } else {
            match usable(&license, ctx.at()) {
                Err(Unusable::Revoked) => ValidationCode::Revoked,
                Err(Unusable::Suspended) => ValidationCode::Suspended,
                Err(Unusable::Expired) => ValidationCode::Expired,
                Ok(()) => {
                    if !machine_active {
                        ValidationCode::NotActivated
                    } else if machines_used > license.max_machines {
                        ValidationCode::TooManyMachines
                    } else {
                        ValidationCode::Valid
                    }
                }
            }
        };
        self.log(
            license.id,
            EventKind::Validated,
            Some(fingerprint),
            ctx,
            serde_json::json!({ "code": code.as_str() }),
        )
        .await?;
        Ok(Validated { code, license: Some(license), machines_used: Some(machines_used) })
    }

    /// Exchanges a token this issuer signed (even an expired one) for a new one, while the license is usable and
    /// the machine is still activated.
    pub async fn refresh(&self, token: &str, ctx: &Context) -> Result<Issued, ServiceError> {
        let untrusted = UntrustedToken::parse(token.trim()).map_err(ServiceError::InvalidToken)?;
        let old = match untrusted.verify(&self.ring.public_keys()) {
            // Signed by a key this instance has not loaded yet: another instance may have rotated first.
            Err(verifier::Error::UnknownKey { .. }) if self.reload_key_ring().await => {
                untrusted.verify(&self.ring.public_keys())
            }
            verified => verified,
        }
        .map_err(ServiceError::InvalidToken)?
        .into_claims();
        let license_id = Uuid::from_bytes(old.license_id.0);
        let license = self.store.license_by_id(license_id).await?.ok_or(ServiceError::LicenseNotFound)?;
        let at = ctx.at();
        let refused = |outcome: &str| serde_json::json!({ "outcome": outcome });
        let refusal = match usable(&license, at) {
            Ok(()) => {
                // The usual case: the machine is marked as seen and the event logged in one transaction.
                let event =
                    self.event(license.id, EventKind::Refreshed, Some(&old.fingerprint), ctx, refused("refreshed"));
                if let Some(machines_used) =
                    self.store.touch_machine_logged(license.id, &old.fingerprint, &event).await?
                {
                    return self.issue(license, &old.fingerprint, at, machines_used, false, TokenKind::Online);
                }
                (ServiceError::NotActivated, "not_activated")
            }
            Err(Unusable::Revoked) => (ServiceError::Unusable(Unusable::Revoked), "revoked"),
            Err(Unusable::Suspended) => (ServiceError::Unusable(Unusable::Suspended), "suspended"),
            Err(Unusable::Expired) => (ServiceError::Unusable(Unusable::Expired), "expired"),
        };
        self.log(license.id, EventKind::Refreshed, Some(&old.fingerprint), ctx, refused(refusal.1)).await?;
        Err(refusal.0)
    }

    /// Deactivates this machine, freeing its slot. Returns the license and the machines still active.
    pub async fn deactivate(
        &self,
        key: &str,
        fingerprint: &str,
        ctx: &Context,
    ) -> Result<(License, u32), ServiceError> {
        let key = LicenseKey::parse(key)?;
        check_fingerprint(fingerprint)?;
        let license = self.store.license_by_key(key.as_str()).await?.ok_or(ServiceError::LicenseNotFound)?;
        let event = self.event(license.id, EventKind::Deactivated, Some(fingerprint), ctx, serde_json::json!({}));
        match self.store.remove_machine_logged(license.id, fingerprint, &event).await? {
            Some(used) => Ok((license, used)),
            None => Err(ServiceError::NotActivated),
        }
    }

    /// Reloads the key ring if its files changed; whether a new ring is now in use.
    async fn reload_key_ring(&self) -> bool {
        let ring = Arc::clone(&self.ring);
        match tokio::task::spawn_blocking(move || ring.reload_if_changed()).await {
            Ok(Ok(reloaded)) => reloaded,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot reload the signing key ring; still using the previous one");
                false
            }
            Err(_) => false,
        }
    }

    /// The public keys apps should trust: every key of the ring in use now.
    pub fn public_keys(&self) -> KeySet {
        KeySet::clone(&self.ring.public_keys())
    }

    fn issue(
        &self,
        license: License,
        fingerprint: &str,
        at: OffsetDateTime,
        machines_used: u32,
        new_machine: bool,
        kind: TokenKind,
    ) -> Result<Issued, ServiceError> {
        let (refresh_after, token_expires_at) = match kind {
            TokenKind::Online => {
                let refresh_after = at + self.policy.refresh_interval;
                (Some(refresh_after), Some(refresh_after + self.policy.offline_grace))
            }
            TokenKind::Offline => (None, None),
        };
        let claims = Claims {
            kind,
            license_id: LicenseId(license.id.into_bytes()),
            license_key: license.key.clone(),
            email: license.email.clone(),
            product: license.product.clone(),
            entitlements: license.entitlements.clone(),
            max_machines: license.max_machines,
            fingerprint: fingerprint.to_string(),
            issued_at: at,
            license_expires_at: license.expires_at,
            refresh_after,
            token_expires_at,
        };
        let token = self.ring.current().sign(&claims)?;
        Ok(Issued { token, claims, refresh_after, token_expires_at, license, machines_used, new_machine })
    }

    fn event(
        &self,
        license_id: Uuid,
        kind: EventKind,
        fingerprint: Option<&str>,
        ctx: &Context,
        detail: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            license_id,
            kind,
            at: ctx.at(),
            fingerprint: fingerprint.map(Into::into),
            client_ip: ctx.client_ip.clone(),
            detail,
        }
    }

    async fn log(
        &self,
        license_id: Uuid,
        kind: EventKind,
        fingerprint: Option<&str>,
        ctx: &Context,
        detail: serde_json::Value,
    ) -> Result<(), ServiceError> {
        self.store.append_event(&self.event(license_id, kind, fingerprint, ctx, detail)).await?;
        Ok(())
    }
}

/// Whether the license may be used at `now`: revoked, then suspended, then expired.
fn usable(license: &License, now: OffsetDateTime) -> Result<(), Unusable> {
    match license.status {
        LicenseStatus::Revoked => Err(Unusable::Revoked),
        LicenseStatus::Suspended => Err(Unusable::Suspended),
        LicenseStatus::Active if license.expires_at.is_some_and(|e| e <= now) => Err(Unusable::Expired),
        LicenseStatus::Active => Ok(()),
    }
}

/// Checks a license against the token format's limits (the verifier's own checks), so signing never fails later.
fn check_license(license: &License) -> Result<(), ServiceError> {
    if license.metadata.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)) {
        // PostgreSQL refuses NUL in text and jsonb; refusing it here keeps every backend's answer the same.
        return Err(invalid("metadata", "must not contain NUL (\\u0000) characters"));
    }
    if license.expires_at.is_some_and(|t| t.unix_timestamp() < 0 || t.unix_timestamp() as u64 > MAX_TIME) {
        return Err(invalid("expires_at", "must lie between 1970-01-01 and 9999-12-31"));
    }
    let claims = Claims {
        kind: TokenKind::Offline,
        license_id: LicenseId(license.id.into_bytes()),
        license_key: license.key.clone(),
        email: license.email.clone(),
        product: license.product.clone(),
        entitlements: license.entitlements.clone(),
        max_machines: license.max_machines,
        fingerprint: "check".into(),
        issued_at: license.created_at,
        license_expires_at: license.expires_at,
        refresh_after: None,
        token_expires_at: None,
    };
    UnsignedToken::new(KeyId::from_bytes([0; 8]), &claims).map(|_| ()).map_err(|e| {
        let field = match e.field {
            "license_expires_at" => "expires_at",
            "email" => "email",
            "product" => "product",
            "entitlements" => "entitlements",
            "max_machines" => "max_machines",
            _ => "license",
        };
        invalid(field, e.problem)
    })
}

/// Whether a JSON value holds a NUL character in any string, key or value, at any depth.
fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

fn check_fingerprint(fingerprint: &str) -> Result<(), ServiceError> {
    if fingerprint.is_empty()
        || fingerprint.len() > MAX_FINGERPRINT_LEN
        || !fingerprint.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(invalid("fingerprint", "must be 1-128 printable ASCII characters without spaces"));
    }
    Ok(())
}

fn check_machine_text(field: &'static str, value: Option<&str>) -> Result<(), ServiceError> {
    match value {
        Some(v) if v.len() > MAX_MACHINE_TEXT_LEN || v.chars().any(char::is_control) => {
            Err(invalid(field, "must be at most 128 bytes without control characters"))
        }
        _ => Ok(()),
    }
}

/// SHA-256 of an admin token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random admin token: `iat_` and 32 random bytes in base64url.
pub fn new_admin_token() -> Result<String, ServiceError> {
    use base64::Engine as _;
    use rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 32];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| ServiceError::Random(e.to_string()))?;
    Ok(format!("iat_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
