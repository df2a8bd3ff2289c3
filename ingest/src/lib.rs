//! Ingest: billing and business-data importers (and, to come, the OTLP receivers with tenant
//! attribution, buffering and the write-ahead log). Everything it writes goes through
//! `tenantscope_schemas::Lake`.

pub mod billing;
pub mod business;
pub mod error;
mod imports;

pub use error::{ImportError, RowError};
