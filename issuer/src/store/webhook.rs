//! Webhook endpoints and their deliveries as the store keeps them (docs/webhooks.md). The store holds the outbox and
//! its state; when to retry, give up or disable an endpoint is the service's decision.

use std::fmt;

use time::OffsetDateTime;
use uuid::Uuid;

use super::Event;

/// The subscription that matches every event type.
pub const ALL_EVENTS: &str = "*";

/// A webhook endpoint. Its `Debug` output hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Its id (UUID v7).
    pub id: Uuid,
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// The vendor's note.
    pub description: String,
    /// The stored names of the event kinds it receives, or [`ALL_EVENTS`] alone.
    pub events: Vec<String>,
    /// The signing secret (`whsec_<base64 key>`).
    pub secret: String,
    /// The secret before the last rotation, which keeps signing beside the new one until `previous_secret_until`.
    pub previous_secret: Option<String>,
    /// When the previous secret stops signing.
    pub previous_secret_until: Option<OffsetDateTime>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was disabled (it gets no deliveries while disabled); `None` when enabled.
    pub disabled_at: Option<OffsetDateTime>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When a delivery to it last succeeded.
    pub last_success_at: Option<OffsetDateTime>,
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"<hidden>")
            .field("previous_secret", &self.previous_secret.as_ref().map(|_| "<hidden>"))
            .field("previous_secret_until", &self.previous_secret_until)
            .field("disabled_at", &self.disabled_at)
            .field("last_success_at", &self.last_success_at)
            .finish_non_exhaustive()
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Not yet delivered; attempted again at `next_attempt_at`.
    Pending,
    /// An attempt got a 2xx answer.
    Delivered,
    /// Given up after the retry window.
    Failed,
}

impl DeliveryState {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// The state with this stored word.
    pub(crate) fn parse(s: &str) -> Option<DeliveryState> {
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed].into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event's delivery to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The event delivered (its id is the `webhook-id`).
    pub event_id: i64,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made (an attempt counts when it starts).
    pub attempts: u32,
    /// When it was queued (milliseconds kept).
    pub created_at: OffsetDateTime,
    /// When it is attempted next (pending only; while an attempt runs, when its claim ends).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When the last attempt started.
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    pub finished_at: Option<OffsetDateTime>,
}

/// A delivery claimed for an attempt, with what sending it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The delivery as claimed (`attempts` counts this attempt).
    pub delivery: Delivery,
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// The event.
    pub event: Event,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attempt {
    /// A 2xx answer.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Anything else: another status, a timeout, a refused connection or address.
    Failed {
        /// The status, if an answer came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again; `None` gives up (the delivery fails).
        retry_at: Option<OffsetDateTime>,
    },
}

/// What recording an attempt ended at `at` writes to its delivery, in both backends.
pub(crate) struct AttemptColumns<'a> {
    /// The delivery's new state.
    pub state: DeliveryState,
    /// The answer's status, if any.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<&'a str>,
    /// The next attempt, for a retry.
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it finished (delivered or given up).
    pub finished_at: Option<OffsetDateTime>,
}

impl Attempt {
    /// The columns recording this attempt, ended at `at`, writes.
    pub(crate) fn columns(&self, at: OffsetDateTime) -> AttemptColumns<'_> {
        match self {
            Attempt::Delivered { status } => AttemptColumns {
                state: DeliveryState::Delivered,
                status: Some(*status),
                error: None,
                next_attempt_at: None,
                finished_at: Some(at),
            },
            Attempt::Failed { status, error, retry_at: Some(retry) } => AttemptColumns {
                state: DeliveryState::Pending,
                status: *status,
                error: Some(error),
                next_attempt_at: Some(*retry),
                finished_at: None,
            },
            Attempt::Failed { status, error, retry_at: None } => AttemptColumns {
                state: DeliveryState::Failed,
                status: *status,
                error: Some(error),
                next_attempt_at: None,
                finished_at: Some(at),
            },
        }
    }
}

/// A stored success time is moved only when it is older than this, so a busy endpoint's successes do not all
/// write its row (the disabling rule allows for it).
pub const SUCCESS_RESOLUTION_SECS: i64 = 60;
