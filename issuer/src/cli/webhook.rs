//! `issuer webhook ...`: webhook endpoints, their secrets and deliveries (docs/webhooks.md). The `--json` output is
//! the HTTP API's, so scripts read the same objects from either. The CLI only queues deliveries (in the store, with
//! the change that caused the event); a running `issuer serve` delivers them.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{fmt_opt_time, fmt_time, open_service, write_json, write_table, CliError, CliResult, GlobalArgs};
use crate::service::{NewWebhook, ServiceError};
use crate::store::{Delivery, EventKind, WebhookEndpoint, ALL_EVENTS};
use crate::views::{type_of_stored, DeliveryView, WebhookView};

/// What the commands that queue say about delivery.
const DELIVERED_BY_SERVE: &str = "Deliveries are queued in the store; a running `issuer serve` delivers them.";

/// `issuer webhook ...`.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Register an endpoint and print its signing secret (shown now and at `rotate-secret` only).
    Create {
        /// Where deliveries are POSTed: an http:// or https:// URL.
        #[arg(long)]
        url: String,
        /// The event types it receives, comma-separated (license.created,machine.activated), or '*' for all.
        #[arg(long, value_name = "TYPES|*", required = true, value_delimiter = ',', value_parser = parse_event)]
        events: Vec<String>,
        /// A note for people (at most 500 characters).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the endpoints, oldest first (without secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an endpoint (without its secret).
    Show {
        /// The endpoint's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an endpoint with its queued and past deliveries.
    Delete {
        /// The endpoint's id.
        id: String,
    },
    /// Give an endpoint a new signing secret and print it; the old one keeps signing beside it for 24 hours.
    RotateSecret {
        /// The endpoint's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled endpoint: its pending deliveries are attempted again, and new events are queued for it.
    Enable {
        /// The endpoint's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List an endpoint's deliveries, oldest first.
    Deliveries {
        /// The endpoint's id.
        id: String,
        /// Only deliveries with an id above this (a previous page's `next_after`).
        #[arg(long, value_name = "N", default_value_t = 0)]
        after: i64,
        /// Page size (1-1000).
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue a delivery's event again for its endpoint, with the same `webhook-id` (receivers can tell a resend).
    Resend {
        /// The endpoint's id.
        id: String,
        /// The delivery's id (see `issuer webhook deliveries ID`).
        delivery: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One entry of `--events`: a known event type, or `*`.
fn parse_event(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name == ALL_EVENTS || EventKind::from_type(name).is_some() {
        return Ok(name.to_string());
    }
    Err(format!("`{name}` is not an event type (docs/webhooks.md lists them), nor `*` for all"))
}

/// The shape of `GET /v1/webhooks`.
#[derive(Serialize)]
struct ListView {
    webhooks: Vec<WebhookView>,
}

/// The shape of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Serialize)]
struct DeliveriesView {
    deliveries: Vec<DeliveryView>,
    next_after: Option<i64>,
}

/// The error of an endpoint id that names no endpoint (also one that is not a UUID, as in the API).
fn not_found(id: &str) -> CliError {
    CliError::Failed(format!("no webhook endpoint with this id exists: `{id}` (see `issuer webhook list`)"))
}

/// An endpoint id; one that is not a UUID names no endpoint.
fn endpoint_id(text: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(text.trim()).map_err(|_| not_found(text))
}

/// A service error of `create` in the words of this command: flags rather than the API's field names.
fn create_error(e: ServiceError) -> CliError {
    match e {
        ServiceError::InvalidField { field, message } => CliError::Usage(format!("--{field}: {message}")),
        ServiceError::WebhookUrlRefused(why) => CliError::Failed(format!("--url is refused: {why}")),
        other => other.into(),
    }
}

/// A service error of a command on the endpoint `id`.
fn webhook_error(id: &str, e: ServiceError) -> CliError {
    match e {
        ServiceError::WebhookNotFound => not_found(id),
        ServiceError::DeliveryNotFound => CliError::Failed(format!(
            "webhook endpoint {id} has no delivery with this id (see `issuer webhook deliveries {id}`)"
        )),
        other => other.into(),
    }
}

/// A time in whole seconds, as the API's delivery view shows it.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Writes an endpoint for people, one `name: value` line per field; its secret when given.
fn write_endpoint(out: &mut dyn Write, e: &WebhookEndpoint, now: OffsetDateTime, secret: Option<&str>) -> CliResult {
    let events: Vec<String> = e.events.iter().map(|k| type_of_stored(k)).collect();
    let status = match (e.disabled_at, &e.disabled_reason) {
        (None, _) => "enabled".to_string(),
        (Some(at), Some(why)) => format!("disabled at {} ({why})", fmt_time(at)),
        (Some(at), None) => format!("disabled at {}", fmt_time(at)),
    };
    let description = if e.description.is_empty() { "-" } else { e.description.as_str() };
    writeln!(out, "id:           {}", e.id)?;
    writeln!(out, "url:          {}", e.url)?;
    writeln!(out, "events:       {}", events.join(", "))?;
    writeln!(out, "description:  {description}")?;
    writeln!(out, "status:       {status}")?;
    writeln!(out, "last success: {}", fmt_opt_time(e.last_success_at, "never"))?;
    if let Some(until) = e.previous_secret_until.filter(|&t| t > now) {
        writeln!(out, "old secret:   signs beside the new one until {}", fmt_time(until))?;
    }
    writeln!(out, "created:      {}", fmt_time(e.created_at))?;
    if let Some(secret) = secret {
        writeln!(out, "secret:       {secret}")?;
    }
    Ok(())
}

fn delivery_rows(deliveries: &[Delivery]) -> Vec<Vec<String>> {
    deliveries
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.event_id.to_string(),
                d.state.to_string(),
                d.attempts.to_string(),
                fmt_time(whole_seconds(d.created_at)),
                fmt_opt_time(d.next_attempt_at.map(whole_seconds), "-"),
                d.last_status.map_or_else(|| "-".into(), |s| s.to_string()),
                d.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

const DELIVERY_HEADERS: [&str; 8] = ["ID", "EVENT", "STATE", "ATTEMPTS", "CREATED", "NEXT ATTEMPT", "STATUS", "ERROR"];

pub(crate) async fn run(
    command: WebhookCommand,
    global: &GlobalArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    let licensing = open_service(global, err).await?;
    let ctx = licensing.cli_context();
    match command {
        WebhookCommand::Create { url, events, description, json } => {
            let new = NewWebhook { url, events, description: description.unwrap_or_default() };
            let e = licensing.create_webhook(new, &ctx).await.map_err(create_error)?;
            if json {
                return write_json(out, &WebhookView::at(e, ctx.now, true));
            }
            writeln!(out, "Created webhook endpoint {}", e.id)?;
            write_endpoint(out, &e, ctx.now, Some(&e.secret))?;
            writeln!(
                out,
                "The secret is shown only now (`issuer webhook rotate-secret {}` makes a new one); receivers verify \
                 signatures with it. {DELIVERED_BY_SERVE}",
                e.id
            )?;
            Ok(())
        }
        WebhookCommand::List { json } => {
            let endpoints = licensing.webhooks().await?;
            if json {
                let webhooks = endpoints.into_iter().map(|e| WebhookView::at(e, ctx.now, false)).collect();
                return write_json(out, &ListView { webhooks });
            }
            if endpoints.is_empty() {
                writeln!(out, "No webhook endpoints yet; create one with `issuer webhook create`.")?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = endpoints
                .iter()
                .map(|e| {
                    let events: Vec<String> = e.events.iter().map(|k| type_of_stored(k)).collect();
                    vec![
                        e.id.to_string(),
                        e.url.clone(),
                        events.join(","),
                        if e.disabled_at.is_some() { "disabled" } else { "enabled" }.into(),
                        fmt_opt_time(e.last_success_at, "never"),
                        fmt_time(e.created_at),
                    ]
                })
                .collect();
            write_table(out, &["ID", "URL", "EVENTS", "STATUS", "LAST SUCCESS", "CREATED"], &rows)
        }
        WebhookCommand::Show { id, json } => {
            let e = licensing.webhook(endpoint_id(&id)?).await.map_err(|e| webhook_error(&id, e))?;
            if json {
                return write_json(out, &WebhookView::at(e, ctx.now, false));
            }
            write_endpoint(out, &e, ctx.now, None)
        }
        WebhookCommand::Delete { id } => {
            let uuid = endpoint_id(&id)?;
            licensing.delete_webhook(uuid, &ctx).await.map_err(|e| webhook_error(&id, e))?;
            writeln!(out, "Deleted webhook endpoint {uuid} and its deliveries.")?;
            Ok(())
        }
        WebhookCommand::RotateSecret { id, json } => {
            let e =
                licensing.rotate_webhook_secret(endpoint_id(&id)?, &ctx).await.map_err(|e| webhook_error(&id, e))?;
            if json {
                return write_json(out, &WebhookView::at(e, ctx.now, true));
            }
            writeln!(out, "Rotated the secret of webhook endpoint {}", e.id)?;
            write_endpoint(out, &e, ctx.now, Some(&e.secret))?;
            writeln!(out, "The new secret is shown only now; the old one keeps signing beside it for 24 hours.")?;
            Ok(())
        }
        WebhookCommand::Enable { id, json } => {
            let e = licensing.enable_webhook(endpoint_id(&id)?, &ctx).await.map_err(|e| webhook_error(&id, e))?;
            if json {
                return write_json(out, &WebhookView::at(e, ctx.now, false));
            }
            writeln!(out, "Webhook endpoint {} is enabled. {DELIVERED_BY_SERVE}", e.id)?;
            write_endpoint(out, &e, ctx.now, None)
        }
        WebhookCommand::Deliveries { id, after, limit, json } => {
            let found =
                licensing.deliveries(endpoint_id(&id)?, after, limit).await.map_err(|e| webhook_error(&id, e))?;
            let next_after = crate::views::next_after(&found, limit, |d| d.id);
            if json {
                let deliveries = found.into_iter().map(Into::into).collect();
                return write_json(out, &DeliveriesView { deliveries, next_after });
            }
            if found.is_empty() {
                writeln!(out, "No deliveries match.")?;
            } else {
                write_table(out, &DELIVERY_HEADERS, &delivery_rows(&found))?;
            }
            if let Some(n) = next_after {
                writeln!(out, "More deliveries: pass --after {n}")?;
            }
            Ok(())
        }
        WebhookCommand::Resend { id, delivery, json } => {
            let queued = licensing
                .resend_delivery(endpoint_id(&id)?, delivery, &ctx)
                .await
                .map_err(|e| webhook_error(&id, e))?;
            if json {
                return write_json(out, &DeliveryView::from(queued));
            }
            writeln!(
                out,
                "Queued delivery {} of event {} to webhook endpoint {}. {DELIVERED_BY_SERVE}",
                queued.id, queued.event_id, queued.endpoint_id
            )?;
            Ok(())
        }
    }
}
