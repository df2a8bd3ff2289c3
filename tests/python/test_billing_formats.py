"""AWS CUR 2.0, legacy CUR and Google Cloud billing exports, built here from the documented
column lists (shared/data/aws-cur/README.md, gcp-billing-bigquery-schema.md), import with the
right totals and tags."""

import gzip
import json
from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from conftest import sql_json, tenantscope

UTC = timezone.utc
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)


def cur2_rows():
    """CUR 2.0: DOUBLE costs, STRING rates, TIMESTAMP dates, MAP product / resource_tags / cost_category."""
    h = lambda d, hour: datetime(2026, 10, d, hour, tzinfo=UTC)
    return [
        # (type, unblended, public on-demand, ri effective, sp effective, tags, account)
        dict(line_item_line_item_type="Usage", line_item_unblended_cost=0.1, pricing_public_on_demand_cost=0.1,
             reservation_effective_cost=0.0, savings_plan_savings_plan_effective_cost=0.0,
             resource_tags={"user_tenant": "acme", "user_team": "api"}, line_item_usage_account_id="111122223333",
             line_item_usage_start_date=h(1, 0), product={"instance_type": "m6i.large"}, product_servicecode="AmazonEC2"),
        dict(line_item_line_item_type="DiscountedUsage", line_item_unblended_cost=0.0, pricing_public_on_demand_cost=0.2,
             reservation_effective_cost=0.07, savings_plan_savings_plan_effective_cost=0.0,
             resource_tags={}, line_item_usage_account_id="111122223333",
             line_item_usage_start_date=h(1, 1), product={"instance_type": "r6g.xlarge"}, product_servicecode="AmazonRDS"),
        dict(line_item_line_item_type="SavingsPlanCoveredUsage", line_item_unblended_cost=0.3, pricing_public_on_demand_cost=0.3,
             reservation_effective_cost=0.0, savings_plan_savings_plan_effective_cost=0.21,
             resource_tags={"user_tenant": "globex"}, line_item_usage_account_id="444455556666",
             line_item_usage_start_date=h(2, 5), product={}, product_servicecode="AmazonEC2"),
        dict(line_item_line_item_type="SavingsPlanNegation", line_item_unblended_cost=-0.3, pricing_public_on_demand_cost=0.0,
             reservation_effective_cost=0.0, savings_plan_savings_plan_effective_cost=0.0,
             resource_tags={}, line_item_usage_account_id="444455556666",
             line_item_usage_start_date=h(2, 5), product={}, product_servicecode="AmazonEC2"),
        dict(line_item_line_item_type="Tax", line_item_unblended_cost=1.23, pricing_public_on_demand_cost=0.0,
             reservation_effective_cost=0.0, savings_plan_savings_plan_effective_cost=0.0,
             resource_tags={}, line_item_usage_account_id="111122223333",
             line_item_usage_start_date=h(1, 0), product={}, product_servicecode="AmazonEC2"),
    ]


def cur2_table():
    rows = cur2_rows()
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    n = len(rows)
    ts = pa.timestamp("ms", tz="UTC")
    m = pa.map_(pa.string(), pa.string())
    return pa.table({
        "bill_payer_account_id": ["999988887777"] * n,
        "bill_payer_account_name": ["payer"] * n,
        "bill_billing_period_start_date": pa.array([START] * n, ts),
        "bill_billing_period_end_date": pa.array([END] * n, ts),
        "bill_invoicing_entity": ["Amazon Web Services, Inc."] * n,
        "identity_line_item_id": [f"li-{i}" for i in range(n)],
        "line_item_line_item_type": cols["line_item_line_item_type"],
        "line_item_unblended_cost": pa.array(cols["line_item_unblended_cost"], pa.float64()),
        "line_item_unblended_rate": ["0.0960000000"] * n,
        "line_item_currency_code": ["USD"] * n,
        "line_item_usage_account_id": cols["line_item_usage_account_id"],
        "line_item_usage_start_date": pa.array(cols["line_item_usage_start_date"], ts),
        "line_item_usage_end_date": pa.array(cols["line_item_usage_start_date"], ts),
        "line_item_usage_amount": pa.array([1.0] * n, pa.float64()),
        "line_item_resource_id": [f"i-{i:08x}" for i in range(n)],
        "pricing_public_on_demand_cost": pa.array(cols["pricing_public_on_demand_cost"], pa.float64()),
        "pricing_public_on_demand_rate": ["0.0960000000"] * n,
        "pricing_unit": ["Hrs"] * n,
        "product": pa.array([list(p.items()) for p in cols["product"]], m),
        "product_servicecode": cols["product_servicecode"],
        "reservation_effective_cost": pa.array(cols["reservation_effective_cost"], pa.float64()),
        "savings_plan_savings_plan_effective_cost": pa.array(cols["savings_plan_savings_plan_effective_cost"], pa.float64()),
        "resource_tags": pa.array([list(t.items()) for t in cols["resource_tags"]], m),
        "cost_category": pa.array([[("team", "platform")]] * n, m),
    })


def dec(x):
    """A double as its shortest text, as the importer reads it: 0.1 is 0.1."""
    return Decimal(repr(x))


def check_cur2(lake):
    rows = cur2_rows()
    billed = sum(dec(r["line_item_unblended_cost"]) for r in rows)
    eff = {"Usage": "line_item_unblended_cost", "DiscountedUsage": "reservation_effective_cost",
           "SavingsPlanCoveredUsage": "savings_plan_savings_plan_effective_cost", "Tax": "line_item_unblended_cost"}
    effective = sum(dec(r[eff[r["line_item_line_item_type"]]]) if r["line_item_line_item_type"] in eff else Decimal(0) for r in rows)
    listed = sum(dec(r["pricing_public_on_demand_cost"]) for r in rows)
    out = sql_json(lake, "SELECT CAST(sum(billed_cost) AS VARCHAR) AS b, CAST(sum(effective_cost) AS VARCHAR) AS e, CAST(sum(list_cost) AS VARCHAR) AS l, count(*) AS n FROM billing")[0]
    assert (Decimal(out["b"]), Decimal(out["e"]), Decimal(out["l"]), out["n"]) == (billed, effective, listed, len(rows))
    tagged = sql_json(lake, "SELECT tags['user_tenant'] AS t, tenant_id, x_extra['product.instance_type'] AS it, x_extra['cost_category.team'] AS cc, service_category AS sc, charge_category AS cat FROM billing ORDER BY charge_period_start, billed_cost")
    assert tagged[0]["t"] == "acme" and tagged[0]["tenant_id"] == "acme"
    assert any(r["it"] == "r6g.xlarge" and r["sc"] == "Databases" for r in tagged)
    assert all(r["cc"] == "platform" for r in tagged)
    assert sorted(r["cat"] for r in tagged) == ["Tax", "Usage", "Usage", "Usage", "Usage"]


def test_cur2_parquet(tmp_path):
    path = tmp_path / "cur2.parquet"
    pq.write_table(cur2_table(), path)
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, "--tenant-tag", "user_tenant", str(path))
    assert "(aws-cur2)" in out
    check_cur2(lake)
    # The import is in the audit log, with its file and rows.
    audit = sql_json(lake, "SELECT action, target, outcome, \"rows\" AS n FROM audit_log")
    assert [(a["action"], a["target"], a["outcome"]) for a in audit] == [("import.billing", str(path), "ok")]
    assert audit[0]["n"] > 0


def test_cur2_csv_gz(tmp_path):
    table = cur2_table()
    # CSV cannot hold maps: CUR 2.0 CSV writes them as JSON text.
    for name in ["product", "resource_tags", "cost_category"]:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array([json.dumps(dict(v)) for v in table[name].to_pylist()]))
    raw = tmp_path / "cur2.csv"
    pacsv.write_csv(table, raw)
    path = tmp_path / "cur2.csv.gz"
    path.write_bytes(gzip.compress(raw.read_bytes()))
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, "--tenant-tag", "user_tenant", str(path))
    assert "(aws-cur2)" in out
    check_cur2(lake)


def legacy_rows():
    # No NULLs: empty strings; rates as strings with 10 decimals; costs double; tags flattened.
    return [
        ("Usage", 0.0123456789012, "0.0300000000", "acme", "Base Load"),
        ("Usage", 1.5, "0.0960000000", "", "BaseLoad"),
        ("RIFee", 2.25, "0.0000000000", "globex", ""),
    ]


def test_legacy_cur_parquet(tmp_path):
    rows = legacy_rows()
    n = len(rows)
    ts = pa.timestamp("ms", tz="UTC")
    table = pa.table({
        "identity_line_item_id": [f"l{i}" for i in range(n)],
        "identity_time_interval": ["2026-10-05T22:00:00Z/2026-10-05T23:00:00Z"] * n,
        "bill_payer_account_id": ["999988887777"] * n,
        "bill_billing_period_start_date": pa.array([START] * n, ts),
        "bill_billing_period_end_date": pa.array([END] * n, ts),
        "line_item_usage_account_id": ["111122223333"] * n,
        "line_item_line_item_type": [r[0] for r in rows],
        "line_item_usage_start_date": pa.array([datetime(2026, 10, 5, 22, tzinfo=UTC)] * n, ts),
        "line_item_usage_end_date": pa.array([datetime(2026, 10, 5, 23, tzinfo=UTC)] * n, ts),
        "line_item_unblended_cost": pa.array([r[1] for r in rows], pa.float64()),
        "line_item_unblended_rate": [r[2] for r in rows],
        "line_item_currency_code": ["USD"] * n,
        "line_item_resource_id": ["", "i-1", ""],
        "pricing_public_on_demand_cost": pa.array([r[1] for r in rows], pa.float64()),
        "pricing_public_on_demand_rate": [r[2] for r in rows],
        "product_product_name": ["Amazon Elastic Compute Cloud"] * n,
        "product_servicecode": ["AmazonEC2"] * n,
        "reservation_unused_amortized_upfront_fee_for_billing_period": pa.array([0.0, 0.0, 0.5], pa.float64()),
        "reservation_unused_recurring_fee": pa.array([0.0, 0.0, 0.25], pa.float64()),
        "resource_tags_user_tenant": [r[3] for r in rows],
        "resource_tags_user_workload": [r[4] for r in rows],
    })
    path = tmp_path / "cur-legacy.parquet"
    pq.write_table(table, path)
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, "--tenant-tag", "user_tenant", str(path))
    assert "(aws-cur)" in out
    got = sql_json(lake, "SELECT CAST(billed_cost AS VARCHAR) AS b, CAST(effective_cost AS VARCHAR) AS e, CAST(contracted_unit_price AS VARCHAR) AS r, tenant_id, tags, resource_id, charge_category AS c FROM billing ORDER BY billed_cost")
    assert [Decimal(r["b"]) for r in got] == [Decimal("0.0123456789"), Decimal("1.5"), Decimal("2.25")]
    # RIFee's effective cost is the unused part of the reservation.
    assert [Decimal(r["e"]) for r in got] == [Decimal("0.0123456789"), Decimal("1.5"), Decimal("0.75")]
    assert [r["tenant_id"] for r in got] == ["acme", None, "globex"]
    assert got[1]["tags"] == {"user_workload": "BaseLoad"}  # empty strings are not tags
    assert got[0]["resource_id"] is None and got[2]["c"] == "Purchase"
    # One 13-decimal cost feeds billed, effective, list and contracted cost: 4 rounded values.
    assert "4 values had more than 10 decimals" in out


def test_legacy_cur_csv_with_category_headers(tmp_path):
    text = (
        "identity/LineItemId,bill/PayerAccountId,bill/BillingPeriodStartDate,bill/BillingPeriodEndDate,"
        "lineItem/UsageAccountId,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/UsageEndDate,"
        "lineItem/UnblendedCost,lineItem/UnblendedRate,lineItem/CurrencyCode,pricing/publicOnDemandCost,"
        "product/servicecode,resourceTags/user:Tenant,resourceTags/aws:createdBy\n"
        "a,999988887777,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,111122223333,Usage,2026-10-03T00:00:00Z,2026-10-03T01:00:00Z,"
        "0.5,0.5,USD,0.6,AmazonS3,acme,\n"
        "b,999988887777,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,111122223333,Usage,2026-10-03T00:00:00Z,2026-10-03T01:00:00Z,"
        "0.25,0.25,USD,0.25,AmazonS3,,root\n"
    )
    path = tmp_path / "cur.csv"
    path.write_text(text)
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, "--tenant-tag", "user:Tenant", str(path))
    assert "(aws-cur)" in out
    got = sql_json(lake, "SELECT CAST(sum(billed_cost) AS VARCHAR) AS b, CAST(sum(list_cost) AS VARCHAR) AS l, count(tenant_id) AS t, max(tags['aws:createdBy']) AS cb, max(service_category) AS sc FROM billing")[0]
    assert (Decimal(got["b"]), Decimal(got["l"]), got["t"], got["cb"], got["sc"]) == (Decimal("0.75"), Decimal("0.85"), 1, "root", "Storage")


def gcp_rows():
    return [
        {"billing_account_id": "01A2B3-C4D5E6-F7G8H9", "service": {"id": "6F81-5844-456A", "description": "Compute Engine"},
         "sku": {"id": "2E27-4F75-95CD", "description": "N2 Instance Core"}, "usage_start_time": "2026-10-04 10:00:00 UTC",
         "usage_end_time": "2026-10-04 11:00:00 UTC", "project": {"id": "acme-prod", "name": "acme", "labels": [{"key": "tenant", "value": "acme"}]},
         "labels": [{"key": "team", "value": "api"}], "location": {"region": "europe-west1", "zone": "europe-west1-b"},
         "cost": 1.2345, "currency": "EUR", "usage": {"amount": 3600, "unit": "seconds", "amount_in_pricing_units": 1, "pricing_unit": "hour"},
         "credits": [{"name": "Sustained use", "amount": -0.2, "type": "SUSTAINED_USAGE_DISCOUNT"}, {"name": "Free tier", "amount": -0.0345, "type": "FREE_TIER"}],
         "invoice": {"month": "202610"}, "cost_type": "regular"},
        {"billing_account_id": "01A2B3-C4D5E6-F7G8H9", "service": {"id": "95FF-2EF5-5EA1", "description": "Cloud Storage"},
         "sku": {"id": "E5F0-6A5D-7BAD", "description": "Standard Storage"}, "usage_start_time": "2026-10-31T23:00:00Z",
         "usage_end_time": "2026-11-01T00:00:00Z", "project": {"id": "shared", "name": "shared", "labels": []},
         "labels": [], "location": {"region": "us", "zone": None}, "cost": 0.5, "currency": "EUR",
         "usage": {"amount": 1e9, "unit": "byte-seconds", "amount_in_pricing_units": 0.0001, "pricing_unit": "gibibyte month"},
         "credits": [], "invoice": {"month": "202610"}, "cost_type": "regular"},
        {"billing_account_id": "01A2B3-C4D5E6-F7G8H9", "service": {"id": "X", "description": "Invoice"}, "sku": {"id": "T", "description": "Tax"},
         "usage_start_time": "2026-10-31T00:00:00Z", "usage_end_time": "2026-11-01T00:00:00Z", "project": None, "labels": [],
         "location": None, "cost": 0.3, "currency": "EUR", "usage": None, "credits": [], "invoice": {"month": "202610"}, "cost_type": "tax"},
    ]


def check_gcp(lake):
    rows = gcp_rows()
    billed = sum(dec(r["cost"]) + sum(dec(c["amount"]) for c in r["credits"]) for r in rows)
    got = sql_json(lake, "SELECT CAST(sum(billed_cost) AS VARCHAR) AS b, CAST(sum(list_cost) AS VARCHAR) AS l, count(*) AS n, min(billing_period) AS p FROM billing")[0]
    assert (Decimal(got["b"]), Decimal(got["l"]), got["n"], got["p"]) == (billed, sum(dec(r["cost"]) for r in rows), 3, "2026-10-01")
    first = sql_json(lake, "SELECT tenant_id, tags, sub_account_id AS p, service_category AS sc, region_id AS r, charge_category AS c FROM billing ORDER BY charge_period_start")
    assert first[0] == {"tenant_id": "acme", "tags": {"team": "api", "tenant": "acme"}, "p": "acme-prod", "sc": "Compute", "r": "europe-west1", "c": "Usage"}
    assert sorted(r["c"] for r in first) == ["Tax", "Usage", "Usage"]


def test_gcp_jsonl(tmp_path):
    path = tmp_path / "gcp.json"
    path.write_text("\n".join(json.dumps(r) for r in gcp_rows()) + "\n")
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, str(path))
    assert "(gcp)" in out
    check_gcp(lake)


def test_gcp_parquet_nested(tmp_path):
    rows = gcp_rows()
    for r in rows:  # BigQuery exports every record; nulls as null structs
        r["usage_start_time"] = datetime.fromisoformat(r["usage_start_time"].replace(" UTC", "+00:00").replace("Z", "+00:00"))
        r["usage_end_time"] = datetime.fromisoformat(r["usage_end_time"].replace(" UTC", "+00:00").replace("Z", "+00:00"))
    path = tmp_path / "gcp.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, str(path))
    assert "(gcp)" in out
    check_gcp(lake)


def test_focus_parquet_with_decimal_columns(tmp_path):
    """FOCUS as Parquet, costs as DECIMAL(38, 12) (as a Spark or Databricks export writes them)
    and timestamps as timestamps: the same totals as the CSV."""
    import csv as pycsv
    import os

    sample = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "focus", "focus_sample.csv")
    with open(sample, newline="", encoding="utf-8") as f:
        rows = list(pycsv.DictReader(f))
    null = lambda v: None if v in ("NULL", "") else v
    cols = {}
    for name in rows[0]:
        values = [null(r[name]) for r in rows]
        if name in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
            cols[name] = pa.array([Decimal(v) if v is not None else None for v in values], pa.decimal128(38, 12))
        elif name in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
            cols[name] = pa.array([datetime.fromisoformat(v).replace(tzinfo=UTC) if v else None for v in values], pa.timestamp("us", tz="UTC"))
        else:
            cols[name] = pa.array(values, pa.string())
    path = tmp_path / "focus.parquet"
    pq.write_table(pa.table(cols), path)
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, str(path))
    assert "(focus)" in out
    for col, snake in [("BilledCost", "billed_cost"), ("EffectiveCost", "effective_cost")]:
        expected = sum((Decimal(r[col]).quantize(Decimal("1e-10")) for r in rows if null(r[col]) is not None), Decimal(0))
        got = sql_json(lake, f"SELECT CAST(sum({snake}) AS VARCHAR) AS s, count(*) AS n FROM billing")[0]
        assert (Decimal(got["s"]), got["n"]) == (expected, 1000)


def test_gcp_csv(tmp_path):
    """BigQuery CSV exports flatten records into dotted headers and write arrays as JSON text."""
    import csv as pycsv

    path = tmp_path / "gcp.csv"
    fields = ["billing_account_id", "service.description", "sku.id", "usage_start_time", "usage_end_time",
              "project.id", "labels", "cost", "currency", "credits", "invoice.month", "cost_type"]
    with open(path, "w", newline="") as f:
        w = pycsv.writer(f)
        w.writerow(fields)
        for r in gcp_rows():
            project = r["project"] or {}
            w.writerow([r["billing_account_id"], r["service"]["description"], r["sku"]["id"], r["usage_start_time"],
                        r["usage_end_time"], project.get("id", ""), json.dumps(r["labels"]), repr(r["cost"]), r["currency"],
                        json.dumps(r["credits"]), r["invoice"]["month"], r["cost_type"]])
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, "--tenant-tag", "team", str(path))
    assert "(gcp)" in out
    rows = gcp_rows()
    billed = sum(dec(r["cost"]) + sum(dec(c["amount"]) for c in r["credits"]) for r in rows)
    got = sql_json(lake, "SELECT CAST(sum(billed_cost) AS VARCHAR) AS b, count(tenant_id) AS t FROM billing")[0]
    assert (Decimal(got["b"]), got["t"]) == (billed, 1)


def test_azure_mca_camel_case_columns(tmp_path):
    """Newer (MCA) cost details name columns in camelCase and bill in costInBillingCurrency."""
    path = tmp_path / "mca.csv"
    path.write_text(
        "billingAccountId,billingPeriodStartDate,billingPeriodEndDate,date,meterCategory,costInBillingCurrency,"
        "billingCurrency,chargeType,pricingModel,quantity,unitPrice,subscriptionId,tags\n"
        "ba1,10/01/2026,10/31/2026,10/05/2026,Virtual Machines,12.5,EUR,Usage,OnDemand,10,1.25,sub-1,\"\"\"tenant\"\": \"\"acme\"\"\"\n"
        "ba1,10/01/2026,10/31/2026,10/06/2026,Storage,0.75,EUR,Usage,OnDemand,3,0.25,sub-1,\n"
    )
    lake = str(tmp_path / "lake")
    out = tenantscope("import", "billing", "--data", lake, str(path))
    assert "(azure)" in out
    got = sql_json(lake, "SELECT CAST(sum(billed_cost) AS VARCHAR) AS b, CAST(sum(contracted_cost) AS VARCHAR) AS c, max(billing_currency) AS cur, count(tenant_id) AS t, max(service_category) AS sc FROM billing")[0]
    assert (Decimal(got["b"]), Decimal(got["c"]), got["cur"], got["t"], got["sc"]) == (Decimal("13.25"), Decimal("13.25"), "EUR", 1, "Storage")
