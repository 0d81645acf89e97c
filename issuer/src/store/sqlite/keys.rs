//! The signing keys the store records in SQLite: the public halves of the ring every instance signs with.

use sqlx::{Executor, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;

use super::secs;
use crate::store::{RecordKeys, RecordedKey, StoreError};

/// Records `keys`; with [`RecordKeys::First`] only into an empty table (the writer holds the write lock, so no other
/// process records in between).
pub(super) async fn record(
    conn: &mut SqliteConnection,
    keys: &[RecordedKey],
    how: &RecordKeys,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    if !how.allows(&list(&mut *conn).await?, keys) {
        return Ok(false);
    }
    let active = RecordedKey::signing(keys).map(|k| k.key_id.clone()).unwrap_or_default();
    // The one-active index is checked per statement: retire the old active key before marking the new one.
    sqlx::query("UPDATE signing_keys SET status = 'retired' WHERE status = 'active' AND key_id <> ?1")
        .bind(&active)
        .execute(&mut *conn)
        .await?;
    for key in keys.iter().filter(|k| !k.active).chain(keys.iter().filter(|k| k.active)) {
        sqlx::query(
            "INSERT INTO signing_keys (key_id, public_key, status, recorded_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key_id) DO UPDATE SET status = excluded.status",
        )
        .bind(&key.key_id)
        .bind(&key.public_key)
        .bind(if key.active { "active" } else { "retired" })
        .bind(secs(at))
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

pub(super) async fn list<'e, E>(db: E) -> Result<Vec<RecordedKey>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query(
        "SELECT key_id, public_key, status FROM signing_keys ORDER BY status = 'active' DESC, recorded_at, key_id",
    )
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            Ok(RecordedKey {
                key_id: row.try_get("key_id")?,
                public_key: row.try_get("public_key")?,
                active: status == "active",
            })
        })
        .collect()
}
