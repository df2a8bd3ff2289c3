//! The one DataFusion session over the lake, used by `tenantscope sql`, the HTTP API and the
//! PostgreSQL wire.

use std::{collections::HashMap, sync::Arc, time::Duration};

use datafusion::{
    arrow::{array::RecordBatch, datatypes::SchemaRef},
    execution::context::SQLOptions,
    execution::{SessionStateBuilder, runtime_env::RuntimeEnvBuilder},
    prelude::{DataFrame, SessionConfig, SessionContext},
};
use tenantscope_schemas::{
    AuditEvent, Auditor, Lake, Table,
    auth::{Caller, Principal},
};

use datafusion::{catalog::TableProvider, sql::parser::Statement};

use crate::{
    access::Scope,
    cost::{self, CostConfig, allocation::CostAllocationProvider},
    error::{QueryError, Result},
    plans::{PlanCache, changes_session, keepable, small_inputs},
    provider::LakeTableProvider,
};

/// Name of the catalog the lake's tables live in.
pub const CATALOG: &str = "tenantscope";
/// Name of the schema the lake's tables live in.
pub const SCHEMA: &str = "public";
/// Bytes of Parquet footers and page indexes kept in memory, least recently used dropped first
/// (DataFusion's default is 50 MB). Those of the 20M-span bench lake (spans, logs, the 1M-line
/// bill) take 8.7 MB: this holds a lake some thirty times larger.
const METADATA_CACHE_BYTES: usize = 256 << 20;
/// How old a table snapshot a query may see, by default.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(1);

/// Settings of the query engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How old a table snapshot a query may see before the table's log is read again.
    pub max_staleness: Duration,
    /// Threads DataFusion plans for (partitions of a scan); 0 = the number of cores.
    pub target_partitions: usize,
    /// Meters and allocation rules.
    pub cost: CostConfig,
    /// Whether ops principals read the finance tables and views.
    pub ops_can_read_finance: bool,
    /// Where queries run for a principal are recorded (`audit_log`); `None`: not recorded.
    pub auditor: Option<Auditor>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_staleness: DEFAULT_MAX_STALENESS,
            target_partitions: 0,
            cost: CostConfig::default(),
            ops_can_read_finance: false,
            auditor: None,
        }
    }
}

/// A query's answer: its schema (also when there are no rows) and its batches.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Output schema.
    pub schema: SchemaRef,
    /// Output rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Total number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The DataFusion session over the lake.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    lake: Lake,
    access: Arc<AccessState>,
}

/// The restricted sessions (made when first used) and the audit trail.
struct AccessState {
    sessions: std::sync::Mutex<HashMap<Scope, SessionContext>>,
    /// Optimized plans of queries over the HTTP API, by scope and SQL text.
    plans: PlanCache,
    ops_can_read_finance: bool,
    auditor: Option<Auditor>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").field("lake", &self.lake).finish_non_exhaustive()
    }
}

/// Sets DataFusion options from `DATAFUSION_*` variables (`var` looks one up by name): the
/// option's key in upper case with dots as underscores, e.g. `DATAFUSION_EXECUTION_BATCH_SIZE`
/// for `datafusion.execution.batch_size`, over tenantscope's defaults. A value that does not
/// parse is an error naming the variable, not a silent default. The session's time zone stays
/// UTC whatever is set.
pub fn apply_datafusion_env(
    options: &mut datafusion::config::ConfigOptions,
    var: impl Fn(&str) -> Option<String>,
) -> Result<()> {
    let keys: Vec<String> = options.entries().into_iter().map(|e| e.key).collect();
    for key in keys {
        let name = key.to_uppercase().replace('.', "_");
        if let Some(value) = var(&name) {
            options.set(&key, &value).map_err(|e| {
                QueryError::DataFusion(datafusion::error::DataFusionError::Configuration(format!(
                    "environment variable {name}={value:?}: {}",
                    e.strip_backtrace()
                )))
            })?;
        }
    }
    Ok(())
}

impl QueryEngine {
    /// A session with every table of the lake registered as `tenantscope.public.<table>`.
    /// Tables that do not exist yet read as empty until their first commit.
    pub async fn new(lake: Lake, config: EngineConfig) -> Result<Self> {
        let mut session = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true);
        if config.target_partitions > 0 {
            session = session.with_target_partitions(config.target_partitions);
        }
        let options = session.options_mut();
        // Row-level filtering while decoding only where the Delta scan asks for it (its own
        // predicate: tenant, time and the other layout columns, whose matches are contiguous);
        // any other filter runs above the scan, after whole-column decoding, which is faster for
        // rows scattered through every row group (20M spans, `kind = 'server'`: 0.70 s against
        // 1.31 s with row-level filtering). Files, row groups and pages are pruned either way.
        options.execution.parquet.pushdown_filters = false;
        options.execution.parquet.reorder_filters = true;
        apply_datafusion_env(options, |name| std::env::var(name).ok())?;
        options.execution.time_zone = Some("UTC".to_string());
        // Room for the footers and page indexes of the files queries read (kept per file, so a
        // tenant or time filter does not decode them again; see `provider.rs`).
        let runtime = RuntimeEnvBuilder::new()
            .with_metadata_cache_limit(METADATA_CACHE_BYTES)
            .build_arc()
            .map_err(QueryError::DataFusion)?;
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .with_optimizer_rule(Arc::new(crate::utc::UtcDateCasts))
            // Partial groupings by columns or expressions first (`FewGroupsExec`, with or without
            // aggregates); the prefilter then takes the groupings without aggregates left.
            .with_physical_optimizer_rule(Arc::new(crate::few_groups::FewGroups))
            .with_physical_optimizer_rule(Arc::new(crate::distinct::DistinctPrefilter))
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::access::setup_pg_catalog(&ctx).map_err(QueryError::DataFusion)?;
        let mut providers: HashMap<Table, Arc<LakeTableProvider>> = HashMap::new();
        for table in Table::ALL {
            let provider = Arc::new(
                LakeTableProvider::try_new(lake.clone(), table, config.max_staleness)
                    .await
                    .map_err(QueryError::DataFusion)?,
            );
            ctx.register_table(table.name(), Arc::clone(&provider) as Arc<dyn TableProvider>)
                .map_err(QueryError::DataFusion)?;
            providers.insert(table, provider);
        }
        // The cost model: cost_allocation (computed from billing, usage and tenants when read)
        // and the views over it.
        let meters: Vec<String> = config.cost.meters.iter().map(|m| m.name.clone()).collect();
        cost::allocation::check_rules(&config.cost.allocation, &meters).map_err(QueryError::DataFusion)?;
        let provider = |t: Table| {
            providers.get(&t).cloned().ok_or_else(|| {
                QueryError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
                    "no provider for {t}"
                )))
            })
        };
        let allocation = CostAllocationProvider::new(
            provider(Table::Billing)?,
            provider(Table::Usage)?,
            provider(Table::Tenants)?,
            config.cost.allocation.clone(),
            Arc::clone(&runtime),
        );
        ctx.register_table("cost_allocation", Arc::new(allocation)).map_err(QueryError::DataFusion)?;
        let resources = cost::materialized::MaterializedView::try_new(
            cost::materialized::TENANT_RESOURCES,
            vec![("billing", provider(Table::Billing)?)],
            Arc::clone(&runtime),
        )
        .await
        .map_err(QueryError::DataFusion)?;
        ctx.register_table("tenant_resources", Arc::new(resources)).map_err(QueryError::DataFusion)?;
        for udf in cost::anomaly::udfs() {
            ctx.register_udf(udf);
        }
        ctx.register_udaf(cost::topk::udaf());
        ctx.register_udf(crate::json::udf());
        ctx.register_table(
            crate::system::INGEST_STATS,
            Arc::new(crate::system::SnapshotTable::new(crate::system::ingest_stats_schema(), || {
                crate::system::ingest_stats_batch(&[])
            })),
        )
        .map_err(QueryError::DataFusion)?;
        for view in cost::views::ALL {
            ctx.sql(view).await.map_err(QueryError::DataFusion)?;
        }
        let access = Arc::new(AccessState {
            sessions: std::sync::Mutex::default(),
            plans: PlanCache::default(),
            ops_can_read_finance: config.ops_can_read_finance,
            auditor: config.auditor.clone(),
        });
        Ok(Self { ctx, lake, access })
    }

    /// The scope `p` queries in; `None` when it may not query.
    pub(crate) fn scope(&self, p: &Principal) -> Option<Scope> {
        Scope::of(p, self.access.ops_can_read_finance)
    }

    /// A session for one admin connection of the PostgreSQL wire: the engine's catalog, shared
    /// (a view created there is everyone's), and a copy of its configuration, so that a `SET`
    /// there changes that connection only.
    pub(crate) fn connection_session(&self) -> SessionContext {
        SessionContext::new_with_state(SessionStateBuilder::new_from_existing(self.ctx.state()).build())
    }

    /// The session of `scope` (see [`crate::access`]).
    pub(crate) async fn session(&self, scope: &Scope) -> Result<SessionContext> {
        if *scope == Scope::Admin {
            return Ok(self.ctx.clone());
        }
        if let Some(s) = self.access.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(scope) {
            return Ok(s.clone());
        }
        // Made outside the lock; two queries racing here make two, and the second is kept.
        let ctx =
            crate::access::restricted_session(&self.ctx, scope).await.map_err(QueryError::DataFusion)?;
        self.access.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(scope.clone(), ctx.clone());
        Ok(ctx)
    }

    /// Records an audit event (when the engine has an auditor).
    pub fn audit(&self, event: AuditEvent) {
        if let Some(a) = &self.access.auditor {
            a.record(event);
        }
    }

    /// The audit event of `sql` run by `caller`, with the tables and views it names (as
    /// far as it parses), before it runs.
    pub fn query_event(&self, caller: &Caller, sql: &str) -> AuditEvent {
        self.query_event_of(caller, sql, self.parse(sql).ok().as_ref())
    }

    /// `sql` parsed in the session's dialect (without copying the session state).
    fn parse(&self, sql: &str) -> datafusion::error::Result<Statement> {
        let state = self.ctx.state_ref();
        let state = state.read();
        let dialect = state.config().options().sql_parser.dialect;
        state.sql_to_statement(sql, &dialect)
    }

    fn query_event_of(&self, caller: &Caller, sql: &str, statement: Option<&Statement>) -> AuditEvent {
        let p = &caller.principal;
        let tables = statement.and_then(|stmt| {
            self.ctx.state_ref().read().resolve_table_references(stmt).ok().map(|refs| {
                let mut names: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
                names.sort();
                names.dedup();
                names
            })
        });
        AuditEvent {
            actor: Some(p.name.clone()),
            role: Some(p.role.to_string()),
            tenant_id: p.tenant.clone(),
            remote_addr: caller.remote_addr.clone(),
            statement: Some(sql.to_string()),
            tables,
            ..AuditEvent::new("query")
        }
    }

    /// Runs one SQL statement as `caller`, in its scope (see [`crate::access`]), and records it
    /// in the audit log: who, the SQL, the tables it names, rows, duration and outcome. The SQL
    /// is parsed once, for both.
    pub async fn sql_as(
        &self,
        caller: &Caller,
        sql: &str,
        params: Vec<datafusion::common::ScalarValue>,
    ) -> Result<QueryResult> {
        let started = std::time::Instant::now();
        let parsed = self.parse(sql);
        let event =
            self.access.auditor.is_some().then(|| self.query_event_of(caller, sql, parsed.as_ref().ok()));
        let result = self.run_as(caller, sql, parsed, params).await;
        if let Some(mut event) = event {
            event.target = Some("http".into());
            event.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            match &result {
                Ok(r) => {
                    event.rows = Some(r.num_rows() as i64);
                    event.outcome = Some("ok".into());
                }
                Err(e) => {
                    event.outcome =
                        Some(if matches!(e, QueryError::Forbidden(_)) { "denied" } else { "error" }.into());
                    event.detail = Some(e.to_string());
                }
            }
            self.audit(event);
        }
        result
    }

    async fn run_as(
        &self,
        caller: &Caller,
        sql: &str,
        parsed: datafusion::error::Result<Statement>,
        params: Vec<datafusion::common::ScalarValue>,
    ) -> Result<QueryResult> {
        let p = &caller.principal;
        let Some(scope) = self.scope(p) else {
            return Err(QueryError::Forbidden(format!(
                "permission denied: {} ({}) may not run queries",
                p.name, p.role
            )));
        };
        let statement = parsed.map_err(QueryError::from_planning)?;
        let started = std::time::Instant::now();
        let ctx = self.session(&scope).await?;
        let mut state = ctx.state();
        let key = (scope.clone(), sql.to_string());
        let kept = if params.is_empty() { self.access.plans.get(&key, &ctx, &state).await } else { None };
        let cached = kept.is_some();
        let plan = match kept {
            Some(plan) => plan,
            None => {
                let plan =
                    state.statement_to_plan(statement.clone()).await.map_err(QueryError::from_planning)?;
                if scope != Scope::Admin {
                    SQLOptions::new()
                        .with_allow_ddl(false)
                        .with_allow_dml(false)
                        .with_allow_statements(false)
                        .verify_plan(&plan)
                        .map_err(|e| {
                            QueryError::Forbidden(format!(
                                "permission denied: {} ({}) may only read: {}",
                                p.name,
                                p.role,
                                e.strip_backtrace()
                            ))
                        })?;
                }
                if changes_session(&plan) {
                    // SET, CREATE VIEW, DROP ...: the context carries them out, and plans kept
                    // under the old configuration or catalog are dropped.
                    self.access.plans.clear();
                    let df = ctx.execute_logical_plan(plan).await.map_err(QueryError::from_planning)?;
                    let schema = Arc::new(df.schema().as_arrow().clone());
                    let batches = df.collect().await.map_err(QueryError::DataFusion)?;
                    return Ok(QueryResult { schema, batches });
                }
                let plan = if params.is_empty() {
                    plan
                } else {
                    plan.with_param_values(params).map_err(QueryError::from_planning)?
                };
                let optimized = state.optimize(&plan).map_err(QueryError::from_planning)?;
                if keepable(&plan) {
                    self.access.plans.keep(key, &statement, &optimized, &ctx, &state).await;
                }
                optimized
            }
        };
        let planned = std::time::Instant::now();
        let partitions = if small_inputs(&plan) { 1 } else { state.config().target_partitions() };
        if partitions != state.config().target_partitions() {
            state.config_mut().options_mut().execution.target_partitions = partitions;
        }
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let physical = state
            .query_planner()
            .create_physical_plan(&plan, &state)
            .await
            .map_err(QueryError::DataFusion)?;
        let physical_at = std::time::Instant::now();
        let task = Arc::new(datafusion::execution::TaskContext::from(&state));
        let batches =
            datafusion::physical_plan::collect(physical, task).await.map_err(QueryError::DataFusion)?;
        tracing::debug!(
            cached,
            partitions,
            logical_us = (planned - started).as_micros() as u64,
            physical_us = (physical_at - planned).as_micros() as u64,
            execute_us = physical_at.elapsed().as_micros() as u64,
            "query"
        );
        Ok(QueryResult { schema, batches })
    }

    /// The DataFusion context (for the PostgreSQL wire and views built on top).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Puts `provider` in place of the table `name` (a system table backed by live state).
    pub fn replace_table(&self, name: &str, provider: Arc<dyn TableProvider>) -> Result<()> {
        self.ctx.deregister_table(name).map_err(QueryError::DataFusion)?;
        self.ctx.register_table(name, provider).map_err(QueryError::DataFusion)?;
        // Restricted sessions hold the providers they were made with: make them again.
        self.access.sessions.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.access.plans.clear();
        Ok(())
    }

    /// The lake the engine reads.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Plans a read-only query (no DDL, DML or `SET`) with `now()` at `t`.
    async fn plan_at(&self, sql: &str, t: chrono::DateTime<chrono::Utc>) -> Result<DataFrame> {
        let mut state = self.ctx.state();
        state.execution_props_mut().query_execution_start_time = Some(t);
        let plan = state.create_logical_plan(sql).await.map_err(QueryError::from_planning)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(QueryError::from_planning)?;
        Ok(DataFrame::new(state, plan))
    }

    /// Runs a read-only query as if it ran at `t`: `now()` (and `current_date`, and every view
    /// that uses them) is `t`. Alert rules run this way, so that they can be evaluated on any
    /// clock.
    pub async fn query_at(&self, sql: &str, t: chrono::DateTime<chrono::Utc>) -> Result<QueryResult> {
        let df = self.plan_at(sql, t).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(QueryError::DataFusion)?;
        Ok(QueryResult { schema, batches })
    }

    /// Plans a read-only query without running it, and returns its output schema.
    pub async fn plan_read_only(&self, sql: &str) -> Result<SchemaRef> {
        let df = self.plan_at(sql, chrono::Utc::now()).await?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    /// Runs one SQL statement and collects its result.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        let df = self.ctx.sql(sql).await.map_err(QueryError::from_planning)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(QueryError::DataFusion)?;
        Ok(QueryResult { schema, batches })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::config::ConfigOptions;

    use super::apply_datafusion_env;

    #[test]
    fn datafusion_options_come_from_the_environment_and_bad_values_are_named() {
        let mut options = ConfigOptions::new();
        options.execution.parquet.pushdown_filters = true;
        let env = |name: &str| match name {
            "DATAFUSION_EXECUTION_BATCH_SIZE" => Some("16384".to_string()),
            "DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS" => Some("false".to_string()),
            _ => None,
        };
        apply_datafusion_env(&mut options, env).unwrap();
        assert_eq!(usize::from(options.execution.batch_size), 16384);
        assert!(!options.execution.parquet.pushdown_filters);

        let mut options = ConfigOptions::new();
        let bad = |name: &str| (name == "DATAFUSION_EXECUTION_BATCH_SIZE").then(|| "many".to_string());
        let err = apply_datafusion_env(&mut options, bad).unwrap_err().to_string();
        assert!(err.contains("DATAFUSION_EXECUTION_BATCH_SIZE=\"many\""), "{err}");
        assert_eq!(
            usize::from(options.execution.batch_size),
            usize::from(ConfigOptions::new().execution.batch_size)
        );
    }
}
