//! System tables: the service's own state as SQL tables, computed when read.
//!
//! `ingest_stats`: OTLP items received, accepted and rejected per signal over the last minute,
//! 5 minutes, 15 minutes, hour and since the start (column `lookback`: `1m`, `5m`,
//! `15m`, `1h`, `total`), so that an alert rule can watch the
//! rejection rate. It reads empty in processes that do not ingest (`sql`, `rules check`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::{
    arrow::{
        array::{Float64Array, Int64Array, RecordBatch, StringArray},
        datatypes::{DataType, Field, Schema, SchemaRef},
    },
    catalog::{Session, TableProvider},
    datasource::MemTable,
    error::Result,
    logical_expr::{Expr, TableType},
    physical_plan::ExecutionPlan,
};

/// A table whose rows are computed each time it is scanned.
pub struct SnapshotTable {
    schema: SchemaRef,
    rows: Arc<dyn Fn() -> Result<RecordBatch> + Send + Sync>,
}

impl std::fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTable").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl SnapshotTable {
    /// A table of `schema` whose rows `rows` computes.
    pub fn new(schema: SchemaRef, rows: impl Fn() -> Result<RecordBatch> + Send + Sync + 'static) -> Self {
        Self { schema, rows: Arc::new(rows) }
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = (self.rows)()?;
        MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// Name of the ingest statistics table.
pub const INGEST_STATS: &str = "ingest_stats";

/// Schema of `ingest_stats`.
pub fn ingest_stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("signal", DataType::Utf8, false),
        Field::new("lookback", DataType::Utf8, false),
        Field::new("window_seconds", DataType::Int64, true),
        Field::new("received", DataType::Int64, false),
        Field::new("accepted", DataType::Int64, false),
        Field::new("rejected", DataType::Int64, false),
        Field::new("rejected_ratio", DataType::Float64, true),
    ]))
}

/// One row of `ingest_stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestStatsRow {
    /// `traces`, `metrics` or `logs`.
    pub signal: String,
    /// `1m`, `5m`, `15m`, `1h` or `total`.
    pub lookback: String,
    /// The window's length (NULL for `total`).
    pub window_seconds: Option<i64>,
    /// Items received in the window.
    pub received: i64,
    /// Items accepted in the window.
    pub accepted: i64,
    /// Items rejected in the window.
    pub rejected: i64,
}

/// The `ingest_stats` batch of some rows.
pub fn ingest_stats_batch(rows: &[IngestStatsRow]) -> Result<RecordBatch> {
    let ratio = rows
        .iter()
        .map(|r| {
            let all = r.accepted + r.rejected;
            (all > 0).then(|| r.rejected as f64 / all as f64)
        })
        .collect::<Float64Array>();
    Ok(RecordBatch::try_new(
        ingest_stats_schema(),
        vec![
            Arc::new(rows.iter().map(|r| Some(r.signal.as_str())).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(r.lookback.as_str())).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.window_seconds).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| Some(r.received)).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| Some(r.accepted)).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| Some(r.rejected)).collect::<Int64Array>()),
            Arc::new(ratio),
        ],
    )?)
}
