//! The CLI of policies (docs/policies.md): `issuer policy ...`, `license create --policy` and the `policy` column of
//! `license import`, through real invocations of the `issuer` binary, as in tests/cli.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_matches, Sandbox};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A sandbox with the policy `pro`: acme-cad, 3 slots, 365 days, entitlement `pro`.
fn with_pro_policy() -> Sandbox {
    let sandbox = Sandbox::initialized();
    let args = ["policy", "create", "pro", "--product", "acme-cad", "--max-machines", "3", "--duration", "365d"];
    sandbox.run(&[&args[..], &["--entitlement", "pro"]].concat()).success();
    sandbox
}

#[test]
fn policy_create_list_show_update_and_delete() {
    let sandbox = Sandbox::initialized();
    sandbox.run(&["policy", "list"]).assert(0, "No policies yet; create one with `issuer policy create`.\n", "");
    let lab = sandbox.json(&[
        "policy",
        "create",
        "lab-floating",
        "--product",
        "acme-cad",
        "--max-machines",
        "5",
        "--duration",
        "52w",
        "--entitlement",
        "pro",
        "--entitlement",
        "export",
        "--lease",
        "60m",
        "--floating",
        "--overage",
        "1.25x",
        "--no-offline",
        "--refresh-interval",
        "86400",
        "--json",
    ]);
    let expected = json!({
        "name": "lab-floating", "product": "acme-cad", "max_machines": 5, "duration": "364d",
        "entitlements": ["pro", "export"], "refresh_interval": "1d", "offline_grace": null, "lease": "1h",
        "floating": true, "overage": "1.25x", "offline_allowed": false, "deactivation_limit": null,
        "deactivation_period": "30d",
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&lab[field], value, "{field}");
    }
    assert_eq!(lab["created_at"], lab["updated_at"]);
    assert!(OffsetDateTime::parse(lab["created_at"].as_str().unwrap(), &Rfc3339).is_ok(), "{lab}");

    sandbox
        .run(&[
            "policy",
            "create",
            "pro-annual",
            "--product",
            "acme-cad",
            "--max-machines",
            "3",
            "--duration",
            "365d",
            "--deactivation-limit",
            "2",
            "--deactivation-period",
            "2w",
            "--overage",
            "+2",
        ])
        .assert(
            0,
            "
Created policy pro-annual
name:               pro-annual
product:            acme-cad
slots:              3
duration:           365d
entitlements:       -
refresh interval:   the service's
offline grace:      the service's
lease:              none
floating:           no
overage:            +2
offline:            allowed
deactivation limit: 2 per 14d
created:            [..]Z
updated:            [..]Z
",
            "",
        );
    sandbox.run(&["policy", "list"]).assert(
        0,
        "
NAME          PRODUCT   SLOTS  DURATION  LEASE  FLOATING  OVERAGE  OFFLINE
lab-floating  acme-cad  5      364d      1h     yes       1.25x    no
pro-annual    acme-cad  3      365d      -      no        +2       yes
",
        "",
    );
    let list = sandbox.json(&["policy", "list", "--json"]);
    let names: Vec<&Value> = list["policies"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
    assert_eq!(names, [&json!("lab-floating"), &json!("pro-annual")]);
    assert_eq!(list["policies"][1]["deactivation_period"], "14d");
    let shown = sandbox.json(&["policy", "show", "pro-annual", "--json"]);
    assert_eq!(shown, list["policies"][1]);

    // `none` clears the nullable terms; true/false set the switches.
    let updated = sandbox.json(&[
        "policy",
        "update",
        "pro-annual",
        "--duration",
        "none",
        "--lease",
        "90s",
        "--deactivation-limit",
        "none",
        "--offline",
        "false",
        "--max-machines",
        "4",
        "--json",
    ]);
    assert_eq!(
        (&updated["duration"], &updated["lease"], &updated["deactivation_limit"], &updated["offline_allowed"]),
        (&Value::Null, &json!("90s"), &Value::Null, &json!(false))
    );
    assert_eq!(
        (&updated["max_machines"], &updated["overage"], &updated["name"]),
        (&json!(4), &json!("+2"), &shown["name"])
    );
    let cleared =
        sandbox.json(&["policy", "update", "lab-floating", "--floating", "false", "--lease", "none", "--json"]);
    assert_eq!((&cleared["floating"], &cleared["lease"]), (&json!(false), &Value::Null));
    let text = sandbox.run(&["policy", "update", "lab-floating", "--no-entitlements"]).success();
    assert!(text.starts_with("Updated policy lab-floating\nNew licenses get the new slots"), "{text}");
    assert!(text.contains("\nentitlements:       -\n"), "{text}");

    sandbox.run(&["policy", "delete", "lab-floating"]).assert(0, "Deleted policy lab-floating.\n", "");
    let list = sandbox.json(&["policy", "list", "--json"]);
    assert_eq!(list["policies"].as_array().unwrap().len(), 1);
}

#[test]
fn policy_input_mistakes_and_unknown_policies_are_refused() {
    let sandbox = with_pro_policy();
    let create = |name: &str, more: &[&str]| {
        let args = ["policy", "create", name, "--product", "acme-cad", "--max-machines", "2"];
        sandbox.run(&[&args[..], more].concat())
    };
    create("pro", &[]).assert(
        1,
        "",
        "error: a policy named `pro` exists already; choose another name, or change it with `issuer policy update \
         pro`\n",
    );
    create("Pro Annual", &[]).assert(
        2,
        "",
        "error: the policy name `Pro Annual` must be 1-64 characters of a-z, 0-9 and '-', starting with a letter or \
         digit (e.g. pro-annual)\n",
    );
    create("lab", &["--floating"]).assert(
        2,
        "",
        "error: --floating: a floating policy needs a lease (seats return when a lease ends)\n",
    );
    let overage = create("lab", &["--overage", "0.5x"]);
    assert_eq!(overage.code, 2, "{overage:?}");
    assert_eq!(overage.stderr, "error: --overage: an overage factor lies above 1x and at most 10x (e.g. \"1.25x\")\n");
    create("lab", &["--overage", "+0"]).assert(
        2,
        "",
        "error: --overage: an overage of \"+N\" takes N from 1 to 10000 (\"none\" for no overage)\n",
    );
    create("lab", &["--duration", "1y"]).assert(
        2,
        "",
        "error: --duration: `1y` is not a duration such as 12h, 7d or 365d (units s, m, h, d, w)\n",
    );
    create("lab", &["--lease", "30s"]).assert(2, "", "error: --lease: must be between 1m and 3650d\n");
    create("lab", &["--deactivation-period", "12h"]).assert(
        2,
        "",
        "error: --deactivation-period: must be between 1d and 365d\n",
    );
    create("lab", &["--deactivation-limit", "0"]).assert(
        2,
        "",
        "error: --deactivation-limit: must be at least 1 (or null for no limit)\n",
    );
    let zero = sandbox.run(&["policy", "create", "lab", "--product", "acme-cad", "--max-machines", "0"]);
    assert_eq!((zero.code, zero.stderr.as_str()), (2, "error: --max-machines: must be at least 1\n"));
    let missing = sandbox.run(&["policy", "create", "lab", "--product", "acme-cad"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.starts_with("error: the following required arguments were not provided:"), "{missing:?}");

    let unknown = "error: no policy named `nope` exists (see `issuer policy list`)\n";
    sandbox.run(&["policy", "show", "nope"]).assert(1, "", unknown);
    sandbox.run(&["policy", "update", "nope", "--max-machines", "2"]).assert(1, "", unknown);
    sandbox.run(&["policy", "delete", "nope"]).assert(1, "", unknown);

    sandbox.run(&["policy", "update", "pro"]).assert(
        2,
        "",
        "error: nothing to update: give --max-machines, --duration, --entitlement, --no-entitlements, \
         --refresh-interval, --offline-grace, --lease, --floating, --overage, --offline, --deactivation-limit or \
         --deactivation-period\n",
    );
    sandbox.run(&["policy", "update", "pro", "--deactivation-limit", "some"]).assert(
        2,
        "",
        "error: --deactivation-limit: `some` is neither a whole number nor `none`\n",
    );
    sandbox.run(&["policy", "update", "pro", "--lease", "soon"]).assert(
        2,
        "",
        "error: --lease: `soon` is not a duration such as 12h, 7d or 365d (units s, m, h, d, w)\n",
    );
    let floating = sandbox.run(&["policy", "update", "pro", "--floating", "yes"]);
    assert_eq!(floating.code, 2, "{floating:?}");
    assert!(floating.stderr.starts_with("error: invalid value 'yes' for '--floating <true|false>'"), "{floating:?}");
    // A refused update changes nothing: the policy is checked as a whole after the merge.
    sandbox.run(&["policy", "update", "pro", "--floating", "true"]).assert(
        2,
        "",
        "error: --floating: a floating policy needs a lease (seats return when a lease ends)\n",
    );
    assert_eq!(sandbox.json(&["policy", "show", "pro", "--json"])["floating"], false);
}

#[test]
fn a_policy_in_use_is_not_deleted_and_says_by_how_many_licenses() {
    let sandbox = with_pro_policy();
    sandbox.run(&["license", "create", "--email", "ada@example.com", "--policy", "pro"]).success();
    sandbox.run(&["policy", "delete", "pro"]).assert(
        1,
        "",
        "error: cannot delete policy `pro`: 1 license uses this policy; a policy is deleted only while no license \
         uses it\n",
    );
    sandbox.run(&["license", "create", "--email", "bob@example.com", "--policy", "pro"]).success();
    sandbox.run(&["policy", "delete", "pro"]).assert(
        1,
        "",
        "error: cannot delete policy `pro`: 2 licenses use this policy; a policy is deleted only while no license \
         uses it\n",
    );
    assert_eq!(sandbox.json(&["policy", "show", "pro", "--json"])["name"], "pro");
}

#[test]
fn license_create_takes_the_policy_grants_and_flags_override_them() {
    let sandbox = with_pro_policy();
    let create = |more: &[&str]| {
        let args = ["license", "create", "--email", "ada@example.com", "--policy", "pro", "--json"];
        sandbox.json(&[&args[..], more].concat())
    };
    let granted = create(&[]);
    assert_eq!(
        (&granted["product"], &granted["max_machines"], &granted["entitlements"], &granted["policy"]),
        (&json!("acme-cad"), &json!(3), &json!(["pro"]), &json!("pro"))
    );
    let expires = OffsetDateTime::parse(granted["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let in_a_year = OffsetDateTime::now_utc() + time::Duration::days(365);
    assert!((expires - in_a_year).abs() < time::Duration::minutes(5), "{expires}");

    let overridden = create(&["--max-machines", "10", "--entitlement", "export", "--perpetual"]);
    assert_eq!(
        (&overridden["max_machines"], &overridden["entitlements"], &overridden["expires_at"]),
        (&json!(10), &json!(["export"]), &Value::Null)
    );
    let more =
        create(&["--slots", "5", "--no-entitlements", "--expires", "2030-01-31T00:00:00Z", "--product", "acme-cad"]);
    assert_eq!(
        (&more["max_machines"], &more["entitlements"], &more["expires_at"]),
        (&json!(5), &json!([]), &json!("2030-01-31T00:00:00Z"))
    );

    let id = granted["id"].as_str().unwrap();
    let text = sandbox.run(&["license", "show", id]).success();
    assert_matches(
        "license show",
        text.split("\n\n").next().unwrap(),
        "
id:           [..]
key:          [..]
email:        ada@example.com
product:      acme-cad
policy:       pro
status:       active
slots:        3
expires:      [..]Z
entitlements: pro
created:      [..]
updated:      [..]",
    );
    let list = sandbox.json(&["license", "list", "--json"]);
    assert!(list["licenses"].as_array().unwrap().iter().all(|l| l["policy"] == "pro"), "{list}");
    assert_eq!(sandbox.json(&["license", "show", id, "--json"])["license"]["policy"], "pro");

    let license =
        |more: &[&str]| sandbox.run(&[&["license", "create", "--email", "bob@example.com"][..], more].concat());
    license(&["--policy", "pro", "--product", "other"]).assert(
        2,
        "",
        "error: --product: the policy `pro` is for the product `acme-cad`\n",
    );
    license(&["--policy", "nope"]).assert(1, "", "error: no policy named `nope` exists (see `issuer policy list`)\n");
    license(&[]).assert(2, "", "error: --product: is required without a policy\n");
    // Without a policy nothing changed: one slot, perpetual, no entitlements, no policy.
    let plain = sandbox.json(&["license", "create", "--email", "bob@example.com", "--product", "acme-cad", "--json"]);
    assert_eq!(
        (&plain["max_machines"], &plain["expires_at"], &plain["entitlements"], &plain["policy"]),
        (&json!(1), &Value::Null, &json!([]), &Value::Null)
    );
    let plain_text = sandbox.run(&["license", "show", plain["id"].as_str().unwrap()]).success();
    assert!(!plain_text.contains("policy:"), "{plain_text}");
}

#[test]
fn license_import_takes_grants_from_a_policy_column() {
    let sandbox = with_pro_policy();
    std::fs::write(
        sandbox.path().join("purchases.csv"),
        "email,product,slots,expiry,entitlements,order_id,policy\n\
         ada@example.com,,,,,P-1,pro\n\
         bob@example.com,acme-cad,7,2030-01-31T00:00:00Z,export,P-2,pro\n\
         carol@example.com,acme-cad,2,,,P-3,\n\
         dave@example.com,,,,,P-4,nope\n\
         erin@example.com,acme-cad,,,,P-5,\n",
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
email,product,slots,expiry,entitlements,order_id,policy,error
dave@example.com,,,,,P-4,nope,line 5: policy: no policy named `nope` exists (see `issuer policy list`)
erin@example.com,acme-cad,,,,P-5,,line 6: slots: empty; give the number of machine slots or a policy
",
    );
    let all = sandbox.json(&["license", "list", "--json"]);
    let licenses = all["licenses"].as_array().unwrap();
    let fields = |l: &Value| {
        json!([l["email"], l["product"], l["max_machines"], l["entitlements"], l["policy"], l["expires_at"].is_null()])
    };
    assert_eq!(fields(&licenses[0]), json!(["ada@example.com", "acme-cad", 3, ["pro"], "pro", false]));
    assert_eq!(fields(&licenses[1]), json!(["bob@example.com", "acme-cad", 7, ["export"], "pro", false]));
    assert_eq!(licenses[1]["expires_at"], "2030-01-31T00:00:00Z");
    assert_eq!(fields(&licenses[2]), json!(["carol@example.com", "acme-cad", 2, [], null, true]));

    // Rows with a policy are idempotent by their order_id as any other.
    let again = sandbox.run(&["license", "import", "purchases.csv", "--reject-file", "again.csv", "--json"]);
    assert_eq!(again.code, 1, "{again:?}");
    let summary: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!((summary["created"].as_u64(), summary["skipped"].as_u64()), (Some(0), Some(3)));

    // With a policy column, email is the only column a file needs.
    std::fs::write(sandbox.path().join("short.csv"), "email,policy\nfrank@example.com,pro\n").unwrap();
    let out = sandbox.run(&["license", "import", "short.csv"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "created 1, skipped 0, failed 0\n"), "{out:?}");
    let frank = sandbox.json(&["license", "list", "--email", "frank@example.com", "--json"]);
    assert_eq!(fields(&frank["licenses"][0]), json!(["frank@example.com", "acme-cad", 3, ["pro"], "pro", false]));
}

#[test]
fn token_issue_refuses_offline_tokens_where_the_policy_does_not_allow_them() {
    let sandbox = Sandbox::initialized();
    let kiosk = ["policy", "create", "kiosk", "--product", "acme-cad", "--max-machines", "2", "--no-offline"];
    sandbox.run(&kiosk).success();
    let license = sandbox.json(&["license", "create", "--email", "ada@example.com", "--policy", "kiosk", "--json"]);
    let id = license["id"].as_str().unwrap();
    let offline = ["token", "issue", "--license", id, "--fingerprint", "m1", "--offline", "--out", "m1.license"];
    let refused = sandbox.run(&offline);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("does not allow offline activation"), "{refused:?}");
    assert!(!sandbox.path().join("m1.license").exists(), "nothing written");
    let machines = sandbox.json(&["machine", "list", id, "--json"]);
    assert_eq!(machines["machines"].as_array().unwrap().len(), 0, "no slot taken: {machines}");
    // Online tokens are not air-gapped activations.
    sandbox.run(&["token", "issue", "--license", id, "--fingerprint", "m1"]).success();
    sandbox.run(&["policy", "update", "kiosk", "--offline", "true"]).success();
    sandbox.run(&offline).success();
    assert!(sandbox.path().join("m1.license").exists());
}
