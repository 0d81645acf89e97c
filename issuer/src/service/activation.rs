//! Machines and tokens: online activation within the slot limit, validation, token refresh (how a revocation reaches
//! online apps) and deactivation, and signing the tokens.
//!
//! Activation, refresh and deactivation are each one unit of work: the license is read under the unit's lock and
//! checked (usable, not revoked meanwhile), its policy's terms are read, machines whose lease ended are culled, then
//! the machine change and its event are written together. An online token is signed after the unit committed, from
//! the license and terms as the unit read them.

use std::sync::Arc;

use keys::KeyRing;
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use verifier::{Claims, LicenseId, TokenKind, UntrustedToken};

use super::checks::{
    bound_fingerprint, check_fingerprint, check_fingerprint_size, check_machine_text, covering_bindings, usable,
};
use super::policies::{count_deactivation, cull_license, terms_in, CulledBy, Terms};
use super::{Context, LicenseRef, Licensing, ServiceError, Unusable};
use crate::license_key::LicenseKey;
use crate::store::{
    Activated, EventKind, License, LicenseKind, Lookup, MachineCheck, NewMachine, Presence, StoreExt as _, Touched,
};

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
    /// Whether the license has more machines than `max_machines` (within its policy's overage).
    pub overage: bool,
    /// When the machine's lease ends unless it checks in again; `None` without a lease (and for offline tokens).
    pub lease_expires_at: Option<OffsetDateTime>,
    /// The certificate (`lkc1.`) of the key that signed the token, when the key ring has roots: apps that embed only
    /// the root trust the token through it.
    pub certificate: Option<String>,
}

impl Issued {
    /// The license file an air-gapped machine is given (docs/token-format.md §15): the token, then the certificate
    /// of its key when there is one. Without roots it is the token alone, as before certificates.
    pub fn file_text(&self) -> String {
        match &self.certificate {
            Some(certificate) => format!("{}\n{certificate}\n", self.token),
            None => format!("{}\n", self.token),
        }
    }
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
    /// This machine's lease ended (it did not check in in time) and its slot was freed or is being freed.
    LeaseExpired,
    /// More machines are active than the license has slots (slots were lowered).
    TooManyMachines,
    /// The license is for another product than the one asked about.
    ProductMismatch,
    /// A network rule refuses the client's address (nothing about the license is said).
    IpBlocked,
    /// A domain license: this domain is not activated and every domain is taken, or more domains are active than
    /// the license allows (its domains were lowered).
    DomainLimitReached,
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
            ValidationCode::LeaseExpired => "LEASE_EXPIRED",
            ValidationCode::TooManyMachines => "TOO_MANY_MACHINES",
            ValidationCode::ProductMismatch => "PRODUCT_MISMATCH",
            ValidationCode::IpBlocked => "IP_BLOCKED",
            ValidationCode::DomainLimitReached => "DOMAIN_LIMIT_REACHED",
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
            ValidationCode::LeaseExpired => "this machine's lease ended; activate it again",
            ValidationCode::TooManyMachines => "more machines are active than the license allows",
            ValidationCode::ProductMismatch => "the license is for another product",
            ValidationCode::IpBlocked => "requests from this address are refused by a network rule",
            ValidationCode::DomainLimitReached => "every domain of the license is taken by other domains",
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
    /// Machines active on the license (holding a live lease, where leases apply), when found.
    pub machines_used: Option<u32>,
    /// Whether the license has more machines than `max_machines`, within its overage (a valid answer says so).
    pub overage: bool,
}

impl Validated {
    /// An answer that says nothing about a license.
    fn without_license(code: ValidationCode) -> Self {
        Validated { code, license: None, machines_used: None, overage: false }
    }
}

impl Licensing {
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
    /// events), and signs a token of `kind`. An [`TokenKind::Offline`] token has no token expiry; it is signed inside
    /// the unit, and its deactivation proof is stored with the activation, so a [`verifier::DeactivationCode`] can
    /// free the slot later. The vendor CLI's `token issue` calls this.
    pub async fn activate_license(
        &self,
        which: &LicenseRef,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        kind: TokenKind,
        ctx: &Context,
    ) -> Result<Issued, ServiceError> {
        check_fingerprint_size(fingerprint)?;
        check_machine_text("name", name)?;
        check_machine_text("platform", platform)?;
        let (which, fp, unit_ctx) = (which.clone(), fingerprint.to_string(), ctx.clone());
        let (name, platform) = (name.map(str::to_string), platform.map(str::to_string));
        let offline = kind == TokenKind::Offline;
        // One ring for the whole activation. Only an offline token is signed inside the unit (its proof is stored
        // with the activation); an online one after it. Either way a key that may not sign for the license's product
        // (key ring with roots, no covering certificate) refuses inside the unit, so no slot is taken for nothing.
        let operation = if offline { "offline_activate" } else { "activate" };
        let screen = self.screen(ctx, operation).await?;
        let (ring, defaults) = (self.ring.current(), self.policy);
        let unit_ring = Arc::clone(&ring);
        let activated = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    let ctx = unit_ctx;
                    let license = found(tx.license(which.lookup()).await?, &fp)?;
                    // First: a refused network learns nothing about the license.
                    screen.admit(&license, &ctx)?;
                    let fingerprint = bound_fingerprint(&license, &fp)?;
                    let at = ctx.at();
                    usable(&license, at).map_err(ServiceError::Unusable)?;
                    let terms = terms_in(tx, &license, defaults).await?;
                    if offline && !terms.offline_allowed {
                        return Err(ServiceError::OfflineNotAllowed);
                    }
                    unit_ring.signing_certificate(at, Some(&license.product))?;
                    // Dead machines first: a slot a lease freed is free for this activation.
                    cull_license(tx, &license, &terms, CulledBy::Activation, &ctx).await?;
                    // An air-gapped machine cannot check in: its activation holds no lease.
                    let lease_expires_at = if offline { None } else { terms.lease_until(at) };
                    let machine = NewMachine {
                        fingerprint: &fingerprint,
                        name: name.as_deref(),
                        platform: platform.as_deref(),
                        at,
                        lease_expires_at,
                    };
                    let overage = terms.overage.extra(license.max_machines);
                    let (new_machine, machines_used, lease_expires_at) = match tx
                        .activate_machine(license.id, &machine, overage)
                        .await?
                    {
                        Activated::New { machine, machines_used } => (true, machines_used, machine.lease_expires_at),
                        Activated::Existing { machine, machines_used } => {
                            (false, machines_used, machine.lease_expires_at)
                        }
                        Activated::NoSlotLeft { machines_used } => {
                            return Err(match license.kind {
                                LicenseKind::Domain => ServiceError::DomainLimitReached {
                                    max_domains: license.max_machines,
                                    domains_used: machines_used,
                                },
                                LicenseKind::Machine => {
                                    ServiceError::NoSlotLeft { max_machines: license.max_machines, machines_used }
                                }
                            });
                        }
                        Activated::NoLicense => return Err(ServiceError::LicenseNotFound),
                    };
                    let mut detail = serde_json::json!({
                        "new_machine": new_machine,
                        "machines_used": machines_used,
                        "overage": terms.in_overage(license.max_machines, machines_used),
                    });
                    let signed = if offline {
                        detail["offline"] = true.into();
                        let machine =
                            Signed { fingerprint: &fingerprint, at, machines_used, new_machine, lease_expires_at };
                        let issued = sign(&unit_ring, &terms, license.clone(), &machine, kind)?;
                        let proof = verifier::token_proof(&issued.token).map_err(ServiceError::InvalidToken)?;
                        if !tx.set_offline_proof(license.id, &fingerprint, &proof).await? {
                            return Err(ServiceError::NotActivated);
                        }
                        Some(issued)
                    } else {
                        None
                    };
                    tx.append_event(&ctx.event(license.id, EventKind::Activated, Some(&fingerprint), detail)).await?;
                    Ok(UnitActivated {
                        license,
                        fingerprint,
                        machines_used,
                        new_machine,
                        lease_expires_at,
                        terms,
                        signed,
                    })
                })
            })
            .await;
        let activated = self.after_screening(activated, Some(fingerprint), operation, ctx).await?;
        self.usage.activated(activated.license.id, ctx.at());
        let UnitActivated { license, fingerprint, machines_used, new_machine, lease_expires_at, terms, signed } =
            activated;
        match signed {
            Some(issued) => Ok(issued),
            None => {
                let machine =
                    Signed { fingerprint: &fingerprint, at: ctx.at(), machines_used, new_machine, lease_expires_at };
                sign(&ring, &terms, license, &machine, TokenKind::Online)
            }
        }
    }

    /// Checks the license and this machine's activation. Changes nothing: it reads committed state, and is counted
    /// in memory (a refusal is recorded once per license, code and minute: docs/usage.md).
    pub async fn validate(
        &self,
        key: &str,
        fingerprint: &str,
        product: Option<&str>,
        ctx: &Context,
    ) -> Result<Validated, ServiceError> {
        let key = LicenseKey::parse(key)?;
        check_fingerprint_size(fingerprint)?;
        let screen = match self.screen(ctx, "validate").await {
            Err(ServiceError::IpBlocked { .. }) => return Ok(Validated::without_license(ValidationCode::IpBlocked)),
            screen => screen?,
        };
        let Some(mut check) = self.store.license_for_machine(key.as_str(), fingerprint, ctx.at()).await? else {
            return match unusable_fingerprint(fingerprint) {
                Some(invalid) => Err(invalid),
                None => Ok(Validated::without_license(ValidationCode::NotFound)),
            };
        };
        let screened = screen.admit(&check.license, ctx);
        match self.after_screening(screened, Some(fingerprint), "validate", ctx).await {
            Err(ServiceError::IpBlocked { .. }) => return Ok(Validated::without_license(ValidationCode::IpBlocked)),
            screened => screened?,
        }
        let domain = check.license.kind == LicenseKind::Domain;
        // A domain license's activation that covers the host: its own binding, or a wildcard's.
        let mut covering = None;
        if domain {
            // The activation that covers this host: its own, or a wildcard of it or of a parent.
            let bindings = covering_bindings(fingerprint)?;
            let best = self.store.machine_presence(check.license.id, &bindings, ctx.at()).await?;
            check.presence = best.presence;
            covering = best.active;
        } else {
            // Only a domain license takes what is not a machine fingerprint (a domain, also an international one).
            check_fingerprint(fingerprint)?;
        }
        let MachineCheck { license, machines_used, presence, policy } = check;
        let terms = Terms::of(policy.as_ref(), self.policy);
        let code = if product.is_some_and(|p| p != license.product) {
            ValidationCode::ProductMismatch
        } else {
            match usable(&license, ctx.at()) {
                Err(Unusable::Revoked) => ValidationCode::Revoked,
                Err(Unusable::Suspended) => ValidationCode::Suspended,
                Err(Unusable::Expired) => ValidationCode::Expired,
                Ok(()) => {
                    let limit = terms.limit(license.max_machines);
                    match presence {
                        // A domain beyond the limit: not activated on a license whose domains are all taken.
                        Presence::Absent if domain && machines_used >= limit => ValidationCode::DomainLimitReached,
                        Presence::Absent => ValidationCode::NotActivated,
                        Presence::LeaseExpired => ValidationCode::LeaseExpired,
                        Presence::Active if machines_used > limit && domain => ValidationCode::DomainLimitReached,
                        Presence::Active if machines_used > limit => ValidationCode::TooManyMachines,
                        Presence::Active => ValidationCode::Valid,
                    }
                }
            }
        };
        let overage = terms.in_overage(license.max_machines, machines_used);
        // The activation found is counted for itself: the machine, or the binding that covers the host.
        let machine = match presence {
            Presence::Active if domain => covering.as_deref(),
            Presence::Active => Some(fingerprint),
            Presence::LeaseExpired | Presence::Absent => None,
        };
        self.usage.validated(license.id, machine, fingerprint, code, ctx);
        Ok(Validated { code, license: Some(license), machines_used: Some(machines_used), overage })
    }

    /// Exchanges a token this issuer signed (even an expired one) for a new one, while the license is usable and
    /// the machine is still activated. The check, the machine's `last_seen_at` and the `refreshed` event (also of a
    /// refusal) are one unit: a refresh that commits after a revocation is refused.
    pub async fn refresh(&self, token: &str, ctx: &Context) -> Result<Issued, ServiceError> {
        // Not `str::trim`: the parser trims exactly the ASCII whitespace the format allows (docs/token-format.md §2),
        // so the issuer accepts the same texts an app's verifier does.
        let untrusted = UntrustedToken::parse(token).map_err(ServiceError::InvalidToken)?;
        let old = match untrusted.verify(&self.ring.public_keys()) {
            // Signed by a key this instance has not loaded yet: another instance may have rotated first. Checked
            // again whatever the reload says: the watcher may have loaded the new ring since the first check.
            Err(verifier::Error::UnknownKey { .. }) => {
                self.reload_key_ring().await;
                untrusted.verify(&self.ring.public_keys())
            }
            verified => verified,
        }
        .map_err(ServiceError::InvalidToken)?
        .into_claims();
        // Refused before the unit: a key that may not sign for this product must not count as a check-in.
        let ring = self.ring.current();
        ring.signing_certificate(ctx.at(), Some(&old.product))?;
        let (license_id, fingerprint) = (Uuid::from_bytes(old.license_id.0), old.fingerprint);
        let (unit_ctx, fp, defaults, rules) =
            (ctx.clone(), fingerprint.clone(), self.policy, self.screen(ctx, "refresh").await?);
        let refreshed = self
            .store
            .transact::<_, ServiceError, _>(move |tx| {
                Box::pin(async move {
                    let ctx = unit_ctx;
                    let license = tx.license(Lookup::Id(license_id)).await?.ok_or(ServiceError::LicenseNotFound)?;
                    rules.admit(&license, &ctx)?;
                    if license.kind == LicenseKind::Machine && fp.starts_with(verifier::DOMAIN_BINDING_PREFIX) {
                        // A machine activation named like a binding (stored before such names were refused) must
                        // not get a token a domain check would accept.
                        return Err(bound_fingerprint(&license, &fp).err().unwrap_or(ServiceError::NotActivated));
                    }
                    let outcome = |outcome: &str| serde_json::json!({ "outcome": outcome });
                    let (refusal, why) = match usable(&license, ctx.at()) {
                        Ok(()) => {
                            let terms = terms_in(tx, &license, defaults).await?;
                            cull_license(tx, &license, &terms, CulledBy::Refresh, &ctx).await?;
                            match tx.touch_machine(license.id, &fp, ctx.at(), terms.lease_until(ctx.at())).await? {
                                Touched::Active { lease_expires_at } => {
                                    let used = tx.count_machines(license.id).await?;
                                    let event =
                                        ctx.event(license.id, EventKind::Refreshed, Some(&fp), outcome("refreshed"));
                                    tx.append_event(&event).await?;
                                    return Ok(Ok((license, used, lease_expires_at, terms)));
                                }
                                Touched::LeaseExpired => (ServiceError::LeaseExpired, "lease_expired"),
                                Touched::Absent => (ServiceError::NotActivated, "not_activated"),
                            }
                        }
                        Err(Unusable::Revoked) => (ServiceError::Unusable(Unusable::Revoked), "revoked"),
                        Err(Unusable::Suspended) => (ServiceError::Unusable(Unusable::Suspended), "suspended"),
                        Err(Unusable::Expired) => (ServiceError::Unusable(Unusable::Expired), "expired"),
                    };
                    // The refusal (and any culling) is committed with its event; the caller gets the refusal.
                    tx.append_event(&ctx.event(license.id, EventKind::Refreshed, Some(&fp), outcome(why))).await?;
                    Ok(Err(refusal))
                })
            })
            .await;
        let refreshed = self.after_screening(refreshed, Some(&fingerprint), "refresh", ctx).await;
        let (license, machines_used, lease_expires_at, terms) = refreshed??;
        let machine =
            Signed { fingerprint: &fingerprint, at: ctx.at(), machines_used, new_machine: false, lease_expires_at };
        sign(&ring, &terms, license, &machine, TokenKind::Online)
    }

    /// Deactivates this machine, freeing its slot, with its `deactivated` event. Returns the license and the machines
    /// still active.
    pub async fn deactivate(
        &self,
        key: &str,
        fingerprint: &str,
        ctx: &Context,
    ) -> Result<(License, u32), ServiceError> {
        let key = LicenseKey::parse(key)?;
        check_fingerprint_size(fingerprint)?;
        let (fp, unit_ctx, defaults, rules) =
            (fingerprint.to_string(), ctx.clone(), self.policy, self.screen(ctx, "deactivate").await?);
        let done = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    let ctx = unit_ctx;
                    let license = found(tx.license(Lookup::Key(key.as_str())).await?, &fp)?;
                    rules.admit(&license, &ctx)?;
                    let fingerprint = bound_fingerprint(&license, &fp)?;
                    let terms = terms_in(tx, &license, defaults).await?;
                    cull_license(tx, &license, &terms, CulledBy::Deactivation, &ctx).await?;
                    if !tx.remove_machine(license.id, &fingerprint).await? {
                        return Err(ServiceError::NotActivated);
                    }
                    // Over the limit, the error rolls the removal back: nothing changes.
                    count_deactivation(tx, &license, &terms, ctx.at()).await?;
                    let used = tx.count_machines(license.id).await?;
                    let event =
                        ctx.event(license.id, EventKind::Deactivated, Some(&fingerprint), serde_json::json!({}));
                    tx.append_event(&event).await?;
                    Ok((license, used))
                })
            })
            .await;
        self.after_screening(done, Some(fingerprint), "deactivate", ctx).await
    }
}

/// The license a unit read, or why not: a fingerprint no license of either kind could take is answered as the
/// invalid field it is (as before domain licenses), else the license is not found.
fn found(license: Option<License>, fingerprint: &str) -> Result<License, ServiceError> {
    license.ok_or_else(|| unusable_fingerprint(fingerprint).unwrap_or(ServiceError::LicenseNotFound))
}

/// Why no license of either kind could take `fingerprint`: neither a machine fingerprint nor a domain.
fn unusable_fingerprint(fingerprint: &str) -> Option<ServiceError> {
    match check_fingerprint(fingerprint) {
        Err(invalid) if verifier::Domain::parse(fingerprint).is_err() => Some(invalid),
        _ => None,
    }
}

/// What an activation's unit decided: the token is signed from it.
struct UnitActivated {
    license: License,
    /// As stored and signed: a domain license's binding.
    fingerprint: String,
    machines_used: u32,
    new_machine: bool,
    lease_expires_at: Option<OffsetDateTime>,
    terms: Terms,
    /// The offline token, signed inside the unit.
    signed: Option<Issued>,
}

/// The machine a token is signed for, as the unit left it.
struct Signed<'a> {
    fingerprint: &'a str,
    /// The time of issue.
    at: OffsetDateTime,
    machines_used: u32,
    new_machine: bool,
    /// The machine's lease as stored (it never moves earlier, and is none for a machine holding an offline token).
    lease_expires_at: Option<OffsetDateTime>,
}

/// Signs a token of `kind` for `license` on `machine`, timed by `terms`. With a lease, an online token asks for a
/// refresh by half the lease (whole seconds, as tokens carry them) and never outlives the stored lease.
fn sign(
    ring: &Arc<KeyRing>,
    terms: &Terms,
    license: License,
    machine: &Signed<'_>,
    kind: TokenKind,
) -> Result<Issued, ServiceError> {
    let at = machine.at;
    let lease_expires_at = match kind {
        TokenKind::Online => machine.lease_expires_at,
        TokenKind::Offline => None,
    };
    let (refresh_after, token_expires_at) = match kind {
        TokenKind::Online => {
            let mut refresh_after = at + terms.timing.refresh_interval;
            let mut token_expires_at = refresh_after + terms.timing.offline_grace;
            if let (Some(lease), Some(end)) = (terms.lease, lease_expires_at) {
                refresh_after = refresh_after.min(at + Duration::seconds(lease.whole_seconds() / 2));
                token_expires_at = token_expires_at.min(end);
            }
            (Some(refresh_after), Some(token_expires_at))
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
        fingerprint: machine.fingerprint.to_string(),
        issued_at: at,
        license_expires_at: license.expires_at,
        refresh_after,
        token_expires_at,
    };
    let certificate = ring.signing_certificate(at, Some(&license.product))?.map(ToString::to_string);
    let token = ring.sign(&claims)?;
    let overage = terms.in_overage(license.max_machines, machine.machines_used);
    Ok(Issued {
        token,
        claims,
        refresh_after,
        token_expires_at,
        license,
        machines_used: machine.machines_used,
        new_machine: machine.new_machine,
        overage,
        lease_expires_at,
        certificate,
    })
}
