//! Air-gapped machines: activation from an `ACT1-` request (an offline token, no token expiry, refused where the
//! license's policy does not allow it) and the one-time redemption of a `DEA1-` deactivation code (counted by the
//! policy's deactivation limit), each one unit of work with its event.

use uuid::Uuid;
use verifier::{ActivationRequest, DeactivationCode, TokenKind};

use super::policies::{count_deactivation, terms_in};
use super::{Context, Issued, LicenseRef, Licensing, ServiceError};
use crate::license_key::LicenseKey;
use crate::store::{EventKind, License, Lookup, Redeemed, StoreExt as _};

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

impl Licensing {
    /// Air-gapped activation: turns an [`ActivationRequest`] (made offline by the app) into an offline token,
    /// recording the activation exactly as an online one (slot limit, events with `"offline": true`).
    /// Re-activating a machine that is already active uses no slot, and its earlier offline token's deactivation
    /// code stops matching (only the newest token can free the slot).
    pub async fn activate_offline(&self, request: &ActivationRequest, ctx: &Context) -> Result<Issued, ServiceError> {
        let key = LicenseKey::parse(&request.license_key)?;
        let name = Some(request.machine_name.trim()).filter(|n| !n.is_empty());
        self.activate_license(&LicenseRef::Key(key), &request.fingerprint, name, None, TokenKind::Offline, ctx).await
    }

    /// Redeems an offline [`DeactivationCode`]: removes the machine holding the token it proves, freeing its slot,
    /// with a `deactivated` event. A code frees one slot once ([`ServiceError::AlreadyRedeemed`] afterwards) and only
    /// on its own license ([`ServiceError::UnknownDeactivationCode`]).
    pub async fn redeem_deactivation(
        &self,
        code: &DeactivationCode,
        ctx: &Context,
    ) -> Result<OfflineDeactivated, ServiceError> {
        let (license_id, proof, unit_ctx) = (Uuid::from_bytes(code.license_id.0), code.proof, ctx.clone());
        let (defaults, screen) = (self.policy, self.screen(ctx, "offline_deactivate").await?);
        let done = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    let ctx = unit_ctx;
                    let license =
                        tx.license(Lookup::Id(license_id)).await?.ok_or(ServiceError::UnknownDeactivationCode)?;
                    screen.admit(&license, &ctx)?;
                    let terms = terms_in(tx, &license, defaults).await?;
                    match tx.redeem_deactivation(license.id, &proof, ctx.at()).await? {
                        Redeemed::Freed { fingerprint, machines_used } => {
                            // Over the limit, the error rolls the redemption back: the code can be redeemed later.
                            count_deactivation(tx, &license, &terms, ctx.at()).await?;
                            let detail = serde_json::json!({ "offline": true, "machines_used": machines_used });
                            let event = ctx.event(license.id, EventKind::Deactivated, Some(&fingerprint), detail);
                            tx.append_event(&event).await?;
                            Ok(OfflineDeactivated { license, fingerprint, machines_used })
                        }
                        Redeemed::AlreadyRedeemed { fingerprint, redeemed_at } => {
                            Err(ServiceError::AlreadyRedeemed { fingerprint, redeemed_at })
                        }
                        Redeemed::NoMatch => Err(ServiceError::UnknownDeactivationCode),
                    }
                })
            })
            .await;
        self.after_screening(done, None, "offline_deactivate", ctx).await
    }
}
