//! Ingest: the OTLP receivers (tenant attribution, admission, write-ahead log, flushes) and the
//! billing and business-data importers. Everything it writes goes through
//! `tenantscope_schemas::Lake`.

pub mod billing;
pub mod business;
pub mod error;
mod imports;
pub mod otlp;

pub use error::{ImportError, RowError};
