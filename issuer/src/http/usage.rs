//! `GET /v1/licenses/{id}/usage`: a license's daily usage counts (docs/usage.md).

use axum::extract::State;
use axum::Json as JsonResponse;
use serde::Deserialize;
use time::Date;

use super::error::ApiError;
use super::extract::{Path, Query};
use super::AppState;
use crate::service::{LicenseRef, ServiceError};
use crate::views::LicenseUsageView;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// The first day, `YYYY-MM-DD` (UTC).
    from: Option<String>,
    /// The last day, included.
    to: Option<String>,
}

/// A `YYYY-MM-DD` query parameter, of the years 1 to 9999 (what every backend stores).
fn day(field: &'static str, text: Option<&str>) -> Result<Option<Date>, ServiceError> {
    let format = time::macros::format_description!("[year repr:full sign:automatic]-[month]-[day]");
    let bad = || ServiceError::InvalidField { field, message: "expected a date, YYYY-MM-DD (years 1 to 9999)".into() };
    text.map(|t| match Date::parse(t, &format) {
        Ok(d) if t.len() == 10 && (1..=9999).contains(&d.year()) => Ok(d),
        _ => Err(bad()),
    })
    .transpose()
}

/// `GET /v1/licenses/{id}/usage?from=&to=`: one entry per day from `from` to `to` (default: the last 30 days).
pub(crate) async fn usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<JsonResponse<LicenseUsageView>, ApiError> {
    let which = LicenseRef::parse(&id)?;
    let (from, to) = (day("from", q.from.as_deref())?, day("to", q.to.as_deref())?);
    let usage = state.licensing.license_usage(&which, from, to).await?;
    Ok(JsonResponse(LicenseUsageView::from(usage)))
}
