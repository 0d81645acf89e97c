//! What the store tells `GET /metrics` (docs/operations.md, "Metrics"): [`Measured`] times every store call of the
//! service by operation, whichever the backend; each backend adds its own through [`Store::register_metrics`]
//! (connection pool state, and SQLite's write batches, [`BatchMetrics`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AdminToken, BestPresence, DailyUsage, Delivery, Event, EventFilter, IpRule, IpUsage, License, LicenseFilter,
    LicensePage, Machine, MachineCheck, NewEvent, Policy, RecordedKey, Store, StoreError, WebhookEndpoint, Work,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// Store calls take from tens of microseconds (a cached read) to seconds (a write waiting on a busy disk).
fn latency_histogram() -> Histogram {
    // 20 µs to about 5 s.
    Histogram::new(exponential_buckets(0.00002, 2.0, 19))
}

/// A store that times each call into `issuer_store_operation_duration_seconds{operation}` and otherwise is the
/// store it wraps. A unit of work (`run`) is timed whole: on SQLite that includes waiting for its batch to commit.
pub struct Measured {
    inner: Arc<dyn Store>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Measured").finish_non_exhaustive()
    }
}

impl Measured {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn Store>) -> Arc<dyn Store> {
        let latency = Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        Arc::new(Measured { inner, latency })
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        self.latency.get_or_create(&OperationLabels { operation }).observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl Store for Measured {
    async fn run(&self, work: Work) -> Result<(), StoreError> {
        self.timed("run", self.inner.run(work)).await
    }

    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        self.timed("append_event", self.inner.append_event(event)).await
    }

    async fn license_by_id(&self, id: Uuid) -> Result<Option<License>, StoreError> {
        self.timed("license_by_id", self.inner.license_by_id(id)).await
    }

    async fn license_by_key(&self, key: &str) -> Result<Option<License>, StoreError> {
        self.timed("license_by_key", self.inner.license_by_key(key)).await
    }

    async fn license_for_machine(
        &self,
        key: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<MachineCheck>, StoreError> {
        self.timed("license_for_machine", self.inner.license_for_machine(key, fingerprint, now)).await
    }

    async fn policy(&self, name: &str) -> Result<Option<Policy>, StoreError> {
        self.timed("policy", self.inner.policy(name)).await
    }

    async fn list_policies(&self) -> Result<Vec<Policy>, StoreError> {
        self.timed("list_policies", self.inner.list_policies()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn list_licenses(&self, filter: &LicenseFilter) -> Result<LicensePage, StoreError> {
        self.timed("list_licenses", self.inner.list_licenses(filter)).await
    }

    async fn machine(&self, license_id: Uuid, fingerprint: &str) -> Result<Option<Machine>, StoreError> {
        self.timed("machine", self.inner.machine(license_id, fingerprint)).await
    }

    async fn count_machines(&self, license_id: Uuid) -> Result<u32, StoreError> {
        self.timed("count_machines", self.inner.count_machines(license_id)).await
    }

    async fn list_machines(&self, license_id: Uuid) -> Result<Vec<Machine>, StoreError> {
        self.timed("list_machines", self.inner.list_machines(license_id)).await
    }

    async fn list_events(&self, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.timed("list_events", self.inner.list_events(license_id, after, limit)).await
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        self.timed("events", self.inner.events(filter)).await
    }

    async fn admin_token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<AdminToken>, StoreError> {
        self.timed("admin_token_by_hash", self.inner.admin_token_by_hash(hash)).await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        self.timed("list_admin_tokens", self.inner.list_admin_tokens()).await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.timed("list_webhooks", self.inner.list_webhooks()).await
    }

    async fn webhook(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.timed("webhook", self.inner.webhook(id)).await
    }

    async fn list_deliveries(&self, endpoint_id: Uuid, after: i64, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        self.timed("list_deliveries", self.inner.list_deliveries(endpoint_id, after, limit)).await
    }

    async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        self.timed("pending_deliveries", self.inner.pending_deliveries()).await
    }

    async fn has_due_deliveries(&self, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.timed("has_due_deliveries", self.inner.has_due_deliveries(now)).await
    }

    async fn ip_rules(&self) -> Result<Vec<IpRule>, StoreError> {
        self.timed("ip_rules", self.inner.ip_rules()).await
    }

    async fn ip_rules_version(&self) -> Result<i64, StoreError> {
        self.timed("ip_rules_version", self.inner.ip_rules_version()).await
    }

    async fn license_ips(&self, license_id: Uuid) -> Result<Vec<IpUsage>, StoreError> {
        self.timed("license_ips", self.inner.license_ips(license_id)).await
    }

    async fn license_usage(
        &self,
        license_id: Uuid,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<DailyUsage>, StoreError> {
        self.timed("license_usage", self.inner.license_usage(license_id, from, to)).await
    }

    async fn machine_presence(
        &self,
        license_id: Uuid,
        fingerprints: &[String],
        now: OffsetDateTime,
    ) -> Result<BestPresence, StoreError> {
        self.timed("machine_presence", self.inner.machine_presence(license_id, fingerprints, now)).await
    }

    async fn recorded_keys(&self) -> Result<Vec<RecordedKey>, StoreError> {
        self.timed("recorded_keys", self.inner.recorded_keys()).await
    }

    async fn revoked_licenses(&self) -> Result<Vec<Uuid>, StoreError> {
        self.timed("revoked_licenses", self.inner.revoked_licenses()).await
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "store_operation_duration_seconds",
            "Time of a store call, by operation (a unit of work, `run`, until its commit)",
            self.latency.clone(),
        );
        self.inner.register_metrics(registry);
    }
}

/// SQLite's write batches: how many writes each commit carried and how long the batch transaction took.
#[derive(Clone, Debug)]
pub(super) struct BatchMetrics {
    pub(super) size: Histogram,
    pub(super) seconds: Histogram,
}

impl Default for BatchMetrics {
    fn default() -> Self {
        // 1 to 256 (the largest batch).
        BatchMetrics { size: Histogram::new(exponential_buckets(1.0, 2.0, 9)), seconds: latency_histogram() }
    }
}

impl BatchMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register("store_write_batch_size", "Writes committed in one SQLite transaction", self.size.clone());
        registry.register(
            "store_write_batch_duration_seconds",
            "Time of one SQLite write batch, from BEGIN to the end of COMMIT",
            self.seconds.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
    state: &'static str,
}

/// `issuer_store_pool_connections{pool, state}`: the open connections of the backend's pools (by name), idle or in
/// use, read at each scrape.
#[derive(Debug)]
pub(super) struct PoolGauges<DB: sqlx::Database> {
    pub(super) pools: Vec<(&'static str, sqlx::Pool<DB>)>,
}

impl<DB: sqlx::Database> Collector for PoolGauges<DB> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "store_pool_connections",
            "Open connections of a store pool, idle or in use",
            None,
            MetricType::Gauge,
        )?;
        for (pool, connections) in &self.pools {
            let open = i64::from(connections.size());
            let idle = i64::try_from(connections.num_idle()).unwrap_or(i64::MAX).min(open);
            for (state, value) in [("idle", idle), ("in_use", open - idle)] {
                ConstGauge::new(value).encode(family.encode_family(&PoolLabels { pool, state })?)?;
            }
        }
        Ok(())
    }
}
