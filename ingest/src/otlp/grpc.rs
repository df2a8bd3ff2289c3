//! OTLP/gRPC receiver: TraceService, MetricsService and LogsService, gzip or plain.

use bytes::{Buf, Bytes};
use tenantscope_schemas::{
    AuditEvent, Auditor,
    auth::{Auth, Caller, Principal},
};
use tonic::{
    Code, Request, Response, Status,
    codec::{Codec, DecodeBuf, Decoder},
    codegen::{
        Body, BoxFuture, CompressionEncoding, Context, EnabledCompressionEncodings, Poll, Service, StdError,
        http,
    },
};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    pipeline::{Pipeline, Refused},
    request::ExportRequest,
    wire::{LogsRequest, MetricsRequest, TraceRequest},
};

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
        Refused::Unavailable(m) => Status::unavailable(m),
    }
}

/// A service with one unary method (`Export`) taking one kind of [`ExportRequest`].
trait WireMethod: Clone + Send + Sync + 'static {
    /// The gRPC service's full name (its one method's path is `/{SERVICE}/Export`).
    const SERVICE: &'static str;
    /// The request (decoded without copying its strings).
    type Request: ExportRequest;
}

#[derive(Clone)]
struct Traces;

impl WireMethod for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    type Request = TraceRequest;
}

#[derive(Clone)]
struct Metrics;

impl WireMethod for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    type Request = MetricsRequest;
}

#[derive(Clone)]
struct Logs;

impl WireMethod for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    type Request = LogsRequest;
}

#[derive(Clone)]
struct WireServer<M> {
    receiver: Receiver,
    limit: usize,
    _method: M,
}

impl<M: WireMethod> tonic::server::NamedService for WireServer<M> {
    const NAME: &'static str = M::SERVICE;
}

struct Export<M>(Receiver, std::marker::PhantomData<M>);

impl<M: WireMethod> tonic::server::UnaryService<Bytes> for Export<M> {
    type Response = Answer<M>;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let bound = bound_tenant(&request);
        let pipeline = self.0.pipeline.clone();
        let decoded = pipeline.decode::<M::Request>(request.into_inner());
        Box::pin(async move {
            let accepted =
                pipeline.ingest(decoded.map_err(Status::invalid_argument)?, bound.as_deref()).await;
            Ok(Response::new(M::Request::answer(&accepted.map_err(status)?)))
        })
    }
}

/// The answer to `M`'s request.
type Answer<M> = <<M as WireMethod>::Request as ExportRequest>::Response;

/// The codec of a [`WireServer`]: requests as the bytes of their protobuf message (decoded by
/// the pipeline, which keeps them for the write-ahead log), responses by prost.
struct RawRequestCodec<R>(std::marker::PhantomData<R>);

/// Takes a request message's bytes as they are (no copy: a slice of the frame buffer).
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl<R: prost::Message + Send + 'static> Codec for RawRequestCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl<M, B> Service<http::Request<B>> for WireServer<M>
where
    M: WireMethod,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path.strip_prefix('/').and_then(|p| p.strip_suffix("/Export")) != Some(M::SERVICE) {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
                headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
                Ok(response)
            });
        }
        let method = Export::<M>(self.receiver.clone(), std::marker::PhantomData);
        let limit = self.limit;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let codec = RawRequestCodec::<Answer<M>>(std::marker::PhantomData);
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(method, request).await)
        })
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
            WireServer { receiver: r.clone(), limit, _method: Traces },
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            WireServer { receiver: r.clone(), limit, _method: Metrics },
            gate.clone(),
        ))
        .add_service(InterceptedService::new(WireServer { receiver: r, limit, _method: Logs }, gate))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
