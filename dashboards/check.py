#!/usr/bin/env python3
"""Checks the dashboards: every file parses as JSON, is a classic dashboard model of a current
schemaVersion, has the datasource as a variable, and every panel has a description, a
datasource that is a variable (never a hard-coded uid) and targets: SQL on `${datasource}`
(tenantscope's PostgreSQL wire), or PromQL on `${prometheus}` (a Prometheus scraping
tenantscope's /metrics; the dashboard must then have that variable too).

    python3 dashboards/check.py [DIR]      # exit 1 and one line per problem if any
"""

import json
import os
import sys

MIN_SCHEMA = 39
DATASOURCE = "${datasource}"
PROMETHEUS = "${prometheus}"


def check_file(path):
    problems = []
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        return [f"{path}: does not parse: {e}"]
    if d.get("schemaVersion", 0) < MIN_SCHEMA:
        problems.append(f"{path}: schemaVersion {d.get('schemaVersion')} < {MIN_SCHEMA}")
    variables = d.get("templating", {}).get("list", [])
    if not any(v.get("type") == "datasource" and v.get("name") == "datasource" for v in variables):
        problems.append(f"{path}: no datasource variable named 'datasource'")
    for v in variables:
        if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") != DATASOURCE:
            problems.append(f"{path}: variable {v.get('name')!r}: datasource is not {DATASOURCE}")
    ids = set()
    for p in d.get("panels", []):
        where = f"{path}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            problems.append(f"{where}: duplicate id")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        if not (p.get("description") or "").strip():
            problems.append(f"{where}: no description")
        uid = (p.get("datasource") or {}).get("uid")
        if uid not in (DATASOURCE, PROMETHEUS):
            problems.append(f"{where}: datasource is hard-coded ({p.get('datasource')}), use {DATASOURCE}")
        if uid == PROMETHEUS and not any(v.get("type") == "datasource" and v.get("name") == "prometheus" for v in variables):
            problems.append(f"{where}: uses {PROMETHEUS} but the dashboard has no datasource variable 'prometheus'")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        for t in targets:
            t_uid = (t.get("datasource") or {}).get("uid")
            if t_uid != uid:
                problems.append(f"{where}: target {t.get('refId')}: datasource is hard-coded or differs from the panel's, use {uid}")
            if t_uid == PROMETHEUS:
                if not (t.get("expr") or "").strip():
                    problems.append(f"{where}: target {t.get('refId')}: no expr")
                continue
            if not (t.get("rawSql") or "").strip():
                problems.append(f"{where}: target {t.get('refId')}: no rawSql")
            if t.get("format") not in ("time_series", "table"):
                problems.append(f"{where}: target {t.get('refId')}: format {t.get('format')!r}")
    return problems


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "json")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".json"))
    problems = [p for f in files for p in check_file(f)]
    for p in problems:
        print(p)
    if not files:
        print(f"{folder}: no dashboards")
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
