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
mod formats;
pub mod http;
mod sorted;
mod source;
pub(crate) mod value;

use std::{collections::BTreeSet, sync::Arc};

use arrow::array::{Array, AsArray, RecordBatch};
use bytes::Bytes;
use chrono::NaiveDate;
use tenantscope_schemas::{Lake, Table, columns, lake::WrittenFiles};

use crate::imports::{self, sql_str};

pub use crate::error::{ImportError, MAX_LISTED_ROW_ERRORS, RowError};
pub use convert::Attribution;
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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let attribution = Arc::new(Attribution {
        tag_keys: options.tenant_tag_keys.clone(),
        accounts: tenant_accounts(lake).await?,
    });
    let (checksum, loaded) = {
        let (files, forced, attribution) = (files.to_vec(), options.format, attribution.clone());
        tokio::task::spawn_blocking(move || open_files(&files, forced, &attribution, threads))
            .await
            .map_err(|e| ImportError::Query(format!("internal: import task failed: {e}")))??
    };
    let import_id = imports::import_id("billing", &checksum);
    let formats: Vec<Format> = loaded.iter().map(|f| f.format).collect();
    let source = options.source.clone().unwrap_or_else(|| formats[0].name().to_string());
    if source.trim().is_empty() {
        return Err(ImportError::file(&files[0].name, "the source name is empty"));
    }

    if imports::still_current(lake, Table::Billing, "billing", &import_id, &checksum).await? {
        return Ok(ImportOutcome {
            import_id,
            written: false,
            formats,
            source,
            rows: 0,
            rejected: Vec::new(),
            rounded: 0,
            attributed: 0,
            periods: Vec::new(),
            checksum,
        });
    }

    // One CSV file, put in the lake's order by pass 1, whose slice of the table is empty (a new
    // source or billing period, the usual import): its rows are written as they are converted,
    // not held until the end. Otherwise (several files, Parquet or JSON, a restatement) the
    // converted batches go to `Lake::replace` together.
    let slice = match single_sorted_file(&loaded) {
        Some(records) => {
            let covering = covering_predicate(&source, &sorted::periods(records));
            lake.start_slice_write(Table::Billing, &covering).await?.map(Arc::new)
        }
        None => None,
    };

    // Parsing is CPU work: off the async runtime, one chunk of each file per core.
    let (converted, written) = {
        let (source, import_id) = (source.clone(), import_id.clone());
        let (slice, skip_invalid) = (slice.clone(), options.skip_invalid);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let sink = slice.as_deref().map(|write| sorted::Sink { write, runtime, skip_invalid });
            convert_all(&loaded, &source, &import_id, &attribution, threads, sink.as_ref())
        })
        .await
        .map_err(|e| ImportError::Query(format!("internal: import task failed: {e}")))??
    };
    let discard = async |written| {
        if let Some(slice) = &slice
            && let Err(e) = slice.discard(written).await
        {
            tracing::warn!(error = %e, "Could not delete the files of an import that wrote nothing.");
        }
    };
    let mut batches: Vec<RecordBatch> = Vec::new();
    let (mut rows, mut rounded, mut attributed) = (0, 0, 0);
    let mut rejected = Vec::new();
    let mut periods = BTreeSet::new();
    let mut accounts = BTreeSet::new();
    for (name, c) in converted {
        if !c.errors.is_empty() && !options.skip_invalid {
            discard(written).await;
            let total = c.errors.len();
            let mut errors = c.errors;
            errors.truncate(MAX_LISTED_ROW_ERRORS);
            return Err(ImportError::InvalidRows { file: name, total, errors });
        }
        rejected.extend(c.errors);
        batches.extend(c.batches);
        rows += c.rows;
        rounded += c.rounded;
        attributed += c.attributed;
        periods.extend(c.periods);
        accounts.extend(c.accounts);
    }

    if rows == 0 {
        discard(written).await;
    } else {
        let predicate = slice_predicate(&source, &periods, &accounts);
        match &slice {
            // Every row's source, period and billing account is in the predicate, which is
            // made of them: the check `Lake::replace` makes is true by construction.
            Some(slice) => lake.commit_slice(slice, written, &predicate).await?,
            None => lake.replace(Table::Billing, &batches, &predicate).await?,
        };
    }
    let periods: Vec<NaiveDate> = periods.into_iter().collect();
    let record = imports::Record {
        import_id: &import_id,
        kind: "billing",
        checksum: &checksum,
        source: Some(&source),
        format: &formats
            .iter()
            .map(|f| f.name())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(","),
        files: &files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(","),
        rows,
        periods: &periods.iter().map(|p| p.format("%Y-%m").to_string()).collect::<Vec<_>>(),
    };
    imports::record(lake, &record).await?;
    tracing::info!(%import_id, %source, rows, rejected = rejected.len(), rounded, "Imported billing.");
    Ok(ImportOutcome {
        import_id,
        written: true,
        formats,
        source,
        rows,
        rejected,
        rounded,
        attributed,
        periods,
        checksum,
    })
}

/// The records of the import's one file, a CSV file put in the lake's order by pass 1 (`None`
/// for several files or another kind).
fn single_sorted_file(files: &[Opened]) -> Option<&[sorted::Located]> {
    match files {
        [only] => only.order.as_deref(),
        _ => None,
    }
}

/// The slices of `billing` with this source and these billing periods: the slice an import
/// replaces ([`slice_predicate`]) is within them.
fn covering_predicate(source: &str, periods: &BTreeSet<NaiveDate>) -> String {
    let periods: Vec<String> = periods.iter().map(|p| format!("DATE '{p}'")).collect();
    format!(
        "{} = {} AND {} IN ({})",
        columns::SOURCE,
        sql_str(source),
        columns::BILLING_PERIOD,
        periods.join(", ")
    )
}

/// The slice of `billing` an import replaces: its source, periods and billing accounts.
fn slice_predicate(
    source: &str,
    periods: &BTreeSet<NaiveDate>,
    accounts: &BTreeSet<Option<String>>,
) -> String {
    let named: Vec<String> = accounts.iter().flatten().map(|a| sql_str(a)).collect();
    let mut account_terms = Vec::new();
    if !named.is_empty() {
        account_terms.push(format!("billing_account_id IN ({})", named.join(", ")));
    }
    if accounts.contains(&None) {
        account_terms.push("billing_account_id IS NULL".to_string());
    }
    format!("{} AND ({})", covering_predicate(source, periods), account_terms.join(" OR "))
}

/// Each file's name and what converting it produced, and the data files written meanwhile.
type ConvertedFiles = (Vec<(String, convert::Converted)>, Vec<WrittenFiles>);

/// Converts every file on every core: a CSV file in the lake's row order (see [`sorted`]),
/// others in chunks in file order. With a `sink` (one CSV file), the rows are written as they
/// are converted and the files written are returned.
fn convert_all(
    files: &[Opened],
    source: &str,
    import_id: &str,
    attribution: &Attribution,
    threads: usize,
    sink: Option<&sorted::Sink<'_>>,
) -> Result<ConvertedFiles, ImportError> {
    let mut out = Vec::with_capacity(files.len());
    if let (Some(sink), Some(records)) = (sink, single_sorted_file(files)) {
        let Opened { file, plan, .. } = &files[0];
        let pass = sorted::Pass2 { file, plan, source, import_id, attribution };
        let (converted, written) = sorted::convert_and_write(pass, records, threads, sink)?;
        out.push((file.name.clone(), converted));
        return Ok((out, written));
    }
    for Opened { file, plan, parts, order, .. } in files {
        if let Some(order) = order {
            let converted = sorted::convert_in_order(
                sorted::Pass2 { file, plan, source, import_id, attribution },
                order,
                threads,
            )?;
            out.push((file.name.clone(), converted));
            continue;
        }
        let results: Vec<Result<convert::Converted, ImportError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .iter()
                .map(|chunk| {
                    scope.spawn(move || convert::convert(file, *chunk, plan, source, import_id, attribution))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ImportError::Query("internal: a conversion thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut whole = convert::Converted::default();
        for r in results {
            whole.extend(r?);
        }
        out.push((file.name.clone(), whole));
    }
    Ok((out, Vec::new()))
}

/// A file ready to convert.
struct Opened {
    file: source::Loaded,
    format: Format,
    plan: formats::Plan,
    /// Parts to convert on their own threads.
    parts: Vec<source::Chunk>,
    /// A CSV file's records in the lake's order (pass 1 of [`sorted`]).
    order: Option<Vec<sorted::Located>>,
}

/// The files' checksum, and each file decompressed, its format detected and cut into parts, and
/// a CSV file's records put in the lake's order. The checksum (one SHA-256 stream over every
/// byte, which the import's id and so every row depend on) is computed on its own thread
/// meanwhile: on one core it took as long as reading the records' keys on all of them.
fn open_files(
    files: &[ExportFile],
    forced: Option<Format>,
    attribution: &Attribution,
    threads: usize,
) -> Result<(String, Vec<Opened>), ImportError> {
    std::thread::scope(|scope| {
        let checksum = scope.spawn(|| imports::checksum(files.iter().map(|f| &f.bytes[..])));
        let mut opened = Vec::with_capacity(files.len());
        for f in files {
            let file = source::load(&f.name, f.bytes.clone())?;
            let headers = source::headers(&file)?;
            let format = match forced {
                Some(forced) => forced,
                None => Format::detect(&headers).ok_or_else(|| {
                    ImportError::file(&f.name, "unknown billing export format: the header matches none of FOCUS 1.0-1.2, AWS CUR 2.0, legacy AWS CUR, Azure cost details or the Google Cloud billing export (use --format to force one)")
                })?,
            };
            let parts = source::chunks(&file, threads);
            let plan = formats::Plan::new(format, headers);
            let order = match file.kind {
                source::FileKind::Csv => Some(sorted::lake_order(&file, &parts, &plan, attribution)?),
                _ => None,
            };
            opened.push(Opened { file, format, plan, parts, order });
        }
        let checksum = checksum
            .join()
            .map_err(|_| ImportError::Query("internal: the checksum thread panicked".into()))?;
        Ok((checksum, opened))
    })
}

/// Sub account id -> tenant id, from the `tenants` table (also the OTLP mapping rules' table).
pub(crate) async fn tenant_accounts(
    lake: &Lake,
) -> Result<std::collections::HashMap<String, String>, ImportError> {
    let mut out = std::collections::HashMap::new();
    if !lake.exists(Table::Tenants).await? {
        return Ok(out);
    }
    let batches = lake.query(&[Table::Tenants], "SELECT tenant_id, account FROM (SELECT tenant_id, unnest(accounts) AS account FROM tenants) WHERE account IS NOT NULL").await?;
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
