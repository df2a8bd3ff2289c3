//! Errors of the query service, and whose fault they are.

use datafusion::error::DataFusionError;

/// Result with [`QueryError`].
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// What went wrong answering a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is wrong: syntax, an unknown table or column, a type error. The user's to fix.
    #[error("{0}")]
    InvalidSql(String),
    /// The request is malformed (a parameter that is not a SQL value).
    #[error("{0}")]
    BadRequest(String),
    /// The principal may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Executing the query failed.
    #[error(transparent)]
    DataFusion(DataFusionError),
    /// Opening the lake failed.
    #[error(transparent)]
    Lake(#[from] tenantscope_schemas::LakeError),
    /// Writing the result failed.
    #[error("cannot write the result: {0}")]
    Output(String),
}

impl QueryError {
    /// Classifies a planning error: SQL, schema and plan errors are the user's.
    pub(crate) fn from_planning(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::InvalidSql(e.strip_backtrace()),
            _ => QueryError::DataFusion(e),
        }
    }

    /// Whether the error is the user's (HTTP 400) rather than ours (HTTP 500).
    pub fn is_user_error(&self) -> bool {
        matches!(self, QueryError::InvalidSql(_) | QueryError::BadRequest(_))
    }
}
