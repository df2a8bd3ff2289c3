//! OTLP load generator: many tenants' realistic spans, metric points and log records in batches,
//! over OTLP/gRPC or OTLP/HTTP (protobuf), from several concurrent clients, for a fixed time.
//! Reports accepted items per second (per signal), refusals (RESOURCE_EXHAUSTED / HTTP 429 or
//! 503), failed requests, request latency percentiles, and, given the server's pid, the server's
//! CPU seconds, items per server CPU-second (per core) and peak RSS.
//!
//!   otlp-load --endpoint http://127.0.0.1:4317 --seconds 20 --clients 8 --server-pid PID
//!   otlp-load --protocol http --endpoint http://127.0.0.1:4318 --signal mix

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse, logs_service_client::LogsServiceClient},
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_client::MetricsServiceClient,
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_client::TraceServiceClient,
    },
};
use prost::Message;
use rand::{SeedableRng, rngs::StdRng};
use tenantscope_benches::{data_points, logs_request, metrics_request, trace_request};
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// OTLP/gRPC (the endpoint is the gRPC listener, e.g. http://127.0.0.1:4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies to /v1/traces, /v1/metrics, /v1/logs (e.g. http://127.0.0.1:4318).
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SignalArg {
    Traces,
    Metrics,
    Logs,
    /// Each client sends traces, metrics and logs in turn.
    Mix,
}

/// The three signals, as indices into per-signal counters.
const SIGNALS: [&str; 3] = ["traces", "metrics", "logs"];

/// One prebuilt export request, typed for gRPC and encoded for HTTP.
#[derive(Clone)]
enum Request {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Request {
    /// Index into [`SIGNALS`].
    fn signal(&self) -> usize {
        match self {
            Request::Traces(_) => 0,
            Request::Metrics(_) => 1,
            Request::Logs(_) => 2,
        }
    }

    /// The items the request carries.
    fn items(&self) -> u64 {
        (match self {
            Request::Traces(r) => {
                r.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
            }
            Request::Metrics(r) => data_points(r),
            Request::Logs(r) => {
                r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum()
            }
        }) as u64
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Request::Traces(r) => r.encode_to_vec(),
            Request::Metrics(r) => r.encode_to_vec(),
            Request::Logs(r) => r.encode_to_vec(),
        }
    }
}

/// The items an export response's partial success rejected.
trait Rejected: Message + Default {
    fn rejected(&self) -> i64;

    /// From a protobuf body (OTLP/HTTP).
    fn rejected_in(body: Bytes) -> Result<u64, prost::DecodeError> {
        Ok(Self::decode(body)?.rejected().max(0) as u64)
    }
}

impl Rejected for ExportTraceServiceResponse {
    fn rejected(&self) -> i64 {
        self.partial_success.as_ref().map_or(0, |p| p.rejected_spans)
    }
}

impl Rejected for ExportMetricsServiceResponse {
    fn rejected(&self) -> i64 {
        self.partial_success.as_ref().map_or(0, |p| p.rejected_data_points)
    }
}

impl Rejected for ExportLogsServiceResponse {
    fn rejected(&self) -> i64 {
        self.partial_success.as_ref().map_or(0, |p| p.rejected_log_records)
    }
}

/// A request ready to send: typed, its item count, and its protobuf body.
struct Payload {
    request: Request,
    items: u64,
    body: Bytes,
}

enum Outcome {
    /// Accepted, with the items the server rejected in a partial success.
    Ok(u64),
    Refused,
    Failed(String),
}

/// One connection of one client.
enum Conn {
    Grpc(TraceServiceClient<Channel>, MetricsServiceClient<Channel>, LogsServiceClient<Channel>),
    Http(reqwest::Client, String),
}

impl Conn {
    async fn open(protocol: Protocol, endpoint: &str) -> anyhow::Result<Conn> {
        Ok(match protocol {
            Protocol::Grpc => {
                let channel = Channel::from_shared(endpoint.to_string())?.connect().await?;
                Conn::Grpc(
                    TraceServiceClient::new(channel.clone()),
                    MetricsServiceClient::new(channel.clone()),
                    LogsServiceClient::new(channel),
                )
            }
            Protocol::Http => Conn::Http(reqwest::Client::new(), endpoint.trim_end_matches('/').to_string()),
        })
    }

    async fn send(&mut self, p: &Payload) -> Outcome {
        match self {
            Conn::Grpc(traces, metrics, logs) => {
                let response = match &p.request {
                    Request::Traces(r) => traces.export(r.clone()).await.map(|r| r.into_inner().rejected()),
                    Request::Metrics(r) => metrics.export(r.clone()).await.map(|r| r.into_inner().rejected()),
                    Request::Logs(r) => logs.export(r.clone()).await.map(|r| r.into_inner().rejected()),
                };
                match response {
                    Ok(n) => Outcome::Ok(n.max(0) as u64),
                    Err(s)
                        if matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable) =>
                    {
                        Outcome::Refused
                    }
                    Err(s) => Outcome::Failed(format!("{:?}: {}", s.code(), s.message())),
                }
            }
            Conn::Http(client, base) => {
                let sent = client
                    .post(format!("{base}/v1/{}", SIGNALS[p.request.signal()]))
                    .header("content-type", "application/x-protobuf")
                    .body(p.body.clone())
                    .send()
                    .await;
                let resp = match sent {
                    Ok(r) => r,
                    Err(e) => return Outcome::Failed(e.to_string()),
                };
                let status = resp.status();
                if status.as_u16() == 429 || status.as_u16() == 503 {
                    return Outcome::Refused;
                }
                let body = resp.bytes().await.unwrap_or_default();
                if !status.is_success() {
                    return Outcome::Failed(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                }
                let rejected = match &p.request {
                    Request::Traces(_) => ExportTraceServiceResponse::rejected_in(body),
                    Request::Metrics(_) => ExportMetricsServiceResponse::rejected_in(body),
                    Request::Logs(_) => ExportLogsServiceResponse::rejected_in(body),
                };
                rejected.map_or_else(|e| Outcome::Failed(format!("undecodable response: {e}")), Outcome::Ok)
            }
        }
    }
}

/// The requests one client cycles through.
fn payloads(signal: SignalArg, seed: u64, batch: usize, tenants: usize, distinct: usize) -> Vec<Payload> {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = 1_764_000_000_000_000_000_u64;
    (0..distinct)
        .map(|i| {
            let t = t0 + (i as u64) * 1_000_000_000;
            let which = match signal {
                SignalArg::Traces => 0,
                SignalArg::Metrics => 1,
                SignalArg::Logs => 2,
                SignalArg::Mix => i % 3,
            };
            let request = match which {
                0 => Request::Traces(trace_request(&mut rng, batch, tenants, t)),
                1 => Request::Metrics(metrics_request(&mut rng, batch, tenants, t)),
                _ => Request::Logs(logs_request(&mut rng, batch, tenants, t)),
            };
            Payload { items: request.items(), body: Bytes::from(request.encode()), request }
        })
        .collect()
}

#[derive(Parser, Debug)]
struct Args {
    /// The OTLP endpoint: the gRPC listener, or the HTTP listener's base URL.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// OTLP/gRPC or OTLP/HTTP (protobuf).
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// What to send.
    #[arg(long, value_enum, default_value_t = SignalArg::Traces)]
    signal: SignalArg,
    /// How long to send.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent clients (each one connection, one request in flight).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Items (spans, data points, log records) per request.
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
    /// Instead of sending: time protobuf decode, and decode + conversion to Arrow rows, of the
    /// generated requests on this thread (the same loops as the criterion bench, without
    /// criterion), and a flush of their rows to Parquet in memory; `--seconds` each.
    #[arg(long)]
    micro: bool,
    /// With `--micro`: time the flush only (to compare Parquet settings quickly); the
    /// one-thread stages are reported as null.
    #[arg(long, requires = "micro")]
    flush_only: bool,
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
    use tenantscope_ingest::otlp::{TenantResolver, convert, wire::TraceRequest};
    let mut rng = StdRng::seed_from_u64(7);
    let requests: Vec<_> = (0..args.distinct)
        .map(|i| trace_request(&mut rng, args.batch, args.tenants, 1_764_000_000_000_000_000 + i as u64))
        .collect();
    let encoded: Vec<Vec<u8>> = requests.iter().map(|r| r.encode_to_vec()).collect();
    let bytes_per_span = encoded.iter().map(Vec::len).sum::<usize>() / (requests.len() * args.batch);
    let resolver = TenantResolver::new(Default::default());
    // As the receivers decode: strings as slices of the request's buffer (`wire`).
    type Req = TraceRequest;
    let encoded: Vec<Bytes> = encoded.into_iter().map(Bytes::from).collect();
    // The one-thread stages, unless only the flush is wanted.
    let stages = (!args.flush_only).then(|| {
        let decode = rate(args.seconds, args.batch, requests.len(), |i| {
            std::hint::black_box(Req::decode(encoded[i].clone()).map(|r| r.resource_spans.len()).ok());
        });
        let convert_rate = rate(args.seconds, args.batch, requests.len(), |i| {
            let r = Req::decode(encoded[i].clone()).expect("valid");
            std::hint::black_box(convert::traces(&r, &resolver, None).map(|c| c.accepted()).ok());
        });
        (decode, convert_rate)
    });
    let (flush, flush_bytes) = flush_rate(args, &encoded, &resolver)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bytes_per_span": bytes_per_span,
                "decode_spans_per_s": stages.map(|(d, _)| d.round() as u64),
                "decode_convert_spans_per_s": stages.map(|(_, c)| c.round() as u64),
                "flush_spans": FLUSH_REQUESTS * args.batch,
                "flush_spans_per_cpu_s": flush.round() as u64,
                "flush_parquet_bytes_per_span": flush_bytes,
            })
        );
    } else {
        if let Some((decode, convert_rate)) = stages {
            println!("{bytes_per_span} protobuf bytes per span, one thread:");
            println!("  decode                      {decode:>12.0} spans/s");
            println!("  decode + convert to Arrow   {convert_rate:>12.0} spans/s");
        }
        println!(
            "flush of {} spans (sort into the lake's order, Parquet + zstd in memory, all cores):",
            FLUSH_REQUESTS * args.batch
        );
        println!("  per CPU-second              {flush:>12.0} spans/s");
        println!("  Parquet bytes per span      {flush_bytes:>12.1}");
    }
    Ok(())
}

/// Requests in one flush of `--micro` (200 x 512 spans: about what `ingest.flush_bytes`, 64 MiB,
/// holds).
const FLUSH_REQUESTS: usize = 200;

/// Spans per CPU-second of this process (the flush sorts on every core) of a server's flush
/// minus its I/O: the converted rows of [`FLUSH_REQUESTS`] requests put in the lake's order
/// (`prepare`) and written as Parquet with the lake's settings to memory, for about `seconds`.
fn flush_rate(
    args: &Args,
    encoded: &[Bytes],
    resolver: &tenantscope_ingest::otlp::TenantResolver,
) -> anyhow::Result<(f64, f64)> {
    use tenantscope_ingest::otlp::{convert, wire::TraceRequest};
    use tenantscope_schemas::{
        Table,
        deltalake::parquet::arrow::ArrowWriter,
        lake::{prepare, writer_properties},
    };
    let batches = (0..FLUSH_REQUESTS)
        .map(|i| {
            let request = TraceRequest::decode(encoded[i % encoded.len()].clone())?;
            convert::traces(&request, resolver, None)?.batch.ok_or_else(|| anyhow::anyhow!("no rows"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let me = std::process::id();
    let (start, cpu0) = (Instant::now(), cpu_seconds(me).unwrap_or_default());
    let (mut spans, mut bytes) = (0, 0);
    while start.elapsed() < Duration::from_secs(args.seconds) {
        let sorted = prepare(Table::Spans, &batches)?.unwrap_or_default();
        let mut writer =
            ArrowWriter::try_new(Vec::new(), Table::Spans.schema(), Some(writer_properties(Table::Spans)))?;
        for batch in &sorted {
            writer.write(batch)?;
            spans += batch.num_rows();
        }
        bytes += writer.into_inner()?.len();
    }
    let cpu = cpu_seconds(me).unwrap_or_default() - cpu0;
    Ok((spans as f64 / cpu.max(1e-3), bytes as f64 / spans.max(1) as f64))
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
        let (endpoint, protocol, signal) = (args.endpoint.clone(), args.protocol, args.signal);
        let (batch, tenants, distinct) = (args.batch, args.tenants, args.distinct);
        tasks.push(tokio::spawn(async move {
            let requests = payloads(signal, c as u64 + 1, batch, tenants, distinct);
            let mut conn = Conn::open(protocol, &endpoint).await?;
            let (mut ok, mut refused, mut failed) = ([0_u64; 3], [0_u64; 3], 0_u64);
            let mut first_failure = None;
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let p = &requests[i % requests.len()];
                i += 1;
                let sent = Instant::now();
                let signal = p.request.signal();
                match conn.send(p).await {
                    Outcome::Ok(rejected) => {
                        ok[signal] += p.items - rejected.min(p.items);
                        latencies.push(sent.elapsed().as_secs_f64());
                    }
                    Outcome::Refused => {
                        refused[signal] += p.items;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Outcome::Failed(why) => {
                        failed += 1;
                        first_failure.get_or_insert(why);
                    }
                }
            }
            anyhow::Ok((ok, refused, failed, first_failure, latencies))
        }));
    }
    let (mut ok, mut refused, mut failed, mut lat) = ([0_u64; 3], [0_u64; 3], 0, Vec::new());
    let mut first_failure = None;
    for t in tasks {
        let (o, r, f, why, l) = t.await??;
        for k in 0..3 {
            ok[k] += o[k];
            refused[k] += r[k];
        }
        failed += f;
        first_failure = first_failure.or(why);
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
    let total: u64 = ok.iter().sum();
    let per_core = cpu.map(|c| total as f64 / c);
    let by_signal = |v: &[u64; 3]| {
        serde_json::Value::Object(SIGNALS.iter().zip(v).map(|(n, v)| (n.to_string(), (*v).into())).collect())
    };
    if args.json {
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        println!(
            "{}",
            serde_json::json!({
                "protocol": format!("{:?}", args.protocol).to_lowercase(),
                "accepted_items": total,
                "accepted": by_signal(&ok),
                "refused": by_signal(&refused),
                "failed_requests": failed,
                "first_failure": first_failure,
                "wall_s": round(wall, 3),
                "items_per_s": round(total as f64 / wall, 0),
                "server_cpu_s": cpu.map(|c| round(c, 2)),
                "items_per_server_cpu_s": per_core.map(|c| round(c, 0)),
                "p50_ms": round(pct(0.5), 2),
                "p99_ms": round(pct(0.99), 2),
                "max_ms": round(pct(1.0), 2),
                "server_peak_rss_mib": rss.map(|r| round(r, 1)),
            })
        );
    } else {
        println!(
            "{:?}: accepted {total} items in {wall:.1} s: {:.0} items/s (traces {} spans, metrics {} points, logs {} records); refused {}; failed requests {failed}",
            args.protocol,
            total as f64 / wall,
            ok[0],
            ok[1],
            ok[2],
            refused.iter().sum::<u64>()
        );
        if let Some(why) = &first_failure {
            println!("first failure: {why}");
        }
        println!(
            "latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0)
        );
        if let (Some(c), Some(p)) = (cpu, per_core) {
            println!("server CPU {c:.2} s: {p:.0} items per server CPU-second");
        }
        if let Some(r) = rss {
            println!("server peak RSS {r:.1} MiB");
        }
    }
    Ok(())
}
