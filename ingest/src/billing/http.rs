//! `POST /v1/import/billing`: the same import as the CLI, for automation.
//!
//! The body is one export file (CSV, CSV.gz, Parquet or JSON lines). Query parameters: `name`
//! (shown in errors, default `upload`), `format`, `source`, `skip_invalid`, `tenant_tag`
//! (comma-separated). Answers 200 with the outcome, 422 with every bad value when the file has
//! invalid rows (nothing written), 400 when the file or a parameter cannot be used, 500 when
//! the lake fails.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Deserialize;
use serde_json::json;
use tenantscope_schemas::Lake;

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

/// The import routes, to be merged into the process's HTTP router.
pub fn router(lake: Lake) -> Router {
    Router::new()
        .route("/v1/import/billing", post(post_billing))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(lake)
}

async fn post_billing(State(lake): State<Lake>, Query(p): Query<Params>, body: Bytes) -> Response {
    let bad_request = |msg: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response();
    if body.is_empty() {
        return bad_request("the request body is empty: send the export file as the body".to_string());
    }
    let format = match p.format.as_deref().map(str::parse::<Format>).transpose() {
        Ok(f) => f,
        Err(e) => return bad_request(e),
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
    match import_billing(&lake, &[file], &options).await {
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
