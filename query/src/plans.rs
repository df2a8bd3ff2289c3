//! Plans kept per SQL text, and the choice of how many partitions a query runs on.
//!
//! Dashboards and scripts send the same SQL again and again. For a question answered from a
//! kept rollup (`tenant_resources`, `tenant_costs`), turning the SQL into an optimized plan
//! takes longer than running it (about 1 ms of parsing, analysis and some thirty optimizer
//! passes, against well under 1 ms of execution). So the analysed and optimized logical plan of a
//! query over the HTTP API is kept for its SQL text and scope, and planned physically again on
//! every run: the physical plan is where table providers resolve their current snapshot (the
//! files, the kept rows), so data never goes stale by this cache; only the logical shape, which
//! does not depend on the data, is reused.
//!
//! A plan is kept only if reusing it gives the same answer as planning again:
//! - no parameters, and it is a query (not `SET`, DDL, DML, `COPY`, `EXPLAIN`);
//! - every scalar function in it, and in the views it reads, is immutable: the optimizer folds
//!   `now()`, `current_date` and the like into constants, which a later run must not reuse;
//! - on reuse, the configuration is the one it was optimized under, and every table and view its
//!   SQL names still resolves to the same provider (a `DROP VIEW` or `CREATE VIEW` through the
//!   PostgreSQL wire, a replaced system table, make it plan again).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use datafusion::{
    catalog::TableProvider,
    common::{
        TableReference,
        tree_node::{TreeNode, TreeNodeRecursion},
    },
    config::ConfigOptions,
    datasource::source_as_provider,
    execution::SessionState,
    logical_expr::{Expr, LogicalPlan, Volatility},
    prelude::SessionContext,
    sql::parser::Statement,
};

use crate::{access::Scope, cost::materialized::MaterializedView};

/// Plans kept at most; past it the oldest half goes (SQL with literal times, as Grafana
/// expands its macros, is new text on every refresh and must not grow the cache without bound).
const MAX_PLANS: usize = 512;

/// A query whose every table holds at most this many rows runs on one partition: below it,
/// spreading the work over cores (repartitioning, a task per partition, merging partial
/// aggregates) costs more than the work itself.
pub(crate) const SMALL_INPUT_ROWS: usize = 100_000;

struct Kept {
    plan: LogicalPlan,
    /// The options it was optimized under, held so that a `SET` (which copies them on write)
    /// shows as a different `Arc`.
    options: Arc<ConfigOptions>,
    /// The tables and views its SQL names, as resolved when it was planned.
    tables: Vec<(TableReference, Arc<dyn TableProvider>)>,
    /// When it was kept, to drop the oldest first.
    serial: u64,
}

/// Optimized logical plans by scope and SQL text.
#[derive(Default)]
pub(crate) struct PlanCache {
    plans: Mutex<(u64, HashMap<(Scope, String), Kept>)>,
}

impl PlanCache {
    /// The kept plan of `key`, if the session still resolves it the same way.
    pub(crate) async fn get(
        &self,
        key: &(Scope, String),
        ctx: &SessionContext,
        state: &SessionState,
    ) -> Option<LogicalPlan> {
        let (plan, tables) = {
            let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            let kept = plans.1.get(key)?;
            if !Arc::ptr_eq(&kept.options, state.config_options()) {
                return None;
            }
            (kept.plan.clone(), kept.tables.clone())
        };
        for (name, provider) in tables {
            match ctx.table_provider(name).await {
                Ok(now) if Arc::ptr_eq(&now, &provider) => {}
                _ => return None,
            }
        }
        Some(plan)
    }

    /// Keeps `optimized`, the plan of `statement` (the SQL text in `key`).
    pub(crate) async fn keep(
        &self,
        key: (Scope, String),
        statement: &Statement,
        optimized: &LogicalPlan,
        ctx: &SessionContext,
        state: &SessionState,
    ) {
        let Ok(names) = state.resolve_table_references(statement) else { return };
        let mut tables = Vec::with_capacity(names.len());
        for name in names {
            let Ok(provider) = ctx.table_provider(name.clone()).await else { return };
            tables.push((name, provider));
        }
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plans.1.len() >= MAX_PLANS {
            let mut serials: Vec<u64> = plans.1.values().map(|k| k.serial).collect();
            serials.sort_unstable();
            let cut = serials[serials.len() / 2];
            plans.1.retain(|_, k| k.serial >= cut);
        }
        plans.0 += 1;
        let serial = plans.0;
        let options = Arc::clone(state.config_options());
        plans.1.insert(key, Kept { plan: optimized.clone(), options, tables, serial });
    }

    /// Forgets every plan (the catalog or configuration changed).
    pub(crate) fn clear(&self) {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).1.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.plans.lock().unwrap().1.len()
    }
}

/// Whether `plan` changes the session when run (`SET`, DDL) or writes (DML, `COPY`): those go
/// through the context, and are never kept.
pub(crate) fn changes_session(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
    )
}

/// Whether the optimized form of `plan` (a query without parameters) may be reused for its SQL.
pub(crate) fn keepable(plan: &LogicalPlan) -> bool {
    !changes_session(plan)
        && !matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_))
        && immutable(plan)
}

/// No function in `plan` (its subqueries, and the views it reads) whose value may change between
/// runs, and no placeholder.
fn immutable(plan: &LogicalPlan) -> bool {
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Some(view) = scan.source.get_logical_plan() {
                ok &= immutable(&view);
            }
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                ok &= match e {
                    Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
                    Expr::Placeholder(_) | Expr::ScalarVariable(..) => false,
                    _ => true,
                };
                Ok(if ok { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
            })
        })?;
        Ok(if ok { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    ok
}

/// Whether every table `plan` scans is known to hold at most [`SMALL_INPUT_ROWS`] rows: today
/// the kept rollups (`tenant_resources`) once computed. Lake tables and views count as large.
pub(crate) fn small_inputs(plan: &LogicalPlan) -> bool {
    let mut small = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let rows = source_as_provider(&scan.source)
                .ok()
                .and_then(|p| p.downcast_ref::<MaterializedView>().and_then(MaterializedView::kept_rows));
            small &= rows.is_some_and(|r| r <= SMALL_INPUT_ROWS);
        }
        Ok(if small { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    small
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn plan(ctx: &SessionContext, sql: &str) -> LogicalPlan {
        ctx.state().create_logical_plan(sql).await.unwrap()
    }

    #[tokio::test]
    async fn only_plans_that_give_the_same_answer_again_are_kept() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE VIEW today AS SELECT current_date AS d").await.unwrap();
        ctx.sql("CREATE VIEW plain AS SELECT 1 AS one").await.unwrap();
        assert!(keepable(&plan(&ctx, "SELECT upper('a'), 1 + 2 FROM plain").await));
        assert!(keepable(&plan(&ctx, "SELECT * FROM plain WHERE one IN (SELECT abs(-1))").await));
        // Folded into a constant by the optimizer: a reused plan would answer yesterday's time.
        assert!(!keepable(&plan(&ctx, "SELECT now()").await));
        assert!(!keepable(
            &plan(&ctx, "SELECT * FROM plain WHERE one IN (SELECT extract(day FROM now()))").await
        ));
        // ... also when a view it reads uses one.
        assert!(!keepable(&plan(&ctx, "SELECT * FROM today").await));
        assert!(!keepable(&plan(&ctx, "SELECT random()").await));
        assert!(!keepable(&plan(&ctx, "SELECT $1").await));
        assert!(!keepable(&plan(&ctx, "EXPLAIN SELECT 1").await));
        assert!(!keepable(&plan(&ctx, "SET datafusion.execution.batch_size = 1024").await));
        assert!(!keepable(&plan(&ctx, "CREATE VIEW v AS SELECT 1").await));
    }

    #[tokio::test]
    async fn a_kept_plan_is_not_reused_once_a_view_it_names_or_the_configuration_changes() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE VIEW v AS SELECT 1 AS one").await.unwrap();
        let cache = PlanCache::default();
        let sql = "SELECT one FROM v";
        let key = (Scope::Admin, sql.to_string());
        let state = ctx.state();
        let statement = state.sql_to_statement(sql, &datafusion::config::Dialect::Generic).unwrap();
        let optimized = state.optimize(&state.statement_to_plan(statement.clone()).await.unwrap()).unwrap();
        cache.keep(key.clone(), &statement, &optimized, &ctx, &state).await;
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&key, &ctx, &ctx.state()).await.is_some());
        assert!(cache.get(&(Scope::Finance, sql.to_string()), &ctx, &ctx.state()).await.is_none());

        ctx.sql("CREATE OR REPLACE VIEW v AS SELECT 2 AS one").await.unwrap();
        assert!(cache.get(&key, &ctx, &ctx.state()).await.is_none(), "the view was redefined");

        let state = ctx.state();
        let optimized = state.optimize(&state.statement_to_plan(statement.clone()).await.unwrap()).unwrap();
        cache.keep(key.clone(), &statement, &optimized, &ctx, &state).await;
        assert!(cache.get(&key, &ctx, &ctx.state()).await.is_some());
        ctx.sql("SET datafusion.execution.batch_size = 1024").await.unwrap().collect().await.unwrap();
        assert!(cache.get(&key, &ctx, &ctx.state()).await.is_none(), "the configuration changed");
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let ctx = SessionContext::new();
        let cache = PlanCache::default();
        let state = ctx.state();
        for i in 0..MAX_PLANS + 10 {
            let sql = format!("SELECT {i}");
            let statement = state.sql_to_statement(&sql, &datafusion::config::Dialect::Generic).unwrap();
            let optimized =
                state.optimize(&state.statement_to_plan(statement.clone()).await.unwrap()).unwrap();
            cache.keep((Scope::Admin, sql), &statement, &optimized, &ctx, &state).await;
        }
        assert!(cache.len() <= MAX_PLANS);
        let newest = (Scope::Admin, format!("SELECT {}", MAX_PLANS + 9));
        assert!(cache.get(&newest, &ctx, &ctx.state()).await.is_some());
        assert!(cache.get(&(Scope::Admin, "SELECT 0".to_string()), &ctx, &ctx.state()).await.is_none());
    }
}
