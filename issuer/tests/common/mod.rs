//! The harness of the CLI tests: a private working directory per test, real invocations of the `issuer` binary, and
//! snapshot comparison where `[..]` in an expected line matches any run of characters within it.
// Each test binary uses its own part of the harness; the rest would be reported as dead code in it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ISSUER_VARS: &[&str] = &[
    "ISSUER_LISTEN",
    "ISSUER_DATA_DIR",
    "ISSUER_DATABASE_URL",
    "ISSUER_ADMIN_TOKEN",
    "ISSUER_CONFIG",
    "ISSUER_REFRESH_INTERVAL",
    "ISSUER_OFFLINE_GRACE",
    "ISSUER_WEBHOOK_DELIVERY",
    "ISSUER_WEBHOOK_RETRY_BASE",
    "ISSUER_WEBHOOK_TIMEOUT",
    "ISSUER_WEBHOOK_ALLOW_NETWORKS",
    "ISSUER_WEBHOOK_DENY_NETWORKS",
];

/// A working directory for one test.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

/// One finished invocation.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().unwrap() }
    }

    /// A sandbox after `issuer init`.
    pub fn initialized() -> Sandbox {
        let sandbox = Sandbox::new();
        sandbox.run(&["init"]).success();
        sandbox
    }

    /// The `issuer` binary with `args`, run in this sandbox.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_issuer"));
        cmd.args(args).current_dir(self.dir.path());
        for var in ISSUER_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.run(args).success()).unwrap()
    }

    /// The JSON output of a command that exits with code 1.
    pub fn json_failing(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert_eq!(out.code, 1, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    }

    pub fn create_license(&self) -> Value {
        self.json(&[
            "license",
            "create",
            "--email",
            "ada@example.com",
            "--product",
            "acme-cad",
            "--slots",
            "2",
            "--expires",
            "2030-01-31T00:00:00Z",
            "--entitlement",
            "pro",
            "--entitlement",
            "export",
            "--metadata",
            r#"{"order":"A-1001"}"#,
            "--json",
        ])
    }
}

impl Output {
    /// Asserts exit code 0 and empty stderr; returns stdout.
    pub fn success(self) -> String {
        assert_eq!((self.code, self.stderr.as_str()), (0, ""), "stdout:\n{}", self.stdout);
        self.stdout
    }

    /// Asserts the whole invocation: exit code, stdout and stderr.
    pub fn assert(&self, code: i32, stdout: &str, stderr: &str) {
        assert_eq!(self.code, code, "exit code; stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_matches("stdout", &self.stdout, stdout);
        assert_matches("stderr", &self.stderr, stderr);
    }
}

/// Compares `actual` with `expected` line by line; `[..]` in an expected line matches any characters.
pub fn assert_matches(what: &str, actual: &str, expected: &str) {
    let expected = expected.strip_prefix('\n').unwrap_or(expected);
    let ok = actual.lines().count() == expected.lines().count()
        && actual.ends_with('\n') == expected.ends_with('\n')
        && actual.lines().zip(expected.lines()).all(|(a, e)| line_matches(a, e));
    assert!(ok, "{what} differs.\n--- expected\n{expected}\n--- actual\n{actual}\n---");
}

pub fn line_matches(actual: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return actual == pattern;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}
