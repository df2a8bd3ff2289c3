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
    logical_expr::{Expr, TableProviderFilterPushDown},
    physical_plan::{ExecutionPlan, empty::EmptyExec},
};
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

    fn latest_known(&self) -> Option<Arc<dyn TableProvider>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.snapshot.as_ref().map(|s| Arc::clone(&s.provider))
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
                snapshot.provider.scan(state, projection, filters, limit).await
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
