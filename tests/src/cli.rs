//! The vendor CLI run in-process (`issuer::cli::run`), and what one invocation did: for end-to-end tests that drive
//! the CLI beside a running service. Each run gets a thread of its own, because the CLI builds its own runtime, which
//! cannot start inside an async test's.
#![allow(clippy::unwrap_used)]

use std::process::ExitCode;

use serde_json::Value;

/// What one CLI invocation did.
#[derive(Debug)]
pub struct Run {
    /// Its exit code.
    pub code: ExitCode,
    /// What it wrote to stdout.
    pub out: String,
    /// What it wrote to stderr.
    pub err: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, ExitCode::SUCCESS, "stdout:\n{}\nstderr:\n{}", self.out, self.err);
        self.out
    }

    /// Asserts success and parses stdout as JSON.
    pub fn json(self) -> Value {
        serde_json::from_str(&self.ok()).unwrap()
    }

    /// Asserts the exit code and an `error: ` message, and returns stderr.
    pub fn failed(self, code: u8) -> String {
        assert_eq!(self.code, ExitCode::from(code), "stdout:\n{}\nstderr:\n{}", self.out, self.err);
        assert!(self.err.starts_with("error: "), "{}", self.err);
        self.err
    }
}

/// Runs `issuer ARGS...` in-process.
pub fn run(args: &[&str]) -> Run {
    let argv: Vec<String> = std::iter::once("issuer").chain(args.iter().copied()).map(String::from).collect();
    std::thread::spawn(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = issuer::cli::run(argv, &mut out, &mut err);
        Run { code, out: String::from_utf8(out).unwrap(), err: String::from_utf8(err).unwrap() }
    })
    .join()
    .unwrap()
}
