//! The CLI of admin tokens, webhooks and the audit log: `issuer admin-token ...`, `issuer webhook ...` and `issuer
//! events list`, through real invocations of the `issuer` binary on a real SQLite data directory, as in tests/cli.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_matches, line_matches, Sandbox};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const HOOK_URL: &str = "http://127.0.0.1:9/hook";

fn is_time(v: &Value) -> bool {
    v.as_str().is_some_and(|t| OffsetDateTime::parse(t, &Rfc3339).is_ok())
}

/// A webhook endpoint for `license.created`, created with `--json`.
fn create_hook(sandbox: &Sandbox) -> Value {
    sandbox.json(&["webhook", "create", "--url", HOOK_URL, "--events", "license.created", "--json"])
}

#[test]
fn admin_token_create_list_and_revoke() {
    let sandbox = Sandbox::initialized();
    let read = sandbox.json(&["admin-token", "create", "--label", "dashboard", "--scope", "read", "--json"]);
    assert_eq!((&read["label"], &read["scope"]), (&json!("dashboard"), &json!("read")));
    assert_eq!((&read["last_used_at"], &read["revoked_at"]), (&Value::Null, &Value::Null));
    assert!(is_time(&read["created_at"]), "{read}");
    let read_secret = read["token"].as_str().unwrap().to_string();
    assert!(read_secret.len() > 20, "{read}");

    let out = sandbox.run(&["admin-token", "create", "--label", "billing", "--scope", "write"]);
    out.assert(
        0,
        "
Created admin token [..]
id:        [..]
label:     billing
scope:     write
created:   [..]Z
last used: never
revoked:   no
It is shown only this once (the issuer keeps only its hash); store it now:
admin token: [..]
",
        "",
    );
    let write_secret = out.stdout.lines().last().unwrap().strip_prefix("admin token: ").unwrap().to_string();
    let write_id = out.stdout.lines().next().unwrap().strip_prefix("Created admin token ").unwrap().to_string();

    // Listed with labels and scopes (the token of `init` first), never with a secret.
    let text = sandbox.run(&["admin-token", "list"]).success();
    let json_text = sandbox.run(&["admin-token", "list", "--json"]).success();
    for listed in [&text, &json_text] {
        assert!(!listed.contains(&read_secret) && !listed.contains(&write_secret), "{listed}");
    }
    // Oldest first; tokens created in the same second come in the order of their ids.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "ID                LABEL                   SCOPE  CREATED               LAST USED  REVOKED");
    let read_id = read["id"].as_str().unwrap();
    for row in [
        "[..]  created at first start  write  [..]Z  never      -".to_string(),
        format!("{read_id}  dashboard               read   [..]Z  never      -"),
        format!("{write_id}  billing                 write  [..]Z  never      -"),
    ] {
        assert!(lines[1..].iter().any(|l| line_matches(l, &row)), "no line matches {row}:\n{text}");
    }
    let list: Value = serde_json::from_str(&json_text).unwrap();
    let tokens = list["admin_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3, "{list}");
    assert!(tokens.iter().all(|t| t.get("token").is_none()), "{list}");
    let by_id = |list: &Value, id: &str| -> Value {
        list["admin_tokens"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap().clone()
    };
    let mut created = read.clone();
    created.as_object_mut().unwrap().remove("token");
    assert_eq!(by_id(&list, read_id), created);
    let billing = by_id(&list, &write_id);
    assert_eq!((&billing["label"], &billing["scope"]), (&json!("billing"), &json!("write")));

    // Revoked: the answer and the list show when.
    let revoked = sandbox.json(&["admin-token", "revoke", &write_id, "--json"]);
    assert!(is_time(&revoked["revoked_at"]), "{revoked}");
    assert_eq!(revoked["id"], json!(write_id));
    let list = sandbox.json(&["admin-token", "list", "--json"]);
    assert_eq!(by_id(&list, &write_id)["revoked_at"], revoked["revoked_at"]);
    assert_eq!(by_id(&list, read_id)["revoked_at"], Value::Null);
    let text = sandbox.run(&["admin-token", "list"]).success();
    let row = text.lines().find(|l| l.starts_with(&write_id)).unwrap();
    assert!(row.ends_with(&format!("  {}", revoked["revoked_at"].as_str().unwrap())), "{text}");
    // Revoking again changes nothing.
    sandbox.run(&["admin-token", "revoke", &write_id]).assert(
        0,
        &format!("Admin token {write_id} (billing) was revoked at [..]Z: every request with it is refused.\n"),
        "",
    );

    sandbox.run(&["admin-token", "revoke", "0123456789abcdef"]).assert(
        1,
        "",
        "error: no stored admin token has the id `0123456789abcdef` (see `issuer admin-token list`; ISSUER_ADMIN_TOKEN \
         is revoked by removing it from the environment)\n",
    );
    let bad = sandbox.run(&["admin-token", "create", "--label", "x", "--scope", "admin"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.starts_with("error: ") && bad.stderr.contains("`admin` is not a scope (read, write)"),
        "{bad:?}"
    );
    let blank = sandbox.run(&["admin-token", "create", "--label", " ", "--scope", "read"]);
    assert_eq!((blank.code, blank.stderr.starts_with("error: --label: ")), (2, true), "{blank:?}");
    assert_eq!(sandbox.json(&["admin-token", "list", "--json"])["admin_tokens"].as_array().unwrap().len(), 3);
}

#[test]
fn webhook_create_list_show_and_rotate_secret() {
    let sandbox = Sandbox::initialized();
    sandbox.run(&["webhook", "list"]).assert(
        0,
        "No webhook endpoints yet; create one with `issuer webhook create`.\n",
        "",
    );
    let hook = create_hook(&sandbox);
    let secret = hook["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{hook}");
    let expected = json!({
        "url": HOOK_URL, "description": "", "events": ["license.created"], "status": "enabled", "disabled_at": null,
        "disabled_reason": null, "last_success_at": null, "previous_secret_until": null,
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&hook[field], value, "{field}");
    }
    let id = hook["id"].as_str().unwrap();

    let list_text = sandbox.run(&["webhook", "list", "--json"]).success();
    assert!(!list_text.contains(secret), "{list_text}");
    let list: Value = serde_json::from_str(&list_text).unwrap();
    let listed = &list["webhooks"][0];
    assert!(listed.get("secret").is_none(), "{list}");
    let mut without_secret = hook.clone();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(listed, &without_secret);
    assert_eq!(&sandbox.json(&["webhook", "show", id, "--json"]), listed);
    sandbox.run(&["webhook", "list"]).assert(
        0,
        &format!(
            "
ID                                    URL                      EVENTS           STATUS   LAST SUCCESS  CREATED
{id}  {HOOK_URL}  license.created  enabled  never         [..]Z
"
        ),
        "",
    );
    let shown = sandbox.run(&["webhook", "show", id]).success();
    assert!(shown.contains(&format!("id:           {id}\n")) && !shown.contains(secret), "{shown}");

    let rotated = sandbox.json(&["webhook", "rotate-secret", id, "--json"]);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret, "{rotated}");
    assert!(is_time(&rotated["previous_secret_until"]), "{rotated}");
    assert_eq!(
        sandbox.json(&["webhook", "show", id, "--json"])["previous_secret_until"],
        rotated["previous_secret_until"]
    );
    let again = sandbox.run(&["webhook", "rotate-secret", id]).success();
    assert!(again.contains("old secret:   signs beside the new one until ") && again.contains("secret:       whsec_"));

    // Enabling an enabled endpoint changes nothing.
    assert_eq!(sandbox.json(&["webhook", "enable", id, "--json"])["status"], "enabled");

    let star =
        sandbox.json(&["webhook", "create", "--url", HOOK_URL, "--events", "*", "--description", "all", "--json"]);
    assert_eq!((&star["events"], &star["description"]), (&json!(["*"]), &json!("all")));
    let two = ["--events", "license.created,machine.activated", "--json"];
    let two = sandbox.json(&[&["webhook", "create", "--url", HOOK_URL][..], &two].concat());
    assert_eq!(two["events"].as_array().unwrap().len(), 2, "{two}");
}

#[test]
fn webhook_create_refuses_bad_urls_and_event_types() {
    let sandbox = Sandbox::initialized();
    let metadata = sandbox.run(&["webhook", "create", "--url", "http://169.254.169.254/", "--events", "*"]);
    assert_eq!(metadata.code, 1, "{metadata:?}");
    assert!(
        metadata.stderr.starts_with("error: --url is refused: address 169.254.169.254 is in 169.254.0.0/16, refused"),
        "{metadata:?}"
    );
    let unknown = sandbox.run(&["webhook", "create", "--url", HOOK_URL, "--events", "nope.nope"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.starts_with("error: ") && unknown.stderr.contains("`nope.nope` is not an event type"));
    sandbox.run(&["webhook", "create", "--url", HOOK_URL, "--events", "*,license.created"]).assert(
        2,
        "",
        "error: --events: \"*\" already means every type; give it alone\n",
    );
    sandbox.run(&["webhook", "create", "--url", "ftp://example.com/", "--events", "*"]).assert(
        2,
        "",
        "error: --url: must be an http:// or https:// URL\n",
    );
    assert_eq!(sandbox.json(&["webhook", "list", "--json"]), json!({"webhooks": []}));
}

#[test]
fn a_license_created_by_the_cli_queues_a_delivery_that_can_be_resent() {
    let sandbox = Sandbox::initialized();
    let hook = create_hook(&sandbox);
    let id = hook["id"].as_str().unwrap();
    sandbox.run(&["webhook", "deliveries", id]).assert(0, "No deliveries match.\n", "");
    let license = sandbox.create_license();

    // Queued with the license, and nobody delivers it: the CLI never sends webhooks itself.
    let page = sandbox.json(&["webhook", "deliveries", id, "--json"]);
    let deliveries = page["deliveries"].as_array().unwrap();
    assert_eq!((deliveries.len(), &page["next_after"]), (1, &Value::Null), "{page}");
    let first = &deliveries[0];
    assert_eq!(
        (&first["state"], &first["attempts"], &first["last_status"]),
        (&json!("pending"), &json!(0), &Value::Null)
    );
    let events = sandbox.json(&["events", "list", "--type", "license.created", "--json"]);
    assert_eq!(events["events"][0]["license_id"], license["id"]);
    assert_eq!(first["event_id"], events["events"][0]["id"]);

    let delivery = first["id"].to_string();
    let resent = sandbox.json(&["webhook", "resend", id, &delivery, "--json"]);
    assert_eq!((&resent["event_id"], &resent["state"]), (&first["event_id"], &json!("pending")));
    assert_ne!(resent["id"], first["id"]);
    let both = sandbox.json(&["webhook", "deliveries", id, "--json"]);
    assert_eq!(both["deliveries"].as_array().unwrap().len(), 2, "{both}");
    let text = sandbox.run(&["webhook", "deliveries", id]).success();
    assert_matches(
        "deliveries",
        &text,
        "
ID  EVENT  STATE    ATTEMPTS  CREATED               NEXT ATTEMPT          STATUS  ERROR
[..]  pending  0         [..]Z  [..]Z  -       -
[..]  pending  0         [..]Z  [..]Z  -       -
",
    );

    // Pages: `next_after` of a full page is the `--after` of the next.
    let one = sandbox.json(&["webhook", "deliveries", id, "--limit", "1", "--json"]);
    assert_eq!((&one["deliveries"][0]["id"], &one["next_after"]), (&first["id"], &first["id"]));
    let rest = sandbox.json(&["webhook", "deliveries", id, "--after", &delivery, "--json"]);
    assert_eq!(rest["deliveries"], json!([resent]));
    let more = sandbox.run(&["webhook", "deliveries", id, "--limit", "1"]).success();
    assert!(more.ends_with(&format!("More deliveries: pass --after {delivery}\n")), "{more}");
    assert_eq!(sandbox.run(&["webhook", "deliveries", id, "--limit", "0"]).code, 2);

    let missing = sandbox.run(&["webhook", "resend", id, "999"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.starts_with(&format!("error: webhook endpoint {id} has no delivery with this id")));

    sandbox.run(&["webhook", "delete", id]).assert(
        0,
        &format!("Deleted webhook endpoint {id} and its deliveries.\n"),
        "",
    );
    for which in [id, "not-a-uuid"] {
        sandbox.run(&["webhook", "show", which]).assert(
            1,
            "",
            &format!("error: no webhook endpoint with this id exists: `{which}` (see `issuer webhook list`)\n"),
        );
    }
    assert_eq!(sandbox.run(&["webhook", "deliveries", id]).code, 1);
    assert_eq!(sandbox.run(&["webhook", "delete", id]).code, 1);
}

#[test]
fn webhook_help_says_that_serve_delivers() {
    let help = Sandbox::new().run(&["webhook", "--help"]).success();
    assert!(help.contains("a running `issuer serve` sends them"), "{help}");
}

#[test]
fn events_list_the_audit_log_with_actors() {
    let sandbox = Sandbox::initialized();
    let license = sandbox.create_license();
    let key = license["key"].as_str().unwrap();
    let found = sandbox.json(&["events", "list", "--type", "license.created", "--json"]);
    assert_eq!(found["next_after"], Value::Null);
    let events = found["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{found}");
    let created = &events[0];
    assert_eq!((&created["type"], &created["kind"]), (&json!("license.created"), &json!("created")));
    assert_eq!((&created["license_id"], &created["actor"]), (&license["id"], &json!({"type": "cli"})));
    assert_eq!(created["client_ip"], Value::Null);
    assert!(is_time(&created["at"]), "{created}");

    // By license (id or key): only its events; all events: also those of no license.
    let by_key = sandbox.json(&["events", "list", "--license", key, "--json"]);
    assert_eq!(by_key, sandbox.json(&["events", "list", "--license", license["id"].as_str().unwrap(), "--json"]));
    assert_eq!(by_key["events"], json!([created]));
    let all = sandbox.json(&["events", "list", "--json"]);
    let types: Vec<&Value> = all["events"].as_array().unwrap().iter().map(|e| &e["type"]).collect();
    assert_eq!(types, [&json!("admin_token.created"), &json!("license.created")]);
    assert_eq!(all["events"][0]["actor"], json!({"type": "system"}));

    sandbox.run(&["events", "list"]).assert(
        0,
        &format!(
            "
ID  AT                    TYPE                 LICENSE                               ACTOR   CLIENT IP
1   [..]Z  admin_token.created  -                                     system  -
2   [..]Z  license.created      {}  cli     -
",
            license["id"].as_str().unwrap()
        ),
        "",
    );
    let page = sandbox.json(&["events", "list", "--limit", "1", "--json"]);
    assert_eq!(page["next_after"], all["events"][0]["id"]);
    let rest = sandbox.json(&["events", "list", "--after", &page["next_after"].to_string(), "--json"]);
    assert_eq!(rest["events"], json!([created]));
    sandbox.run(&["events", "list", "--type", "policy.created"]).assert(0, "No events match.\n", "");

    let nope = sandbox.run(&["events", "list", "--type", "nope"]);
    assert_eq!(nope.code, 2, "{nope:?}");
    assert!(nope.stderr.starts_with("error: ") && nope.stderr.contains("`nope` is not an event type"), "{nope:?}");
    assert_eq!(sandbox.run(&["events", "list", "--limit", "1001"]).code, 2);
    let unknown = sandbox.run(&["events", "list", "--license", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
}
