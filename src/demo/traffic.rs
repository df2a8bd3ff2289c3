//! Demo telemetry: one server span per request (plus a database child span for most), error
//! logs tied to failed requests, and hourly metrics per tenant and service, with the usual
//! OpenTelemetry resource attributes.

use std::sync::Arc;

use arrow::{
    array::{ArrayRef, RecordBatch},
    datatypes::Field,
};
use chrono::{Datelike, Weekday};
use rand::{Rng, rngs::StdRng};
use tenantscope_schemas::{Table, columns::*};

use super::{cols::*, fleet::Fleet};

struct Route {
    method: &'static str,
    route: &'static str,
    service: &'static str,
    median_ms: f64,
    db_table: Option<&'static str>,
}

const ROUTES: [Route; 5] = [
    Route { method: "GET", route: "/api/v1/search", service: "search-api", median_ms: 45.0, db_table: None },
    Route {
        method: "POST",
        route: "/api/v1/orders",
        service: "orders-api",
        median_ms: 80.0,
        db_table: Some("orders"),
    },
    Route {
        method: "GET",
        route: "/api/v1/orders/{id}",
        service: "orders-api",
        median_ms: 22.0,
        db_table: Some("orders"),
    },
    Route {
        method: "GET",
        route: "/api/v1/users/{id}",
        service: "accounts-api",
        median_ms: 14.0,
        db_table: Some("users"),
    },
    Route {
        method: "POST",
        route: "/api/v1/reports/export",
        service: "reports-worker",
        median_ms: 2400.0,
        db_table: Some("events"),
    },
];
const EXPORT_ROUTE: usize = 4;
const BOUNDS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn hex(rng: &mut StdRng, bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

/// Requests of tenant `t` in hour `h` of day `d`: Zipf weight, a diurnal curve, quieter
/// weekends, noise, and one usage spike on the last day for the anomaly views to find.
fn requests_in_hour(fleet: &Fleet, rng: &mut StdRng, t: usize, d: u32, h: u32) -> i64 {
    let tenant = &fleet.tenants[t];
    let day = fleet.day(d);
    let weekend = matches!(day.weekday(), Weekday::Sat | Weekday::Sun);
    let diurnal = 1.0 + 0.8 * ((f64::from(h) - 9.0) / 24.0 * std::f64::consts::TAU).cos();
    let mut expected = f64::from(fleet.peak_requests_per_day) * tenant.weight * diurnal / 24.0;
    if weekend {
        expected *= 0.55;
    }
    if t == 5 % fleet.tenants.len() && d + 1 == fleet.days && (14..18).contains(&h) {
        expected *= 8.0;
    }
    (expected * (1.0 + 0.1 * normal(rng))).round().max(0.0) as i64
}

#[derive(Default)]
struct Spans {
    time: Vec<i64>,
    end: Vec<i64>,
    dur: Vec<i64>,
    trace: Vec<String>,
    span: Vec<String>,
    parent: Vec<Option<String>>,
    name: Vec<String>,
    kind: Vec<&'static str>,
    status: Vec<&'static str>,
    message: Vec<Option<&'static str>>,
    service: Vec<&'static str>,
    tenant: Vec<usize>,
    attrs: Vec<Vec<(&'static str, String)>>,
}

#[derive(Default)]
struct Logs {
    time: Vec<i64>,
    sev: Vec<i32>,
    sev_text: Vec<&'static str>,
    body: Vec<String>,
    trace: Vec<Option<String>>,
    span: Vec<Option<String>>,
    service: Vec<&'static str>,
    tenant: Vec<usize>,
    attrs: Vec<Vec<(&'static str, String)>>,
}

/// Per tenant and service in one hour: latency histogram and CPU seconds.
#[derive(Default, Clone)]
struct HourAgg {
    count: i64,
    sum_s: f64,
    min_s: f64,
    max_s: f64,
    buckets: [i64; 12],
}

/// One day of telemetry as batches for `spans`, `logs` and `metrics`, and each tenant's
/// request count that day.
pub(crate) struct Day {
    pub(crate) spans: RecordBatch,
    pub(crate) logs: RecordBatch,
    pub(crate) metrics: RecordBatch,
    pub(crate) requests: Vec<i64>,
    /// Report exports that day (they drive object storage cost).
    pub(crate) exports: i64,
}

pub(crate) fn day(fleet: &Fleet, rng: &mut StdRng, d: u32) -> anyhow::Result<Day> {
    let day_start = fleet.day_start(d).timestamp_micros();
    let date = i32::try_from(fleet.day(d).num_days_from_ce() - 719_163)?; // days since 1970-01-01
    let mut spans = Spans::default();
    let mut logs = Logs::default();
    let mut requests = vec![0_i64; fleet.tenants.len()];
    let mut exports = 0_i64;
    // (hour, tenant, route) -> aggregate
    let mut aggs: Vec<HourAgg> = vec![HourAgg::default(); 24 * fleet.tenants.len() * ROUTES.len()];
    for h in 0..24_u32 {
        for (t, tenant) in fleet.tenants.iter().enumerate() {
            let n = requests_in_hour(fleet, rng, t, d, h);
            requests[t] += n;
            for _ in 0..n {
                let r = if rng.random::<f64>() < tenant.export_share {
                    EXPORT_ROUTE
                } else {
                    rng.random_range(0..EXPORT_ROUTE)
                };
                let route = &ROUTES[r];
                exports += i64::from(r == EXPORT_ROUTE);
                let start = day_start + i64::from(h) * 3_600_000_000 + rng.random_range(0..3_600_000_000);
                let secs = route.median_ms / 1000.0 * (0.6 * normal(rng)).exp();
                let dur_ns = (secs * 1e9) as i64;
                let failed = rng.random::<f64>() < tenant.error_rate;
                let trace = hex(rng, 16);
                let span = hex(rng, 8);
                let status_code = if failed {
                    500
                } else if route.method == "POST" {
                    201
                } else {
                    200
                };
                spans.time.push(start);
                spans.end.push(start + dur_ns / 1000);
                spans.dur.push(dur_ns);
                spans.trace.push(trace.clone());
                spans.span.push(span.clone());
                spans.parent.push(None);
                spans.name.push(format!("{} {}", route.method, route.route));
                spans.kind.push("server");
                spans.status.push(if failed { "error" } else { "unset" });
                spans.message.push(failed.then_some("upstream request timeout"));
                spans.service.push(route.service);
                spans.tenant.push(t);
                spans.attrs.push(vec![
                    ("tenant.id", tenant.id.clone()),
                    ("http.request.method", route.method.to_string()),
                    ("http.route", route.route.to_string()),
                    ("http.response.status_code", status_code.to_string()),
                    ("url.scheme", "https".to_string()),
                ]);
                if let Some(table) = route.db_table {
                    let db_secs = secs * 0.4;
                    let db_ns = (db_secs * 1e9) as i64;
                    let db_start = start + (dur_ns / 1000) / 10;
                    let op = if route.method == "POST" { "INSERT" } else { "SELECT" };
                    spans.time.push(db_start);
                    spans.end.push(db_start + db_ns / 1000);
                    spans.dur.push(db_ns);
                    spans.trace.push(trace.clone());
                    spans.span.push(hex(rng, 8));
                    spans.parent.push(Some(span.clone()));
                    spans.name.push(format!("{op} {table}"));
                    spans.kind.push("client");
                    spans.status.push("unset");
                    spans.message.push(None);
                    spans.service.push(route.service);
                    spans.tenant.push(t);
                    spans.attrs.push(vec![
                        ("tenant.id", tenant.id.clone()),
                        ("db.system.name", "postgresql".to_string()),
                        ("db.operation.name", op.to_string()),
                        ("db.collection.name", table.to_string()),
                        ("server.address", "orders-db.internal".to_string()),
                    ]);
                }
                if failed {
                    logs.time.push(start + dur_ns / 1000);
                    logs.sev.push(17);
                    logs.sev_text.push("ERROR");
                    logs.body
                        .push(format!("{} {} failed: upstream request timeout", route.method, route.route));
                    logs.trace.push(Some(trace));
                    logs.span.push(Some(span));
                    logs.service.push(route.service);
                    logs.tenant.push(t);
                    logs.attrs.push(vec![
                        ("tenant.id", tenant.id.clone()),
                        ("exception.type", "TimeoutError".to_string()),
                    ]);
                } else if r == EXPORT_ROUTE {
                    logs.time.push(start + dur_ns / 1000);
                    logs.sev.push(9);
                    logs.sev_text.push("INFO");
                    logs.body.push(format!("report export finished in {:.1} s", secs));
                    logs.trace.push(Some(trace));
                    logs.span.push(Some(span));
                    logs.service.push(route.service);
                    logs.tenant.push(t);
                    logs.attrs.push(vec![
                        ("tenant.id", tenant.id.clone()),
                        ("report.rows", rng.random_range(1_000..500_000).to_string()),
                    ]);
                }
                let a = &mut aggs[(h as usize * fleet.tenants.len() + t) * ROUTES.len() + r];
                if a.count == 0 {
                    a.min_s = secs;
                    a.max_s = secs;
                }
                a.count += 1;
                a.sum_s += secs;
                a.min_s = a.min_s.min(secs);
                a.max_s = a.max_s.max(secs);
                a.buckets[BOUNDS.iter().position(|b| secs <= *b).unwrap_or(BOUNDS.len())] += 1;
            }
        }
    }
    Ok(Day {
        spans: spans_batch(fleet, spans, date)?,
        logs: logs_batch(fleet, logs, date)?,
        metrics: metrics_batch(fleet, &aggs, day_start, date)?,
        requests,
        exports,
    })
}

fn resource(fleet: &Fleet, service: &str, tenant: usize) -> Vec<(&'static str, String)> {
    let t = &fleet.tenants[tenant];
    // Tenants with a dedicated database also run in a namespace of their own.
    let ns = if t.dedicated_db { format!("tenant-{}", t.id) } else { "prod".to_string() };
    let mut kv = vec![
        ("service.name", service.to_string()),
        ("service.version", "1.14.2".to_string()),
        ("deployment.environment.name", "production".to_string()),
        ("cloud.provider", "aws".to_string()),
        ("cloud.region", "us-east-1".to_string()),
        ("k8s.cluster.name", "prod-use1".to_string()),
        ("k8s.namespace.name", ns),
        ("k8s.pod.name", format!("{service}-7f9c{}", tenant % 4)),
    ];
    if let Some(account) = &t.account {
        kv.push(("cloud.account.id", account.clone()));
    }
    kv
}

fn map_col(rows: impl Iterator<Item = Vec<(&'static str, String)>>) -> ArrayRef {
    let mut b = map_builder();
    for kv in rows {
        let kv: Vec<(&str, &str)> = kv.iter().map(|(k, v)| (*k, v.as_str())).collect();
        push_map(&mut b, &kv);
    }
    fin(b)
}

fn spans_batch(fleet: &Fleet, s: Spans, date: i32) -> anyhow::Result<RecordBatch> {
    let n = s.time.len();
    let ts = |v: &[i64]| -> ArrayRef {
        let mut b = ts_builder(v.len());
        b.append_slice(v);
        fin(b)
    };
    let strs = |v: Vec<String>| -> ArrayRef { Arc::new(arrow::array::StringArray::from(v)) };
    let resources = map_col(s.service.iter().zip(&s.tenant).map(|(svc, t)| resource(fleet, svc, *t)));
    let tenant_ids: Vec<&str> = s.tenant.iter().map(|t| fleet.tenants[*t].id.as_str()).collect();
    batch(
        Table::Spans,
        vec![
            (TIME, ts(&s.time)),
            (END_TIME, ts(&s.end)),
            (DURATION_NS, Arc::new(arrow::array::Int64Array::from(s.dur))),
            (TRACE_ID, strs(s.trace)),
            (SPAN_ID, strs(s.span)),
            (PARENT_SPAN_ID, Arc::new(arrow::array::StringArray::from(s.parent))),
            (NAME, strs(s.name)),
            (KIND, Arc::new(arrow::array::StringArray::from(s.kind))),
            (STATUS_CODE, Arc::new(arrow::array::StringArray::from(s.status))),
            (STATUS_MESSAGE, Arc::new(arrow::array::StringArray::from(s.message))),
            (SERVICE_NAME, Arc::new(arrow::array::StringArray::from(s.service.clone()))),
            (TENANT_ID, Arc::new(arrow::array::StringArray::from(tenant_ids))),
            (ATTRIBUTES, map_col(s.attrs.into_iter())),
            (RESOURCE_ATTRIBUTES, resources),
            (SCOPE_NAME, Arc::new(arrow::array::StringArray::from(vec!["io.opentelemetry.http"; n]))),
            (DATE, Arc::new(arrow::array::Date32Array::from(vec![date; n]))),
        ],
    )
}

fn logs_batch(fleet: &Fleet, l: Logs, date: i32) -> anyhow::Result<RecordBatch> {
    let n = l.time.len();
    let mut time = ts_builder(n);
    time.append_slice(&l.time);
    let mut observed = ts_builder(n);
    observed.append_slice(&l.time.iter().map(|t| t + 1_500).collect::<Vec<_>>());
    let resources = map_col(l.service.iter().zip(&l.tenant).map(|(svc, t)| resource(fleet, svc, *t)));
    let tenant_ids: Vec<&str> = l.tenant.iter().map(|t| fleet.tenants[*t].id.as_str()).collect();
    batch(
        Table::Logs,
        vec![
            (TIME, fin(time)),
            (OBSERVED_TIME, fin(observed)),
            (SEVERITY_NUMBER, Arc::new(arrow::array::Int32Array::from(l.sev))),
            (SEVERITY_TEXT, Arc::new(arrow::array::StringArray::from(l.sev_text))),
            (BODY, Arc::new(arrow::array::StringArray::from(l.body))),
            (TRACE_ID, Arc::new(arrow::array::StringArray::from(l.trace))),
            (SPAN_ID, Arc::new(arrow::array::StringArray::from(l.span))),
            (SERVICE_NAME, Arc::new(arrow::array::StringArray::from(l.service.clone()))),
            (TENANT_ID, Arc::new(arrow::array::StringArray::from(tenant_ids))),
            (ATTRIBUTES, map_col(l.attrs.into_iter())),
            (RESOURCE_ATTRIBUTES, resources),
            (SCOPE_NAME, Arc::new(arrow::array::StringArray::from(vec!["app.logger"; n]))),
            (DATE, Arc::new(arrow::array::Date32Array::from(vec![date; n]))),
        ],
    )
}

/// Per hour, tenant and route: `http.server.request.duration` (delta histogram, seconds) and
/// `app.tenant.cpu.time` (delta monotonic sum, CPU seconds, ~35% of wall time).
fn metrics_batch(fleet: &Fleet, aggs: &[HourAgg], day_start: i64, date: i32) -> anyhow::Result<RecordBatch> {
    let (mut time, mut start) = (ts_builder(0), ts_builder(0));
    let (mut name, mut mtype, mut unit, mut temporality) = (Str::new(), Str::new(), Str::new(), Str::new());
    let (mut value, mut sum, mut min, mut max) = (F64::new(), F64::new(), F64::new(), F64::new());
    let mut count = I64::new();
    let mut buckets = arrow::array::ListBuilder::new(I64::new()).with_field(Arc::new(Field::new(
        "element",
        arrow::datatypes::DataType::Int64,
        true,
    )));
    let mut bounds = arrow::array::ListBuilder::new(F64::new()).with_field(Arc::new(Field::new(
        "element",
        arrow::datatypes::DataType::Float64,
        true,
    )));
    let mut monotonic = arrow::array::BooleanBuilder::new();
    let (mut service, mut tenant_col) = (Str::new(), Str::new());
    let mut attrs = map_builder();
    let mut res = map_builder();
    let nt = fleet.tenants.len();
    for (i, a) in aggs.iter().enumerate().filter(|(_, a)| a.count > 0) {
        let r = i % ROUTES.len();
        let t = (i / ROUTES.len()) % nt;
        let h = (i / ROUTES.len() / nt) as i64;
        let route = &ROUTES[r];
        let t0 = day_start + h * 3_600_000_000;
        let tenant = &fleet.tenants[t];
        let resource_kv = resource(fleet, route.service, t);
        let resource_kv: Vec<(&str, &str)> = resource_kv.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for metric in ["http.server.request.duration", "app.tenant.cpu.time"] {
            time.append_value(t0 + 3_600_000_000);
            start.append_value(t0);
            name.append_value(metric);
            temporality.append_value("delta");
            service.append_value(route.service);
            tenant_col.append_value(&tenant.id);
            push_map(&mut res, &resource_kv);
            if metric == "app.tenant.cpu.time" {
                mtype.append_value("sum");
                unit.append_value("s");
                value.append_value((a.sum_s * 0.35 * 1000.0).round() / 1000.0);
                monotonic.append_value(true);
                count.append_null();
                sum.append_null();
                min.append_null();
                max.append_null();
                buckets.append_null();
                bounds.append_null();
                push_map(&mut attrs, &[("tenant.id", &tenant.id)]);
            } else {
                mtype.append_value("histogram");
                unit.append_value("s");
                value.append_null();
                monotonic.append_null();
                count.append_value(a.count);
                sum.append_value(a.sum_s);
                min.append_value(a.min_s);
                max.append_value(a.max_s);
                buckets.values().append_slice(&a.buckets);
                buckets.append(true);
                bounds.values().append_slice(&BOUNDS);
                bounds.append(true);
                push_map(
                    &mut attrs,
                    &[
                        ("tenant.id", &tenant.id),
                        ("http.request.method", route.method),
                        ("http.route", route.route),
                    ],
                );
            }
        }
    }
    let n = arrow::array::ArrayBuilder::len(&name);
    batch(
        Table::Metrics,
        vec![
            (TIME, fin(time)),
            (START_TIME, fin(start)),
            (METRIC_NAME, fin(name)),
            (METRIC_TYPE, fin(mtype)),
            (UNIT, fin(unit)),
            (VALUE, fin(value)),
            (COUNT, fin(count)),
            (SUM, fin(sum)),
            ("min", fin(min)),
            ("max", fin(max)),
            (BUCKET_COUNTS, fin(buckets)),
            (EXPLICIT_BOUNDS, fin(bounds)),
            (TEMPORALITY, fin(temporality)),
            (IS_MONOTONIC, fin(monotonic)),
            (SERVICE_NAME, fin(service)),
            (TENANT_ID, fin(tenant_col)),
            (ATTRIBUTES, fin(attrs)),
            (RESOURCE_ATTRIBUTES, fin(res)),
            (SCOPE_NAME, Arc::new(arrow::array::StringArray::from(vec!["app.metrics"; n]))),
            (DATE, Arc::new(arrow::array::Date32Array::from(vec![date; n]))),
        ],
    )
}
