//! `issuer events ...`: the audit log, every event of any license or none with its actor and client IP. The `--json`
//! output is the shape of `GET /v1/events`, so scripts read the same objects from either.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;

use super::license::license_ref;
use super::{fmt_time, open_service, write_json, write_table, CliResult, GlobalArgs};
use crate::store::{Actor, Event, EventFilter, EventKind};
use crate::views::EventView;

/// `issuer events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, oldest first: id, time, type, license, actor, client IP.
    List {
        /// Only events of this type, e.g. license.created (docs/webhooks.md lists them).
        #[arg(long = "type", value_name = "TYPE", value_parser = parse_kind)]
        kind: Option<EventKind>,
        /// Only events of this license.
        #[arg(long, value_name = "ID|KEY")]
        license: Option<String>,
        /// Only events with an id above this (a previous page's `next_after`).
        #[arg(long, value_name = "N", default_value_t = 0)]
        after: i64,
        /// Page size (1-1000).
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    let name = s.trim();
    EventKind::from_type(name).ok_or_else(|| format!("`{name}` is not an event type (docs/webhooks.md lists them)"))
}

/// The shape of `GET /v1/events`.
#[derive(Serialize)]
struct ListView {
    events: Vec<EventView>,
    next_after: Option<i64>,
}

/// Who caused an event, for people: `admin_token:<id> (<label>)`, `cli`, `app`, `system`, or `-` when not recorded.
fn actor_text(actor: Option<&Actor>) -> String {
    match actor {
        Some(Actor::AdminToken { id, label }) => format!("admin_token:{id} ({label})"),
        Some(other) => other.type_name().to_string(),
        None => "-".to_string(),
    }
}

fn event_rows(events: &[Event]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                fmt_time(e.event.at),
                e.event.kind.as_str().to_string(),
                e.event.license_id.map_or_else(|| "-".into(), |id| id.to_string()),
                actor_text(e.event.actor.as_ref()),
                e.event.client_ip.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

pub(crate) async fn run(
    command: EventsCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    let EventsCommand::List { kind, license, after, limit, json } = command;
    // Input is checked before the store is opened, so a typo never waits for it.
    let which = license.as_deref().map(license_ref).transpose()?;
    let licensing = open_service(global, err).await?;
    let license_id = match &which {
        Some(which) => Some(licensing.license(which).await?.id),
        None => None,
    };
    let found = licensing.audit_events(&EventFilter { kind, license_id, after, limit }).await?;
    let next_after = crate::views::next_after(&found, limit, |e| e.id);
    if json {
        return write_json(out, &ListView { events: found.into_iter().map(Into::into).collect(), next_after });
    }
    if found.is_empty() {
        writeln!(out, "No events match.")?;
    } else {
        write_table(out, &["ID", "AT", "TYPE", "LICENSE", "ACTOR", "CLIENT IP"], &event_rows(&found))?;
    }
    if let Some(n) = next_after {
        writeln!(out, "More events: pass --after {n}")?;
    }
    Ok(())
}

/// The rows of `issuer license show`'s recent events: time, type, machine, client IP and the detail (without the
/// license snapshot, which `show` prints above).
pub(super) fn license_event_rows(events: &[Event]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            // The license's own snapshot (in license events' detail, for webhooks) is what `show` prints above.
            let detail = match &e.event.detail {
                serde_json::Value::Object(m) => {
                    let rest: serde_json::Map<_, _> = m
                        .iter()
                        .filter(|(k, _)| k.as_str() != "license")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if rest.is_empty() {
                        String::new()
                    } else {
                        serde_json::Value::Object(rest).to_string()
                    }
                }
                other => other.to_string(),
            };
            vec![
                fmt_time(e.event.at),
                e.event.kind.as_str().into(),
                e.event.fingerprint.clone().unwrap_or_else(|| "-".into()),
                e.event.client_ip.clone().unwrap_or_else(|| "-".into()),
                detail,
            ]
        })
        .collect()
}
