//! OTLP ingest: gRPC and HTTP receivers, conversion to the telemetry tables, tenant
//! attribution, admission (memory, tenant share, rate limits), the write-ahead log and the
//! flusher that commits to the lake.

pub mod attribution;
pub mod convert;
pub mod grpc;
pub mod http;
mod metrics;
pub mod pipeline;
pub mod request;
pub(crate) mod value;
pub mod wal;
pub mod wire;

pub use attribution::{AttributionConfig, MappingRule, TenantResolver};
pub use pipeline::{Accepted, IngestConfig, ItemCounts, Pipeline, RateLimit, RateLimits, Refused, Signal};
pub use request::ExportRequest;
pub use wal::WalError;
