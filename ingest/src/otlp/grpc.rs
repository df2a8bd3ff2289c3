//! OTLP/gRPC receiver: TraceService, MetricsService and LogsService, gzip or plain.

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use tenantscope_schemas::{
    AuditEvent, Auditor,
    auth::{Auth, Caller, Principal},
};
use tonic::{Code, Request, Response, Status, codec::CompressionEncoding};
use tonic_types::{ErrorDetails, StatusExt};

use super::pipeline::{Pipeline, Refused};

#[derive(Clone)]
struct Receiver {
    pipeline: Pipeline,
}

fn status(refused: Refused) -> Status {
    match refused {
        Refused::Throttled { reason, retry_after } => Status::with_error_details(
            Code::ResourceExhausted,
            reason,
            ErrorDetails::with_retry_info(Some(retry_after)),
        ),
        Refused::TooLarge { .. } => Status::resource_exhausted(refused.to_string()),
        Refused::Invalid(m) => Status::invalid_argument(m),
        Refused::Unavailable(m) => Status::unavailable(m),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let bound = bound_tenant(&request);
        let a = self.pipeline.traces(request.into_inner(), bound.as_deref()).await.map_err(status)?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: a.partial(|rejected_spans, error_message| ExportTracePartialSuccess {
                rejected_spans,
                error_message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let bound = bound_tenant(&request);
        let a = self.pipeline.metrics(request.into_inner(), bound.as_deref()).await.map_err(status)?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: a.partial(|rejected_data_points, error_message| ExportMetricsPartialSuccess {
                rejected_data_points,
                error_message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let bound = bound_tenant(&request);
        let a = self.pipeline.logs(request.into_inner(), bound.as_deref()).await.map_err(status)?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: a.partial(|rejected_log_records, error_message| ExportLogsPartialSuccess {
                rejected_log_records,
                error_message,
            }),
        }))
    }
}

/// The tenant the caller's ingest token is bound to (put there by [`Gatekeeper`]).
fn bound_tenant<T>(request: &Request<T>) -> Option<String> {
    request.extensions().get::<Caller>().and_then(|c| c.principal.bound_tenant().map(str::to_string))
}

/// Authenticates every call (`authorization: Bearer TOKEN` metadata): UNAUTHENTICATED without
/// a valid token, PERMISSION_DENIED for a principal that may not send telemetry; both are
/// recorded in the audit log. The caller goes into the request's extensions.
#[derive(Clone)]
pub struct Gatekeeper {
    auth: Auth,
    auditor: Option<Auditor>,
}

impl Gatekeeper {
    /// Checks calls against `auth`, recording refusals with `auditor`.
    pub fn new(auth: Auth, auditor: Option<Auditor>) -> Self {
        Self { auth, auditor }
    }
}

impl tonic::service::Interceptor for Gatekeeper {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let remote_addr = request.remote_addr().map(|a| a.to_string());
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let refused = |action: &str, principal: Option<&Principal>, why: &str| {
            tracing::warn!(addr = ?remote_addr, "OTLP/gRPC call refused: {why}");
            if let Some(a) = &self.auditor {
                a.record(AuditEvent {
                    actor: principal.map(|p| p.name.clone()),
                    role: principal.map(|p| p.role.to_string()),
                    target: Some("otlp-grpc".into()),
                    detail: Some(why.to_string()),
                    remote_addr: remote_addr.clone(),
                    outcome: Some("denied".into()),
                    ..AuditEvent::new(action)
                });
            }
        };
        match self.auth.bearer(header) {
            Err(e) => {
                refused("auth.failure", None, &e.to_string());
                Err(Status::unauthenticated(e.to_string()))
            }
            Ok(p) if !p.can_ingest() => {
                let why = format!("{} ({}) may not send telemetry", p.name, p.role);
                refused("access.denied", Some(&p), &why);
                Err(Status::permission_denied(why))
            }
            Ok(principal) => {
                request.extensions_mut().insert(Caller { principal, remote_addr });
                Ok(request)
            }
        }
    }
}

/// Serves OTLP/gRPC on the connections of `incoming` until `shutdown` completes, every call
/// checked by `gate`.
pub async fn serve<IO>(
    pipeline: Pipeline,
    incoming: impl futures::Stream<Item = std::io::Result<IO>> + Send + 'static,
    gate: Gatekeeper,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    IO: tonic::transport::server::Connected
        + tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Unpin
        + Send
        + 'static,
{
    use tonic::service::interceptor::InterceptedService;
    let limit = pipeline.config().max_request_bytes;
    let r = Receiver { pipeline };
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            TraceServiceServer::new(r.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            MetricsServiceServer::new(r.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            LogsServiceServer::new(r)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
            gate,
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
