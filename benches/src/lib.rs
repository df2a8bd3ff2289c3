//! Realistic OTLP payloads for the benchmarks: spans as an instrumented HTTP service emits them
//! (semantic-convention attributes, ids, a database child span, an event now and then), spread
//! over tenants with a Zipf-like skew.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
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
