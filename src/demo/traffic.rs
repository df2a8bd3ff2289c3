//! Demo telemetry: one server span per request (plus a database child span for most), error
//! logs tied to failed requests, and hourly metrics per tenant and service, with the usual
//! OpenTelemetry resource attributes.
//!
//! The telemetry is built as OTLP export requests, as an instrumented service would send them,
//! and goes through the OTLP receiver's own conversion and tenant attribution (the `tenant.id`
//! record attribute) to rows: what the demo shows is what ingest produces.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use chrono::{Datelike, Weekday};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric::Data, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status},
};
use rand::{Rng, rngs::StdRng};
use tenantscope_ingest::otlp::{
    TenantResolver, convert,
    wire::{LogsRequest, MetricsRequest, TraceRequest},
};

use super::fleet::Fleet;

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

/// Random id bytes (the same draws as the hex ids of earlier versions: the fleet is unchanged).
fn id(rng: &mut StdRng, bytes: usize) -> Vec<u8> {
    (0..bytes).map(|_| rng.random::<u8>()).collect()
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

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
}

fn text(v: &str) -> Value {
    Value::StringValue(v.to_string())
}

/// Records grouped by the resource (service, tenant) that emitted them, as an SDK batches them.
type ByResource<T> = BTreeMap<(&'static str, usize), Vec<T>>;

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
    pub(crate) spans: Option<RecordBatch>,
    pub(crate) logs: Option<RecordBatch>,
    pub(crate) metrics: Option<RecordBatch>,
    pub(crate) requests: Vec<i64>,
    /// Report exports that day (they drive object storage cost).
    pub(crate) exports: i64,
}

pub(crate) fn day(fleet: &Fleet, rng: &mut StdRng, d: u32) -> anyhow::Result<Day> {
    let day_start = fleet.day_start(d).timestamp_micros();
    let mut spans: ByResource<Span> = BTreeMap::new();
    let mut logs: ByResource<LogRecord> = BTreeMap::new();
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
                let trace = id(rng, 16);
                let span = id(rng, 8);
                let status_code = if failed {
                    500
                } else if route.method == "POST" {
                    201
                } else {
                    200
                };
                let start_ns = (start * 1000) as u64;
                let end_ns = start_ns + dur_ns as u64;
                let out = spans.entry((route.service, t)).or_default();
                out.push(Span {
                    trace_id: trace.clone(),
                    span_id: span.clone(),
                    name: format!("{} {}", route.method, route.route),
                    kind: 2,
                    start_time_unix_nano: start_ns,
                    end_time_unix_nano: end_ns,
                    attributes: vec![
                        kv("tenant.id", text(&tenant.id)),
                        kv("http.request.method", text(route.method)),
                        kv("http.route", text(route.route)),
                        kv("http.response.status_code", Value::IntValue(status_code)),
                        kv("url.scheme", text("https")),
                    ],
                    status: Some(Status {
                        code: if failed { 2 } else { 0 },
                        message: if failed { "upstream request timeout".into() } else { String::new() },
                    }),
                    ..Default::default()
                });
                if let Some(table) = route.db_table {
                    let db_ns = (secs * 0.4 * 1e9) as i64;
                    let db_start = start + (dur_ns / 1000) / 10;
                    let op = if route.method == "POST" { "INSERT" } else { "SELECT" };
                    out.push(Span {
                        trace_id: trace.clone(),
                        span_id: id(rng, 8),
                        parent_span_id: span.clone(),
                        name: format!("{op} {table}"),
                        kind: 3,
                        start_time_unix_nano: (db_start * 1000) as u64,
                        end_time_unix_nano: (db_start * 1000 + db_ns) as u64,
                        attributes: vec![
                            kv("tenant.id", text(&tenant.id)),
                            kv("db.system.name", text("postgresql")),
                            kv("db.operation.name", text(op)),
                            kv("db.collection.name", text(table)),
                            kv("server.address", text("orders-db.internal")),
                        ],
                        status: Some(Status::default()),
                        ..Default::default()
                    });
                }
                let log =
                    |severity: i32, severity_text: &str, body: String, attrs: Vec<KeyValue>| LogRecord {
                        time_unix_nano: end_ns / 1000 * 1000,
                        observed_time_unix_nano: (end_ns / 1000 + 1_500) * 1000,
                        severity_number: severity,
                        severity_text: severity_text.into(),
                        body: Some(AnyValue { value: Some(Value::StringValue(body)) }),
                        attributes: attrs,
                        trace_id: trace.clone(),
                        span_id: span.clone(),
                        ..Default::default()
                    };
                if failed {
                    logs.entry((route.service, t)).or_default().push(log(
                        17,
                        "ERROR",
                        format!("{} {} failed: upstream request timeout", route.method, route.route),
                        vec![kv("tenant.id", text(&tenant.id)), kv("exception.type", text("TimeoutError"))],
                    ));
                } else if r == EXPORT_ROUTE {
                    // i32, as the draw always was: the same seed keeps giving the same fleet.
                    let rows = i64::from(rng.random_range(1_000..500_000_i32));
                    logs.entry((route.service, t)).or_default().push(log(
                        9,
                        "INFO",
                        format!("report export finished in {:.1} s", secs),
                        vec![kv("tenant.id", text(&tenant.id)), kv("report.rows", Value::IntValue(rows))],
                    ));
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
    let resolver = TenantResolver::new(Default::default());
    let traces = ExportTraceServiceRequest {
        resource_spans: spans
            .into_iter()
            .map(|((service, t), spans)| ResourceSpans {
                resource: Some(resource(fleet, service, t)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("io.opentelemetry.http")),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    };
    let log_request = ExportLogsServiceRequest {
        resource_logs: logs
            .into_iter()
            .map(|((service, t), log_records)| ResourceLogs {
                resource: Some(resource(fleet, service, t)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope("app.logger")),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    };
    let now = chrono::Utc::now().timestamp_micros();
    Ok(Day {
        spans: rows(convert::traces(&TraceRequest::from_proto(&traces)?, &resolver, None)?)?,
        logs: rows(convert::logs(&LogsRequest::from_proto(&log_request)?, &resolver, None, now)?)?,
        metrics: rows(convert::metrics(
            &MetricsRequest::from_proto(&metrics_request(fleet, &aggs, day_start))?,
            &resolver,
            None,
        )?)?,
        requests,
        exports,
    })
}

/// The rows of a converted request; the demo's requests are all valid.
fn rows(c: convert::Converted) -> anyhow::Result<Option<RecordBatch>> {
    anyhow::ensure!(c.rejected == 0, "the demo built invalid telemetry: {}", c.message);
    Ok(c.batch)
}

fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope { name: name.to_string(), version: "1.0.0".into(), ..Default::default() }
}

fn resource(fleet: &Fleet, service: &str, tenant: usize) -> Resource {
    let t = &fleet.tenants[tenant];
    // Tenants with a dedicated database also run in a namespace of their own.
    let ns = if t.dedicated_db { format!("tenant-{}", t.id) } else { "prod".to_string() };
    let mut attributes = vec![
        kv("service.name", text(service)),
        kv("service.version", text("1.14.2")),
        kv("deployment.environment.name", text("production")),
        kv("cloud.provider", text("aws")),
        kv("cloud.region", text("us-east-1")),
        kv("k8s.cluster.name", text("prod-use1")),
        kv("k8s.namespace.name", text(&ns)),
        kv("k8s.pod.name", text(&format!("{service}-7f9c{}", tenant % 4))),
    ];
    if let Some(account) = &t.account {
        attributes.push(kv("cloud.account.id", text(account)));
    }
    Resource { attributes, ..Default::default() }
}

/// Per hour, tenant and route: `http.server.request.duration` (delta histogram, seconds) and
/// `app.tenant.cpu.time` (delta monotonic sum, CPU seconds, ~35% of wall time).
fn metrics_request(fleet: &Fleet, aggs: &[HourAgg], day_start: i64) -> ExportMetricsServiceRequest {
    let nt = fleet.tenants.len();
    let mut by_resource: ByResource<Metric> = BTreeMap::new();
    for (i, a) in aggs.iter().enumerate().filter(|(_, a)| a.count > 0) {
        let r = i % ROUTES.len();
        let t = (i / ROUTES.len()) % nt;
        let h = (i / ROUTES.len() / nt) as i64;
        let route = &ROUTES[r];
        let t0 = ((day_start + h * 3_600_000_000) * 1000) as u64;
        let t1 = t0 + 3_600_000_000_000;
        let tenant = &fleet.tenants[t];
        let metrics = by_resource.entry((route.service, t)).or_default();
        metrics.push(Metric {
            name: "http.server.request.duration".into(),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram {
                aggregation_temporality: 1,
                data_points: vec![HistogramDataPoint {
                    attributes: vec![
                        kv("tenant.id", text(&tenant.id)),
                        kv("http.request.method", text(route.method)),
                        kv("http.route", text(route.route)),
                    ],
                    start_time_unix_nano: t0,
                    time_unix_nano: t1,
                    count: a.count as u64,
                    sum: Some(a.sum_s),
                    min: Some(a.min_s),
                    max: Some(a.max_s),
                    bucket_counts: a.buckets.iter().map(|b| *b as u64).collect(),
                    explicit_bounds: BOUNDS.to_vec(),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        });
        metrics.push(Metric {
            name: "app.tenant.cpu.time".into(),
            unit: "s".into(),
            data: Some(Data::Sum(Sum {
                aggregation_temporality: 1,
                is_monotonic: true,
                data_points: vec![NumberDataPoint {
                    attributes: vec![kv("tenant.id", text(&tenant.id))],
                    start_time_unix_nano: t0,
                    time_unix_nano: t1,
                    value: Some(number_data_point::Value::AsDouble(
                        (a.sum_s * 0.35 * 1000.0).round() / 1000.0,
                    )),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: by_resource
            .into_iter()
            .map(|((service, t), metrics)| ResourceMetrics {
                resource: Some(resource(fleet, service, t)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope("app.metrics")),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}
