//! `issuer root ...`: the vendor's root key, which certifies signing keys. Meant for an offline machine: these
//! commands need no data directory, store or network.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use keys::Root;
use time::OffsetDateTime;

use super::license::parse_time;
use super::{fmt_time, CliError, CliResult};

/// `issuer root ...`.
#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Create a root key in DIR (`root.key`, mode 0600; `root.pub`, the `lrk1.` line apps embed).
    Init {
        /// The root directory (created with mode 0700); keep it on an offline machine.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the root key line apps embed.
    Show {
        /// The root directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Certify a signing key from its public key file (`keys/<id>.pub`, or a file with its `lpk1.` line): prints the
    /// `lkc1.` certificate to add with `issuer keys add-certificate`.
    Certify {
        /// The root directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The signing key's public key file.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// First signing time covered (RFC 3339) [default: now].
        #[arg(long, value_name = "TIME")]
        not_before: Option<String>,
        /// Last signing time covered (RFC 3339); or give --valid-for.
        #[arg(long, value_name = "TIME", conflicts_with = "valid_for")]
        not_after: Option<String>,
        /// How long from not-before the certificate covers, e.g. `400d` [default: 400d].
        #[arg(long, value_name = "DURATION")]
        valid_for: Option<String>,
        /// Certify the key for this product only [default: every product].
        #[arg(long)]
        product: Option<String>,
        /// Also write the certificate to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// The window a certificate covers when neither `--not-after` nor `--valid-for` is given: a little over a year, so
/// a yearly rotation has a month of overlap.
const DEFAULT_VALIDITY: &str = "400d";

fn key_error(e: keys::KeyError) -> CliError {
    CliError::Failed(super::error_chain(&e))
}

pub(crate) fn run(command: RootCommand, out: &mut dyn Write) -> CliResult {
    match command {
        RootCommand::Init { dir } => {
            let root = Root::create(&dir).map_err(key_error)?;
            writeln!(out, "Created root key {} in {}.", root.public().key_id(), dir.display())?;
            writeln!(
                out,
                "Keep {} offline and backed up; it certifies your signing keys.",
                dir.join("root.key").display()
            )?;
            writeln!(out, "Embed this line in your apps (verifier::KeySet::from_lines):")?;
            writeln!(out, "{}", root.public())?;
            Ok(())
        }
        RootCommand::Show { dir } => {
            let text = std::fs::read_to_string(dir.join(keys::ROOT_PUBLIC_FILE)).map_err(|e| {
                CliError::Failed(format!("cannot read {}: {e}", dir.join(keys::ROOT_PUBLIC_FILE).display()))
            })?;
            writeln!(out, "{}", keys::read_root_key(&text).map_err(key_error)?)?;
            Ok(())
        }
        RootCommand::Certify { dir, public_key, not_before, not_after, valid_for, product, out: file } => {
            let key = keys::read_public_key_file(&public_key).map_err(|e| CliError::Usage(super::error_chain(&e)))?;
            let root = Root::open(&dir).map_err(key_error)?;
            let not_before = match not_before {
                Some(t) => parse_time("--not-before", &t)?,
                None => now(),
            };
            let not_after = match (not_after, valid_for) {
                (Some(t), _) => parse_time("--not-after", &t)?,
                (None, valid_for) => {
                    let text = valid_for.unwrap_or_else(|| DEFAULT_VALIDITY.into());
                    let secs =
                        crate::parse_duration_secs(&text).map_err(|e| CliError::Usage(format!("--valid-for: {e}")))?;
                    // Checked: a huge --valid-for must be a usage error, not an overflow panic.
                    i64::try_from(secs)
                        .ok()
                        .and_then(|s| not_before.checked_add(time::Duration::seconds(s)))
                        .ok_or_else(|| CliError::Usage(format!("--valid-for: `{text}` reaches past year 9999")))?
                }
            };
            let certificate = root
                .certify(&key, not_before, not_after, product.as_deref())
                .map_err(|e| CliError::Usage(super::error_chain(&e)))?;
            if let Some(path) = &file {
                std::fs::write(path, format!("{certificate}\n"))
                    .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
            }
            let scope = product.map(|p| format!(" for product `{p}`")).unwrap_or_default();
            writeln!(
                out,
                "# Certificate of key {} by root {}{scope}, covering {} to {}.",
                key.key_id(),
                root.public().key_id(),
                fmt_time(not_before),
                fmt_time(not_after)
            )?;
            writeln!(out, "# Add it to the key ring: issuer keys add-certificate FILE")?;
            writeln!(out, "{certificate}")?;
            Ok(())
        }
    }
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}
