//! The issuer under test: the real binary, started as a user would, and the figures only the OS can give.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Why the issuer could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The binary could not be started.
    #[error("cannot start {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It exited or closed its output before saying where it listens.
    #[error("the issuer did not report a listening address (exit: {0})")]
    NoAddress(String),
    /// It did not answer /healthz in time.
    #[error("the issuer did not become ready within {0:?}")]
    NotReady(Duration),
}

/// A running `issuer serve`; killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Time from spawning the process to the first successful `/healthz`.
    pub ready: Duration,
}

impl Server {
    /// Starts `bin serve` on a free loopback port with the data directory (and database URL), rate limit off.
    pub async fn start(bin: &Path, data_dir: &Path, database_url: Option<&str>) -> Result<Server, ServerError> {
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir);
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        // The documented switch: the benchmark is one client IP sending far more than any real client.
        cmd.env("ISSUER_RATE_LIMIT_PER_SECOND", "0").env("ISSUER_LOG", "warn");
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null()).kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = cmd.spawn().map_err(|source| ServerError::Spawn { bin: bin.display().to_string(), source })?;
        let stdout = child.stdout.take().ok_or_else(|| ServerError::NoAddress("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some(addr) = line.strip_prefix("issuer listening on http://") {
                        if let Ok(addr) = addr.trim().parse() {
                            break addr;
                        }
                    }
                }
                _ => {
                    let status = child.try_wait().ok().flatten().map(|s| s.to_string()).unwrap_or_default();
                    return Err(ServerError::NoAddress(status));
                }
            }
        };
        // Keep draining stdout so the issuer never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let limit = Duration::from_secs(30);
        while spawned.elapsed() < limit {
            if healthz(addr).await {
                return Ok(Server { child, addr, ready: spawned.elapsed() });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(ServerError::NotReady(limit))
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident set size so far in KiB (`VmHWM` of /proc/PID/status), where the OS reports it.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Stops the issuer (SIGKILL; the benchmark does not measure shutdown).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn healthz(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return false };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    response.starts_with(b"HTTP/1.1 200")
}
