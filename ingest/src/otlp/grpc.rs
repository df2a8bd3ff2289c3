//! OTLP/gRPC receiver: TraceService, MetricsService and LogsService, gzip or plain.

use std::net::SocketAddr;

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
        let a = self.pipeline.traces(request.into_inner(), None).await.map_err(status)?;
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
        let a = self.pipeline.metrics(request.into_inner(), None).await.map_err(status)?;
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
        let a = self.pipeline.logs(request.into_inner(), None).await.map_err(status)?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: a.partial(|rejected_log_records, error_message| ExportLogsPartialSuccess {
                rejected_log_records,
                error_message,
            }),
        }))
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` completes.
pub async fn serve(
    pipeline: Pipeline,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = pipeline.config().max_request_bytes;
    let r = Receiver { pipeline };
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, "OTLP/gRPC receiver starting.");
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(r.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            MetricsServiceServer::new(r.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            LogsServiceServer::new(r)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(tokio_stream_incoming(listener), shutdown)
        .await
}

fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}
