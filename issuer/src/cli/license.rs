//! `issuer license ...` and `issuer machine ...`.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{
    count, fmt_opt_time, fmt_time, open_service, slots_used, write_json, write_table, CliError, CliResult, GlobalArgs,
};
use crate::config::parse_duration_secs;
use crate::http::admin::{EventView, LicenseView, MachineView};
use crate::license_key::{LicenseKey, LicenseKeyError};
use crate::service::{Expiry, LicenseRef, NewLicense, ServiceError};
use crate::store::{Cursor, EffectiveStatus, License, LicenseFilter, LicenseUpdate, Machine};

/// How many events `license show` lists.
const RECENT_EVENTS: usize = 20;

/// `issuer license ...`.
#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Create a license and print its key.
    Create {
        /// The licensee's email.
        #[arg(long)]
        email: String,
        /// The policy whose grants it takes (explicit flags override them) and whose rules it follows.
        #[arg(long, value_name = "NAME")]
        policy: Option<String>,
        /// The product (A-Z a-z 0-9 . _ -) [required without --policy; with one: the policy's].
        #[arg(long)]
        product: Option<String>,
        /// Machine slots [default: the policy's, or 1 without --policy].
        #[arg(long, alias = "max-machines")]
        slots: Option<u32>,
        /// Expiry time, RFC 3339 (e.g. 2027-01-31T00:00:00Z) [default: from the policy's duration, or perpetual].
        #[arg(long, value_name = "TIME", conflicts_with_all = ["duration", "perpetual"])]
        expires: Option<String>,
        /// Expiry as a duration from now, e.g. 365d, 12w, 720h.
        #[arg(long, value_name = "DURATION", conflicts_with = "perpetual")]
        duration: Option<String>,
        /// No expiry, whatever the policy's duration.
        #[arg(long)]
        perpetual: bool,
        /// A feature the license unlocks (repeat for several) [default: the policy's, or none].
        #[arg(long = "entitlement", value_name = "NAME", conflicts_with = "no_entitlements")]
        entitlements: Vec<String>,
        /// No entitlements, whatever the policy's.
        #[arg(long)]
        no_entitlements: bool,
        /// Free-form JSON object, e.g. '{"order":"A-1001"}'.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        /// A key (e.g. the order number) that makes a retry return the first license instead of a second one.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// What activations are bound to: machine or domain [default: the policy's, or machine].
        #[arg(long, value_parser = parse_kind)]
        kind: Option<crate::store::LicenseKind>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List licenses, oldest first.
    List {
        /// Only this email (case-insensitive).
        #[arg(long)]
        email: Option<String>,
        /// Only this product.
        #[arg(long)]
        product: Option<String>,
        /// Only this status: active, suspended, revoked, or expired (active, but past its expiry; `active` leaves
        /// these out).
        #[arg(long, value_parser = parse_status)]
        status: Option<EffectiveStatus>,
        /// Page size (1-500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Continue after a previous page (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a license with its machines and recent events.
    Show {
        /// License id or key.
        #[arg(value_name = "ID|KEY")]
        license: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change slots, expiry, entitlements or metadata.
    Update {
        /// License id or key.
        #[arg(value_name = "ID|KEY")]
        license: String,
        /// New machine slots.
        #[arg(long)]
        slots: Option<u32>,
        /// New expiry time, RFC 3339.
        #[arg(long, value_name = "TIME", conflicts_with_all = ["duration", "perpetual"])]
        expires: Option<String>,
        /// New expiry as a duration from now, e.g. 365d.
        #[arg(long, value_name = "DURATION", conflicts_with = "perpetual")]
        duration: Option<String>,
        /// Remove the expiry.
        #[arg(long)]
        perpetual: bool,
        /// New entitlements, replacing the old ones (repeat for several).
        #[arg(long = "entitlement", value_name = "NAME", conflicts_with = "no_entitlements")]
        entitlements: Vec<String>,
        /// Remove every entitlement.
        #[arg(long)]
        no_entitlements: bool,
        /// New metadata JSON object, replacing the old one.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Suspend a license (it can be reinstated).
    Suspend {
        /// License id or key.
        #[arg(value_name = "ID|KEY")]
        license: String,
    },
    /// Reinstate a suspended license.
    Reinstate {
        /// License id or key.
        #[arg(value_name = "ID|KEY")]
        license: String,
    },
    /// Revoke a license for good (cannot be undone).
    Revoke {
        /// License id or key.
        #[arg(value_name = "ID|KEY")]
        license: String,
    },
    /// The addresses the license was used from: first and last seen, requests admitted and blocked.
    Ips {
        /// License id or key.
        #[arg(value_name = "ID|KEY")]
        license: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create licenses from a CSV of purchases: header email,product,slots,expiry[,entitlements][,order_id][,policy].
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Where failed rows go, with an `error` column [default: beside FILE, x.csv -> x.rejects.csv, and
        /// x.rejects.csv -> x.rejects-2.csv].
        #[arg(long, value_name = "PATH")]
        reject_file: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `issuer machine ...`.
#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// List the machines activated on a license.
    List {
        /// License id or key.
        #[arg(value_name = "ID|KEY")]
        license: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a machine from a license, freeing its slot.
    Remove {
        /// License id or key.
        #[arg(value_name = "ID|KEY")]
        license: String,
        /// The machine's fingerprint. May start with `-` (base64url fingerprints do, one in 64).
        #[arg(allow_hyphen_values = true)]
        fingerprint: String,
    },
}

fn parse_status(s: &str) -> Result<EffectiveStatus, String> {
    s.parse()
}

pub(crate) fn parse_kind(s: &str) -> Result<crate::store::LicenseKind, String> {
    s.parse()
}

/// A license id or key. Text shaped like a key (all the key's characters, or four dash-separated groups) that fails
/// the key's checks is reported as the API's `invalid_license_key` reports it: the key looks mistyped, and how.
pub(crate) fn license_ref(text: &str) -> Result<LicenseRef, CliError> {
    LicenseRef::parse(text).map_err(|_| match LicenseKey::parse(text) {
        Err(e) if looks_like_a_key(text, &e) => CliError::Usage(e.to_string()),
        _ => CliError::Usage(format!(
            "`{text}` is neither a license id (UUID) nor a license key (XXXXX-XXXXX-XXXXX-XXXXX)"
        )),
    })
}

fn looks_like_a_key(text: &str, error: &LicenseKeyError) -> bool {
    let groups: Vec<&str> = text.trim().split('-').map(str::trim).collect();
    matches!(error, LicenseKeyError::CheckFailed)
        || (groups.len() == 4 && groups.iter().all(|g| !g.is_empty() && g.chars().all(char::is_alphanumeric)))
}

/// A warning on `err` when the license's expiry has passed at `now`: it counts as expired from the start.
fn warn_if_expired(err: &mut dyn Write, l: &License, now: OffsetDateTime) -> CliResult {
    if let Some(at) = l.expires_at.filter(|at| *at <= now) {
        writeln!(
            err,
            "warning: the expiry {} has already passed, so the license is expired (validation answers EXPIRED and \
             activations are refused); to give it time: `issuer license update {} --expires TIME` (or --duration \
             365d, or --perpetual)",
            fmt_time(at),
            l.id
        )?;
    }
    Ok(())
}

/// A warning on `err` when more machines are active than the license now has slots.
fn warn_if_over_slots(err: &mut dyn Write, l: &License, active: usize) -> CliResult {
    let slots = usize::try_from(l.max_machines).unwrap_or(usize::MAX);
    if active > slots {
        writeln!(
            err,
            "warning: license {id} now has {} but {} active: validation answers TOO_MANY_MACHINES on them until {} \
             deactivated; see them with `issuer machine list {id}` and remove machines with `issuer machine remove \
             {id} FINGERPRINT`",
            count(l.max_machines, "slot", "slots"),
            count(active, "machine is", "machines are"),
            count(active - slots, "machine is", "machines are"),
            id = l.id,
        )?;
    }
    Ok(())
}

pub(crate) fn parse_time(flag: &str, text: &str) -> Result<OffsetDateTime, CliError> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .map_err(|_| CliError::Usage(format!("{flag}: `{text}` is not an RFC 3339 time such as 2027-01-31T00:00:00Z")))
}

pub(crate) fn parse_metadata(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(CliError::Usage("--metadata must be a JSON object such as '{\"order\":\"A-1001\"}'".into())),
        Err(e) => Err(CliError::Usage(format!("--metadata is not valid JSON: {e}"))),
    }
}

/// Writes a license for people, one `name: value` line per field; the status as it stands at `now`.
pub(crate) fn write_license(out: &mut dyn Write, l: &License, now: OffsetDateTime) -> CliResult {
    let entitlements = if l.entitlements.is_empty() { "-".to_string() } else { l.entitlements.join(", ") };
    writeln!(out, "id:           {}", l.id)?;
    writeln!(out, "key:          {}", l.key)?;
    writeln!(out, "email:        {}", l.email)?;
    writeln!(out, "product:      {}", l.product)?;
    if let Some(policy) = &l.policy {
        writeln!(out, "policy:       {policy}")?;
    }
    writeln!(out, "status:       {}", l.effective_status(now))?;
    writeln!(out, "slots:        {}", l.max_machines)?;
    writeln!(out, "expires:      {}", fmt_opt_time(l.expires_at, "never"))?;
    writeln!(out, "entitlements: {entitlements}")?;
    if !l.metadata.is_empty() {
        writeln!(out, "metadata:     {}", serde_json::Value::Object(l.metadata.clone()))?;
    }
    writeln!(out, "created:      {}", fmt_time(l.created_at))?;
    writeln!(out, "updated:      {}", fmt_time(l.updated_at))?;
    Ok(())
}

fn machine_rows(machines: &[Machine]) -> Vec<Vec<String>> {
    machines
        .iter()
        .map(|m| {
            vec![
                m.fingerprint.clone(),
                m.name.clone().unwrap_or_else(|| "-".into()),
                m.platform.clone().unwrap_or_else(|| "-".into()),
                if m.offline { "offline" } else { "online" }.into(),
                fmt_time(m.activated_at),
                fmt_time(m.last_seen_at),
            ]
        })
        .collect()
}

const MACHINE_HEADERS: [&str; 6] = ["FINGERPRINT", "NAME", "PLATFORM", "TOKEN", "ACTIVATED", "LAST SEEN"];

#[derive(Serialize)]
struct ShowView {
    license: LicenseView,
    machines_used: usize,
    machines: Vec<MachineView>,
    recent_events: Vec<EventView>,
}

#[derive(Serialize)]
struct ListView {
    licenses: Vec<LicenseView>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct MachinesView {
    max_machines: u32,
    machines: Vec<MachineView>,
}

pub(crate) async fn run(
    command: LicenseCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    if let LicenseCommand::Import { file, reject_file, json } = &command {
        let licensing = open_service(global, err).await?;
        return super::import::run(&licensing, file, reject_file.as_deref(), *json, out, err).await;
    }
    let licensing = open_service(global, err).await?;
    let ctx = licensing.cli_context();
    match command {
        LicenseCommand::Import { .. } => Ok(()),
        LicenseCommand::Ips { license, json } => super::network::license_ips(&licensing, &license, json, out).await,
        LicenseCommand::Create {
            email,
            policy,
            product,
            slots,
            expires,
            duration,
            perpetual,
            entitlements,
            no_entitlements,
            metadata,
            idempotency_key,
            kind,
            json,
        } => {
            let expiry = match (expires, duration, perpetual) {
                (Some(t), _, _) => Some(Expiry::At(parse_time("--expires", &t)?)),
                (None, Some(d), _) => Some(Expiry::After(
                    parse_duration_secs(&d).map_err(|m| CliError::Usage(format!("--duration: {m}")))?,
                )),
                (None, None, true) => Some(Expiry::Never),
                (None, None, false) => None,
            };
            let entitlements = (no_entitlements || !entitlements.is_empty()).then_some(entitlements);
            let metadata = metadata.as_deref().map(parse_metadata).transpose()?.unwrap_or_default();
            let new = match policy {
                // Left out, a field is the policy's grant.
                Some(_) => {
                    NewLicense { email, product, max_machines: slots, expiry, entitlements, metadata, policy, kind }
                }
                // Without a policy the request is the one this command always made (the idempotency key's hash of
                // it included), with the defaults of old: one slot, perpetual, no entitlements.
                None => NewLicense {
                    email,
                    product,
                    max_machines: Some(slots.unwrap_or(1)),
                    expiry: Some(expiry.unwrap_or(Expiry::Never)),
                    entitlements: Some(entitlements.unwrap_or_default()),
                    metadata,
                    policy: None,
                    kind,
                },
            };
            let policy = new.policy.clone();
            let (license, created) =
                licensing.create_license(new, idempotency_key.as_deref(), &ctx).await.map_err(|e| match e {
                    ServiceError::PolicyNotFound => CliError::Failed(format!(
                        "no policy named `{}` exists (see `issuer policy list`)",
                        policy.as_deref().unwrap_or_default()
                    )),
                    // These two are decided against the policy, so they are named by the flags that override it.
                    ServiceError::InvalidField { field: "product", message } => {
                        CliError::Usage(format!("--product: {message}"))
                    }
                    ServiceError::InvalidField { field: "max_machines", message } => {
                        CliError::Usage(format!("--slots: {message}"))
                    }
                    other => other.into(),
                })?;
            warn_if_expired(err, &license, ctx.now)?;
            if json {
                return write_json(out, &LicenseView::at(license, ctx.now));
            }
            if created {
                writeln!(out, "Created license {}", license.id)?;
            } else {
                writeln!(
                    out,
                    "License {} was already created with this idempotency key; nothing changed.",
                    license.id
                )?;
            }
            write_license(out, &license, ctx.now)
        }
        LicenseCommand::List { email, product, status, limit, cursor, json } => {
            let after =
                match cursor.as_deref() {
                    Some(c) => Some(Cursor::decode(c.trim()).ok_or_else(|| {
                        CliError::Usage(format!("--cursor: `{c}` is not a cursor from a previous page"))
                    })?),
                    None => None,
                };
            let filter = LicenseFilter { email, email_prefix: None, product, status, now: Some(ctx.now), limit, after };
            let page = licensing.list_licenses(&filter).await?;
            let next_cursor = page.next.map(|c| c.encode());
            if json {
                let licenses = page.licenses.into_iter().map(|l| LicenseView::at(l, ctx.now)).collect();
                return write_json(out, &ListView { licenses, next_cursor });
            }
            let rows: Vec<Vec<String>> = page
                .licenses
                .iter()
                .map(|l| {
                    vec![
                        l.id.to_string(),
                        l.key.clone(),
                        l.email.clone(),
                        l.product.clone(),
                        l.effective_status(ctx.now).to_string(),
                        l.max_machines.to_string(),
                        fmt_opt_time(l.expires_at, "never"),
                    ]
                })
                .collect();
            if rows.is_empty() {
                writeln!(out, "No licenses match.")?;
            } else {
                write_table(out, &["ID", "KEY", "EMAIL", "PRODUCT", "STATUS", "SLOTS", "EXPIRES"], &rows)?;
            }
            if let Some(c) = next_cursor {
                writeln!(out, "More licenses: pass --cursor {c}")?;
            }
            Ok(())
        }
        LicenseCommand::Show { license, json } => {
            let which = license_ref(&license)?;
            let (license, machines) = licensing.machines(&which).await?;
            let events = licensing.recent_events(&LicenseRef::Id(license.id), RECENT_EVENTS).await?;
            if json {
                return write_json(
                    out,
                    &ShowView {
                        machines_used: machines.len(),
                        license: LicenseView::at(license, ctx.now),
                        machines: machines.into_iter().map(Into::into).collect(),
                        recent_events: events.into_iter().map(Into::into).collect(),
                    },
                );
            }
            write_license(out, &license, ctx.now)?;
            writeln!(out)?;
            writeln!(out, "Machines ({}):", slots_used(machines.len(), license.max_machines))?;
            if !machines.is_empty() {
                write_table(out, &MACHINE_HEADERS, &machine_rows(&machines))?;
            }
            writeln!(out)?;
            writeln!(out, "Recent events (latest {RECENT_EVENTS}, oldest first):")?;
            write_table(
                out,
                &["AT", "EVENT", "MACHINE", "CLIENT IP", "DETAIL"],
                &super::events::license_event_rows(&events),
            )
        }
        LicenseCommand::Update {
            license,
            slots,
            expires,
            duration,
            perpetual,
            entitlements,
            no_entitlements,
            metadata,
            json,
        } => {
            let which = license_ref(&license)?;
            let expires_at = match (expires, duration, perpetual) {
                (Some(t), _, _) => Some(Some(parse_time("--expires", &t)?)),
                (None, Some(d), _) => {
                    let secs = parse_duration_secs(&d).map_err(|m| CliError::Usage(format!("--duration: {m}")))?;
                    let now = ctx.now.replace_nanosecond(0).unwrap_or(ctx.now);
                    let at = i64::try_from(secs)
                        .ok()
                        .and_then(|s| now.checked_add(time::Duration::seconds(s)))
                        .ok_or_else(|| CliError::Usage("--duration is too long".into()))?;
                    Some(Some(at))
                }
                (None, None, true) => Some(None),
                (None, None, false) => None,
            };
            let entitlements = if no_entitlements {
                Some(Vec::new())
            } else if entitlements.is_empty() {
                None
            } else {
                Some(entitlements)
            };
            let update = LicenseUpdate {
                max_machines: slots,
                expires_at,
                entitlements,
                metadata: metadata.as_deref().map(parse_metadata).transpose()?,
            };
            if update.is_empty() {
                return Err(CliError::Usage(
                    "nothing to update: give --slots, --expires, --duration, --perpetual, --entitlement, \
                     --no-entitlements or --metadata"
                        .into(),
                ));
            }
            let license = licensing.update_license(&which, update, &ctx).await?;
            if slots.is_some() {
                let (_, machines) = licensing.machines(&LicenseRef::Id(license.id)).await?;
                warn_if_over_slots(err, &license, machines.len())?;
            }
            if expires_at.is_some() {
                warn_if_expired(err, &license, ctx.now)?;
            }
            if json {
                return write_json(out, &LicenseView::at(license, ctx.now));
            }
            writeln!(out, "Updated license {}", license.id)?;
            write_license(out, &license, ctx.now)
        }
        LicenseCommand::Suspend { license } => {
            let l = licensing.suspend(&license_ref(&license)?, &ctx).await?;
            writeln!(out, "License {} is {} ({}, {}).", l.id, l.effective_status(ctx.now), l.email, l.product)?;
            Ok(())
        }
        LicenseCommand::Reinstate { license } => {
            let l = licensing.reinstate(&license_ref(&license)?, &ctx).await?;
            writeln!(out, "License {} is {} ({}, {}).", l.id, l.effective_status(ctx.now), l.email, l.product)?;
            Ok(())
        }
        LicenseCommand::Revoke { license } => {
            let l = licensing.revoke(&license_ref(&license)?, &ctx).await?;
            writeln!(
                out,
                "License {} is {} ({}, {}). Online apps learn it at their next refresh; offline apps once they \
                 install a revocation list made from now on (`issuer revocations export`, GET /v1/revocations).",
                l.id,
                l.effective_status(ctx.now),
                l.email,
                l.product
            )?;
            Ok(())
        }
    }
}

pub(crate) async fn run_machine(
    command: MachineCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    let licensing = open_service(global, err).await?;
    match command {
        MachineCommand::List { license, json } => {
            let (license, machines) = licensing.machines(&license_ref(&license)?).await?;
            if json {
                let view = MachinesView {
                    max_machines: license.max_machines,
                    machines: machines.into_iter().map(Into::into).collect(),
                };
                return write_json(out, &view);
            }
            writeln!(out, "License {}: {}.", license.id, slots_used(machines.len(), license.max_machines))?;
            if !machines.is_empty() {
                write_table(out, &MACHINE_HEADERS, &machine_rows(&machines))?;
            }
            Ok(())
        }
        MachineCommand::Remove { license, fingerprint } => {
            let which = license_ref(&license)?;
            let ctx = licensing.cli_context();
            match licensing.remove_machine(&which, &fingerprint, &ctx).await {
                Ok(()) => {}
                Err(crate::ServiceError::NotActivated) => {
                    return Err(CliError::Failed(format!(
                        "no machine with fingerprint {fingerprint} is activated on license {license}"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
            let (license, machines) = licensing.machines(&which).await?;
            writeln!(
                out,
                "Removed machine {fingerprint} from license {}: {}.",
                license.id,
                slots_used(machines.len(), license.max_machines)
            )?;
            Ok(())
        }
    }
}
