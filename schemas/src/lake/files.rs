//! Writing sorted rows as a table's Parquet data files, on every core, and committing them.
//!
//! deltalake's own write operation runs one writer for a whole in-memory input: one thread
//! encodes every file, after copying each batch once more to split it by partition. The rows
//! [`prepare`](super::prepare) returns are already sorted partition first, so here each batch is
//! cut at partition boundaries (zero-copy slices), the slices are dealt out in order to one
//! deltalake [`DeltaWriter`] per core (its `write_partition` takes pre-partitioned rows), and the
//! files they write (with deltalake's own statistics) are committed in one transaction with
//! deltalake's [`CommitBuilder`], conflict checks and checkpoints included.
//!
//! A caller that produces rows already in the lake's order, a part of them per thread (the
//! billing import), writes them as they come instead, one [`FileWriter`] a thread, and commits
//! the files at the end (see [`super::SliceWrite`]).

use std::{num::NonZeroU64, sync::Arc};

use arrow::{array::RecordBatch, compute::partition, datatypes::SchemaRef};
use deltalake::{
    DeltaTable,
    datafile::writer::{DeltaWriter, WriterConfig},
    kernel::{
        Action, Add,
        scalars::ScalarExt,
        transaction::{CommitBuilder, CommitProperties, TableReference},
    },
    logstore::ObjectStoreRef,
    operations::write::WriterStatsConfig,
    protocol::{DeltaOperation, SaveMode},
};
use indexmap::IndexMap;
use object_store::{ObjectStoreExt, path::Path};

use super::{
    error::{LakeError, Result},
    writer::{ROW_GROUP_ROWS, TARGET_FILE_BYTES, conform, cores, in_order, order_keys, writer_properties},
};
use crate::tables::Table;

/// The settings of the data files written for `table` against its snapshot `dt` (deltalake's
/// statistics columns as the table configures them).
pub(super) fn writer_config(table: Table, dt: &DeltaTable) -> Result<WriterConfig> {
    let snapshot = dt.snapshot().map_err(|e| LakeError::delta(table, e))?;
    let stats = WriterStatsConfig::from_config(snapshot.snapshot().table_configuration());
    Ok(WriterConfig::new(
        table.schema(),
        table.partition_columns().iter().map(|c| c.to_string()).collect(),
        Some(writer_properties(table)),
        NonZeroU64::new(TARGET_FILE_BYTES),
        None,
        stats.num_indexed_cols,
        stats.stats_columns,
    ))
}

/// `batch` (sorted partition first) cut at its partitions' boundaries (zero-copy slices), each
/// with its Delta partition values (`ScalarExt::from_array`, passed in: deltalake does not export
/// the kernel's scalar type for a signature to name).
fn cut_at_partitions<S>(
    table: Table,
    batch: &RecordBatch,
    value: impl Fn(&dyn arrow::array::Array, usize) -> Option<S>,
) -> Result<Vec<(IndexMap<String, S>, RecordBatch)>> {
    let partition_columns = table.partition_columns();
    if partition_columns.is_empty() {
        return Ok(vec![(IndexMap::new(), batch.clone())]);
    }
    let schema = batch.schema();
    let keys: Vec<_> = partition_columns
        .iter()
        .map(|c| schema.index_of(c).map(|i| Arc::clone(batch.column(i))))
        .collect::<std::result::Result<_, _>>()
        .map_err(|source| LakeError::Arrow { table, source })?;
    let ranges = partition(&keys).map_err(|source| LakeError::Arrow { table, source })?.ranges();
    let mut slices = Vec::with_capacity(ranges.len());
    for range in ranges {
        let values: Option<IndexMap<String, S>> = partition_columns
            .iter()
            .zip(&keys)
            .map(|(name, col)| value(col.as_ref(), range.start).map(|v| (name.to_string(), v)))
            .collect();
        let values = values.ok_or_else(|| LakeError::Schema {
            table,
            detail: "a partition value cannot be written as a Delta partition value".into(),
        })?;
        slices.push((values, batch.slice(range.start, range.end - range.start)));
    }
    Ok(slices)
}

/// Writes `batches` (sorted by [`super::prepare`]) as data files of `dt` and commits them in one
/// transaction of `operation` (an append, or a replace whose predicate matched no row of the
/// snapshot `dt` holds: a concurrent commit adding rows it matches is then a conflict). Returns
/// the table at the commit, and the version committed.
pub(super) async fn write_and_commit(
    table: Table,
    dt: &DeltaTable,
    batches: Vec<RecordBatch>,
    operation: DeltaOperation,
    properties: CommitProperties,
) -> Result<(DeltaTable, u64)> {
    let delta = |e| LakeError::delta(table, e);
    if batches.is_empty() {
        return Err(LakeError::Schema { table, detail: "internal: nothing to write".into() });
    }
    let config = writer_config(table, dt)?;
    let mut slices = Vec::new();
    for batch in &batches {
        slices.extend(cut_at_partitions(table, batch, ScalarExt::from_array)?);
    }

    // Deal the slices out in order, about equal rows per writer.
    let rows: usize = slices.iter().map(|(_, b)| b.num_rows()).sum();
    let writers = cores().min(rows.div_ceil(ROW_GROUP_ROWS)).max(1);
    let per_writer = rows.div_ceil(writers);
    let mut groups: Vec<Vec<_>> = vec![Vec::new()];
    let mut room = per_writer;
    for (values, mut slice) in slices {
        while slice.num_rows() > 0 {
            if room == 0 {
                groups.push(Vec::new());
                room = per_writer;
            }
            let take = slice.num_rows().min(room);
            if let Some(group) = groups.last_mut() {
                group.push((values.clone(), slice.slice(0, take)));
            }
            room -= take;
            slice = slice.slice(take, slice.num_rows() - take);
        }
    }
    let store = dt.log_store().object_store(None);
    let mut tasks = tokio::task::JoinSet::new();
    for group in groups {
        let (store, config) = (store.clone(), config.clone());
        tasks.spawn(async move {
            let mut writer = DeltaWriter::new(store, config);
            for (values, slice) in group {
                writer.write_partition(slice, &values).await?;
            }
            writer.close().await
        });
    }
    let mut adds = Vec::new();
    while let Some(done) = tasks.join_next().await {
        adds.extend(
            done.map_err(|e| LakeError::Schema {
                table,
                detail: format!("internal: a writer task failed: {e}"),
            })?
            .map_err(delta)?,
        );
    }
    commit(table, dt, adds, operation, properties).await
}

/// Commits the data files `adds` to `dt` in one transaction of `operation`, conflict checks
/// and checkpoints included (deltalake's [`CommitBuilder`]). Returns the table at the commit,
/// and the version committed.
pub(super) async fn commit(
    table: Table,
    dt: &DeltaTable,
    mut adds: Vec<Add>,
    operation: DeltaOperation,
    properties: CommitProperties,
) -> Result<(DeltaTable, u64)> {
    let delta = |e| LakeError::delta(table, e);
    let snapshot = dt.snapshot().map_err(delta)?;
    // Files in a deterministic order in the log (writers finish in any order).
    adds.sort_by(|a, b| a.path.cmp(&b.path));
    let committed = CommitBuilder::from(properties)
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(Some(snapshot as &dyn TableReference), dt.log_store(), operation)
        .await
        .map_err(delta)?;
    // The table as the commit left it, as deltalake's own write returns it: no second read of
    // the log (which, failing after the commit landed, would have looked like a failed write).
    let mut next = DeltaTable::new(dt.log_store());
    next.state = Some(committed.snapshot());
    Ok((next, committed.version()))
}

/// Data files written by a [`FileWriter`], not committed yet.
#[derive(Debug, Default)]
pub struct WrittenFiles {
    pub(super) adds: Vec<Add>,
    pub(super) rows: usize,
}

impl WrittenFiles {
    /// Rows in the files.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Writes rows that come in the lake's order, batch after batch, as data files of a table, for
/// one commit later (see [`super::SliceWrite`]): one writer a thread, each writing its own files.
/// A batch is encoded as it comes, so the rows of a large import need not all be held in memory.
pub struct FileWriter {
    table: Table,
    schema: SchemaRef,
    writer: DeltaWriter,
    /// The lake's order columns ([`order_keys`]).
    keys: Vec<usize>,
    /// The order columns of the last row written.
    last: Option<RecordBatch>,
    rows: usize,
}

impl FileWriter {
    pub(super) fn new(table: Table, store: ObjectStoreRef, config: WriterConfig) -> Self {
        let schema = table.schema();
        let keys = order_keys(table, &schema);
        Self { table, schema, writer: DeltaWriter::new(store, config), keys, last: None, rows: 0 }
    }

    /// Writes `batch`, whose rows must follow the rows written before in the lake's order
    /// (partition columns, then sort columns; an error otherwise). Columns are conformed to the
    /// table as [`super::prepare`] does.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let table = self.table;
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let batch = conform(table, &self.schema, batch)?;
        let arrow_err = |source| LakeError::Arrow { table, source };
        let keys = batch.project(&self.keys).map_err(arrow_err)?;
        let mut runs: Vec<RecordBatch> = self.last.take().into_iter().collect();
        runs.push(keys.clone());
        let all_keys: Vec<usize> = (0..self.keys.len()).collect();
        if !in_order(&runs, &all_keys).map_err(arrow_err)? {
            return Err(LakeError::Schema {
                table,
                detail: "internal: rows to write are not in the lake's order".into(),
            });
        }
        self.last = Some(keys.slice(n - 1, 1));
        for (values, slice) in cut_at_partitions(table, &batch, ScalarExt::from_array)? {
            self.writer.write_partition(slice, &values).await.map_err(|e| LakeError::delta(table, e))?;
        }
        self.rows += n;
        Ok(())
    }

    /// Finishes the files (their footers, their uploads).
    pub async fn close(self) -> Result<WrittenFiles> {
        let table = self.table;
        let adds = self.writer.close().await.map_err(|e| LakeError::delta(table, e))?;
        Ok(WrittenFiles { adds, rows: self.rows })
    }

    /// Gives up: the uploads in progress are aborted and the files finished so far are left to
    /// vacuum (no commit names them, so no reader sees them).
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(table = %self.table, error = %e, "Could not abort a data file upload.");
        }
    }
}

/// Deletes data files that were written but will not be committed.
pub(super) async fn delete_files(
    table: Table,
    store: &ObjectStoreRef,
    files: Vec<WrittenFiles>,
) -> Result<()> {
    for add in files.into_iter().flat_map(|f| f.adds) {
        let path = Path::from_url_path(&add.path).map_err(|e| LakeError::Schema {
            table,
            detail: format!("data file path {:?}: {e}", add.path),
        })?;
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(LakeError::Schema { table, detail: format!("deleting data file {path}: {e}") });
            }
        }
    }
    Ok(())
}

/// The Delta operation of an append to `table`.
pub(super) fn append_operation(table: Table) -> DeltaOperation {
    DeltaOperation::Write { mode: SaveMode::Append, partition_by: partition_by(table), predicate: None }
}

/// The Delta operation of a replace of the rows `predicate` matches (none, when written here).
pub(super) fn replace_operation(table: Table, predicate: &str) -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: partition_by(table),
        predicate: Some(predicate.to_string()),
    }
}

fn partition_by(table: Table) -> Option<Vec<String>> {
    let cols = table.partition_columns();
    (!cols.is_empty()).then(|| cols.iter().map(|c| c.to_string()).collect())
}
