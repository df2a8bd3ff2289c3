//! Import errors and the report of bad rows.

use std::fmt;

/// At most this many bad rows are listed in an error message (all are counted, and all go to
/// the reject file with `--skip-invalid`).
pub const MAX_LISTED_ROW_ERRORS: usize = 20;

/// One bad value: where it is, what it is, and why it cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// The file.
    pub file: String,
    /// 1-based line (CSV, the header is line 1) or row (Parquet).
    pub line: u64,
    /// The source column.
    pub column: String,
    /// The value as found (cut at 200 characters).
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: column {}: {:?}: {}", self.file, self.line, self.column, self.value, self.reason)
    }
}

/// Why an import failed. Nothing was written when an import fails.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read at all.
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Some rows are invalid; the file was rejected whole.
    #[error("{}", invalid_rows_message(.file, *.total, .errors))]
    InvalidRows {
        /// The file.
        file: String,
        /// How many values were rejected.
        total: usize,
        /// The first of them (at most [`MAX_LISTED_ROW_ERRORS`]).
        errors: Vec<RowError>,
    },
    /// Writing to the lake failed.
    #[error(transparent)]
    Lake(#[from] tenantscope_schemas::LakeError),
    /// Reading the lake (tenants, earlier imports) failed.
    #[error("{0}")]
    Query(String),
}

impl ImportError {
    pub(crate) fn file(file: &str, reason: impl Into<String>) -> Self {
        ImportError::File { file: file.to_string(), reason: reason.into() }
    }

    /// Whether the error is the input's fault (HTTP 400/422) rather than ours.
    pub fn is_input_error(&self) -> bool {
        matches!(self, ImportError::File { .. } | ImportError::InvalidRows { .. })
    }
}

fn invalid_rows_message(file: &str, total: usize, errors: &[RowError]) -> String {
    let mut msg = format!(
        "{file}: {total} invalid value(s); nothing was imported (use --skip-invalid to import the valid rows)"
    );
    for e in errors {
        msg.push_str("\n  ");
        msg.push_str(&e.to_string());
    }
    if total > errors.len() {
        msg.push_str(&format!("\n  ... and {} more", total - errors.len()));
    }
    msg
}
