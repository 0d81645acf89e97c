//! `issuer backup` while a service takes activations on the same data directory: the copy passes
//! `integrity_check`, opens as a store, and holds every activation acknowledged before the backup began.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::cli;
use e2e_tests::server::{s, Server, NO_LIMIT, PRODUCT};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{ConnectOptions as _, Connection as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_holds_every_activation_acknowledged_before_it_began() {
    let server = Server::start(NO_LIMIT).await;
    let license =
        server.create_license(json!({ "email": "a@example.com", "product": PRODUCT, "max_machines": 100000 })).await;
    let (id, key) = (s(&license["id"]).to_string(), s(&license["key"]).to_string());
    let acknowledged: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..16 {
        let (client, base, key) = (server.client.clone(), server.base.clone(), key.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let fingerprint = format!("w{w}-{n}");
                n += 1;
                let body = json!({ "key": key, "fingerprint": fingerprint });
                let resp = client.post(format!("{base}/v1/activate")).json(&body).send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                // Acknowledged once the answer is read.
                acknowledged.lock().unwrap().push((fingerprint, Instant::now()));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir = server.data_dir();
    let file = dir.parent().unwrap().join("backup.db");
    let began = Instant::now();
    let args = [
        "--data-dir".to_string(),
        dir.display().to_string(),
        "backup".into(),
        "--out".into(),
        file.display().to_string(),
        "--json".into(),
    ];
    let report = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli::run(&args).json()
    })
    .await
    .unwrap();
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    assert_eq!(report["integrity"], "ok", "{report}");
    assert_eq!(issuer::sqlite_integrity(&file).await.unwrap(), "ok");
    let acknowledged = acknowledged.lock().unwrap().clone();
    let before: Vec<&String> = acknowledged.iter().filter(|(_, at)| *at < began).map(|(f, _)| f).collect();
    let during = acknowledged.iter().filter(|(_, at)| *at >= began && *at <= ended).count();
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(&file).read_only(true).connect().await.unwrap();
    let stored: std::collections::HashSet<String> =
        sqlx::query_scalar("SELECT fingerprint FROM machines WHERE license_id = ?1")
            .bind(&id)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .collect();
    conn.close().await.unwrap();
    let missing: Vec<&&String> = before.iter().filter(|f| !stored.contains(f.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged activations missing from the backup: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(before.len() > 100, "the load ran: {}", before.len());
    println!(
        "backup under load: {} activations acknowledged before it began, {} during it ({} ms), {} in the copy, {} bytes, {} in all",
        before.len(),
        during,
        report["millis"],
        stored.len(),
        report["bytes"],
        acknowledged.len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "owner-only");
    }

    // The copy is a store: restore it by putting it in place of issuer.db; it opens and has the license.
    let restored = issuer::SqliteStore::open(&file).await.unwrap();
    let store: &dyn issuer::Store = &restored;
    assert_eq!(store.license_by_key(&key).await.unwrap().unwrap().id.to_string(), id);

    // Failure paths: never over a file, no database to copy, PostgreSQL.
    let dir_text = dir.display().to_string();
    let again = cli::run(&["--data-dir", &dir_text, "backup", "--out", file.to_str().unwrap()]).failed(2);
    assert!(again.contains("exists already"), "{again}");
    let empty = tempfile::tempdir().unwrap();
    let none = cli::run(&["--data-dir", empty.path().to_str().unwrap(), "backup", "--out", "/tmp/never.db"]).failed(1);
    assert!(none.contains("does not exist"), "{none}");
    let pg = cli::run(&["--database-url", "postgres://u@127.0.0.1:1/x", "backup", "--out", "/tmp/never.db"]).failed(1);
    assert!(pg.contains("pg_dump"), "{pg}");
    assert!(!std::path::Path::new("/tmp/never.db").exists());
    server.stop().await;
}
