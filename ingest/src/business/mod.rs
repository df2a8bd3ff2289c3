//! Business data: tenants, the price book (plans) and invoice lines, with the same rules as
//! billing imports: every bad value reported with its location and nothing written, one Delta
//! commit per import that replaces what the file redefines (the same tenants, the same plan
//! versions, the same invoices), and the same file twice is a no-op.

mod invoices;
mod plans;
mod tenants;

use std::{fmt, str::FromStr};

use arrow::array::RecordBatch;
use tenantscope_schemas::{Lake, Table};

use crate::{
    billing::ExportFile,
    error::{ImportError, MAX_LISTED_ROW_ERRORS, RowError},
    imports,
};

/// What kind of business data a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Tenants (CSV or YAML): id, name, plan, cloud accounts, labels.
    Tenants,
    /// The price book (YAML): plans with base fees and priced meters.
    Plans,
    /// Invoice lines (CSV, the shape of a Stripe invoice-line export).
    Invoices,
}

impl Kind {
    /// The kind's name on the command line and in the `imports` table.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tenants => "tenants",
            Kind::Plans => "plans",
            Kind::Invoices => "invoices",
        }
    }

    fn table(self) -> Table {
        match self {
            Kind::Tenants => Table::Tenants,
            Kind::Plans => Table::Plans,
            Kind::Invoices => Table::Invoices,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tenants" => Ok(Kind::Tenants),
            "plans" => Ok(Kind::Plans),
            "invoices" => Ok(Kind::Invoices),
            _ => Err(format!("unknown kind {s:?}; the kinds are: tenants, plans, invoices")),
        }
    }
}

/// What an import of business data did.
#[derive(Debug, Clone)]
pub struct BusinessOutcome {
    /// The import's id.
    pub import_id: String,
    /// `false` when this exact file was imported before and is still current.
    pub written: bool,
    /// Rows written.
    pub rows: usize,
    /// What the rows define (tenant ids, plan names, invoice ids), for messages.
    pub keys: Vec<String>,
    /// Invoice lines whose customer maps to no tenant.
    pub unattributed: usize,
}

/// What a parser produced: the rows, the predicate selecting the rows they replace, the keys
/// they define, and every bad value.
pub(crate) struct Parsed {
    pub(crate) batch: Option<RecordBatch>,
    pub(crate) predicate: String,
    pub(crate) keys: Vec<String>,
    pub(crate) errors: Vec<RowError>,
    pub(crate) unattributed: usize,
}

/// Imports one file of business data.
pub async fn import_business(
    lake: &Lake,
    kind: Kind,
    file: &ExportFile,
) -> Result<BusinessOutcome, ImportError> {
    let checksum = imports::checksum(std::iter::once(&file.bytes[..]));
    let import_id = imports::import_id(kind.name(), &checksum);
    let table = kind.table();
    if imports::still_current(lake, table, kind.name(), &import_id, &checksum).await? {
        return Ok(BusinessOutcome { import_id, written: false, rows: 0, keys: Vec::new(), unattributed: 0 });
    }
    let text = std::str::from_utf8(&file.bytes)
        .map_err(|e| ImportError::file(&file.name, format!("not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed = match kind {
        Kind::Tenants => tenants::parse(&file.name, text, &import_id)?,
        Kind::Plans => plans::parse(&file.name, text, &import_id)?,
        Kind::Invoices => invoices::parse(lake, &file.name, text, &import_id).await?,
    };
    if !parsed.errors.is_empty() {
        let total = parsed.errors.len();
        let mut errors = parsed.errors;
        errors.truncate(MAX_LISTED_ROW_ERRORS);
        return Err(ImportError::InvalidRows { file: file.name.clone(), total, errors });
    }
    let Some(batch) = parsed.batch else {
        return Err(ImportError::file(&file.name, format!("no {kind} in the file")));
    };
    let rows = batch.num_rows();
    lake.replace(table, &[batch], &parsed.predicate).await?;
    imports::record(
        lake,
        &imports::Record {
            import_id: &import_id,
            kind: kind.name(),
            checksum: &checksum,
            source: None,
            format: if file.name.ends_with(".csv") { "csv" } else { "yaml" },
            files: &file.name,
            rows,
            periods: &[],
        },
    )
    .await?;
    tracing::info!(%kind, %import_id, rows, "Imported business data.");
    Ok(BusinessOutcome {
        import_id,
        written: true,
        rows,
        keys: parsed.keys,
        unattributed: parsed.unattributed,
    })
}

/// `a IN ('x', 'y')`.
pub(crate) fn in_list(column: &str, values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| imports::sql_str(v)).collect();
    format!("{column} IN ({})", quoted.join(", "))
}

/// A YAML error with its location.
pub(crate) fn yaml_error(file: &str, e: &serde_yaml_ng::Error) -> ImportError {
    match e.location() {
        Some(l) => ImportError::file(file, format!("line {}, column {}: {e}", l.line(), l.column())),
        None => ImportError::file(file, e.to_string()),
    }
}

/// Header lookup for CSV files: names compare without case, spaces, `_` or `.`.
pub(crate) fn find_column(headers: &csv::StringRecord, names: &[&str]) -> Option<usize> {
    let norm = |s: &str| {
        s.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect::<String>()
    };
    names.iter().find_map(|n| headers.iter().position(|h| norm(h) == norm(n)))
}

/// `k=v;k=v`, `k:v,k:v` or a JSON object.
pub(crate) fn parse_labels(raw: &str) -> Result<Vec<(String, String)>, String> {
    crate::billing::value::parse_tags(raw)
}
