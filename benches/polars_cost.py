"""The demo's cost model (examples/demo.yaml) as Polars lazy expressions, from the raw tables:
the same allocation, anomaly scoring and pricing that `query.py` writes in DuckDB SQL (read
the comments over ALLOCATED, ANOMALIES and MARGIN there), so Polars answers the standard
questions of issue 5 from the same Parquet files.

Money is summed as Decimal where Polars keeps it and split as Float64 (as DuckDB's decimal
division does); the answers are compared to tenantscope's to 1e-6.
"""

import datetime

import polars as pl

PROPORTIONAL = ["Compute", "Databases", "Networking"]  # split by the `requests` meter
EVEN = "Storage"  # split evenly among the tenants active in the period


def allocated(lz):
    """(day, tenant_id, cost) for every billing line: attributed lines as they are, shared lines
    split by the rules, the rest with tenant_id NULL."""
    lines = lz["billing"].select(
        s=pl.col("charge_period_start"),
        e=pl.when(pl.col("charge_period_end") > pl.col("charge_period_start")).then(pl.col("charge_period_end"))
        .otherwise(pl.col("charge_period_start") + pl.duration(hours=1)),
        cat=pl.col("service_category"), tenant_id=pl.col("tenant_id"), cost=pl.col("effective_cost"))
    requests = (lz["spans"].filter((pl.col("kind") == "server") & pl.col("tenant_id").is_not_null())
                .group_by("tenant_id", h=pl.col("time").dt.truncate("1h")).agg(q=pl.len()))
    active = (pl.concat([lz["spans"].select("tenant_id", "time"), lz["logs"].select("tenant_id", "time")])
              .filter(pl.col("tenant_id").is_not_null())
              .select("tenant_id", h=pl.col("time").dt.truncate("1h")).unique())
    shared = (lines.filter(pl.col("tenant_id").is_null()).group_by("s", "e", "cat").agg(amount=pl.col("cost").sum())
              .with_columns(m=pl.when(pl.col("cat") == EVEN).then(pl.lit("even")).otherwise(pl.lit("prop"))))
    periods = lambda cats: shared.filter(pl.col("cat").is_in(cats)).select("s", "e").unique()
    prop_w = (periods(PROPORTIONAL).join_where(requests, pl.col("h") >= pl.col("s"), pl.col("h") < pl.col("e"))
              .group_by("s", "e", "tenant_id").agg(w=pl.col("q").sum().cast(pl.Float64)))
    even_w = (periods([EVEN]).join_where(active, pl.col("h") >= pl.col("s"), pl.col("h") < pl.col("e"))
              .select("s", "e", "tenant_id").unique().with_columns(w=pl.lit(1.0)))
    # Storage periods where no tenant was active: every tenant of the tenants table, evenly.
    idle = (periods([EVEN]).join(even_w.select("s", "e").unique(), on=["s", "e"], how="anti")
            .join(lz["tenants"].select("tenant_id"), how="cross").with_columns(w=pl.lit(1.0)))
    weights = pl.concat([prop_w.with_columns(m=pl.lit("prop")), even_w.with_columns(m=pl.lit("even")),
                         idle.with_columns(m=pl.lit("even"))], how="diagonal")
    splittable = shared.filter(pl.col("cat").is_in(PROPORTIONAL + [EVEN]))
    shares = (splittable.join(weights, on=["s", "e", "m"])
              .select("s", "tenant_id", cost=pl.col("amount").cast(pl.Float64) * pl.col("w")
                      / pl.col("w").sum().over("s", "e", "cat")))
    unallocated = pl.concat([
        shared.filter(~pl.col("cat").is_in(PROPORTIONAL + [EVEN])),
        splittable.join(weights.select("s", "e", "m").unique(), on=["s", "e", "m"], how="anti"),
    ]).select("s", tenant_id=pl.lit(None, pl.String), cost=pl.col("amount").cast(pl.Float64))
    return pl.concat([
        lines.filter(pl.col("tenant_id").is_not_null()).select("s", "tenant_id", cost=pl.col("cost").cast(pl.Float64)),
        shares, unallocated,
    ]).select(day=pl.col("s").dt.date(), tenant_id="tenant_id", cost="cost")


def cost_per_tenant_per_day(lz):
    return allocated(lz).group_by("day", "tenant_id").agg(pl.col("cost").sum())


def top_tenants(lz, day, k=20):
    return (allocated(lz).filter((pl.col("day") == day) & pl.col("tenant_id").is_not_null())
            .group_by("tenant_id").agg(c=pl.col("cost").sum()).sort("c", descending=True).head(k))


def cost_anomalies(lz, window=28, min_history=5):
    """Each tenant's daily allocated cost against its trailing `window` days (rows, as the view):
    the modified z-score (value - median) / (1.4826 MAD), or 1.2533 x the mean absolute deviation
    when the MAD is 0; no score under `min_history` days of history."""
    daily = (allocated(lz).filter(pl.col("tenant_id").is_not_null())
             .group_by("day", "tenant_id").agg(pl.col("cost").sum()))
    prev = lambda k: pl.col("cost").shift(k).over("tenant_id", order_by="day")
    history = pl.concat_list([prev(k) for k in range(1, window + 1)]).list.drop_nulls()
    deviations = pl.concat_list([(prev(k) - pl.col("baseline")).abs() for k in range(1, window + 1)]).list.drop_nulls()
    mad = pl.col("dev").list.median()
    scale = (pl.when(pl.col("n") < min_history).then(None)
             .when(mad > 0).then(1.4826 * mad).otherwise(1.2533 * pl.col("dev").list.mean()))
    return (daily.with_columns(h=history)
            .with_columns(n=pl.col("h").list.len(),
                          baseline=pl.when(pl.col("h").list.len() > 0).then(pl.col("h").list.median()))
            .with_columns(dev=deviations)
            .with_columns(scale=scale)
            .select("day", "tenant_id", "cost", "baseline",
                    score=pl.when(pl.col("scale") > 0).then((pl.col("cost") - pl.col("baseline")) / pl.col("scale"))))


def tenant_margin(lz, month):
    """Revenue, cost and margin per tenant for the month starting at `month` (a date)."""
    start = datetime.datetime(month.year, month.month, 1, tzinfo=datetime.timezone.utc)
    end = datetime.datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=datetime.timezone.utc)
    in_month = lambda c: (pl.col(c) >= start) & (pl.col(c) < end)
    alloc = allocated(lz).filter(pl.col("tenant_id").is_not_null()
                                 & (pl.col("day").dt.truncate("1mo") == pl.lit(start.date())))
    spans, logs, plans, tenants = lz["spans"], lz["logs"], lz["plans"], lz["tenants"]
    usage = (spans.filter((pl.col("kind") == "server") & pl.col("tenant_id").is_not_null() & in_month("time"))
             .group_by("tenant_id").agg(quantity=pl.len().cast(pl.Float64)).with_columns(meter=pl.lit("requests")))
    active = pl.concat([
        spans.filter(pl.col("tenant_id").is_not_null() & in_month("time")).select("tenant_id"),
        logs.filter(pl.col("tenant_id").is_not_null() & in_month("time")).select("tenant_id"),
        alloc.select("tenant_id"),
    ]).unique()
    versions = (plans.select("plan", "valid_from").unique()
                .with_columns(valid_to=pl.col("valid_from").shift(-1).over("plan", order_by="valid_from")))
    priced = (active.join(tenants.select("tenant_id", "plan"), on="tenant_id").join(versions, on="plan")
              .filter((pl.col("valid_from") <= start) & (pl.col("valid_to").is_null() | (start < pl.col("valid_to"))))
              .select("tenant_id", "plan", "valid_from"))
    fees = (priced.join(plans, on=["plan", "valid_from"]).group_by("tenant_id", "plan")
            .agg(currency=pl.col("currency").str.to_uppercase().max(), base_fee=pl.col("base_fee").cast(pl.Float64).max()))
    f = lambda c: pl.col(c).cast(pl.Float64)
    q = pl.col("quantity")
    metered = (priced.join(plans.filter(pl.col("meter").is_not_null()), on=["plan", "valid_from"])
               .join(usage, on=["tenant_id", "meter"]).group_by("tenant_id")
               .agg(amount=(f("unit_price") * pl.max_horizontal(
                   0, pl.min_horizontal(q, f("tier_to").fill_null(q))
                   - pl.max_horizontal(f("tier_from").fill_null(0), f("included_quantity").fill_null(0)))).sum()))
    invoiced = (lz["invoices"].filter(pl.col("tenant_id").is_not_null() & in_month("period_start"))
                .group_by("tenant_id", currency=pl.col("currency").str.to_uppercase())
                .agg(revenue=pl.col("amount").cast(pl.Float64).sum()))
    planned = (fees.join(invoiced.select("tenant_id").unique(), on="tenant_id", how="anti")
               .join(metered, on="tenant_id", how="left")
               .select("tenant_id", "currency", revenue=pl.col("base_fee").fill_null(0) + pl.col("amount").fill_null(0)))
    revenue = pl.concat([invoiced, planned]).group_by("tenant_id", "currency").agg(pl.col("revenue").sum())
    currency = lz["billing"].select(currency=pl.col("billing_currency").max().str.to_uppercase())
    cost = alloc.group_by("tenant_id").agg(cost=pl.col("cost").sum()).join(currency, how="cross")
    joined = (revenue.join(cost, on=["tenant_id", "currency"], how="full", coalesce=True)
              .with_columns(pl.col("revenue").fill_null(0), pl.col("cost").fill_null(0)))
    return (joined.join(tenants.select("tenant_id", "plan"), on="tenant_id", how="left")
            .select("tenant_id", "plan", "currency", "revenue", "cost", margin=pl.col("revenue") - pl.col("cost")))
