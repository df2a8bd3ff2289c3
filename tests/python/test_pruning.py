"""Tenant and time filters prune: partitions (the date), row groups (min/max statistics) and
pages (the page index), as EXPLAIN ANALYZE reports them."""

import re

import pytest

from conftest import sql_json, tenantscope


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("prune"))
    # Enough spans per day (~140k) for several row-group pages.
    tenantscope("demo", "--no-serve", "--data", path, "--tenants", "8", "--days", "2",
                "--peak-requests-per-day", "30000", "--end-date", "2026-11-27")
    return path


def explain(lake, sql):
    rows = sql_json(lake, f"EXPLAIN ANALYZE {sql}")
    return "\n".join(str(r["plan"]) for r in rows)


def metric(plan, name):
    m = re.search(rf"{name}=([\d.]+ ?K?) total → ([\d.]+ ?K?) matched", plan)
    assert m, f"{name} not in the plan:\n{plan}"
    num = lambda s: float(s.replace(" ", "").rstrip("K")) * (1000 if s.strip().endswith("K") else 1)
    return num(m.group(1)), num(m.group(2))


def test_date_tenant_filters_prune_partitions_row_groups_and_pages(lake):
    plan = explain(lake, "SELECT count(*) FROM spans WHERE tenant_id = 'wayne' AND date = DATE '2026-11-27'")
    files = re.findall(r"spans/(date=[0-9-]+)/part-", plan)
    assert files and set(files) == {"date=2026-11-27"}, plan  # the other day's partition is not read
    total, matched = metric(plan, "page_index_rows_pruned")
    assert matched < total / 3, plan  # rows sorted by tenant: most pages skipped
    total, matched = metric(plan, "row_groups_pruned_statistics")
    assert total >= 1 and matched <= total
    # A tenant beyond every file's min/max in the Delta log: no file is even opened.
    plan = explain(lake, "SELECT count(*) FROM spans WHERE tenant_id = 'zzz-nobody'")
    assert "DataSourceExec" not in plan and "spans/date=" not in plan, plan
    # And the answers are right.
    assert sql_json(lake, "SELECT count(*) AS n FROM spans WHERE tenant_id = 'wayne' AND date = DATE '2026-11-27'") == \
        sql_json(lake, "SELECT count(*) AS n FROM (SELECT * FROM spans WHERE date = DATE '2026-11-27') t WHERE tenant_id = 'wayne'")


def test_filters_on_scattered_columns_run_above_the_scan_and_layout_filters_prune(lake):
    """`kind = 'server'` matches rows in every row group: it is evaluated after decoding (a
    FilterExec over the scan), not row by row inside the Parquet reader; beside a tenant filter,
    the tenant still prunes pages. Same answers as a filter kept wholly above the scan."""
    plan = explain(lake, "SELECT count(*) FROM spans WHERE kind = 'server'")
    filters = [line for line in plan.splitlines() if "FilterExec" in line]
    assert filters and "kind" in filters[0], plan
    pushed = re.search(r"pushdown_rows_pruned=([\d.]+ ?K?)", plan)
    assert pushed and pushed.group(1).strip() == "0", plan  # no row filtered inside the reader

    sql = "SELECT count(*) FROM spans WHERE tenant_id = 'wayne' AND kind = 'server'"
    plan = explain(lake, sql)
    total, matched = metric(plan, "page_index_rows_pruned")
    assert matched < total / 3, plan
    for where in ["kind = 'server'", "tenant_id = 'wayne' AND kind = 'server'"]:
        assert sql_json(lake, f"SELECT count(*) AS n FROM spans WHERE {where}") == sql_json(
            lake, "SELECT count(*) AS n FROM (SELECT tenant_id, kind FROM spans) t "
                  f"WHERE CASE WHEN {where} THEN true END")
