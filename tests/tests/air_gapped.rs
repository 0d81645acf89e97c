//! Air-gapped activation end to end, playing both sides:
//! - the "air-gapped app" uses only the `verifier` crate (install id, activation request, offline verification,
//!   deactivation code) and never touches a network;
//! - the vendor runs the `issuer` CLI (in process, the same entry point as the binary) on a temporary data directory,
//!   or, in the last test, the public HTTP endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::cli::Run;
use std::path::{Path, PathBuf};

use e2e_tests::server::{Server, NO_LIMIT};
use reqwest::Method;
use serde_json::{json, Value};
use verifier::{
    verify_at, ActivationRequest, DeactivationCode, InstallId, KeySet, LicenseId, OffsetDateTime, Status, TokenKind,
    Validation, Verified,
};

const PRODUCT: &str = "acme-cad";

/// The vendor: the CLI on its own data directory.
struct Vendor {
    data_dir: PathBuf,
    work: tempfile::TempDir,
}

impl Vendor {
    fn init() -> Vendor {
        let work = tempfile::tempdir().unwrap();
        let vendor = Vendor { data_dir: work.path().join("issuer-data"), work };
        let out = vendor.run(&["init"]).ok();
        assert!(out.contains("admin token: iat_"), "{out}");
        vendor
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut argv = vec!["--data-dir", self.data_dir.to_str().unwrap()];
        argv.extend_from_slice(args);
        e2e_tests::cli::run(&argv)
    }

    /// The public key set the vendor ships inside the app.
    fn exported_keys(&self) -> Vec<String> {
        self.run(&["keys", "export", "--format", "lines"]).ok().lines().map(String::from).collect()
    }

    fn create_license(&self, email: &str, slots: &str) -> (String, String) {
        let license =
            self.run(&["license", "create", "--email", email, "--product", PRODUCT, "--slots", slots, "--json"]).json();
        (license["id"].as_str().unwrap().to_string(), license["key"].as_str().unwrap().to_string())
    }

    fn path(&self, name: &str) -> String {
        self.work.path().join(name).to_str().unwrap().to_string()
    }

    fn machines_used(&self, license: &str) -> usize {
        self.run(&["machine", "list", license, "--json"]).json()["machines"].as_array().unwrap().len()
    }
}

/// The air-gapped app: an install id in its own directory, and the vendor's public keys compiled in.
struct App {
    dir: tempfile::TempDir,
    install: InstallId,
    keys: KeySet,
}

impl App {
    fn new(public_keys: &[String]) -> App {
        let dir = tempfile::tempdir().unwrap();
        let install = InstallId::load_or_create(dir.path().join("install-id")).unwrap();
        App { dir, install, keys: KeySet::from_lines(public_keys).unwrap() }
    }

    fn fingerprint(&self) -> String {
        self.install.fingerprint(PRODUCT)
    }

    /// The code the app shows the customer (and saves as a file).
    fn request_code(&self, license_key: &str) -> String {
        let code = ActivationRequest::new(license_key, self.fingerprint(), "lab-pc-07").unwrap().to_code().unwrap();
        std::fs::write(self.dir.path().join("activation-request.txt"), &code).unwrap();
        code
    }

    fn verify(&self, token: &str) -> Result<Verified, verifier::Error> {
        verify_at(token, &self.keys, &Validation::new(PRODUCT, self.fingerprint()), OffsetDateTime::now_utc())
    }

    fn deactivation_code(&self, token: &str) -> DeactivationCode {
        DeactivationCode::for_token(token, &self.keys).unwrap()
    }
}

fn request_file(app: &App) -> String {
    format!("@{}", app.dir.path().join("activation-request.txt").display())
}

/// One character of a code replaced by another of its alphabet.
fn with_typo(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    let i = 7; // inside the first group after the `ACT1-` / `DEA1-` prefix
    chars[i] = if chars[i] == '7' { '8' } else { '7' };
    chars.into_iter().collect()
}

#[test]
fn request_token_offline_check_deactivation_and_every_failure_path() {
    let vendor = Vendor::init();
    let (license_id, license_key) = vendor.create_license("lab@example.com", "1");
    let app = App::new(&vendor.exported_keys());

    // 1. The app makes a request code offline; the vendor turns it into an offline token (read from the file).
    let code = app.request_code(&license_key);
    assert!(code.starts_with("ACT1-"), "{code}");
    let token_file = vendor.path("lab-pc-07.license");
    let issued =
        vendor.run(&["token", "issue", "--request", &request_file(&app), "--out", &token_file, "--json"]).json();
    assert_eq!(issued["kind"], "offline");
    assert_eq!(issued["machines_used"], 1);
    assert_eq!(issued["machines_remaining"], 0);
    assert_eq!(issued["token_expires_at"], Value::Null);
    let token = issued["token"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token, "the file holds the same token");

    // 2. The app installs the token and verifies it offline: valid, offline, no token expiry.
    let verified = app.verify(&token).unwrap();
    assert_eq!(verified.status, Status::Valid);
    assert_eq!(verified.license.kind, TokenKind::Offline);
    assert_eq!(verified.license.token_expires_at, None);
    assert_eq!(verified.license.refresh_after, None);
    assert_eq!(verified.license.license_expires_at, None, "a perpetual license");
    assert_eq!(verified.license.license_key, license_key);
    assert_eq!(verified.license.license_id.to_string(), license_id);

    // 3. The same token copied to another machine is refused there.
    let other = App::new(&vendor.exported_keys());
    assert_eq!(other.verify(&token).unwrap_err().code(), "wrong_machine");
    // And that machine cannot take a second slot of a one-slot license.
    let full =
        vendor.run(&["token", "issue", "--request", &other.request_code(&license_key), "--out", &vendor.path("x")]);
    assert!(full.failed(1).contains("the 1 machine slot of the license is in use"));

    // The store records the activation like an online one, marked offline.
    let shown = vendor.run(&["license", "show", &license_id, "--json"]).json();
    assert_eq!(shown["machines"][0]["fingerprint"], app.fingerprint().as_str());
    assert_eq!(shown["machines"][0]["name"], "lab-pc-07");
    assert_eq!(shown["machines"][0]["offline"], true);
    let activated = shown["recent_events"].as_array().unwrap().iter().find(|e| e["kind"] == "activated").unwrap();
    assert_eq!(activated["detail"]["offline"], true);

    // 4. The app gives its token up: a deactivation code; redeeming it frees the slot.
    let deactivation = app.deactivation_code(&token).to_code();
    assert!(deactivation.starts_with("DEA1-"), "{deactivation}");
    let out = vendor.run(&["token", "deactivate", &deactivation]).ok();
    assert!(out.contains("its slot is free, 0 of 1 slot used"), "{out}");
    assert_eq!(vendor.machines_used(&license_id), 0);

    // 5. The same code again changes nothing.
    let again = vendor.run(&["token", "deactivate", &deactivation]).failed(1);
    assert!(again.contains("already redeemed at"), "{again}");

    // 6. Codes of another license fail: checked against --license, and a code naming another license.
    let (other_id, _) = vendor.create_license("other@example.com", "1");
    let token2 = vendor
        .run(&["token", "issue", "--request", &other.request_code(&license_key), "--out", &vendor.path("t2"), "--json"])
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let code2 = other.deactivation_code(&token2);
    let wrong = vendor.run(&["token", "deactivate", &code2.to_code(), "--license", &other_id]).failed(1);
    assert!(wrong.contains(&format!("is for license {license_id}, not {other_id}")), "{wrong}");
    let moved = DeactivationCode { license_id: other_id.parse::<LicenseId>().unwrap(), ..code2 };
    let unknown = vendor.run(&["token", "deactivate", &moved.to_code()]).failed(1);
    assert!(unknown.contains("no machine of license"), "{unknown}");
    assert_eq!(vendor.machines_used(&license_id), 1, "the refused codes freed nothing");

    // 7. A typo in a request code is reported as a typo (exit code 2), before anything is looked up.
    let typo = vendor.run(&["token", "issue", "--request", &with_typo(&app.request_code(&license_key))]).failed(2);
    assert!(typo.contains("mistyped"), "{typo}");
    let typo = vendor.run(&["token", "deactivate", &with_typo(&code2.to_code())]).failed(2);
    assert!(typo.contains("mistyped"), "{typo}");

    // 8. A revoked license refuses new offline activations.
    vendor.run(&["machine", "remove", &license_id, &other.fingerprint()]).ok();
    vendor.run(&["license", "revoke", &license_id]).ok();
    let revoked = vendor
        .run(&["token", "issue", "--request", &app.request_code(&license_key), "--out", &vendor.path("t3")])
        .failed(1);
    assert!(revoked.contains("revoked"), "{revoked}");
    let left = vendor.run(&["license", "show", &license_id, "--json"]).json();
    assert_eq!(left["machines"].as_array().unwrap().len(), 0, "{left:#}");
}

#[test]
fn reactivating_an_offline_machine_uses_no_slot_and_only_the_newest_code_frees_it() {
    let vendor = Vendor::init();
    let (license_id, license_key) = vendor.create_license("lab@example.com", "1");
    let app = App::new(&vendor.exported_keys());
    let issue = || {
        vendor
            .run(&[
                "token",
                "issue",
                "--request",
                &app.request_code(&license_key),
                "--out",
                &vendor.path("t"),
                "--json",
            ])
            .json()
    };
    let first = issue();
    // Tokens are deterministic: the same claims signed within the same second are the same token. A change of the
    // license's entitlements makes the second token differ without waiting for the next second.
    vendor.run(&["license", "update", &license_id, "--entitlement", "pro"]).ok();
    let second = issue();
    assert_ne!(first["token"], second["token"]);
    assert_eq!(second["new_machine"], false);
    assert_eq!(second["machines_used"], 1);
    let old_code = app.deactivation_code(first["token"].as_str().unwrap()).to_code();
    let stale = vendor.run(&["token", "deactivate", &old_code]).failed(1);
    assert!(stale.contains("since replaced"), "{stale}");
    let new_code = app.deactivation_code(second["token"].as_str().unwrap()).to_code();
    vendor.run(&["token", "deactivate", &new_code]).ok();
    assert_eq!(vendor.machines_used(&license_id), 0);
}

#[test]
fn token_inspect_shows_an_offline_token_and_verifies_it_against_the_ring() {
    let vendor = Vendor::init();
    let (license_id, license_key) = vendor.create_license("lab@example.com", "2");
    let app = App::new(&vendor.exported_keys());
    let token_file = vendor.path("lab.license");
    vendor.run(&["token", "issue", "--request", &app.request_code(&license_key), "--out", &token_file]).ok();
    let inspected = vendor.run(&["token", "inspect", &format!("@{token_file}"), "--json"]).json();
    assert_eq!(inspected["verified"], true);
    assert_eq!(inspected["key_status"], "active");
    assert_eq!(inspected["claims"]["kind"], "offline");
    assert_eq!(inspected["claims"]["license_id"], license_id.as_str());
    assert_eq!(inspected["claims"]["token_expires_at"], Value::Null);

    // After a rotation the token still verifies (retired key); after the key is retired it no longer does.
    let old_key = inspected["key_id"].as_str().unwrap().to_string();
    vendor.run(&["keys", "rotate"]).ok();
    let inspected = vendor.run(&["token", "inspect", &format!("@{token_file}"), "--json"]).json();
    assert_eq!(inspected["key_status"], "retired");
    vendor.run(&["keys", "retire", &old_key]).ok();
    let run = vendor.run(&["token", "inspect", &format!("@{token_file}")]);
    assert!(run.out.contains("UNKNOWN KEY"), "{}", run.out);
    assert!(run.failed(1).contains("not in the key ring"));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_endpoints_activate_and_deactivate_over_http() {
    let server = Server::start(NO_LIMIT).await;
    let post = |path: &'static str, body: Value| {
        let answer = server.post(path, body);
        async move {
            let (status, body) = answer.await;
            (status.as_u16(), body)
        }
    };

    let (_, license) = server
        .admin(
            Method::POST,
            "/v1/licenses",
            Some(json!({ "email": "lab@example.com", "product": PRODUCT, "max_machines": 1 })),
        )
        .await;
    let key = license["key"].as_str().unwrap();
    let (_, keys) = server.send(Method::GET, "/v1/keys", None, false).await;
    let lines: Vec<String> =
        keys["keys"].as_array().unwrap().iter().map(|k| k["public_key"].as_str().unwrap().to_string()).collect();
    let app = App::new(&lines);
    let code = app.request_code(key);
    assert_eq!(read(&app.dir.path().join("activation-request.txt")), code);

    let (status, body) = post("/v1/offline/activate", json!({ "request": with_typo(&code) })).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (422, "mistyped_code"), "{body}");
    let (status, body) = post("/v1/offline/activate", json!({ "request": "hello" })).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (422, "invalid_code"), "{body}");

    let (status, body) = post("/v1/offline/activate", json!({ "request": code })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "offline");
    assert_eq!((body["machines_used"].as_u64(), body["machines_remaining"].as_u64()), (Some(1), Some(0)));
    let token = body["token"].as_str().unwrap();
    assert_eq!(app.verify(token).unwrap().license.kind, TokenKind::Offline);

    let deactivation = app.deactivation_code(token).to_code();
    let (status, body) = post("/v1/offline/deactivate", json!({ "code": deactivation })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "deactivated": true, "machines_used": 0, "machines_remaining": 1 }));
    let (status, body) = post("/v1/offline/deactivate", json!({ "code": deactivation })).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (409, "already_redeemed"), "{body}");
    let forged = DeactivationCode { proof: [7; 16], ..app.deactivation_code(token) }.to_code();
    let (status, body) = post("/v1/offline/deactivate", json!({ "code": forged })).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (404, "unknown_deactivation_code"), "{body}");

    server.stop().await;
}
