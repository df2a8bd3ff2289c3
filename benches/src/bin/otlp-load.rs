//! OTLP/gRPC load generator: many tenants' realistic spans in batches, from several concurrent
//! clients, for a fixed time. Reports accepted spans per second, refusals (RESOURCE_EXHAUSTED),
//! request latency percentiles, and, given the server's pid, the server's CPU seconds, spans
//! per server CPU-second (per core) and peak RSS.
//!
//!   otlp-load --endpoint http://127.0.0.1:4317 --seconds 20 --clients 8 --server-pid PID

use std::time::{Duration, Instant};

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rand::{SeedableRng, rngs::StdRng};
use tenantscope_benches::trace_request;

#[derive(Parser, Debug)]
struct Args {
    /// The OTLP/gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// How long to send.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent clients (each one connection, one request in flight).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Spans per request.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Tenants (Zipf-skewed).
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Distinct prebuilt requests per client (cycled).
    #[arg(long, default_value_t = 32)]
    distinct: usize,
    /// The server's pid: report its CPU time and peak RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Instead of sending: time protobuf decode, decode + conversion to Arrow rows, and
    /// conversion + WAL encoding of the generated requests on this thread, for `--seconds`
    /// each (the same loops as the criterion bench, without criterion).
    #[arg(long)]
    micro: bool,
}

/// Spans per second of `f` over `requests` (each of `batch` spans), run for about `seconds`.
fn rate(seconds: u64, batch: usize, requests: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        f(n % requests);
        n += 1;
    }
    (n * batch) as f64 / start.elapsed().as_secs_f64()
}

fn micro(args: &Args) -> anyhow::Result<()> {
    use prost::Message;
    use tenantscope_ingest::otlp::{TenantResolver, convert, wal};
    let mut rng = StdRng::seed_from_u64(7);
    let requests: Vec<_> = (0..args.distinct)
        .map(|i| trace_request(&mut rng, args.batch, args.tenants, 1_764_000_000_000_000_000 + i as u64))
        .collect();
    let encoded: Vec<Vec<u8>> = requests.iter().map(|r| r.encode_to_vec()).collect();
    let bytes_per_span = encoded.iter().map(Vec::len).sum::<usize>() / (requests.len() * args.batch);
    let resolver = TenantResolver::new(Default::default());
    type Req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let decode = rate(args.seconds, args.batch, requests.len(), |i| {
        std::hint::black_box(Req::decode(encoded[i].as_slice()).map(|r| r.resource_spans.len()).ok());
    });
    let convert_rate = rate(args.seconds, args.batch, requests.len(), |i| {
        let r = Req::decode(encoded[i].as_slice()).expect("valid");
        std::hint::black_box(convert::traces(&r, &resolver, None).map(|c| c.accepted()).ok());
    });
    let wal_rate = rate(args.seconds, args.batch, requests.len(), |i| {
        let r = Req::decode(encoded[i].as_slice()).expect("valid");
        let c = convert::traces(&r, &resolver, None).expect("valid");
        std::hint::black_box(c.batch.as_ref().map(|b| wal::encode(b).map(|p| p.len())));
    });
    if args.json {
        println!(
            "{{\"bytes_per_span\":{bytes_per_span},\"decode_spans_per_s\":{decode:.0},\"decode_convert_spans_per_s\":{convert_rate:.0},\"decode_convert_wal_encode_spans_per_s\":{wal_rate:.0}}}"
        );
    } else {
        println!("{bytes_per_span} protobuf bytes per span, one thread:");
        println!("  decode                      {decode:>12.0} spans/s");
        println!("  decode + convert to Arrow   {convert_rate:>12.0} spans/s");
        println!("  + WAL (Arrow IPC) encoding  {wal_rate:>12.0} spans/s");
    }
    Ok(())
}

/// utime + stime of a process in seconds (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.micro {
        return micro(&args);
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let cpu0 = args.server_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let endpoint = args.endpoint.clone();
        let (batch, tenants, distinct) = (args.batch, args.tenants, args.distinct);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64 + 1);
            let t0 = 1_764_000_000_000_000_000_u64;
            let requests: Vec<_> = (0..distinct)
                .map(|i| trace_request(&mut rng, batch, tenants, t0 + (i as u64) * 1_000_000_000))
                .collect();
            let mut client = TraceServiceClient::connect(endpoint).await?.max_decoding_message_size(64 << 20);
            let (mut ok, mut refused, mut failed) = (0_u64, 0_u64, 0_u64);
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let req = requests[i % requests.len()].clone();
                i += 1;
                let sent = Instant::now();
                match client.export(req).await {
                    Ok(r) => {
                        let rejected = r
                            .get_ref()
                            .partial_success
                            .as_ref()
                            .map_or(0, |p| p.rejected_spans.max(0) as u64);
                        ok += batch as u64 - rejected;
                        latencies.push(sent.elapsed().as_secs_f64());
                    }
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        refused += batch as u64;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => failed += 1,
                }
            }
            anyhow::Ok((ok, refused, failed, latencies))
        }));
    }
    let (mut ok, mut refused, mut failed, mut lat) = (0, 0, 0, Vec::new());
    for t in tasks {
        let (o, r, f, l) = t.await??;
        ok += o;
        refused += r;
        failed += f;
        lat.extend(l);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu0, args.server_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN) * 1000.0
    };
    let rss = args.server_pid.and_then(peak_rss_mib);
    let per_core = cpu.map(|c| ok as f64 / c);
    if args.json {
        println!(
            "{{\"accepted_spans\":{ok},\"refused_spans\":{refused},\"failed_requests\":{failed},\"wall_s\":{wall:.3},\"spans_per_s\":{:.0},\"server_cpu_s\":{},\"spans_per_server_cpu_s\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"server_peak_rss_mib\":{}}}",
            ok as f64 / wall,
            cpu.map_or("null".into(), |c| format!("{c:.2}")),
            per_core.map_or("null".into(), |c| format!("{c:.0}")),
            pct(0.5),
            pct(0.99),
            pct(1.0),
            rss.map_or("null".into(), |r| format!("{r:.1}")),
        );
    } else {
        println!(
            "accepted {ok} spans in {wall:.1} s: {:.0} spans/s; refused {refused}; failed requests {failed}",
            ok as f64 / wall
        );
        println!(
            "latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0)
        );
        if let (Some(c), Some(p)) = (cpu, per_core) {
            println!("server CPU {c:.2} s: {p:.0} spans per server CPU-second");
        }
        if let Some(r) = rss {
            println!("server peak RSS {r:.1} MiB");
        }
    }
    Ok(())
}
