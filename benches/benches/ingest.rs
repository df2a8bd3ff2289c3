//! OTLP ingest micro benchmarks: protobuf decode, decode + conversion to Arrow rows, and the
//! write-ahead log's encoding of those rows. Throughput in spans.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rand::{SeedableRng, rngs::StdRng};
use tenantscope_benches::trace_request;
use tenantscope_ingest::otlp::{TenantResolver, convert, wal};

fn ingest(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let request = trace_request(&mut rng, 512, 100, 1_764_000_000_000_000_000);
    let bytes = request.encode_to_vec();
    let resolver = TenantResolver::new(Default::default());
    let mut g = c.benchmark_group("otlp_traces_512");
    g.throughput(Throughput::Elements(512));
    g.bench_function("decode_protobuf", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(bytes.as_slice()).map(|r| r.resource_spans.len()))
    });
    g.bench_function("decode_and_convert_to_arrow", |b| {
        b.iter(|| {
            let r = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("valid");
            convert::traces(&r, &resolver, None).map(|c| c.accepted())
        })
    });
    g.bench_function("convert_and_wal_encode", |b| {
        b.iter_batched(
            || request.clone(),
            |r| {
                let c = convert::traces(&r, &resolver, None).expect("valid");
                c.batch.as_ref().map(|b| wal::encode(b).map(|p| p.len()))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    println!("request: {} spans, {} protobuf bytes ({} per span)", 512, bytes.len(), bytes.len() / 512);
}

criterion_group!(benches, ingest);
criterion_main!(benches);
