//! `POST /v1/import/billing`: the same import as the CLI, for automation.
//!
//! The body is one export file (CSV, CSV.gz, Parquet or JSON lines). Query parameters: `name`
//! (shown in errors, default `upload`), `format`, `source`, `skip_invalid`, `tenant_tag`
//! (comma-separated). Answers 200 with the outcome, 422 with every bad value when the file has
//! invalid rows (nothing written), 400 when the file or a parameter cannot be used, 500 when
//! the lake fails.

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Deserialize;
use serde_json::json;
use tenantscope_schemas::{AuditEvent, Auditor, Lake, auth::Caller};

use super::{BillingImportOptions, ExportFile, Format, ImportError, import_billing};

/// Largest upload accepted (bigger exports: use the CLI, which reads files).
pub const MAX_UPLOAD_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: Option<String>,
    format: Option<String>,
    source: Option<String>,
    #[serde(default)]
    skip_invalid: bool,
    tenant_tag: Option<String>,
}

/// The import routes, to be merged into the process's HTTP router. Each request must carry its
/// authenticated [`Caller`] as an extension; every import (done or refused) is recorded with
/// `auditor`.
pub fn router(lake: Lake, auditor: Option<Auditor>) -> Router {
    Router::new()
        .route("/v1/import/billing", post(post_billing))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state((lake, auditor))
}

async fn post_billing(
    State((lake, auditor)): State<(Lake, Option<Auditor>)>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<Params>,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let mut event = AuditEvent {
        actor: Some(caller.principal.name.clone()),
        role: Some(caller.principal.role.to_string()),
        remote_addr: caller.remote_addr.clone(),
        target: Some(p.name.clone().unwrap_or_else(|| "upload".to_string())),
        ..AuditEvent::new("import.billing")
    };
    let response = import(lake, p, body, &mut event).await;
    event.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    if let Some(a) = auditor {
        a.record(event);
    }
    response
}

async fn import(lake: Lake, p: Params, body: Bytes, event: &mut AuditEvent) -> Response {
    event.outcome = Some("error".into());
    let bad_request = |msg: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response();
    if body.is_empty() {
        event.detail = Some("empty body".into());
        return bad_request("the request body is empty: send the export file as the body".to_string());
    }
    let format = match p.format.as_deref().map(str::parse::<Format>).transpose() {
        Ok(f) => f,
        Err(e) => {
            event.detail = Some(e.clone());
            return bad_request(e);
        }
    };
    let options = BillingImportOptions {
        format,
        source: p.source,
        skip_invalid: p.skip_invalid,
        tenant_tag_keys: p
            .tenant_tag
            .map(|t| t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_else(|| vec!["tenant".into(), "tenant_id".into(), "tenant.id".into()]),
    };
    let file = ExportFile { name: p.name.unwrap_or_else(|| "upload".to_string()), bytes: body };
    let outcome = import_billing(&lake, &[file], &options).await;
    match &outcome {
        Ok(o) => {
            event.outcome = Some("ok".into());
            event.rows = Some(o.rows as i64);
            event.detail = Some(format!("import {} ({} rows written)", o.import_id, o.rows));
        }
        Err(e) => event.detail = Some(e.to_string()),
    }
    match outcome {
        Ok(o) => Json(json!({
            "import_id": o.import_id,
            "written": o.written,
            "source": o.source,
            "formats": o.formats.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "rows": o.rows,
            "attributed": o.attributed,
            "rounded": o.rounded,
            "billing_periods": o.periods.iter().map(|p| p.format("%Y-%m").to_string()).collect::<Vec<_>>(),
            "rejected": o.rejected,
            "checksum": o.checksum,
        }))
        .into_response(),
        Err(ImportError::InvalidRows { file, total, errors }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": format!("{file}: {total} invalid value(s); nothing was imported"),
                "invalid_values": total,
                "errors": errors,
            })),
        )
            .into_response(),
        Err(e) if e.is_input_error() => bad_request(e.to_string()),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response()
        }
    }
}
