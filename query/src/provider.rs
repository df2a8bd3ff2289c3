//! A table provider that always answers from a recent committed snapshot of a Delta table.
//!
//! The Delta provider is bound to one table version. This one reloads the table's log when its
//! snapshot is older than `max_staleness` (checking the log is a LIST of the `_delta_log`
//! folder), so that a long-running server sees new commits without re-registering tables, and
//! a query never sees an uncommitted file.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use datafusion::{
    arrow::datatypes::{FieldRef, Schema, SchemaRef},
    catalog::{Session, TableProvider},
    common::{DFSchema, DataFusionError, Result, ScalarValue, Statistics, stats::Precision},
    config::TableParquetOptions,
    datasource::TableType,
    datasource::{
        listing::{ListingTableUrl, PartitionedFile},
        physical_plan::{
            FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
            parquet::{
                CachedParquetFileReaderFactory,
                metadata::{CachedParquetMetaData, DFParquetMetadata},
            },
        },
        source::DataSourceExec,
        table_schema::TableSchema,
    },
    execution::{cache::cache_manager::FileMetadataCache, object_store::ObjectStoreUrl},
    logical_expr::{Expr, TableProviderFilterPushDown, utils::conjunction},
    parquet::file::metadata::PageIndexPolicy,
    physical_optimizer::pruning::PruningPredicateBuilder,
    physical_plan::{ExecutionPlan, empty::EmptyExec},
};
use object_store::{ObjectMeta, path::Path as ObjectPath};
use tenantscope_schemas::{
    Lake, Table,
    deltalake::{self, DeltaTable},
};

#[derive(Clone)]
struct Snapshot {
    table: DeltaTable,
    provider: Arc<dyn TableProvider>,
}

struct Current {
    loaded_at: Instant,
    /// `None` while the table does not exist in the lake.
    snapshot: Option<Snapshot>,
}

/// A lake table as DataFusion sees it.
pub struct LakeTableProvider {
    lake: Lake,
    table: Table,
    schema: SchemaRef,
    max_staleness: Duration,
    current: Mutex<Current>,
}

impl std::fmt::Debug for LakeTableProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeTableProvider").field("table", &self.table).finish_non_exhaustive()
    }
}

impl LakeTableProvider {
    /// Opens the provider, loading the table's current snapshot if the table exists.
    pub async fn try_new(lake: Lake, table: Table, max_staleness: Duration) -> Result<Self> {
        let snapshot = load(&lake, table).await?;
        let schema = snapshot.as_ref().map_or_else(|| table.schema(), |s| s.provider.schema());
        Ok(Self {
            lake,
            table,
            schema,
            max_staleness,
            current: Mutex::new(Current { loaded_at: Instant::now(), snapshot }),
        })
    }

    /// The provider for a snapshot at most `max_staleness` old.
    async fn fresh(&self) -> Result<Option<Snapshot>> {
        {
            // Fresh enough, and nothing committed through this process's lake handle since:
            // a write made here (an import over HTTP) is visible to the next query at once.
            let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let version = current.snapshot.as_ref().and_then(|s| s.table.version());
            if current.loaded_at.elapsed() <= self.max_staleness
                && version == self.lake.known_version(self.table)
            {
                return Ok(current.snapshot.clone());
            }
        }
        let snapshot = load(&self.lake, self.table).await?;
        if let Some(s) = &snapshot {
            if s.provider.schema().fields() != self.schema.fields() {
                return Err(DataFusionError::Plan(format!(
                    "the schema of table {} changed while this session was open; run the query again",
                    self.table
                )));
            }
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Current { loaded_at: Instant::now(), snapshot: snapshot.clone() };
        Ok(snapshot)
    }

    /// The table version a query would read now (refreshing the snapshot if it is stale).
    pub async fn version(&self) -> Result<Option<u64>> {
        Ok(self.fresh().await?.and_then(|s| s.table.version()))
    }

    /// Puts the page indexes of the files `plan` reads (a scan with filters) into the session's
    /// Parquet metadata cache, in the background, where they are not yet.
    ///
    /// DataFusion's Parquet opener asks for a file's footer without its page index, and loads
    /// the page index itself only when a filter can use it, without caching it: so every query
    /// with a tenant or time filter decoded the page index of every file again (a quarter of the
    /// CPU of a one-tenant count over the bill). A footer cached *with* its page index is
    /// returned as is, and the opener skips the load. The file list comes from the Delta scan's
    /// own plan, so the cache keys (path, size, modification time) are the ones it looks up.
    fn warm_page_indexes(&self, state: &dyn Session, plan: &Arc<dyn ExecutionPlan>) {
        let mut files: Vec<(ObjectStoreUrl, ObjectMeta)> = Vec::new();
        collect_files(plan, &mut files);
        let runtime = Arc::clone(state.runtime_env());
        let cache = runtime.cache_manager.get_file_metadata_cache();
        // Asked of the cache itself (each session's runtime has its own): files already there
        // with their page index cost a lookup.
        files.retain(|(_, meta)| !has_page_index(cache.as_ref(), meta));
        if files.is_empty() {
            return;
        }
        let table = self.table;
        tokio::spawn(async move {
            for (url, meta) in files {
                let warmed = async {
                    let store = runtime.object_store(&url)?;
                    DFParquetMetadata::new(store.as_ref(), &meta)
                        .with_file_metadata_cache(Some(Arc::clone(&cache)))
                        .with_page_index_policy(Some(PageIndexPolicy::Optional))
                        .fetch_metadata()
                        .await
                };
                if let Err(e) = warmed.await {
                    // Only slower: the scan reads the page index itself.
                    tracing::debug!(%table, file = %meta.location, error = %e, "page index not cached");
                }
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                let entries = cache.list_entries();
                let bytes: usize = entries.values().map(|e| e.size_bytes).sum();
                tracing::debug!(%table, files = entries.len(), bytes, limit = cache.cache_limit(), "metadata cache");
            }
        });
    }

    fn latest_known(&self) -> Option<Arc<dyn TableProvider>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.snapshot.as_ref().map(|s| Arc::clone(&s.provider))
    }
}

/// Whether `cache` holds `meta`'s footer with its page index.
fn has_page_index(cache: &FileMetadataCache, meta: &ObjectMeta) -> bool {
    cache.get(&meta.location).is_some_and(|entry| {
        entry.is_valid_for(meta)
            && entry.file_metadata.as_any().downcast_ref::<CachedParquetMetaData>().is_some_and(|m| {
                m.parquet_metadata().column_index().is_some() && m.parquet_metadata().offset_index().is_some()
            })
    })
}

/// The Parquet files (store and metadata, as the scan will look them up) that the scans under
/// `plan` read.
fn collect_files(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<(ObjectStoreUrl, ObjectMeta)>) {
    if let Some(config) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
    {
        for group in &config.file_groups {
            for file in group.files() {
                out.push((config.object_store_url.clone(), file.object_meta.clone()));
            }
        }
    }
    for child in plan.children() {
        collect_files(child, out);
    }
}

/// The columns `table`'s files are laid out by: partitions, the sort order within files, and the
/// columns with min/max statistics in the Delta log.
fn layout_columns(table: Table) -> Vec<&'static str> {
    let mut cols = table.stats_columns();
    cols.extend(table.partition_columns());
    cols
}

async fn load(lake: &Lake, table: Table) -> Result<Option<Snapshot>> {
    let external = |e: tenantscope_schemas::LakeError| DataFusionError::External(Box::new(e));
    if !lake.exists(table).await.map_err(external)? {
        return Ok(None);
    }
    let dt = lake.table(table).await.map_err(external)?;
    let provider = dt.table_provider().await.map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(Some(Snapshot { table: dt, provider }))
}

#[async_trait]
impl TableProvider for LakeTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match self.fresh().await? {
            Some(snapshot) => {
                snapshot
                    .table
                    .update_datafusion_session(state)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let plan = match parquet_scan(
                    &snapshot.table,
                    &self.schema,
                    self.table,
                    state,
                    projection,
                    filters,
                    limit,
                )? {
                    Some(plan) => plan,
                    None => snapshot.provider.scan(state, projection, filters, limit).await?,
                };
                // Only scans with a filter: the page index prunes pages for nothing else.
                if !filters.is_empty() {
                    self.warm_page_indexes(state, &plan);
                }
                Ok(plan)
            }
            None => {
                let schema = match projection {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => Arc::clone(&self.schema),
                };
                Ok(Arc::new(EmptyExec::new(schema)))
            }
        }
    }

    /// Only filters over the columns the table is laid out by (partition, sort and Delta
    /// statistics columns) go down to the Delta scan, which prunes files, row groups and pages
    /// with them and filters rows while decoding. Any other filter (`kind = 'server'`,
    /// `status_code = 'error'`) matches rows scattered through every row group: DataFusion
    /// evaluates it above the scan (still pruning row groups by statistics where it can), as
    /// filtering row by row through so fragmented a selection is slower than decoding whole
    /// columns (see `engine.rs`).
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        let Some(provider) = self.latest_known() else {
            return Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()]);
        };
        let layout = layout_columns(self.table);
        let down: Vec<usize> = (0..filters.len())
            .filter(|&i| filters[i].column_refs().iter().all(|c| layout.contains(&c.name.as_str())))
            .collect();
        let pushed: Vec<&Expr> = down.iter().map(|&i| filters[i]).collect();
        let mut answer = vec![TableProviderFilterPushDown::Unsupported; filters.len()];
        for (i, support) in down.into_iter().zip(provider.supports_filters_pushdown(&pushed)?) {
            // Never `Exact`: `parquet_scan` prunes with them and filters rows while decoding, but
            // DataFusion keeps its own filter above the scan (removed again when the scan takes
            // the filter over), so no answer depends on how exactly a scan applies it.
            answer[i] = match support {
                TableProviderFilterPushDown::Exact => TableProviderFilterPushDown::Inexact,
                other => other,
            };
        }
        Ok(answer)
    }
}

/// The scan of `dt`'s snapshot as DataFusion's own Parquet scan over the snapshot's files, or
/// `None` where the table uses a Delta feature only deltalake's scan reads (column mapping, or
/// a deletion vector on a file the query reads) or its schema is not laid out as the scan would
/// produce it.
///
/// Why not deltalake's scan: it tags every row with the id of its file (a dictionary column the
/// Parquet reader fills per batch) and splits each batch back into runs by file to add the
/// partition values. Tenantscope writes its tables itself: no deletion vectors, no column
/// mapping, partition columns last. For those the file list, their partition values and the
/// Delta statistics are all a scan needs, and DataFusion adds the partition values as
/// constants. A scan over 20M spans (`GROUP BY tenant_id, service_name`) spent ~6% of its CPU
/// on the file-id column (benches/RESULTS.md).
///
/// Files are pruned here with the Delta log's statistics and partition values (one
/// `PruningPredicate` over the whole snapshot); row groups and pages by the Parquet scan with
/// the same filters, which it also applies to rows while decoding, as deltalake's scan does.
fn parquet_scan(
    dt: &DeltaTable,
    schema: &SchemaRef,
    table: Table,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let external = |e: deltalake::DeltaTableError| DataFusionError::External(Box::new(e));
    let snapshot = dt.snapshot().map_err(external)?.snapshot();
    let mapped = snapshot
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .is_some_and(|mode| mode != "none");
    let partition_names = table.partition_columns();
    let width = schema.fields().len();
    let laid_out = width >= partition_names.len()
        && schema.fields()[width - partition_names.len()..]
            .iter()
            .zip(partition_names)
            .all(|(f, name)| f.name() == name)
        && snapshot
            .metadata()
            .partition_columns()
            .iter()
            .map(String::as_str)
            .eq(partition_names.iter().copied());
    if mapped || !laid_out {
        return Ok(None);
    }
    let log = snapshot.log_data();

    let df_schema = DFSchema::try_from(Arc::clone(schema))?;
    let predicate = match conjunction(filters.iter().cloned()) {
        Some(expr) => Some(state.create_physical_expr(expr, &df_schema)?),
        None => None,
    };
    let keep = match &predicate {
        // Statistics the log lacks, or values it cannot compare, keep the file.
        Some(p) => PruningPredicateBuilder::new()
            .with_file_schema(Arc::clone(schema))
            .with_max_in_list_size(state.config_options().execution.parquet.max_in_list_size)
            .try_build(Arc::clone(p))
            .and_then(|pruning| pruning.prune(snapshot))
            .unwrap_or_else(|e| {
                tracing::debug!(%table, error = %e, "files not pruned by the Delta statistics");
                vec![true; log.num_files()]
            }),
        None => vec![true; log.num_files()],
    };

    // The store and path prefix of the table's root, as deltalake registered the store.
    let root = ListingTableUrl::parse(dt.log_store().root_url().as_str())?;
    let store_url = root.object_store();
    let partition_fields: Vec<FieldRef> = schema.fields()[width - partition_names.len()..].to_vec();
    let file_schema = Arc::new(Schema::new(schema.fields()[..width - partition_names.len()].to_vec()));
    let mut files = Vec::new();
    let mut rows = Some(0usize);
    let mut bytes = 0usize;
    for (f, keep) in log.iter().zip(keep) {
        if !keep {
            continue;
        }
        if f.deletion_vector_descriptor().is_some() {
            return Ok(None);
        }
        let mut values = f.partition_values_map();
        let partition_values = partition_fields
            .iter()
            .map(|field| match values.remove(field.name()).flatten() {
                Some(v) => ScalarValue::try_from_string(v, field.data_type()),
                None => ScalarValue::try_from(field.data_type()),
            })
            .collect::<Result<Vec<_>>>()?;
        let location = ObjectPath::from_iter(root.prefix().parts().chain(f.object_store_path().parts()));
        let size = f.size().max(0) as u64;
        let num_rows = f.num_records();
        rows = rows.zip(num_rows).map(|(a, b)| a + b);
        bytes += size as usize;
        let mut file = PartitionedFile::new_from_meta(ObjectMeta {
            location,
            last_modified: chrono::DateTime::from_timestamp_millis(f.modification_time()).unwrap_or_default(),
            size,
            e_tag: None,
            version: None,
        })
        .with_partition_values(partition_values);
        let mut stats = Statistics::new_unknown(schema);
        stats.num_rows = num_rows.map_or(Precision::Absent, Precision::Exact);
        stats.total_byte_size = Precision::Inexact(size as usize);
        file.statistics = Some(Arc::new(stats));
        files.push(file);
    }
    if files.is_empty() {
        let projected = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => Arc::clone(schema),
        };
        return Ok(Some(Arc::new(EmptyExec::new(projected))));
    }
    let mut statistics = Statistics::new_unknown(schema);
    statistics.num_rows = rows.map_or(Precision::Absent, Precision::Exact);
    statistics.total_byte_size = Precision::Inexact(bytes);

    let store = state.runtime_env().object_store(&store_url)?;
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let mut source = ParquetSource::new(
        TableSchema::builder(file_schema).with_table_partition_cols(partition_fields).build(),
    )
    .with_table_parquet_options(TableParquetOptions {
        global: state.config_options().execution.parquet.clone(),
        ..Default::default()
    })
    .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(store, cache)));
    if predicate.is_some() {
        // The filters DataFusion handed down are over layout columns (`supports_filters_pushdown`):
        // their matches are contiguous, so filtering rows while decoding pays. They are not
        // given to the source here: every one is `Inexact`, so DataFusion's filter above the
        // scan holds them, and its filter pushdown hands them (with any other filter of the
        // query) to the source for pruning row groups and pages and for filtering rows. Given
        // here too, each would be evaluated twice per row.
        source = source.with_pushdown_filters(true);
    }
    let config = FileScanConfigBuilder::new(store_url, Arc::new(source))
        .with_file_group(FileGroup::new(files))
        .with_statistics(statistics)
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    Ok(Some(DataSourceExec::from_data_source(config)))
}
