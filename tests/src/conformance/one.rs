//! One primitive of the unit of work, run as a unit of its own: the store operations as the cases below call them.
//! The service never writes this way (each of its operations is one unit with its event); the cases test what each
//! primitive does, and `units` tests what a unit of several does.

use std::sync::Arc;

use async_trait::async_trait;
use issuer::{
    Activated, Created, Culled, Idempotency, License, LicenseStatus, LicenseUpdate, NewEvent, NewMachine, Policy,
    PolicyDeleted, Redeemed, Store, StoreError, StoreExt as _, Touched,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// Each primitive of [`issuer::Tx`] as its own unit of work.
#[async_trait]
pub trait OneUnit {
    /// [`issuer::Tx::insert_license`].
    async fn create_license(&self, license: &License, idem: Option<&Idempotency>) -> Result<Created, StoreError>;
    /// [`issuer::Tx::update_license`].
    async fn update_license(
        &self,
        id: Uuid,
        update: &LicenseUpdate,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError>;
    /// [`issuer::Tx::change_status`].
    async fn change_status(
        &self,
        id: Uuid,
        from: LicenseStatus,
        to: LicenseStatus,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError>;
    /// [`issuer::Tx::activate_machine`].
    async fn activate_machine(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Activated, StoreError>;
    /// [`issuer::Tx::activate_machine`] with a lease and an overage.
    async fn activate_leased(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        at: OffsetDateTime,
        lease_expires_at: Option<OffsetDateTime>,
        overage: u32,
    ) -> Result<Activated, StoreError>;
    /// [`issuer::Tx::touch_machine`] without a lease: whether the machine was active.
    async fn touch_machine(&self, license_id: Uuid, fingerprint: &str, at: OffsetDateTime) -> Result<bool, StoreError>;
    /// [`issuer::Tx::touch_machine`].
    async fn touch_leased(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        at: OffsetDateTime,
        lease_expires_at: Option<OffsetDateTime>,
    ) -> Result<Touched, StoreError>;
    /// [`issuer::Tx::cull_machines`].
    async fn cull_machines(&self, license_id: Uuid, now: OffsetDateTime) -> Result<Vec<Culled>, StoreError>;
    /// [`issuer::Tx::cull_expired_leases`].
    async fn cull_expired_leases(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Culled>, StoreError>;
    /// [`issuer::Tx::record_deactivation`].
    async fn record_deactivation(&self, license_id: Uuid, at: OffsetDateTime) -> Result<(), StoreError>;
    /// [`issuer::Tx::prune_deactivations`].
    async fn prune_deactivations(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// [`issuer::Tx::deactivations_since`].
    async fn deactivations_since(
        &self,
        license_id: Uuid,
        since: OffsetDateTime,
    ) -> Result<Vec<OffsetDateTime>, StoreError>;
    /// [`issuer::Tx::insert_policy`].
    async fn insert_policy(&self, policy: &Policy) -> Result<(), StoreError>;
    /// [`issuer::Tx::update_policy`].
    async fn update_policy(&self, policy: &Policy) -> Result<bool, StoreError>;
    /// [`issuer::Tx::delete_policy`].
    async fn delete_policy(&self, name: &str) -> Result<PolicyDeleted, StoreError>;
    /// [`issuer::Tx::remove_machine`].
    async fn remove_machine(&self, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError>;
    /// [`issuer::Tx::set_offline_proof`].
    async fn set_offline_proof(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        proof: &[u8; 16],
    ) -> Result<bool, StoreError>;
    /// [`issuer::Tx::redeem_deactivation`].
    async fn redeem_deactivation(
        &self,
        license_id: Uuid,
        proof: &[u8; 16],
        at: OffsetDateTime,
    ) -> Result<Redeemed, StoreError>;
    /// [`issuer::Tx::append_event`] inside a unit (not [`Store::append_event`]).
    async fn append_event_in_unit(&self, event: &NewEvent) -> Result<(), StoreError>;
    /// [`issuer::Tx::insert_admin_token`].
    async fn insert_admin_token(&self, hash: &[u8; 32], token: &issuer::AdminToken) -> Result<(), StoreError>;
}

#[async_trait]
impl OneUnit for Arc<dyn Store> {
    async fn create_license(&self, license: &License, idem: Option<&Idempotency>) -> Result<Created, StoreError> {
        let (license, idem) = (license.clone(), idem.cloned());
        self.transact(move |tx| Box::pin(async move { tx.insert_license(&license, idem.as_ref()).await })).await
    }

    async fn update_license(
        &self,
        id: Uuid,
        update: &LicenseUpdate,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError> {
        let update = update.clone();
        self.transact(move |tx| Box::pin(async move { tx.update_license(id, &update, at).await })).await
    }

    async fn change_status(
        &self,
        id: Uuid,
        from: LicenseStatus,
        to: LicenseStatus,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError> {
        self.transact(move |tx| Box::pin(async move { tx.change_status(id, from, to, at).await })).await
    }

    async fn activate_machine(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Activated, StoreError> {
        let (fp, name, platform) = (fingerprint.to_string(), name.map(str::to_string), platform.map(str::to_string));
        self.transact(move |tx| {
            Box::pin(async move {
                let m = NewMachine {
                    fingerprint: &fp,
                    name: name.as_deref(),
                    platform: platform.as_deref(),
                    at,
                    lease_expires_at: None,
                };
                tx.activate_machine(license_id, &m, 0).await
            })
        })
        .await
    }

    async fn activate_leased(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        at: OffsetDateTime,
        lease_expires_at: Option<OffsetDateTime>,
        overage: u32,
    ) -> Result<Activated, StoreError> {
        let fp = fingerprint.to_string();
        self.transact(move |tx| {
            Box::pin(async move {
                let m = NewMachine { fingerprint: &fp, name: None, platform: None, at, lease_expires_at };
                tx.activate_machine(license_id, &m, overage).await
            })
        })
        .await
    }

    async fn touch_machine(&self, license_id: Uuid, fingerprint: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        Ok(matches!(self.touch_leased(license_id, fingerprint, at, None).await?, Touched::Active { .. }))
    }

    async fn touch_leased(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        at: OffsetDateTime,
        lease_expires_at: Option<OffsetDateTime>,
    ) -> Result<Touched, StoreError> {
        let fp = fingerprint.to_string();
        self.transact(move |tx| Box::pin(async move { tx.touch_machine(license_id, &fp, at, lease_expires_at).await }))
            .await
    }

    async fn cull_machines(&self, license_id: Uuid, now: OffsetDateTime) -> Result<Vec<Culled>, StoreError> {
        self.transact(move |tx| Box::pin(async move { tx.cull_machines(license_id, now).await })).await
    }

    async fn cull_expired_leases(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Culled>, StoreError> {
        self.transact(move |tx| Box::pin(async move { tx.cull_expired_leases(now, limit).await })).await
    }

    async fn record_deactivation(&self, license_id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
        self.transact(move |tx| Box::pin(async move { tx.record_deactivation(license_id, at).await })).await
    }

    async fn prune_deactivations(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.transact(move |tx| Box::pin(async move { tx.prune_deactivations(before, limit).await })).await
    }

    async fn deactivations_since(
        &self,
        license_id: Uuid,
        since: OffsetDateTime,
    ) -> Result<Vec<OffsetDateTime>, StoreError> {
        self.transact(move |tx| Box::pin(async move { tx.deactivations_since(license_id, since).await })).await
    }

    async fn insert_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        let policy = policy.clone();
        self.transact(move |tx| Box::pin(async move { tx.insert_policy(&policy).await })).await
    }

    async fn update_policy(&self, policy: &Policy) -> Result<bool, StoreError> {
        let policy = policy.clone();
        self.transact(move |tx| Box::pin(async move { tx.update_policy(&policy).await })).await
    }

    async fn delete_policy(&self, name: &str) -> Result<PolicyDeleted, StoreError> {
        let name = name.to_string();
        self.transact(move |tx| Box::pin(async move { tx.delete_policy(&name).await })).await
    }

    async fn remove_machine(&self, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError> {
        let fp = fingerprint.to_string();
        self.transact(move |tx| Box::pin(async move { tx.remove_machine(license_id, &fp).await })).await
    }

    async fn set_offline_proof(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        proof: &[u8; 16],
    ) -> Result<bool, StoreError> {
        let (fp, proof) = (fingerprint.to_string(), *proof);
        self.transact(move |tx| Box::pin(async move { tx.set_offline_proof(license_id, &fp, &proof).await })).await
    }

    async fn redeem_deactivation(
        &self,
        license_id: Uuid,
        proof: &[u8; 16],
        at: OffsetDateTime,
    ) -> Result<Redeemed, StoreError> {
        let proof = *proof;
        self.transact(move |tx| Box::pin(async move { tx.redeem_deactivation(license_id, &proof, at).await })).await
    }

    async fn append_event_in_unit(&self, event: &NewEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.transact(move |tx| Box::pin(async move { tx.append_event(&event).await })).await
    }

    async fn insert_admin_token(&self, hash: &[u8; 32], token: &issuer::AdminToken) -> Result<(), StoreError> {
        let (hash, token) = (*hash, token.clone());
        self.transact(move |tx| Box::pin(async move { tx.insert_admin_token(&hash, &token).await })).await
    }
}
