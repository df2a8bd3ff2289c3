//! Ingest: OTLP receivers (gRPC and HTTP), billing and business-data importers, tenant
//! attribution, buffering and the write-ahead log. Everything it writes goes through
//! `tenantscope_schemas::Lake`.
//!
//! This crate is empty until the OTLP ingest and billing import issues land; it is a
//! workspace member now so that its dependencies (tonic, prost, opentelemetry-proto) are
//! pinned and built with the rest.
