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
    arrow::datatypes::SchemaRef,
    catalog::{Session, TableProvider},
    common::{DataFusionError, Result},
    datasource::TableType,
    datasource::{
        physical_plan::{
            FileScanConfig,
            parquet::metadata::{CachedParquetMetaData, DFParquetMetadata},
        },
        source::DataSourceExec,
    },
    execution::{cache::cache_manager::FileMetadataCache, object_store::ObjectStoreUrl},
    logical_expr::{Expr, TableProviderFilterPushDown},
    parquet::file::metadata::PageIndexPolicy,
    physical_plan::{ExecutionPlan, empty::EmptyExec},
};
use object_store::ObjectMeta;
use tenantscope_schemas::{Lake, Table, deltalake::DeltaTable};

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

    /// Puts the page indexes of the files `plan`'s filtered scans read into the session's
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

/// The Parquet files (store and metadata, as the scan will look them up) that filtered scans
/// under `plan` read.
fn collect_files(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<(ObjectStoreUrl, ObjectMeta)>) {
    // Only scans with a filter: the page index prunes pages for nothing else.
    if let Some(config) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        .filter(|config| config.file_source.filter().is_some())
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
                let plan = snapshot.provider.scan(state, projection, filters, limit).await?;
                self.warm_page_indexes(state, &plan);
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
            answer[i] = support;
        }
        Ok(answer)
    }
}
