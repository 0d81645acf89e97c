//! Offline trust end to end: an app that embeds only the vendor's root key, signing keys certified by the root and
//! rotated twice without an app update, and the signed revocation list online and air-gapped.
//!
//! The vendor runs the `issuer` CLI (in process, on its own thread: the CLI builds its own runtime) and, for the
//! online stories, a real service on 127.0.0.1; the app uses only the `verifier` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::cli::Run;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use verifier::{
    verify_at, ActivationRequest, Bundle, CertificateFile, InstallId, KeySet, OffsetDateTime, RevocationFile,
    Validation, Verified,
};

const PRODUCT: &str = "acme-cad";

/// The vendor: a data directory for the issuer, and a root directory that would live on an offline machine.
struct Vendor {
    work: tempfile::TempDir,
    /// The admin token `init` printed.
    admin: String,
}

impl Vendor {
    /// An initialized issuer whose ring has a root, with the active key certified by it.
    fn with_root() -> Vendor {
        let mut vendor = Vendor { work: tempfile::tempdir().unwrap(), admin: String::new() };
        let out = vendor.issuer(&["init"]).ok();
        let line = out.lines().find(|l| l.starts_with("admin token: ")).unwrap();
        vendor.admin = line.trim_start_matches("admin token: ").trim().to_string();
        let out = vendor.cli(&["root", "init", "--dir", &vendor.root_dir()]).ok();
        assert!(out.contains(&vendor.root_line()), "{out}");
        let active =
            vendor.issuer(&["keys", "list", "--json"]).json()["keys"][0]["key_id"].as_str().unwrap().to_string();
        let cert = vendor.certify(&active);
        let root = format!("@{}/root.pub", vendor.root_dir());
        let out = vendor.issuer(&["keys", "add-root", &root, "--certificate", &format!("@{cert}")]).ok();
        assert!(out.contains("From now on this ring signs only with keys a root certified"), "{out}");
        vendor
    }

    fn data_dir(&self) -> PathBuf {
        self.work.path().join("issuer-data")
    }

    fn root_dir(&self) -> String {
        self.work.path().join("offline-root").to_str().unwrap().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.work.path().join(name).to_str().unwrap().to_string()
    }

    /// The root key line the vendor embeds in its apps: the only key they hold.
    fn root_line(&self) -> String {
        let text = std::fs::read_to_string(Path::new(&self.root_dir()).join("root.pub")).unwrap();
        text.lines().find(|l| l.starts_with("lrk1.")).unwrap().to_string()
    }

    /// Any CLI command, on a thread of its own.
    fn cli(&self, args: &[&str]) -> Run {
        e2e_tests::cli::run(args)
    }

    /// A CLI command on the issuer's data directory.
    fn issuer(&self, args: &[&str]) -> Run {
        let dir = self.data_dir();
        let mut argv = vec!["--data-dir", dir.to_str().unwrap()];
        argv.extend_from_slice(args);
        self.cli(&argv)
    }

    /// Certifies a ring key with the offline root, as the vendor would on the root's machine; returns the file.
    fn certify(&self, key_id: &str) -> String {
        let public = self.data_dir().join("keys").join(format!("{key_id}.pub"));
        let file = self.path(&format!("{key_id}.cert"));
        let args = [
            "root",
            "certify",
            "--dir",
            &self.root_dir(),
            "--public-key",
            public.to_str().unwrap(),
            "--valid-for",
            "400d",
            "--out",
            &file,
        ];
        self.cli(&args).ok();
        file
    }

    /// The rotation procedure of docs/operations.md with a root: prepare, certify offline, add, rotate.
    fn rotate_certified(&self) -> String {
        let out = self.issuer(&["keys", "prepare"]).ok();
        let pending = out.split_whitespace().nth(2).unwrap().trim_end_matches(';').to_string();
        let cert = self.certify(&pending);
        self.issuer(&["keys", "add-certificate", &format!("@{cert}")]).ok();
        self.issuer(&["keys", "rotate"]).ok();
        pending
    }
}

/// The app: its install id, the root it embeds, and the certificates and revocation list it keeps.
struct App {
    dir: tempfile::TempDir,
    install: InstallId,
    root: String,
    keys: KeySet,
}

impl App {
    fn new(root_line: &str) -> App {
        let dir = tempfile::tempdir().unwrap();
        let install = InstallId::load_or_create(dir.path().join("install-id")).unwrap();
        let mut app = App { dir, install, root: root_line.to_string(), keys: KeySet::new() };
        app.restart();
        app
    }

    /// What a fresh start of the app knows: the embedded root and the certificates it kept.
    fn restart(&mut self) {
        self.keys = KeySet::from_lines(&[self.root.as_str()]).unwrap();
        self.certificates().load_into(&mut self.keys).unwrap();
    }

    fn certificates(&self) -> CertificateFile {
        CertificateFile::new(self.dir.path().join("certificates.txt"))
    }

    fn fingerprint(&self) -> String {
        self.install.fingerprint(PRODUCT)
    }

    /// Keeps the certificate an answer carried.
    fn remember(&mut self, certificate: &str) {
        let file = self.certificates();
        file.remember(certificate, &mut self.keys).unwrap();
    }

    fn verify(&self, token: &str, revocations: Option<&RevocationFile>) -> Result<Verified, verifier::Error> {
        let mut validation = Validation::new(PRODUCT, self.fingerprint());
        validation.revocation_list = revocations.and_then(|r| r.current().cloned());
        verify_at(token, &self.keys, &validation, OffsetDateTime::now_utc())
    }

    fn revocations(&self) -> RevocationFile {
        RevocationFile::open(self.dir.path().join("revocations.txt"), &self.keys).unwrap()
    }
}

/// A running service on the vendor's data directory.
struct Service {
    base: String,
    admin: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Service {
    async fn start(vendor: &Vendor) -> Service {
        let flags = issuer::Flags::new(None, Some(vendor.data_dir()), None);
        let mut config = issuer::Config::load(None, |_| None, flags).unwrap();
        config.rate_limit_per_second = 0;
        let started = issuer::start(&config).await.unwrap();
        let admin = vendor.admin.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(issuer::http::serve(listener, started.state, async {
            let _ = stopped.await;
        }));
        Service { base, admin, client: reqwest::Client::new(), stop: Some(stop), server: Some(server) }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self.client.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn admin(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.admin).json(&body);
        let resp = request.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

fn key_id_of(token: &str) -> String {
    verifier::UntrustedToken::parse(token).unwrap().key_id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_embeds_only_the_root_verifies_refreshed_tokens_across_two_rotations() {
    let vendor = Vendor::with_root();
    let service = Service::start(&vendor).await;
    let (status, license) = service
        .admin("/v1/licenses", json!({ "email": "ada@example.com", "product": PRODUCT, "max_machines": 1 }))
        .await;
    assert_eq!(status, 201, "{license}");
    let mut app = App::new(&vendor.root_line());

    let (status, body) =
        service.post("/v1/activate", json!({ "key": license["key"], "fingerprint": app.fingerprint() })).await;
    assert_eq!(status, 200, "{body}");
    let mut token = body["token"].as_str().unwrap().to_string();
    assert!(token.len() <= 300, "a typical token is at most 300 characters: {}", token.len());
    let certificate = body["certificate"].as_str().unwrap();
    assert!(certificate.len() <= 200, "an unscoped certificate is at most 200 characters: {}", certificate.len());
    // The root alone does not trust the signing key: the certificate beside the token does.
    assert_eq!(app.verify(&token, None).unwrap_err().code(), "unknown_key");
    app.remember(certificate);
    app.verify(&token, None).unwrap();

    let mut signers = vec![key_id_of(&token)];
    for rotation in 1..=2 {
        let next = vendor.rotate_certified();
        // Refresh until the service signs with the new key (its watcher reloads the ring within 5 s). Every token
        // it answers meanwhile, old key or new, verifies in the app: there is no moment of refusal.
        let mut refreshed = 0;
        loop {
            let (status, body) = service.post("/v1/refresh", json!({ "token": token })).await;
            assert_eq!(status, 200, "rotation {rotation}: {body}");
            token = body["token"].as_str().unwrap().to_string();
            app.remember(body["certificate"].as_str().unwrap());
            app.verify(&token, None).unwrap_or_else(|e| panic!("rotation {rotation}, refresh {refreshed}: {e}"));
            refreshed += 1;
            if key_id_of(&token) == next {
                break;
            }
            assert!(refreshed < 200, "rotation {rotation}: the service never signed with key {next}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        signers.push(next);
        // After a restart the app still trusts the new key: it kept the certificate.
        app.restart();
        app.verify(&token, None).unwrap();
    }
    assert_eq!(signers.len(), 3);
    assert!(signers[0] != signers[1] && signers[1] != signers[2]);

    // GET /v1/keys lists the root and every key's certificates.
    let (status, keys) = service.get("/v1/keys").await;
    assert_eq!(status, 200);
    assert_eq!(keys["roots"], json!([vendor.root_line()]));
    let listed: Vec<&str> = keys["keys"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![signers[2].as_str(), signers[1].as_str(), signers[0].as_str()]);
    assert!(keys["keys"].as_array().unwrap().iter().all(|k| k["certificates"].as_array().unwrap().len() == 1));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_online_apps_through_get_v1_revocations() {
    let vendor = Vendor::with_root();
    let service = Service::start(&vendor).await;
    let mut app = App::new(&vendor.root_line());
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for email in ["kept@example.com", "gone@example.com"] {
        let (_, license) =
            service.admin("/v1/licenses", json!({ "email": email, "product": PRODUCT, "max_machines": 1 })).await;
        let (status, body) =
            service.post("/v1/activate", json!({ "key": license["key"], "fingerprint": app.fingerprint() })).await;
        assert_eq!(status, 200, "{body}");
        app.remember(body["certificate"].as_str().unwrap());
        tokens.push(body["token"].as_str().unwrap().to_string());
        ids.push(license["id"].as_str().unwrap().to_string());
    }
    let (status, first) = service.get("/v1/revocations").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["sequence"], 0);
    let (status, _) = service.admin(&format!("/v1/licenses/{}/revoke", ids[1]), json!({})).await;
    assert_eq!(status, 200);
    // The instance that revoked serves the new list at once.
    let (_, second) = service.get("/v1/revocations").await;
    assert_eq!(second["sequence"], 1, "{second}");
    assert_eq!(second["key_id"], first["key_id"]);

    app.remember(second["certificate"].as_str().unwrap());
    let mut revocations = app.revocations();
    assert!(revocations.install(second["revocation_list"].as_str().unwrap(), &app.keys).unwrap());
    assert_eq!(app.verify(&tokens[1], Some(&revocations)).unwrap_err().code(), "license_revoked");
    app.verify(&tokens[0], Some(&revocations)).unwrap();
    // The older list is refused and changes nothing; the same list again is no news.
    let err = revocations.install(first["revocation_list"].as_str().unwrap(), &app.keys).unwrap_err();
    assert_eq!(err.code(), "stale_revocation_list");
    assert!(!revocations.install(second["revocation_list"].as_str().unwrap(), &app.keys).unwrap());
    // Kept across a restart of the app.
    app.restart();
    let revocations = app.revocations();
    assert_eq!(revocations.current().unwrap().sequence(), 1);
    assert_eq!(app.verify(&tokens[1], Some(&revocations)).unwrap_err().code(), "license_revoked");
    service.stop().await;
}

#[test]
fn air_gapped_files_carry_the_certificate_and_the_revocation_list() {
    let vendor = Vendor::with_root();
    let mut app = App::new(&vendor.root_line());
    let license = vendor
        .issuer(&["license", "create", "--email", "lab@example.com", "--product", PRODUCT, "--slots", "1", "--json"])
        .json();
    let request = ActivationRequest::new(license["key"].as_str().unwrap(), app.fingerprint(), "lab-pc").unwrap();
    let file = vendor.path("lab-pc.license");
    let code = request.to_code().unwrap();
    vendor.issuer(&["token", "issue", "--request", &code, "--out", &file]).ok();

    // The license file: the token, then the certificate of its key.
    let text = std::fs::read_to_string(&file).unwrap();
    let bundle = Bundle::parse(&text).unwrap();
    assert_eq!((bundle.tokens.len(), bundle.certificates.len()), (1, 1), "{text}");
    for certificate in &bundle.certificates {
        app.remember(certificate);
    }
    let token = bundle.token().unwrap().to_string();
    app.verify(&token, None).unwrap();

    // The vendor rotates (the app is never updated), revokes the license and exports the list.
    let before = vendor.path("before.revocations");
    vendor.issuer(&["revocations", "export", "--out", &before]).ok();
    let signer = vendor.rotate_certified();
    vendor.issuer(&["license", "revoke", license["id"].as_str().unwrap()]).ok();
    let after = vendor.path("after.revocations");
    let out = vendor.issuer(&["revocations", "export", "--out", &after]).ok();
    assert!(out.contains(&format!("signed by key {signer}")), "{out}");

    // The list arrives on a USB stick with the new key's certificate; the app installs it and the token is revoked.
    let text = std::fs::read_to_string(&after).unwrap();
    let bundle = Bundle::parse(&text).unwrap();
    assert_eq!((bundle.revocation_lists.len(), bundle.certificates.len()), (1, 1), "{text}");
    let mut revocations = app.revocations();
    let err = revocations.install(bundle.revocation_lists[0], &app.keys).unwrap_err();
    assert_eq!(err.code(), "unknown_key", "signed by the new key, whose certificate the app has not kept yet");
    app.remember(bundle.certificates[0]);
    assert!(revocations.install(bundle.revocation_lists[0], &app.keys).unwrap());
    assert_eq!(app.verify(&token, Some(&revocations)).unwrap_err().code(), "license_revoked");

    // An older list (made before the revocation) is refused; a tampered one too.
    let older = Bundle::parse(&std::fs::read_to_string(&before).unwrap()).unwrap().revocation_lists[0].to_string();
    assert_eq!(revocations.install(&older, &app.keys).unwrap_err().code(), "stale_revocation_list");
    let mut tampered = bundle.revocation_lists[0].to_string();
    let i = tampered.len() - 90; // inside the entries
    tampered.replace_range(i..i + 1, if &tampered[i..i + 1] == "A" { "B" } else { "A" });
    assert_eq!(revocations.install(&tampered, &app.keys).unwrap_err().code(), "invalid_revocation_list");
    assert_eq!(revocations.current().unwrap().sequence(), 1, "the newest list is kept");
}

#[test]
fn with_roots_no_key_signs_without_a_covering_certificate() {
    let vendor = Vendor::with_root();
    // Rotating to a key that no root certified is refused, and the ring is unchanged.
    let before = vendor.issuer(&["keys", "list", "--json"]).json();
    let err = vendor.issuer(&["keys", "rotate"]).failed(1);
    assert!(err.contains("has no certificate that covers") && err.contains("issuer keys prepare"), "{err}");
    assert_eq!(vendor.issuer(&["keys", "list", "--json"]).json(), before);

    // A certificate for another product only: the issuer refuses to sign for acme-cad, with a clear code, and the
    // activation takes no slot.
    let out = vendor.issuer(&["keys", "prepare"]).ok();
    let pending = out.split_whitespace().nth(2).unwrap().trim_end_matches(';').to_string();
    let public = vendor.data_dir().join("keys").join(format!("{pending}.pub"));
    let cert = vendor.path("scoped.cert");
    let args = [
        "root",
        "certify",
        "--dir",
        &vendor.root_dir(),
        "--public-key",
        public.to_str().unwrap(),
        "--product",
        "acme-viewer",
        "--out",
        &cert,
    ];
    vendor.cli(&args).ok();
    vendor.issuer(&["keys", "add-certificate", &format!("@{cert}")]).ok();
    // Recording the ring while a key is pending leaves the pending key out, so it can still become the signing key.
    vendor.issuer(&["keys", "record"]).ok();
    vendor.issuer(&["keys", "rotate"]).ok();
    let license = vendor
        .issuer(&["license", "create", "--email", "lab@example.com", "--product", PRODUCT, "--slots", "1", "--json"])
        .json();
    let id = license["id"].as_str().unwrap();
    let err = vendor.issuer(&["token", "issue", "--license", id, "--fingerprint", "fp-1"]).failed(1);
    assert!(err.contains("for product `acme-cad`"), "{err}");
    assert_eq!(vendor.issuer(&["machine", "list", id, "--json"]).json()["machines"], json!([]));

    // A certificate whose window is over: the service refuses to start, naming the key.
    let ring = keys::KeyRing::open(&vendor.data_dir().join("keys")).unwrap();
    let root = keys::Root::open(Path::new(&vendor.root_dir())).unwrap();
    let past = OffsetDateTime::now_utc() - time::Duration::days(400);
    let expired = root.certify(ring.active().public_key(), past, past + time::Duration::days(30), None).unwrap();
    let keys_dir = vendor.data_dir().join("keys");
    std::fs::remove_file(keys_dir.join(format!("{}.cert", ring.active().key_id()))).unwrap();
    let mut ring = keys::KeyRing::open(&keys_dir).unwrap();
    ring.add_certificate(&expired).unwrap();
    ring.save(&keys_dir).unwrap();
    let err = vendor.issuer(&["token", "issue", "--license", id, "--fingerprint", "fp-1"]).failed(1);
    assert!(err.contains("has no certificate that covers"), "{err}");
    // Only signing refuses: the vendor can still list and revoke (and the service refuses to start).
    vendor.issuer(&["license", "revoke", id]).ok();
    assert_eq!(vendor.issuer(&["license", "list", "--json"]).json()["licenses"][0]["status"], "revoked");
    let flags = issuer::Flags::new(None, Some(vendor.data_dir()), None);
    let config = issuer::Config::load(None, |_| None, flags).unwrap();
    let refused = tokio::runtime::Runtime::new().unwrap().block_on(issuer::start(&config)).unwrap_err();
    assert!(refused.to_string().contains("has no certificate that covers"), "{refused}");
}
