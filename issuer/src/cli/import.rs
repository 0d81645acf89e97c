//! `issuer license import FILE.csv`: licenses from a CSV of purchases, with a progress bar, a summary and a reject file.

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{count, write_json, CliError, CliResult};
use crate::config::parse_duration_secs;
use crate::service::{Expiry, Licensing, NewLicense, ServiceError};

/// The columns `license import` reads: the first four are required, `entitlements` (separated by `;`), `order_id`
/// (the idempotency key, so a re-import skips rows already created) and `policy` are optional. With a `policy` column
/// only `email` is required: the empty cells (or missing columns) of a row with a policy are the policy's grants.
/// Other columns are ignored, and so is an [`ERROR_COLUMN`] (a reject file's).
pub const IMPORT_COLUMNS: [&str; 7] = ["email", "product", "slots", "expiry", "entitlements", "order_id", "policy"];

/// The column a reject file adds. An input's own `error` column (importing a reject file) is dropped from the next
/// reject file, which gets the new error instead.
const ERROR_COLUMN: &str = "error";

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
    /// The header, trimmed.
    names: Vec<String>,
    email: usize,
    product: Option<usize>,
    slots: Option<usize>,
    expiry: Option<usize>,
    entitlements: Option<usize>,
    order_id: Option<usize>,
    policy: Option<usize>,
}

impl Columns {
    fn find(headers: &csv::StringRecord) -> Result<Self, CliError> {
        let position = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
        let policy = position("policy");
        // With a policy column, rows may take product, slots and expiry from their policy, so only email is needed.
        let required = if policy.is_some() { &IMPORT_COLUMNS[..1] } else { &IMPORT_COLUMNS[..4] };
        let missing: Vec<&str> = required.iter().copied().filter(|c| position(c).is_none()).collect();
        if !missing.is_empty() {
            return Err(CliError::Usage(format!(
                "the CSV header lacks the {} {}; expected email,product,slots,expiry[,entitlements][,order_id]\
                 [,policy] (with a policy column, only email is required)",
                if missing.len() == 1 { "column" } else { "columns" },
                missing.join(", ")
            )));
        }
        Ok(Columns {
            names: headers.iter().map(|h| h.trim().to_string()).collect(),
            email: position("email").unwrap_or_default(),
            product: position("product"),
            slots: position("slots"),
            expiry: position("expiry"),
            entitlements: position("entitlements"),
            order_id: position("order_id"),
            policy,
        })
    }
}

/// One row, read and checked.
struct Row {
    new: NewLicense,
    order_id: Option<String>,
}

fn parse_row(record: &csv::StringRecord, columns: &Columns) -> Result<Row, String> {
    // A short row: name the columns it lacks, rather than complain about the empty values they would have had.
    let mut read = vec![columns.email];
    read.extend(
        [columns.product, columns.slots, columns.expiry, columns.entitlements, columns.order_id, columns.policy]
            .into_iter()
            .flatten(),
    );
    read.sort_unstable();
    let missing: Vec<&str> = read.iter().filter(|&&i| i >= record.len()).map(|&i| columns.names[i].as_str()).collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing {} {} (the row has {}, the header {})",
            if missing.len() == 1 { "column" } else { "columns" },
            missing.join(", "),
            count(record.len(), "field", "fields"),
            columns.names.len()
        ));
    }
    let field = |i: Option<usize>| field_text(record, i);
    let policy = Some(field(columns.policy)).filter(|p| !p.is_empty()).map(String::from);
    let slots_text = field(columns.slots);
    let slots: Option<u32> = match slots_text {
        "" if policy.is_some() => None,
        "" if columns.policy.is_some() => {
            return Err("slots: empty; give the number of machine slots or a policy".into())
        }
        "" => return Err("slots: empty; give the number of machine slots".to_string()),
        text => Some(text.parse().map_err(|_| format!("slots: `{text}` is not a whole number"))?),
    };
    let expiry_text = field(columns.expiry);
    let expiry = if expiry_text.is_empty() {
        policy.is_none().then_some(Expiry::Never)
    } else if let Ok(t) = OffsetDateTime::parse(expiry_text, &Rfc3339) {
        Some(Expiry::At(t))
    } else {
        let shape = if policy.is_some() { "empty (the policy's duration)" } else { "empty (perpetual)" };
        Some(Expiry::After(parse_duration_secs(expiry_text).map_err(|_| {
            format!("expiry: `{expiry_text}` is neither {shape}, an RFC 3339 time nor a duration such as 365d")
        })?))
    };
    let entitlements: Vec<String> =
        field(columns.entitlements).split(';').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect();
    let order_id = Some(field(columns.order_id)).filter(|o| !o.is_empty()).map(String::from);
    let mut metadata = serde_json::Map::new();
    if let Some(order) = &order_id {
        metadata.insert("order_id".into(), order.clone().into());
    }
    // With a policy an empty cell is the policy's grant. Without one the request is the one of old exactly, so the
    // order_id of a row imported before matches it again.
    let grant = policy.is_some();
    let new = NewLicense {
        email: field(Some(columns.email)).to_string(),
        product: Some(field(columns.product).to_string()).filter(|p| !(grant && p.is_empty())),
        max_machines: slots,
        expiry,
        entitlements: Some(entitlements).filter(|e| !(grant && e.is_empty())),
        metadata,
        policy,
        kind: None,
    };
    Ok(Row { new, order_id })
}

/// The trimmed text of a row's cell; a column the file lacks reads as an empty cell.
fn field_text(record: &csv::StringRecord, column: Option<usize>) -> &str {
    column.and_then(|i| record.get(i)).unwrap_or_default().trim()
}

/// Where the failed rows of `file` go by default, beside it: `x.csv` -> `x.rejects.csv`, and a reject file's own
/// failures get the next number, `x.rejects.csv` -> `x.rejects-2.csv` -> `x.rejects-3.csv`, so importing a reject file
/// never overwrites it.
fn default_reject_file(file: &Path) -> PathBuf {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match stem.rsplit_once(".rejects") {
        Some((base, "")) => format!("{base}.rejects-2.csv"),
        Some((base, n)) => match n.strip_prefix('-').and_then(|n| n.parse::<u64>().ok()) {
            Some(n) => format!("{base}.rejects-{}.csv", n.saturating_add(1)),
            None => format!("{stem}.rejects.csv"),
        },
        None => format!("{stem}.rejects.csv"),
    };
    file.with_file_name(name)
}

/// Whether two paths name the same file (both exist and resolve to one path, or are spelled the same).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
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
    if same_file(&reject_path, file) {
        return Err(CliError::Usage(format!(
            "--reject-file {} is the input file; name another file for the failed rows",
            reject_path.display()
        )));
    }
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
                let ctx = licensing.cli_context();
                match licensing.create_license(row.new, row.order_id.as_deref(), &ctx).await {
                    Ok((_, created)) => Ok(created),
                    Err(ServiceError::PolicyNotFound) => Err(format!(
                        "policy: no policy named `{}` exists (see `issuer policy list`)",
                        field_text(record, columns.policy)
                    )),
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
    let printed = if json {
        write_json(out, &summary)
    } else {
        let mut text = format!("created {}, skipped {}, failed {}\n", summary.created, summary.skipped, summary.failed);
        if let Some(path) = &summary.reject_file {
            text.push_str(&format!(
                "Failed rows, each with its error, are in {path}; fix them and import that file.\n"
            ));
        }
        out.write_all(text.as_bytes()).map_err(CliError::from)
    };
    // A reader that went away does not hide failed rows: the exit code still says so below.
    match printed {
        Ok(()) | Err(CliError::OutputClosed) => {}
        Err(e) => return Err(e),
    }
    if rows_without_order > 0 {
        writeln!(
            err,
            "note: {} no order_id; importing this file again would create {} again",
            count(rows_without_order, "row had", "rows had"),
            if rows_without_order == 1 { "its license" } else { "their licenses" }
        )?;
    }
    if let Some(message) = aborted {
        return Err(CliError::Failed(message));
    }
    if summary.failed > 0 {
        return Err(CliError::Failed(format!("{} failed", count(summary.failed, "row", "rows"))));
    }
    Ok(())
}

fn write_rejects(path: &Path, headers: &csv::StringRecord, rejects: &[(csv::StringRecord, String)]) -> CliResult {
    let fail =
        |e: &dyn std::fmt::Display| CliError::Failed(format!("cannot write the reject file {}: {e}", path.display()));
    let mut writer = csv::WriterBuilder::new().flexible(true).from_path(path).map_err(|e| fail(&e))?;
    // The input's columns but its own `error` (a reject file imported again), then the new `error`.
    let kept: Vec<usize> = (0..headers.len())
        .filter(|&i| !headers.get(i).unwrap_or_default().trim().eq_ignore_ascii_case(ERROR_COLUMN))
        .collect();
    let mut header: Vec<&str> = kept.iter().map(|&i| headers.get(i).unwrap_or_default()).collect();
    header.push(ERROR_COLUMN);
    writer.write_record(&header).map_err(|e| fail(&e))?;
    for (record, error) in rejects {
        // Short rows are padded so the error always lands in the `error` column; fields beyond the header follow it.
        let mut fields: Vec<&str> = kept.iter().map(|&i| record.get(i).unwrap_or_default()).collect();
        fields.push(error);
        fields.extend(record.iter().skip(headers.len()));
        writer.write_record(&fields).map_err(|e| fail(&e))?;
    }
    writer.flush().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::default_reject_file;

    #[test]
    fn reject_files_are_named_beside_the_input_and_count_on_for_reject_files() {
        let cases = [
            ("purchases.csv", "purchases.rejects.csv"),
            ("in/data.txt", "in/data.rejects.csv"),
            ("purchases.rejects.csv", "purchases.rejects-2.csv"),
            ("purchases.rejects-2.csv", "purchases.rejects-3.csv"),
            ("in/a.b.rejects-9.csv", "in/a.b.rejects-10.csv"),
            ("my.rejectsx.csv", "my.rejectsx.rejects.csv"),
        ];
        for (input, rejects) in cases {
            assert_eq!(default_reject_file(Path::new(input)), PathBuf::from(rejects), "{input}");
        }
    }
}
