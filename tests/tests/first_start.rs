//! Several `issuer serve` and `issuer init` processes started at the same moment on an empty data directory (SQLite,
//! and PostgreSQL with an empty database): they must end with one key ring, each migration applied once, one first
//! admin token printed once, and every process either serving with that ring or exiting non-zero with a clear
//! message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use e2e_tests::{issuer_binary, pg};
use serde_json::Value;
use sqlx::Connection as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

const ROUNDS: usize = 20;
const SERVERS: usize = 3;
const INITS: usize = 2;

fn command(binary: &Path, data_dir: &Path, database_url: Option<&str>, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args)
        .env("ISSUER_DATA_DIR", data_dir)
        .env("ISSUER_LOG", "warn")
        .env_remove("ISSUER_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match database_url {
        Some(url) => cmd.env("ISSUER_DATABASE_URL", url),
        None => cmd.env_remove("ISSUER_DATABASE_URL"),
    };
    cmd
}

/// What one round saw.
struct Round {
    admin_tokens: usize,
    serving_keys: Vec<String>,
    inits_ok: usize,
}

async fn round(binary: &Path, data_dir: &Path, database_url: Option<&str>, n: usize) -> Round {
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(command(binary, data_dir, database_url, &["serve", "--listen", "127.0.0.1:0"]).spawn().unwrap());
    }
    let mut inits = Vec::new();
    for _ in 0..INITS {
        inits.push(command(binary, data_dir, database_url, &["init"]).spawn().unwrap());
    }
    let mut admin_tokens = 0;
    let mut bases = Vec::new();
    let mut children = Vec::new();
    for mut child in servers {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("admin token: ") {
                    admin_tokens += 1;
                }
                if let Some(addr) = line.strip_prefix("issuer listening on http://") {
                    return Some(format!("http://{}", addr.trim()));
                }
            }
            None
        })
        .await
        .expect("started or exited within 60 s");
        match listening {
            Some(base) => bases.push(base),
            None => {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
                panic!("round {n}: a serve process exited instead of serving: {err}");
            }
        }
        children.push(child);
    }
    let mut inits_ok = 0;
    for child in inits {
        let out = child.wait_with_output().await.unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        admin_tokens += stdout.lines().filter(|l| l.starts_with("admin token: ")).count();
        if out.status.success() {
            inits_ok += 1;
        } else {
            assert_eq!(out.status.code(), Some(1), "round {n}: {stderr}");
            assert!(stderr.contains("is already initialized"), "round {n}: a clear message, not {stderr}");
        }
    }
    let client = reqwest::Client::new();
    let mut serving_keys = Vec::new();
    for base in &bases {
        let keys: Value = client.get(format!("{base}/v1/keys")).send().await.unwrap().json().await.unwrap();
        let active = keys["keys"].as_array().unwrap().iter().find(|k| k["status"] == "active").unwrap();
        serving_keys.push(active["key_id"].as_str().unwrap().to_string());
    }
    drop(children);
    Round { admin_tokens, serving_keys, inits_ok }
}

/// The active key id in the data directory's ring manifest.
fn ring_key(data_dir: &Path) -> String {
    let manifest = std::fs::read_to_string(data_dir.join("keys/ring.txt")).unwrap();
    let active: Vec<&str> = manifest.lines().filter(|l| l.starts_with("active ")).collect();
    assert_eq!(active.len(), 1, "{manifest}");
    active[0].split_whitespace().nth(1).unwrap().to_string()
}

fn check(n: usize, seen: &Round, data_dir: &Path) {
    assert_eq!(seen.admin_tokens, 1, "round {n}: the first admin token is printed exactly once");
    let key = ring_key(data_dir);
    assert!(
        seen.serving_keys.iter().all(|k| *k == key),
        "round {n}: {:?} serve, the ring has {key}",
        seen.serving_keys
    );
    assert!(seen.inits_ok <= 1, "round {n}: at most one init initializes");
    let keys = std::fs::read_dir(data_dir.join("keys")).unwrap().filter_map(Result::ok).count();
    assert_eq!(keys, 3, "round {n}: one key (ring.txt, the .key and its .pub)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_on_an_empty_sqlite_data_directory_share_one_ring_and_one_token() {
    let Some(binary) = issuer_binary() else {
        assert!(!pg::ci(), "the issuer binary is not built next to this test");
        return;
    };
    let mut inits_ok = 0;
    for n in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let seen = round(&binary, &data, None, n).await;
        check(n, &seen, &data);
        inits_ok += seen.inits_ok;
        let url = format!("sqlite://{}", data.join("issuer.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(versions, e2e_tests::migration_versions("sqlite"), "round {n}: each migration applied once");
    }
    println!("SQLite: {ROUNDS} rounds of {SERVERS} serve + {INITS} init processes clean; an init won {inits_ok} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_on_an_empty_postgres_database_share_one_ring_and_one_token() {
    let Some(binary) = issuer_binary() else {
        assert!(!pg::ci(), "the issuer binary is not built next to this test");
        return;
    };
    for n in 0..ROUNDS {
        let Some(db) = pg::test_database(&format!("first_start_{n}")).await else { return };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let seen = round(&binary, &data, Some(db.url()), n).await;
        check(n, &seen, &data);
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(versions, e2e_tests::migration_versions("postgres"), "round {n}: each migration applied once");
        let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens").fetch_one(&mut conn).await.unwrap();
        assert_eq!(tokens, 1, "round {n}: one first admin token stored");
    }
    println!("PostgreSQL: {ROUNDS} rounds of {SERVERS} serve + {INITS} init processes clean");
}

/// Instances with separate data directories starting together on one empty PostgreSQL database: one records its key
/// ring and serves; every other one exits non-zero saying to copy that ring, and keeps no key of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_separate_data_directories_on_one_empty_database_end_with_one_ring() {
    let Some(binary) = issuer_binary() else {
        assert!(!pg::ci(), "the issuer binary is not built next to this test");
        return;
    };
    const ROUNDS_HERE: usize = 10;
    for n in 0..ROUNDS_HERE {
        let Some(db) = pg::test_database(&format!("separate_dirs_{n}")).await else { return };
        let dirs: Vec<tempfile::TempDir> = (0..SERVERS).map(|_| tempfile::tempdir().unwrap()).collect();
        let data: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("data")).collect();
        let children: Vec<_> = data
            .iter()
            .map(|d| command(&binary, d, Some(db.url()), &["serve", "--listen", "127.0.0.1:0"]).spawn().unwrap())
            .collect();
        let (mut serving, mut refused, mut keep) = (Vec::new(), 0, Vec::new());
        for (i, mut child) in children.into_iter().enumerate() {
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut listening = false;
            while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
                if line.starts_with("issuer listening on") {
                    listening = true;
                    break;
                }
            }
            if listening {
                serving.push(i);
                keep.push(child);
            } else {
                let out = child.wait_with_output().await.unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "round {n}: {stderr}");
                assert!(stderr.contains("copy the keys/ directory"), "round {n}: {stderr}");
                assert!(!data[i].join("keys/ring.txt").exists(), "round {n}: the refused instance kept no key");
                refused += 1;
            }
        }
        assert_eq!((serving.len(), refused), (1, SERVERS - 1), "round {n}");
        let served_key = ring_key(&data[serving[0]]);
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let recorded: String = sqlx::query_scalar("SELECT key_id FROM signing_keys WHERE status = 'active'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(recorded, served_key, "round {n}: the store records the serving instance's key");
        drop(keep);
    }
    println!("PostgreSQL, separate data directories: {ROUNDS_HERE} rounds, one instance serving, the others refused");
}
