//! OTLP export requests to rows of the `spans`, `logs` and `metrics` tables.
//!
//! Records that break the OTLP rules (a trace id that is not 16 bytes, a data point without a
//! timestamp, a string that is not UTF-8 in the record, its scope or its resource, ...) are
//! rejected one by one and counted, with a message naming the first few by
//! position; the rest of the request is kept (OTLP partial success).

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use arrow::{
    array::{
        ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
        ListArray, ListBuilder, MapBuilder, RecordBatch, StringBuilder, StructArray,
        TimestampMicrosecondBuilder,
    },
    buffer::{NullBuffer, OffsetBuffer},
    datatypes::DataType,
    error::ArrowError,
};
use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use tenantscope_schemas::{
    Table,
    types::{UTC, byte_map_builder_with_capacity, list_builder, string_map_from_bytes},
};

use super::{
    attribution::{ResourceTenant, TenantResolver},
    value::{self, Attribute},
    wire::{
        self, Buckets, Data, Exemplar, ExemplarValue, LogsRequest, Metric, MetricsRequest, NumberValue,
        TraceRequest, text,
    },
};

/// How many rejected records a message names before it only counts.
const LISTED_REJECTS: usize = 5;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The rows of one export request.
#[derive(Debug)]
pub struct Converted {
    /// The table the rows go to.
    pub table: Table,
    /// The accepted records, in the table's schema (`None` when there were none).
    pub batch: Option<RecordBatch>,
    /// Accepted records per tenant (`None`: unattributed).
    pub per_tenant: HashMap<Option<String>, u64>,
    /// Records rejected.
    pub rejected: u64,
    /// Why, naming the first few by position.
    pub message: String,
}

impl Converted {
    /// Accepted records.
    pub fn accepted(&self) -> u64 {
        self.per_tenant.values().sum()
    }
}

/// Rejected records and the reasons of the first few.
#[derive(Debug, Default)]
struct Rejects {
    count: u64,
    reasons: Vec<String>,
}

impl Rejects {
    fn reject(&mut self, at: impl FnOnce() -> String, why: impl FnOnce() -> String) {
        self.count += 1;
        if self.reasons.len() < LISTED_REJECTS {
            self.reasons.push(format!("{}: {}", at(), why()));
        }
    }

    fn message(&self, what: &str) -> String {
        if self.count == 0 {
            return String::new();
        }
        let more = self.count as usize - self.reasons.len();
        let mut m = format!("{} {what} rejected: {}", self.count, self.reasons.join("; "));
        if more > 0 {
            m.push_str(&format!("; and {more} more"));
        }
        m
    }
}

fn nanos_to_micros(nanos: u64) -> i64 {
    // u64::MAX / 1000 fits in i64.
    (nanos / 1_000) as i64
}

fn day(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}

/// Appends `bytes` in lower-case hex; ids of 8 and 16 bytes (all checked ones) without an
/// allocation.
fn append_hex(builder: &mut StringBuilder, bytes: &[u8]) {
    match bytes.len() {
        16 => builder.append_value(const_hex::Buffer::<16>::new().format_slice(bytes)),
        8 => builder.append_value(const_hex::Buffer::<8>::new().format_slice(bytes)),
        _ => builder.append_value(const_hex::encode(bytes)),
    }
}

/// Appends an optional id in hex (empty: NULL).
fn append_hex_option(builder: &mut StringBuilder, bytes: &[u8]) {
    if bytes.is_empty() { builder.append_null() } else { append_hex(builder, bytes) }
}

/// Checks an id's length: `required` ids must be present and not all zero.
fn check_id(bytes: &[u8], len: usize, name: &str, required: bool) -> Result<(), String> {
    if bytes.is_empty() && !required {
        return Ok(());
    }
    if bytes.len() != len {
        return Err(format!("{name} has {} bytes, want {len}", bytes.len()));
    }
    if required && bytes.iter().all(|b| *b == 0) {
        return Err(format!("{name} is all zeros"));
    }
    Ok(())
}

fn service_name<A: Attribute>(resource: &[A]) -> Option<String> {
    value::attribute_str(resource, "service.name").map(|c| c.into_owned())
}

/// `map<string, string>` column builder in the lake's layout. Keys and values are gathered as
/// bytes and checked as UTF-8 once per column when finished: every record's strings were checked
/// before it was converted (`check_utf8`, or `String`s), and checking each short string again as
/// a `StringBuilder` takes it was ~2% of a gRPC server's CPU.
pub(crate) struct MapColumn(MapBuilder<BinaryBuilder, BinaryBuilder>);

impl MapColumn {
    pub(crate) fn new() -> Self {
        Self::with_capacity(0, 0, 0)
    }

    /// A builder for `rows` maps of `entries` entries holding `bytes` of keys and values.
    fn with_capacity(rows: usize, entries: usize, bytes: usize) -> Self {
        Self(byte_map_builder_with_capacity(rows, entries, bytes / 2, bytes / 2))
    }

    pub(crate) fn push<A: Attribute>(&mut self, attributes: &[A]) -> Result<(), ArrowError> {
        for kv in attributes {
            self.0.keys().append_value(kv.key_bytes());
            kv.append_text(self.0.values());
        }
        self.0.append(true)
    }

    /// Appends a map rendered once by `rendered` (the resource's attributes, the same for every
    /// record of the resource).
    fn push_rendered(&mut self, rendered: &[(&str, Option<Cow<'_, str>>)]) -> Result<(), ArrowError> {
        for (key, value) in rendered {
            self.0.keys().append_value(key);
            self.0.values().append_option(value.as_deref().map(str::as_bytes));
        }
        self.0.append(true)
    }

    /// The column; an error only if a string was not UTF-8 (never, for checked records).
    pub(crate) fn finish(mut self) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(string_map_from_bytes(self.0.finish())?))
    }
}

fn list_of_i64() -> ListBuilder<Int64Builder> {
    list_builder(Int64Builder::new(), DataType::Int64)
}

fn list_of_f64() -> ListBuilder<Float64Builder> {
    list_builder(Float64Builder::new(), DataType::Float64)
}

fn timestamps() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone(UTC)
}

fn timestamps_with_capacity(rows: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC)
}

/// A list-of-struct column assembled from its children (events, links, quantiles).
struct ListOffsets {
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl ListOffsets {
    fn new() -> Self {
        Self { offsets: vec![0], valid: Vec::new() }
    }

    /// Ends a row that holds `len` more children (`None`: a null list).
    fn push(&mut self, len: Option<usize>) {
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + len.unwrap_or(0) as i32);
        self.valid.push(len.is_some());
    }

    fn finish(self, table: Table, column: &str, children: Vec<ArrayRef>) -> Result<ArrayRef, ArrowError> {
        let schema = table.schema();
        let DataType::List(item) = schema.field_with_name(column)?.data_type().clone() else {
            return Err(ArrowError::SchemaError(format!("{table}.{column} is not a list")));
        };
        let DataType::Struct(fields) = item.data_type().clone() else {
            return Err(ArrowError::SchemaError(format!("{table}.{column} is not a list of structs")));
        };
        let values = StructArray::try_new(fields, children, None)?;
        Ok(Arc::new(ListArray::try_new(
            item,
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(values),
            Some(NullBuffer::from(self.valid)),
        )?))
    }
}

/// The columns every telemetry table shares.
struct Common {
    service: StringBuilder,
    tenant: StringBuilder,
    attributes: MapColumn,
    resource: MapColumn,
    scope: StringBuilder,
    date: Date32Builder,
    per_tenant: TenantCounts,
}

/// Records per tenant, counted by runs: the records of a resource mostly share one tenant, so
/// a row costs a string comparison rather than a hash and an owned key.
#[derive(Default)]
struct TenantCounts {
    counts: HashMap<Option<String>, u64>,
    run: Option<(Option<String>, u64)>,
}

impl TenantCounts {
    fn add(&mut self, tenant: Option<&str>) {
        match &mut self.run {
            Some((t, n)) if t.as_deref() == tenant => *n += 1,
            run => {
                if let Some((t, n)) = run.replace((tenant.map(str::to_string), 1)) {
                    *self.counts.entry(t).or_default() += n;
                }
            }
        }
    }

    fn finish(mut self) -> HashMap<Option<String>, u64> {
        if let Some((t, n)) = self.run.take() {
            *self.counts.entry(t).or_default() += n;
        }
        self.counts
    }
}

impl Common {
    /// Builders of arrow's default sizes (for metrics, not counted first).
    fn new() -> Self {
        Self::with_capacity(&Sizes {
            rows: 1024,
            attributes: 1024,
            attribute_bytes: 2048,
            resource_attributes: 1024,
            resource_bytes: 2048,
        })
    }

    /// Builders allocated once for records of `sizes` (growing them by doubling copied each
    /// column several times per request).
    fn with_capacity(sizes: &Sizes) -> Self {
        let rows = sizes.rows;
        Self {
            service: StringBuilder::with_capacity(rows, rows * 16),
            tenant: StringBuilder::with_capacity(rows, rows * 16),
            attributes: MapColumn::with_capacity(rows, sizes.attributes, sizes.attribute_bytes),
            resource: MapColumn::with_capacity(rows, sizes.resource_attributes, sizes.resource_bytes),
            scope: StringBuilder::with_capacity(rows, rows * 16),
            date: Date32Builder::with_capacity(rows),
            per_tenant: TenantCounts::default(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push<A: Attribute>(
        &mut self,
        resolver: &TenantResolver,
        ctx: &ResourceContext<'_>,
        scope_name: Option<&str>,
        attributes: &[A],
        time_micros: i64,
    ) -> Result<(), ArrowError> {
        self.service.append_option(ctx.service.as_deref());
        let tenant = resolver.record(&ctx.tenant, attributes);
        self.tenant.append_option(tenant.as_deref());
        self.per_tenant.add(tenant.as_deref());
        self.attributes.push(attributes)?;
        self.resource.push_rendered(&ctx.rendered)?;
        self.scope.append_option(scope_name.filter(|n| !n.is_empty()));
        self.date.append_value(day(time_micros));
        Ok(())
    }
}

/// What a request's records hold, counted before converting them.
#[derive(Debug, Default)]
struct Sizes {
    rows: usize,
    attributes: usize,
    attribute_bytes: usize,
    resource_attributes: usize,
    resource_bytes: usize,
}

impl Sizes {
    /// Adds the records of a resource with `resource` attributes; `records` yields each
    /// record's own attributes.
    fn add<'a>(&mut self, resource: &[wire::KeyValue], records: impl Iterator<Item = &'a [wire::KeyValue]>) {
        let (count, bytes) = (resource.len(), wire::attribute_bytes(resource));
        for attributes in records {
            self.rows += 1;
            self.resource_attributes += count;
            self.resource_bytes += bytes;
            self.attributes += attributes.len();
            self.attribute_bytes += wire::attribute_bytes(attributes);
        }
    }
}

struct ResourceContext<'a> {
    /// The resource's attributes as the `resource_attributes` map holds them.
    rendered: Vec<(&'a str, Option<Cow<'a, str>>)>,
    service: Option<String>,
    tenant: ResourceTenant,
}

impl<'a> ResourceContext<'a> {
    fn new<A: Attribute>(resolver: &TenantResolver, bound: Option<&str>, attributes: &'a [A]) -> Self {
        Self {
            rendered: attributes.iter().map(|kv| (kv.key(), kv.text())).collect(),
            service: service_name(attributes),
            tenant: resolver.resource(bound, attributes),
        }
    }
}

fn finish(
    table: Table,
    rows: usize,
    columns: Vec<ArrayRef>,
    per_tenant: TenantCounts,
    rejects: &Rejects,
    what: &str,
) -> Result<Converted, ArrowError> {
    let batch = if rows == 0 { None } else { Some(RecordBatch::try_new(table.schema(), columns)?) };
    Ok(Converted {
        table,
        batch,
        per_tenant: per_tenant.finish(),
        rejected: rejects.count,
        message: rejects.message(what),
    })
}

fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_code(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// Spans to `spans` rows.
pub fn traces(
    request: &TraceRequest,
    resolver: &TenantResolver,
    bound: Option<&str>,
) -> Result<Converted, ArrowError> {
    let mut sizes = Sizes::default();
    for rs in &request.resource_spans {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for ss in &rs.scope_spans {
            sizes.add(resource, ss.spans.iter().map(|s| &s.attributes[..]));
        }
    }
    let n = sizes.rows;
    let mut time = timestamps_with_capacity(n);
    let mut end_time = timestamps_with_capacity(n);
    let mut duration = Int64Builder::with_capacity(n);
    let (mut trace_id, mut span_id, mut parent) = (
        StringBuilder::with_capacity(n, n * 32),
        StringBuilder::with_capacity(n, n * 16),
        StringBuilder::with_capacity(n, n * 16),
    );
    let (mut trace_state, mut name, mut kind) = (
        StringBuilder::new(),
        StringBuilder::with_capacity(n, n * 24),
        StringBuilder::with_capacity(n, n * 8),
    );
    let (mut status, mut status_message) = (StringBuilder::with_capacity(n, n * 5), StringBuilder::new());
    let mut scope_version = StringBuilder::with_capacity(n, n * 8);
    let mut common = Common::with_capacity(&sizes);
    let (mut ev_time, mut ev_name, mut ev_attrs) = (timestamps(), StringBuilder::new(), MapColumn::new());
    let mut events = ListOffsets::new();
    let (mut ln_trace, mut ln_span, mut ln_state, mut ln_attrs) =
        (StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), MapColumn::new());
    let mut links = ListOffsets::new();
    let mut rejects = Rejects::default();
    let mut rows = 0;
    for (r, rs) in request.resource_spans.iter().enumerate() {
        let res_attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let ctx = ResourceContext::new(resolver, bound, res_attrs);
        let res_utf8 = rs.resource.as_ref().map_or(Ok(()), wire::Resource::check_utf8);
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            let utf8 =
                res_utf8.clone().and_then(|()| ss.scope.as_ref().map_or(Ok(()), wire::Scope::check_utf8));
            for (i, span) in ss.spans.iter().enumerate() {
                let checked = utf8
                    .clone()
                    .and_then(|()| span.check_utf8())
                    .map_err(|e| e.to_string())
                    .and_then(|()| check_id(&span.trace_id, 16, "trace_id", true))
                    .and_then(|()| check_id(&span.span_id, 8, "span_id", true))
                    .and_then(|()| check_id(&span.parent_span_id, 8, "parent_span_id", false))
                    .and_then(|()| {
                        if span.start_time_unix_nano == 0 {
                            Err("start_time_unix_nano is 0".to_string())
                        } else {
                            Ok(())
                        }
                    });
                if let Err(why) = checked {
                    rejects.reject(|| format!("resource_spans[{r}].scope_spans[{s}].spans[{i}]"), || why);
                    continue;
                }
                rows += 1;
                let start = nanos_to_micros(span.start_time_unix_nano);
                time.append_value(start);
                if span.end_time_unix_nano == 0 {
                    end_time.append_null();
                    duration.append_null();
                } else {
                    end_time.append_value(nanos_to_micros(span.end_time_unix_nano));
                    duration.append_value(
                        (i128::from(span.end_time_unix_nano) - i128::from(span.start_time_unix_nano))
                            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
                    );
                }
                append_hex(&mut trace_id, &span.trace_id);
                append_hex(&mut span_id, &span.span_id);
                append_hex_option(&mut parent, &span.parent_span_id);
                trace_state.append_option((!span.trace_state.is_empty()).then(|| text(&span.trace_state)));
                name.append_value(text(&span.name));
                kind.append_value(span_kind(span.kind));
                let st = span.status.as_ref();
                status.append_value(status_code(st.map_or(0, |s| s.code)));
                status_message.append_option(st.map(|s| text(&s.message)).filter(|m| !m.is_empty()));
                scope_version
                    .append_option(ss.scope.as_ref().map(|s| text(&s.version)).filter(|v| !v.is_empty()));
                common.push(
                    resolver,
                    &ctx,
                    ss.scope.as_ref().map(|s| text(&s.name)),
                    &span.attributes,
                    start,
                )?;
                for e in &span.events {
                    ev_time.append_value(nanos_to_micros(e.time_unix_nano));
                    ev_name.append_value(text(&e.name));
                    ev_attrs.push(&e.attributes)?;
                }
                events.push(Some(span.events.len()));
                for l in &span.links {
                    append_hex(&mut ln_trace, &l.trace_id);
                    append_hex(&mut ln_span, &l.span_id);
                    ln_state.append_option((!l.trace_state.is_empty()).then(|| text(&l.trace_state)));
                    ln_attrs.push(&l.attributes)?;
                }
                links.push(Some(span.links.len()));
            }
        }
    }
    let table = Table::Spans;
    let events = events.finish(
        table,
        "events",
        vec![Arc::new(ev_time.finish()), Arc::new(ev_name.finish()), ev_attrs.finish()?],
    )?;
    let links = links.finish(
        table,
        "links",
        vec![
            Arc::new(ln_trace.finish()),
            Arc::new(ln_span.finish()),
            Arc::new(ln_state.finish()),
            ln_attrs.finish()?,
        ],
    )?;
    let Common { mut service, mut tenant, attributes, resource, mut scope, mut date, per_tenant } = common;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(end_time.finish()),
        Arc::new(duration.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(status.finish()),
        Arc::new(status_message.finish()),
        Arc::new(service.finish()),
        Arc::new(tenant.finish()),
        attributes.finish()?,
        resource.finish()?,
        Arc::new(scope.finish()),
        Arc::new(scope_version.finish()),
        events,
        links,
        Arc::new(date.finish()),
    ];
    finish(table, rows, columns, per_tenant, &rejects, "spans")
}

/// Log records to `logs` rows. A record without a timestamp takes its observed time (as the
/// OTLP specification says), and one with neither the time it was received.
pub fn logs(
    request: &LogsRequest,
    resolver: &TenantResolver,
    bound: Option<&str>,
    received_micros: i64,
) -> Result<Converted, ArrowError> {
    let mut sizes = Sizes::default();
    let mut body_bytes = 0;
    for rl in &request.resource_logs {
        let resource = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for sl in &rl.scope_logs {
            sizes.add(resource, sl.log_records.iter().map(|l| &l.attributes[..]));
            body_bytes +=
                sl.log_records.iter().map(|l| l.body.as_ref().map_or(0, wire::value_bytes)).sum::<usize>();
        }
    }
    let n = sizes.rows;
    let (mut time, mut observed) = (timestamps_with_capacity(n), timestamps_with_capacity(n));
    let (mut severity, mut severity_text) =
        (Int32Builder::with_capacity(n), StringBuilder::with_capacity(n, n * 5));
    let (mut body, mut trace_id, mut span_id) = (
        StringBuilder::with_capacity(n, body_bytes),
        StringBuilder::with_capacity(n, n * 32),
        StringBuilder::with_capacity(n, n * 16),
    );
    let mut event_name = StringBuilder::new();
    let mut common = Common::with_capacity(&sizes);
    let mut rejects = Rejects::default();
    let mut rows = 0;
    for (r, rl) in request.resource_logs.iter().enumerate() {
        let res_attrs = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let ctx = ResourceContext::new(resolver, bound, res_attrs);
        let res_utf8 = rl.resource.as_ref().map_or(Ok(()), wire::Resource::check_utf8);
        for (s, sl) in rl.scope_logs.iter().enumerate() {
            let utf8 =
                res_utf8.clone().and_then(|()| sl.scope.as_ref().map_or(Ok(()), wire::Scope::check_utf8));
            for (i, log) in sl.log_records.iter().enumerate() {
                let checked = utf8
                    .clone()
                    .and_then(|()| log.check_utf8())
                    .map_err(|e| e.to_string())
                    .and_then(|()| check_id(&log.trace_id, 16, "trace_id", false))
                    .and_then(|()| check_id(&log.span_id, 8, "span_id", false));
                if let Err(why) = checked {
                    rejects.reject(|| format!("resource_logs[{r}].scope_logs[{s}].log_records[{i}]"), || why);
                    continue;
                }
                rows += 1;
                let observed_micros =
                    (log.observed_time_unix_nano != 0).then(|| nanos_to_micros(log.observed_time_unix_nano));
                let t = if log.time_unix_nano != 0 {
                    nanos_to_micros(log.time_unix_nano)
                } else {
                    observed_micros.unwrap_or(received_micros)
                };
                time.append_value(t);
                observed.append_option(observed_micros);
                severity.append_option((log.severity_number != 0).then_some(log.severity_number));
                severity_text
                    .append_option((!log.severity_text.is_empty()).then(|| text(&log.severity_text)));
                body.append_option(log.body.as_ref().and_then(wire::value_text));
                append_hex_option(&mut trace_id, &log.trace_id);
                append_hex_option(&mut span_id, &log.span_id);
                event_name.append_option((!log.event_name.is_empty()).then(|| text(&log.event_name)));
                common.push(resolver, &ctx, sl.scope.as_ref().map(|s| text(&s.name)), &log.attributes, t)?;
            }
        }
    }
    let Common { mut service, mut tenant, attributes, resource, mut scope, mut date, per_tenant } = common;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(observed.finish()),
        Arc::new(severity.finish()),
        Arc::new(severity_text.finish()),
        Arc::new(body.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(service.finish()),
        Arc::new(tenant.finish()),
        attributes.finish()?,
        resource.finish()?,
        Arc::new(scope.finish()),
        Arc::new(event_name.finish()),
        Arc::new(date.finish()),
    ];
    finish(Table::Logs, rows, columns, per_tenant, &rejects, "log records")
}

fn temporality(t: i32) -> Option<&'static str> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Delta) => Some("delta"),
        Ok(AggregationTemporality::Cumulative) => Some("cumulative"),
        _ => None,
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The metric columns, one row per data point.
struct MetricRows {
    time: TimestampMicrosecondBuilder,
    start: TimestampMicrosecondBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    unit: StringBuilder,
    description: StringBuilder,
    value: Float64Builder,
    count: Int64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<Int64Builder>,
    bounds: ListBuilder<Float64Builder>,
    exp_scale: Int32Builder,
    exp_zero: Int64Builder,
    pos_offset: Int32Builder,
    pos_counts: ListBuilder<Int64Builder>,
    neg_offset: Int32Builder,
    neg_counts: ListBuilder<Int64Builder>,
    q_quantile: Float64Builder,
    q_value: Float64Builder,
    quantiles: ListOffsets,
    temporality: StringBuilder,
    monotonic: BooleanBuilder,
    common: Common,
    exp_zero_threshold: Float64Builder,
    ex_time: TimestampMicrosecondBuilder,
    ex_value: Float64Builder,
    ex_trace: StringBuilder,
    ex_span: StringBuilder,
    ex_attrs: MapColumn,
    exemplars: ListOffsets,
    rows: usize,
}

/// What one data point adds beyond the shared columns.
#[derive(Default)]
struct Point<'a> {
    value: Option<f64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    buckets: Option<(&'a [u64], &'a [f64])>,
    exp: Option<(i32, u64, Option<&'a Buckets>, Option<&'a Buckets>)>,
    exp_zero_threshold: Option<f64>,
    quantiles: Option<Vec<(f64, f64)>>,
    /// `None` for a summary (whose points have no exemplars): a NULL list.
    exemplars: Option<&'a [Exemplar]>,
}

impl MetricRows {
    fn new() -> Self {
        Self {
            time: timestamps(),
            start: timestamps(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            unit: StringBuilder::new(),
            description: StringBuilder::new(),
            value: Float64Builder::new(),
            count: Int64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            bucket_counts: list_of_i64(),
            bounds: list_of_f64(),
            exp_scale: Int32Builder::new(),
            exp_zero: Int64Builder::new(),
            pos_offset: Int32Builder::new(),
            pos_counts: list_of_i64(),
            neg_offset: Int32Builder::new(),
            neg_counts: list_of_i64(),
            q_quantile: Float64Builder::new(),
            q_value: Float64Builder::new(),
            quantiles: ListOffsets::new(),
            temporality: StringBuilder::new(),
            monotonic: BooleanBuilder::new(),
            common: Common::new(),
            exp_zero_threshold: Float64Builder::new(),
            ex_time: timestamps(),
            ex_value: Float64Builder::new(),
            ex_trace: StringBuilder::new(),
            ex_span: StringBuilder::new(),
            ex_attrs: MapColumn::new(),
            exemplars: ListOffsets::new(),
            rows: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        resolver: &TenantResolver,
        ctx: &ResourceContext<'_>,
        scope: Option<&wire::Scope>,
        metric: &Metric,
        kind: &str,
        temporality: Option<&str>,
        monotonic: Option<bool>,
        attributes: &[wire::KeyValue],
        time_nanos: u64,
        start_nanos: u64,
        p: Point<'_>,
    ) -> Result<(), ArrowError> {
        self.rows += 1;
        let t = nanos_to_micros(time_nanos);
        self.time.append_value(t);
        self.start.append_option((start_nanos != 0).then(|| nanos_to_micros(start_nanos)));
        self.name.append_value(text(&metric.name));
        self.kind.append_value(kind);
        self.unit.append_option((!metric.unit.is_empty()).then(|| text(&metric.unit)));
        self.description.append_option((!metric.description.is_empty()).then(|| text(&metric.description)));
        self.value.append_option(p.value);
        self.count.append_option(p.count.map(count));
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        match p.buckets {
            Some((counts, bounds)) => {
                self.bucket_counts
                    .values()
                    .append_slice(&counts.iter().map(|c| count(*c)).collect::<Vec<_>>());
                self.bucket_counts.append(true);
                self.bounds.values().append_slice(bounds);
                self.bounds.append(true);
            }
            None => {
                self.bucket_counts.append_null();
                self.bounds.append_null();
            }
        }
        match p.exp {
            Some((scale, zero, pos, neg)) => {
                self.exp_scale.append_value(scale);
                self.exp_zero.append_value(count(zero));
                for (offset, counts, b) in [
                    (&mut self.pos_offset, &mut self.pos_counts, pos),
                    (&mut self.neg_offset, &mut self.neg_counts, neg),
                ] {
                    match b {
                        Some(b) => {
                            offset.append_value(b.offset);
                            counts
                                .values()
                                .append_slice(&b.bucket_counts.iter().map(|c| count(*c)).collect::<Vec<_>>());
                            counts.append(true);
                        }
                        None => {
                            offset.append_null();
                            counts.append_null();
                        }
                    }
                }
            }
            None => {
                self.exp_scale.append_null();
                self.exp_zero.append_null();
                self.pos_offset.append_null();
                self.pos_counts.append_null();
                self.neg_offset.append_null();
                self.neg_counts.append_null();
            }
        }
        match p.quantiles {
            Some(q) => {
                for (quantile, value) in &q {
                    self.q_quantile.append_value(*quantile);
                    self.q_value.append_value(*value);
                }
                self.quantiles.push(Some(q.len()));
            }
            None => self.quantiles.push(None),
        }
        self.temporality.append_option(temporality);
        self.monotonic.append_option(monotonic);
        self.exp_zero_threshold.append_option(p.exp_zero_threshold);
        if let Some(exemplars) = p.exemplars {
            for e in exemplars {
                self.ex_time
                    .append_option((e.time_unix_nano != 0).then(|| nanos_to_micros(e.time_unix_nano)));
                self.ex_value.append_option(e.value.map(ExemplarValue::as_f64));
                append_hex_option(&mut self.ex_trace, &e.trace_id);
                append_hex_option(&mut self.ex_span, &e.span_id);
                self.ex_attrs.push(&e.filtered_attributes)?;
            }
        }
        self.exemplars.push(p.exemplars.map(<[Exemplar]>::len));
        self.common.push(resolver, ctx, scope.map(|s| text(&s.name)), attributes, t)
    }

    fn finish(mut self, rejects: &Rejects) -> Result<Converted, ArrowError> {
        let table = Table::Metrics;
        let quantiles = self.quantiles.finish(
            table,
            "quantiles",
            vec![Arc::new(self.q_quantile.finish()), Arc::new(self.q_value.finish())],
        )?;
        let exemplars = self.exemplars.finish(
            table,
            "exemplars",
            vec![
                Arc::new(self.ex_time.finish()),
                Arc::new(self.ex_value.finish()),
                Arc::new(self.ex_trace.finish()),
                Arc::new(self.ex_span.finish()),
                self.ex_attrs.finish()?,
            ],
        )?;
        let Common { mut service, mut tenant, attributes, resource, mut scope, mut date, per_tenant } =
            self.common;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.bounds.finish()),
            Arc::new(self.exp_scale.finish()),
            Arc::new(self.exp_zero.finish()),
            Arc::new(self.pos_offset.finish()),
            Arc::new(self.pos_counts.finish()),
            Arc::new(self.neg_offset.finish()),
            Arc::new(self.neg_counts.finish()),
            quantiles,
            Arc::new(self.temporality.finish()),
            Arc::new(self.monotonic.finish()),
            Arc::new(service.finish()),
            Arc::new(tenant.finish()),
            attributes.finish()?,
            resource.finish()?,
            Arc::new(scope.finish()),
            Arc::new(date.finish()),
            Arc::new(self.exp_zero_threshold.finish()),
            exemplars,
        ];
        finish(table, self.rows, columns, per_tenant, rejects, "data points")
    }
}

/// Metric data points to `metrics` rows: gauges and sums as `value`, histograms with their
/// buckets, exponential histograms with scale and offset buckets, summaries with quantiles.
pub fn metrics(
    request: &MetricsRequest,
    resolver: &TenantResolver,
    bound: Option<&str>,
) -> Result<Converted, ArrowError> {
    let mut out = MetricRows::new();
    let mut rejects = Rejects::default();
    for (r, rm) in request.resource_metrics.iter().enumerate() {
        let res_attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let ctx = ResourceContext::new(resolver, bound, res_attrs);
        let res_utf8 = rm.resource.as_ref().map_or(Ok(()), wire::Resource::check_utf8);
        for (s, sm) in rm.scope_metrics.iter().enumerate() {
            let scope = sm.scope.as_ref();
            let scope_utf8 = res_utf8.clone().and_then(|()| scope.map_or(Ok(()), wire::Scope::check_utf8));
            for (m, metric) in sm.metrics.iter().enumerate() {
                let at = |i: usize| {
                    format!("resource_metrics[{r}].scope_metrics[{s}].metrics[{m}].data_points[{i}]")
                };
                let metric_utf8 = scope_utf8.clone().and_then(|()| metric.check_utf8());
                // Why a data point is rejected, if it is: a string that is not UTF-8 in it (its
                // exemplars included), its metric, scope or resource; no time; or an exemplar's
                // trace or span id of the wrong length.
                let bad = |attributes: &[wire::KeyValue], exemplars: &[Exemplar], time_unix_nano: u64| {
                    if let Err(e) =
                        metric_utf8.clone().and_then(|()| wire::check_point_utf8(attributes, exemplars))
                    {
                        return Some(e.to_string());
                    }
                    if time_unix_nano == 0 {
                        return Some("time_unix_nano is 0".to_string());
                    }
                    exemplars.iter().enumerate().find_map(|(j, e)| {
                        check_id(&e.trace_id, 16, "trace_id", false)
                            .and_then(|()| check_id(&e.span_id, 8, "span_id", false))
                            .err()
                            .map(|why| format!("exemplars[{j}].{why}"))
                    })
                };
                let Some(data) = metric.data.as_ref() else { continue };
                if metric.name.is_empty() {
                    let n = match data {
                        Data::Gauge(g) => g.data_points.len(),
                        Data::Sum(x) => x.data_points.len(),
                        Data::Histogram(h) => h.data_points.len(),
                        Data::ExponentialHistogram(h) => h.data_points.len(),
                        Data::Summary(x) => x.data_points.len(),
                    };
                    for i in 0..n {
                        rejects.reject(|| at(i), || "the metric has no name".to_string());
                    }
                    continue;
                }
                match data {
                    Data::Gauge(_) | Data::Sum(_) => {
                        let (kind, points, temp, mono) = match data {
                            Data::Gauge(g) => ("gauge", &g.data_points, None, None),
                            Data::Sum(x) => (
                                "sum",
                                &x.data_points,
                                temporality(x.aggregation_temporality),
                                Some(x.is_monotonic),
                            ),
                            _ => unreachable!("matched above"),
                        };
                        for (i, p) in points.iter().enumerate() {
                            if let Some(why) = bad(&p.attributes, &p.exemplars, p.time_unix_nano) {
                                rejects.reject(|| at(i), || why);
                                continue;
                            }
                            let v = p.value.map(NumberValue::as_f64);
                            out.push(
                                resolver,
                                &ctx,
                                scope,
                                metric,
                                kind,
                                temp,
                                mono,
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                Point { value: v, exemplars: Some(&p.exemplars), ..Default::default() },
                            )?;
                        }
                    }
                    Data::Histogram(h) => {
                        for (i, p) in h.data_points.iter().enumerate() {
                            if let Some(why) = bad(&p.attributes, &p.exemplars, p.time_unix_nano) {
                                rejects.reject(|| at(i), || why);
                                continue;
                            }
                            if !p.bucket_counts.is_empty()
                                && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                            {
                                rejects.reject(
                                    || at(i),
                                    || {
                                        format!(
                                            "{} bucket counts for {} explicit bounds, want {}",
                                            p.bucket_counts.len(),
                                            p.explicit_bounds.len(),
                                            p.explicit_bounds.len() + 1
                                        )
                                    },
                                );
                                continue;
                            }
                            out.push(
                                resolver,
                                &ctx,
                                scope,
                                metric,
                                "histogram",
                                temporality(h.aggregation_temporality),
                                None,
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                Point {
                                    count: Some(p.count),
                                    sum: p.sum,
                                    min: p.min,
                                    max: p.max,
                                    buckets: Some((&p.bucket_counts, &p.explicit_bounds)),
                                    exemplars: Some(&p.exemplars),
                                    ..Default::default()
                                },
                            )?;
                        }
                    }
                    Data::ExponentialHistogram(h) => {
                        for (i, p) in h.data_points.iter().enumerate() {
                            if let Some(why) = bad(&p.attributes, &p.exemplars, p.time_unix_nano) {
                                rejects.reject(|| at(i), || why);
                                continue;
                            }
                            out.push(
                                resolver,
                                &ctx,
                                scope,
                                metric,
                                "exponential_histogram",
                                temporality(h.aggregation_temporality),
                                None,
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                Point {
                                    count: Some(p.count),
                                    sum: p.sum,
                                    min: p.min,
                                    max: p.max,
                                    exp: Some((
                                        p.scale,
                                        p.zero_count,
                                        p.positive.as_ref(),
                                        p.negative.as_ref(),
                                    )),
                                    exp_zero_threshold: Some(p.zero_threshold),
                                    exemplars: Some(&p.exemplars),
                                    ..Default::default()
                                },
                            )?;
                        }
                    }
                    Data::Summary(x) => {
                        for (i, p) in x.data_points.iter().enumerate() {
                            if let Some(why) = bad(&p.attributes, &[], p.time_unix_nano) {
                                rejects.reject(|| at(i), || why);
                                continue;
                            }
                            out.push(
                                resolver,
                                &ctx,
                                scope,
                                metric,
                                "summary",
                                None,
                                None,
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                Point {
                                    count: Some(p.count),
                                    sum: Some(p.sum),
                                    quantiles: Some(
                                        p.quantile_values.iter().map(|q| (q.quantile, q.value)).collect(),
                                    ),
                                    ..Default::default()
                                },
                            )?;
                        }
                    }
                }
            }
        }
    }
    out.finish(&rejects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use bytes::Bytes;
    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest,
        common::v1::{AnyValue, KeyValue, any_value::Value},
        metrics::v1::{
            ExponentialHistogram, ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric,
            ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint,
            exponential_histogram_data_point::Buckets, metric::Data, summary_data_point::ValueAtQuantile,
        },
        resource::v1::Resource,
    };

    #[test]
    fn tenants_are_counted_across_runs() {
        let mut counts = TenantCounts::default();
        for t in [Some("a"), Some("a"), None, Some("a"), Some("b"), None, None] {
            counts.add(t);
        }
        let expect: HashMap<Option<String>, u64> =
            [(Some("a".to_string()), 3), (Some("b".to_string()), 1), (None, 3)].into();
        assert_eq!(counts.finish(), expect);
        assert!(TenantCounts::default().finish().is_empty());
    }

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
            key_strindex: 0,
        }
    }

    fn metric(name: &str, data: Data) -> Metric {
        Metric { name: name.into(), data: Some(data), ..Default::default() }
    }

    #[test]
    fn every_metric_type_and_the_bad_points_named() {
        let t = 1_764_000_000_000_000_000;
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "api"), kv("tenant.id", "acme")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "rpc.duration",
                            Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    time_unix_nano: t,
                                    count: 4,
                                    sum: 10.0,
                                    quantile_values: vec![
                                        ValueAtQuantile { quantile: 0.5, value: 2.0 },
                                        ValueAtQuantile { quantile: 0.99, value: 7.0 },
                                    ],
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "size",
                            Data::ExponentialHistogram(ExponentialHistogram {
                                aggregation_temporality: 1,
                                data_points: vec![ExponentialHistogramDataPoint {
                                    time_unix_nano: t,
                                    count: 3,
                                    scale: 2,
                                    zero_count: 1,
                                    positive: Some(Buckets { offset: -1, bucket_counts: vec![1, 1] }),
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "latency",
                            Data::Histogram(Histogram {
                                aggregation_temporality: 2,
                                data_points: vec![
                                    HistogramDataPoint {
                                        time_unix_nano: t,
                                        count: 2,
                                        bucket_counts: vec![1, 1],
                                        explicit_bounds: vec![0.5],
                                        ..Default::default()
                                    },
                                    HistogramDataPoint {
                                        time_unix_nano: t,
                                        bucket_counts: vec![1, 1, 1],
                                        explicit_bounds: vec![0.5],
                                        ..Default::default()
                                    },
                                    HistogramDataPoint { time_unix_nano: 0, ..Default::default() },
                                ],
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let request = MetricsRequest::from_proto(&request).unwrap();
        let c = metrics(&request, &TenantResolver::new(Default::default()), None).unwrap();
        assert_eq!(c.accepted(), 3);
        assert_eq!(c.rejected, 2);
        assert!(
            c.message.contains("metrics[2].data_points[1]: 3 bucket counts for 1 explicit bounds, want 2")
        );
        assert!(c.message.contains("metrics[2].data_points[2]: time_unix_nano is 0"));
        let b = c.batch.unwrap();
        assert_eq!(b.schema(), Table::Metrics.schema());
        let types: Vec<_> =
            b.column_by_name("metric_type").unwrap().as_string::<i32>().iter().flatten().collect();
        assert_eq!(types, ["summary", "exponential_histogram", "histogram"]);
        let temporality = b.column_by_name("temporality").unwrap().as_string::<i32>();
        assert!(temporality.is_null(0));
        assert_eq!((temporality.value(1), temporality.value(2)), ("delta", "cumulative"));
        let q = b.column_by_name("quantiles").unwrap().as_list::<i32>();
        assert_eq!(q.value(0).len(), 2);
        assert!(q.is_null(1));
        let pos = b.column_by_name("exp_positive_bucket_counts").unwrap().as_list::<i32>();
        assert_eq!(pos.value(1).len(), 2);
        let tenants = b.column_by_name("tenant_id").unwrap().as_string::<i32>();
        assert!(tenants.iter().all(|t| t == Some("acme")));
        assert_eq!(c.per_tenant.get(&Some("acme".to_string())), Some(&3));
    }

    /// A string that is not UTF-8 rejects the data points it belongs to, by position, and
    /// keeps the others (a prost `String` field refused the whole request).
    #[test]
    fn a_string_that_is_not_utf8_rejects_only_its_points() {
        let t = 1_764_000_000_000_000_000;
        let text = |b: &'static [u8]| Bytes::from_static(b);
        let kv = |key: &'static [u8], value: &'static [u8]| wire::KeyValue {
            key: text(key),
            value: Some(wire::AnyValue { value: Some(wire::Value::StringValue(text(value))) }),
        };
        let point = |attributes: Vec<wire::KeyValue>| wire::NumberDataPoint {
            attributes,
            time_unix_nano: t,
            value: Some(NumberValue::AsInt(1)),
            ..Default::default()
        };
        let gauge =
            |name: &'static [u8], unit: &'static [u8], points: Vec<wire::NumberDataPoint>| wire::Metric {
                name: text(name),
                unit: text(unit),
                data: Some(wire::Data::Gauge(wire::Gauge { data_points: points })),
                ..Default::default()
            };
        let scope_metrics = |metrics: Vec<wire::Metric>| wire::ScopeMetrics { scope: None, metrics };
        let request = MetricsRequest {
            resource_metrics: vec![
                wire::ResourceMetrics {
                    resource: Some(wire::Resource { attributes: vec![kv(b"tenant.id", b"acme")] }),
                    scope_metrics: vec![scope_metrics(vec![
                        gauge(b"ok", b"1", vec![point(vec![kv(b"k", b"v")]), point(vec![kv(b"k", b"\xff")])]),
                        gauge(b"bad.unit", b"\xc3", vec![point(vec![]), point(vec![])]),
                        gauge(b"also.ok", b"", vec![point(vec![kv(b"caf\xc3\xa9", b"\xe2\x82\xac")])]),
                    ])],
                },
                wire::ResourceMetrics {
                    resource: Some(wire::Resource { attributes: vec![kv(b"host.name", b"\x80")] }),
                    scope_metrics: vec![scope_metrics(vec![gauge(b"lost", b"", vec![point(vec![])])])],
                },
            ],
        };
        let c = metrics(&request, &TenantResolver::new(Default::default()), None).unwrap();
        assert_eq!((c.accepted(), c.rejected), (2, 4));
        for why in [
            "resource_metrics[0].scope_metrics[0].metrics[0].data_points[1]: attributes is not UTF-8",
            "resource_metrics[0].scope_metrics[0].metrics[1].data_points[0]: unit is not UTF-8",
            "resource_metrics[0].scope_metrics[0].metrics[1].data_points[1]: unit is not UTF-8",
            "resource_metrics[1].scope_metrics[0].metrics[0].data_points[0]: resource.attributes is not UTF-8",
        ] {
            assert!(c.message.contains(why), "{why} not in {}", c.message);
        }
        let b = c.batch.unwrap();
        let names: Vec<_> =
            b.column_by_name("metric_name").unwrap().as_string::<i32>().iter().flatten().collect();
        assert_eq!(names, ["ok", "also.ok"]);
        assert_eq!(c.per_tenant.get(&Some("acme".to_string())), Some(&2));
    }

    /// Exemplars keep their time, value, trace and span (hex) and filtered attributes; an
    /// exponential histogram its zero threshold. An exemplar id of the wrong length or a
    /// filtered attribute that is not UTF-8 rejects its data point, named, and no other.
    #[test]
    fn exemplars_and_the_zero_threshold_are_kept() {
        use opentelemetry_proto::tonic::metrics::v1::{Exemplar as PbExemplar, exemplar::Value as PbValue};
        let t = 1_764_000_000_000_000_000;
        let exemplar = |trace: &[u8], span: &[u8], value: PbValue, attrs: Vec<KeyValue>| PbExemplar {
            filtered_attributes: attrs,
            time_unix_nano: t - 1_000,
            value: Some(value),
            span_id: span.to_vec(),
            trace_id: trace.to_vec(),
        };
        let trace = [0xab; 16];
        let span = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        let histogram = |exemplars| HistogramDataPoint {
            time_unix_nano: t,
            count: 1,
            bucket_counts: vec![1, 0],
            explicit_bounds: vec![0.5],
            exemplars,
            ..Default::default()
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "latency",
                            Data::Histogram(Histogram {
                                aggregation_temporality: 2,
                                data_points: vec![
                                    histogram(vec![
                                        exemplar(
                                            &trace,
                                            &span,
                                            PbValue::AsDouble(0.25),
                                            vec![kv("user", "u1")],
                                        ),
                                        // Not sampled: no trace, no span.
                                        exemplar(&[], &[], PbValue::AsInt(3), vec![]),
                                    ]),
                                    histogram(vec![exemplar(
                                        &trace[..3],
                                        &span,
                                        PbValue::AsDouble(1.0),
                                        vec![],
                                    )]),
                                    histogram(vec![]),
                                ],
                            }),
                        ),
                        metric(
                            "size",
                            Data::ExponentialHistogram(ExponentialHistogram {
                                aggregation_temporality: 1,
                                data_points: vec![ExponentialHistogramDataPoint {
                                    time_unix_nano: t,
                                    count: 1,
                                    zero_count: 1,
                                    zero_threshold: 1e-9,
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "rpc.duration",
                            Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    time_unix_nano: t,
                                    ..Default::default()
                                }],
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut request = MetricsRequest::from_proto(&request).unwrap();
        // A filtered attribute that is not UTF-8 (opentelemetry-proto's `String` cannot hold one).
        let Some(wire::Data::Histogram(h)) =
            &mut request.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("a histogram")
        };
        let mut bad = h.data_points[2].clone();
        bad.exemplars = vec![wire::Exemplar {
            filtered_attributes: vec![wire::KeyValue {
                key: Bytes::from_static(b"k"),
                value: Some(wire::AnyValue {
                    value: Some(wire::Value::StringValue(Bytes::from_static(b"\xff"))),
                }),
            }],
            ..Default::default()
        }];
        h.data_points.push(bad);
        let c = metrics(&request, &TenantResolver::new(Default::default()), None).unwrap();
        assert_eq!((c.accepted(), c.rejected), (4, 2), "{}", c.message);
        for why in [
            "metrics[0].data_points[1]: exemplars[0].trace_id has 3 bytes, want 16",
            "metrics[0].data_points[3]: exemplars[0].filtered_attributes is not UTF-8",
        ] {
            assert!(c.message.contains(why), "{why} not in {}", c.message);
        }
        let b = c.batch.unwrap();
        assert_eq!(b.schema(), Table::Metrics.schema());
        let exemplars = b.column_by_name("exemplars").unwrap().as_list::<i32>();
        // The histogram's two points, the exponential histogram's none, the summary's NULL.
        assert_eq!(
            (0..4).map(|i| exemplars.is_valid(i).then(|| exemplars.value(i).len())).collect::<Vec<_>>(),
            [Some(2), Some(0), Some(0), None]
        );
        let first = exemplars.value(0);
        let first = first.as_struct();
        let column = |name: &str| first.column_by_name(name).unwrap().clone();
        assert_eq!(column("trace_id").as_string::<i32>().value(0), "ab".repeat(16));
        assert_eq!(column("span_id").as_string::<i32>().value(0), "0102030405060708");
        assert!(column("trace_id").is_null(1) && column("span_id").is_null(1));
        let values = column("value");
        assert_eq!(values.as_primitive::<arrow::datatypes::Float64Type>().values(), &[0.25, 3.0]);
        let times = column("time");
        assert_eq!(
            times.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(0),
            nanos_to_micros(t - 1_000)
        );
        let attrs = column("filtered_attributes");
        let attrs = attrs.as_map();
        assert_eq!(attrs.value(0).column(0).as_string::<i32>().value(0), "user");
        assert_eq!(attrs.value(0).column(1).as_string::<i32>().value(0), "u1");
        assert_eq!(attrs.value(1).len(), 0);
        let threshold = b.column_by_name("exp_zero_threshold").unwrap();
        let threshold = threshold.as_primitive::<arrow::datatypes::Float64Type>();
        assert!(threshold.is_null(0) && threshold.is_null(3));
        assert_eq!(threshold.value(2), 1e-9);
    }
}
