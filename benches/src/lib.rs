//! Realistic OTLP payloads for the benchmarks: spans as an instrumented HTTP service emits them
//! (semantic-convention attributes, ids, a database child span, an event now and then), spread
//! over tenants with a Zipf-like skew.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event},
};
use rand::{Rng, rngs::StdRng};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// A tenant index with a Zipf-like skew (tenant 0 busiest).
pub fn zipf_tenant(rng: &mut StdRng, tenants: usize) -> usize {
    let u: f64 = rng.random::<f64>();
    // Inverse CDF of a continuous 1/x law over [1, tenants + 1).
    let x = ((tenants as f64 + 1.0).ln() * u).exp();
    (x as usize).saturating_sub(1).min(tenants - 1)
}

/// The resource of one tenant's service instance: semantic-convention attributes, the tenant in
/// `tenant.id`. Returns the service name too.
fn resource(rng: &mut StdRng, tenants: usize) -> (Resource, &'static str) {
    let tenant = zipf_tenant(rng, tenants);
    let service = ["orders-api", "search-api", "accounts-api", "reports-worker"][rng.random_range(0..4)];
    let resource = Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("service.version", s("2.14.3")),
            kv("tenant.id", s(&format!("tenant-{tenant:04}"))),
            kv("deployment.environment.name", s("production")),
            kv("host.name", s(&format!("node-{}", rng.random_range(0..40)))),
            kv("k8s.namespace.name", s("shop")),
            kv("k8s.pod.name", s(&format!("{service}-7d9f8b6c4-{:05x}", rng.random_range(0..0xfffff)))),
            kv("cloud.region", s("us-east-1")),
        ],
        ..Default::default()
    };
    (resource, service)
}

const ROUTES: [(&str, &str); 6] = [
    ("GET", "/api/v1/orders/{id}"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/search"),
    ("GET", "/api/v1/users/{id}"),
    ("POST", "/api/v1/reports/export"),
    ("GET", "/healthz"),
];

/// One export request of `spans` spans of one tenant's service, starting at `t0_nanos`.
pub fn trace_request(
    rng: &mut StdRng,
    spans: usize,
    tenants: usize,
    t0_nanos: u64,
) -> ExportTraceServiceRequest {
    let (resource, _) = resource(rng, tenants);
    let mut out = Vec::with_capacity(spans);
    let mut t = t0_nanos;
    while out.len() < spans {
        let trace_id: [u8; 16] = rng.random();
        let root_id: [u8; 8] = rng.random();
        let (method, route) = ROUTES[rng.random_range(0..ROUTES.len())];
        let dur = rng.random_range(2_000_000..400_000_000_u64);
        let failed = rng.random_range(0..100) < 3;
        let mut attrs = vec![
            kv("http.request.method", s(method)),
            kv("http.route", s(route)),
            kv("url.path", s(&route.replace("{id}", &rng.random_range(1..1_000_000).to_string()))),
            kv("http.response.status_code", Value::IntValue(if failed { 500 } else { 200 })),
            kv("server.address", s("api.example.com")),
            kv(
                "client.address",
                s(&format!("10.{}.{}.{}", rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>())),
            ),
            kv("user_agent.original", s("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36")),
            kv("network.protocol.version", s("1.1")),
        ];
        if rng.random_range(0..4) == 0 {
            attrs.push(kv("enduser.id", s(&format!("user-{}", rng.random_range(0..100_000)))));
        }
        let events = if failed {
            vec![Event {
                time_unix_nano: t + dur / 2,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", s("TimeoutError")),
                    kv("exception.message", s("upstream timed out after 30s")),
                ],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        };
        out.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: root_id.to_vec(),
            name: format!("{method} {route}"),
            kind: 2,
            start_time_unix_nano: t,
            end_time_unix_nano: t + dur,
            attributes: attrs,
            events,
            status: Some(Status { code: if failed { 2 } else { 0 }, message: String::new() }),
            ..Default::default()
        });
        if out.len() < spans {
            let child: [u8; 8] = rng.random();
            out.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: child.to_vec(),
                parent_span_id: root_id.to_vec(),
                name: "SELECT orders".into(),
                kind: 3,
                start_time_unix_nano: t + 1_000_000,
                end_time_unix_nano: t + dur / 2,
                attributes: vec![
                    kv("db.system.name", s("postgresql")),
                    kv("db.collection.name", s("orders")),
                    kv("db.operation.name", s("SELECT")),
                    kv("db.query.text", s("SELECT * FROM orders WHERE id = $1")),
                    kv("server.address", s("orders-db.internal")),
                ],
                status: Some(Status::default()),
                ..Default::default()
            });
        }
        t += rng.random_range(100_000..2_000_000);
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.tomcat-10.0".into(),
                    version: "2.10.0-alpha".into(),
                    ..Default::default()
                }),
                spans: out,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "io.opentelemetry.runtime-telemetry".into(),
        version: "2.10.0".into(),
        ..Default::default()
    }
}

/// One export request of about `points` metric data points of one tenant's service instance at
/// `t0_nanos`, as a runtime and HTTP server instrumentation reports them every 10 s: a CPU time
/// counter and memory gauge per state, and request-duration histograms per route and status
/// (14 buckets), cumulative.
pub fn metrics_request(
    rng: &mut StdRng,
    points: usize,
    tenants: usize,
    t0_nanos: u64,
) -> ExportMetricsServiceRequest {
    let (resource, _) = resource(rng, tenants);
    let start = t0_nanos - 3_600_000_000_000;
    let mut metrics = Vec::new();
    let mut n = 0;
    let mut t = t0_nanos;
    while n < points {
        let number = |value: number_data_point::Value, attrs: Vec<KeyValue>| NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: t,
            value: Some(value),
            ..Default::default()
        };
        let cpu: Vec<NumberDataPoint> = ["user", "system"]
            .iter()
            .map(|mode| {
                number(
                    number_data_point::Value::AsDouble(rng.random_range(10.0..5000.0)),
                    vec![kv("cpu.mode", s(mode))],
                )
            })
            .collect();
        let mem: Vec<NumberDataPoint> = ["heap", "non_heap"]
            .iter()
            .map(|ty| {
                number(
                    number_data_point::Value::AsInt(rng.random_range(1 << 20..1 << 30)),
                    vec![kv("jvm.memory.type", s(ty))],
                )
            })
            .collect();
        let bounds = vec![0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
        let hist: Vec<HistogramDataPoint> = ROUTES
            .iter()
            .take(points.saturating_sub(n + 4).clamp(1, ROUTES.len()))
            .map(|(method, route)| {
                let counts: Vec<u64> = (0..=bounds.len()).map(|_| rng.random_range(0..500)).collect();
                let count = counts.iter().sum();
                HistogramDataPoint {
                    attributes: vec![
                        kv("http.request.method", s(method)),
                        kv("http.route", s(route)),
                        kv("http.response.status_code", Value::IntValue(200)),
                    ],
                    start_time_unix_nano: start,
                    time_unix_nano: t,
                    count,
                    sum: Some(count as f64 * rng.random_range(0.01..0.3)),
                    bucket_counts: counts,
                    explicit_bounds: bounds.clone(),
                    min: Some(0.001),
                    max: Some(rng.random_range(1.0..12.0)),
                    ..Default::default()
                }
            })
            .collect();
        n += cpu.len() + mem.len() + hist.len();
        let cumulative = AggregationTemporality::Cumulative as i32;
        metrics.push(Metric {
            name: "process.cpu.time".into(),
            unit: "s".into(),
            data: Some(Data::Sum(Sum {
                data_points: cpu,
                aggregation_temporality: cumulative,
                is_monotonic: true,
            })),
            ..Default::default()
        });
        metrics.push(Metric {
            name: "jvm.memory.used".into(),
            unit: "By".into(),
            data: Some(Data::Gauge(Gauge { data_points: mem })),
            ..Default::default()
        });
        metrics.push(Metric {
            name: "http.server.request.duration".into(),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram { data_points: hist, aggregation_temporality: cumulative })),
            ..Default::default()
        });
        t += 10_000_000_000;
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope()), metrics, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

/// The data points of a metrics request.
pub fn data_points(req: &ExportMetricsServiceRequest) -> usize {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(x)) => x.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(x)) => x.data_points.len(),
            None => 0,
        })
        .sum()
}

/// One export request of `records` log records of one tenant's service, starting at
/// `t0_nanos`: access-log lines and now and then a warning or an error with a trace context.
pub fn logs_request(
    rng: &mut StdRng,
    records: usize,
    tenants: usize,
    t0_nanos: u64,
) -> ExportLogsServiceRequest {
    let (resource, service) = resource(rng, tenants);
    let mut t = t0_nanos;
    let log_records = (0..records)
        .map(|_| {
            let (method, route) = ROUTES[rng.random_range(0..ROUTES.len())];
            let roll = rng.random_range(0..100);
            let (severity, text, body) = match roll {
                0..=2 => (
                    17,
                    "ERROR",
                    format!("{method} {route} failed: upstream timed out after 30s ({service})"),
                ),
                3..=9 => (13, "WARN", format!("{method} {route} slow: {} ms", rng.random_range(1000..9000))),
                _ => (
                    9,
                    "INFO",
                    format!(
                        "{method} {} {} {} ms",
                        route.replace("{id}", &rng.random_range(1..1_000_000).to_string()),
                        200,
                        rng.random_range(1..400)
                    ),
                ),
            };
            t += rng.random_range(100_000..2_000_000);
            let trace_id: [u8; 16] = rng.random();
            let span_id: [u8; 8] = rng.random();
            LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: t + 1_000_000,
                severity_number: severity,
                severity_text: text.into(),
                body: Some(AnyValue { value: Some(s(&body)) }),
                attributes: vec![
                    kv("http.request.method", s(method)),
                    kv("http.route", s(route)),
                    kv("logger.name", s("access")),
                    kv("thread.name", s(&format!("http-nio-8080-exec-{}", rng.random_range(1..200)))),
                ],
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs { scope: Some(scope()), log_records, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}
