//! `issuer license import FILE.csv`: licenses from a CSV of purchases, with a progress bar, a summary and a reject file.

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{write_json, CliError, CliResult};
use crate::config::parse_duration_secs;
use crate::service::{Expiry, Licensing, NewLicense, ServiceError};

/// The columns `license import` reads: the first four are required, `entitlements` (separated by `;`) and `order_id`
/// (the idempotency key, so a re-import skips rows already created) are optional. Other columns are ignored.
pub const IMPORT_COLUMNS: [&str; 6] = ["email", "product", "slots", "expiry", "entitlements", "order_id"];

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Rows that created a license.
    pub created: u64,
    /// Rows whose `order_id` was imported before (the license exists already).
    pub skipped: u64,
    /// Rows that failed; they are in the reject file.
    pub failed: u64,
    /// The reject file, when a row failed.
    pub reject_file: Option<String>,
}

/// Column positions in the file.
struct Columns {
    email: usize,
    product: usize,
    slots: usize,
    expiry: usize,
    entitlements: Option<usize>,
    order_id: Option<usize>,
}

impl Columns {
    fn find(headers: &csv::StringRecord) -> Result<Self, CliError> {
        let position = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
        let missing: Vec<&str> = IMPORT_COLUMNS[..4].iter().copied().filter(|c| position(c).is_none()).collect();
        let required = |name: &str| position(name).unwrap_or_default();
        if !missing.is_empty() {
            return Err(CliError::Usage(format!(
                "the CSV header lacks the column(s) {}; expected email,product,slots,expiry[,entitlements][,order_id]",
                missing.join(", ")
            )));
        }
        Ok(Columns {
            email: required("email"),
            product: required("product"),
            slots: required("slots"),
            expiry: required("expiry"),
            entitlements: position("entitlements"),
            order_id: position("order_id"),
        })
    }
}

/// One row, read and checked.
struct Row {
    new: NewLicense,
    order_id: Option<String>,
}

fn parse_row(record: &csv::StringRecord, columns: &Columns) -> Result<Row, String> {
    let field = |i: usize| record.get(i).unwrap_or_default().trim();
    let slots: u32 =
        field(columns.slots).parse().map_err(|_| format!("slots: `{}` is not a whole number", field(columns.slots)))?;
    let expiry_text = field(columns.expiry);
    let expiry = if expiry_text.is_empty() {
        Expiry::Never
    } else if let Ok(t) = OffsetDateTime::parse(expiry_text, &Rfc3339) {
        Expiry::At(t)
    } else {
        Expiry::After(parse_duration_secs(expiry_text).map_err(|_| {
            format!(
                "expiry: `{expiry_text}` is neither empty (perpetual), an RFC 3339 time nor a duration such as 365d"
            )
        })?)
    };
    let entitlements = columns
        .entitlements
        .map(|i| field(i).split(';').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let order_id = columns.order_id.map(|i| field(i).to_string()).filter(|o| !o.is_empty());
    let mut metadata = serde_json::Map::new();
    if let Some(order) = &order_id {
        metadata.insert("order_id".into(), order.clone().into());
    }
    let new = NewLicense {
        email: field(columns.email).to_string(),
        product: field(columns.product).to_string(),
        max_machines: slots,
        expiry,
        entitlements,
        metadata,
    };
    Ok(Row { new, order_id })
}

fn default_reject_file(file: &Path) -> PathBuf {
    let mut name = file.file_stem().map(|s| s.to_os_string()).unwrap_or_default();
    name.push(".rejects.csv");
    file.with_file_name(name)
}

fn progress_bar(rows: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} rows, {per_sec}, ETA {eta} {msg}") {
        bar.set_style(style);
    }
    bar
}

pub(crate) async fn run(
    licensing: &Licensing,
    file: &Path,
    reject_file: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CliResult {
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(format!("cannot read {}: {e}", file.display()));
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(file).map_err(|e| usage(&e))?;
    let headers = reader.headers().map_err(|e| usage(&e))?.clone();
    let columns = Columns::find(&headers)?;
    let records: Vec<(u64, csv::StringRecord)> = reader
        .records()
        .map(|r| r.map(|rec| (rec.position().map_or(0, |p| p.line()), rec)))
        .collect::<Result<_, _>>()
        .map_err(|e| usage(&e))?;

    let reject_path = reject_file.map_or_else(|| default_reject_file(file), Path::to_path_buf);
    let mut rejects: Vec<(csv::StringRecord, String)> = Vec::new();
    let mut summary = ImportSummary::default();
    let bar = progress_bar(records.len() as u64);
    let mut rows_without_order = 0u64;
    let mut aborted = None;
    for (line, record) in &records {
        let outcome = match parse_row(record, &columns) {
            Err(message) => Err(message),
            Ok(row) => {
                if row.order_id.is_none() {
                    rows_without_order += 1;
                }
                let ctx = licensing.context(None);
                match licensing.create_license(row.new, row.order_id.as_deref(), &ctx).await {
                    Ok((_, created)) => Ok(created),
                    Err(ServiceError::IdempotencyConflict) => {
                        Err("order_id: already imported with different values (a license exists for this order)"
                            .to_string())
                    }
                    Err(ServiceError::Store(e)) => {
                        aborted = Some(format!(
                            "the store failed at line {line}: {}; the rows before it are done: re-run the same file \
                             to continue (rows with an order_id are skipped)",
                            super::error_chain(&e)
                        ));
                        break;
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match outcome {
            Ok(true) => summary.created += 1,
            Ok(false) => summary.skipped += 1,
            Err(message) => {
                summary.failed += 1;
                rejects.push((record.clone(), format!("line {line}: {message}")));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    if !rejects.is_empty() {
        write_rejects(&reject_path, &headers, &rejects)?;
        summary.reject_file = Some(reject_path.display().to_string());
    }
    if json {
        write_json(out, &summary)?;
    } else {
        writeln!(out, "created {}, skipped {}, failed {}", summary.created, summary.skipped, summary.failed)?;
        if let Some(path) = &summary.reject_file {
            writeln!(out, "Failed rows, each with its error, are in {path}; fix them and import that file.")?;
        }
    }
    if rows_without_order > 0 {
        writeln!(
            err,
            "note: {rows_without_order} row(s) had no order_id; importing this file again would create their \
             licenses again"
        )?;
    }
    if let Some(message) = aborted {
        return Err(CliError::Failed(message));
    }
    if summary.failed > 0 {
        return Err(CliError::Failed(format!("{} row(s) failed", summary.failed)));
    }
    Ok(())
}

fn write_rejects(path: &Path, headers: &csv::StringRecord, rejects: &[(csv::StringRecord, String)]) -> CliResult {
    let fail =
        |e: &dyn std::fmt::Display| CliError::Failed(format!("cannot write the reject file {}: {e}", path.display()));
    let mut writer = csv::WriterBuilder::new().flexible(true).from_path(path).map_err(|e| fail(&e))?;
    let mut header: Vec<&str> = headers.iter().collect();
    header.push("error");
    writer.write_record(&header).map_err(|e| fail(&e))?;
    for (record, error) in rejects {
        let mut fields: Vec<&str> = record.iter().collect();
        // Pad short rows so the error always lands in the `error` column.
        while fields.len() < headers.len() {
            fields.push("");
        }
        fields.push(error);
        writer.write_record(&fields).map_err(|e| fail(&e))?;
    }
    writer.flush().map_err(|e| fail(&e))?;
    Ok(())
}
