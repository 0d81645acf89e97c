//! `issuer admin-token ...`: the admin API's tokens (docs/api.md). The `--json` output is the HTTP API's admin token
//! view, so scripts read the same objects from either; a token's secret is printed once, when it is created.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;

use super::{fmt_opt_time, fmt_time, open_service, write_json, write_table, CliError, CliResult, GlobalArgs};
use crate::service::ServiceError;
use crate::store::{AdminToken, Scope};
use crate::views::AdminTokenView;

/// `issuer admin-token ...`.
#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Create an admin API token and print its secret (shown only this once; the issuer keeps only its hash).
    Create {
        /// Who or what uses it, e.g. "billing integration" (1-100 characters).
        #[arg(long)]
        label: String,
        /// What it may do: `read` (everything the admin API shows, changing nothing) or `write` (also change).
        #[arg(long, value_name = "read|write", value_parser = parse_scope)]
        scope: Scope,
        /// Print JSON: the token as `issuer admin-token list --json` shows it, with its secret in `token`.
        #[arg(long)]
        json: bool,
    },
    /// List the stored admin tokens, revoked ones too, oldest first (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin token: every request with it is refused from now on, by every running instance.
    Revoke {
        /// The token's id (see `issuer admin-token list`).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.trim().parse()
}

/// The shape of `POST /v1/admin-tokens`: the token's view and its secret.
#[derive(Serialize)]
struct CreatedView {
    #[serde(flatten)]
    view: AdminTokenView,
    /// The secret, shown only in this answer.
    token: String,
}

/// The shape of `GET /v1/admin-tokens`.
#[derive(Serialize)]
struct ListView {
    admin_tokens: Vec<AdminTokenView>,
}

/// A service error in the words of this command: flags rather than the API's field names.
fn flag_error(e: ServiceError) -> CliError {
    match e {
        ServiceError::InvalidField { field, message } => CliError::Usage(format!("--{field}: {message}")),
        other => other.into(),
    }
}

/// A service error of `revoke`: the token by its id.
fn revoke_error(id: &str, e: ServiceError) -> CliError {
    match e {
        ServiceError::AdminTokenNotFound => CliError::Failed(format!(
            "no stored admin token has the id `{id}` (see `issuer admin-token list`; ISSUER_ADMIN_TOKEN is revoked by \
             removing it from the environment)"
        )),
        other => flag_error(other),
    }
}

/// Writes a token for people, one `name: value` line per field.
fn write_token(out: &mut dyn Write, t: &AdminToken) -> CliResult {
    writeln!(out, "id:        {}", t.id)?;
    writeln!(out, "label:     {}", t.label)?;
    writeln!(out, "scope:     {}", t.scope)?;
    writeln!(out, "created:   {}", fmt_time(t.created_at))?;
    writeln!(out, "last used: {}", fmt_opt_time(t.last_used_at, "never"))?;
    writeln!(out, "revoked:   {}", fmt_opt_time(t.revoked_at, "no"))?;
    Ok(())
}

pub(crate) async fn run(
    command: AdminTokenCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    let licensing = open_service(global, err).await?;
    let ctx = licensing.cli_context();
    match command {
        AdminTokenCommand::Create { label, scope, json } => {
            let (token, secret) = licensing.create_admin_token(&label, scope, &ctx).await.map_err(flag_error)?;
            if json {
                return write_json(out, &CreatedView { view: token.into(), token: secret });
            }
            writeln!(out, "Created admin token {}", token.id)?;
            write_token(out, &token)?;
            writeln!(out, "It is shown only this once (the issuer keeps only its hash); store it now:")?;
            writeln!(out, "admin token: {secret}")?;
            Ok(())
        }
        AdminTokenCommand::List { json } => {
            let tokens = licensing.admin_tokens().await?;
            if json {
                return write_json(out, &ListView { admin_tokens: tokens.into_iter().map(Into::into).collect() });
            }
            if tokens.is_empty() {
                writeln!(out, "No stored admin tokens; create one with `issuer admin-token create`.")?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.label.clone(),
                        t.scope.to_string(),
                        fmt_time(t.created_at),
                        fmt_opt_time(t.last_used_at, "never"),
                        fmt_opt_time(t.revoked_at, "-"),
                    ]
                })
                .collect();
            write_table(out, &["ID", "LABEL", "SCOPE", "CREATED", "LAST USED", "REVOKED"], &rows)
        }
        AdminTokenCommand::Revoke { id, json } => {
            let id = id.trim();
            let token = licensing.revoke_admin_token(id, &ctx).await.map_err(|e| revoke_error(id, e))?;
            if json {
                return write_json(out, &AdminTokenView::from(token));
            }
            writeln!(
                out,
                "Admin token {} ({}) was revoked at {}: every request with it is refused.",
                token.id,
                token.label,
                fmt_opt_time(token.revoked_at, "-")
            )?;
            Ok(())
        }
    }
}
