//! Snapshot tests of the vendor CLI: real invocations of the `issuer` binary, each in its own temporary working
//! directory (so the default data directory `./issuer-data` is private to the test), with stdout, stderr and the exit
//! code compared to the expected text. In expected text `[..]` matches any run of characters within one line (random
//! ids, keys, tokens and times).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead as _;
use std::process::Stdio;

use common::{assert_matches, line_matches, Sandbox};
use serde_json::Value;

#[test]
fn wildcard_matching_works_within_lines() {
    assert!(line_matches("key: ABC-123", "key: [..]"));
    assert!(line_matches("a 1 b 2 c", "a [..] b [..] c"));
    assert!(!line_matches("a 1 b 2", "a [..] b [..] c"));
    assert!(!line_matches("abc", "abd"));
}

#[test]
fn help_lists_every_subcommand() {
    Sandbox::new().run(&["--help"]).assert(
        0,
        "
The license issuer: HTTP service (public and admin API), SQLite store, token signing, vendor CLI.

Usage: issuer [OPTIONS] <COMMAND>

Commands:
  init         Create the data directory, store, signing key ring and admin API token (printed once)
  serve        Run the HTTP service (creates the data directory, store, key ring and an admin token on first start)
  keys         Signing keys: generate, list, prepare, rotate, retire, certificates and roots, export the public key set
  root         The vendor's root key (keep it offline): create it, show its line, certify signing keys
  revocations  The signed revocation list for offline apps: export it to a file
  license      Licenses: create, list, show, update, suspend, reinstate, revoke, import from CSV
  policy       Policies, the named terms of licenses: create, list, show, update, delete
  machine      Machines activated on a license: list, remove
  token        Tokens: issue (also from an air-gapped activation request), inspect, redeem a deactivation code
  admin-token  Admin API tokens: create (the secret is printed once), list, revoke
  ip-rule      Client network rules (CIDR allow and deny, global, per policy or per license): create, list, delete
  webhook      Webhook endpoints: create, list, show, delete, rotate-secret, enable, deliveries, resend
  events       The audit log: every event, with its actor and client IP
  backup       Copy the SQLite store, consistent while `serve` runs on the same data directory (`VACUUM INTO`)
  doctor       Check the configuration, data directory, store, key ring and clock, changing nothing; say what to fix
  completions  Print the completion script of a shell: bash, zsh, fish, elvish or powershell
  man          Print the man page issuer(1), or with --dir write one page per command there
  config       Configuration helpers
  help         Print this message or the help of the given subcommand(s)

Options:
      --data-dir <DIR>      Data directory of the SQLite store and key ring [default: ./issuer-data; env ISSUER_DATA_DIR]
      --database-url <URL>  Database URL [default: the SQLite file in the data directory; env ISSUER_DATABASE_URL]
      --config <FILE>       TOML config file (see `issuer config example`) [env ISSUER_CONFIG]
  -h, --help                Print help
  -V, --version             Print version
",
        "",
    );
    Sandbox::new().run(&["token", "--help"]).assert(
        0,
        "
Tokens: issue (also from an air-gapped activation request), inspect, redeem a deactivation code

Usage: issuer token [OPTIONS] <COMMAND>

Commands:
  issue       Sign a token for a machine: counted as an activation (same slot limit and events as the API)
  inspect     Decode a token: its claims, and whether it verifies against the key ring
  deactivate  Redeem an offline deactivation code (DEA1-...): frees the machine's slot, once
  help        Print this message or the help of the given subcommand(s)

Options:
      --data-dir <DIR>      Data directory of the SQLite store and key ring [default: ./issuer-data; env ISSUER_DATA_DIR]
      --database-url <URL>  Database URL [default: the SQLite file in the data directory; env ISSUER_DATABASE_URL]
      --config <FILE>       TOML config file (see `issuer config example`) [env ISSUER_CONFIG]
  -h, --help                Print help
  -V, --version             Print version
",
        "",
    );
}

#[test]
fn init_creates_everything_once_and_refuses_to_run_again() {
    let sandbox = Sandbox::new();
    sandbox.run(&["init"]).assert(
        0,
        "
Initialized the issuer in ./issuer-data
  store:    ./issuer-data/issuer.db
  key ring: ./issuer-data/keys (active key [..])
Created the admin API token. It is shown only this once (the issuer keeps only its hash); store it now:
admin token: iat_[..]
Public key set for your apps (`issuer keys export --format rust` prints it as a Rust constant):
lpk1.[..]
",
        "",
    );
    assert!(sandbox.path().join("issuer-data/issuer.db").exists());
    sandbox.run(&["init"]).assert(
        1,
        "",
        "error: ./issuer-data is already initialized (its key ring ./issuer-data/keys exists); nothing was changed\n",
    );
}

#[test]
fn commands_on_an_uninitialized_directory_say_to_run_init() {
    Sandbox::new().run(&["license", "list"]).assert(
        1,
        "",
        "error: ./issuer-data is not an initialized issuer data directory (it has no key ring); run `issuer init` \
         first, or pass --data-dir (or set ISSUER_DATA_DIR) to the right one\n",
    );
}

#[test]
fn license_create_list_and_show() {
    let sandbox = Sandbox::initialized();
    sandbox.run(&["license", "create", "--email", "bob@example.com", "--product", "acme-cad", "--slots", "3"]).assert(
        0,
        "
Created license [..]
id:           [..]
key:          [..]-[..]-[..]-[..]
email:        bob@example.com
product:      acme-cad
status:       active
slots:        3
expires:      never
entitlements: -
created:      [..]T[..]Z
updated:      [..]T[..]Z
",
        "",
    );
    let license = sandbox.create_license();
    assert_eq!(license["email"], "ada@example.com");
    assert_eq!(license["max_machines"], 2);
    assert_eq!(license["expires_at"], "2030-01-31T00:00:00Z");
    assert_eq!(license["entitlements"], serde_json::json!(["pro", "export"]));
    assert_eq!(license["metadata"]["order"], "A-1001");
    let id = license["id"].as_str().unwrap();
    let key = license["key"].as_str().unwrap();

    sandbox.run(&["license", "list"]).assert(
        0,
        "
ID                                    KEY                      EMAIL            PRODUCT   STATUS  SLOTS  EXPIRES
[..]  [..]  bob@example.com  acme-cad  active  3      never
[..]  [..]  ada@example.com  acme-cad  active  2      2030-01-31T00:00:00Z
",
        "",
    );
    let page = sandbox.json(&["license", "list", "--email", "ADA@example.com", "--json"]);
    assert_eq!(page["licenses"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], Value::Null);
    let first = sandbox.json(&["license", "list", "--limit", "1", "--json"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = sandbox.json(&["license", "list", "--limit", "1", "--cursor", cursor, "--json"]);
    assert_eq!(second["licenses"][0]["id"], id);

    // By key as well as by id.
    let shown = sandbox.json(&["license", "show", key, "--json"]);
    assert_eq!(shown["license"]["id"], id);
    assert_eq!(shown["machines_used"], 0);
    assert_eq!(shown["recent_events"][0]["kind"], "created");
    sandbox.run(&["license", "show", id]).assert(
        0,
        &format!(
            "
id:           {id}
key:          {key}
email:        ada@example.com
product:      acme-cad
status:       active
slots:        2
expires:      2030-01-31T00:00:00Z
entitlements: pro, export
metadata:     {{\"order\":\"A-1001\"}}
created:      [..]
updated:      [..]

Machines (0 of 2 slots used):

Recent events (latest 20, oldest first):
AT                    EVENT            MACHINE  CLIENT IP  DETAIL
[..]Z  license.created  -        -          {{\"email\":\"ada@example.com\",\"max_machines\":2,\"product\":\"acme-cad\"}}
"
        ),
        "",
    );
}

#[test]
fn license_lifecycle_and_errors() {
    let sandbox = Sandbox::initialized();
    let id = sandbox.create_license()["id"].as_str().unwrap().to_string();
    let updated = sandbox.json(&["license", "update", &id, "--slots", "5", "--perpetual", "--json"]);
    assert_eq!((updated["max_machines"].as_u64(), &updated["expires_at"]), (Some(5), &Value::Null));
    sandbox.run(&["license", "suspend", &id]).assert(0, "License [..] is suspended (ada@example.com, acme-cad).\n", "");
    sandbox.run(&["license", "reinstate", &id]).assert(0, "License [..] is active (ada@example.com, acme-cad).\n", "");
    sandbox.run(&["license", "revoke", &id]).success();
    sandbox.run(&["license", "reinstate", &id]).assert(
        1,
        "",
        "error: the license is revoked; it cannot be reinstated (a revocation is final)\n",
    );
    sandbox.run(&["license", "show", "0190f5a4-7c1e-7a3b-9c4d-5e6f708192a3"]).assert(
        1,
        "",
        "error: no license with this key or id exists\n",
    );
    sandbox.run(&["license", "show", "not-a-license"]).assert(
        2,
        "",
        "error: `not-a-license` is neither a license id (UUID) nor a license key (XXXXX-XXXXX-XXXXX-XXXXX)\n",
    );
    sandbox.run(&["license", "update", &id]).assert(
        2,
        "",
        "error: nothing to update: give --slots, --expires, --duration, --perpetual, --entitlement, --no-entitlements \
         or --metadata\n",
    );
    let usage = sandbox.run(&["license", "create", "--product", "acme-cad"]);
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.starts_with("error: the following required arguments were not provided:"), "{usage:?}");
    sandbox.run(&["license", "create", "--email", "nope", "--product", "acme-cad"]).assert(
        2,
        "",
        "error: invalid email: must be 3-254 bytes with an @ and no whitespace or control characters\n",
    );
}

#[test]
fn keys_list_rotate_export_and_retire() {
    let sandbox = Sandbox::initialized();
    sandbox.run(&["keys", "list"]).assert(
        0,
        "
KEY ID            STATUS  CREATED               CERTIFIED UNTIL
[..]  active  [..]Z  -
",
        "",
    );
    let first = sandbox.json(&["keys", "list", "--json"])["keys"][0].clone();
    let old_id = first["key_id"].as_str().unwrap();
    let old_line = first["public_key"].as_str().unwrap();
    sandbox.run(&["keys", "rotate"]).assert(
        0,
        &format!(
            "
New active signing key: [..]. The previous key {old_id} is retired: tokens it signed keep verifying.
A running issuer service picks the new key up within 5 seconds; no restart is needed.
Public key set to distribute to your apps (the new key first):
lpk1.[..]
{old_line}
"
        ),
        "",
    );
    let out = sandbox.run(&["keys", "export", "--format", "rust"]);
    out.assert(
        0,
        &format!(
            r#"
/// The license issuer's public keys (active first), from `issuer keys export --format rust`.
/// Load them with `verifier::KeySet::from_lines(LICENSE_PUBLIC_KEYS)`.
pub const LICENSE_PUBLIC_KEYS: &[&str] = &[
    "lpk1.[..]", // [..] (active)
    "{old_line}", // {old_id} (retired)
];
"#
        ),
        "",
    );
    // The exported lines load as the verifier's key set.
    let lines = sandbox.run(&["keys", "export"]).success();
    assert_eq!(verifier::KeySet::from_text(&lines).unwrap().len(), 2);
    let pem = sandbox.run(&["keys", "export", "--format", "pem"]).success();
    assert_eq!(pem.matches("-----BEGIN PUBLIC KEY-----").count(), 2);

    let active = sandbox.json(&["keys", "list", "--json"])["keys"][0]["key_id"].as_str().unwrap().to_string();
    sandbox.run(&["keys", "retire", &active]).assert(
        1,
        "",
        &format!("error: key {active} is the active signing key; rotate to a new key before removing it\n"),
    );
    sandbox.run(&["keys", "retire", "xyz"]).assert(
        2,
        "",
        "error: `xyz` is not a key id (16 hex digits, see `issuer keys list`)\n",
    );
    sandbox.run(&["keys", "retire", old_id]).success();
    assert_eq!(sandbox.json(&["keys", "list", "--json"])["keys"].as_array().unwrap().len(), 1);
    // The rotation was recorded in the store: commands that open the service (and sign) accept the new ring.
    sandbox.run(&["license", "list"]).success();

    // A ring rotated behind the CLI's back (the files changed, nothing recorded) is refused with what to do.
    let keys_dir = sandbox.path().join("issuer-data").join("keys");
    let mut ring = keys::KeyRing::open(&keys_dir).unwrap();
    ring.rotate().unwrap();
    ring.save(&keys_dir).unwrap();
    let refused = sandbox.run(&["license", "list"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("which the store has never recorded") && refused.stderr.contains(&active),
        "{}",
        refused.stderr
    );
    // Recording the ring as the files have it (the way back after a rotation whose record was lost).
    let recorded = sandbox.run(&["keys", "record"]).success();
    assert!(recorded.starts_with("Recorded the key ring in the store"), "{recorded}");
    sandbox.run(&["license", "list"]).success();
    // A rotation from an out-of-date copy is refused before anything changes.
    let store_key = sandbox.json(&["keys", "list", "--json"])["keys"][0]["key_id"].as_str().unwrap().to_string();
    let stale = keys::KeyRing::open(&keys_dir).unwrap();
    let mut ahead = keys::KeyRing::open(&keys_dir).unwrap();
    ahead.rotate().unwrap();
    ahead.save(&keys_dir).unwrap();
    sandbox.run(&["keys", "record"]).success();
    stale.save(&keys_dir).unwrap();
    let refused = sandbox.run(&["keys", "rotate"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("this copy is out of date") && refused.stderr.contains(&store_key),
        "{}",
        refused.stderr
    );
}

#[test]
fn keys_generate_writes_a_private_key_file_and_refuses_to_overwrite() {
    let sandbox = Sandbox::new();
    sandbox.run(&["keys", "generate", "--out", "signing.key"]).assert(
        0,
        "
Wrote secret key [..] to signing.key (PKCS#8 PEM, mode 0600); keep it secret.
key id:     [..]
public key: lpk1.[..]
",
        "",
    );
    let text = std::fs::read_to_string(sandbox.path().join("signing.key")).unwrap();
    assert!(text.contains("-----BEGIN PRIVATE KEY-----"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sandbox.path().join("signing.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    sandbox.run(&["keys", "generate", "--out", "signing.key"]).assert(
        1,
        "",
        "error: signing.key exists; pass --force to replace it\n",
    );
    sandbox.run(&["keys", "generate", "--out", "signing.key", "--force"]).success();
}

#[test]
fn token_issue_inspect_and_the_slot_limit() {
    let sandbox = Sandbox::initialized();
    let license = sandbox.create_license();
    let id = license["id"].as_str().unwrap();
    sandbox.run(&["token", "issue", "--license", id, "--fingerprint", "machine-one", "--name", "ada-laptop"]).assert(
        0,
        "
Activated machine machine-one on license [..] (ada@example.com, acme-cad): new machine; 1 of 2 slots used.
Online token: refresh after [..]Z, valid until [..]Z.
Token:
lic1.[..]
",
        "",
    );
    // Offline: written to <fingerprint>.license by default.
    sandbox.run(&["token", "issue", "--license", id, "--fingerprint", "machine-two", "--offline"]).assert(
        0,
        "
Activated machine machine-two on license [..] (ada@example.com, acme-cad): new machine; 2 of 2 slots used.
Offline token: no token expiry; the license expires 2030-01-31T00:00:00Z.
Token written to machine-two.license; deliver it to the machine as that file, or copy-paste this line:
lic1.[..]
",
        "",
    );
    let token = std::fs::read_to_string(sandbox.path().join("machine-two.license")).unwrap();
    sandbox.run(&["token", "inspect", token.trim()]).assert(
        0,
        &format!(
            "
signature:        valid (signed by active key [..])
kind:             offline
license id:       {id}
license key:      {}
email:            ada@example.com
product:          acme-cad
entitlements:     pro, export
slots:            2
fingerprint:      machine-two
issued at:        [..]Z
license expires:  2030-01-31T00:00:00Z
refresh after:    never (offline token)
token expires:    never (offline token)
",
            license["key"].as_str().unwrap()
        ),
        "",
    );
    // The slot limit holds for the CLI as for the API; re-activating an active machine takes no slot.
    sandbox.run(&["token", "issue", "--license", id, "--fingerprint", "machine-three"]).assert(
        1,
        "",
        "error: all 2 machine slots of the license are in use; deactivate a machine first\n",
    );
    let again = sandbox.json(&["token", "issue", "--license", id, "--fingerprint", "machine-one", "--json"]);
    assert_eq!((again["new_machine"].as_bool(), again["kind"].as_str()), (Some(false), Some("online")));
    sandbox.run(&["machine", "list", id]).assert(
        0,
        "
License [..]: 2 of 2 slots used.
FINGERPRINT  NAME        PLATFORM  TOKEN    ACTIVATED             LAST SEEN
machine-one  ada-laptop  -         online   [..]Z  [..]Z
machine-two  -           -         offline  [..]Z  [..]Z
",
        "",
    );
    sandbox.run(&["machine", "remove", id, "machine-one"]).assert(
        0,
        "Removed machine machine-one from license [..]: 1 of 2 slots used.\n",
        "",
    );
    sandbox.run(&["machine", "remove", id, "machine-one"]).assert(
        1,
        "",
        &format!("error: no machine with fingerprint machine-one is activated on license {id}\n"),
    );

    // A token that is not a token, and an altered one.
    sandbox.run(&["token", "inspect", "hello"]).assert(
        2,
        "",
        "error: the license token is malformed (not a license token (expected `lic1.`)); copy the whole token again\n",
    );
    let mut altered = token.trim().to_string();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let out = sandbox.run(&["token", "inspect", &altered]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.starts_with("signature:        BAD SIGNATURE"), "{}", out.stdout);
    assert_eq!(out.stderr, "error: the token's signature is invalid\n");
}

/// `token` with its raw bytes (header, claims, signature) changed by `edit`, re-encoded as token text.
fn tampered(token: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut raw = URL_SAFE_NO_PAD.decode(token.trim().strip_prefix("lic1.").unwrap()).unwrap();
    edit(&mut raw);
    format!("lic1.{}", URL_SAFE_NO_PAD.encode(raw))
}

#[test]
fn token_inspect_checks_the_signature_before_showing_claims() {
    let sandbox = Sandbox::initialized();
    let id = sandbox.create_license()["id"].as_str().unwrap().to_string();
    let issued = sandbox.json(&["token", "issue", "--license", &id, "--fingerprint", "machine-one", "--json"]);
    let token = issued["token"].as_str().unwrap();

    // The email changed: the signature is reported first, then the claims as the token states them, marked.
    let forged = tampered(token, |raw| {
        let at = raw.windows(15).position(|w| w == b"ada@example.com").unwrap();
        raw[at] = b'e';
    });
    let out = sandbox.run(&["token", "inspect", &forged]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("signature:        BAD SIGNATURE: altered"), "{}", out.stdout);
    assert!(lines[1].starts_with("(the claims below are NOT verified"), "{}", out.stdout);
    assert!(lines.contains(&"email:            eda@example.com"), "{}", out.stdout);
    assert_eq!(out.stderr, "error: the token's signature is invalid\n");
    let inspected = sandbox.json_failing(&["token", "inspect", &forged, "--json"]);
    assert_eq!(
        (inspected["verified"].as_bool(), inspected["verification"].as_str()),
        (Some(false), Some("bad_signature"))
    );
    assert_eq!(inspected["claims"]["email"], "eda@example.com");

    // A byte slipped in after the claims: they no longer decode, and the bad signature is still what is reported
    // (not a malformed token, exit code 2, as when the claims were read first).
    let padded = tampered(token, |raw| {
        let at = raw.len() - 64;
        raw.insert(at, 0);
    });
    sandbox.run(&["token", "inspect", &padded]).assert(
        1,
        "
signature:        BAD SIGNATURE: altered, or not signed by this issuer's key [..]
claims:           cannot be decoded (the license token is malformed ([..]); copy the whole token again)
",
        "error: the token's signature is invalid\n",
    );
    let inspected = sandbox.json_failing(&["token", "inspect", &padded, "--json"]);
    assert_eq!((inspected["verification"].as_str(), &inspected["claims"]), (Some("bad_signature"), &Value::Null));

    // Surrounding whitespace: exactly what the format trims (HT LF FF CR SP), in a file as inline.
    std::fs::write(sandbox.path().join("spaced.license"), format!(" \t{token}\r\n")).unwrap();
    let inspected = sandbox.json(&["token", "inspect", "@spaced.license", "--json"]);
    assert_eq!(
        (inspected["verified"].as_bool(), inspected["claims"]["email"].as_str()),
        (Some(true), Some("ada@example.com"))
    );
    for (name, text) in [("nbsp", format!("{token}\u{a0}")), ("vertical tab", format!("{token}\u{b}"))] {
        let out = sandbox.run(&["token", "inspect", &text]);
        assert_eq!(out.code, 2, "{name}: {out:?}");
        assert!(out.stderr.starts_with("error: the license token is malformed"), "{name}: {}", out.stderr);
    }
}

#[test]
fn token_issue_from_a_request_code_and_its_errors() {
    let sandbox = Sandbox::initialized();
    let license = sandbox.create_license();
    let key = license["key"].as_str().unwrap();
    let request = verifier::ActivationRequest::new(key, "air-gapped-fp", "lab-pc-07").unwrap().to_code().unwrap();
    std::fs::write(sandbox.path().join("request.txt"), format!("{request}\n")).unwrap();
    sandbox.run(&["token", "issue", "--request", "@request.txt", "--out", "lab.license"]).assert(
        0,
        "
Activated machine air-gapped-fp on license [..] (ada@example.com, acme-cad): new machine; 1 of 2 slots used.
Offline token: no token expiry; the license expires 2030-01-31T00:00:00Z.
Token written to lab.license; deliver it to the machine as that file, or copy-paste this line:
lic1.[..]
",
        "",
    );
    // One character wrong: reported as a typo, exit code 2.
    let mut typo: Vec<char> = request.chars().collect();
    typo[7] = if typo[7] == '7' { '8' } else { '7' };
    let typo: String = typo.into_iter().collect();
    sandbox.run(&["token", "issue", "--request", &typo]).assert(
        2,
        "",
        "error: the activation request is mistyped: its check characters do not match; compare it character by \
         character with the code the app shows (or carry it as a file)\n",
    );
    sandbox.run(&["token", "issue", "--request", "DEA1-ABCDE"]).assert(
        2,
        "",
        "error: this is a deactivation code (DEA1-...), not an activation request (ACT1-...): redeem it with `issuer \
         token deactivate CODE`\n",
    );
    sandbox.run(&["token", "deactivate", "DEA1-00000-00000"]).assert(
        2,
        "",
        "error: the deactivation code is mistyped: its check characters do not match; compare it character by \
         character with the code the app shows (or carry it as a file)\n",
    );
    sandbox.run(&["token", "deactivate", &request]).assert(
        2,
        "",
        "error: this is an activation request (ACT1-...), not a deactivation code (DEA1-...): sign a token for it \
         with `issuer token issue --request CODE`\n",
    );
    let usage = sandbox.run(&["token", "issue", "--license", "x"]);
    assert_eq!(usage.code, 2, "{usage:?}");
}

#[test]
fn license_import_creates_skips_and_rejects_rows() {
    let sandbox = Sandbox::initialized();
    std::fs::write(
        sandbox.path().join("purchases.csv"),
        "email,product,slots,expiry,entitlements,order_id\n\
         ada@example.com,acme-cad,2,,pro;export,A-1\n\
         bob@example.com,acme-cad,1,365d,,A-2\n\
         carol@example.com,acme-cad,3,2030-01-31T00:00:00Z,pro,A-3\n\
         not-an-email,acme-cad,1,,,A-4\n\
         dave@example.com,acme-cad,many,,,A-5\n",
    )
    .unwrap();
    sandbox.run(&["license", "import", "purchases.csv"]).assert(
        1,
        "
created 3, skipped 0, failed 2
Failed rows, each with its error, are in purchases.rejects.csv; fix them and import that file.
",
        "error: 2 rows failed\n",
    );
    let rejects = std::fs::read_to_string(sandbox.path().join("purchases.rejects.csv")).unwrap();
    assert_matches(
        "reject file",
        &rejects,
        "
email,product,slots,expiry,entitlements,order_id,error
not-an-email,acme-cad,1,,,A-4,line 5: invalid email: must be 3-254 bytes with an @ and no whitespace or control characters
dave@example.com,acme-cad,many,,,A-5,line 6: slots: `many` is not a whole number
",
    );
    // Importing the same file again creates nothing twice.
    let again = sandbox.run(&["license", "import", "purchases.csv", "--reject-file", "again.csv", "--json"]);
    assert_eq!(again.code, 1);
    let summary: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!((summary["created"].as_u64(), summary["skipped"].as_u64()), (Some(0), Some(3)));
    assert_eq!(summary["reject_file"], "again.csv");
    let all = sandbox.json(&["license", "list", "--json"]);
    assert_eq!(all["licenses"].as_array().unwrap().len(), 3);
    assert_eq!(all["licenses"][0]["metadata"]["order_id"], "A-1");

    std::fs::write(sandbox.path().join("bad.csv"), "mail,product\nx,y\n").unwrap();
    sandbox.run(&["license", "import", "bad.csv"]).assert(
        2,
        "",
        "error: the CSV header lacks the columns email, slots, expiry; expected \
         email,product,slots,expiry[,entitlements][,order_id][,policy] (with a policy column, only email is \
         required)\n",
    );
}

#[test]
fn fingerprints_starting_with_a_dash_are_values_not_options() {
    // base64url fingerprints start with `-` one time in 64.
    let sandbox = Sandbox::initialized();
    let license = sandbox.create_license();
    let id = license["id"].as_str().unwrap();
    let issued = sandbox.json(&["token", "issue", "--license", id, "--fingerprint", "-cXbQ2", "--json"]);
    assert_eq!(issued["fingerprint"], "-cXbQ2");
    sandbox.run(&["machine", "remove", id, "-cXbQ2"]).success();
    let machines = sandbox.json(&["machine", "list", id, "--json"]);
    assert_eq!(machines["machines"].as_array().unwrap().len(), 0);
}

#[test]
fn a_license_past_its_expiry_shows_and_filters_as_expired() {
    let sandbox = Sandbox::initialized();
    let current = sandbox.create_license();
    let args = ["license", "create", "--email", "old@example.com", "--product", "acme-cad", "--expires"];
    sandbox.run(&[&args[..], &["2020-01-01T00:00:00Z"]].concat()).assert(
        0,
        "
Created license [..]
id:           [..]
key:          [..]
email:        old@example.com
product:      acme-cad
status:       expired
slots:        1
expires:      2020-01-01T00:00:00Z
entitlements: -
created:      [..]
updated:      [..]
",
        "warning: the expiry 2020-01-01T00:00:00Z has already passed, so the license is expired (validation answers \
         EXPIRED and activations are refused); to give it time: `issuer license update [..] --expires TIME` (or \
         --duration 365d, or --perpetual)\n",
    );
    sandbox.run(&["license", "list"]).assert(
        0,
        "
ID[..]STATUS   SLOTS  EXPIRES
[..]  ada@example.com  acme-cad  active   2      2030-01-31T00:00:00Z
[..]  old@example.com  acme-cad  expired  1      2020-01-01T00:00:00Z
",
        "",
    );
    let emails = |status: &str| -> Vec<String> {
        let page = sandbox.json(&["license", "list", "--status", status, "--json"]);
        page["licenses"].as_array().unwrap().iter().map(|l| l["email"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(emails("expired"), ["old@example.com"]);
    assert_eq!(emails("active"), ["ada@example.com"]);
    let expired = sandbox.json(&["license", "list", "--status", "expired", "--json"]);
    let id = expired["licenses"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(expired["licenses"][0]["status"], "expired");
    assert_eq!(sandbox.json(&["license", "show", &id, "--json"])["license"]["status"], "expired");
    let shown = sandbox.run(&["license", "show", &id]).success();
    assert!(shown.lines().any(|l| l == "status:       expired"), "{shown}");
    assert_eq!(
        sandbox.json(&["license", "show", current["id"].as_str().unwrap(), "--json"])["license"]["status"],
        "active"
    );
    // Suspended and revoked stay themselves past their expiry.
    sandbox.run(&["license", "suspend", &id]).assert(0, "License [..] is suspended (old@example.com, acme-cad).\n", "");
    assert_eq!(emails("expired"), Vec::<String>::new());
    assert_eq!(emails("suspended"), ["old@example.com"]);
    let usage = sandbox.run(&["license", "list", "--status", "lapsed"]);
    assert_eq!(usage.code, 2, "{usage:?}");
    assert!(usage.stderr.contains("`lapsed` is not a status (active, suspended, revoked, expired)"), "{usage:?}");
}

#[test]
fn lowering_slots_below_the_active_machines_warns_and_counts_read_in_the_singular() {
    let sandbox = Sandbox::initialized();
    let id = sandbox.create_license()["id"].as_str().unwrap().to_string();
    for fingerprint in ["machine-one", "machine-two"] {
        sandbox.run(&["token", "issue", "--license", &id, "--fingerprint", fingerprint]).success();
    }
    let updated = sandbox.run(&["license", "update", &id, "--slots", "1", "--json"]);
    assert_eq!(updated.code, 0, "{updated:?}");
    assert_matches(
        "stderr",
        &updated.stderr,
        &format!(
            "warning: license {id} now has 1 slot but 2 machines are active: validation answers TOO_MANY_MACHINES \
             on them until 1 machine is deactivated; see them with `issuer machine list {id}` and remove machines \
             with `issuer machine remove {id} FINGERPRINT`\n"
        ),
    );
    let shown = sandbox.run(&["license", "show", &id]).success();
    assert!(shown.contains("\nMachines (2 of 1 slot used):\n"), "{shown}");
    sandbox.run(&["machine", "list", &id]).assert(
        0,
        "
License [..]: 2 of 1 slot used.
FINGERPRINT  NAME  PLATFORM  TOKEN   ACTIVATED             LAST SEEN
machine-one  -     -         online  [..]Z  [..]Z
machine-two  -     -         online  [..]Z  [..]Z
",
        "",
    );
    sandbox.run(&["token", "issue", "--license", &id, "--fingerprint", "machine-three"]).assert(
        1,
        "",
        "error: the 1 machine slot of the license is in use; deactivate a machine first\n",
    );
    sandbox.run(&["machine", "remove", &id, "machine-two"]).assert(
        0,
        "Removed machine machine-two from license [..]: 1 of 1 slot used.\n",
        "",
    );
    // Enough slots again: no warning.
    sandbox.run(&["license", "update", &id, "--slots", "3", "--json"]).success();
}

#[test]
fn license_import_names_the_missing_columns_of_a_short_row() {
    let sandbox = Sandbox::initialized();
    std::fs::write(
        sandbox.path().join("short.csv"),
        "email,product,slots,expiry,entitlements,order_id\n\
         ada@example.com,acme-cad,2,,pro,A-1\n\
         bob@example.com,acme-cad\n\
         carol@example.com,acme-cad,1,,pro\n\
         dave@example.com,acme-cad,,,,A-4\n",
    )
    .unwrap();
    sandbox.run(&["license", "import", "short.csv"]).assert(
        1,
        "
created 1, skipped 0, failed 3
Failed rows, each with its error, are in short.rejects.csv; fix them and import that file.
",
        "error: 3 rows failed\n",
    );
    assert_matches(
        "reject file",
        &std::fs::read_to_string(sandbox.path().join("short.rejects.csv")).unwrap(),
        r#"
email,product,slots,expiry,entitlements,order_id,error
bob@example.com,acme-cad,,,,,"line 3: missing columns slots, expiry, entitlements, order_id (the row has 2 fields, the header 6)"
carol@example.com,acme-cad,1,,pro,,"line 4: missing column order_id (the row has 5 fields, the header 6)"
dave@example.com,acme-cad,,,,A-4,line 5: slots: empty; give the number of machine slots
"#,
    );
}

#[test]
fn importing_a_reject_file_replaces_its_error_column_and_never_overwrites_it() {
    let sandbox = Sandbox::initialized();
    let rejects = "email,product,slots,expiry,entitlements,order_id,error\n\
                   ada@example.com,acme-cad,2,,pro,A-1,line 2: slots: `two` is not a whole number\n\
                   bob@example.com,acme-cad,many,,,A-2,line 3: slots: `many` is not a whole number\n";
    std::fs::write(sandbox.path().join("purchases.rejects.csv"), rejects).unwrap();
    sandbox.run(&["license", "import", "purchases.rejects.csv"]).assert(
        1,
        "
created 1, skipped 0, failed 1
Failed rows, each with its error, are in purchases.rejects-2.csv; fix them and import that file.
",
        "error: 1 row failed\n",
    );
    // The input is untouched; the new reject file has one `error` column, with the new error.
    assert_eq!(std::fs::read_to_string(sandbox.path().join("purchases.rejects.csv")).unwrap(), rejects);
    assert_matches(
        "reject file",
        &std::fs::read_to_string(sandbox.path().join("purchases.rejects-2.csv")).unwrap(),
        "
email,product,slots,expiry,entitlements,order_id,error
bob@example.com,acme-cad,many,,,A-2,line 3: slots: `many` is not a whole number
",
    );
    // The next round counts on; naming the input as the reject file is refused before anything is imported.
    let again = sandbox.json_failing(&["license", "import", "purchases.rejects-2.csv", "--json"]);
    assert_eq!(again["reject_file"], "purchases.rejects-3.csv");
    sandbox
        .run(&["license", "import", "purchases.rejects-2.csv", "--reject-file", "./purchases.rejects-2.csv"])
        .assert(
            2,
            "",
            "error: --reject-file ./purchases.rejects-2.csv is the input file; name another file for the failed rows\n",
        );
}

#[test]
fn a_mistyped_license_key_is_called_mistyped() {
    let sandbox = Sandbox::initialized();
    let key = sandbox.create_license()["key"].as_str().unwrap().to_string();
    let mut typo = key.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == '2' { '3' } else { '2' });
    sandbox.run(&["license", "show", &typo]).assert(
        2,
        "",
        "error: the license key looks mistyped: its check character does not match; compare it with the original\n",
    );
    sandbox.run(&["license", "show", &key[..key.len() - 1]]).assert(
        2,
        "",
        "error: the license key looks mistyped: it has 19 characters, a key has 20 (XXXXX-XXXXX-XXXXX-XXXXX)\n",
    );
}

#[test]
fn token_issue_without_a_machine_names_both_ways() {
    let sandbox = Sandbox::initialized();
    sandbox.run(&["token", "issue"]).assert(
        2,
        "",
        "error: say which machine to activate: --license ID|KEY and --fingerprint FP, or --request CODE|@FILE with an \
         air-gapped app's activation request (ACT1-...)\n",
    );
    // clap's own usage errors show both forms too.
    let half = sandbox.run(&["token", "issue", "--license", "x"]);
    assert_eq!(half.code, 2, "{half:?}");
    assert!(
        half.stderr.contains(
            "\nUsage: issuer token issue --license <ID|KEY> --fingerprint <FINGERPRINT> [OPTIONS]\n       issuer \
             token issue --request <CODE|@FILE> [OPTIONS]\n"
        ),
        "{half:?}"
    );
    let both = sandbox.run(&["token", "issue", "--request", "ACT1-ABCDE", "--fingerprint", "fp"]);
    assert_eq!(both.code, 2, "{both:?}");
    assert!(
        both.stderr.starts_with(
            "error: the argument '--request <CODE|@FILE>' cannot be used with '--fingerprint <FINGERPRINT>'\n"
        ),
        "{both:?}"
    );
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let sandbox = Sandbox::initialized();
    // More output than a pipe holds (64 KiB), so the command meets the closed pipe whatever the timing.
    let mut csv = String::from("email,product,slots,expiry,entitlements,order_id\n");
    for i in 0..400 {
        csv.push_str(&format!("{}{i}@example.com,acme-cad,1,,,O-{i}\n", "a".repeat(200)));
    }
    std::fs::write(sandbox.path().join("many.csv"), csv).unwrap();
    sandbox.run(&["license", "import", "many.csv"]).success();
    for args in [&["license", "list", "--limit", "400"][..], &["license", "list", "--limit", "400", "--json"]] {
        // As `issuer license list | head -1`: read one line, then close the pipe.
        let mut child = sandbox.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!((out.status.code(), stderr.as_str()), (Some(0), ""), "{args:?}");
        assert!(first.starts_with("ID ") || first == "{\n", "{first}");
    }
}

#[test]
fn a_closed_stdout_does_not_hide_failed_import_rows() {
    let sandbox = Sandbox::initialized();
    let csv = "email,product,slots,expiry,entitlements,order_id\nok@example.com,acme-cad,1,,,O-1\nbad@example.com,acme-cad,none,,,O-2\n";
    std::fs::write(sandbox.path().join("mixed.csv"), csv).unwrap();
    // The reader is gone before the summary is written (`issuer license import mixed.csv | true`).
    let mut child = sandbox
        .command(&["license", "import", "mixed.csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "the failed row still fails the command: {stderr}");
    assert!(stderr.contains("1 row failed"), "{stderr}");
}

#[test]
fn completions_and_man_pages_cover_every_command() {
    let sandbox = Sandbox::new();
    let bash = sandbox.run(&["completions", "bash"]).success();
    for command in ["ip-rule", "license", "webhook", "admin-token", "completions", "--data-dir"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    // The script is valid bash.
    let script = sandbox.path().join("issuer.bash");
    std::fs::write(&script, &bash).unwrap();
    let checked = std::process::Command::new("bash").arg("-n").arg(&script).status().unwrap();
    assert!(checked.success(), "bash -n refused the completion script");
    assert!(sandbox.run(&["completions", "zsh"]).success().starts_with("#compdef issuer"));
    assert!(sandbox.run(&["completions", "fish"]).success().contains("complete -c issuer"));
    let refused = sandbox.run(&["completions", "tcsh"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("tcsh") && refused.stderr.contains("bash"), "{}", refused.stderr);

    let page = sandbox.run(&["man"]).success();
    assert!(page.contains(".TH issuer 1") && page.contains("ip\\-rule"), "{page}");
    let dir = sandbox.path().join("man");
    let said = sandbox.run(&["man", "--dir", dir.to_str().unwrap()]).success();
    for page in ["issuer.1", "issuer-license.1", "issuer-license-create.1", "issuer-ip-rule-create.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") && text.contains(".TH"), "{page}");
    }
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert!(pages > 50 && said.contains(&format!("Wrote {pages} man pages")), "{said}");
}

#[test]
fn doctor_passes_a_healthy_data_directory_and_names_the_fix_of_each_problem() {
    let sandbox = Sandbox::initialized();
    let healthy = sandbox.run(&["doctor"]).success();
    assert!(healthy.contains("healthy: every check passed") && !healthy.contains("PROBLEM"), "{healthy}");
    let data = sandbox.path().join("issuer-data");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = sandbox.run(&["doctor"]);
        assert_eq!(open.code, 1, "{}", open.stdout);
        assert!(open.stdout.contains("fix: chmod 700") && open.stderr.contains("1 problem found"), "{open:?}");
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "the doctor changes nothing");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // Another data directory's key ring: it signs with a key the store never recorded.
    let other = Sandbox::initialized();
    std::fs::rename(data.join("keys"), sandbox.path().join("keys.mine")).unwrap();
    let keyless = sandbox.run(&["doctor"]);
    assert_eq!(keyless.code, 1);
    assert!(keyless.stdout.contains("holds no key ring") && keyless.stdout.contains("copy the keys/"), "{keyless:?}");
    let copied = std::process::Command::new("cp")
        .args(["-a", other.path().join("issuer-data/keys").to_str().unwrap(), data.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
    let foreign = sandbox.run(&["doctor"]);
    assert_eq!(foreign.code, 1);
    assert!(
        foreign.stdout.contains("the store records") && foreign.stdout.contains("issuer keys record"),
        "{foreign:?}"
    );
    // A database that is not one, named by an SQLite URL: a problem, never "healthy".
    let garbage = sandbox.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
    let url = format!("sqlite://{}", garbage.display());
    let corrupt = sandbox.run(&["--database-url", &url, "doctor"]);
    assert_eq!(corrupt.code, 1, "{corrupt:?}");
    assert!(corrupt.stdout.contains("garbage.db cannot be read"), "{corrupt:?}");
    let missing = sandbox.run(&["--data-dir", "nowhere", "doctor"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stdout.contains("does not exist") && missing.stdout.contains("issuer init"), "{missing:?}");
    assert!(!sandbox.path().join("nowhere").exists(), "the doctor creates nothing");
    // With its reader gone (`issuer doctor | head -1`, the pipe closed before the first line), the verdict still
    // reaches the exit code: the checks go on unprinted.
    let fresh = Sandbox::initialized();
    for (sandbox, args, code) in [(&fresh, &["doctor"][..], 0), (&sandbox, &["--data-dir", "nowhere", "doctor"][..], 1)]
    {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = sandbox.command(args).stdout(writer).stderr(Stdio::null()).status().unwrap();
        assert_eq!(status.code(), Some(code), "{args:?} into a closed pipe");
    }
}
