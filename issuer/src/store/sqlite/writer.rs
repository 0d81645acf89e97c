//! The group-commit writer: one task owns the only write connection and commits queued writes in batches, each batch
//! one `BEGIN IMMEDIATE` transaction, each write (a unit of work) in its own savepoint, so one failing write is undone
//! alone while the rest of its batch commits. A checkpointer task beside it copies the WAL into the database file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::SqlitePool;
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::store::metrics::BatchMetrics;
use crate::store::StoreError;

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

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

/// The handle of the writer task and its checkpointer; dropping it stops both once the queued writes are done.
#[derive(Debug)]
pub(super) struct Writer {
    /// The queue of the writer task, which owns the only write connection.
    queue: mpsc::Sender<Box<dyn WriteJob>>,
    /// Dropped with the store, which stops the checkpointer task.
    _stop_checkpoints: oneshot::Sender<()>,
}

impl Writer {
    /// Starts the writer on `writer_pool` (one connection, no automatic checkpoints) and the checkpointer on `pool`.
    pub(super) fn start(writer_pool: SqlitePool, pool: SqlitePool, metrics: BatchMetrics) -> Writer {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let backfilled = Arc::new(AtomicBool::new(false));
        tokio::spawn(writer(writer_pool, jobs, backfilled.clone(), metrics));
        let (stop_checkpoints, stop) = oneshot::channel();
        tokio::spawn(checkpointer(pool, stop, backfilled));
        Writer { queue, _stop_checkpoints: stop_checkpoints }
    }

    /// Queues a write and waits until its batch committed. An `atomic` job (a unit of work: several writes, or a
    /// result that asks to roll back) runs in a savepoint, so its failure undoes it whole and nothing else.
    pub(super) async fn write<T, F>(&self, atomic: bool, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job { atomic, f, reply });
        self.queue.send(job).await.map_err(|_| StoreError::CommitFailed("the writer task has stopped".into()))?;
        result.await.map_err(|_| StoreError::CommitFailed("the writer task dropped the write".into()))?
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
async fn writer(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<Box<dyn WriteJob>>,
    backfilled: Arc<AtomicBool>,
    metrics: BatchMetrics,
) {
    let mut jobs: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let batch = queue.recv_many(&mut jobs, MAX_BATCH).await;
        if batch == 0 {
            break;
        }
        let started = std::time::Instant::now();
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                jobs.drain(..).for_each(|job| job.fail(e.to_string()));
                continue;
            }
        };
        // `batch` marks the transaction itself: when SQLite rolls a whole transaction back on its own (disk full,
        // I/O error), the savepoint is gone with it, which is how a lost batch is told from a failed statement.
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE; SAVEPOINT batch").execute(&mut *conn).await {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            jobs.drain(..).for_each(|job| job.fail(e.to_string()));
            continue;
        }
        let mut replies = Vec::with_capacity(jobs.len());
        let mut lost: Option<String> = None;
        let mut queued = jobs.drain(..);
        for job in queued.by_ref() {
            if job.atomic() {
                if let Err(e) = sqlx::query("SAVEPOINT job").execute(&mut *conn).await {
                    lost = Some(e.to_string());
                    job.fail(e.to_string());
                    break;
                }
                let (ok, reply) = job.run(&mut conn).await;
                replies.push(reply);
                let undo = if ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                if let Err(e) = sqlx::query(undo).execute(&mut *conn).await {
                    lost = Some(format!("the batch transaction was lost: {e}"));
                    break;
                }
            } else {
                // One statement: SQLite undoes a failed statement by itself, unless the failure rolled back the
                // whole transaction.
                let (ok, reply) = job.run(&mut conn).await;
                replies.push(reply);
                if !ok {
                    if let Err(e) = sqlx::query("RELEASE batch; SAVEPOINT batch").execute(&mut *conn).await {
                        lost = Some(format!("the batch transaction was lost: {e}"));
                        break;
                    }
                }
            }
        }
        let commit_error = match lost {
            Some(reason) => {
                // Nothing of this batch is committed: every write in it is answered as failed, none runs after.
                tracing::error!(error = %reason, "a write batch was rolled back as a whole");
                queued.for_each(|job| job.fail(reason.clone()));
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Some(reason)
            }
            None => {
                drop(queued);
                match sqlx::query("COMMIT").execute(&mut *conn).await {
                    Ok(_) => None,
                    Err(e) => {
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                        Some(e.to_string())
                    }
                }
            }
        };
        metrics.size.observe(batch as f64);
        metrics.seconds.observe(started.elapsed().as_secs_f64());
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
