//! Who sees what: one DataFusion session per (role, tenant), holding only the relations the
//! role may read, and, for a tenant-scoped reader, each of them wrapped so that its scan keeps
//! only that tenant's rows.
//!
//! Isolation is in the plan, not in the SQL text: a restricted session's catalog does not hold
//! the hidden tables at all (so no join, subquery, CTE, UNION, `information_schema` or
//! `pg_catalog` query can name them), and every relation a tenant reader can name is a view
//! of the real relation filtered on `tenant_id` ([`tenant_view`]), whatever the query around
//! it. Views are wrapped whole (their full answer is computed, then filtered), so
//! that a tenant's share of shared cost is computed from the whole fleet's usage, as for the
//! finance team, and only its own rows come out.
//!
//! Restricted sessions have no table factories (no `CREATE EXTERNAL TABLE`, no file formats
//! to read paths with), a catalog that refuses new tables, and are planned with DDL, DML and
//! statements (`SET`) refused.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use datafusion::{
    arrow::datatypes::SchemaRef,
    catalog::{
        CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, SchemaProvider, TableProvider,
    },
    common::{DataFusionError, Result as DfResult, plan_err},
    datasource::{ViewTable, provider_as_source},
    execution::SessionStateBuilder,
    logical_expr::{LogicalPlanBuilder, col, lit},
    prelude::SessionContext,
};
use tenantscope_schemas::{
    auth::{Principal, Role},
    columns::TENANT_ID,
};

use crate::engine::{CATALOG, SCHEMA};

/// Relations that only admin reads.
const ADMIN_ONLY: &[&str] = &["audit_log"];

/// Relations about money (cost, revenue, margin, the price book, invoices, imports): hidden from
/// ops unless the principals file says `ops_can_read_finance: true`.
pub const FINANCE: &[&str] = &[
    "billing",
    "plans",
    "invoices",
    "imports",
    "cost_allocation",
    "tenant_costs",
    "tenant_revenue",
    "tenant_margin",
    "top_tenants_by_cost",
    "tenant_cost_growth",
    "top_resources_by_cost",
    "tenant_resources",
    "negative_margin_tenants",
    "cost_anomalies",
    "unit_cost_anomalies",
];

/// The sessions a principal can be given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// The engine's own session: everything.
    Admin,
    Finance,
    Ops {
        finance: bool,
    },
    Tenant(String),
}

impl Scope {
    /// The scope of a principal that may query; `None` for one that may not.
    pub(crate) fn of(p: &Principal, ops_can_read_finance: bool) -> Option<Self> {
        Some(match p.role {
            Role::Admin => Scope::Admin,
            Role::Finance => Scope::Finance,
            Role::Ops => Scope::Ops { finance: ops_can_read_finance },
            Role::Tenant => Scope::Tenant(p.tenant.clone()?),
            Role::Ingest => return None,
        })
    }

    /// How the relation `name` (with `schema`) appears in this scope: hidden, as it is, or
    /// filtered to one tenant.
    fn shows(&self, name: &str, schema: &SchemaRef) -> Shown {
        if ADMIN_ONLY.contains(&name) {
            return if *self == Scope::Admin { Shown::Whole } else { Shown::Hidden };
        }
        match self {
            Scope::Admin | Scope::Finance | Scope::Ops { finance: true } => Shown::Whole,
            Scope::Ops { finance: false } => {
                if FINANCE.contains(&name) {
                    Shown::Hidden
                } else {
                    Shown::Whole
                }
            }
            Scope::Tenant(t) => match schema.index_of(TENANT_ID) {
                Ok(_) => Shown::Tenant(t.clone()),
                Err(_) => Shown::Hidden,
            },
        }
    }
}

enum Shown {
    Hidden,
    Whole,
    Tenant(String),
}

/// A session holding the relations of `main`'s catalog that `scope` may read.
pub(crate) async fn restricted_session(main: &SessionContext, scope: &Scope) -> DfResult<SessionContext> {
    let schema = main
        .catalog(CATALOG)
        .and_then(|c| c.schema(SCHEMA))
        .ok_or_else(|| DataFusionError::Internal("the engine has no tenantscope.public schema".into()))?;
    let mut tables: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    for name in schema.table_names() {
        let Some(provider) = schema.table(&name).await? else { continue };
        match scope.shows(&name, &provider.schema()) {
            Shown::Hidden => {}
            Shown::Whole => {
                tables.insert(name, provider);
            }
            Shown::Tenant(tenant) => {
                let view = tenant_view(&name, provider, &tenant)?;
                tables.insert(name, view);
            }
        }
    }
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(SCHEMA, Arc::new(ReadOnlySchema { tables }))?;
    let catalogs = MemoryCatalogProviderList::new();
    datafusion::catalog::CatalogProviderList::register_catalog(
        &catalogs,
        CATALOG.to_string(),
        Arc::new(catalog),
    );
    let state = SessionStateBuilder::new_from_existing(main.state())
        .with_catalog_list(Arc::new(catalogs))
        .with_table_factories(HashMap::new())
        .with_file_formats(Vec::new())
        .build();
    let ctx = SessionContext::new_with_state(state);
    setup_pg_catalog(&ctx)?;
    Ok(ctx)
}

/// Adds `pg_catalog`, and the PostgreSQL functions (current_database(), pg_get_userbyid(),
/// has_table_privilege(), ...) that psql and Grafana send, over the relations of `ctx`.
pub(crate) fn setup_pg_catalog(ctx: &SessionContext) -> DfResult<()> {
    datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(
        ctx,
        CATALOG,
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map(drop)
    .map_err(|e| *e)
}

/// The schema of a restricted session: what it was built with, and nothing can be added.
#[derive(Debug)]
struct ReadOnlySchema {
    tables: HashMap<String, Arc<dyn TableProvider>>,
}

#[async_trait]
impl SchemaProvider for ReadOnlySchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.keys().cloned().collect();
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.tables.get(name).cloned())
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    fn register_table(
        &self,
        name: String,
        _: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        plan_err!("permission denied: cannot create {name}; only admin may create tables and views")
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        plan_err!("permission denied: cannot drop {name}; only admin may drop tables and views")
    }
}

/// A relation as a tenant-scoped reader sees it: a view of the relation that keeps the rows
/// whose `tenant_id` is the tenant. It is planned with the query around it (so the filter is
/// pushed into the scan, and files and row groups of other tenants are pruned by their
/// statistics); nothing in a query can reach the relation but through the filter.
fn tenant_view(
    name: &str,
    relation: Arc<dyn TableProvider>,
    tenant: &str,
) -> DfResult<Arc<dyn TableProvider>> {
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(relation), None)?
        .filter(col(TENANT_ID).eq(lit(tenant.to_string())))?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn shown(scope: &Scope, name: &str, tenant_column: bool) -> &'static str {
        let mut fields = vec![Field::new("x", DataType::Utf8, true)];
        if tenant_column {
            fields.push(Field::new(TENANT_ID, DataType::Utf8, true));
        }
        match scope.shows(name, &Arc::new(Schema::new(fields))) {
            Shown::Hidden => "hidden",
            Shown::Whole => "whole",
            Shown::Tenant(_) => "tenant",
        }
    }

    #[test]
    fn each_scope_sees_its_relations() {
        let ops = Scope::Ops { finance: false };
        let ops_finance = Scope::Ops { finance: true };
        let acme = Scope::Tenant("acme".into());
        assert_eq!(shown(&Scope::Admin, "audit_log", true), "whole");
        for s in [&Scope::Finance, &ops, &ops_finance, &acme] {
            assert_eq!(shown(s, "audit_log", true), "hidden");
        }
        for money in FINANCE {
            assert_eq!(shown(&ops, money, true), "hidden", "{money}");
            assert_eq!(shown(&ops_finance, money, true), "whole", "{money}");
            assert_eq!(shown(&Scope::Finance, money, true), "whole", "{money}");
            assert_eq!(shown(&acme, money, true), "tenant", "{money}");
        }
        assert_eq!(shown(&ops, "spans", true), "whole");
        assert_eq!(shown(&acme, "spans", true), "tenant");
        assert_eq!(shown(&acme, "ingest_stats", false), "hidden");
        assert_eq!(shown(&ops, "ingest_stats", false), "whole");
    }
}
