"""What Grafana's PostgreSQL datasource does to a panel's SQL before sending it: template
variables (as the frontend interpolates them for SQL datasources) and then the macros of
pkg/tsdb/grafana-postgresql-datasource/macros.go (without TimescaleDB)."""

import datetime as dt
import re

FROM = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)
TO = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)


def interpolate(sql, variables):
    """`$name` / `${name}`: a multi-value or All selection becomes 'a','b' (SQL-quoted), a
    single value its quoted text; built-ins such as $__interval go in as they are."""
    def value(name):
        v = variables[name]
        if isinstance(v, list):
            return ",".join("'" + x.replace("'", "''") + "'" for x in v)
        return v
    sql = re.sub(r"\$\{([_a-zA-Z0-9]+)\}", lambda m: value(m.group(1)) if m.group(1) in variables else m.group(0), sql)
    return re.sub(r"\$([_a-zA-Z0-9]+)\b(?!\()", lambda m: value(m.group(1)) if m.group(1) in variables else m.group(0), sql)


def interval_seconds(text):
    m = re.fullmatch(r"(\d+)([smhd])", text.strip("'"))
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def seconds(n):
    # Grafana prints interval.Seconds() with Go's %v: 3600 for whole seconds.
    return f"{n:g}" if n != int(n) else str(int(n))


def grafana_expand(sql, start=FROM, end=TO):
    """pkg/tsdb/grafana-postgresql-datasource/macros.go, without TimescaleDB."""
    rfc = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")

    def macro(m):
        name, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc(start)}' AND '{rfc(end)}'"
        if name == "__timeFrom":
            return f"'{rfc(start)}'"
        if name == "__timeTo":
            return f"'{rfc(end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            s = seconds(interval_seconds(args[1]))
            g = f"floor(extract(epoch from {args[0]})/{s})*{s}"
            return g + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            s = seconds(interval_seconds(args[1]))
            g = f"floor(({args[0]})/{s})*{s}"
            return g + (' AS "time"' if name == "__unixEpochGroupAlias" else "")
        raise AssertionError(f"unknown macro {name}")

    # Before 5.3, $__timeGroup(...) directly followed by ',' also named the column "time".
    sql = re.sub(r"\$__timeGroup\(([^\)]*)\),", lambda m: f"$__timeGroupAlias({m.group(1)}),", sql)
    return re.sub(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)", macro, sql)
