//! The real `issuer` binary: first start creates everything and prints the admin token once; SIGTERM stops it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const ISSUER_VARS: &[&str] = &[
    "ISSUER_LISTEN",
    "ISSUER_DATA_DIR",
    "ISSUER_DATABASE_URL",
    "ISSUER_ADMIN_TOKEN",
    "ISSUER_CONFIG",
    "ISSUER_RATE_LIMIT_PER_SECOND",
    "ISSUER_RATE_LIMIT_BURST",
];

fn spawn(data_dir: &Path) -> Child {
    spawn_with(data_dir, &[])
}

fn spawn_with(data_dir: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_issuer"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
    for var in ISSUER_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn().unwrap()
}

/// Reads stdout up to the `issuer listening on http://ADDR` line; returns the address and any admin token printed.
async fn read_startup(lines: &mut Lines<BufReader<ChildStdout>>) -> (String, Option<String>) {
    let mut token = None;
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(t) = line.strip_prefix("admin token: ") {
                token = Some(t.trim().to_string());
            }
            if let Some(addr) = line.strip_prefix("issuer listening on http://") {
                return addr.trim().to_string();
            }
        }
        panic!("the issuer exited before it listened");
    };
    let addr = tokio::time::timeout(Duration::from_secs(60), read).await.expect("the issuer did not start in time");
    (addr, token)
}

async fn terminate(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("no exit after SIGTERM");
    assert!(exit.unwrap().success(), "a SIGTERM shutdown exits 0");
}

#[tokio::test]
async fn first_start_prints_a_working_admin_token_once_and_sigterm_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let client = reqwest::Client::new();

    let mut child = spawn(&data_dir);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (addr, token) = read_startup(&mut lines).await;
    let token = token.expect("first start prints the admin token");
    assert!(token.starts_with("iat_"), "{token}");
    assert!(data_dir.join("issuer.db").exists());
    let key_file_modes: Vec<u32> = std::fs::read_dir(data_dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .map(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        })
        .collect();
    assert_eq!(key_file_modes, [0o600]);

    let health = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let listed = client.get(format!("http://{addr}/v1/licenses")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    terminate(child).await;

    // Second start: same data, no new token printed, the first one still works.
    let mut child = spawn(&data_dir);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (addr, again) = read_startup(&mut lines).await;
    assert_eq!(again, None, "the admin token is printed only at first start");
    let listed = client.get(format!("http://{addr}/v1/licenses")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    terminate(child).await;
}

#[tokio::test]
async fn config_example_prints_a_config_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_issuer")).args(["config", "example"]).output().await.unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:8080\""), "{text}");
    assert!(text.contains("rate_limit_per_second"), "{text}");
}

/// Durability: every activation the issuer acknowledged is still there after the process is killed (SIGKILL, no
/// chance to flush anything) in the middle of a load, and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_activations_survive_a_kill_9_under_load() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let no_limit = [("ISSUER_RATE_LIMIT_PER_SECOND", "0")];
    let client = reqwest::Client::new();

    let mut child = spawn_with(&data_dir, &no_limit);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (addr, token) = read_startup(&mut lines).await;
    let token = token.unwrap();
    let license: serde_json::Value = client
        .post(format!("http://{addr}/v1/licenses"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"email": "ops@example.com", "product": "acme-cad", "max_machines": 1000000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = license["key"].as_str().unwrap().to_string();
    let id = license["id"].as_str().unwrap().to_string();

    // 16 clients activate fresh machines as fast as they can; each records what was acknowledged with 200.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (client, key, acknowledged, url) =
            (client.clone(), key.clone(), acknowledged.clone(), format!("http://{addr}/v1/activate"));
        clients.push(tokio::spawn(async move {
            for i in 0.. {
                let fingerprint = format!("c{c}-m{i}");
                let body = serde_json::json!({"key": key, "fingerprint": fingerprint});
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => acknowledged.lock().unwrap().push(fingerprint),
                    Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Kill once a good number of activations went through, while requests are in flight.
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let mut child = spawn_with(&data_dir, &no_limit);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (addr, _) = read_startup(&mut lines).await;
    let machines: serde_json::Value = client
        .get(format!("http://{addr}/v1/licenses/{id}/machines"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: std::collections::HashSet<&str> =
        machines["machines"].as_array().unwrap().iter().map(|m| m["fingerprint"].as_str().unwrap()).collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|f| !stored.contains(f.as_str())).collect();
    println!("{} activations acknowledged before SIGKILL, {} stored after restart", acknowledged.len(), stored.len());
    assert!(lost.is_empty(), "{} acknowledged activations lost: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert!(stored.len() >= acknowledged.len());
    terminate(child).await;
}
