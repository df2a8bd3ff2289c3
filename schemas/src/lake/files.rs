//! Writing sorted rows as a table's Parquet data files, on every core, and committing them.
//!
//! deltalake's own write operation runs one writer for a whole in-memory input: one thread
//! encodes every file, after copying each batch once more to split it by partition. The rows
//! [`prepare`](super::prepare) returns are already sorted partition first, so here each batch is
//! cut at partition boundaries (zero-copy slices), the slices are dealt out in order to one
//! deltalake [`DeltaWriter`] per core (its `write_partition` takes pre-partitioned rows), and the
//! files they write (with deltalake's own statistics) are committed in one transaction with
//! deltalake's [`CommitBuilder`], conflict checks and checkpoints included.

use std::num::NonZeroU64;

use arrow::{array::RecordBatch, compute::partition};
use deltalake::{
    DeltaTable,
    datafile::writer::{DeltaWriter, WriterConfig},
    kernel::{
        Action,
        scalars::ScalarExt,
        transaction::{CommitBuilder, CommitProperties, TableReference},
    },
    operations::write::WriterStatsConfig,
    protocol::{DeltaOperation, SaveMode},
};
use indexmap::IndexMap;

use super::{
    error::{LakeError, Result},
    writer::{ROW_GROUP_ROWS, TARGET_FILE_BYTES, cores, writer_properties},
};
use crate::tables::Table;

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
    let Some(first) = batches.first() else {
        return Err(LakeError::Schema { table, detail: "internal: nothing to write".into() });
    };
    let schema = first.schema();
    let partition_columns: Vec<String> = table.partition_columns().iter().map(|c| c.to_string()).collect();
    let snapshot = dt.snapshot().map_err(delta)?;
    let stats = WriterStatsConfig::from_config(snapshot.snapshot().table_configuration());
    let config = WriterConfig::new(
        schema.clone(),
        partition_columns.clone(),
        Some(writer_properties(table)),
        NonZeroU64::new(TARGET_FILE_BYTES),
        None,
        stats.num_indexed_cols,
        stats.stats_columns,
    );

    // Cut at partition boundaries.
    let key_indices: Vec<usize> = partition_columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<_, _>>()
        .map_err(|source| LakeError::Arrow { table, source })?;
    let mut slices = Vec::new();
    for batch in &batches {
        if key_indices.is_empty() {
            slices.push((IndexMap::new(), batch.clone()));
            continue;
        }
        let keys: Vec<_> = key_indices.iter().map(|&i| batch.column(i).clone()).collect();
        let ranges = partition(&keys).map_err(|source| LakeError::Arrow { table, source })?.ranges();
        for range in ranges {
            let values: Option<IndexMap<String, _>> = partition_columns
                .iter()
                .zip(&keys)
                .map(|(name, col)| {
                    ScalarExt::from_array(col.as_ref(), range.start).map(|v| (name.clone(), v))
                })
                .collect();
            let values = values.ok_or_else(|| LakeError::Schema {
                table,
                detail: "a partition value cannot be written as a Delta partition value".into(),
            })?;
            slices.push((values, batch.slice(range.start, range.end - range.start)));
        }
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
    // Files in a deterministic order in the log (the tasks finish in any order).
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
    Ok((next, u64::try_from(committed.version()).unwrap_or_default()))
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
