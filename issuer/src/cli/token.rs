//! `issuer token ...`: issue tokens (directly or from an air-gapped activation request), inspect them, and redeem
//! offline deactivation codes.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Serialize;
use verifier::{ActivationRequest, Claims, DeactivationCode, KeyId, TokenKind, UntrustedToken};

use super::license::license_ref;
use super::{
    fmt_opt_time, fmt_time, inline_or_file, inline_or_file_untrimmed, keys_dir, load_config, open_service, slots_used,
    write_json, CliError, CliResult, GlobalArgs,
};
use crate::http::admin::LicenseView;
use crate::service::{Issued, ServiceError};

/// `issuer token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a token for a machine: counted as an activation (same slot limit and events as the API).
    ///
    /// Either --license and --fingerprint, or --request with an air-gapped app's activation request (ACT1-...),
    /// which always gives an offline token.
    #[command(override_usage = "issuer token issue --license <ID|KEY> --fingerprint <FINGERPRINT> [OPTIONS]\n       \
                                issuer token issue --request <CODE|@FILE> [OPTIONS]")]
    Issue {
        /// License id or key.
        #[arg(long, value_name = "ID|KEY", requires = "fingerprint", conflicts_with = "request")]
        license: Option<String>,
        /// The machine's fingerprint (as the app computed it; may start with `-`).
        #[arg(long, requires = "license", conflicts_with = "request", allow_hyphen_values = true)]
        fingerprint: Option<String>,
        /// A name for the machine.
        #[arg(long, requires = "license")]
        name: Option<String>,
        /// The machine's platform, e.g. linux-x86_64.
        #[arg(long, requires = "license")]
        platform: Option<String>,
        /// Sign an offline token (no token expiry; freed with a deactivation code) instead of an online one.
        #[arg(long, requires = "license")]
        offline: bool,
        /// An activation request code (ACT1-...), or @FILE to read it from a file.
        #[arg(long, value_name = "CODE|@FILE")]
        request: Option<String>,
        /// Write the token to this file [default for offline tokens: <fingerprint>.license].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decode a token: its claims, and whether it verifies against the key ring.
    Inspect {
        /// The token (lic1....), or @FILE to read it from a file.
        #[arg(value_name = "TOKEN|@FILE")]
        token: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Redeem an offline deactivation code (DEA1-...): frees the machine's slot, once.
    Deactivate {
        /// The deactivation code, or @FILE to read it from a file.
        #[arg(value_name = "CODE|@FILE")]
        code: String,
        /// Refuse the code unless it is for this license (id or key).
        #[arg(long, value_name = "ID|KEY")]
        license: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct IssuedView {
    token: String,
    kind: &'static str,
    fingerprint: String,
    #[serde(with = "time::serde::rfc3339::option")]
    refresh_after: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    token_expires_at: Option<time::OffsetDateTime>,
    license: LicenseView,
    machines_used: u32,
    machines_remaining: u32,
    new_machine: bool,
    file: Option<String>,
    /// The signing key's certificate (key ring with roots), also written to the file after the token.
    certificate: Option<String>,
}

#[derive(Serialize)]
struct ClaimsView {
    kind: &'static str,
    license_id: String,
    license_key: String,
    email: String,
    product: String,
    entitlements: Vec<String>,
    max_machines: u32,
    fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    issued_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    license_expires_at: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    refresh_after: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    token_expires_at: Option<time::OffsetDateTime>,
}

impl From<&Claims> for ClaimsView {
    fn from(c: &Claims) -> Self {
        ClaimsView {
            kind: kind_name(c.kind),
            license_id: c.license_id.to_string(),
            license_key: c.license_key.clone(),
            email: c.email.clone(),
            product: c.product.clone(),
            entitlements: c.entitlements.clone(),
            max_machines: c.max_machines,
            fingerprint: c.fingerprint.clone(),
            issued_at: c.issued_at,
            license_expires_at: c.license_expires_at,
            refresh_after: c.refresh_after,
            token_expires_at: c.token_expires_at,
        }
    }
}

#[derive(Serialize)]
struct InspectView {
    verified: bool,
    /// `valid`, `unknown_key` or `bad_signature`.
    verification: &'static str,
    key_id: String,
    /// `active`, `retired`, or null when the ring does not hold the key.
    key_status: Option<&'static str>,
    /// The verified claims when `verified`; otherwise what the token says, unverified, or null when even that cannot
    /// be decoded.
    claims: Option<ClaimsView>,
}

#[derive(Serialize)]
struct DeactivatedView {
    deactivated: bool,
    license_id: String,
    fingerprint: String,
    machines_used: u32,
    machines_remaining: u32,
}

fn kind_name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Online => "online",
        TokenKind::Offline => "offline",
    }
}

pub(crate) async fn run(
    command: TokenCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    match command {
        TokenCommand::Issue { license, fingerprint, name, platform, offline, request, out: file, json } => {
            let request = match request.as_deref() {
                Some(text) => Some(parse_request(&inline_or_file(text)?)?),
                None if license.is_none() => return Err(CliError::Usage(ISSUE_USAGE.into())),
                None => None,
            };
            let licensing = open_service(global, err).await?;
            let ctx = licensing.cli_context();
            let issued = match (&request, license, fingerprint) {
                (Some(request), _, _) => licensing.activate_offline(request, &ctx).await?,
                (None, Some(license), Some(fingerprint)) => {
                    let kind = if offline { TokenKind::Offline } else { TokenKind::Online };
                    let which = license_ref(&license)?;
                    licensing
                        .activate_license(&which, &fingerprint, name.as_deref(), platform.as_deref(), kind, &ctx)
                        .await?
                }
                _ => return Err(CliError::Usage(ISSUE_USAGE.into())),
            };
            // The activation is stored; its count in the daily usage is written before the command ends.
            if let Err(e) = licensing.flush_usage(crate::Flush::All).await {
                writeln!(err, "warning: the activation is stored, but its usage count was not: {e}")?;
            }
            let file = match (file, issued.claims.kind) {
                (Some(path), _) => Some(path),
                (None, TokenKind::Offline) => Some(default_token_file(&issued.claims.fingerprint)),
                (None, TokenKind::Online) => None,
            };
            if let Some(path) = &file {
                std::fs::write(path, issued.file_text())
                    .map_err(|e| CliError::Failed(format!("cannot write the token to {}: {e}", path.display())))?;
            }
            write_issued(out, issued, file.as_deref(), json)
        }
        TokenCommand::Inspect { token, json } => inspect(global, &inline_or_file_untrimmed(&token)?, json, out),
        TokenCommand::Deactivate { code, license, json } => {
            let code = parse_deactivation(&inline_or_file(&code)?)?;
            let licensing = open_service(global, err).await?;
            if let Some(expected) = license {
                let expected = licensing.license(&license_ref(&expected)?).await?;
                if expected.id.into_bytes() != code.license_id.0 {
                    return Err(CliError::Failed(format!(
                        "this deactivation code is for license {}, not {}",
                        code.license_id, expected.id
                    )));
                }
            }
            let done = match licensing.redeem_deactivation(&code, &licensing.cli_context()).await {
                Ok(done) => done,
                Err(ServiceError::UnknownDeactivationCode) => {
                    return Err(CliError::Failed(format!(
                        "no machine of license {} holds the token this deactivation code is for (a code made for \
                         another license, or for a token the machine has since replaced); nothing changed",
                        code.license_id
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            let remaining = done.license.max_machines.saturating_sub(done.machines_used);
            if json {
                return write_json(
                    out,
                    &DeactivatedView {
                        deactivated: true,
                        license_id: done.license.id.to_string(),
                        fingerprint: done.fingerprint,
                        machines_used: done.machines_used,
                        machines_remaining: remaining,
                    },
                );
            }
            writeln!(
                out,
                "Deactivated machine {} on license {} ({}, {}): its slot is free, {}.",
                done.fingerprint,
                done.license.id,
                done.license.email,
                done.license.product,
                slots_used(done.machines_used, done.license.max_machines)
            )?;
            Ok(())
        }
    }
}

/// The usage error of `token issue` given neither way of naming the machine.
const ISSUE_USAGE: &str = "say which machine to activate: --license ID|KEY and --fingerprint FP, or --request \
                           CODE|@FILE with an air-gapped app's activation request (ACT1-...)";

fn parse_request(code: &str) -> Result<ActivationRequest, CliError> {
    if is_code_of_kind(code, "DEA1") {
        return Err(CliError::Usage(
            "this is a deactivation code (DEA1-...), not an activation request (ACT1-...): redeem it with `issuer \
             token deactivate CODE`"
                .into(),
        ));
    }
    ActivationRequest::from_code(code).map_err(|e| match e {
        verifier::Error::MistypedCode => CliError::Usage(
            "the activation request is mistyped: its check characters do not match; compare it character by \
             character with the code the app shows (or carry it as a file)"
                .into(),
        ),
        other => CliError::Usage(format!("not an activation request: {other}")),
    })
}

fn parse_deactivation(code: &str) -> Result<DeactivationCode, CliError> {
    if is_code_of_kind(code, "ACT1") {
        return Err(CliError::Usage(
            "this is an activation request (ACT1-...), not a deactivation code (DEA1-...): sign a token for it with \
             `issuer token issue --request CODE`"
                .into(),
        ));
    }
    DeactivationCode::from_code(code).map_err(|e| match e {
        verifier::Error::MistypedCode => CliError::Usage(
            "the deactivation code is mistyped: its check characters do not match; compare it character by \
             character with the code the app shows (or carry it as a file)"
                .into(),
        ),
        other => CliError::Usage(format!("not a deactivation code: {other}")),
    })
}

/// Whether `code` starts with `prefix` (`ACT1`, `DEA1`), read as the verifier reads codes: case, dashes and
/// whitespace do not matter.
fn is_code_of_kind(code: &str, prefix: &str) -> bool {
    let head: String =
        code.chars().filter(|c| !matches!(c, '-' | ' ' | '\t' | '\r' | '\n')).take(prefix.len()).collect();
    head.eq_ignore_ascii_case(prefix)
}

/// `<fingerprint>.license` in the current directory, with anything but `A-Z a-z 0-9 . _ -` replaced, so a
/// fingerprint can never name a path elsewhere.
fn default_token_file(fingerprint: &str) -> PathBuf {
    let safe: String = fingerprint
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') { c } else { '_' })
        .collect();
    PathBuf::from(format!("{safe}.license"))
}

fn write_issued(out: &mut dyn Write, issued: Issued, file: Option<&Path>, json: bool) -> CliResult {
    let remaining = issued.license.max_machines.saturating_sub(issued.machines_used);
    if json {
        return write_json(
            out,
            &IssuedView {
                kind: kind_name(issued.claims.kind),
                fingerprint: issued.claims.fingerprint.clone(),
                refresh_after: issued.refresh_after,
                token_expires_at: issued.token_expires_at,
                machines_used: issued.machines_used,
                machines_remaining: remaining,
                new_machine: issued.new_machine,
                file: file.map(|f| f.display().to_string()),
                license: LicenseView::at(issued.license, issued.claims.issued_at),
                token: issued.token,
                certificate: issued.certificate,
            },
        );
    }
    let l = &issued.license;
    let slot = if issued.new_machine { "new machine" } else { "already active, no new slot used" };
    writeln!(
        out,
        "Activated machine {} on license {} ({}, {}): {slot}; {}.",
        issued.claims.fingerprint,
        l.id,
        l.email,
        l.product,
        slots_used(issued.machines_used, l.max_machines)
    )?;
    match issued.claims.kind {
        TokenKind::Offline => writeln!(
            out,
            "Offline token: no token expiry; the license expires {}.",
            fmt_opt_time(l.expires_at, "never")
        )?,
        TokenKind::Online => writeln!(
            out,
            "Online token: refresh after {}, valid until {}.",
            fmt_opt_time(issued.refresh_after, "-"),
            fmt_opt_time(issued.token_expires_at, "-")
        )?,
    }
    match file {
        Some(path) => writeln!(
            out,
            "Token written to {}; deliver it to the machine as that file, or copy-paste this line:",
            path.display()
        )?,
        None => writeln!(out, "Token:")?,
    }
    writeln!(out, "{}", issued.token)?;
    if let Some(certificate) = &issued.certificate {
        writeln!(out, "Certificate of its signing key (an app that embeds only the root needs it too):")?;
        writeln!(out, "{certificate}")?;
    }
    Ok(())
}

fn inspect(global: &GlobalArgs, text: &str, json: bool, out: &mut dyn Write) -> CliResult {
    // A license file (token, then its key's certificate) is inspected by its token line; anything else is taken as
    // token text with exactly the whitespace rules of the format.
    let token = match verifier::Bundle::parse(text) {
        Ok(bundle) if bundle.tokens.len() == 1 && !bundle.certificates.is_empty() => bundle.tokens[0],
        _ => text,
    };
    let untrusted = UntrustedToken::parse(token).map_err(|e| CliError::Usage(e.to_string()))?;
    let config = load_config(global, None)?;
    let ring = keys::KeyRing::open(&keys_dir(&config)?).map_err(|e| CliError::Failed(super::error_chain(&e)))?;
    let key_id: KeyId = untrusted.key_id();
    let key_status = ring.entries().iter().find(|e| e.public.key_id() == key_id).map(|e| e.status.as_str());
    // Signature first (format spec §1.1): only a verified token's claims are its claims. The claims of a token that
    // does not verify are decoded only to show what it says, labelled as unverified.
    let (verification, claims) = match untrusted.verify(&ring.public_key_set()) {
        Ok(license) => ("valid", Ok(license.into_claims())),
        Err(verifier::Error::UnknownKey { .. }) => ("unknown_key", untrusted.untrusted_claims()),
        Err(verifier::Error::BadSignature) => ("bad_signature", untrusted.untrusted_claims()),
        // Validly signed, but the claims break the format: nothing to show.
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    if json {
        write_json(
            out,
            &InspectView {
                verified: verification == "valid",
                verification,
                key_id: key_id.to_string(),
                key_status,
                claims: claims.as_ref().ok().map(ClaimsView::from),
            },
        )?;
    } else {
        let signature = match verification {
            "valid" => format!("valid (signed by {} key {key_id})", key_status.unwrap_or("a")),
            "unknown_key" => format!(
                "UNKNOWN KEY: signed by key {key_id}, which the key ring does not hold (removed, or another issuer's)"
            ),
            _ => format!("BAD SIGNATURE: altered, or not signed by this issuer's key {key_id}"),
        };
        writeln!(out, "signature:        {signature}")?;
        match &claims {
            Ok(c) => {
                if verification != "valid" {
                    writeln!(
                        out,
                        "(the claims below are NOT verified: they are what the token says, and nothing vouches for them)"
                    )?;
                }
                write_claims(out, c)?;
            }
            Err(e) => writeln!(out, "claims:           cannot be decoded ({e})")?,
        }
    }
    match verification {
        "valid" => Ok(()),
        "unknown_key" => Err(CliError::Failed(format!("the token's key {key_id} is not in the key ring"))),
        _ => Err(CliError::Failed("the token's signature is invalid".into())),
    }
}

fn write_claims(out: &mut dyn Write, c: &Claims) -> CliResult {
    let entitlements = if c.entitlements.is_empty() { "-".to_string() } else { c.entitlements.join(", ") };
    writeln!(out, "kind:             {}", kind_name(c.kind))?;
    writeln!(out, "license id:       {}", c.license_id)?;
    writeln!(out, "license key:      {}", c.license_key)?;
    writeln!(out, "email:            {}", c.email)?;
    writeln!(out, "product:          {}", c.product)?;
    writeln!(out, "entitlements:     {entitlements}")?;
    writeln!(out, "slots:            {}", c.max_machines)?;
    writeln!(out, "fingerprint:      {}", c.fingerprint)?;
    writeln!(out, "issued at:        {}", fmt_time(c.issued_at))?;
    writeln!(out, "license expires:  {}", fmt_opt_time(c.license_expires_at, "never"))?;
    let none = if c.kind == TokenKind::Offline { "never (offline token)" } else { "-" };
    writeln!(out, "refresh after:    {}", fmt_opt_time(c.refresh_after, none))?;
    writeln!(out, "token expires:    {}", fmt_opt_time(c.token_expires_at, none))?;
    Ok(())
}
