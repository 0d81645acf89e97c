//! One primitive of the unit of work, run as a unit of its own: the store operations as the cases below call them.
//! The service never writes this way (each of its operations is one unit with its event); the cases test what each
//! primitive does, and `units` tests what a unit of several does.

use std::sync::Arc;

use async_trait::async_trait;
use issuer::{
    Activated, Created, Idempotency, License, LicenseStatus, LicenseUpdate, NewEvent, Redeemed, Store, StoreError,
    StoreExt as _,
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
    /// [`issuer::Tx::touch_machine`].
    async fn touch_machine(&self, license_id: Uuid, fingerprint: &str, at: OffsetDateTime) -> Result<bool, StoreError>;
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
    /// [`issuer::Tx::add_admin_token`].
    async fn add_admin_token(&self, hash: &[u8; 32], label: &str, at: OffsetDateTime) -> Result<(), StoreError>;
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
            Box::pin(
                async move { tx.activate_machine(license_id, &fp, name.as_deref(), platform.as_deref(), at).await },
            )
        })
        .await
    }

    async fn touch_machine(&self, license_id: Uuid, fingerprint: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let fp = fingerprint.to_string();
        self.transact(move |tx| Box::pin(async move { tx.touch_machine(license_id, &fp, at).await })).await
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

    async fn add_admin_token(&self, hash: &[u8; 32], label: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let (hash, label) = (*hash, label.to_string());
        self.transact(move |tx| Box::pin(async move { tx.add_admin_token(&hash, &label, at).await })).await
    }
}
