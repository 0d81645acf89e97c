//! `issuer keys ...`: the signing key ring (and standalone keys).

use std::io::Write;
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use keys::{KeyRing, Overwrite, SecretKey};
use verifier::KeyId;

use super::{
    fmt_time, inline_or_file, keys_dir, load_config, write_json, write_table, CliError, CliResult, GlobalArgs,
};

/// `issuer keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a standalone signing key: PKCS#8 PEM secret key file (mode 0600), prints its public key.
    Generate {
        /// Where to write the secret key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// List the ring's keys: id, status (active, pending or retired), created, and until when certificates cover it.
    List {
        /// Print JSON (the same shape as GET /v1/keys).
        #[arg(long)]
        json: bool,
    },
    /// Make the pending key (or, without one, a new key) the active signing key; earlier keys stay trusted
    /// (retired). With root keys, the new key must have a certificate. A running service reloads within 5 s.
    Rotate,
    /// Make the key of the next rotation now, without signing with it: certify its public key file with
    /// `issuer root certify` (or publish it to apps), then `issuer keys rotate`.
    Prepare,
    /// Add a certificate (`lkc1.`, from `issuer root certify`) of one of the ring's keys.
    AddCertificate {
        /// The certificate, or `@FILE`.
        certificate: String,
    },
    /// Add a root key: from then on the ring signs only with keys a root certified. Give the active key's
    /// certificate by that root with it, so signing never stops.
    AddRoot {
        /// The root key line (`lrk1.`), or `@FILE` (the root's `root.pub`).
        root: String,
        /// The active key's certificate by this root, or `@FILE`.
        #[arg(long)]
        certificate: String,
    },
    /// Remove a retired key from the ring: tokens it signed stop verifying once apps get the new key set.
    Retire {
        /// The key id (16 hex digits, see `issuer keys list`).
        key_id: String,
    },
    /// Record this ring's public keys and signing key in the store, after a rotation or retirement whose record
    /// failed (instances sign only with the key the store records).
    Record,
    /// Print the public key set apps embed.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Lines)]
        format: ExportFormat,
    },
}

/// Formats of `issuer keys export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One `lpk1.` line per key, the active key first (for `verifier::KeySet::from_text`).
    Lines,
    /// SPKI PEM public keys (OpenSSL reads them), each after a comment line naming its key id.
    Pem,
    /// A Rust constant for `verifier::KeySet::from_lines`.
    Rust,
    /// JSON, the same shape as GET /v1/keys.
    Json,
}

fn view(ring: &KeyRing) -> crate::http::KeysResponse {
    crate::http::KeysResponse::of(ring)
}

/// Until when the key's certificates cover signing, for people: the latest end, or `-` without certificates.
fn certified_until(ring: &KeyRing, key_id: KeyId) -> String {
    ring.certificates_of(key_id).map(|c| c.not_after()).max().map(fmt_time).unwrap_or_else(|| "-".into())
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// With roots, refuses a ring whose active key no certificate covers now: it could not sign.
fn refuse_uncertified(ring: &KeyRing) -> CliResult {
    ring.signing_certificate(now(), None)
        .map(|_| ())
        .map_err(|e| CliError::Failed(format!("{}; nothing was changed", super::error_chain(&e))))
}

fn key_error(e: keys::KeyError) -> CliError {
    CliError::Failed(super::error_chain(&e))
}

/// Records the ring's public keys and its signing key in the store, compare-and-set: only if the store records one
/// of `expect_active` as the signing key now. `Ok(false)` when it records another one (nothing written).
async fn record_in_store(
    store: &std::sync::Arc<dyn crate::Store>,
    ring: &KeyRing,
    expect_active: Vec<String>,
) -> Result<bool, CliError> {
    let keys = crate::recorded_keys_of(ring);
    let at = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    // The change and its event (audit log, webhooks) commit together.
    let key_list: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::json!({ "key_id": k.key_id, "status": if k.active { "active" } else { "retired" } }))
        .collect();
    let active = crate::RecordedKey::signing(&keys).map(|k| k.key_id.clone());
    let event = crate::NewEvent {
        license_id: None,
        kind: crate::EventKind::KeysChanged,
        at,
        fingerprint: None,
        client_ip: None,
        actor: Some(crate::Actor::Cli),
        detail: serde_json::json!({ "active_key_id": active, "keys": key_list }),
    };
    crate::StoreExt::transact(&**store, move |tx| {
        Box::pin(async move {
            let recorded = tx.record_keys(&keys, crate::RecordKeys::Update { expect_active }, at).await?;
            if recorded {
                tx.append_event(&event).await?;
            }
            Ok(recorded)
        })
    })
    .await
    .map_err(|e: crate::StoreError| CliError::Failed(format!("the store could not record the key ring: {e}")))
}

async fn open_store(config: &crate::Config) -> Result<std::sync::Arc<dyn crate::Store>, CliError> {
    crate::open_store(config)
        .await
        .map_err(|e| CliError::Failed(format!("cannot open the store: {}", super::error_chain(&e))))
}

/// The signing key the store records, if any.
async fn recorded_active(store: &std::sync::Arc<dyn crate::Store>) -> Result<Option<String>, CliError> {
    let keys = store.recorded_keys().await.map_err(|e| CliError::Failed(format!("cannot read the store: {e}")))?;
    Ok(crate::RecordedKey::signing(&keys).map(|k| k.key_id.clone()))
}

/// Refuses to change a ring that does not sign with the key the store records (an out-of-date copy).
fn refuse_unless_current(ring: &KeyRing, recorded: Option<&str>, dir: &std::path::Path) -> CliResult {
    let active = ring.active().key_id().to_string();
    match recorded {
        Some(recorded) if recorded != active => Err(CliError::Failed(format!(
            "the key ring in {} signs with key {active}, but the store records key {recorded} as the signing key: \
             this copy is out of date (or ahead, if a record failed: then run `issuer keys record` first); nothing was \
             changed",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

pub(crate) async fn run(command: KeysCommand, global: &GlobalArgs, out: &mut dyn Write) -> CliResult {
    if let KeysCommand::Generate { out: path, force } = &command {
        let key = SecretKey::generate().map_err(key_error)?;
        let overwrite = if *force { Overwrite::Replace } else { Overwrite::Refuse };
        keys::write_secret_key(&key, path, overwrite).map_err(|e| match e {
            keys::KeyError::AlreadyExists { path } => {
                CliError::Failed(format!("{} exists; pass --force to replace it", path.display()))
            }
            other => key_error(other),
        })?;
        writeln!(
            out,
            "Wrote secret key {} to {} (PKCS#8 PEM, mode 0600); keep it secret.",
            key.key_id(),
            path.display()
        )?;
        writeln!(out, "key id:     {}", key.key_id())?;
        writeln!(out, "public key: {}", key.public_key())?;
        return Ok(());
    }
    let config = load_config(global, None)?;
    let dir = keys_dir(&config)?;
    // Changes of the ring wait for any instance initializing this data directory, and for each other.
    let changes = matches!(
        command,
        KeysCommand::Rotate
            | KeysCommand::Retire { .. }
            | KeysCommand::Record
            | KeysCommand::Prepare
            | KeysCommand::AddCertificate { .. }
            | KeysCommand::AddRoot { .. }
    );
    let _lock = if changes {
        Some(crate::datadir::lock(&config.data_dir).await.map_err(|e| CliError::Failed(e.to_string()))?)
    } else {
        None
    };
    let mut ring = KeyRing::open(&dir).map_err(key_error)?;
    match command {
        KeysCommand::Generate { .. } => Ok(()),
        KeysCommand::List { json: true } => write_json(out, &view(&ring)),
        KeysCommand::List { json: false } => {
            let rows: Vec<Vec<String>> = ring
                .entries()
                .iter()
                .map(|e| {
                    let id = e.public.key_id();
                    vec![id.to_string(), e.status.as_str().into(), fmt_time(e.created_at), certified_until(&ring, id)]
                })
                .collect();
            write_table(out, &["KEY ID", "STATUS", "CREATED", "CERTIFIED UNTIL"], &rows)
        }
        KeysCommand::Prepare => {
            let id = ring.prepare().map_err(key_error)?;
            ring.save(&dir).map_err(key_error)?;
            writeln!(out, "Prepared key {id}; it signs nothing until `issuer keys rotate`.")?;
            writeln!(out, "Public key file: {}", dir.join(format!("{id}.pub")).display())?;
            writeln!(out, "public key: {}", ring.pending().map(|p| p.public_key().to_string()).unwrap_or_default())?;
            if ring.has_roots() {
                writeln!(
                    out,
                    "Next: on the root's machine, `issuer root certify --dir ROOT --public-key {id}.pub --out {id}.cert`; \
                     then `issuer keys add-certificate @{id}.cert` and `issuer keys rotate`."
                )?;
            }
            Ok(())
        }
        KeysCommand::AddCertificate { certificate } => {
            let certificate = ring.add_certificate(&inline_or_file(&certificate)?).map_err(key_error)?;
            ring.save(&dir).map_err(key_error)?;
            let scope = certificate.scope().map(|p| format!(" for product `{p}`")).unwrap_or_default();
            writeln!(
                out,
                "Added the certificate of key {} by root {}{scope}, covering {} to {}.",
                certificate.key_id(),
                certificate.root_key_id(),
                fmt_time(certificate.not_before()),
                fmt_time(certificate.not_after())
            )?;
            writeln!(out, "Copy the keys/ directory to every instance; a running service reloads within 5 seconds.")?;
            Ok(())
        }
        KeysCommand::AddRoot { root, certificate } => {
            let root =
                keys::read_root_key(&inline_or_file(&root)?).map_err(|e| CliError::Usage(super::error_chain(&e)))?;
            let root_id = root.key_id();
            ring.add_root(root);
            ring.add_certificate(&inline_or_file(&certificate)?).map_err(key_error)?;
            refuse_uncertified(&ring)?;
            ring.save(&dir).map_err(key_error)?;
            writeln!(
                out,
                "Added root {root_id}. From now on this ring signs only with keys a root certified; the active key {} \
                 is certified until {}.",
                ring.active().key_id(),
                certified_until(&ring, ring.active().key_id())
            )?;
            writeln!(out, "Apps may now embed only the root key line; tokens carry the certificate they need.")?;
            Ok(())
        }
        KeysCommand::Rotate => {
            let store = open_store(&config).await?;
            refuse_unless_current(&ring, recorded_active(&store).await?.as_deref(), &dir)?;
            let before = KeyRing::open(&dir).map_err(key_error)?;
            let old = ring.active().key_id();
            let new = ring.rotate().map_err(key_error)?;
            refuse_uncertified(&ring).map_err(|e| match e {
                CliError::Failed(m) => CliError::Failed(format!(
                    "{m}. With root keys, rotate in steps: `issuer keys prepare`, certify the new key with \
                     `issuer root certify`, `issuer keys add-certificate`, then `issuer keys rotate`"
                )),
                other => other,
            })?;
            ring.save(&dir).map_err(key_error)?;
            let recorded = record_in_store(&store, &ring, vec![old.to_string()]).await;
            if !matches!(recorded, Ok(true)) {
                // Another rotation was recorded since the check (or the store failed): put the files back.
                before.save(&dir).map_err(key_error)?;
                return Err(match recorded {
                    Err(e) => e,
                    _ => CliError::Failed(
                        "another rotation was recorded in the store meanwhile; this one was undone (the ring is as it \
                         was): copy the current keys/ directory here before rotating again"
                            .into(),
                    ),
                });
            }
            writeln!(
                out,
                "New active signing key: {new}. The previous key {old} is retired: tokens it signed keep verifying."
            )?;
            writeln!(out, "A running issuer service picks the new key up within 5 seconds; no restart is needed.")?;
            writeln!(out, "Public key set to distribute to your apps (the new key first):")?;
            write_lines(out, &ring)
        }
        KeysCommand::Record => {
            // The way back after a rotation whose record failed: the store must record one of this ring's keys as
            // signing now, and never a retired one signs again.
            let store = open_store(&config).await?;
            let own: Vec<String> = ring.entries().iter().map(|e| e.public.key_id().to_string()).collect();
            if !record_in_store(&store, &ring, own).await? {
                let recorded = recorded_active(&store).await?.unwrap_or_else(|| "none".into());
                return Err(CliError::Failed(format!(
                    "the store records key {recorded} as the signing key, which this ring does not follow (or this \
                     ring would make a retired key sign again); nothing was recorded: copy the current keys/ \
                     directory here"
                )));
            }
            writeln!(out, "Recorded the key ring in the store; the signing key is {}.", ring.active().key_id())?;
            Ok(())
        }
        KeysCommand::Retire { key_id } => {
            let id: KeyId = key_id.trim().parse().map_err(|_| {
                CliError::Usage(format!("`{key_id}` is not a key id (16 hex digits, see `issuer keys list`)"))
            })?;
            let store = open_store(&config).await?;
            refuse_unless_current(&ring, recorded_active(&store).await?.as_deref(), &dir)?;
            ring.remove(id).map_err(key_error)?;
            let active = ring.active().key_id().to_string();
            if !record_in_store(&store, &ring, vec![active]).await? {
                return Err(CliError::Failed(
                    "the store's signing key changed meanwhile; nothing was changed: copy the current keys/ directory \
                     here first"
                        .into(),
                ));
            }
            ring.save(&dir).map_err(key_error)?;
            writeln!(
                out,
                "Removed key {id} from the ring. Tokens it signed stop verifying once apps get the new public key set \
                 (a running issuer service reloads its ring within 5 seconds)."
            )?;
            writeln!(out, "Public key set to distribute to your apps:")?;
            write_lines(out, &ring)
        }
        KeysCommand::Export { format } => export(out, &ring, format),
    }
}

/// The key set text: the ring's keys, then its roots and certificates (an app that embeds the roots needs only
/// those; the certificates also arrive beside every token).
fn write_lines(out: &mut dyn Write, ring: &KeyRing) -> CliResult {
    for e in ring.entries() {
        writeln!(out, "{}", e.public)?;
    }
    for root in ring.roots() {
        writeln!(out, "{root}")?;
    }
    for certificate in ring.certificates() {
        writeln!(out, "{certificate}")?;
    }
    Ok(())
}

fn export(out: &mut dyn Write, ring: &KeyRing, format: ExportFormat) -> CliResult {
    match format {
        ExportFormat::Lines => write_lines(out, ring),
        ExportFormat::Json => write_json(out, &view(ring)),
        ExportFormat::Pem => {
            for e in ring.entries() {
                write!(out, "{}", keys::public_key_pem(&e.public).map_err(key_error)?)?;
            }
            Ok(())
        }
        ExportFormat::Rust => {
            writeln!(
                out,
                "/// The license issuer's public keys (active first), from `issuer keys export --format rust`."
            )?;
            writeln!(out, "/// Load them with `verifier::KeySet::from_lines(LICENSE_PUBLIC_KEYS)`.")?;
            writeln!(out, "pub const LICENSE_PUBLIC_KEYS: &[&str] = &[")?;
            for e in ring.entries() {
                writeln!(out, "    \"{}\", // {} ({})", e.public, e.public.key_id(), e.status.as_str())?;
            }
            for root in ring.roots() {
                writeln!(out, "    \"{root}\", // root {}", root.key_id())?;
            }
            writeln!(out, "];")?;
            Ok(())
        }
    }
}
