//! Billing import: export files -> the `billing` table, all or nothing, idempotent.
//!
//! - The format is detected from each file's header (or forced).
//! - Every value is parsed exactly (money as `Decimal128(38, 10)`); a file with invalid values
//!   is rejected whole with a report of every bad value, unless `skip_invalid` is set.
//! - The files of one call are one import: one Delta commit that replaces the slice of the
//!   `billing` table with the same source, billing periods and billing accounts. Importing a
//!   restated export therefore replaces the old version in one transaction (a query sees the
//!   old version or the new one, never both or neither), and importing the same files again
//!   changes nothing.

mod convert;
mod error;
mod formats;
pub mod http;
mod source;
mod value;

use std::{collections::BTreeSet, fmt::Write as _};

use arrow::array::{Array, AsArray, Int64Array, ListBuilder, RecordBatch, StringBuilder};
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use sha2::{Digest, Sha256};
use tenantscope_schemas::{Lake, Table, columns};

pub use convert::Attribution;
pub use error::{ImportError, MAX_LISTED_ROW_ERRORS, RowError};
pub use formats::Format;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct BillingImportOptions {
    /// Force a format instead of detecting it.
    pub format: Option<Format>,
    /// Name of the source (default: the format's name). Restatements replace within a source.
    pub source: Option<String>,
    /// Import the valid rows of a file with invalid ones (the invalid ones are returned).
    pub skip_invalid: bool,
    /// Tag keys naming a line's tenant (e.g. `tenant`).
    pub tenant_tag_keys: Vec<String>,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    /// The import's id (derived from the files' checksum).
    pub import_id: String,
    /// `false` when these exact files were imported before and are still current: nothing written.
    pub written: bool,
    /// Detected or forced format of each file.
    pub formats: Vec<Format>,
    /// The source the lines were imported under.
    pub source: String,
    /// Lines written.
    pub rows: usize,
    /// Invalid values skipped (with `skip_invalid`), all of them.
    pub rejected: Vec<RowError>,
    /// Values with more than 10 decimals, rounded half-even to 10.
    pub rounded: usize,
    /// Lines attributed to a tenant (the rest is shared cost).
    pub attributed: usize,
    /// The billing periods (first days) the import covers.
    pub periods: Vec<NaiveDate>,
    /// SHA-256 of the files' bytes.
    pub checksum: String,
}

/// One export file: its name (for messages) and bytes (plain or gzip; CSV or Parquet).
#[derive(Debug, Clone)]
pub struct ExportFile {
    /// Name shown in errors, e.g. the path.
    pub name: String,
    /// Content.
    pub bytes: Bytes,
}

/// Imports export files into the lake's `billing` table as one import.
pub async fn import_billing(
    lake: &Lake,
    files: &[ExportFile],
    options: &BillingImportOptions,
) -> Result<ImportOutcome, ImportError> {
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(&f.bytes);
    }
    let checksum: String = hasher.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let import_id = format!("billing-{}", &checksum[..20]);

    let mut loaded = Vec::with_capacity(files.len());
    let mut formats = Vec::with_capacity(files.len());
    for f in files {
        let file = source::load(&f.name, f.bytes.clone())?;
        let headers = source::headers(&file)?;
        let format = match options.format {
            Some(forced) => forced,
            None => Format::detect(&headers).ok_or_else(|| {
                ImportError::file(&f.name, "unknown billing export format: the header matches none of FOCUS 1.0-1.2, AWS CUR 2.0, legacy AWS CUR, Azure cost details or the Google Cloud billing export (use --format to force one)")
            })?,
        };
        formats.push(format);
        loaded.push((file, formats::Plan::new(format, headers)));
    }
    let source = options.source.clone().unwrap_or_else(|| formats[0].name().to_string());
    if source.trim().is_empty() {
        return Err(ImportError::file(&files[0].name, "the source name is empty"));
    }

    if still_current(lake, &import_id, &checksum).await? {
        return Ok(ImportOutcome {
            import_id, written: false, formats, source, rows: 0, rejected: Vec::new(), rounded: 0,
            attributed: 0, periods: Vec::new(), checksum,
        });
    }

    let attribution = Attribution { tag_keys: options.tenant_tag_keys.clone(), accounts: tenant_accounts(lake).await? };
    let mut batches: Vec<RecordBatch> = Vec::new();
    let (mut rows, mut rounded, mut attributed) = (0, 0, 0);
    let mut rejected = Vec::new();
    let mut periods = BTreeSet::new();
    let mut accounts = BTreeSet::new();
    for (file, plan) in &loaded {
        let converted = convert::convert(file, plan, &source, &import_id, &attribution)?;
        if !converted.errors.is_empty() && !options.skip_invalid {
            let total = converted.errors.len();
            let mut errors = converted.errors;
            errors.truncate(MAX_LISTED_ROW_ERRORS);
            return Err(ImportError::InvalidRows { file: file.name.clone(), total, errors });
        }
        rejected.extend(converted.errors);
        batches.extend(converted.batches);
        rows += converted.rows;
        rounded += converted.rounded;
        attributed += converted.attributed;
        periods.extend(converted.periods);
        accounts.extend(converted.accounts);
    }

    if rows > 0 {
        let predicate = slice_predicate(&source, &periods, &accounts);
        lake.replace(Table::Billing, &batches, &predicate).await?;
    }
    let periods: Vec<NaiveDate> = periods.into_iter().collect();
    lake.append(Table::Imports, &[import_row(&import_id, &checksum, &source, &formats, files, rows, &periods)?])
        .await?;
    tracing::info!(%import_id, %source, rows, rejected = rejected.len(), rounded, "Imported billing.");
    Ok(ImportOutcome { import_id, written: true, formats, source, rows, rejected, rounded, attributed, periods, checksum })
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The slice of `billing` an import replaces: its source, periods and billing accounts.
fn slice_predicate(source: &str, periods: &BTreeSet<NaiveDate>, accounts: &BTreeSet<Option<String>>) -> String {
    let periods: Vec<String> = periods.iter().map(|p| format!("DATE '{p}'")).collect();
    let named: Vec<String> = accounts.iter().flatten().map(|a| sql_str(a)).collect();
    let mut account_terms = Vec::new();
    if !named.is_empty() {
        account_terms.push(format!("billing_account_id IN ({})", named.join(", ")));
    }
    if accounts.contains(&None) {
        account_terms.push("billing_account_id IS NULL".to_string());
    }
    format!(
        "{} = {} AND {} IN ({}) AND ({})",
        columns::SOURCE,
        sql_str(source),
        columns::BILLING_PERIOD,
        periods.join(", "),
        account_terms.join(" OR ")
    )
}

/// Were these exact files imported, and are their lines still in `billing` (not replaced by a
/// later restatement)?
async fn still_current(lake: &Lake, import_id: &str, checksum: &str) -> Result<bool, ImportError> {
    if !lake.exists(Table::Imports).await? || !lake.exists(Table::Billing).await? {
        return Ok(false);
    }
    let sql = format!(
        "SELECT (SELECT max(row_count) FROM imports WHERE kind = 'billing' AND checksum = {}), \
                (SELECT count(*) FROM billing WHERE import_id = {})",
        sql_str(checksum),
        sql_str(import_id)
    );
    let batches = lake.query(&sql).await?;
    let Some(b) = batches.first().filter(|b| b.num_rows() == 1) else { return Ok(false) };
    let recorded = b.column(0).as_any().downcast_ref::<Int64Array>().filter(|a| a.is_valid(0)).map(|a| a.value(0));
    let present = b.column(1).as_any().downcast_ref::<Int64Array>().map_or(0, |a| a.value(0));
    Ok(recorded.is_some_and(|r| r == present && r > 0))
}

/// Sub account id -> tenant id, from the `tenants` table.
async fn tenant_accounts(lake: &Lake) -> Result<std::collections::HashMap<String, String>, ImportError> {
    let mut out = std::collections::HashMap::new();
    if !lake.exists(Table::Tenants).await? {
        return Ok(out);
    }
    let batches = lake.query("SELECT tenant_id, account FROM (SELECT tenant_id, unnest(accounts) AS account FROM tenants) WHERE account IS NOT NULL").await?;
    let text = |c: &arrow::array::ArrayRef| {
        arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
            .map_err(|e| ImportError::Query(format!("reading tenants.accounts: {e}")))
    };
    for b in batches {
        let (t, a) = (text(b.column(0))?, text(b.column(1))?);
        let (t, a) = (t.as_string::<i32>(), a.as_string::<i32>());
        for i in (0..b.num_rows()).filter(|i| t.is_valid(*i) && a.is_valid(*i)) {
            out.insert(a.value(i).trim().to_string(), t.value(i).to_string());
        }
    }
    Ok(out)
}

fn import_row(
    import_id: &str,
    checksum: &str,
    source: &str,
    formats: &[Format],
    files: &[ExportFile],
    rows: usize,
    periods: &[NaiveDate],
) -> Result<RecordBatch, ImportError> {
    use std::sync::Arc;
    let s = |v: &str| -> Arc<dyn Array> { Arc::new(arrow::array::StringArray::from(vec![v])) };
    let mut at = arrow::array::TimestampMicrosecondBuilder::new().with_timezone("UTC");
    at.append_value(Utc::now().timestamp_micros());
    let mut list = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(arrow::datatypes::Field::new(
        "element",
        arrow::datatypes::DataType::Utf8,
        true,
    )));
    for p in periods {
        list.values().append_value(p.format("%Y-%m").to_string());
    }
    list.append(true);
    let formats: BTreeSet<&str> = formats.iter().map(|f| f.name()).collect();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    RecordBatch::try_new(
        Table::Imports.schema(),
        vec![
            s(import_id),
            Arc::new(at.finish()),
            s("billing"),
            s(source),
            s(&formats.into_iter().collect::<Vec<_>>().join(",")),
            s(&names.join(",")),
            s(checksum),
            Arc::new(Int64Array::from(vec![i64::try_from(rows).unwrap_or(i64::MAX)])),
            Arc::new(list.finish()),
            s("complete"),
        ],
    )
    .map_err(|e| ImportError::Query(format!("internal: import record: {e}")))
}
