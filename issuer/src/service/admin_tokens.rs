//! Admin API tokens: created with a label and a scope, listed without their secrets, revoked; and the check every
//! admin request passes ([`Licensing::authenticate`]). The store keeps only SHA-256 hashes; `ISSUER_ADMIN_TOKEN`
//! is a write-scoped token of the environment, never stored, so only the environment can take it away.

use subtle::ConstantTimeEq;
use time::Duration;

use super::checks::{new_admin_token, token_hash};
use super::error::invalid;
use super::{Context, Licensing, ServiceError};
use crate::store::{Actor, AdminToken, EventKind, Scope, StoreExt as _};

/// The id and label of `ISSUER_ADMIN_TOKEN` in the audit log.
const ENV_TOKEN_ID: &str = "env";
const ENV_TOKEN_LABEL: &str = "ISSUER_ADMIN_TOKEN";

/// How stale a token's recorded last use may get before a request records it again: one write per token per
/// minute at most, not one per request.
const LAST_USE_RESOLUTION: Duration = Duration::minutes(1);

/// Longest label accepted.
const MAX_LABEL_LEN: usize = 100;

/// Who an accepted admin token belongs to and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The actor the audit log records (an [`Actor::AdminToken`]).
    pub actor: Actor,
    /// What the token may do.
    pub scope: Scope,
}

impl Licensing {
    /// The caller `token` authenticates, or `None` when it is not an accepted admin token (unknown or revoked).
    pub async fn authenticate(&self, token: &str) -> Result<Option<Caller>, ServiceError> {
        let hash = token_hash(token);
        if let Some(extra) = &self.extra_admin_hash {
            if bool::from(extra.ct_eq(&hash)) {
                let actor = Actor::AdminToken { id: ENV_TOKEN_ID.into(), label: ENV_TOKEN_LABEL.into() };
                return Ok(Some(Caller { actor, scope: Scope::Write }));
            }
        }
        // Looked up by the hash: timing can tell at most how much of a hash matched, never of the token.
        let Some(stored) = self.store.admin_token_by_hash(&hash).await? else { return Ok(None) };
        if stored.revoked_at.is_some() {
            return Ok(None);
        }
        let now = self.now();
        if stored.last_used_at.is_none_or(|t| t + LAST_USE_RESOLUTION <= now) {
            let (id, at) = (stored.id.clone(), now.replace_nanosecond(0).unwrap_or(now));
            // Best effort: a request is never refused because its last use could not be recorded.
            if let Err(e) =
                self.store.transact(move |tx| Box::pin(async move { tx.touch_admin_token(&id, at).await })).await
            {
                tracing::warn!(error = %e, "cannot record an admin token's last use");
            }
        }
        Ok(Some(Caller { actor: Actor::AdminToken { id: stored.id, label: stored.label }, scope: stored.scope }))
    }

    /// Creates an admin token; returns it as stored and its secret (shown once: the store keeps only its hash).
    pub async fn create_admin_token(
        &self,
        label: &str,
        scope: Scope,
        ctx: &Context,
    ) -> Result<(AdminToken, String), ServiceError> {
        let label = label.trim();
        if label.is_empty() || label.chars().count() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
            return Err(invalid("label", format!("must be 1-{MAX_LABEL_LEN} characters without control characters")));
        }
        let (token, hash, secret) = new_token(label, scope, ctx)?;
        let (stored, event) = (token.clone(), ctx.event(None, EventKind::AdminTokenCreated, None, token_data(&token)));
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    tx.insert_admin_token(&hash, &stored).await?;
                    tx.append_event(&event).await
                })
            })
            .await?;
        Ok((token, secret))
    }

    /// Creates the first admin token (write scope) if the store has none, decided in the store (of instances
    /// starting at once on one empty database, exactly one gets `Some`); `None` when a token existed.
    pub async fn create_first_admin_token(&self, label: &str) -> Result<Option<String>, ServiceError> {
        let ctx = self.system_context();
        let (token, hash, secret) = new_token(label, Scope::Write, &ctx)?;
        let event = ctx.event(None, EventKind::AdminTokenCreated, None, token_data(&token));
        let stored = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    let stored = tx.add_first_admin_token(&hash, &token).await?;
                    if stored {
                        tx.append_event(&event).await?;
                    }
                    Ok::<_, crate::store::StoreError>(stored)
                })
            })
            .await?;
        Ok(stored.then_some(secret))
    }

    /// Every stored admin token (revoked ones too), by creation time (whole seconds), then id.
    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, ServiceError> {
        Ok(self.store.list_admin_tokens().await?)
    }

    /// Revokes the admin token with this id: every request with it is refused from now on, on every instance.
    /// Revoking a revoked token changes nothing (and records nothing). The token as it is now.
    pub async fn revoke_admin_token(&self, id: &str, ctx: &Context) -> Result<AdminToken, ServiceError> {
        let (id, ctx) = (id.to_string(), ctx.clone());
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let before = tx.revoke_admin_token(&id, ctx.at()).await?.ok_or(ServiceError::AdminTokenNotFound)?;
                    if before.revoked_at.is_some() {
                        return Ok(before);
                    }
                    let token = AdminToken { revoked_at: Some(ctx.at()), ..before };
                    tx.append_event(&ctx.event(None, EventKind::AdminTokenRevoked, None, token_data(&token))).await?;
                    Ok(token)
                })
            })
            .await
    }
}

/// A new token made at `ctx`'s time: as stored, its hash, and its secret.
fn new_token(label: &str, scope: Scope, ctx: &Context) -> Result<(AdminToken, [u8; 32], String), ServiceError> {
    let secret = new_admin_token()?;
    let hash = token_hash(&secret);
    let token = AdminToken {
        id: AdminToken::id_of(&hash),
        label: label.to_string(),
        scope,
        created_at: ctx.at(),
        last_used_at: None,
        revoked_at: None,
    };
    Ok((token, hash, secret))
}

/// The `data` of admin token events: never the secret or its hash.
fn token_data(token: &AdminToken) -> serde_json::Value {
    serde_json::json!({ "admin_token": crate::views::AdminTokenView::from(token.clone()) })
}
