//! The HTTP server under connection abuse, over raw TCP on 127.0.0.1: half-sent heads (slowloris), idle keep-alive
//! connections, slow bodies, early rejections of requests whose body arrives in a separate write, and one client
//! holding more connections than the server may open, with the server's open-file limit lowered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use e2e_tests::issuer_binary;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// An in-process server with these connection settings and rate limit.
struct Server {
    addr: std::net::SocketAddr,
    admin: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start(http: &[(&str, &str)], rate_per_second: u32) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let flags = issuer::Flags::new(None, Some(dir.path().join("data")), None);
    let env: Vec<(String, String)> = http.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut config =
        issuer::Config::load(None, |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()), flags).unwrap();
    config.rate_limit_per_second = rate_per_second;
    config.rate_limit_burst = rate_per_second;
    config.max_body_bytes = 2048;
    let started = issuer::start(&config).await.unwrap();
    let admin = started.new_admin_token.clone().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(issuer::http::serve(listener, started.state, async {
        let _ = rx.await;
    }));
    Server { addr, admin, stop: Some(tx), _dir: dir }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body); returns the status, the lowercased head, the body.
async fn read_response(stream: &mut BufReader<TcpStream>) -> Option<(u16, String, String)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether the server closes `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(within, stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

async fn healthz(addr: std::net::SocketAddr) -> u16 {
    let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
    stream.get_mut().write_all(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n").await.unwrap();
    read_response(&mut stream).await.map_or(0, |(status, _, _)| status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_are_closed_after_the_header_timeout() {
    let server = start(&[("ISSUER_HTTP_HEADER_TIMEOUT", "1s")], 0).await;
    let mut loris = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\nX-Slow: ").await.unwrap();
        loris.push(stream);
    }
    assert_eq!(healthz(server.addr).await, 200, "others are served meanwhile");
    let mut closed = 0;
    for stream in &mut loris {
        // Keep trickling bytes as slowloris does: the head still has to be complete within the timeout.
        let _ = stream.write_all(b"a").await;
        if closed_within(stream, Duration::from_secs(15)).await {
            closed += 1;
        }
    }
    println!("{closed} of 50 half-sent heads closed by the server");
    assert_eq!(closed, 50);
    // A connection that sends nothing at all owes a head too.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(15)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_keepalive_timeout() {
    let server = start(&[("ISSUER_HTTP_KEEPALIVE_TIMEOUT", "1s"), ("ISSUER_HTTP_HEADER_TIMEOUT", "30s")], 0).await;
    let mut stream = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    for _ in 0..3 {
        stream.get_mut().write_all(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n").await.unwrap();
        let (status, head, _) = read_response(&mut stream).await.unwrap();
        assert_eq!(status, 200);
        assert!(!head.contains("connection: close"), "kept alive between requests: {head}");
    }
    assert!(closed_within(stream.get_mut(), Duration::from_secs(15)).await, "closed once idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_body_timeout_gets_408_and_the_connection_closes() {
    let server = start(&[("ISSUER_HTTP_BODY_TIMEOUT", "1s")], 0).await;
    let mut stream = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    let head =
        "POST /v1/validate HTTP/1.1\r\nHost: issuer\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    stream.get_mut().write_all(head.as_bytes()).await.unwrap();
    stream.get_mut().write_all(b"{\"key\":").await.unwrap();
    let (status, head, body) = tokio::time::timeout(Duration::from_secs(15), read_response(&mut stream))
        .await
        .expect("answered")
        .expect("a response");
    assert_eq!(status, 408, "{head}{body}");
    assert!(body.contains("\"code\":\"body_timeout\""), "{body}");
    assert!(head.contains("connection: close"), "{head}");
}

/// Sends `head` and, in a second write after a pause, `body`; then, unless the answer said `Connection: close`, a
/// second request on the same connection, which must be answered.
async fn early_rejection(addr: std::net::SocketAddr, head: String, body: &[u8]) -> (u16, bool) {
    let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
    stream.get_mut().write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let _ = stream.get_mut().write_all(body).await;
    let (status, response_head, _) = read_response(&mut stream).await.expect("a response");
    let close = response_head.contains("connection: close");
    if !close {
        stream.get_mut().write_all(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n").await.unwrap();
        let next = read_response(&mut stream).await;
        assert_eq!(next.map(|r| r.0), Some(200), "kept alive without Connection: close, so it must serve again");
    }
    (status, close)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_rejections_of_a_body_sent_separately_say_connection_close_or_keep_serving() {
    let server = start(&[], 1).await;
    let json = |path: &str, extra: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: issuer\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        )
    };
    let body = r#"{"email":"ada@example.com","product":"acme-cad","max_machines":1}"#;
    // 401: the admin route rejects before reading the body.
    let (status, _) = early_rejection(server.addr, json("/v1/licenses", "", body), body.as_bytes()).await;
    assert_eq!(status, 401);
    // 413: larger than max_body_bytes (2048).
    let big = format!(r#"{{"key":"{}"}}"#, "A".repeat(4000));
    let auth = format!("Authorization: Bearer {}\r\n", server.admin);
    let (status, _) = early_rejection(server.addr, json("/v1/licenses", &auth, &big), big.as_bytes()).await;
    assert_eq!(status, 413);
    // 415: not JSON.
    let head = format!(
        "POST /v1/validate HTTP/1.1\r\nHost: issuer\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (status, _) = early_rejection(server.addr, head, body.as_bytes()).await;
    assert_eq!(status, 415);
    // 429: the rate limit (1 per second) rejects before the body is read.
    let validate = r#"{"key":"AAAAA-AAAAA-AAAAA-AAAAA","fingerprint":"x"}"#;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(early_rejection(server.addr, json("/v1/validate", "", validate), validate.as_bytes()).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_more_connections_than_the_server_may_open_cannot_lock_others_out() {
    let Some(binary) = issuer_binary() else {
        assert!(std::env::var_os("CI").is_none(), "the issuer binary is not built next to this test");
        eprintln!("SKIPPED: the issuer binary is not built next to this test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The server's open-file limit, soft and hard, is 256: it must fit its connections under it.
    let script = format!("ulimit -n 256 && exec '{}' serve --listen 127.0.0.1:0", binary.display());
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .env("ISSUER_DATA_DIR", dir.path().join("data"))
        .env("ISSUER_LOG", "info")
        .env("RUST_LOG", "info")
        .env_remove("ISSUER_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("issuer listening on http://") {
                return addr.trim().parse::<std::net::SocketAddr>().unwrap();
            }
        }
        panic!("issuer exited before listening");
    })
    .await
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let log = tokio::spawn(async move {
        let mut log = String::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(30), stderr.next_line()).await {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });

    // One client opens 400 connections (more than the server's 256 descriptors) and keeps them, topping up.
    let mut hoard = Vec::new();
    for _ in 0..400 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            hoard.push(stream);
        }
    }
    let mut answered = 0;
    for round in 0..10 {
        let status = tokio::time::timeout(Duration::from_secs(1), healthz(addr)).await;
        if status == Ok(200) {
            answered += 1;
        } else {
            println!("round {round}: /healthz not answered within 1 s ({status:?})");
        }
        for _ in 0..50 {
            if let Ok(stream) = TcpStream::connect(addr).await {
                hoard.push(stream);
            }
        }
    }
    println!(
        "{} connections held by the hoarding client; /healthz answered within 1 s {answered} of 10 times",
        hoard.len()
    );
    assert_eq!(answered, 10);
    drop(hoard);
    drop(child);
    let log = log.await.unwrap();
    assert!(log.contains("serving fewer connections"), "the lowered limit is logged:\n{log}");
}
