//! Rows of the `alerts` table: evaluations, state changes, notifications and reloads.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use tenantscope_schemas::{Table, types::string_map_builder};

/// One row for the `alerts` table.
#[derive(Debug, Clone)]
pub(super) struct HistoryRow {
    pub(super) time: i64,
    pub(super) rule: String,
    pub(super) event: &'static str,
    pub(super) state: Option<String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) value: Option<f64>,
    pub(super) receiver: Option<String>,
    pub(super) detail: Option<String>,
}

pub(super) fn history_batch(rows: &[HistoryRow]) -> Result<RecordBatch, String> {
    let n = rows.len();
    let schema = Table::Alerts.schema();
    let mut labels = string_map_builder();
    let mut annotations = string_map_builder();
    for r in rows {
        for (k, v) in &r.labels {
            labels.keys().append_value(k);
            labels.values().append_value(v);
        }
        labels.append(true).map_err(|e| e.to_string())?;
        for (k, v) in &r.annotations {
            annotations.keys().append_value(k);
            annotations.values().append_value(v);
        }
        annotations.append(true).map_err(|e| e.to_string())?;
    }
    let mut cols: HashMap<&str, ArrayRef> = HashMap::new();
    cols.insert(
        "time",
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.time * 1000).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
    );
    cols.insert(
        "rule",
        Arc::new(StringArray::from(rows.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>())),
    );
    cols.insert("event", Arc::new(StringArray::from(rows.iter().map(|r| r.event).collect::<Vec<_>>())));
    cols.insert(
        "state",
        Arc::new(StringArray::from(rows.iter().map(|r| r.state.clone()).collect::<Vec<_>>())),
    );
    cols.insert(
        "tenant_id",
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.labels.get("tenant_id").cloned()).collect::<Vec<_>>(),
        )),
    );
    cols.insert("labels", Arc::new(labels.finish()));
    cols.insert("annotations", Arc::new(annotations.finish()));
    cols.insert("value", Arc::new(Float64Array::from(rows.iter().map(|r| r.value).collect::<Vec<_>>())));
    cols.insert(
        "receiver",
        Arc::new(StringArray::from(rows.iter().map(|r| r.receiver.clone()).collect::<Vec<_>>())),
    );
    cols.insert(
        "detail",
        Arc::new(StringArray::from(rows.iter().map(|r| r.detail.clone()).collect::<Vec<_>>())),
    );
    cols.insert(
        "date",
        Arc::new(Date32Array::from(
            rows.iter().map(|r| r.time.div_euclid(86_400_000) as i32).collect::<Vec<_>>(),
        )),
    );
    tenantscope_schemas::types::batch_with_nulls(&schema, n, cols).map_err(|e| e.to_string())
}
