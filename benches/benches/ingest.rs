//! Micro benchmarks, each with its throughput so that results read as items per second:
//! OTLP decode, decode + conversion to Arrow rows (spans);
//! a Parquet/Delta commit of converted spans to a local lake (spans); the import of the real
//! FOCUS sample, CSV parse to committed Delta table (billing lines); splitting a shared line
//! between tenants (lines); anomaly scoring against 28 days of history (scores).
//!
//! `cargo bench --bench ingest` (release profile).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use rand::{SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use tenantscope_benches::trace_request;

use tenantscope_ingest::{
    billing::{BillingImportOptions, ExportFile, import_billing},
    otlp::{TenantResolver, convert, wire::TraceRequest},
};
use tenantscope_query::cost::{allocation::split, anomaly::score};
use tenantscope_schemas::{Lake, Table};

fn ingest(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let request = trace_request(&mut rng, 512, 100, 1_764_000_000_000_000_000);
    // As the receivers decode: strings as slices of the request's buffer.
    let bytes = bytes::Bytes::from(request.encode_to_vec());
    let resolver = TenantResolver::new(Default::default());
    let mut g = c.benchmark_group("otlp_traces_512");
    g.throughput(Throughput::Elements(512));
    g.bench_function("decode_protobuf", |b| {
        b.iter(|| TraceRequest::decode(bytes.clone()).map(|r| r.resource_spans.len()))
    });
    g.bench_function("decode_and_convert_to_arrow", |b| {
        b.iter(|| {
            let r = TraceRequest::decode(bytes.clone()).expect("valid");
            convert::traces(&r, &resolver, None).map(|c| c.accepted())
        })
    });
    g.finish();
    println!("request: {} spans, {} protobuf bytes ({} per span)", 512, bytes.len(), bytes.len() / 512);
}

/// Spans converted to Arrow, appended to a fresh local lake in one Delta commit.
fn lake_write(c: &mut Criterion) {
    let rt = runtime();
    let mut rng = StdRng::seed_from_u64(11);
    let resolver = TenantResolver::new(Default::default());
    let batches: Vec<_> = (0..8)
        .filter_map(|i| {
            let r = trace_request(&mut rng, 512, 100, 1_764_000_000_000_000_000 + i * 1_000_000_000);
            let r = TraceRequest::from_proto(&r).ok()?;
            convert::traces(&r, &resolver, None).ok().and_then(|c| c.batch)
        })
        .collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut g = c.benchmark_group("lake_write");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(10);
    g.bench_function("spans_append_4096", |b| {
        on_fresh_lake(b, &rt, async |lake| {
            lake.append(Table::Spans, &batches).await.expect("append").map(|c| c.rows)
        })
    });
    g.finish();
}

/// The real FOCUS 1.0 sample (1,000 lines of AWS, Azure and Oracle) imported into a fresh lake:
/// CSV parse, exact decimals and timestamps, tags, attribution, sort, Parquet, Delta commit.
fn focus_import(c: &mut Criterion) {
    let rt = runtime();
    let bytes = bytes::Bytes::from(
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/focus/focus_sample.csv"))
            .expect("sample"),
    );
    let lines = bytes.iter().filter(|b| **b == b'\n').count().saturating_sub(1);
    let mut g = c.benchmark_group("billing_import");
    g.throughput(Throughput::Elements(lines as u64));
    g.sample_size(10);
    g.bench_function("focus_sample_csv", |b| {
        on_fresh_lake(b, &rt, async |lake| {
            let file = ExportFile { name: "focus_sample.csv".into(), bytes: bytes.clone() };
            let options = BillingImportOptions { skip_invalid: true, ..Default::default() };
            import_billing(&lake, &[file], &options).await.expect("import").rows
        })
    });
    g.finish();
}

/// The cost model's arithmetic: one shared line split exactly between 100 tenants by usage
/// weights, and one modified z-score against 28 days.
fn cost_model(c: &mut Criterion) {
    let weights: BTreeMap<String, i128> =
        (0..100).map(|i| (format!("tenant-{i:03}"), 1_000_000 / (i + 1) as i128)).collect();
    let history: Vec<f64> = (0..28).map(|d| 100.0 + ((d * 37) % 11) as f64).collect();
    let mut g = c.benchmark_group("cost_model");
    g.throughput(Throughput::Elements(1));
    g.bench_function("split_line_100_tenants", |b| {
        b.iter(|| split(std::hint::black_box(123_456_789_012_345), &weights).map(|s| s.len()))
    });
    g.bench_function("anomaly_score_28_days", |b| b.iter(|| score(std::hint::black_box(180.0), &history)));
    g.finish();
}

/// Times `f` on a new empty lake in a new temporary folder each iteration (the folder made
/// outside the timing).
fn on_fresh_lake<T>(
    b: &mut criterion::Bencher<'_>,
    rt: &tokio::runtime::Runtime,
    f: impl AsyncFn(Lake) -> T,
) {
    b.iter_batched(
        || tempfile::tempdir().expect("temp dir"),
        |dir| {
            rt.block_on(async {
                let lake = Lake::open_url(dir.path().to_str().expect("utf-8")).await.expect("lake");
                f(lake).await
            })
        },
        BatchSize::PerIteration,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

criterion_group!(benches, ingest, lake_write, focus_import, cost_model);
criterion_main!(benches);
