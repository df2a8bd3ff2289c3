//! Views kept as tables: a query over lake tables, computed when first read and kept until one
//! of those tables has a new committed version (an import, a compaction). Between two versions
//! every read answers from the kept rows, never rescanning the raw table; the first read after a
//! change pays for one scan. Used where a question over raw billing lines has a small answer
//! users ask often (`tenant_resources`).

use std::sync::Arc;

use arrow::{array::RecordBatch, datatypes::SchemaRef};
use async_trait::async_trait;
use datafusion::{
    catalog::{Session, TableProvider},
    datasource::{TableType, memory::MemorySourceConfig},
    error::Result,
    execution::runtime_env::RuntimeEnv,
    logical_expr::Expr,
    physical_plan::ExecutionPlan,
    prelude::{SessionConfig, SessionContext},
};

use crate::provider::LakeTableProvider;

/// `tenant_resources`: per billing period, each resource the billing lines name, with the
/// lines' tenant (as imported: NULL for shared lines), service, line count, billed and effective
/// cost per currency, and the first and last hour charged.
pub const TENANT_RESOURCES: &str = "SELECT billing_period, tenant_id, resource_id, \
    max(resource_name) AS resource_name, max(service_name) AS service_name, \
    upper(billing_currency) AS currency, count(*) AS lines, \
    sum(billed_cost) AS billed_cost, sum(effective_cost) AS effective_cost, \
    min(charge_period_start) AS first_charge, max(charge_period_end) AS last_charge \
    FROM billing WHERE resource_id IS NOT NULL \
    GROUP BY billing_period, tenant_id, resource_id, upper(billing_currency)";

/// Batches computed from lake tables, kept for the versions of the tables they were computed
/// from (`tenant_resources`, `cost_allocation`).
#[derive(Default)]
pub struct KeptBatches(tokio::sync::Mutex<Option<(Vec<Option<u64>>, Vec<RecordBatch>)>>);

impl KeptBatches {
    /// The kept batches if `inputs` are still at the versions they were computed from, else
    /// `compute`'s (then kept). Readers arriving during a computation wait for it rather than
    /// compute again. The versions are read before computing: a commit landing meanwhile makes
    /// the next read compute again rather than keep rows that may predate it.
    pub async fn get(
        &self,
        inputs: &[&LakeTableProvider],
        compute: impl Future<Output = Result<Vec<RecordBatch>>>,
    ) -> Result<Vec<RecordBatch>> {
        let mut versions = Vec::with_capacity(inputs.len());
        for p in inputs {
            versions.push(p.version().await?);
        }
        let mut kept = self.0.lock().await;
        if let Some((v, batches)) = kept.as_ref() {
            if *v == versions {
                return Ok(batches.clone());
            }
        }
        let batches = compute.await?;
        *kept = Some((versions, batches.clone()));
        Ok(batches)
    }
}

/// A query over lake tables whose answer is kept per set of table versions.
pub struct MaterializedView {
    sql: &'static str,
    inputs: Vec<(&'static str, Arc<LakeTableProvider>)>,
    runtime: Arc<RuntimeEnv>,
    schema: SchemaRef,
    kept: KeptBatches,
}

impl std::fmt::Debug for MaterializedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaterializedView").field("sql", &self.sql).finish_non_exhaustive()
    }
}

impl MaterializedView {
    /// The view of `sql` over the tables `inputs` (by the names `sql` uses). Plans `sql` once to
    /// know its schema, so a mistake in it fails here rather than at the first read.
    pub async fn try_new(
        sql: &'static str,
        inputs: Vec<(&'static str, Arc<LakeTableProvider>)>,
        runtime: Arc<RuntimeEnv>,
    ) -> Result<Self> {
        let ctx = session(&inputs, &runtime)?;
        let schema = Arc::new(ctx.sql(sql).await?.schema().as_arrow().clone());
        Ok(Self { sql, inputs, runtime, schema, kept: KeptBatches::default() })
    }

    /// The rows for the current versions of the inputs, computed once per set of versions.
    pub async fn current(&self) -> Result<Vec<RecordBatch>> {
        let inputs: Vec<&LakeTableProvider> = self.inputs.iter().map(|(_, p)| p.as_ref()).collect();
        self.kept.get(&inputs, self.compute()).await
    }

    /// Rows of the last computed answer (`None` before the first read, or while computing):
    /// a size hint for planning, not necessarily the current version's.
    pub fn kept_rows(&self) -> Option<usize> {
        let kept = self.kept.0.try_lock().ok()?;
        kept.as_ref().map(|(_, batches)| batches.iter().map(RecordBatch::num_rows).sum())
    }

    async fn compute(&self) -> Result<Vec<RecordBatch>> {
        let batches = session(&self.inputs, &self.runtime)?.sql(self.sql).await?.collect().await?;
        batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| Ok(b.with_schema(Arc::clone(&self.schema))?))
            .collect()
    }
}

/// A session of its own over `inputs` (by name), in UTC, for the computations kept here
/// (`tenant_resources`, `cost_allocation`). It shares the engine's `runtime`: the object stores
/// and the Parquet footer and page-index cache its scans fill and use.
pub(crate) fn session(
    inputs: &[(&'static str, Arc<LakeTableProvider>)],
    runtime: &Arc<RuntimeEnv>,
) -> Result<SessionContext> {
    let mut config = SessionConfig::new();
    config.options_mut().execution.time_zone = Some("UTC".to_string());
    let ctx = SessionContext::new_with_config_rt(config, Arc::clone(runtime));
    for (name, p) in inputs {
        ctx.register_table(*name, Arc::clone(p) as Arc<dyn TableProvider>)?;
    }
    Ok(ctx)
}

#[async_trait]
impl TableProvider for MaterializedView {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self.current().await?;
        let exec = MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}
