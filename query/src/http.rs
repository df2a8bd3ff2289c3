//! HTTP routes of the query service: `POST /v1/sql`.
//!
//! Request: `{"sql": "SELECT ..."}`. Response: `{"columns": [{"name", "type"}], "rows": [[...]]}`.
//! Integers, floats and booleans are JSON numbers and booleans; decimals (money) are strings so
//! that no digit is lost; timestamps are RFC 3339 text in UTC; nested values are their text form.
//! Errors: `{"error": "..."}` with 400 when the SQL is at fault and 500 when we are.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use datafusion::arrow::{
    array::{Array, AsArray, RecordBatch},
    datatypes::{
        DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
        UInt32Type, UInt64Type,
    },
    util::display::{ArrayFormatter, FormatOptions},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{QueryEngine, QueryError, QueryResult};

/// Body of `POST /v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One SQL statement.
    pub sql: String,
}

/// The query service's routes, to be merged into the process's HTTP router.
pub fn router(engine: QueryEngine) -> Router {
    Router::new().route("/v1/sql", post(post_sql)).with_state(engine)
}

async fn post_sql(State(engine): State<QueryEngine>, Json(req): Json<SqlRequest>) -> Response {
    match engine.sql(&req.sql).await {
        Ok(result) => match to_json(&result) {
            Ok(body) => Json(body).into_response(),
            Err(e) => error_response(&e),
        },
        Err(e) => error_response(&e),
    }
}

fn error_response(e: &QueryError) -> Response {
    let status = if e.is_user_error() { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}

/// The JSON form of a result.
pub fn to_json(result: &QueryResult) -> Result<Value, QueryError> {
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut rows = Vec::with_capacity(result.num_rows());
    for batch in &result.batches {
        append_rows(batch, &mut rows)?;
    }
    Ok(json!({ "columns": columns, "rows": rows }))
}

fn append_rows(batch: &RecordBatch, rows: &mut Vec<Value>) -> Result<(), QueryError> {
    let options = FormatOptions::default().with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.fZ"));
    let formatters = crate::format::formatters(batch, &options)?;
    for row in 0..batch.num_rows() {
        let values =
            batch.columns().iter().zip(&formatters).map(|(col, fmt)| cell(col.as_ref(), fmt, row)).collect();
        rows.push(Value::Array(values));
    }
    Ok(())
}

fn cell(col: &dyn Array, fmt: &ArrayFormatter<'_>, row: usize) -> Value {
    if col.is_null(row) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Boolean => Value::Bool(col.as_boolean().value(row)),
        DataType::Int8 => json!(col.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => json!(col.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(col.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => json!(col.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => json!(col.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => json!(col.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => json!(col.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => json!(col.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(row)),
        _ => Value::String(fmt.value(row).to_string()),
    }
}
