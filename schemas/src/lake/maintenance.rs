//! Keeping the lake fast and bounded: compaction of the small files frequent flushes leave,
//! retention of telemetry by whole partitions, vacuum of files no version needs any more, and
//! checkpoints of the Delta log. Every operation is one Delta commit (or none), so readers and
//! concurrent appends see either the table before it or after it.

use std::num::NonZeroU64;

use deltalake::{
    DeltaTable,
    operations::optimize::OptimizeType,
    protocol::checkpoints::{cleanup_metadata, create_checkpoint},
};

use super::{Lake, LakeError, Result, TARGET_FILE_BYTES, writer_properties};
use crate::{columns::DATE, tables::Table};

/// Size and file count of a table's current version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableFiles {
    /// Data files the current version references.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Files and bytes before.
    pub before: TableFiles,
    /// Files and bytes after.
    pub after: TableFiles,
    /// Files written.
    pub files_added: u64,
    /// Files replaced.
    pub files_removed: u64,
    /// Partitions that had files merged.
    pub partitions: u64,
    /// The version the compaction committed (None: nothing to do).
    pub version: Option<u64>,
}

/// Partitions with more Parquet bytes than this are merged, not sorted: sorting reads the
/// whole partition into memory.
pub const SORT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// How compaction orders rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompactOrder {
    /// Rewrite each partition's rows sorted by the table's sort columns (tenant, then time), so
    /// that tenant and time filters prune row groups and pages as well as in freshly flushed
    /// files; partitions above [`SORT_MAX_BYTES`] and unpartitioned tables are merged instead.
    #[default]
    Sort,
    /// Merge files in their order (each flush's file is sorted by tenant and time, the merged
    /// file is a sequence of such runs). Streams: no partition is held in memory.
    Merge,
    /// Z-order the rows by the table's sort columns (tenant, time): files that each cover fewer
    /// tenants, so tenant filters skip more of them.
    ZOrder,
}

impl Lake {
    /// The data files (and bytes) of the table's current version.
    pub async fn files(&self, table: Table) -> Result<TableFiles> {
        if !self.exists(table).await? {
            return Ok(TableFiles::default());
        }
        let dt = self.reload(table).await?;
        Ok(files_of(&dt, table)?)
    }

    async fn reload(&self, table: Table) -> Result<DeltaTable> {
        let mut dt = self.table(table).await?;
        dt.update_state().await.map_err(|e| LakeError::delta(table, e))?;
        Ok(dt)
    }

    /// Merges the table's small files, per partition, into files of about the target size, in
    /// one commit (Delta's optimize). Appends that commit meanwhile are kept: only the files the
    /// compaction read are replaced.
    pub async fn compact(&self, table: Table, order: CompactOrder) -> Result<CompactReport> {
        if !self.exists(table).await? {
            return Ok(CompactReport::default());
        }
        let dt = self.reload(table).await?;
        let before = files_of(&dt, table)?;
        if order == CompactOrder::Sort && table.partition_columns().len() == 1 {
            return self.compact_sorted(table, dt, before).await;
        }
        let kind = match order {
            CompactOrder::Merge | CompactOrder::Sort => OptimizeType::Compact,
            CompactOrder::ZOrder => {
                OptimizeType::ZOrder(table.sort_columns().iter().map(|c| (*c).to_string()).collect())
            }
        };
        let (dt, metrics) = dt
            .optimize()
            .with_type(kind)
            .with_target_size(NonZeroU64::new(TARGET_FILE_BYTES).unwrap_or(NonZeroU64::MIN))
            .with_writer_properties(writer_properties(table))
            .with_max_concurrent_tasks(2)
            .await
            .map_err(|e| LakeError::delta(table, e))?;
        let after = files_of(&dt, table)?;
        let version = (metrics.num_files_removed > 0).then(|| dt.version()).flatten();
        tracing::info!(
            %table, files_before = before.files, files_after = after.files, bytes_before = before.bytes,
            bytes_after = after.bytes, partitions = metrics.partitions_optimized, ?version, "Compacted."
        );
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt);
        Ok(CompactReport {
            before,
            after,
            files_added: metrics.num_files_added,
            files_removed: metrics.num_files_removed,
            partitions: metrics.partitions_optimized,
            version,
        })
    }

    /// Sorted compaction: per partition with several files, its rows read from the snapshot the
    /// compaction started from, sorted, and written back replacing exactly the files read (one
    /// commit per partition). Appends committed meanwhile add files the compaction did not read
    /// and does not remove, so no row is lost or doubled.
    async fn compact_sorted(
        &self,
        table: Table,
        dt: DeltaTable,
        before: TableFiles,
    ) -> Result<CompactReport> {
        let column = table.partition_columns()[0];
        let mut partitions: std::collections::BTreeMap<Option<String>, (u64, u64)> = Default::default();
        for f in dt.snapshot().map_err(|e| LakeError::delta(table, e))?.log_data().iter() {
            let value = f.partition_values_map().remove(column).flatten();
            let e = partitions.entry(value).or_default();
            e.0 += 1;
            e.1 += f.size().max(0) as u64;
        }
        let mut report = CompactReport { before, ..Default::default() };
        let mut dt = dt;
        let mut merge_rest = false;
        for (value, (files, bytes)) in partitions {
            if files < 2 {
                continue;
            }
            let predicate = match &value {
                Some(v) => format!("{column} = '{}'", v.replace('\'', "''")),
                None => format!("{column} IS NULL"),
            };
            if bytes > SORT_MAX_BYTES {
                merge_rest = true;
                continue;
            }
            let batches =
                super::sql_over_snapshot(table, &dt, &format!("SELECT * FROM t WHERE {predicate}")).await?;
            let Some(sorted) = super::prepare(table, &batches)? else { continue };
            // The same snapshot as the read: the overwrite removes exactly the files read.
            let written = dt
                .clone()
                .write(sorted)
                .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
                .with_replace_where(predicate.clone())
                .with_writer_properties(writer_properties(table))
                .with_target_file_size(NonZeroU64::new(TARGET_FILE_BYTES))
                .await;
            let next = match written {
                Ok(next) => next,
                // Appends landed in this partition meanwhile (live ingest): Delta refused the
                // rewrite rather than lose them. Merge it instead, which appends do not disturb.
                Err(deltalake::DeltaTableError::Transaction {
                    source: deltalake::kernel::transaction::TransactionError::CommitConflict(_),
                }) => {
                    tracing::debug!(%table, partition = %predicate, "Partition written to during compaction; merging it instead.");
                    merge_rest = true;
                    dt.update_state().await.map_err(|e| LakeError::delta(table, e))?;
                    continue;
                }
                Err(e) => return Err(LakeError::delta(table, e)),
            };
            report.files_removed += files;
            report.partitions += 1;
            report.version = next.version();
            dt = next;
        }
        if merge_rest {
            // Partitions too large to sort in memory, or being written to: merged in order, streaming.
            let (next, metrics) = dt
                .optimize()
                .with_type(OptimizeType::Compact)
                .with_target_size(NonZeroU64::new(TARGET_FILE_BYTES).unwrap_or(NonZeroU64::MIN))
                .with_writer_properties(writer_properties(table))
                .with_max_concurrent_tasks(2)
                .await
                .map_err(|e| LakeError::delta(table, e))?;
            report.files_removed += metrics.num_files_removed;
            report.partitions += metrics.partitions_optimized;
            if metrics.num_files_removed > 0 {
                report.version = next.version();
            }
            dt = next;
        }
        report.after = files_of(&dt, table)?;
        report.files_added =
            (report.after.files + report.files_removed as usize).saturating_sub(report.before.files) as u64;
        tracing::info!(
            %table, files_before = report.before.files, files_after = report.after.files,
            bytes_before = report.before.bytes, bytes_after = report.after.bytes, partitions = report.partitions,
            version = ?report.version, "Compacted (sorted)."
        );
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt);
        Ok(report)
    }

    /// Removes the whole day partitions of a telemetry (or `usage`, `alerts`, `audit_log`)
    /// table before `keep_from` (UTC), in one commit. Returns the days removed.
    pub async fn expire(&self, table: Table, keep_from: chrono::NaiveDate) -> Result<Vec<chrono::NaiveDate>> {
        if table.partition_columns() != [DATE] {
            return Err(LakeError::Schema {
                table,
                detail: "retention applies to tables partitioned by day (date)".into(),
            });
        }
        if !self.exists(table).await? {
            return Ok(Vec::new());
        }
        let dt = self.reload(table).await?;
        let mut days: Vec<chrono::NaiveDate> = dt
            .snapshot()
            .map_err(|e| LakeError::delta(table, e))?
            .log_data()
            .iter()
            .filter_map(|f| {
                let day = f.partition_values_map().remove(DATE).flatten()?;
                chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").ok()
            })
            .filter(|d| *d < keep_from)
            .collect();
        days.sort();
        days.dedup();
        if days.is_empty() {
            return Ok(days);
        }
        // A predicate on the partition column only: Delta removes whole files, rewrites none.
        self.delete(table, &format!("{DATE} < '{keep_from}'")).await?;
        tracing::info!(%table, days = days.len(), first = %days[0], last = %days[days.len() - 1], "Expired partitions.");
        Ok(days)
    }

    /// Deletes the table's data files that no version newer than `retention` references (the
    /// files compaction and retention replaced, and orphans of failed writes). `retention` must
    /// exceed the longest query and the longest write: a file younger than that may be read by
    /// a query on an older version, or be a write not yet committed. Returns how many were
    /// deleted.
    pub async fn vacuum(&self, table: Table, retention: std::time::Duration) -> Result<usize> {
        if !self.exists(table).await? {
            return Ok(0);
        }
        let dt = self.reload(table).await?;
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
        let (dt, metrics) = dt
            .vacuum()
            // Full: every file in the table's folders that no version references, tombstoned or
            // orphaned (a write that failed before its commit), once older than `retention`.
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| LakeError::delta(table, e))?;
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt);
        tracing::info!(%table, files = metrics.files_deleted.len(), "Vacuumed.");
        Ok(metrics.files_deleted.len())
    }

    /// Writes a checkpoint of the table's log at its current version and deletes log entries
    /// older than the table's log retention (30 days by default), so that opening the table
    /// reads one Parquet checkpoint and a few JSON entries instead of every commit since it was
    /// created. (Appends also checkpoint every 100 commits by themselves.) Returns the number of
    /// log files deleted.
    pub async fn checkpoint(&self, table: Table) -> Result<usize> {
        if !self.exists(table).await? {
            return Ok(0);
        }
        let dt = self.reload(table).await?;
        create_checkpoint(&dt, None).await.map_err(|e| LakeError::delta(table, e))?;
        cleanup_metadata(&dt, None).await.map_err(|e| LakeError::delta(table, e))
    }
}

fn files_of(dt: &DeltaTable, table: Table) -> Result<TableFiles> {
    let snapshot = dt.snapshot().map_err(|e| LakeError::delta(table, e))?;
    let log = snapshot.log_data();
    Ok(TableFiles { files: log.num_files(), bytes: log.iter().map(|f| f.size().max(0) as u64).sum() })
}
