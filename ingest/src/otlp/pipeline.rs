//! From a decoded OTLP request to the lake: convert, admit (memory bound, tenant fairness,
//! rate limits), log durably, acknowledge, buffer, flush on an interval.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arrow::array::{AsArray, RecordBatch};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tenantscope_schemas::{Lake, Table};
use tokio::sync::Notify;

use super::{
    attribution::{AttributionConfig, TenantResolver},
    convert::Converted,
    metrics::{IngestMetrics, RejectLabels, SignalLabels, TableLabels},
    request::ExportRequest,
    wal::{Logged, LoggedRequest, Replay, Wal, WalError},
    wire::{Encoded, LogsRequest, MetricsRequest, TraceRequest},
};

/// Requests up to this many protobuf bytes (a batch of 512 spans is ~170 KB, converted in about
/// half a millisecond) are converted on the thread that received them: handing each to tokio's
/// blocking pool and back cost two thread wake-ups per request. Larger ones go to the blocking
/// pool, so that no request holds a thread serving connections for long.
const INLINE_CONVERSION_BYTES: usize = 256 << 10;

/// Ingest settings (the `ingest` section of the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Tenant attribution of telemetry.
    pub attribution: AttributionConfig,
    /// Rows reach the lake (and SQL) at most this long after they are acknowledged.
    pub flush_interval_ms: u64,
    /// A flush starts early when this many bytes are buffered.
    pub flush_bytes: usize,
    /// Memory for rows not yet in the lake; beyond it requests are refused (429 /
    /// RESOURCE_EXHAUSTED) until a flush frees room.
    pub max_buffer_bytes: usize,
    /// The share of that memory one tenant (or the unattributed rows) may hold, so that one
    /// tenant's flood cannot starve the others.
    pub max_tenant_share: f64,
    /// Largest request body accepted (413 / RESOURCE_EXHAUSTED beyond it), after decompression.
    pub max_request_bytes: usize,
    /// Items (spans, data points, log records) per second per tenant.
    pub rate_limits: RateLimits,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            attribution: AttributionConfig::default(),
            flush_interval_ms: 5_000,
            flush_bytes: 64 << 20,
            max_buffer_bytes: 512 << 20,
            max_tenant_share: 0.5,
            max_request_bytes: 16 << 20,
            rate_limits: RateLimits::default(),
        }
    }
}

/// Per-tenant rate limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// The limit of every tenant not listed (none: unlimited).
    pub default: Option<RateLimit>,
    /// Limits of named tenants.
    pub tenants: BTreeMap<String, RateLimit>,
}

/// A token bucket: `items_per_second` sustained, bursts up to `burst` items.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate.
    pub items_per_second: f64,
    /// Bucket size (default: one second's worth).
    #[serde(default)]
    pub burst: Option<f64>,
}

/// The signal of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    /// Its name in metrics and messages.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// What its items are called.
    pub fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
        }
    }
}

/// A request the pipeline took: how many items it kept and rejected, and why.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// Items durable.
    pub accepted: u64,
    /// Items rejected as invalid.
    pub rejected: u64,
    /// Why (empty when nothing was rejected).
    pub message: String,
}

impl Accepted {
    /// The OTLP partial-success part of a response (`make(rejected, message)`), when anything
    /// was rejected.
    pub fn partial<T>(&self, make: impl FnOnce(i64, String) -> T) -> Option<T> {
        (self.rejected > 0 || !self.message.is_empty())
            .then(|| make(i64::try_from(self.rejected).unwrap_or(i64::MAX), self.message.clone()))
    }
}

/// A request the pipeline refused whole.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Memory or a tenant's share or rate is exhausted: retry later.
    #[error("{reason}; retry after {}s", retry_after.as_secs())]
    Throttled {
        /// Why.
        reason: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The request body is too large.
    #[error("the request is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size (or the size reached when decompressing stopped).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Our fault: the log cannot be written, rows cannot be converted.
    #[error("{0}")]
    Unavailable(String),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Rows held in memory until the lake has them.
#[derive(Default)]
struct Buffer {
    entries: Vec<Entry>,
}

struct Entry {
    logged: Logged,
    /// Bytes charged per tenant (released when committed).
    charges: Vec<(Option<String>, usize)>,
}

#[derive(Default)]
struct Memory {
    bytes: usize,
    per_tenant: HashMap<Option<String>, usize>,
}

struct Inner {
    lake: Lake,
    config: IngestConfig,
    resolver: TenantResolver,
    wal: Wal,
    buffer: Arc<Mutex<Buffer>>,
    memory: Mutex<Memory>,
    buckets: Mutex<HashMap<Option<String>, Bucket>>,
    flush_now: Notify,
    flush_lock: tokio::sync::Mutex<()>,
    metrics: IngestMetrics,
    /// UTC days (days since the epoch) of rows committed since the last `take_committed_days`.
    committed_days: Mutex<BTreeSet<i32>>,
}

/// Counts of one signal's items since the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemCounts {
    /// `traces`, `metrics` or `logs`.
    pub signal: &'static str,
    /// Items received.
    pub received: u64,
    /// Items acknowledged.
    pub accepted: u64,
    /// Items refused (invalid, throttled, too large, unsupported, log failure).
    pub rejected: u64,
}

/// The ingest pipeline; cheap to clone. Receivers (gRPC, HTTP, the demo) hand it requests.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Opens the write-ahead log in `wal_dir`, replays into the lake what it holds that the lake
    /// does not, and starts the flusher.
    pub async fn start(
        lake: Lake,
        config: IngestConfig,
        wal_dir: PathBuf,
        registry: &mut Registry,
    ) -> Result<Self, WalError> {
        let metrics = IngestMetrics::new(registry);
        let resolver = TenantResolver::new(config.attribution.clone());
        let buffer: Arc<Mutex<Buffer>> = Arc::default();
        let sink_buffer = Arc::clone(&buffer);
        let sink = Box::new(move |logged: Vec<Logged>| {
            let mut b = sink_buffer.lock().unwrap_or_else(|e| e.into_inner());
            b.entries.extend(logged.into_iter().map(|logged| Entry { logged, charges: Vec::new() }));
        });
        let opened = Wal::open(&wal_dir, &lake, sink).await?;
        let inner = Arc::new(Inner {
            lake,
            config,
            resolver,
            wal: opened.wal,
            buffer,
            memory: Mutex::default(),
            buckets: Mutex::default(),
            flush_now: Notify::new(),
            flush_lock: tokio::sync::Mutex::new(()),
            metrics,
            committed_days: Mutex::default(),
        });
        let pipeline = Pipeline { inner };
        pipeline.refresh_accounts().await;
        if !opened.replay.is_empty() {
            let replayed = opened.replay.len();
            let failed = |e: String| WalError::Io {
                path: wal_dir.display().to_string(),
                source: std::io::Error::other(format!("replaying {replayed} records into the lake: {e}")),
            };
            let mut entries = Vec::with_capacity(replayed);
            for replay in opened.replay {
                let logged = match replay {
                    Replay::Rows(logged) => logged,
                    Replay::Request { seq, table, request } => {
                        match pipeline
                            .reconvert(table, &request)
                            .map_err(|e| failed(format!("record {seq}: {e}")))?
                        {
                            Some(batch) => Logged { seq, table, batch },
                            None => continue,
                        }
                    }
                };
                entries.push(Entry { logged, charges: Vec::new() });
            }
            pipeline.inner.buffer.lock().unwrap_or_else(|e| e.into_inner()).entries.extend(entries);
            pipeline.flush().await.map_err(failed)?;
        }
        let flusher = pipeline.clone();
        tokio::spawn(async move { flusher.flush_loop().await });
        Ok(pipeline)
    }

    /// The settings in force.
    pub fn config(&self) -> &IngestConfig {
        &self.inner.config
    }

    /// Decodes a request's protobuf, keeping the bytes (what the write-ahead log keeps). A
    /// request that cannot be decoded is counted as refused, and the message says why.
    pub fn decode<T: ExportRequest>(&self, protobuf: Bytes) -> Result<Encoded<T>, String> {
        Encoded::decode(protobuf).map_err(|e| {
            self.count_refused(T::SIGNAL, "invalid", None);
            format!("invalid OTLP protobuf {} request: {e}", T::SIGNAL.name())
        })
    }

    /// Ingests a request: converts it, admits its rows and logs the request itself durably
    /// (with the bound tenant and the receive time: what a replay converts again).
    /// `bound_tenant`: the tenant of the caller's ingest token, which wins over anything in the
    /// payload.
    pub async fn ingest<T: ExportRequest>(
        &self,
        request: Encoded<T>,
        bound_tenant: Option<&str>,
    ) -> Result<Accepted, Refused> {
        let resolver = self.inner.resolver.clone();
        let logged = LoggedRequest {
            bound: bound_tenant.map(str::to_string),
            now_micros: chrono::Utc::now().timestamp_micros(),
            protobuf: request.bytes.clone(),
        };
        let (bound, now) = (logged.bound.clone(), logged.now_micros);
        let inline = request.bytes.len() <= INLINE_CONVERSION_BYTES;
        let converted = self
            .convert(T::SIGNAL, inline, move || request.request.to_rows(&resolver, bound.as_deref(), now))
            .await?;
        self.admit(T::SIGNAL, converted, logged).await
    }

    /// The rows of a request logged before a restart, converted again as when it was
    /// acknowledged (the same bound tenant and clock reading; tenant mappings as they are now).
    fn reconvert(&self, table: Table, r: &LoggedRequest) -> Result<Option<RecordBatch>, String> {
        fn again<T: ExportRequest>(
            r: &LoggedRequest,
            resolver: &TenantResolver,
        ) -> Result<Converted, String> {
            let what = T::SIGNAL.name();
            let request = T::decode(r.protobuf.clone())
                .map_err(|e| format!("the logged {what} request cannot be decoded: {e}"))?;
            request
                .to_rows(resolver, r.bound.as_deref(), r.now_micros)
                .map_err(|e| format!("converting the logged {what} request: {e}"))
        }
        let resolver = &self.inner.resolver;
        let converted = match table {
            Table::Spans => again::<TraceRequest>(r, resolver),
            Table::Logs => again::<LogsRequest>(r, resolver),
            Table::Metrics => again::<MetricsRequest>(r, resolver),
            other => Err(format!("a logged request for table {other}, which takes no requests")),
        }?;
        Ok(converted.batch)
    }

    /// Counts a request refused whole (`items`: how many it held, when known).
    pub fn count_refused(&self, signal: Signal, reason: &'static str, items: Option<u64>) {
        let labels = RejectLabels { signal: signal.name(), reason };
        self.inner.metrics.refused_requests.get_or_create(&labels).inc();
        if let Some(n) = items {
            self.inner.metrics.rejected.get_or_create(&labels).inc_by(n);
        }
    }

    /// Runs `f` (the conversion, with its checks: CPU work proportional to the request), and
    /// counts what it received and rejected. A conversion error is ours (rows that do not fit
    /// the table): bad records are rejected inside it. `inline`: on this thread (a request of
    /// at most [`INLINE_CONVERSION_BYTES`]); else off the threads that serve connections.
    async fn convert(
        &self,
        signal: Signal,
        inline: bool,
        f: impl FnOnce() -> Result<Converted, arrow::error::ArrowError> + Send + 'static,
    ) -> Result<Converted, Refused> {
        let unavailable =
            |e: &dyn std::fmt::Display| Refused::Unavailable(format!("converting {}: {e}", signal.items()));
        let converted = if inline {
            f().map_err(|e| unavailable(&e))?
        } else {
            tokio::task::spawn_blocking(f).await.map_err(|e| unavailable(&e))?.map_err(|e| unavailable(&e))?
        };
        let m = &self.inner.metrics;
        m.received
            .get_or_create(&SignalLabels { signal: signal.name() })
            .inc_by(converted.accepted() + converted.rejected);
        if converted.rejected > 0 {
            m.rejected
                .get_or_create(&RejectLabels { signal: signal.name(), reason: "invalid" })
                .inc_by(converted.rejected);
        }
        Ok(converted)
    }

    /// Charges, logs durably and buffers converted rows. `request`: what they were converted
    /// from, logged in their place.
    async fn admit(
        &self,
        signal: Signal,
        converted: Converted,
        request: LoggedRequest,
    ) -> Result<Accepted, Refused> {
        let accepted = converted.accepted();
        let outcome = Accepted { accepted, rejected: converted.rejected, message: converted.message.clone() };
        let Some(batch) = converted.batch else {
            return Ok(outcome);
        };
        let charges = match self.reserve(&batch, &converted.per_tenant) {
            Ok(c) => c,
            Err(refused) => {
                self.count_refused(signal, "throttled", Some(accepted));
                return Err(refused);
            }
        };
        match self.inner.wal.append(converted.table, batch, request).await {
            Ok(seq) => {
                self.attach_charges(seq, charges);
                self.inner
                    .metrics
                    .accepted
                    .get_or_create(&SignalLabels { signal: signal.name() })
                    .inc_by(accepted);
                self.inner.metrics.wal_bytes.set(self.inner.wal.bytes() as i64);
                let buffered = self.inner.memory.lock().unwrap_or_else(|e| e.into_inner()).bytes;
                if buffered >= self.inner.config.flush_bytes {
                    self.inner.flush_now.notify_one();
                }
                Ok(outcome)
            }
            Err(e) => {
                self.release(&charges);
                self.count_refused(signal, "error", Some(accepted));
                Err(Refused::Unavailable(e))
            }
        }
    }

    fn retry_after(&self) -> Duration {
        Duration::from_millis(self.inner.config.flush_interval_ms.max(1_000)).min(Duration::from_secs(30))
    }

    /// Charges the batch's memory to its tenants, or refuses it.
    fn reserve(
        &self,
        batch: &RecordBatch,
        per_tenant: &HashMap<Option<String>, u64>,
    ) -> Result<Vec<(Option<String>, usize)>, Refused> {
        let config = &self.inner.config;
        let rows = batch.num_rows().max(1);
        let bytes = batch.get_array_memory_size();
        let charges: Vec<(Option<String>, usize)> =
            per_tenant.iter().map(|(t, n)| (t.clone(), bytes * (*n as usize) / rows)).collect();
        self.take_tokens(per_tenant)?;
        let mut memory = self.inner.memory.lock().unwrap_or_else(|e| e.into_inner());
        if memory.bytes + bytes > config.max_buffer_bytes {
            self.inner.flush_now.notify_one();
            return Err(Refused::Throttled {
                reason: format!(
                    "ingest buffer full ({} of {} bytes wait for the lake)",
                    memory.bytes, config.max_buffer_bytes
                ),
                retry_after: self.retry_after(),
            });
        }
        let tenant_cap = (config.max_buffer_bytes as f64 * config.max_tenant_share) as usize;
        for (tenant, charge) in &charges {
            let held = memory.per_tenant.get(tenant).copied().unwrap_or(0);
            if held > 0 && held + charge > tenant_cap {
                self.inner.flush_now.notify_one();
                return Err(Refused::Throttled {
                    reason: format!(
                        "tenant {} holds {held} bytes of the ingest buffer, its share is {tenant_cap}",
                        tenant.as_deref().unwrap_or("(unattributed)")
                    ),
                    retry_after: self.retry_after(),
                });
            }
        }
        memory.bytes += bytes;
        for (tenant, charge) in &charges {
            *memory.per_tenant.entry(tenant.clone()).or_default() += charge;
        }
        self.inner.metrics.buffer_bytes.set(memory.bytes as i64);
        Ok(charges)
    }

    fn take_tokens(&self, per_tenant: &HashMap<Option<String>, u64>) -> Result<(), Refused> {
        let limits = &self.inner.config.rate_limits;
        if limits.default.is_none() && limits.tenants.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.inner.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken: Vec<(Option<String>, f64)> = Vec::new();
        for (tenant, items) in per_tenant {
            let limit = tenant.as_ref().and_then(|t| limits.tenants.get(t)).or(limits.default.as_ref());
            let Some(limit) = limit else { continue };
            let burst = limit.burst.unwrap_or(limit.items_per_second).max(1.0);
            let bucket = buckets.entry(tenant.clone()).or_insert(Bucket { tokens: burst, at: now });
            bucket.tokens = (bucket.tokens
                + now.duration_since(bucket.at).as_secs_f64() * limit.items_per_second)
                .min(burst);
            bucket.at = now;
            let need = *items as f64;
            if bucket.tokens < need {
                // Give back what this request took from the other tenants.
                for (t, n) in taken {
                    if let Some(b) = buckets.get_mut(&t) {
                        b.tokens += n;
                    }
                }
                let wait = if need > burst {
                    Duration::from_secs(1)
                } else {
                    let tokens = buckets.get(tenant).map_or(0.0, |b| b.tokens);
                    Duration::from_secs_f64(
                        ((need - tokens) / limit.items_per_second.max(f64::MIN_POSITIVE)).ceil().max(1.0),
                    )
                };
                return Err(Refused::Throttled {
                    reason: format!(
                        "tenant {} is over its rate limit of {} items/s",
                        tenant.as_deref().unwrap_or("(unattributed)"),
                        limit.items_per_second
                    ),
                    retry_after: wait.min(Duration::from_secs(60)),
                });
            }
            bucket.tokens -= need;
            taken.push((tenant.clone(), need));
        }
        Ok(())
    }

    fn attach_charges(&self, seq: u64, charges: Vec<(Option<String>, usize)>) {
        let mut buffer = self.inner.buffer.lock().unwrap_or_else(|e| e.into_inner());
        // The entry was just added by the log's thread; it is at the end unless a flush took it.
        if let Some(entry) = buffer.entries.iter_mut().rev().take(8192).find(|e| e.logged.seq == seq) {
            entry.charges = charges;
        } else {
            drop(buffer);
            self.release(&charges);
        }
    }

    fn release(&self, charges: &[(Option<String>, usize)]) {
        let mut memory = self.inner.memory.lock().unwrap_or_else(|e| e.into_inner());
        for (tenant, charge) in charges {
            memory.bytes = memory.bytes.saturating_sub(*charge);
            if let Some(held) = memory.per_tenant.get_mut(tenant) {
                *held = held.saturating_sub(*charge);
                if *held == 0 {
                    memory.per_tenant.remove(tenant);
                }
            }
        }
        self.inner.metrics.buffer_bytes.set(memory.bytes as i64);
    }

    async fn flush_loop(self) {
        let interval = Duration::from_millis(self.inner.config.flush_interval_ms.max(10));
        let mut last_accounts = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.inner.flush_now.notified() => {}
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "Flush to the lake failed; its rows stay buffered and are retried.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if last_accounts.elapsed() > Duration::from_secs(60) {
                self.refresh_accounts().await;
                last_accounts = Instant::now();
            }
        }
    }

    /// Commits everything buffered to the lake now: one Delta commit per table, each recording
    /// the log position it covers. Rows of a table whose commit fails stay buffered.
    pub async fn flush(&self) -> Result<(), String> {
        let _one_at_a_time = self.inner.flush_lock.lock().await;
        let entries =
            std::mem::take(&mut self.inner.buffer.lock().unwrap_or_else(|e| e.into_inner()).entries);
        let Some(through) = entries.iter().map(|e| e.logged.seq).max() else {
            return Ok(());
        };
        let started = Instant::now();
        let mut by_table: BTreeMap<&'static str, (Table, Vec<Entry>)> = BTreeMap::new();
        for entry in entries {
            let table = entry.logged.table;
            by_table.entry(table.name()).or_insert_with(|| (table, Vec::new())).1.push(entry);
        }
        let mut failed: Vec<Entry> = Vec::new();
        let mut errors = Vec::new();
        for (_, (table, entries)) in by_table {
            let batches: Vec<RecordBatch> = entries.iter().map(|e| e.logged.batch.clone()).collect();
            match self.inner.lake.append_as(table, &batches, self.inner.wal.app_id(), through).await {
                Ok(commit) => {
                    let rows = commit.map_or(0, |c| c.rows);
                    let labels = TableLabels { table: table.name() };
                    self.inner.metrics.commits.get_or_create(&labels).inc();
                    self.inner.metrics.committed_rows.get_or_create(&labels).inc_by(rows as u64);
                    let mut days = self.inner.committed_days.lock().unwrap_or_else(|e| e.into_inner());
                    for e in &entries {
                        if let Some(d) = e.logged.batch.column_by_name(tenantscope_schemas::columns::DATE) {
                            days.extend(d.as_primitive::<arrow::datatypes::Date32Type>().iter().flatten());
                        }
                    }
                    drop(days);
                    for e in &entries {
                        self.release(&e.charges);
                    }
                }
                Err(e) => {
                    errors.push(format!("{table}: {e}"));
                    failed.extend(entries);
                }
            }
        }
        self.inner.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        let watermark = failed.iter().map(|e| e.logged.seq).min().map_or(through, |s| s - 1);
        if !failed.is_empty() {
            self.inner.metrics.flush_errors.inc();
            let mut buffer = self.inner.buffer.lock().unwrap_or_else(|e| e.into_inner());
            failed.append(&mut buffer.entries);
            buffer.entries = failed;
        }
        self.inner.wal.committed(watermark).await;
        self.inner.metrics.wal_bytes.set(self.inner.wal.bytes() as i64);
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Items received, accepted and rejected since the start, per signal (for the
    /// `ingest_stats` table, where alert rules read the rejection rate).
    pub fn item_counts(&self) -> Vec<ItemCounts> {
        let m = &self.inner.metrics;
        [Signal::Traces, Signal::Metrics, Signal::Logs]
            .into_iter()
            .map(|s| {
                let labels = SignalLabels { signal: s.name() };
                let rejected = ["invalid", "throttled", "too_large", "unsupported", "error"]
                    .into_iter()
                    .map(|reason| m.rejected.get_or_create(&RejectLabels { signal: s.name(), reason }).get())
                    .sum();
                ItemCounts {
                    signal: s.name(),
                    received: m.received.get_or_create(&labels).get(),
                    accepted: m.accepted.get_or_create(&labels).get(),
                    rejected,
                }
            })
            .collect()
    }

    /// The UTC days that got rows since the last call (what the usage rollup recomputes).
    pub fn take_committed_days(&self) -> Vec<chrono::NaiveDate> {
        let days = std::mem::take(&mut *self.inner.committed_days.lock().unwrap_or_else(|e| e.into_inner()));
        days.into_iter().filter_map(|d| chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)).collect()
    }

    /// Reloads the account -> tenant table from the lake's `tenants` table.
    pub async fn refresh_accounts(&self) {
        match crate::billing::tenant_accounts(&self.inner.lake).await {
            Ok(accounts) => self.inner.resolver.set_accounts(accounts),
            Err(e) => tracing::warn!(error = %e, "Cannot read the tenants' accounts for attribution."),
        }
    }
}
