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

/// `top_tenants_by_cost`: per month and currency, tenants by allocated effective cost, with
/// their share of the allocated total and their rank.
pub const TOP_TENANTS_BY_COST: &str = "CREATE OR REPLACE VIEW top_tenants_by_cost AS
WITH monthly AS (
  SELECT date_trunc('month', charge_period_start) AS month, tenant_id, upper(billing_currency) AS currency,
         sum(effective_cost) AS cost
  FROM cost_allocation WHERE tenant_id IS NOT NULL AND charge_period_start IS NOT NULL
  GROUP BY date_trunc('month', charge_period_start), tenant_id, upper(billing_currency)
)
SELECT month, tenant_id, currency, cost,
       CAST(cost AS DOUBLE) / NULLIF(CAST(sum(cost) OVER (PARTITION BY month, currency) AS DOUBLE), 0) * 100
         AS share_pct,
       rank() OVER (PARTITION BY month, currency ORDER BY cost DESC) AS rank
FROM monthly";

/// `top_tenants_by_usage`: per UTC day and meter, tenants by quantity, with share and rank.
pub const TOP_TENANTS_BY_USAGE: &str = "CREATE OR REPLACE VIEW top_tenants_by_usage AS
WITH daily AS (
  SELECT CAST(hour AS DATE) AS day, meter, tenant_id, sum(quantity) AS quantity
  FROM usage WHERE tenant_id IS NOT NULL GROUP BY CAST(hour AS DATE), meter, tenant_id
)
SELECT day, meter, tenant_id, quantity,
       CAST(quantity AS DOUBLE) / NULLIF(CAST(sum(quantity) OVER (PARTITION BY day, meter) AS DOUBLE), 0) * 100
         AS share_pct,
       rank() OVER (PARTITION BY day, meter ORDER BY quantity DESC) AS rank
FROM daily";

/// `tenant_cost_growth`: per month, each tenant's cost against the month before, ranked by
/// growth.
pub const TENANT_COST_GROWTH: &str = "CREATE OR REPLACE VIEW tenant_cost_growth AS
WITH monthly AS (
  SELECT date_trunc('month', charge_period_start) AS month, tenant_id, upper(billing_currency) AS currency,
         sum(effective_cost) AS cost
  FROM cost_allocation WHERE tenant_id IS NOT NULL AND charge_period_start IS NOT NULL
  GROUP BY date_trunc('month', charge_period_start), tenant_id, upper(billing_currency)
),
paired AS (
  SELECT month, tenant_id, currency, cost,
         lag(cost) OVER (PARTITION BY tenant_id, currency ORDER BY month) AS previous_cost
  FROM monthly
)
SELECT month, tenant_id, currency, cost, previous_cost,
       CAST(cost - coalesce(previous_cost, CAST(0 AS DECIMAL(38, 10))) AS DECIMAL(38, 10)) AS growth,
       CAST(cost - previous_cost AS DOUBLE) / NULLIF(CAST(previous_cost AS DOUBLE), 0) * 100 AS growth_pct,
       rank() OVER (PARTITION BY month, currency
                    ORDER BY cost - coalesce(previous_cost, CAST(0 AS DECIMAL(38, 10))) DESC) AS rank
FROM paired";

/// `top_resources_by_cost`: per month, billed resources by effective cost (with the tenant an
/// import attributed them to, if any).
pub const TOP_RESOURCES_BY_COST: &str = "CREATE OR REPLACE VIEW top_resources_by_cost AS
WITH monthly AS (
  SELECT date_trunc('month', charge_period_start) AS month, resource_id, max(resource_name) AS resource_name,
         service_name, tenant_id, upper(billing_currency) AS currency, sum(effective_cost) AS cost
  FROM billing WHERE resource_id IS NOT NULL AND charge_period_start IS NOT NULL
  GROUP BY date_trunc('month', charge_period_start), resource_id, service_name, tenant_id, upper(billing_currency)
)
SELECT month, resource_id, resource_name, service_name, tenant_id, currency, cost,
       rank() OVER (PARTITION BY month, currency ORDER BY cost DESC) AS rank
FROM monthly";

/// `top_routes`: per UTC day, tenant, service and route (`http.route`, else the span name):
/// server requests, errors, error rate and p95 latency, ranked by requests. Reads `spans`.
pub const TOP_ROUTES: &str = "CREATE OR REPLACE VIEW top_routes AS
WITH daily AS (
  SELECT date AS day, tenant_id, service_name, coalesce(attributes['http.route'], name) AS route,
         count(*) AS requests, sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors,
         approx_percentile_cont(CAST(duration_ns AS DOUBLE) / 1e6, 0.95) AS p95_ms
  FROM spans WHERE kind = 'server'
  GROUP BY date, tenant_id, service_name, coalesce(attributes['http.route'], name)
)
SELECT day, tenant_id, service_name, route, requests, errors,
       CAST(errors AS DOUBLE) / CAST(requests AS DOUBLE) AS error_rate, p95_ms,
       rank() OVER (PARTITION BY day ORDER BY requests DESC) AS rank
FROM daily";

/// `negative_margin_tenants`: the tenants that cost more than they pay, worst first.
pub const NEGATIVE_MARGIN_TENANTS: &str = "CREATE OR REPLACE VIEW negative_margin_tenants AS
SELECT month, tenant_id, plan, currency, revenue, cost, margin, margin_pct
FROM tenant_margin WHERE margin < 0";

/// `cost_anomalies`: each tenant's daily effective cost scored against its trailing 28 days.
/// In every anomaly view, `is_anomaly` needs both a robust score beyond 3.5 and a change of
/// more than 25% from the baseline (the median), so that a tight history does not turn small
/// wobbles into pages.
pub const COST_ANOMALIES: &str = "CREATE OR REPLACE VIEW cost_anomalies AS
WITH daily AS (
  SELECT day, tenant_id, currency, CAST(sum(effective_cost) AS DOUBLE) AS cost
  FROM tenant_costs WHERE tenant_id IS NOT NULL GROUP BY day, tenant_id, currency
),
windowed AS (
  SELECT day, tenant_id, currency, cost,
         array_agg(cost) OVER (PARTITION BY tenant_id, currency ORDER BY day
                               ROWS BETWEEN 28 PRECEDING AND 1 PRECEDING) AS history
  FROM daily
)
SELECT day, tenant_id, currency, cost, series_median(history) AS baseline,
       anomaly_score(cost, history) AS score,
       coalesce(abs(anomaly_score(cost, history)) > 3.5
                AND abs(cost - series_median(history)) > 0.25 * abs(series_median(history)), false) AS is_anomaly
FROM windowed";

/// `usage_anomalies`: each tenant's hourly usage per meter scored against the same hour of the
/// previous 14 days (daily seasonality).
pub const USAGE_ANOMALIES: &str = "CREATE OR REPLACE VIEW usage_anomalies AS
WITH hourly AS (
  SELECT hour, tenant_id, meter, CAST(sum(quantity) AS DOUBLE) AS quantity
  FROM usage WHERE tenant_id IS NOT NULL GROUP BY hour, tenant_id, meter
),
windowed AS (
  SELECT hour, tenant_id, meter, quantity,
         array_agg(quantity) OVER (PARTITION BY tenant_id, meter, date_part('hour', hour) ORDER BY hour
                                   ROWS BETWEEN 14 PRECEDING AND 1 PRECEDING) AS history
  FROM hourly
)
SELECT hour, tenant_id, meter, quantity, series_median(history) AS baseline,
       anomaly_score(quantity, history) AS score,
       coalesce(abs(anomaly_score(quantity, history)) > 3.5
                AND abs(quantity - series_median(history)) > 0.25 * abs(series_median(history)), false) AS is_anomaly
FROM windowed";

/// `unit_cost_anomalies`: each tenant's daily cost per request scored against its trailing 28
/// days.
pub const UNIT_COST_ANOMALIES: &str = "CREATE OR REPLACE VIEW unit_cost_anomalies AS
WITH cost AS (
  SELECT day, tenant_id, currency, CAST(sum(effective_cost) AS DOUBLE) AS cost
  FROM tenant_costs WHERE tenant_id IS NOT NULL GROUP BY day, tenant_id, currency
),
requests AS (
  SELECT CAST(hour AS DATE) AS day, tenant_id, CAST(sum(quantity) AS DOUBLE) AS requests
  FROM usage WHERE meter = 'requests' AND tenant_id IS NOT NULL GROUP BY CAST(hour AS DATE), tenant_id
),
unit AS (
  SELECT c.day, c.tenant_id, c.currency, c.cost, r.requests, c.cost / r.requests AS cost_per_request
  FROM cost c JOIN requests r ON r.day = c.day AND r.tenant_id = c.tenant_id WHERE r.requests > 0
),
windowed AS (
  SELECT *, array_agg(cost_per_request) OVER (PARTITION BY tenant_id, currency ORDER BY day
                                              ROWS BETWEEN 28 PRECEDING AND 1 PRECEDING) AS history
  FROM unit
)
SELECT day, tenant_id, currency, cost, requests, cost_per_request, series_median(history) AS baseline,
       anomaly_score(cost_per_request, history) AS score,
       coalesce(abs(anomaly_score(cost_per_request, history)) > 3.5
                AND abs(cost_per_request - series_median(history)) > 0.25 * abs(series_median(history)), false) AS is_anomaly
FROM windowed";

/// Every view, in dependency order.
pub const ALL: [&str; 12] = [
    TENANT_COSTS,
    TENANT_REVENUE,
    TENANT_MARGIN,
    TOP_TENANTS_BY_COST,
    TOP_TENANTS_BY_USAGE,
    TENANT_COST_GROWTH,
    TOP_RESOURCES_BY_COST,
    TOP_ROUTES,
    NEGATIVE_MARGIN_TENANTS,
    COST_ANOMALIES,
    USAGE_ANOMALIES,
    UNIT_COST_ANOMALIES,
];
