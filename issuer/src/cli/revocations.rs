//! `issuer revocations ...`: the signed revocation list, written to a file for app updates and air-gapped machines.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use super::{fmt_time, open_service, write_json, CliError, CliResult, GlobalArgs};

/// `issuer revocations ...`.
#[derive(Debug, Subcommand)]
pub enum RevocationsCommand {
    /// Sign the list of revoked licenses and write it as a license file: the `lrl1.` list, then the certificate of
    /// the key that signed it (when the ring has roots). Apps install it with `verifier::RevocationFile`.
    Export {
        /// Write the file here [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print JSON (the same shape as GET /v1/revocations) instead of the file text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct ListView<'a> {
    revocation_list: &'a str,
    sequence: u64,
    issued_at: String,
    key_id: &'a str,
    certificate: Option<&'a str>,
}

pub(crate) async fn run(
    command: RevocationsCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    let RevocationsCommand::Export { out: file, json } = command;
    let licensing = open_service(global, err).await?;
    let signed = licensing.revocation_list().await?;
    if let Some(path) = &file {
        std::fs::write(path, signed.file_text())
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    }
    if json {
        return write_json(
            out,
            &ListView {
                revocation_list: &signed.list,
                sequence: signed.sequence,
                issued_at: fmt_time(signed.issued_at),
                key_id: &signed.key_id,
                certificate: signed.certificate.as_deref(),
            },
        );
    }
    match &file {
        Some(path) => writeln!(
            out,
            "Wrote revocation list {} ({} revoked, {} bytes, signed by key {}) to {}.",
            signed.sequence,
            signed.sequence,
            signed.file_text().len(),
            signed.key_id,
            path.display()
        )?,
        None => write!(out, "{}", signed.file_text())?,
    }
    Ok(())
}
