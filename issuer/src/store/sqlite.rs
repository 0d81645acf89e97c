//! The SQLite backend: one database file, WAL journal, `synchronous=NORMAL` (a committed write survives a crash of
//! the process), foreign keys on.
//!
//! Writes go through one writer task with its own connection that commits them in batches (group commit): each batch
//! is one `BEGIN IMMEDIATE` transaction, and a write's caller gets its result only after the batch committed, so an
//! acknowledged write is durable while a thousand concurrent writers cost a handful of commits instead of a thousand.
//! `BEGIN IMMEDIATE` takes SQLite's write lock up front, so the slot limit's count-and-insert sees no other writer in
//! between, whichever process writes. Reads use a pool of connections. A checkpointer task copies the WAL into the
//! database file beside the writer; memory-mapping the file was measured slower (every growth of the file remaps it
//! in every connection).

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    event_kind_from_str, Activated, Created, Event, Idempotency, License, LicenseFilter, LicensePage, LicenseStatus,
    LicenseUpdate, Machine, NewEvent, Redeemed, Store, StoreError,
};

/// Migrations in order: (version, SQL). Applied at start-up; `schema_version` records those applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_offline.sql")),
];

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// The SQLite implementation of [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    /// Connections for reads.
    pool: SqlitePool,
    /// The queue of the writer task, which owns the only write connection.
    writes: mpsc::Sender<Box<dyn WriteJob>>,
    /// Dropped with the store, which stops the checkpointer task.
    _stop_checkpoints: oneshot::Sender<()>,
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies committed WAL frames into the database file every [`CHECKPOINT_EVERY`] (a PASSIVE checkpoint: it never
/// waits for, nor blocks, the writer or readers), until `stop` resolves.
async fn checkpointer(pool: SqlitePool, mut stop: oneshot::Receiver<()>, backfilled: Arc<AtomicBool>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            // The writer finishes the checkpoint after its next batch (see `writer`).
            Ok(_) => backfilled.store(true, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
        }
    }
}

/// What the writer does with a settled write: sends its result, or the commit's failure.
type Reply = Box<dyn FnOnce(Option<String>) + Send>;

/// A queued write: runs on the writer's connection inside the batch transaction.
trait WriteJob: Send {
    /// Whether the job writes more than once and must be undone as a whole when it fails (a savepoint).
    fn atomic(&self) -> bool;
    /// Runs the job; returns whether it succeeded and how to reply once the batch's fate is known.
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, (bool, Reply)>;
    /// Replies with a failure without running (the batch could not start).
    fn fail(self: Box<Self>, error: String);
}

struct Job<F, T> {
    atomic: bool,
    f: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> WriteJob for Job<F, T>
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    fn atomic(&self) -> bool {
        self.atomic
    }

    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, (bool, Reply)> {
        let Job { f, reply, .. } = *self;
        Box::pin(async move {
            let result = f(conn).await;
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit_error: Option<String>| {
                let _ = reply.send(match (commit_error, result) {
                    (Some(e), Ok(_)) => Err(StoreError::CommitFailed(e)),
                    (_, result) => result,
                });
            });
            (ok, reply)
        })
    }

    fn fail(self: Box<Self>, error: String) {
        let _ = self.reply.send(Err(StoreError::CommitFailed(error)));
    }
}

/// The writer task: takes every queued write (up to [`MAX_BATCH`]), runs them in one transaction, commits, replies.
async fn writer(pool: SqlitePool, mut queue: mpsc::Receiver<Box<dyn WriteJob>>, backfilled: Arc<AtomicBool>) {
    let mut jobs: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                jobs.drain(..).for_each(|job| job.fail(e.to_string()));
                continue;
            }
        };
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            jobs.drain(..).for_each(|job| job.fail(e.to_string()));
            continue;
        }
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            if job.atomic() {
                if let Err(e) = sqlx::query("SAVEPOINT job").execute(&mut *conn).await {
                    job.fail(e.to_string());
                    continue;
                }
                let (ok, reply) = job.run(&mut conn).await;
                if !ok {
                    if let Err(e) = sqlx::query("ROLLBACK TO job").execute(&mut *conn).await {
                        tracing::error!(error = %e, "cannot roll a failed write back to its savepoint");
                    }
                }
                if let Err(e) = sqlx::query("RELEASE job").execute(&mut *conn).await {
                    tracing::error!(error = %e, "cannot release a savepoint");
                }
                replies.push(reply);
            } else {
                // One statement: SQLite undoes a failed statement by itself.
                let (_, reply) = job.run(&mut conn).await;
                replies.push(reply);
            }
        }
        let commit_error = match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => None,
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Some(e.to_string())
            }
        };
        for reply in replies {
            reply(commit_error.clone());
        }
        // The checkpointer copied the WAL up to some frame while this task kept appending, so its checkpoint never
        // covers the whole WAL and SQLite would never start the WAL over: it would grow without bound under steady
        // writes. Here no write can come in between, and only the frames since the checkpointer's pass are left to
        // copy, so this completes the checkpoint cheaply and the next transaction restarts the WAL from its start.
        if backfilled.swap(false, Ordering::Relaxed) {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut *conn).await {
                tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
            }
        }
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        SqliteStore::with_options(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens a `sqlite:` URL (e.g. `sqlite:///var/lib/issuer/issuer.db` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl("an SQLite URL starts with sqlite:".into()));
        }
        let options = SqliteConnectOptions::from_str(url)?;
        SqliteStore::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The writer never checkpoints: an automatic checkpoint would run inside a commit and stall every queued
        // write for milliseconds (it was the whole p99 tail); the checkpointer task does it beside the writer.
        // After the WAL starts over, it is truncated back to 64 MiB so a burst does not keep its disk space forever.
        let writer_options = options.clone().pragma("wal_autocheckpoint", "0").pragma("journal_size_limit", "67108864");
        let writer_pool =
            SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(writer_options).await?;
        migrate(&writer_pool).await?;
        let pool = SqlitePoolOptions::new().max_connections(8).min_connections(1).connect_with(options).await?;
        let (writes, queue) = mpsc::channel(4 * MAX_BATCH);
        let backfilled = Arc::new(AtomicBool::new(false));
        tokio::spawn(writer(writer_pool, queue, backfilled.clone()));
        let (stop_checkpoints, stop) = oneshot::channel();
        tokio::spawn(checkpointer(pool.clone(), stop, backfilled));
        Ok(SqliteStore { pool, writes, _stop_checkpoints: stop_checkpoints })
    }

    /// Queues a write for the writer task and waits until its batch committed. `atomic` jobs (several writes) run
    /// in a savepoint so a failure undoes them whole.
    async fn write<T, F>(&self, atomic: bool, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job { atomic, f, reply });
        self.writes.send(job).await.map_err(|_| StoreError::CommitFailed("the writer task has stopped".into()))?;
        result.await.map_err(|_| StoreError::CommitFailed("the writer task dropped the write".into()))?
    }

    async fn license_where(&self, column: &str, value: &str) -> Result<Option<License>, StoreError> {
        let sql = format!("SELECT * FROM licenses WHERE {column} = ?1");
        let row = sqlx::query(&sql).bind(value).fetch_optional(&self.pool).await?;
        row.as_ref().map(license_from_row).transpose()
    }

    async fn count(&self, license_id: &str) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = ?1")
            .bind(license_id)
            .fetch_one(&self.pool)
            .await?;
        u32::try_from(n).map_err(|_| StoreError::Corrupt("machine count out of range".into()))
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetch_one(pool).await?;
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let run = async {
            let mut tx = pool.begin().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)")
                .bind(version)
                .bind(OffsetDateTime::now_utc().unix_timestamp())
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        run.await.map_err(|source| StoreError::Migration { version, source })?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

/// A machine of a license, as the write helpers take it.
struct MachineRef {
    license_id: String,
    fingerprint: String,
}

impl MachineRef {
    fn new(license_id: Uuid, fingerprint: &str) -> Self {
        MachineRef { license_id: license_id.to_string(), fingerprint: fingerprint.to_string() }
    }
}

/// Activates a machine; run inside the writer's transaction, which holds the write lock, so the count and the
/// insert see no other writer in between.
async fn activate_on(
    conn: &mut SqliteConnection,
    m: &MachineRef,
    name: &Option<String>,
    platform: &Option<String>,
    at: OffsetDateTime,
) -> Result<Activated, StoreError> {
    // An active fingerprint: refresh it, no slot used.
    let existing = sqlx::query(
        "UPDATE machines SET last_seen_at = ?1, name = COALESCE(?2, name), platform = COALESCE(?3, platform) \
         WHERE license_id = ?4 AND fingerprint = ?5",
    )
    .bind(secs(at))
    .bind(name)
    .bind(platform)
    .bind(&m.license_id)
    .bind(&m.fingerprint)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let inserted = !existing
        && sqlx::query(
            "INSERT INTO machines (license_id, fingerprint, name, platform, activated_at, last_seen_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?5 FROM licenses \
             WHERE id = ?1 AND (SELECT COUNT(*) FROM machines WHERE license_id = ?1) < max_machines",
        )
        .bind(&m.license_id)
        .bind(&m.fingerprint)
        .bind(name)
        .bind(platform)
        .bind(secs(at))
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
    let row = sqlx::query(
        "SELECT l.id IS NOT NULL AS found, (SELECT COUNT(*) FROM machines WHERE license_id = ?1) AS used, mm.* \
         FROM (SELECT ?1 AS lid) q LEFT JOIN licenses l ON l.id = q.lid \
         LEFT JOIN machines mm ON mm.license_id = q.lid AND mm.fingerprint = ?2",
    )
    .bind(&m.license_id)
    .bind(&m.fingerprint)
    .fetch_one(&mut *conn)
    .await?;
    if !row.try_get::<bool, _>("found")? {
        return Ok(Activated::NoLicense);
    }
    let machines_used = count_from(row.try_get("used")?)?;
    if !(existing || inserted) {
        return Ok(Activated::NoSlotLeft { machines_used });
    }
    let machine = machine_from_row(&row)?;
    Ok(if inserted {
        Activated::New { machine, machines_used }
    } else {
        Activated::Existing { machine, machines_used }
    })
}

async fn touch_on(conn: &mut SqliteConnection, m: &MachineRef, at: OffsetDateTime) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE machines SET last_seen_at = ?1 WHERE license_id = ?2 AND fingerprint = ?3")
        .bind(secs(at))
        .bind(&m.license_id)
        .bind(&m.fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

async fn remove_on(conn: &mut SqliteConnection, m: &MachineRef) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM machines WHERE license_id = ?1 AND fingerprint = ?2")
        .bind(&m.license_id)
        .bind(&m.fingerprint)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

async fn count_on(conn: &mut SqliteConnection, license_id: &str) -> Result<u32, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE license_id = ?1")
        .bind(license_id)
        .fetch_one(&mut *conn)
        .await?;
    count_from(n)
}

async fn insert_event(conn: &mut SqliteConnection, event: &NewEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (license_id, kind, at, fingerprint, client_ip, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(event.license_id.to_string())
    .bind(event.kind.as_str())
    .bind(secs(event.at))
    .bind(&event.fingerprint)
    .bind(&event.client_ip)
    .bind(json_text(&event.detail)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn count_from(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt("machine count out of range".into()))
}

fn secs(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn time_from(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| StoreError::Corrupt(format!("time {secs} out of range")))
}

fn uuid_from(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| StoreError::Corrupt(format!("bad id `{text}`")))
}

fn license_from_row(row: &SqliteRow) -> Result<License, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("license {what}"));
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let entitlements: String = row.try_get("entitlements")?;
    let metadata: String = row.try_get("metadata")?;
    let max_machines: i64 = row.try_get("max_machines")?;
    Ok(License {
        id: uuid_from(&id)?,
        key: row.try_get("license_key")?,
        email: row.try_get("email")?,
        product: row.try_get("product")?,
        max_machines: u32::try_from(max_machines).map_err(|_| corrupt("max_machines"))?,
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(time_from).transpose()?,
        entitlements: serde_json::from_str(&entitlements).map_err(|_| corrupt("entitlements"))?,
        metadata: serde_json::from_str(&metadata).map_err(|_| corrupt("metadata"))?,
        status: status.parse().map_err(|_| corrupt("status"))?,
        created_at: time_from(row.try_get("created_at")?)?,
        updated_at: time_from(row.try_get("updated_at")?)?,
    })
}

fn machine_from_row(row: &SqliteRow) -> Result<Machine, StoreError> {
    let license_id: String = row.try_get("license_id")?;
    Ok(Machine {
        license_id: uuid_from(&license_id)?,
        fingerprint: row.try_get("fingerprint")?,
        name: row.try_get("name")?,
        platform: row.try_get("platform")?,
        activated_at: time_from(row.try_get("activated_at")?)?,
        last_seen_at: time_from(row.try_get("last_seen_at")?)?,
        offline: row.try_get::<Option<String>, _>("offline_proof")?.is_some(),
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    let license_id: String = row.try_get("license_id")?;
    let kind: String = row.try_get("kind")?;
    let detail: String = row.try_get("detail")?;
    Ok(Event {
        id: row.try_get("id")?,
        event: NewEvent {
            license_id: uuid_from(&license_id)?,
            kind: event_kind_from_str(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind `{kind}`")))?,
            at: time_from(row.try_get("at")?)?,
            fingerprint: row.try_get("fingerprint")?,
            client_ip: row.try_get("client_ip")?,
            detail: serde_json::from_str(&detail).map_err(|_| StoreError::Corrupt("event detail".into()))?,
        },
    })
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_license(
        &self,
        license: &License,
        idempotency: Option<&Idempotency>,
    ) -> Result<Created, StoreError> {
        let license = license.clone();
        let idempotency = idempotency.cloned();
        let entitlements = json_text(&license.entitlements)?;
        let metadata = json_text(&license.metadata)?;
        self.write(true, move |conn| {
            Box::pin(async move {
                let id = license.id.to_string();
                if let Some(idem) = &idempotency {
                    // A replay or a conflict is decided before anything is written.
                    let row =
                        sqlx::query("SELECT request_hash, license_id FROM idempotency_keys WHERE idempotency_key = ?1")
                            .bind(&idem.key)
                            .fetch_optional(&mut *conn)
                            .await?;
                    if let Some(row) = row {
                        let hash: String = row.try_get("request_hash")?;
                        if hash != idem.request_hash {
                            return Err(StoreError::IdempotencyConflict);
                        }
                        let first: String = row.try_get("license_id")?;
                        let found = sqlx::query("SELECT * FROM licenses WHERE id = ?1")
                            .bind(&first)
                            .fetch_optional(&mut *conn)
                            .await?;
                        return match found {
                            Some(row) => Ok(Created::Replayed(license_from_row(&row)?)),
                            None => Err(StoreError::Corrupt("idempotency key names a missing license".into())),
                        };
                    }
                }
                let inserted = sqlx::query(
                    "INSERT INTO licenses (id, license_key, email, product, max_machines, expires_at, entitlements, \
                     metadata, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .bind(&id)
                .bind(&license.key)
                .bind(&license.email)
                .bind(&license.product)
                .bind(i64::from(license.max_machines))
                .bind(license.expires_at.map(secs))
                .bind(entitlements)
                .bind(metadata)
                .bind(license.status.as_str())
                .bind(secs(license.created_at))
                .bind(secs(license.updated_at))
                .execute(&mut *conn)
                .await;
                match inserted {
                    Err(e) if is_unique_violation(&e) => return Err(StoreError::Duplicate),
                    other => other?,
                };
                if let Some(idem) = &idempotency {
                    sqlx::query(
                        "INSERT INTO idempotency_keys (idempotency_key, request_hash, license_id, created_at) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .bind(&idem.key)
                    .bind(&idem.request_hash)
                    .bind(&id)
                    .bind(secs(license.created_at))
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(Created::New(license))
            })
        })
        .await
    }

    async fn license_by_id(&self, id: Uuid) -> Result<Option<License>, StoreError> {
        self.license_where("id", &id.to_string()).await
    }

    async fn license_by_key(&self, key: &str) -> Result<Option<License>, StoreError> {
        self.license_where("license_key", key).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn license_for_machine(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<(License, u32, bool)>, StoreError> {
        let row = sqlx::query(
            "SELECT l.*, (SELECT COUNT(*) FROM machines m WHERE m.license_id = l.id) AS machines_used, \
             EXISTS (SELECT 1 FROM machines m WHERE m.license_id = l.id AND m.fingerprint = ?2) AS machine_active \
             FROM licenses l WHERE l.license_key = ?1",
        )
        .bind(key)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let used = count_from(row.try_get("machines_used")?)?;
        Ok(Some((license_from_row(&row)?, used, row.try_get("machine_active")?)))
    }

    async fn list_licenses(&self, filter: &LicenseFilter) -> Result<LicensePage, StoreError> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM licenses WHERE 1 = 1");
        if let Some(email) = &filter.email {
            q.push(" AND email = ").push_bind(email.clone()).push(" COLLATE NOCASE");
        }
        if let Some(product) = &filter.product {
            q.push(" AND product = ").push_bind(product.clone());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(after) = filter.after {
            let (t, id) = (secs(after.created_at), after.id.to_string());
            q.push(" AND (created_at > ").push_bind(t);
            q.push(" OR (created_at = ").push_bind(t).push(" AND id > ").push_bind(id).push("))");
        }
        // One extra row tells whether another page follows.
        q.push(" ORDER BY created_at, id LIMIT ").push_bind(i64::from(filter.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let licenses = rows.iter().map(license_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(LicensePage::from_overfetched(licenses, filter.limit))
    }

    async fn update_license(
        &self,
        id: Uuid,
        update: &LicenseUpdate,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE licenses SET updated_at = ");
        q.push_bind(secs(at));
        if let Some(n) = update.max_machines {
            q.push(", max_machines = ").push_bind(i64::from(n));
        }
        if let Some(expires) = update.expires_at {
            q.push(", expires_at = ").push_bind(expires.map(secs));
        }
        if let Some(e) = &update.entitlements {
            q.push(", entitlements = ").push_bind(json_text(e)?);
        }
        if let Some(m) = &update.metadata {
            q.push(", metadata = ").push_bind(json_text(m)?);
        }
        q.push(" WHERE id = ").push_bind(id.to_string()).push(" RETURNING *");
        self.write(false, move |conn| {
            Box::pin(
                async move { q.build().fetch_optional(&mut *conn).await?.as_ref().map(license_from_row).transpose() },
            )
        })
        .await
    }

    async fn set_status(
        &self,
        id: Uuid,
        status: LicenseStatus,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError> {
        self.write(false, move |conn| {
            Box::pin(async move {
                sqlx::query("UPDATE licenses SET status = ?1, updated_at = ?2 WHERE id = ?3 RETURNING *")
                    .bind(status.as_str())
                    .bind(secs(at))
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await?
                    .as_ref()
                    .map(license_from_row)
                    .transpose()
            })
        })
        .await
    }

    async fn activate_machine(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Activated, StoreError> {
        let m = MachineRef::new(license_id, fingerprint);
        let (name, platform) = (name.map(str::to_string), platform.map(str::to_string));
        self.write(false, move |conn| Box::pin(async move { activate_on(conn, &m, &name, &platform, at).await })).await
    }

    async fn activate_machine_logged(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        name: Option<&str>,
        platform: Option<&str>,
        event: &NewEvent,
    ) -> Result<Activated, StoreError> {
        let m = MachineRef::new(license_id, fingerprint);
        let (name, platform, event) = (name.map(str::to_string), platform.map(str::to_string), event.clone());
        self.write(true, move |conn| {
            Box::pin(async move {
                let activated = activate_on(conn, &m, &name, &platform, event.at).await?;
                if let Some(event) = super::activation_event(&event, &activated) {
                    insert_event(conn, &event).await?;
                }
                Ok(activated)
            })
        })
        .await
    }

    async fn touch_machine(&self, license_id: Uuid, fingerprint: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let m = MachineRef::new(license_id, fingerprint);
        self.write(false, move |conn| Box::pin(async move { touch_on(conn, &m, at).await })).await
    }

    async fn touch_machine_logged(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        event: &NewEvent,
    ) -> Result<Option<u32>, StoreError> {
        let (m, event) = (MachineRef::new(license_id, fingerprint), event.clone());
        self.write(true, move |conn| {
            Box::pin(async move {
                if !touch_on(conn, &m, event.at).await? {
                    return Ok(None);
                }
                insert_event(conn, &event).await?;
                Ok(Some(count_on(conn, &m.license_id).await?))
            })
        })
        .await
    }

    async fn set_offline_proof(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        proof: &[u8; 16],
    ) -> Result<bool, StoreError> {
        let (fingerprint, proof) = (fingerprint.to_string(), hex(proof));
        self.write(false, move |conn| {
            Box::pin(async move {
                let n =
                    sqlx::query("UPDATE machines SET offline_proof = ?1 WHERE license_id = ?2 AND fingerprint = ?3")
                        .bind(&proof)
                        .bind(license_id.to_string())
                        .bind(&fingerprint)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                Ok(n == 1)
            })
        })
        .await
    }

    async fn redeem_deactivation(
        &self,
        license_id: Uuid,
        proof: &[u8; 16],
        at: OffsetDateTime,
    ) -> Result<Redeemed, StoreError> {
        let proof = hex(proof);
        self.write(true, move |conn| {
            Box::pin(async move {
                let id = license_id.to_string();
                let freed: Option<String> = sqlx::query_scalar(
                    "DELETE FROM machines WHERE license_id = ?1 AND offline_proof = ?2 RETURNING fingerprint",
                )
                .bind(&id)
                .bind(&proof)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(fingerprint) = freed else {
                    let row = sqlx::query(
                        "SELECT fingerprint, redeemed_at FROM redeemed_deactivations \
                         WHERE proof = ?1 AND license_id = ?2",
                    )
                    .bind(&proof)
                    .bind(&id)
                    .fetch_optional(&mut *conn)
                    .await?;
                    return match row {
                        Some(row) => Ok(Redeemed::AlreadyRedeemed {
                            fingerprint: row.try_get("fingerprint")?,
                            redeemed_at: time_from(row.try_get("redeemed_at")?)?,
                        }),
                        None => Ok(Redeemed::NoMatch),
                    };
                };
                sqlx::query(
                    "INSERT INTO redeemed_deactivations (proof, license_id, fingerprint, redeemed_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .bind(&proof)
                .bind(&id)
                .bind(&fingerprint)
                .bind(secs(at))
                .execute(&mut *conn)
                .await?;
                Ok(Redeemed::Freed { fingerprint, machines_used: count_on(conn, &id).await? })
            })
        })
        .await
    }

    async fn remove_machine(&self, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError> {
        let m = MachineRef::new(license_id, fingerprint);
        self.write(false, move |conn| Box::pin(async move { remove_on(conn, &m).await })).await
    }

    async fn remove_machine_logged(
        &self,
        license_id: Uuid,
        fingerprint: &str,
        event: &NewEvent,
    ) -> Result<Option<u32>, StoreError> {
        let (m, event) = (MachineRef::new(license_id, fingerprint), event.clone());
        self.write(true, move |conn| {
            Box::pin(async move {
                if !remove_on(conn, &m).await? {
                    return Ok(None);
                }
                insert_event(conn, &event).await?;
                Ok(Some(count_on(conn, &m.license_id).await?))
            })
        })
        .await
    }

    async fn machine(&self, license_id: Uuid, fingerprint: &str) -> Result<Option<Machine>, StoreError> {
        let row = sqlx::query("SELECT * FROM machines WHERE license_id = ?1 AND fingerprint = ?2")
            .bind(license_id.to_string())
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(machine_from_row).transpose()
    }

    async fn count_machines(&self, license_id: Uuid) -> Result<u32, StoreError> {
        self.count(&license_id.to_string()).await
    }

    async fn list_machines(&self, license_id: Uuid) -> Result<Vec<Machine>, StoreError> {
        let rows = sqlx::query("SELECT * FROM machines WHERE license_id = ?1 ORDER BY activated_at, fingerprint")
            .bind(license_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(machine_from_row).collect()
    }

    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.write(false, move |conn| Box::pin(async move { insert_event(conn, &event).await })).await
    }

    async fn list_events(&self, license_id: Uuid, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query("SELECT * FROM events WHERE license_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
            .bind(license_id.to_string())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn add_admin_token(&self, hash: &[u8; 32], label: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let (hash, label) = (hex(hash), label.to_string());
        self.write(false, move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO admin_tokens (token_hash, label, created_at) VALUES (?1, ?2, ?3)")
                    .bind(&hash)
                    .bind(&label)
                    .bind(secs(at))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn admin_token_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let hashes: Vec<String> =
            sqlx::query_scalar("SELECT token_hash FROM admin_tokens").fetch_all(&self.pool).await?;
        hashes.iter().map(|h| unhex(h).ok_or_else(|| StoreError::Corrupt("admin token hash".into()))).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// SQLite-only behaviour. What every backend must do is the store conformance suite
/// (`tests/src/conformance.rs`, run against this backend by `tests/tests/store_conformance.rs`).
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap()
    }

    fn license(max_machines: u32) -> License {
        License {
            id: Uuid::now_v7(),
            key: crate::LicenseKey::generate().unwrap().to_string(),
            email: "ada@example.com".into(),
            product: "acme-cad".into(),
            max_machines,
            expires_at: None,
            entitlements: vec!["pro".into()],
            metadata: serde_json::Map::new(),
            status: LicenseStatus::Active,
            created_at: now(),
            updated_at: now(),
        }
    }

    #[tokio::test]
    async fn in_memory_database_is_one_database_for_writer_and_readers() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let l = license(1);
        store.create_license(&l, None).await.unwrap();
        assert_eq!(store.license_by_id(l.id).await.unwrap(), Some(l));
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_does_not_rerun_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuer.db");
        let l = license(1);
        SqliteStore::open(&path).await.unwrap().create_license(&l, None).await.unwrap();
        let reopened = SqliteStore::open(&path).await.unwrap();
        assert_eq!(reopened.license_by_id(l.id).await.unwrap(), Some(l));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slot_limit_holds_across_two_stores_on_one_file() {
        // Two pools, each with its own in-process write queue: only SQLite's write lock keeps the slot limit, as
        // it would between two processes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuer.db");
        let a = Arc::new(SqliteStore::open(&path).await.unwrap());
        let b = Arc::new(SqliteStore::open(&path).await.unwrap());
        for round in 0..3 {
            let l = license(3);
            a.create_license(&l, None).await.unwrap();
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                    tokio::spawn(async move { store.activate_machine(l.id, &format!("m{i}"), None, None, now()).await })
                })
                .collect();
            let mut new = 0;
            for t in tasks {
                if let Activated::New { .. } = t.await.unwrap().unwrap() {
                    new += 1;
                }
            }
            assert_eq!(new, 3, "round {round}");
            assert_eq!(b.count_machines(l.id).await.unwrap(), 3, "round {round}");
        }
    }
}
