//! Errors of the lake handle.

use crate::tables::Table;

/// Result with [`LakeError`].
pub type Result<T, E = LakeError> = std::result::Result<T, E>;

/// What went wrong talking to the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The lake URL cannot be used.
    #[error("invalid lake URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The lake's storage could not be reached or listed.
    #[error("cannot reach the lake at {url}: {source}")]
    Unreachable {
        /// The lake URL.
        url: String,
        /// The storage error.
        #[source]
        source: object_store::Error,
    },
    /// A local lake folder could not be created.
    #[error("cannot create the lake folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A Delta Lake operation on a table failed.
    #[error("table {table}: {source}")]
    Delta {
        /// The table.
        table: Table,
        /// The Delta error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// Batches handed to the writer do not fit the table.
    #[error("table {table}: {detail}")]
    Schema {
        /// The table.
        table: Table,
        /// What does not fit.
        detail: String,
    },
    /// An Arrow compute error while preparing batches.
    #[error("table {table}: {source}")]
    Arrow {
        /// The table.
        table: Table,
        /// The Arrow error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A lookup query over the lake failed (or names a table that does not exist yet).
    #[error("lake query failed: {reason} (SQL: {sql})")]
    Query {
        /// The SQL.
        sql: String,
        /// DataFusion's message.
        reason: String,
    },
}

impl LakeError {
    pub(crate) fn delta(table: Table, source: deltalake::DeltaTableError) -> Self {
        LakeError::Delta { table, source: Box::new(source) }
    }
}
