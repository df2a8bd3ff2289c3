//! The three OTLP export requests as the pipeline takes them: one implementation of
//! [`ExportRequest`] per signal, so that the receivers (gRPC, HTTP protobuf and JSON) and the
//! replay of the write-ahead log each have one path for all three.

use arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse},
};

use super::{
    attribution::TenantResolver,
    convert::{self, Converted},
    pipeline::{Accepted, Signal},
    wire::{LogsRequest, MetricsRequest, TraceRequest},
};

/// An OTLP export request: its signal, its OTLP/JSON form, its rows and its answer.
pub trait ExportRequest: prost::Message + Default + Send + 'static {
    /// Its signal.
    const SIGNAL: Signal;
    /// The same message in opentelemetry-proto's type, which has the OTLP/JSON mapping.
    type Json: prost::Message + serde::de::DeserializeOwned;
    /// The answer to it.
    type Response: prost::Message + serde::Serialize + Send + 'static;

    /// Its rows. `bound`: the tenant of the caller's ingest token; `now_micros`: when it was
    /// received (the time of log records that carry none).
    fn to_rows(
        &self,
        resolver: &TenantResolver,
        bound: Option<&str>,
        now_micros: i64,
    ) -> Result<Converted, ArrowError>;

    /// The answer to a request the pipeline took, with its partial success.
    fn answer(accepted: &Accepted) -> Self::Response;
}

impl ExportRequest for TraceRequest {
    const SIGNAL: Signal = Signal::Traces;
    type Json = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;

    fn to_rows(
        &self,
        resolver: &TenantResolver,
        bound: Option<&str>,
        _: i64,
    ) -> Result<Converted, ArrowError> {
        convert::traces(self, resolver, bound)
    }

    fn answer(a: &Accepted) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: a.partial(|rejected_spans, error_message| ExportTracePartialSuccess {
                rejected_spans,
                error_message,
            }),
        }
    }
}

impl ExportRequest for MetricsRequest {
    const SIGNAL: Signal = Signal::Metrics;
    type Json = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;

    fn to_rows(
        &self,
        resolver: &TenantResolver,
        bound: Option<&str>,
        _: i64,
    ) -> Result<Converted, ArrowError> {
        convert::metrics(self, resolver, bound)
    }

    fn answer(a: &Accepted) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: a.partial(|rejected_data_points, error_message| ExportMetricsPartialSuccess {
                rejected_data_points,
                error_message,
            }),
        }
    }
}

impl ExportRequest for LogsRequest {
    const SIGNAL: Signal = Signal::Logs;
    type Json = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;

    fn to_rows(
        &self,
        resolver: &TenantResolver,
        bound: Option<&str>,
        now_micros: i64,
    ) -> Result<Converted, ArrowError> {
        convert::logs(self, resolver, bound, now_micros)
    }

    fn answer(a: &Accepted) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: a.partial(|rejected_log_records, error_message| ExportLogsPartialSuccess {
                rejected_log_records,
                error_message,
            }),
        }
    }
}
