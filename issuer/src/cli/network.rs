//! `issuer ip-rule ...` and `issuer license ips`: the client network rules and the addresses a license was used
//! from (docs/network.md). The `--json` output is the HTTP API's objects.

use std::io::Write;

use clap::Subcommand;
use uuid::Uuid;

use super::license::license_ref;
use super::{fmt_time, open_service, write_json, write_table, CliError, CliResult, GlobalArgs};
use crate::service::{Licensing, NewIpRule, ServiceError};
use crate::store::{IpRule, IpScope};
use crate::views::{IpRuleView, IpRulesView, LicenseIpsView};

/// `issuer ip-rule ...`.
#[derive(Debug, Subcommand)]
pub enum IpRuleCommand {
    /// Create a rule: `deny` refuses the network, `allow` admits only the allowed networks of its level.
    ///
    /// Without --license or --policy the rule is global. It applies to activate, validate, refresh, deactivate and
    /// the offline endpoints, on every running instance within a second.
    Create {
        /// `allow` or `deny`.
        #[arg(value_name = "allow|deny")]
        action: String,
        /// The network, e.g. 203.0.113.0/24, 2001:db8::/32, or one address.
        cidr: String,
        /// Only for this license (id or key).
        #[arg(long, value_name = "ID|KEY", conflicts_with = "policy")]
        license: Option<String>,
        /// Only for the licenses of this policy.
        #[arg(long, value_name = "NAME")]
        policy: Option<String>,
        /// Why the rule exists (at most 200 bytes).
        #[arg(long)]
        note: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the stored rules, oldest first, and the configured global ones.
    List {
        /// Only the rules of this license (id or key).
        #[arg(long, value_name = "ID|KEY", conflicts_with = "policy")]
        license: Option<String>,
        /// Only the rules of this policy.
        #[arg(long, value_name = "NAME")]
        policy: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored rule.
    Delete {
        /// The rule's id (see `issuer ip-rule list`).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A service error in the words of this command.
fn flag_error(e: ServiceError) -> CliError {
    match e {
        ServiceError::InvalidField { field: "cidr", message } => CliError::Usage(format!("CIDR: {message}")),
        ServiceError::InvalidField { field: "action", message } => CliError::Usage(format!("action: {message}")),
        ServiceError::InvalidField { field, message } => CliError::Usage(format!("--{field}: {message}")),
        ServiceError::IpRuleNotFound => {
            CliError::Failed("no network rule has this id (see `issuer ip-rule list`)".into())
        }
        other => other.into(),
    }
}

fn rule_row(r: &IpRule) -> Vec<String> {
    let whom = match &r.scope {
        IpScope::Global => "global".to_string(),
        IpScope::Policy(name) => format!("policy {name}"),
        IpScope::License(id) => format!("license {id}"),
    };
    vec![r.id.to_string(), r.action.as_str().into(), r.cidr.to_string(), whom, r.note.clone()]
}

pub(crate) async fn run(
    command: IpRuleCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    let licensing = open_service(global, err).await?;
    let ctx = licensing.cli_context();
    match command {
        IpRuleCommand::Create { action, cidr, license, policy, note, json } => {
            let new = NewIpRule { cidr, action, license, policy, note };
            let rule = licensing.create_ip_rule(new, &ctx).await.map_err(flag_error)?;
            if json {
                return write_json(out, &IpRuleView::from(&rule));
            }
            writeln!(out, "Created rule {}: {} {} ({})", rule.id, rule.action.as_str(), rule.cidr, rule.scope.level())?;
            writeln!(out, "Running instances apply it within a second.")?;
            Ok(())
        }
        IpRuleCommand::List { license, policy, json } => {
            let scope = match (license, policy) {
                (Some(which), _) => Some(IpScope::License(licensing.license(&license_ref(&which)?).await?.id)),
                (None, Some(name)) => Some(IpScope::Policy(licensing.policy(&name).await?.name)),
                (None, None) => None,
            };
            let rules = licensing.ip_rules(scope.as_ref()).await?;
            let configured = licensing.configured_ip_rules();
            if json {
                return write_json(out, &IpRulesView::of(&rules, configured));
            }
            if rules.is_empty() {
                writeln!(out, "No stored network rules.")?;
            } else {
                write_table(
                    out,
                    &["ID", "ACTION", "NETWORK", "APPLIES TO", "NOTE"],
                    &rules.iter().map(rule_row).collect::<Vec<_>>(),
                )?;
            }
            for c in &configured.allow {
                writeln!(out, "configured (ip_allow): allow {c} (global)")?;
            }
            for c in &configured.deny {
                writeln!(out, "configured (ip_deny):  deny {c} (global)")?;
            }
            Ok(())
        }
        IpRuleCommand::Delete { id, json } => {
            let id = Uuid::parse_str(id.trim()).map_err(|_| flag_error(ServiceError::IpRuleNotFound))?;
            let rule = licensing.delete_ip_rule(id, &ctx).await.map_err(flag_error)?;
            if json {
                return write_json(out, &IpRuleView::from(&rule));
            }
            writeln!(out, "Deleted rule {}: {} {} ({})", rule.id, rule.action.as_str(), rule.cidr, rule.scope.level())?;
            Ok(())
        }
    }
}

/// `issuer license ips ID|KEY`: the addresses the license was used from, most recently seen first.
pub(crate) async fn license_ips(licensing: &Licensing, which: &str, json: bool, out: &mut dyn Write) -> CliResult {
    let (license, ips) = licensing.license_ips(&license_ref(which)?).await?;
    if json {
        return write_json(out, &LicenseIpsView::of(&license, ips));
    }
    if ips.is_empty() {
        writeln!(out, "License {} has not been used from any recorded address.", license.id)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = ips
        .iter()
        .map(|u| {
            vec![
                u.ip.to_string(),
                fmt_time(u.first_seen),
                fmt_time(u.last_seen),
                u.requests.to_string(),
                u.blocked.to_string(),
            ]
        })
        .collect();
    write_table(out, &["IP", "FIRST SEEN", "LAST SEEN", "REQUESTS", "BLOCKED"], &rows)
}
