//! The lake handle: every table of [`Table`] as a Delta table under one URL, opened or created
//! on first use; the one place that writes Parquet.

mod audit;
mod error;
mod files;
mod location;
mod maintenance;
mod order;
mod writer;

use std::{
    collections::HashMap,
    num::NonZeroU64,
    sync::{Arc, Mutex},
};

use arrow::array::RecordBatch;
use deltalake::{
    DeltaTable, DeltaTableBuilder,
    datafusion::{datasource::MemTable, error::DataFusionError, prelude::SessionContext},
    kernel::{
        StructType, Transaction, engine::arrow_conversion::TryIntoKernel, transaction::CommitProperties,
    },
    protocol::SaveMode,
};
use object_store::ObjectStore;

pub use audit::{AuditEvent, Auditor, audit_batch};
pub use error::{LakeError, Result};
pub use files::{FileWriter, WrittenFiles};
pub use location::{LakeLocation, register_cloud_stores};
pub use maintenance::{CompactOrder, CompactReport, SORT_MAX_BYTES, TableFiles};
pub use writer::{PAGE_ROWS, ROW_GROUP_ROWS, TARGET_FILE_BYTES, prepare, writer_properties};

use crate::tables::Table;

/// What one append committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// The table version the append created.
    pub version: u64,
    /// Rows written.
    pub rows: usize,
}

/// A handle on the lake. Cheap to clone; clones share the cache of opened tables.
#[derive(Clone)]
pub struct Lake {
    location: LakeLocation,
    store: Arc<dyn ObjectStore>,
    prefix: object_store::path::Path,
    tables: Arc<Mutex<HashMap<Table, DeltaTable>>>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("location", &self.location).finish_non_exhaustive()
    }
}

impl Lake {
    /// Opens the lake at `location`, creating a local folder if needed, and checks that the
    /// storage answers (so that a wrong URL or bucket fails here, with its name, not later).
    pub async fn open(location: LakeLocation) -> Result<Self> {
        register_cloud_stores();
        if let Some(path) = location.local_path() {
            std::fs::create_dir_all(&path)
                .map_err(|source| LakeError::CreateDir { path: path.display().to_string(), source })?;
        }
        let (store, prefix) = location.object_store()?;
        let lake = Self { location, store, prefix, tables: Arc::default() };
        lake.check().await?;
        Ok(lake)
    }

    /// Checks that the lake's storage answers (one LIST of its root).
    pub async fn check(&self) -> Result<()> {
        self.store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|source| LakeError::Unreachable { url: self.location.to_string(), source })?;
        Ok(())
    }

    /// Parses `url` (see [`LakeLocation::parse`]) and opens it.
    pub async fn open_url(url: &str) -> Result<Self> {
        Self::open(LakeLocation::parse(url)?).await
    }

    /// Where the lake is.
    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// The object store at the lake's root.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// Whether a table has been created (has a Delta log) in the lake.
    pub async fn exists(&self, table: Table) -> Result<bool> {
        if self.cached(table).is_some() {
            return Ok(true);
        }
        let log = self.prefix.clone().join(table.name()).join("_delta_log");
        let listing = self
            .store
            .list_with_delimiter(Some(&log))
            .await
            .map_err(|source| LakeError::Unreachable { url: self.location.to_string(), source })?;
        Ok(listing.objects.iter().any(|o| o.location.as_ref().ends_with(".json")))
    }

    /// The table at its latest committed version, created (empty) if it does not exist.
    pub async fn table(&self, table: Table) -> Result<DeltaTable> {
        let mut dt = match self.cached(table) {
            Some(dt) => dt,
            None => self.open_or_create(table).await?,
        };
        dt.update_state().await.map_err(|e| LakeError::delta(table, e))?;
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt.clone());
        Ok(dt)
    }

    /// Creates every table that does not exist yet.
    pub async fn create_all(&self) -> Result<()> {
        for table in Table::ALL {
            self.table(table).await?;
        }
        Ok(())
    }

    /// Appends batches to a table in one Delta commit. Columns are conformed to the table's
    /// schema and rows sorted (see [`prepare`]). Returns `None` when there were no rows.
    ///
    /// Several writers (threads, processes, machines) may append to the same table at once:
    /// each commit is a new log entry written with put-if-absent, and a writer that loses the
    /// race re-checks and retries on the next version.
    pub async fn append(&self, table: Table, batches: &[RecordBatch]) -> Result<Option<Commit>> {
        self.append_with(table, batches, CommitProperties::default()).await
    }

    /// Appends like [`Lake::append`] and records, in the same commit, that application `app_id`
    /// has written everything up to `version` (a Delta application transaction). A writer that
    /// replays its own log after a crash asks [`Lake::app_version`] what is already in, so
    /// that nothing is written twice.
    pub async fn append_as(
        &self,
        table: Table,
        batches: &[RecordBatch],
        app_id: &str,
        version: u64,
    ) -> Result<Option<Commit>> {
        let version = i64::try_from(version).map_err(|_| LakeError::Schema {
            table,
            detail: format!("application version {version} > i64"),
        })?;
        let properties =
            CommitProperties::default().with_application_transaction(Transaction::new(app_id, version));
        self.append_with(table, batches, properties).await
    }

    /// The last version application `app_id` committed to `table` with [`Lake::append_as`].
    pub async fn app_version(&self, table: Table, app_id: &str) -> Result<Option<u64>> {
        let dt = self.table(table).await?;
        let state = dt.snapshot().map_err(|e| LakeError::delta(table, e))?;
        let version = state
            .transaction_version(dt.log_store().as_ref(), app_id)
            .await
            .map_err(|e| LakeError::delta(table, e))?;
        Ok(version.and_then(|v| u64::try_from(v).ok()))
    }

    async fn append_with(
        &self,
        table: Table,
        batches: &[RecordBatch],
        properties: CommitProperties,
    ) -> Result<Option<Commit>> {
        let Some(batches) = prepare(table, batches)? else {
            return Ok(None);
        };
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let dt = match self.cached(table) {
            Some(dt) => dt,
            None => self.table(table).await?,
        };
        let (dt, version) =
            files::write_and_commit(table, &dt, batches, files::append_operation(table), properties).await?;
        tracing::debug!(%table, rows, version, "Committed append.");
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt);
        Ok(Some(Commit { version, rows }))
    }

    /// Replaces the rows of `table` that match `predicate` (SQL, e.g. `source = 'x' AND
    /// billing_period = '2026-11-01'`) with `batches`, in one Delta commit: a reader sees the old
    /// rows or the new ones, never both or neither. Every new row must match the predicate.
    pub async fn replace(
        &self,
        table: Table,
        batches: &[RecordBatch],
        predicate: &str,
    ) -> Result<Option<Commit>> {
        let Some(batches) = prepare(table, batches)? else {
            return Ok(None);
        };
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let dt = self.table(table).await?;
        // Most imports replace nothing (a new source or period): written on every core and
        // committed as a replace, so that a concurrent commit adding rows the predicate matches
        // still conflicts. A restatement goes through deltalake's replace, which rewrites the
        // files holding rows of the slice.
        if !self.any_row_matches(table, &dt, predicate).await? {
            // deltalake's replace checks that every new row matches the predicate; so does this
            // path, or rows outside it would survive the next replace of the same slice.
            let outside = rows_outside(&batches, predicate).await?;
            if outside > 0 {
                return Err(LakeError::Schema {
                    table,
                    detail: format!("{outside} new rows do not match the replace predicate {predicate}"),
                });
            }
            let operation = files::replace_operation(table, predicate);
            let (dt, version) =
                files::write_and_commit(table, &dt, batches, operation, CommitProperties::default()).await?;
            tracing::debug!(%table, rows, version, predicate, "Committed replace (nothing replaced).");
            self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt);
            return Ok(Some(Commit { version, rows }));
        }
        let dt = dt
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(predicate)
            .with_writer_properties(writer_properties(table))
            .with_target_file_size(NonZeroU64::new(TARGET_FILE_BYTES))
            .await
            .map_err(|e| LakeError::delta(table, e))?;
        let version = dt.version().unwrap_or_default();
        tracing::debug!(%table, rows, version, predicate, "Committed replace.");
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt);
        Ok(Some(Commit { version, rows }))
    }

    /// Starts a replace of the slice of `table` that `covering` (SQL) matches, when the table's
    /// latest snapshot holds no row of it (a new source or period): the new rows can then be
    /// written as they are made, by [`SliceWrite::writer`]s, and committed at the end by
    /// [`Lake::commit_slice`], without holding them all in memory. `None` when the snapshot holds
    /// rows `covering` matches: those must be replaced with [`Lake::replace`].
    pub async fn start_slice_write(&self, table: Table, covering: &str) -> Result<Option<SliceWrite>> {
        let dt = self.table(table).await?;
        if self.any_row_matches(table, &dt, covering).await? {
            return Ok(None);
        }
        let config = files::writer_config(table, &dt)?;
        Ok(Some(SliceWrite { table, dt, config }))
    }

    /// Commits the files written for `write` as a replace of the rows `predicate` matches, in one
    /// Delta transaction. `predicate` must match every row written and be narrower than the
    /// `covering` predicate the write was started with; the snapshot the write started from is
    /// checked again for rows it matches (none, unless it is not narrower: an error). A commit
    /// that landed since and added rows `predicate` matches is a conflict. `None` when no rows
    /// were written.
    pub async fn commit_slice(
        &self,
        write: &SliceWrite,
        files: Vec<WrittenFiles>,
        predicate: &str,
    ) -> Result<Option<Commit>> {
        let table = write.table;
        let rows: usize = files.iter().map(WrittenFiles::rows).sum();
        if rows == 0 {
            write.discard(files).await?;
            return Ok(None);
        }
        if self.any_row_matches(table, &write.dt, predicate).await? {
            write.discard(files).await?;
            return Err(LakeError::Schema {
                table,
                detail: format!("internal: the slice {predicate} was not empty when its write started"),
            });
        }
        let adds: Vec<_> = files.into_iter().flat_map(|f| f.adds).collect();
        let operation = files::replace_operation(table, predicate);
        let committed =
            files::commit(table, &write.dt, adds.clone(), operation, CommitProperties::default()).await;
        let (dt, version) = match committed {
            Ok(done) => done,
            Err(e) => {
                // Refused (a conflict): the files are nobody's. A failed write of the log entry
                // may still have landed, so its files stay (vacuum removes them if not).
                if refused(&e)
                    && let Err(discard) = write.discard(vec![WrittenFiles { adds, rows }]).await
                {
                    tracing::warn!(%table, error = %discard, "Could not delete the files of a refused commit.");
                }
                return Err(e);
            }
        };
        tracing::debug!(%table, rows, version, predicate, "Committed replace of an empty slice.");
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt);
        Ok(Some(Commit { version, rows }))
    }

    /// Deletes the rows of `table` that match `predicate` (SQL) in one Delta commit. Returns the
    /// number of rows deleted, when Delta counted them (whole-file deletes may not).
    pub async fn delete(&self, table: Table, predicate: &str) -> Result<Option<usize>> {
        if !self.exists(table).await? {
            return Ok(Some(0));
        }
        let dt = self.table(table).await?;
        let (dt, metrics) =
            dt.delete().with_predicate(predicate).await.map_err(|e| LakeError::delta(table, e))?;
        tracing::debug!(%table, predicate, rows = ?metrics.num_deleted_rows, "Committed delete.");
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(table, dt);
        Ok(metrics.num_deleted_rows)
    }

    /// Whether the snapshot `dt` of `table` holds a row matching `predicate` (SQL).
    async fn any_row_matches(&self, table: Table, dt: &DeltaTable, predicate: &str) -> Result<bool> {
        let files = dt.snapshot().map_err(|e| LakeError::delta(table, e))?.snapshot().log_data().num_files();
        if files == 0 {
            return Ok(false);
        }
        let found =
            sql_over_snapshot(table, dt, &format!("SELECT 1 FROM t WHERE {predicate} LIMIT 1")).await?;
        Ok(found.iter().any(|b| b.num_rows() > 0))
    }

    /// Runs SQL over `tables` (those that exist) with a throwaway DataFusion session: for
    /// writers that need to look something up (earlier imports, the tenants' accounts). Only
    /// the named tables' logs are read. The query service has its own long-lived session.
    pub async fn query(&self, tables: &[Table], sql: &str) -> Result<Vec<RecordBatch>> {
        let ctx = SessionContext::new();
        for &table in tables {
            if !self.exists(table).await? {
                continue;
            }
            register(&ctx, table, table.name(), &self.table(table).await?, sql).await?;
        }
        collect(&ctx, sql).await
    }

    /// The latest version of `table` this handle (or a clone of it) has seen or committed,
    /// without reading the lake.
    pub fn known_version(&self, table: Table) -> Option<u64> {
        self.cached(table).and_then(|dt| dt.version())
    }

    fn cached(&self, table: Table) -> Option<DeltaTable> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).get(&table).cloned()
    }

    fn builder(&self, table: Table) -> Result<DeltaTableBuilder> {
        DeltaTableBuilder::from_url(self.location.table_url(table.name()))
            .map_err(|e| LakeError::delta(table, e))
    }

    /// A table written by an older tenantscope lacks the nullable columns added since (for
    /// example `audit_log.statement`): they are added, as a metadata-only commit, so that new
    /// rows can be appended; old rows read them as NULL.
    async fn add_missing_columns(&self, table: Table, dt: DeltaTable) -> Result<DeltaTable> {
        let current = dt.snapshot().map_err(|e| LakeError::delta(table, e))?.schema();
        let wanted: StructType =
            table.schema().as_ref().try_into_kernel().map_err(|source| LakeError::Arrow { table, source })?;
        let missing: Vec<_> = wanted
            .fields()
            .filter(|f| f.is_nullable() && current.field(f.name()).is_none())
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(dt);
        }
        let names: Vec<String> = missing.iter().map(|f| f.name().to_string()).collect();
        let dt = dt.add_columns().with_fields(missing).await.map_err(|e| LakeError::delta(table, e))?;
        tracing::info!(%table, columns = ?names, "Added the columns this version writes to an older table.");
        Ok(dt)
    }

    async fn open_or_create(&self, table: Table) -> Result<DeltaTable> {
        let mut dt = self.builder(table)?.build().map_err(|e| LakeError::delta(table, e))?;
        if self.exists(table).await? {
            dt.load().await.map_err(|e| LakeError::delta(table, e))?;
            return self.add_missing_columns(table, dt).await;
        }
        let schema: StructType =
            table.schema().as_ref().try_into_kernel().map_err(|source| LakeError::Arrow { table, source })?;
        let stats = table.stats_columns().join(",");
        let created = dt
            .create()
            .with_table_name(table.name())
            .with_comment(format!("tenantscope {} table", table.name()))
            .with_columns(schema.fields().cloned())
            .with_partition_columns(table.partition_columns().iter().copied())
            .with_configuration([("delta.dataSkippingStatsColumns", Some(stats))])
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(dt) => {
                tracing::info!(%table, url = %self.location.table_url(table.name()), "Created table.");
                Ok(dt)
            }
            // Another writer created it between our load and our create: use theirs.
            Err(first) => {
                let mut dt = self.builder(table)?.build().map_err(|e| LakeError::delta(table, e))?;
                dt.load().await.map_err(|_| LakeError::delta(table, first))?;
                Ok(dt)
            }
        }
    }
}

/// Whether a failed commit surely wrote no log entry: deltalake refused it (a conflict, a
/// version taken at every attempt, an action the table does not allow) before writing.
fn refused(e: &LakeError) -> bool {
    use deltalake::{DeltaTableError, kernel::transaction::TransactionError};
    matches!(e, LakeError::Delta { source, .. } if matches!(
        source.as_ref(),
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_)
                | TransactionError::MaxCommitAttempts(_)
                | TransactionError::DeltaTableAppendOnly
                | TransactionError::UnsupportedTableFeatures(_)
                | TransactionError::TableFeaturesRequired(_)
                | TransactionError::SerializeLogJson { .. }
        }
    ))
}

/// A replace of an empty slice of a table, its rows written as they come (see
/// [`Lake::start_slice_write`]).
pub struct SliceWrite {
    table: Table,
    dt: DeltaTable,
    config: deltalake::datafile::writer::WriterConfig,
}

impl SliceWrite {
    /// A writer of data files for this write: one a thread, each given its rows in the lake's
    /// order (each writer's files are sorted on their own).
    pub fn writer(&self) -> FileWriter {
        FileWriter::new(self.table, self.dt.log_store().object_store(None), self.config.clone())
    }

    /// Deletes files written for this write that will not be committed (the import was
    /// rejected, or failed).
    pub async fn discard(&self, files: Vec<WrittenFiles>) -> Result<()> {
        files::delete_files(self.table, &self.dt.log_store().object_store(None), files).await
    }
}

/// Registers the snapshot `dt` of `table` in `ctx` as `name` (errors name `sql`, the query it
/// is for).
async fn register(ctx: &SessionContext, table: Table, name: &str, dt: &DeltaTable, sql: &str) -> Result<()> {
    let err = |e: DataFusionError| LakeError::Query { sql: sql.to_string(), reason: e.to_string() };
    dt.update_datafusion_session(&ctx.state()).map_err(|e| LakeError::delta(table, e))?;
    ctx.register_table(name, dt.table_provider().await.map_err(err)?).map_err(err)?;
    Ok(())
}

/// Runs `sql` in `ctx` to the end.
async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let err = |e: DataFusionError| LakeError::Query { sql: sql.to_string(), reason: e.to_string() };
    ctx.sql(sql).await.map_err(err)?.collect().await.map_err(err)
}

/// Runs `sql` over the snapshot `dt` of `table`, named `t`: the snapshot a commit is then
/// built against, not whatever the lake holds by then.
async fn sql_over_snapshot(table: Table, dt: &DeltaTable, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    register(&ctx, table, "t", dt, sql).await?;
    collect(&ctx, sql).await
}

/// How many of `batches`' rows `predicate` (SQL) does not hold for (false or NULL).
async fn rows_outside(batches: &[RecordBatch], predicate: &str) -> Result<usize> {
    let Some(first) = batches.first() else { return Ok(0) };
    let sql = format!("SELECT count(*) FROM new_rows WHERE ({predicate}) IS NOT TRUE");
    let err = |e: DataFusionError| LakeError::Query { sql: sql.clone(), reason: e.to_string() };
    let ctx = SessionContext::new();
    let rows = MemTable::try_new(first.schema(), vec![batches.to_vec()]).map_err(err)?;
    ctx.register_table("new_rows", Arc::new(rows)).map_err(err)?;
    let out = collect(&ctx, &sql).await?;
    let count = out
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().map(|a| a.value(0)))
        .unwrap_or(0);
    Ok(usize::try_from(count).unwrap_or(0))
}
