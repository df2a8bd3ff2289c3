//! The cost model's SQL views, defined over `cost_allocation`, `usage`, `plans`, `invoices` and
//! `tenants`. Their names and columns are part of the product (README, "Cost model").

/// `tenant_costs`: cost per UTC day (of the charge period's start), tenant, service and
/// category. `tenant_id` NULL is the unallocated cost.
pub const TENANT_COSTS: &str = "CREATE OR REPLACE VIEW tenant_costs AS
SELECT CAST(charge_period_start AS DATE) AS day, tenant_id, service_name, service_category,
       billing_currency AS currency,
       sum(billed_cost) AS billed_cost, sum(effective_cost) AS effective_cost
FROM cost_allocation
GROUP BY CAST(charge_period_start AS DATE), tenant_id, service_name, service_category, billing_currency";

/// `tenant_revenue`: revenue per tenant and month. A month with invoice lines for the tenant
/// takes them (`source` = 'invoices'); otherwise the tenant's plan (the version valid at the
/// start of the month) is priced: base fee plus, per metered price row, `unit_price x` the
/// month's usage between the tier bounds above the included quantity (`source` = 'plan').
pub const TENANT_REVENUE: &str = "CREATE OR REPLACE VIEW tenant_revenue AS
WITH versions AS (
  SELECT plan, valid_from, lead(valid_from) OVER (PARTITION BY plan ORDER BY valid_from) AS valid_to
  FROM (SELECT DISTINCT plan, valid_from FROM plans) v
),
monthly_usage AS (
  SELECT tenant_id, date_trunc('month', hour) AS month, meter, sum(quantity) AS quantity
  FROM usage WHERE tenant_id IS NOT NULL GROUP BY tenant_id, date_trunc('month', hour), meter
),
active AS (
  SELECT DISTINCT tenant_id, month FROM monthly_usage
  UNION
  SELECT DISTINCT tenant_id, date_trunc('month', charge_period_start) AS month FROM cost_allocation
  WHERE tenant_id IS NOT NULL AND charge_period_start IS NOT NULL
),
priced AS (
  SELECT a.tenant_id, a.month, t.plan, v.valid_from
  FROM active a
  JOIN tenants t ON t.tenant_id = a.tenant_id
  JOIN versions v ON v.plan = t.plan AND v.valid_from <= a.month AND (v.valid_to IS NULL OR a.month < v.valid_to)
),
fees AS (
  SELECT p.tenant_id, p.month, p.plan, max(pl.currency) AS currency, max(pl.base_fee) AS base_fee
  FROM priced p JOIN plans pl ON pl.plan = p.plan AND pl.valid_from = p.valid_from
  GROUP BY p.tenant_id, p.month, p.plan
),
metered AS (
  SELECT p.tenant_id, p.month,
         sum(pl.unit_price * greatest(CAST(0 AS DECIMAL(38, 10)),
             least(u.quantity, coalesce(pl.tier_to, u.quantity))
             - greatest(coalesce(pl.tier_from, CAST(0 AS DECIMAL(38, 10))),
                        coalesce(pl.included_quantity, CAST(0 AS DECIMAL(38, 10)))))) AS amount
  FROM priced p
  JOIN plans pl ON pl.plan = p.plan AND pl.valid_from = p.valid_from AND pl.meter IS NOT NULL
  JOIN monthly_usage u ON u.tenant_id = p.tenant_id AND u.month = p.month AND u.meter = pl.meter
  GROUP BY p.tenant_id, p.month
),
from_invoices AS (
  SELECT tenant_id, date_trunc('month', period_start) AS month, upper(currency) AS currency, sum(amount) AS revenue
  FROM invoices WHERE tenant_id IS NOT NULL AND period_start IS NOT NULL
  GROUP BY tenant_id, date_trunc('month', period_start), upper(currency)
),
from_plans AS (
  SELECT f.tenant_id, f.month, f.plan, upper(f.currency) AS currency,
         CAST(coalesce(f.base_fee, CAST(0 AS DECIMAL(38, 10))) + coalesce(m.amount, CAST(0 AS DECIMAL(38, 10)))
              AS DECIMAL(38, 10)) AS revenue
  FROM fees f LEFT JOIN metered m ON m.tenant_id = f.tenant_id AND m.month = f.month
)
SELECT i.tenant_id, i.month, t.plan, i.currency, CAST(i.revenue AS DECIMAL(38, 10)) AS revenue, 'invoices' AS source
FROM from_invoices i LEFT JOIN tenants t ON t.tenant_id = i.tenant_id
UNION ALL
SELECT p.tenant_id, p.month, p.plan, p.currency, p.revenue, 'plan' AS source
FROM from_plans p LEFT ANTI JOIN from_invoices i ON i.tenant_id = p.tenant_id AND i.month = p.month";

/// `tenant_margin`: per tenant, month and plan: revenue, allocated (effective) cost, margin and
/// margin_pct, in one currency. Revenue and cost in different currencies are not converted:
/// they show as separate rows.
pub const TENANT_MARGIN: &str = "CREATE OR REPLACE VIEW tenant_margin AS
WITH cost AS (
  SELECT tenant_id, date_trunc('month', charge_period_start) AS month, upper(billing_currency) AS currency,
         sum(effective_cost) AS cost
  FROM cost_allocation WHERE tenant_id IS NOT NULL AND charge_period_start IS NOT NULL
  GROUP BY tenant_id, date_trunc('month', charge_period_start), upper(billing_currency)
),
revenue AS (
  SELECT tenant_id, month, max(plan) AS plan, currency, sum(revenue) AS revenue
  FROM tenant_revenue GROUP BY tenant_id, month, currency
),
joined AS (
  SELECT coalesce(r.tenant_id, c.tenant_id) AS tenant_id, coalesce(r.month, c.month) AS month,
         r.plan AS plan, coalesce(r.currency, c.currency) AS currency,
         coalesce(r.revenue, CAST(0 AS DECIMAL(38, 10))) AS revenue,
         coalesce(c.cost, CAST(0 AS DECIMAL(38, 10))) AS cost
  FROM revenue r FULL OUTER JOIN cost c
    ON r.tenant_id = c.tenant_id AND r.month = c.month AND r.currency = c.currency
)
SELECT j.tenant_id, j.month, coalesce(j.plan, t.plan) AS plan, j.currency,
       CAST(j.revenue AS DECIMAL(38, 10)) AS revenue, CAST(j.cost AS DECIMAL(38, 10)) AS cost,
       CAST(j.revenue - j.cost AS DECIMAL(38, 10)) AS margin,
       CASE WHEN j.revenue <> 0 THEN CAST(j.revenue - j.cost AS DOUBLE) / CAST(j.revenue AS DOUBLE) * 100 END
         AS margin_pct
FROM joined j LEFT JOIN tenants t ON t.tenant_id = j.tenant_id";

/// Every view, in dependency order.
pub const ALL: [&str; 3] = [TENANT_COSTS, TENANT_REVENUE, TENANT_MARGIN];
