//! HTTP routes of the query service: `POST /v1/sql`.
//!
//! Request: `{"sql": "SELECT ... WHERE tenant_id = $1", "params": ["acme"]}` (`params`
//! optional: JSON null, booleans, integers, floats and strings for `$1`, `$2`, ...).
//! Response by `Accept`: JSON (default) `{"columns": [{"name", "type"}], "rows": [[...]]}`;
//! `text/csv`; `application/vnd.apache.arrow.stream` (Arrow IPC stream); or
//! `application/vnd.apache.parquet` (a Parquet file). In JSON, integers, floats and booleans are
//! numbers and booleans; decimals (money) are strings so that no digit is lost; timestamps are
//! RFC 3339 text in UTC; nested values are their text form.
//! Errors: `{"error": "..."}` with 400 when the request or its SQL is at fault (the message
//! gives the line and column) and 500 when we are.

use axum::{
    Extension, Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use datafusion::arrow::{
    array::{Array, AsArray, RecordBatch},
    datatypes::{
        DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
        UInt32Type, UInt64Type,
    },
    json::writer::{NullableEncoder, make_encoder},
    util::display::{ArrayFormatter, FormatOptions},
};
use datafusion::{arrow::ipc::writer::StreamWriter, common::ScalarValue, parquet::arrow::ArrowWriter};
use serde::Deserialize;
use serde_json::{Value, json};

use tenantscope_schemas::auth::Caller;

use crate::{QueryEngine, QueryError, QueryResult};

/// Body of `POST /v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One SQL statement.
    pub sql: String,
    /// Values of `$1`, `$2`, ...
    #[serde(default)]
    pub params: Vec<Value>,
}

/// The query service's routes, to be merged into the process's HTTP router. Each request must
/// carry its authenticated [`Caller`] as an extension (the process's auth layer puts it there);
/// one without is refused.
pub fn router(engine: QueryEngine) -> Router {
    Router::new().route("/v1/sql", post(post_sql)).with_state(engine)
}

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
const PARQUET: &str = "application/vnd.apache.parquet";

async fn post_sql(
    State(engine): State<QueryEngine>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<SqlRequest>,
) -> Response {
    let params = match req.params.iter().enumerate().map(|(i, v)| param(i, v)).collect::<Result<Vec<_>, _>>()
    {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let result = engine.sql_as(&caller, &req.sql, params).await;
    let result = match result {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let wants = |media: &str| accept.split(',').any(|a| a.split(';').next().unwrap_or("").trim() == media);
    let encoded = if wants("text/csv") {
        let mut out = Vec::new();
        crate::write_result(&result, crate::OutputFormat::Csv, &mut out)
            .map(|()| ("text/csv; charset=utf-8", out))
    } else if wants(ARROW_STREAM) {
        arrow_stream(&result).map(|b| (ARROW_STREAM, b))
    } else if wants(PARQUET) {
        parquet_file(&result).map(|b| (PARQUET, b))
    } else {
        return match to_json(&result) {
            Ok(body) => Json(body).into_response(),
            Err(e) => error_response(&e),
        };
    };
    match encoded {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => error_response(&e),
    }
}

/// A JSON parameter as a SQL value.
fn param(i: usize, v: &Value) -> Result<ScalarValue, QueryError> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => ScalarValue::Int64(Some(i)),
            (None, Some(f)) => ScalarValue::Float64(Some(f)),
            _ => return Err(QueryError::BadRequest(format!("params[{i}]: {n} is out of range"))),
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        other => {
            return Err(QueryError::BadRequest(format!(
                "params[{i}]: {other} is not a SQL value (use null, a boolean, a number or a string)"
            )));
        }
    })
}

fn arrow_stream(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let err = |e: datafusion::arrow::error::ArrowError| QueryError::Output(e.to_string());
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &result.schema).map_err(err)?;
    for b in &result.batches {
        w.write(b).map_err(err)?;
    }
    w.finish().map_err(err)?;
    drop(w);
    Ok(out)
}

fn parquet_file(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let err = |e: datafusion::parquet::errors::ParquetError| QueryError::Output(e.to_string());
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, result.schema.clone(), None).map_err(err)?;
    for b in &result.batches {
        w.write(b).map_err(err)?;
    }
    w.close().map_err(err)?;
    Ok(out)
}

fn error_response(e: &QueryError) -> Response {
    let status = match e {
        QueryError::Forbidden(_) => StatusCode::FORBIDDEN,
        e if e.is_user_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
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
    // Maps, lists and structs (attributes, tags, span events) as JSON objects and arrays.
    let schema = batch.schema();
    let json_options = crate::json::encoder_options(true);
    let mut nested: Vec<Option<NullableEncoder<'_>>> = Vec::with_capacity(batch.num_columns());
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        nested.push(if crate::json::is_nested(field.data_type()) {
            Some(
                make_encoder(field, col.as_ref(), &json_options)
                    .map_err(|e| QueryError::Output(e.to_string()))?,
            )
        } else {
            None
        });
    }
    let mut buf = Vec::new();
    for row in 0..batch.num_rows() {
        let mut values = Vec::with_capacity(batch.num_columns());
        for ((col, fmt), encoder) in batch.columns().iter().zip(&formatters).zip(&mut nested) {
            values.push(match encoder {
                Some(encoder) if !col.is_null(row) => {
                    buf.clear();
                    encoder.encode(row, &mut buf);
                    serde_json::from_slice(&buf).map_err(|e| QueryError::Output(e.to_string()))?
                }
                _ => cell(col.as_ref(), fmt, row),
            });
        }
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
