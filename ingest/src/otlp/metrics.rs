//! The ingest pipeline's own health on `GET /metrics` (Prometheus text).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SignalLabels {
    pub(crate) signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    pub(crate) signal: &'static str,
    /// invalid (partial success or undecodable), throttled (buffer full, tenant share or rate
    /// limit), too_large, unsupported (content type or encoding), error (the log could not be
    /// written).
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TableLabels {
    pub(crate) table: &'static str,
}

/// Counters and gauges of the pipeline.
#[derive(Clone)]
pub(crate) struct IngestMetrics {
    pub(crate) received: Family<SignalLabels, Counter>,
    pub(crate) accepted: Family<SignalLabels, Counter>,
    pub(crate) rejected: Family<RejectLabels, Counter>,
    pub(crate) refused_requests: Family<RejectLabels, Counter>,
    pub(crate) buffer_bytes: Gauge,
    pub(crate) wal_bytes: Gauge,
    pub(crate) flush_seconds: Histogram,
    pub(crate) flush_errors: Counter,
    pub(crate) commits: Family<TableLabels, Counter>,
    pub(crate) committed_rows: Family<TableLabels, Counter>,
}

impl IngestMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            received: Family::default(),
            accepted: Family::default(),
            rejected: Family::default(),
            refused_requests: Family::default(),
            buffer_bytes: Gauge::default(),
            wal_bytes: Gauge::default(),
            flush_seconds: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            flush_errors: Counter::default(),
            commits: Family::default(),
            committed_rows: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("tenantscope_otlp");
        r.register("received_items", "Spans, data points and log records received", m.received.clone());
        r.register(
            "accepted_items",
            "Items acknowledged (durable in the write-ahead log)",
            m.accepted.clone(),
        );
        r.register("rejected_items", "Items refused, by reason", m.rejected.clone());
        r.register(
            "refused_requests",
            "Requests refused whole (undecodable, too large, unsupported, throttled, log failure)",
            m.refused_requests.clone(),
        );
        r.register(
            "buffer_bytes",
            "Bytes of rows held in memory until they are in the lake",
            m.buffer_bytes.clone(),
        );
        r.register("wal_bytes", "Bytes in the write-ahead log's segments", m.wal_bytes.clone());
        r.register("flush_duration_seconds", "Time to commit a flush to the lake", m.flush_seconds.clone());
        r.register("flush_errors", "Flushes that failed (their rows are retried)", m.flush_errors.clone());
        r.register("lake_commits", "Delta commits made by flushes", m.commits.clone());
        r.register("lake_rows", "Rows committed to the lake by flushes", m.committed_rows.clone());
        m
    }
}
