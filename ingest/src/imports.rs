//! Import bookkeeping shared by every importer: a checksum of the input, the `imports` table
//! row that records it, and the check that makes importing the same input twice a no-op.

use std::{fmt::Write as _, sync::Arc};

use arrow::array::{
    Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use chrono::Utc;
use sha2::{Digest, Sha256};
use tenantscope_schemas::{Lake, Table, types::UTC};

use crate::error::ImportError;

/// SHA-256 of the inputs' bytes, in order, as hex.
pub(crate) fn checksum<'a>(parts: impl Iterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p);
    }
    hasher.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The import id of an input: its kind and checksum, so the same input has the same id.
pub(crate) fn import_id(kind: &str, checksum: &str) -> String {
    format!("{kind}-{}", &checksum[..20])
}

/// A SQL string literal.
pub(crate) fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Was this exact input imported before, and are its rows still in `table` (not replaced by a
/// later import)? Then importing it again is a no-op.
pub(crate) async fn still_current(
    lake: &Lake,
    table: Table,
    kind: &str,
    import_id: &str,
    checksum: &str,
) -> Result<bool, ImportError> {
    if !lake.exists(Table::Imports).await? || !lake.exists(table).await? {
        return Ok(false);
    }
    let sql = format!(
        "SELECT (SELECT max(row_count) FROM imports WHERE kind = {} AND checksum = {}), \
                (SELECT count(*) FROM {} WHERE import_id = {})",
        sql_str(kind),
        sql_str(checksum),
        table.name(),
        sql_str(import_id)
    );
    let batches = lake.query(&[Table::Imports, table], &sql).await?;
    let Some(b) = batches.first().filter(|b| b.num_rows() == 1) else { return Ok(false) };
    let recorded =
        b.column(0).as_any().downcast_ref::<Int64Array>().filter(|a| a.is_valid(0)).map(|a| a.value(0));
    let present = b.column(1).as_any().downcast_ref::<Int64Array>().map_or(0, |a| a.value(0));
    Ok(recorded.is_some_and(|r| r == present && r > 0))
}

/// What an import recorded about itself.
pub(crate) struct Record<'a> {
    pub(crate) import_id: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) checksum: &'a str,
    pub(crate) source: Option<&'a str>,
    pub(crate) format: &'a str,
    pub(crate) files: &'a str,
    pub(crate) rows: usize,
    pub(crate) periods: &'a [String],
}

/// Appends the import's row to the `imports` table (after its data is committed).
pub(crate) async fn record(lake: &Lake, r: &Record<'_>) -> Result<(), ImportError> {
    let s = |v: &str| -> Arc<dyn Array> { Arc::new(StringArray::from(vec![v])) };
    let mut at = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    at.append_value(Utc::now().timestamp_micros());
    let mut list = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(arrow::datatypes::Field::new(
        "element",
        arrow::datatypes::DataType::Utf8,
        true,
    )));
    for p in r.periods {
        list.values().append_value(p);
    }
    list.append(true);
    let batch = RecordBatch::try_new(
        Table::Imports.schema(),
        vec![
            s(r.import_id),
            Arc::new(at.finish()),
            s(r.kind),
            Arc::new(StringArray::from(vec![r.source])),
            s(r.format),
            s(r.files),
            s(r.checksum),
            Arc::new(Int64Array::from(vec![i64::try_from(r.rows).unwrap_or(i64::MAX)])),
            Arc::new(list.finish()),
            s("complete"),
        ],
    )
    .map_err(|e| ImportError::Query(format!("internal: import record: {e}")))?;
    lake.append(Table::Imports, &[batch]).await?;
    Ok(())
}
