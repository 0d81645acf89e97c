//! The issuer as a separate process: `issuer serve` (the binary built next to the tests, [`crate::issuer_binary`]) on
//! 127.0.0.1 port 0, with a data directory and environment of the test's choosing, for what only a real process
//! shows: kill -9, a signal, two processes on one database.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

/// A running `issuer serve`; killed (SIGKILL) when dropped.
pub struct Served {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The admin token it printed (a first start on an empty store), if any.
    pub admin_token: Option<String>,
    /// The process.
    pub child: tokio::process::Child,
}

/// Starts `issuer serve` on `data_dir` with `env` (besides `ISSUER_DATA_DIR` and no rate limit; the test's own
/// `ISSUER_ADMIN_TOKEN` and `ISSUER_DATABASE_URL` are not passed on unless `env` gives them) and waits until it
/// listens.
pub async fn spawn_serve(binary: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Served {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ISSUER_DATA_DIR", data_dir)
        .env("ISSUER_RATE_LIMIT_PER_SECOND", "0")
        .env_remove("ISSUER_ADMIN_TOKEN")
        .env_remove("ISSUER_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin_token = None;
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(token) = line.strip_prefix("admin token: ") {
                admin_token = Some(token.trim().to_string());
            }
            if let Some(addr) = line.strip_prefix("issuer listening on http://") {
                return format!("http://{}", addr.trim());
            }
        }
        panic!("issuer exited before listening");
    };
    let base = tokio::time::timeout(Duration::from_secs(60), read).await.expect("issuer did not start in 60 s");
    // Keep reading stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Served { base, admin_token, child }
}
