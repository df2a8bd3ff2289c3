//! The query service: one DataFusion session over the lake's Delta tables, and the ways to
//! reach it (the `sql` command, HTTP, PostgreSQL wire).

pub mod access;
pub mod alerts;
pub mod cost;
mod distinct;
pub mod engine;
pub mod error;
mod few_groups;
pub mod format;
pub mod http;
pub mod json;
pub mod pg;
mod plans;
pub mod provider;
pub mod system;
mod utc;

pub use engine::{EngineConfig, QueryEngine, QueryResult};
pub use error::{QueryError, Result};
pub use format::{OutputFormat, write_result};
