//! `issuer backup --out FILE`: a consistent copy of the SQLite store while `serve` runs on the same data directory
//! (docs/operations.md, "Backups"). The key ring is files: back up `keys/` beside it.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use super::{load_config, CliError, CliResult, GlobalArgs};
use crate::store::BackupError;

pub(crate) async fn run(global: &GlobalArgs, out_file: &Path, json: bool, out: &mut dyn Write) -> CliResult {
    let config = load_config(global, None)?;
    let url = config.database_url.as_ref().map(|u| u.expose());
    if url.is_some_and(crate::is_postgres_url) {
        return Err(CliError::Failed(
            "the store is PostgreSQL: back it up with pg_dump (docs/operations.md, \"Backups\")".into(),
        ));
    }
    let database = config.sqlite_file().ok_or_else(|| {
        CliError::Usage(format!("cannot back up the database URL's file: {}", url.unwrap_or_default()))
    })?;
    let started = Instant::now();
    let done = crate::backup_sqlite(&database, out_file).await.map_err(|e| match e {
        BackupError::Exists(_) => CliError::Usage(e.to_string()),
        other => CliError::Failed(format!("no backup was made: {other}")),
    })?;
    let millis = started.elapsed().as_millis();
    if json {
        let value = serde_json::json!({
            "path": done.path.display().to_string(),
            "bytes": done.bytes,
            "integrity": done.integrity,
            "millis": millis,
        });
        return super::write_json(out, &value);
    }
    writeln!(
        out,
        "Backed up {} to {} ({} bytes, integrity {}) in {millis} ms. Back up the key ring ({}) too.",
        database.display(),
        done.path.display(),
        done.bytes,
        done.integrity,
        config.data_dir.join(crate::KEYS_DIR).display()
    )?;
    Ok(())
}
