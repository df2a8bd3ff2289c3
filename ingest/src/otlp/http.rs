//! OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`, with
//! `application/x-protobuf` or `application/json` bodies, plain or gzip. Responses follow the
//! OTLP specification: 200 with the export response (partial success included) in the
//! request's encoding; 400 for an undecodable body; 413 too large; 415 unsupported content
//! type or encoding; 429 or 503 with `Retry-After`; error bodies are a `google.rpc.Status`.

use std::io::Read;

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};

use tenantscope_schemas::auth::Caller;

use super::{
    pipeline::{Pipeline, Refused, Signal},
    request::ExportRequest,
    wire::{Encoded, LogsRequest, MetricsRequest, TraceRequest},
};

/// The routes, to serve on the OTLP/HTTP address. Each request must carry its authenticated
/// [`Caller`] as an extension: an ingest token bound to a tenant makes every row that tenant's.
pub fn router(pipeline: Pipeline) -> Router {
    let limit = pipeline.config().max_request_bytes;
    Router::new()
        .route("/v1/traces", post(export::<TraceRequest>))
        .route("/v1/metrics", post(export::<MetricsRequest>))
        .route("/v1/logs", post(export::<LogsRequest>))
        // The limit applies to the body as sent; a gzip body is also capped after inflating.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(pipeline)
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// An error response in the request's encoding.
struct Failure {
    status: StatusCode,
    encoding: Encoding,
    message: String,
    retry_after: Option<u64>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        // google.rpc.Code: 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE.
        let code = match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => 8,
            _ => 14,
        };
        let body = match self.encoding {
            Encoding::Protobuf => {
                tonic_types::Status { code, message: self.message, details: Vec::new() }.encode_to_vec()
            }
            Encoding::Json => {
                serde_json::json!({ "code": code, "message": self.message }).to_string().into_bytes()
            }
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.encoding.content_type()));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn failure(status: StatusCode, encoding: Encoding, message: impl Into<String>) -> Failure {
    Failure { status, encoding, message: message.into(), retry_after: None }
}

fn refused(r: Refused, encoding: Encoding) -> Failure {
    match r {
        Refused::Throttled { reason, retry_after } => Failure {
            status: StatusCode::TOO_MANY_REQUESTS,
            encoding,
            message: reason,
            retry_after: Some(retry_after.as_secs().max(1)),
        },
        Refused::TooLarge { .. } => failure(StatusCode::PAYLOAD_TOO_LARGE, encoding, r.to_string()),
        Refused::Unavailable(m) => {
            Failure { status: StatusCode::SERVICE_UNAVAILABLE, encoding, message: m, retry_after: Some(1) }
        }
    }
}

/// Reads the content type and encoding, inflates gzip, and decodes the request: protobuf by
/// the pipeline (for traces and logs into the `wire` types, which do not copy strings),
/// OTLP/JSON into opentelemetry-proto's type (which has the JSON mapping), then encoded and
/// decoded into `T`.
fn decode<T: ExportRequest>(
    pipeline: &Pipeline,
    headers: &HeaderMap,
    body: &Result<Bytes, BytesRejection>,
) -> Result<(Encoded<T>, Encoding), Failure> {
    let signal = T::SIGNAL;
    let (bytes, encoding) = body_of(pipeline, signal, headers, body)?;
    let request = match encoding {
        Encoding::Protobuf => pipeline.decode::<T>(bytes),
        Encoding::Json => json::<T::Json>(signal, &bytes)
            .and_then(|r| {
                Encoded::from_proto(&r)
                    .map_err(|e| format!("invalid OTLP/JSON {} request: {e}", signal.name()))
            })
            .inspect_err(|_| pipeline.count_refused(signal, "invalid", None)),
    };
    request.map(|r| (r, encoding)).map_err(|m| failure(StatusCode::BAD_REQUEST, encoding, m))
}

fn json<T: DeserializeOwned>(signal: Signal, bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice::<T>(bytes).map_err(|e| {
        format!("invalid OTLP/JSON {} request at line {} column {}: {e}", signal.name(), e.line(), e.column())
    })
}

/// Reads the content type and encoding and inflates gzip: the request's protobuf or JSON.
fn body_of(
    pipeline: &Pipeline,
    signal: Signal,
    headers: &HeaderMap,
    body: &Result<Bytes, BytesRejection>,
) -> Result<(Bytes, Encoding), Failure> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let encoding = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            pipeline.count_refused(signal, "unsupported", None);
            return Err(failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Encoding::Json,
                format!(
                    "unsupported content type {:?}: send application/x-protobuf or application/json",
                    if other.is_empty() { "(none)" } else { other }
                ),
            ));
        }
    };
    let limit = pipeline.config().max_request_bytes;
    let body = match body {
        Ok(b) => b,
        // Over the body limit (or a broken upload): answer in the request's encoding, counted.
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            pipeline.count_refused(signal, "too_large", None);
            return Err(failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                encoding,
                format!("the request body is larger than the limit of {limit} bytes"),
            ));
        }
        Err(rejection) => {
            pipeline.count_refused(signal, "invalid", None);
            return Err(failure(rejection.status(), encoding, rejection.body_text()));
        }
    };
    let content_encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let bytes = match content_encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => body.clone(),
        "gzip" => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(&body[..]).take(limit as u64 + 1).read_to_end(&mut out);
            if let Err(e) = read {
                pipeline.count_refused(signal, "invalid", None);
                return Err(failure(
                    StatusCode::BAD_REQUEST,
                    encoding,
                    format!("the gzip body cannot be inflated: {e}"),
                ));
            }
            if out.len() > limit {
                pipeline.count_refused(signal, "too_large", None);
                return Err(refused(Refused::TooLarge { size: out.len(), limit }, encoding));
            }
            Bytes::from(out)
        }
        other => {
            pipeline.count_refused(signal, "unsupported", None);
            return Err(failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                encoding,
                format!("unsupported content encoding {other:?}: send gzip or none"),
            ));
        }
    };
    Ok((bytes, encoding))
}

fn respond<R: Message + Serialize>(encoding: Encoding, response: R) -> Response {
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => {
            // `{}` rather than `{"partialSuccess":null}` when everything was accepted.
            let mut value = serde_json::to_value(&response).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.retain(|_, v| !v.is_null());
            }
            value.to_string().into_bytes()
        }
    };
    ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

/// `POST /v1/traces`, `/v1/metrics`, `/v1/logs`.
async fn export<T: ExportRequest>(
    State(p): State<Pipeline>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let (request, enc) = decode::<T>(&p, &headers, &body)?;
    let a = p.ingest(request, caller.principal.bound_tenant()).await.map_err(|r| refused(r, enc))?;
    Ok(respond(enc, T::answer(&a)))
}
