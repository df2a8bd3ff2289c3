//! Table definitions shared by the writer (ingest) and the reader (query): Arrow schemas,
//! column-name constants, partitioning, and the [`Lake`] handle that opens, creates and appends
//! to the Delta tables.
//!
//! Ingest and query spell a column or a table only through this crate.

pub mod auth;
pub mod columns;
pub mod focus;
pub mod lake;
pub mod tables;
#[doc(hidden)]
pub mod testing;
pub mod types;

pub use lake::{
    AuditEvent, Auditor, Commit, CompactOrder, CompactReport, Lake, LakeError, LakeLocation, TableFiles,
};
pub use tables::Table;

/// Re-exported so that every crate uses the same arrow and deltalake.
pub use arrow;
pub use deltalake;
