//! `issuer policy ...`: named license terms (docs/policies.md). The `--json` output is the HTTP API's policy view, so
//! scripts read the same objects from either.

use std::io::Write;

use clap::{ArgAction, Args, Subcommand};
use serde::Serialize;

use super::{fmt_time, open_service, write_json, write_table, CliError, CliResult, GlobalArgs};
use crate::config::{format_duration_secs, parse_duration_secs};
use crate::http::policies::PolicyView;
use crate::service::ServiceError;
use crate::store::{Overage, Policy, PolicyUpdate};

/// `issuer policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create a policy.
    Create {
        /// The policy's name: a-z, 0-9 and '-', e.g. pro-annual. It cannot change.
        name: String,
        /// The product of its licenses (A-Z a-z 0-9 . _ -). It cannot change.
        #[arg(long)]
        product: String,
        /// Machine slots of a new license (seats, when floating).
        #[arg(long, alias = "slots", value_name = "N")]
        max_machines: u32,
        /// The policy's terms.
        #[command(flatten)]
        terms: CreateTerms,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the policies, by name.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a policy.
    Show {
        /// The policy's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a policy's terms: grants reach new licenses, rules every license of the policy at its next request.
    Update {
        /// The policy's name.
        name: String,
        /// The changes.
        #[command(flatten)]
        terms: UpdateTerms,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a policy that no license uses.
    Delete {
        /// The policy's name.
        name: String,
    },
}

/// The optional terms of `policy create`; each left out is the default of docs/policies.md.
#[derive(Debug, Args)]
pub struct CreateTerms {
    /// A new license expires this long after its creation, e.g. 365d, 12w [default: perpetual].
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
    /// An entitlement of a new license (repeat for several).
    #[arg(long = "entitlement", value_name = "NAME")]
    entitlements: Vec<String>,
    /// Online tokens: time from issue to refresh [default: the service's refresh_interval].
    #[arg(long, value_name = "DURATION")]
    refresh_interval: Option<String>,
    /// Online tokens: time from refresh to expiry [default: the service's offline_grace].
    #[arg(long, value_name = "DURATION")]
    offline_grace: Option<String>,
    /// How long a machine may go without checking in (at least 1m) [default: no lease].
    #[arg(long, value_name = "DURATION")]
    lease: Option<String>,
    /// Seats are concurrent use (needs --lease).
    #[arg(long)]
    floating: bool,
    /// Activations tolerated above the slots: none, +N or a factor such as 1.25x [default: none].
    #[arg(long, value_name = "OVERAGE")]
    overage: Option<String>,
    /// Refuse air-gapped (offline) activation.
    #[arg(long)]
    no_offline: bool,
    /// At most this many deactivations per license within --deactivation-period [default: no limit].
    #[arg(long, value_name = "N")]
    deactivation_limit: Option<u32>,
    /// The window of --deactivation-limit, 1d to 365d [default: 30d].
    #[arg(long, value_name = "DURATION")]
    deactivation_period: Option<String>,
    /// What its licenses' activations are bound to: machine or domain (fixed once created) [default: machine].
    #[arg(long, value_parser = super::license::parse_kind)]
    kind: Option<crate::store::LicenseKind>,
}

/// The changes of `policy update`; `none` clears a nullable term.
#[derive(Debug, Args)]
pub struct UpdateTerms {
    /// New machine slots of new licenses.
    #[arg(long, alias = "slots", value_name = "N")]
    max_machines: Option<u32>,
    /// New duration of new licenses, or `none` for perpetual.
    #[arg(long, value_name = "DURATION|none")]
    duration: Option<String>,
    /// New entitlements of new licenses, replacing the old ones (repeat for several).
    #[arg(long = "entitlement", value_name = "NAME", conflicts_with = "no_entitlements")]
    entitlements: Vec<String>,
    /// New licenses get no entitlements.
    #[arg(long)]
    no_entitlements: bool,
    /// New refresh interval, or `none` for the service's.
    #[arg(long, value_name = "DURATION|none")]
    refresh_interval: Option<String>,
    /// New offline grace, or `none` for the service's.
    #[arg(long, value_name = "DURATION|none")]
    offline_grace: Option<String>,
    /// New lease, or `none` (which ends every lease of the policy's machines at once).
    #[arg(long, value_name = "DURATION|none")]
    lease: Option<String>,
    /// Floating seats or not.
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    floating: Option<bool>,
    /// New overage: none, +N or a factor such as 1.25x.
    #[arg(long, value_name = "OVERAGE")]
    overage: Option<String>,
    /// Allow air-gapped (offline) activation or not.
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    offline: Option<bool>,
    /// New deactivation limit, or `none` for no limit.
    #[arg(long, value_name = "N|none")]
    deactivation_limit: Option<String>,
    /// New window of the deactivation limit, 1d to 365d.
    #[arg(long, value_name = "DURATION")]
    deactivation_period: Option<String>,
}

/// The shape of `GET /v1/policies`.
#[derive(Serialize)]
struct ListView {
    policies: Vec<PolicyView>,
}

fn duration(flag: &str, text: &str) -> Result<u64, CliError> {
    parse_duration_secs(text).map_err(|m| CliError::Usage(format!("{flag}: {m}")))
}

fn opt_duration(flag: &str, text: Option<&str>) -> Result<Option<u64>, CliError> {
    text.map(|t| duration(flag, t)).transpose()
}

fn is_none_word(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("none")
}

/// A nullable term of `policy update`: not given, `none` (cleared) or a duration.
fn nullable_duration(flag: &str, text: Option<&str>) -> Result<Option<Option<u64>>, CliError> {
    text.map(|t| if is_none_word(t) { Ok(None) } else { duration(flag, t).map(Some) }).transpose()
}

fn overage(text: &str) -> Result<Overage, CliError> {
    text.parse().map_err(|m: String| CliError::Usage(format!("--overage: {m}")))
}

/// A service error in the words of this command: the policy by name, and flags rather than the API's field names.
fn policy_error(name: &str, e: ServiceError) -> CliError {
    match e {
        ServiceError::PolicyNotFound => {
            CliError::Failed(format!("no policy named `{name}` exists (see `issuer policy list`)"))
        }
        ServiceError::PolicyExists => CliError::Failed(format!(
            "a policy named `{name}` exists already; choose another name, or change it with `issuer policy update \
             {name}`"
        )),
        ServiceError::InvalidField { field, message } => CliError::Usage(match field {
            "name" => format!("the policy name `{name}` {message}"),
            "entitlements" => format!("--entitlement: {message}"),
            other => format!("--{}: {message}", other.replace('_', "-")),
        }),
        ServiceError::PolicyInUse { .. } => CliError::Failed(format!("cannot delete policy `{name}`: {e}")),
        other => other.into(),
    }
}

fn policy_of(name: String, product: String, max_machines: u32, t: CreateTerms) -> Result<Policy, CliError> {
    let mut p = Policy::new(name, product, max_machines);
    p.duration_secs = opt_duration("--duration", t.duration.as_deref())?;
    p.entitlements = t.entitlements;
    p.refresh_interval_secs = opt_duration("--refresh-interval", t.refresh_interval.as_deref())?;
    p.offline_grace_secs = opt_duration("--offline-grace", t.offline_grace.as_deref())?;
    p.lease_secs = opt_duration("--lease", t.lease.as_deref())?;
    p.floating = t.floating;
    if let Some(o) = t.overage.as_deref() {
        p.overage = overage(o)?;
    }
    p.offline_allowed = !t.no_offline;
    p.deactivation_limit = t.deactivation_limit;
    p.kind = t.kind.unwrap_or_default();
    if let Some(period) = opt_duration("--deactivation-period", t.deactivation_period.as_deref())? {
        p.deactivation_period_secs = period;
    }
    Ok(p)
}

fn update_of(t: UpdateTerms) -> Result<PolicyUpdate, CliError> {
    let deactivation_limit = match t.deactivation_limit.as_deref() {
        None => None,
        Some(text) if is_none_word(text) => Some(None),
        Some(text) => Some(Some(text.trim().parse::<u32>().map_err(|_| {
            CliError::Usage(format!("--deactivation-limit: `{text}` is neither a whole number nor `none`"))
        })?)),
    };
    let entitlements = if t.no_entitlements {
        Some(Vec::new())
    } else if t.entitlements.is_empty() {
        None
    } else {
        Some(t.entitlements)
    };
    Ok(PolicyUpdate {
        max_machines: t.max_machines,
        duration_secs: nullable_duration("--duration", t.duration.as_deref())?,
        entitlements,
        refresh_interval_secs: nullable_duration("--refresh-interval", t.refresh_interval.as_deref())?,
        offline_grace_secs: nullable_duration("--offline-grace", t.offline_grace.as_deref())?,
        lease_secs: nullable_duration("--lease", t.lease.as_deref())?,
        floating: t.floating,
        overage: t.overage.as_deref().map(overage).transpose()?,
        offline_allowed: t.offline,
        deactivation_limit,
        deactivation_period_secs: opt_duration("--deactivation-period", t.deactivation_period.as_deref())?,
    })
}

fn or_text(secs: Option<u64>, none: &str) -> String {
    secs.map_or_else(|| none.to_string(), format_duration_secs)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// Writes a policy for people, one `name: value` line per term.
fn write_policy(out: &mut dyn Write, p: &Policy) -> CliResult {
    let entitlements = if p.entitlements.is_empty() { "-".to_string() } else { p.entitlements.join(", ") };
    let limit = match p.deactivation_limit {
        Some(n) => format!("{n} per {}", format_duration_secs(p.deactivation_period_secs)),
        None => "none".into(),
    };
    let lines = [
        ("name", p.name.clone()),
        ("product", p.product.clone()),
        ("slots", p.max_machines.to_string()),
        ("duration", or_text(p.duration_secs, "perpetual")),
        ("entitlements", entitlements),
        ("refresh interval", or_text(p.refresh_interval_secs, "the service's")),
        ("offline grace", or_text(p.offline_grace_secs, "the service's")),
        ("lease", or_text(p.lease_secs, "none")),
        ("floating", yes_no(p.floating)),
        ("overage", p.overage.to_string()),
        ("offline", if p.offline_allowed { "allowed" } else { "refused" }.into()),
        ("deactivation limit", limit),
        ("created", fmt_time(p.created_at)),
        ("updated", fmt_time(p.updated_at)),
    ];
    for (label, value) in lines {
        writeln!(out, "{:<20}{value}", format!("{label}:"))?;
    }
    Ok(())
}

pub(crate) async fn run(
    command: PolicyCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    // Input is checked before the store is opened, so a typo never waits for it.
    let command = Checked::of(command)?;
    let licensing = open_service(global, err).await?;
    let ctx = licensing.cli_context();
    match command {
        Checked::Create { policy, json } => {
            let name = policy.name.clone();
            let p = licensing.create_policy(policy, &ctx).await.map_err(|e| policy_error(&name, e))?;
            if json {
                return write_json(out, &PolicyView::from(p));
            }
            writeln!(out, "Created policy {}", p.name)?;
            write_policy(out, &p)
        }
        Checked::List { json } => {
            let policies = licensing.policies().await?;
            if json {
                return write_json(out, &ListView { policies: policies.into_iter().map(Into::into).collect() });
            }
            if policies.is_empty() {
                writeln!(out, "No policies yet; create one with `issuer policy create`.")?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = policies
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.product.clone(),
                        p.max_machines.to_string(),
                        or_text(p.duration_secs, "perpetual"),
                        or_text(p.lease_secs, "-"),
                        yes_no(p.floating),
                        p.overage.to_string(),
                        yes_no(p.offline_allowed),
                    ]
                })
                .collect();
            let headers = ["NAME", "PRODUCT", "SLOTS", "DURATION", "LEASE", "FLOATING", "OVERAGE", "OFFLINE"];
            write_table(out, &headers, &rows)
        }
        Checked::Show { name, json } => {
            let p = licensing.policy(&name).await.map_err(|e| policy_error(&name, e))?;
            if json {
                return write_json(out, &PolicyView::from(p));
            }
            write_policy(out, &p)
        }
        Checked::Update { name, update, json } => {
            let grants =
                update.max_machines.is_some() || update.duration_secs.is_some() || update.entitlements.is_some();
            let p = licensing.update_policy(&name, update, &ctx).await.map_err(|e| policy_error(&name, e))?;
            if json {
                return write_json(out, &PolicyView::from(p));
            }
            writeln!(out, "Updated policy {}", p.name)?;
            if grants {
                // Licenses copied the grants when they were made; saying so spares a search for why they kept theirs.
                writeln!(
                    out,
                    "New licenses get the new slots, duration and entitlements; existing ones keep theirs (change \
                     them with `issuer license update`)."
                )?;
            }
            write_policy(out, &p)
        }
        Checked::Delete { name } => {
            licensing.delete_policy(&name, &licensing.cli_context()).await.map_err(|e| policy_error(&name, e))?;
            writeln!(out, "Deleted policy {name}.")?;
            Ok(())
        }
    }
}

/// A command whose flags are parsed into the service's types.
enum Checked {
    Create { policy: Policy, json: bool },
    List { json: bool },
    Show { name: String, json: bool },
    Update { name: String, update: PolicyUpdate, json: bool },
    Delete { name: String },
}

impl Checked {
    fn of(command: PolicyCommand) -> Result<Checked, CliError> {
        Ok(match command {
            PolicyCommand::Create { name, product, max_machines, terms, json } => {
                Checked::Create { policy: policy_of(name, product, max_machines, terms)?, json }
            }
            PolicyCommand::List { json } => Checked::List { json },
            PolicyCommand::Show { name, json } => Checked::Show { name, json },
            PolicyCommand::Update { name, terms, json } => {
                let update = update_of(terms)?;
                if update.is_empty() {
                    return Err(CliError::Usage(
                        "nothing to update: give --max-machines, --duration, --entitlement, --no-entitlements, \
                         --refresh-interval, --offline-grace, --lease, --floating, --overage, --offline, \
                         --deactivation-limit or --deactivation-period"
                            .into(),
                    ));
                }
                Checked::Update { name, update, json }
            }
            PolicyCommand::Delete { name } => Checked::Delete { name },
        })
    }
}
