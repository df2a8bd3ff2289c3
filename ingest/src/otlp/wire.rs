//! OTLP trace, metric and log export requests decoded without copying their strings.
//!
//! The same messages as `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`,
//! `...metrics.v1.ExportMetricsServiceRequest` and `...logs.v1.ExportLogsServiceRequest`,
//! declared with prost's derive, with two differences from opentelemetry-proto's types:
//! - strings and ids are `bytes::Bytes`, slices of the request's buffer (a protobuf `string`
//!   and `bytes` field are the same on the wire), instead of a fresh `String` or `Vec` each.
//!   Decoding a request of 512 spans allocated a `String` per attribute key and value, and
//!   freeing them again was another 8% of a gRPC server's CPU.
//! - fields the lake does not keep (dropped counts, flags, schema URLs, scope attributes,
//!   metric metadata) are left out, so prost skips them as unknown fields.
//!
//! Strings are not checked while decoding (prost checks `string` fields, and refused a whole
//! request for one bad string): the conversion checks each resource, scope and record
//! (`check_utf8`) before it reads them with [`text`], and rejects the records with a string
//! that is not UTF-8 by position, keeping the rest of the request (partial success).

use std::borrow::Cow;

use arrow::array::BinaryBuilder;
use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{
        AnyValue as PbAnyValue, ArrayValue as PbArray, KeyValue as PbKeyValue, KeyValueList as PbKvList,
    },
};
use prost::Message;

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct TraceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`.
#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<Scope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

/// `InstrumentationScope` (name and version: the lake keeps no scope attributes).
#[derive(Clone, PartialEq, Message)]
pub struct Scope {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub version: Bytes,
}

/// `Span`.
#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(bytes = "bytes", tag = "1")]
    pub trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub span_id: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub trace_state: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    pub parent_span_id: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub name: Bytes,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
    #[prost(message, repeated, tag = "13")]
    pub links: Vec<Link>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

/// `Span.Event`.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(bytes = "bytes", tag = "2")]
    pub name: Bytes,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
}

/// `Span.Link`.
#[derive(Clone, PartialEq, Message)]
pub struct Link {
    #[prost(bytes = "bytes", tag = "1")]
    pub trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub span_id: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub trace_state: Bytes,
    #[prost(message, repeated, tag = "4")]
    pub attributes: Vec<KeyValue>,
}

/// `Status`.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(bytes = "bytes", tag = "2")]
    pub message: Bytes,
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub value: Option<Value>,
}

/// `AnyValue.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(bytes = "bytes", tag = "1")]
    StringValue(Bytes),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(int64, tag = "3")]
    IntValue(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    ArrayValue(ArrayValue),
    #[prost(message, tag = "6")]
    KvlistValue(KeyValueList),
    #[prost(bytes = "bytes", tag = "7")]
    BytesValue(Bytes),
    #[prost(int32, tag = "8")]
    StringValueStrindex(i32),
}

/// `ArrayValue`.
#[derive(Clone, PartialEq, Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

/// `KeyValueList`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

/// `ExportLogsServiceRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct LogsRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

/// `ResourceLogs`.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceLogs {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
}

/// `ScopeLogs`.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeLogs {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<Scope>,
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
}

/// `LogRecord`.
#[derive(Clone, PartialEq, Message)]
pub struct LogRecord {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(int32, tag = "2")]
    pub severity_number: i32,
    #[prost(bytes = "bytes", tag = "3")]
    pub severity_text: Bytes,
    #[prost(message, optional, tag = "5")]
    pub body: Option<AnyValue>,
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    #[prost(bytes = "bytes", tag = "9")]
    pub trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "10")]
    pub span_id: Bytes,
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
    #[prost(bytes = "bytes", tag = "12")]
    pub event_name: Bytes,
}

/// `ExportMetricsServiceRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricsRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

/// `ResourceMetrics`.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceMetrics {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_metrics: Vec<ScopeMetrics>,
}

/// `ScopeMetrics`.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeMetrics {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<Scope>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
}

/// `Metric` (its `metadata` is not kept).
#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub description: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub unit: Bytes,
    #[prost(oneof = "Data", tags = "5, 7, 9, 10, 11")]
    pub data: Option<Data>,
}

/// `Metric.data`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Data {
    #[prost(message, tag = "5")]
    Gauge(Gauge),
    #[prost(message, tag = "7")]
    Sum(Sum),
    #[prost(message, tag = "9")]
    Histogram(Histogram),
    #[prost(message, tag = "10")]
    ExponentialHistogram(ExponentialHistogram),
    #[prost(message, tag = "11")]
    Summary(Summary),
}

/// `Gauge`.
#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
}

/// `Sum`.
#[derive(Clone, PartialEq, Message)]
pub struct Sum {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
    #[prost(bool, tag = "3")]
    pub is_monotonic: bool,
}

/// `Histogram`.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<HistogramDataPoint>,
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
}

/// `ExponentialHistogram`.
#[derive(Clone, PartialEq, Message)]
pub struct ExponentialHistogram {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<ExponentialHistogramDataPoint>,
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
}

/// `Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<SummaryDataPoint>,
}

/// `NumberDataPoint` (its `flags` are not kept).
#[derive(Clone, PartialEq, Message)]
pub struct NumberDataPoint {
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(oneof = "NumberValue", tags = "4, 6")]
    pub value: Option<NumberValue>,
    #[prost(message, repeated, tag = "5")]
    pub exemplars: Vec<Exemplar>,
}

/// `Exemplar`: a measurement picked as an example of a data point, with the trace it was
/// recorded in when it was sampled.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "7")]
    pub filtered_attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    pub time_unix_nano: u64,
    #[prost(oneof = "ExemplarValue", tags = "3, 6")]
    pub value: Option<ExemplarValue>,
    #[prost(bytes = "bytes", tag = "4")]
    pub span_id: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub trace_id: Bytes,
}

/// `Exemplar.value` (the same choice as [`NumberValue`], under another tag).
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum ExemplarValue {
    #[prost(double, tag = "3")]
    AsDouble(f64),
    #[prost(sfixed64, tag = "6")]
    AsInt(i64),
}

impl ExemplarValue {
    /// The value as the lake keeps it (`value` is a double column).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::AsDouble(d) => d,
            Self::AsInt(i) => i as f64,
        }
    }
}

/// `NumberDataPoint.value`.
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum NumberValue {
    #[prost(double, tag = "4")]
    AsDouble(f64),
    #[prost(sfixed64, tag = "6")]
    AsInt(i64),
}

impl NumberValue {
    /// The value as the lake keeps it (`value` is a double column).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::AsDouble(d) => d,
            Self::AsInt(i) => i as f64,
        }
    }
}

/// `HistogramDataPoint`.
#[derive(Clone, PartialEq, Message)]
pub struct HistogramDataPoint {
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    #[prost(double, optional, tag = "5")]
    pub sum: Option<f64>,
    #[prost(fixed64, repeated, tag = "6")]
    pub bucket_counts: Vec<u64>,
    #[prost(double, repeated, tag = "7")]
    pub explicit_bounds: Vec<f64>,
    #[prost(double, optional, tag = "11")]
    pub min: Option<f64>,
    #[prost(double, optional, tag = "12")]
    pub max: Option<f64>,
    #[prost(message, repeated, tag = "8")]
    pub exemplars: Vec<Exemplar>,
}

/// `ExponentialHistogramDataPoint` (its `flags` are not kept).
#[derive(Clone, PartialEq, Message)]
pub struct ExponentialHistogramDataPoint {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    #[prost(double, optional, tag = "5")]
    pub sum: Option<f64>,
    #[prost(sint32, tag = "6")]
    pub scale: i32,
    #[prost(fixed64, tag = "7")]
    pub zero_count: u64,
    #[prost(message, optional, tag = "8")]
    pub positive: Option<Buckets>,
    #[prost(message, optional, tag = "9")]
    pub negative: Option<Buckets>,
    #[prost(double, optional, tag = "12")]
    pub min: Option<f64>,
    #[prost(double, optional, tag = "13")]
    pub max: Option<f64>,
    #[prost(message, repeated, tag = "11")]
    pub exemplars: Vec<Exemplar>,
    #[prost(double, tag = "14")]
    pub zero_threshold: f64,
}

/// `ExponentialHistogramDataPoint.Buckets`.
#[derive(Clone, PartialEq, Message)]
pub struct Buckets {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint64, repeated, tag = "2")]
    pub bucket_counts: Vec<u64>,
}

/// `SummaryDataPoint`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryDataPoint {
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    #[prost(double, tag = "5")]
    pub sum: f64,
    #[prost(message, repeated, tag = "6")]
    pub quantile_values: Vec<ValueAtQuantile>,
}

/// `SummaryDataPoint.ValueAtQuantile`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct ValueAtQuantile {
    #[prost(double, tag = "1")]
    pub quantile: f64,
    #[prost(double, tag = "2")]
    pub value: f64,
}

/// `message` encoded and decoded as `W`: the same message in other types.
fn reencode<W: Message + Default>(message: &impl Message) -> Result<W, prost::DecodeError> {
    Encoded::from_proto(message).map(|e| e.request)
}

/// A decoded request with the protobuf bytes it was decoded from. The write-ahead log keeps
/// those bytes, not the converted rows: they are a third of the size and need no encoding, and
/// replaying them converts them again (the conversion is deterministic given the same bound
/// tenant, clock reading and tenant mappings).
#[derive(Debug, Clone)]
pub struct Encoded<T> {
    /// The decoded request (its strings are slices of `bytes`).
    pub request: T,
    /// Its protobuf encoding.
    pub bytes: Bytes,
}

impl<T: Message + Default> Encoded<T> {
    /// Decodes a protobuf request, keeping its bytes.
    pub fn decode(bytes: Bytes) -> Result<Self, prost::DecodeError> {
        Ok(Self { request: T::decode(bytes.clone())?, bytes })
    }

    /// The same message in another type (opentelemetry-proto's, from OTLP/JSON or the demo),
    /// encoded and decoded into `T`.
    pub fn from_proto(message: &impl Message) -> Result<Self, prost::DecodeError> {
        Self::decode(Bytes::from(message.encode_to_vec()))
    }
}

/// A string field known to be UTF-8: the conversion reads a record only after its strings, its
/// scope's and its resource's passed the checks below (a string that is not reads as empty).
pub(crate) fn text(bytes: &Bytes) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// A string field that is not UTF-8, named by its path in the record, scope or resource.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0} is not UTF-8")]
pub struct NotUtf8(String);

impl TraceRequest {
    /// The request in opentelemetry-proto's types (from OTLP/JSON), re-encoded and decoded into
    /// these.
    pub fn from_proto(request: &ExportTraceServiceRequest) -> Result<Self, prost::DecodeError> {
        reencode(request)
    }
}

impl LogsRequest {
    /// The request in opentelemetry-proto's types (from OTLP/JSON), re-encoded and decoded into
    /// these.
    pub fn from_proto(request: &ExportLogsServiceRequest) -> Result<Self, prost::DecodeError> {
        reencode(request)
    }
}

impl MetricsRequest {
    /// The request in opentelemetry-proto's types (from OTLP/JSON or the demo), re-encoded and
    /// decoded into these.
    pub fn from_proto(request: &ExportMetricsServiceRequest) -> Result<Self, prost::DecodeError> {
        reencode(request)
    }
}

impl Resource {
    /// Checks that every string of the resource is UTF-8, naming the first that is not.
    pub fn check_utf8(&self) -> Result<(), NotUtf8> {
        check_attributes(&self.attributes, &|| "resource.attributes".to_string())
    }
}

impl Scope {
    /// Checks that the scope's name and version are UTF-8.
    pub fn check_utf8(&self) -> Result<(), NotUtf8> {
        check_str(&self.name, &|| "scope.name".to_string())?;
        check_str(&self.version, &|| "scope.version".to_string())
    }
}

impl Span {
    /// Checks that every string of the span is UTF-8, naming the first that is not.
    pub fn check_utf8(&self) -> Result<(), NotUtf8> {
        check_str(&self.trace_state, &|| "trace_state".to_string())?;
        check_str(&self.name, &|| "name".to_string())?;
        check_attributes(&self.attributes, &|| "attributes".to_string())?;
        for (e, event) in self.events.iter().enumerate() {
            check_str(&event.name, &|| format!("events[{e}].name"))?;
            check_attributes(&event.attributes, &|| format!("events[{e}].attributes"))?;
        }
        for (l, link) in self.links.iter().enumerate() {
            check_str(&link.trace_state, &|| format!("links[{l}].trace_state"))?;
            check_attributes(&link.attributes, &|| format!("links[{l}].attributes"))?;
        }
        match &self.status {
            Some(status) => check_str(&status.message, &|| "status.message".to_string()),
            None => Ok(()),
        }
    }
}

impl Metric {
    /// Checks that the metric's name, description and unit are UTF-8, naming the first that is
    /// not (its data points' attributes are checked one point at a time).
    pub fn check_utf8(&self) -> Result<(), NotUtf8> {
        check_str(&self.name, &|| "name".to_string())?;
        check_str(&self.description, &|| "description".to_string())?;
        check_str(&self.unit, &|| "unit".to_string())
    }
}

/// Checks that a data point's attributes and its exemplars' filtered attributes are UTF-8,
/// naming the first that is not.
pub fn check_point_utf8(attributes: &[KeyValue], exemplars: &[Exemplar]) -> Result<(), NotUtf8> {
    check_attributes(attributes, &|| "attributes".to_string())?;
    for (j, e) in exemplars.iter().enumerate() {
        check_attributes(&e.filtered_attributes, &|| format!("exemplars[{j}].filtered_attributes"))?;
    }
    Ok(())
}

impl LogRecord {
    /// Checks that every string of the record is UTF-8, naming the first that is not.
    pub fn check_utf8(&self) -> Result<(), NotUtf8> {
        check_str(&self.severity_text, &|| "severity_text".to_string())?;
        check_str(&self.event_name, &|| "event_name".to_string())?;
        if let Some(body) = &self.body {
            check_value(body, &|| "body".to_string())?;
        }
        check_attributes(&self.attributes, &|| "attributes".to_string())
    }
}

fn check_str(b: &Bytes, at: &dyn Fn() -> String) -> Result<(), NotUtf8> {
    if is_utf8(b) { Ok(()) } else { Err(NotUtf8(at())) }
}

/// Whether `b` is UTF-8: ASCII (nearly every attribute) by the quicker test first.
fn is_utf8(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

fn check_attributes(attributes: &[KeyValue], at: &dyn Fn() -> String) -> Result<(), NotUtf8> {
    for kv in attributes {
        if !is_utf8(&kv.key) {
            return Err(NotUtf8(at()));
        }
        if let Some(v) = &kv.value {
            check_value(v, at)?;
        }
    }
    Ok(())
}

fn check_value(value: &AnyValue, at: &dyn Fn() -> String) -> Result<(), NotUtf8> {
    match &value.value {
        Some(Value::StringValue(s)) if !is_utf8(s) => Err(NotUtf8(at())),
        Some(Value::ArrayValue(a)) => a.values.iter().try_for_each(|v| check_value(v, at)),
        Some(Value::KvlistValue(kv)) => check_attributes(&kv.values, at),
        _ => Ok(()),
    }
}

/// The text of a value: a string borrowed from the request; anything else as `value::text`
/// renders it in opentelemetry-proto's type (one rendering for both).
pub(crate) fn value_text(value: &AnyValue) -> Option<Cow<'_, str>> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(Cow::Borrowed(text(s))),
        _ => super::value::text(&to_proto(value)).map(|c| Cow::Owned(c.into_owned())),
    }
}

/// Appends the text of `value` ([`value_text`]; NULL for none) to `builder`, a string column
/// gathered as bytes (`convert::MapColumn`, which checks them as UTF-8 once for the column): a
/// string's bytes as they are (its record was checked), numbers written into the builder, not
/// into a `String` of their own (an attribute such as `http.response.status_code` is on most
/// spans).
pub(crate) fn append_value_text(builder: &mut BinaryBuilder, value: Option<&AnyValue>) {
    /// A scalar's `Display`, as `value::text`'s `to_string` spells it.
    fn display(builder: &mut BinaryBuilder, scalar: &dyn std::fmt::Display) {
        use std::io::Write as _;
        // Writing to a builder cannot fail.
        let _ = write!(builder, "{scalar}");
        builder.append_value(b"");
    }
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => builder.append_value(s),
        Some(Value::BoolValue(b)) => display(builder, b),
        Some(Value::IntValue(i)) => display(builder, i),
        Some(Value::DoubleValue(d)) => display(builder, d),
        _ => builder.append_option(value.and_then(value_text).as_deref().map(str::as_bytes)),
    }
}

/// Bytes the keys and values of `attributes` take as text, about (numbers count 8; a sizing
/// hint for column builders).
pub(crate) fn attribute_bytes(attributes: &[KeyValue]) -> usize {
    attributes.iter().map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, value_bytes)).sum()
}

/// Bytes a value takes as text, about (see [`attribute_bytes`]).
pub(crate) fn value_bytes(value: &AnyValue) -> usize {
    match &value.value {
        Some(Value::StringValue(s) | Value::BytesValue(s)) => s.len(),
        Some(Value::ArrayValue(a)) => a.values.iter().map(|v| value_bytes(v) + 3).sum(),
        Some(Value::KvlistValue(kv)) => attribute_bytes(&kv.values) + 6 * kv.values.len(),
        _ => 8,
    }
}

/// A value in opentelemetry-proto's type (scalars copy nothing; strings only inside nested
/// values are copied).
fn to_proto(value: &AnyValue) -> PbAnyValue {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Pb;
    PbAnyValue {
        value: value.value.as_ref().map(|v| match v {
            Value::StringValue(s) => Pb::StringValue(text(s).to_string()),
            Value::BoolValue(b) => Pb::BoolValue(*b),
            Value::IntValue(i) => Pb::IntValue(*i),
            Value::DoubleValue(d) => Pb::DoubleValue(*d),
            Value::BytesValue(b) => Pb::BytesValue(b.to_vec()),
            Value::StringValueStrindex(i) => Pb::StringValueStrindex(*i),
            Value::ArrayValue(a) => {
                Pb::ArrayValue(PbArray { values: a.values.iter().map(to_proto).collect() })
            }
            Value::KvlistValue(kv) => Pb::KvlistValue(PbKvList {
                values: kv
                    .values
                    .iter()
                    .map(|k| PbKeyValue {
                        key: text(&k.key).to_string(),
                        value: k.value.as_ref().map(to_proto),
                        key_strindex: 0,
                    })
                    .collect(),
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, MapArray, StringArray};
    use opentelemetry_proto::tonic::{
        common::v1::{ArrayValue, InstrumentationScope, KeyValueList, any_value::Value as V},
        resource::v1::Resource as PbResource,
        trace::v1::{
            ResourceSpans as PbResourceSpans, ScopeSpans as PbScopeSpans, Span as PbSpan, Status as PbStatus,
            span::{Event as PbEvent, Link as PbLink},
        },
    };

    use super::*;
    use crate::otlp::{TenantResolver, convert};

    fn kv(key: &str, value: V) -> PbKeyValue {
        PbKeyValue { key: key.into(), value: Some(PbAnyValue { value: Some(value) }), key_strindex: 0 }
    }

    /// Every kind of value, events, links, status and scope, beside fields the lake does not
    /// keep (dropped counts, flags, schema URLs, scope attributes), which must be skipped.
    fn request() -> ExportTraceServiceRequest {
        let attributes = vec![
            kv("s", V::StringValue("a b é".into())),
            kv("b", V::BoolValue(true)),
            kv("i", V::IntValue(-7)),
            kv("d", V::DoubleValue(0.25)),
            kv("bytes", V::BytesValue(vec![1, 2, 255])),
            kv(
                "nested",
                V::KvlistValue(KeyValueList {
                    values: vec![
                        kv("n", V::IntValue(1)),
                        kv(
                            "l",
                            V::ArrayValue(ArrayValue {
                                values: vec![PbAnyValue { value: Some(V::StringValue("x".into())) }],
                            }),
                        ),
                    ],
                }),
            ),
            PbKeyValue { key: "empty".into(), value: None, key_strindex: 0 },
        ];
        let span = |id: u8, trace_len: usize| PbSpan {
            trace_id: vec![7; trace_len],
            span_id: vec![id; 8],
            trace_state: "k=v".into(),
            parent_span_id: vec![],
            flags: 1,
            name: format!("GET /{id}"),
            kind: 2,
            start_time_unix_nano: 1_764_000_000_000_000_000,
            end_time_unix_nano: 1_764_000_000_250_000_000,
            attributes: attributes.clone(),
            dropped_attributes_count: 3,
            events: vec![PbEvent {
                time_unix_nano: 1_764_000_000_100_000_000,
                name: "exception".into(),
                attributes: vec![kv("exception.type", V::StringValue("E".into()))],
                dropped_attributes_count: 1,
            }],
            dropped_events_count: 2,
            links: vec![PbLink {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                trace_state: String::new(),
                attributes: vec![kv("why", V::StringValue("retry".into()))],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 4,
            status: Some(PbStatus { message: "boom".into(), code: 2 }),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![PbResourceSpans {
                resource: Some(PbResource {
                    attributes: vec![
                        kv("service.name", V::StringValue("checkout".into())),
                        kv("tenant.id", V::StringValue("acme".into())),
                    ],
                    dropped_attributes_count: 5,
                    entity_refs: vec![],
                }),
                scope_spans: vec![PbScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.2".into(),
                        attributes: vec![kv("scope.attr", V::IntValue(1))],
                        dropped_attributes_count: 0,
                    }),
                    spans: vec![span(1, 16), span(2, 15), span(3, 16)],
                    schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
            }],
        }
    }

    fn map_row(map: &MapArray, row: usize) -> Vec<(String, Option<String>)> {
        let entries = map.value(row);
        let keys: &StringArray = entries.column(0).as_string();
        let values: &StringArray = entries.column(1).as_string();
        (0..keys.len())
            .map(|i| (keys.value(i).to_string(), values.is_valid(i).then(|| values.value(i).to_string())))
            .collect()
    }

    #[test]
    fn decoded_without_copies_the_rows_are_what_the_proto_types_say() {
        let pb = request();
        let wire = TraceRequest::decode(Bytes::from(pb.encode_to_vec())).unwrap();
        assert_eq!(wire, TraceRequest::from_proto(&pb).unwrap());
        let c = convert::traces(&wire, &TenantResolver::new(Default::default()), None).unwrap();
        // The span with a 15-byte trace id is rejected by position; the other two are kept.
        assert_eq!((c.accepted(), c.rejected), (2, 1));
        assert!(
            c.message.contains("resource_spans[0].scope_spans[0].spans[1]: trace_id has 15 bytes"),
            "{}",
            c.message
        );
        let batch = c.batch.unwrap();
        let col = |name: &str| batch.column_by_name(name).unwrap();
        let text = |name: &str, row: usize| col(name).as_string::<i32>().value(row).to_string();
        assert_eq!(text("trace_id", 0), "07".repeat(16));
        assert_eq!(text("span_id", 1), "03".repeat(8));
        assert!(col("parent_span_id").is_null(0));
        assert_eq!(
            (text("name", 1), text("kind", 0), text("status_code", 0)),
            ("GET /3".into(), "server".into(), "error".into())
        );
        assert_eq!((text("status_message", 0), text("trace_state", 0)), ("boom".into(), "k=v".into()));
        assert_eq!((text("service_name", 0), text("tenant_id", 0)), ("checkout".into(), "acme".into()));
        assert_eq!((text("scope_name", 0), text("scope_version", 0)), ("lib".into(), "1.2".into()));
        // Attribute values rendered exactly as from opentelemetry-proto's types.
        let expected: Vec<(String, Option<String>)> = pb.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .iter()
            .map(|kv| {
                (kv.key.clone(), kv.value.as_ref().and_then(crate::otlp::value::text).map(|c| c.into_owned()))
            })
            .collect();
        let attributes = col("attributes").as_map();
        assert_eq!(map_row(attributes, 0), expected);
        assert_eq!(map_row(attributes, 1), expected);
        assert_eq!(expected[4].1.as_deref(), Some("AQL/"));
        assert_eq!(expected[6].1, None);
        let resource = col("resource_attributes").as_map();
        assert_eq!(
            map_row(resource, 1),
            vec![("service.name".into(), Some("checkout".into())), ("tenant.id".into(), Some("acme".into()))]
        );
        let events = col("events").as_list::<i32>().value(0);
        let event = events.as_struct();
        assert_eq!(event.column_by_name("name").unwrap().as_string::<i32>().value(0), "exception");
        let links = col("links").as_list::<i32>().value(1);
        let link = links.as_struct();
        assert_eq!(link.column_by_name("trace_id").unwrap().as_string::<i32>().value(0), "09".repeat(16));
        assert!(link.column_by_name("trace_state").unwrap().is_null(0));
        assert_eq!(
            map_row(link.column_by_name("attributes").unwrap().as_map(), 0),
            vec![("why".into(), Some("retry".into()))]
        );
    }

    /// `pb` decoded after its last "fine" became "f\xffne" (the same length, not UTF-8).
    fn not_utf8(pb: &ExportTraceServiceRequest) -> TraceRequest {
        let mut bytes = pb.encode_to_vec();
        let at = bytes.windows(4).rposition(|w| w == b"fine").unwrap();
        bytes[at + 1] = 0xff;
        TraceRequest::decode(Bytes::from(bytes)).unwrap()
    }

    #[test]
    fn a_string_that_is_not_utf8_rejects_its_record_and_says_where() {
        // Span 2 for its attribute (span 1 for its trace id; span 0 is kept).
        let mut in_a_span = request();
        in_a_span.resource_spans[0].scope_spans[0].spans[2]
            .attributes
            .push(kv("ok", V::StringValue("fine".into())));
        // A bad string in a second resource rejects each of its spans, and nothing else.
        let mut in_a_resource = request();
        let mut other = in_a_resource.resource_spans[0].clone();
        other.resource.as_mut().unwrap().attributes.push(kv("host.name", V::StringValue("fine".into())));
        in_a_resource.resource_spans.push(other);
        // Attribute maps are gathered unchecked and checked once per column (`MapColumn`):
        // every way into one must be checked per record, or a bad string fails the request.
        let mut in_a_key = request();
        in_a_key.resource_spans[0].scope_spans[0].spans[2].attributes.push(kv("fine", V::IntValue(1)));
        let mut in_an_event = request();
        in_an_event.resource_spans[0].scope_spans[0].spans[2].events[0]
            .attributes
            .push(kv("e", V::StringValue("fine".into())));
        let mut in_a_link = request();
        let span = &mut in_a_link.resource_spans[0].scope_spans[0].spans[2];
        assert!(!span.links.is_empty(), "the request has links");
        span.links[0].attributes.push(kv("fine", V::BoolValue(true)));
        let cases = [
            (in_a_span, (1, 2), "resource_spans[0].scope_spans[0].spans[2]: attributes is not UTF-8"),
            (in_a_key, (1, 2), "resource_spans[0].scope_spans[0].spans[2]: attributes is not UTF-8"),
            (
                in_an_event,
                (1, 2),
                "resource_spans[0].scope_spans[0].spans[2]: events[0].attributes is not UTF-8",
            ),
            (
                in_a_link,
                (1, 2),
                "resource_spans[0].scope_spans[0].spans[2]: links[0].attributes is not UTF-8",
            ),
            (
                in_a_resource,
                (2, 4),
                "resource_spans[1].scope_spans[0].spans[0]: resource.attributes is not UTF-8",
            ),
        ];
        for (pb, counts, message) in cases {
            let c = convert::traces(&not_utf8(&pb), &TenantResolver::new(Default::default()), None).unwrap();
            assert_eq!((c.accepted(), c.rejected), counts);
            assert!(c.message.contains(message), "{}", c.message);
        }
    }

    #[test]
    fn log_records_decoded_without_copies_keep_every_body_and_field() {
        use opentelemetry_proto::tonic::{
            collector::logs::v1::ExportLogsServiceRequest,
            logs::v1::{LogRecord as PbLog, ResourceLogs as PbResourceLogs, ScopeLogs as PbScopeLogs},
        };
        let bodies = [
            V::StringValue("disk full".into()),
            V::IntValue(42),
            V::BytesValue(vec![0, 1]),
            V::KvlistValue(KeyValueList { values: vec![kv("k", V::BoolValue(false))] }),
        ];
        let log = |i: usize, body: &V, span_len: usize| PbLog {
            time_unix_nano: 1_764_000_000_000_000_000 + i as u64,
            observed_time_unix_nano: 1_764_000_000_500_000_000,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: Some(PbAnyValue { value: Some(body.clone()) }),
            attributes: vec![kv("user.id", V::StringValue(format!("u{i}")))],
            dropped_attributes_count: 2,
            flags: 1,
            trace_id: vec![5; 16],
            span_id: vec![6; span_len],
            event_name: "app.crash".into(),
        };
        let mut records: Vec<PbLog> = bodies.iter().enumerate().map(|(i, b)| log(i, b, 8)).collect();
        records.insert(1, log(9, &bodies[0], 3));
        let pb = ExportLogsServiceRequest {
            resource_logs: vec![PbResourceLogs {
                resource: Some(PbResource {
                    attributes: vec![kv("service.name", V::StringValue("api".into()))],
                    dropped_attributes_count: 0,
                    entity_refs: vec![],
                }),
                scope_logs: vec![PbScopeLogs {
                    scope: Some(InstrumentationScope { name: "logger".into(), ..Default::default() }),
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let wire = LogsRequest::decode(Bytes::from(pb.encode_to_vec())).unwrap();
        assert_eq!(wire, LogsRequest::from_proto(&pb).unwrap());
        let c = convert::logs(&wire, &TenantResolver::new(Default::default()), None, 0).unwrap();
        assert_eq!((c.accepted(), c.rejected), (4, 1));
        // A string that is not UTF-8 rejects its record alone: `pattern`'s byte at `offset` made
        // 0xff. Attributes too (their maps are checked per record, not as a column: `MapColumn`).
        for (pattern, offset, message) in [
            (&b"disk full"[..], 4, "log_records[0]: body is not UTF-8"),
            (&b"\x02u2"[..], 2, "log_records[3]: attributes is not UTF-8"),
        ] {
            let mut bytes = pb.encode_to_vec();
            let at = bytes.windows(pattern.len()).position(|w| w == pattern).unwrap();
            bytes[at + offset] = 0xff;
            let bad = LogsRequest::decode(Bytes::from(bytes)).unwrap();
            let b = convert::logs(&bad, &TenantResolver::new(Default::default()), None, 0).unwrap();
            assert_eq!((b.accepted(), b.rejected), (3, 2));
            assert!(b.message.contains(message), "{}", b.message);
        }
        assert!(c.message.contains("log_records[1]: span_id has 3 bytes"), "{}", c.message);
        let batch = c.batch.unwrap();
        let col = |name: &str| batch.column_by_name(name).unwrap();
        let body = col("body").as_string::<i32>();
        for (row, b) in bodies.iter().enumerate() {
            let value = PbAnyValue { value: Some(b.clone()) };
            assert_eq!(body.value(row), crate::otlp::value::text(&value).unwrap());
        }
        assert_eq!(body.value(3), r#"{"k":false}"#);
        let text = |name: &str, row: usize| col(name).as_string::<i32>().value(row).to_string();
        assert_eq!((text("severity_text", 0), text("event_name", 2)), ("ERROR".into(), "app.crash".into()));
        assert_eq!((text("trace_id", 0), text("span_id", 0)), ("05".repeat(16), "06".repeat(8)));
        assert_eq!((text("service_name", 0), text("scope_name", 0)), ("api".into(), "logger".into()));
        assert_eq!(map_row(col("attributes").as_map(), 3), vec![("user.id".into(), Some("u3".into()))]);
    }

    /// Every metric type and every field the lake keeps (exemplars and a zero threshold
    /// included), beside fields it does not (flags, metadata, schema URLs), which must be
    /// skipped: decoded without copies, each row holds what opentelemetry-proto's types say.
    #[test]
    fn metrics_decoded_without_copies_keep_every_type_and_field() {
        use opentelemetry_proto::tonic::metrics::v1::{
            self as pb, exponential_histogram_data_point::Buckets as PbBuckets, metric::Data as PbData,
            number_data_point::Value as PbNumber, summary_data_point::ValueAtQuantile as PbQuantile,
        };
        let t = 1_764_000_000_000_000_000;
        let attrs = || vec![kv("route", V::StringValue("/a".into())), kv("code", V::IntValue(200))];
        let number = |v| pb::NumberDataPoint {
            attributes: attrs(),
            start_time_unix_nano: t - 60_000_000_000,
            time_unix_nano: t,
            exemplars: vec![pb::Exemplar { time_unix_nano: t, ..Default::default() }],
            flags: 1,
            value: Some(v),
        };
        let metric = |name: &str, data| pb::Metric {
            name: name.into(),
            description: format!("{name} described"),
            unit: "By".into(),
            metadata: vec![kv("ignored", V::BoolValue(true))],
            data: Some(data),
        };
        let pb_request = ExportMetricsServiceRequest {
            resource_metrics: vec![pb::ResourceMetrics {
                resource: Some(PbResource {
                    attributes: vec![
                        kv("service.name", V::StringValue("api".into())),
                        kv("tenant.id", V::StringValue("acme".into())),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![pb::ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "meter".into(),
                        version: "2".into(),
                        ..Default::default()
                    }),
                    metrics: vec![
                        metric(
                            "requests",
                            PbData::Sum(pb::Sum {
                                data_points: vec![number(PbNumber::AsInt(7))],
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            }),
                        ),
                        metric(
                            "load",
                            PbData::Gauge(pb::Gauge { data_points: vec![number(PbNumber::AsDouble(0.25))] }),
                        ),
                        metric(
                            "latency",
                            PbData::Histogram(pb::Histogram {
                                data_points: vec![pb::HistogramDataPoint {
                                    attributes: attrs(),
                                    time_unix_nano: t,
                                    count: 3,
                                    sum: Some(1.5),
                                    bucket_counts: vec![1, 2],
                                    explicit_bounds: vec![0.5],
                                    flags: 1,
                                    min: Some(0.1),
                                    max: Some(1.0),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 1,
                            }),
                        ),
                        metric(
                            "size",
                            PbData::ExponentialHistogram(pb::ExponentialHistogram {
                                data_points: vec![pb::ExponentialHistogramDataPoint {
                                    attributes: attrs(),
                                    time_unix_nano: t,
                                    count: 7,
                                    sum: Some(9.0),
                                    scale: -2,
                                    zero_count: 4,
                                    positive: Some(PbBuckets { offset: 3, bucket_counts: vec![1, 2] }),
                                    negative: Some(PbBuckets { offset: -1, bucket_counts: vec![5] }),
                                    min: Some(-3.0),
                                    max: Some(8.0),
                                    zero_threshold: 0.001,
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            }),
                        ),
                        metric(
                            "rpc",
                            PbData::Summary(pb::Summary {
                                data_points: vec![pb::SummaryDataPoint {
                                    attributes: attrs(),
                                    time_unix_nano: t,
                                    count: 2,
                                    sum: 3.0,
                                    quantile_values: vec![
                                        PbQuantile { quantile: 0.5, value: 1.0 },
                                        PbQuantile { quantile: 1.0, value: 2.0 },
                                    ],
                                    ..Default::default()
                                }],
                            }),
                        ),
                    ],
                    schema_url: "https://opentelemetry.io/schemas/1.0".into(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.0".into(),
            }],
        };
        let wire = MetricsRequest::decode(Bytes::from(pb_request.encode_to_vec())).unwrap();
        let c = convert::metrics(&wire, &TenantResolver::new(Default::default()), None).unwrap();
        assert_eq!((c.accepted(), c.rejected), (5, 0), "{}", c.message);
        let batch = c.batch.unwrap();
        let col = |name: &str| batch.column_by_name(name).unwrap();
        let strings = |name: &str| {
            col(name).as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
        };
        let floats =
            |name: &str| col(name).as_primitive::<arrow::datatypes::Float64Type>().iter().collect::<Vec<_>>();
        let ints =
            |name: &str| col(name).as_primitive::<arrow::datatypes::Int64Type>().iter().collect::<Vec<_>>();
        let int32s =
            |name: &str| col(name).as_primitive::<arrow::datatypes::Int32Type>().iter().collect::<Vec<_>>();
        let some = |v: &[&str]| v.iter().map(|s| Some((*s).to_string())).collect::<Vec<_>>();
        assert_eq!(strings("metric_name"), some(&["requests", "load", "latency", "size", "rpc"]));
        assert_eq!(
            strings("metric_type"),
            some(&["sum", "gauge", "histogram", "exponential_histogram", "summary"])
        );
        assert_eq!(strings("description")[2].as_deref(), Some("latency described"));
        assert_eq!(strings("unit"), some(&["By"; 5]));
        assert_eq!(
            strings("temporality"),
            [Some("cumulative".into()), None, Some("delta".into()), Some("cumulative".into()), None]
        );
        let monotonic: Vec<_> = col("is_monotonic").as_boolean().iter().collect();
        assert_eq!(monotonic, [Some(true), None, None, None, None]);
        assert_eq!(floats("value"), [Some(7.0), Some(0.25), None, None, None]);
        assert_eq!(ints("count"), [None, None, Some(3), Some(7), Some(2)]);
        assert_eq!(floats("sum"), [None, None, Some(1.5), Some(9.0), Some(3.0)]);
        assert_eq!(floats("min"), [None, None, Some(0.1), Some(-3.0), None]);
        assert_eq!(floats("max"), [None, None, Some(1.0), Some(8.0), None]);
        let start = col("start_time").as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(start.value(0), (t - 60_000_000_000) as i64 / 1000);
        assert!(start.is_null(2));
        let list_i64 = |name: &str, row: usize| {
            col(name)
                .as_list::<i32>()
                .value(row)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(list_i64("bucket_counts", 2), [1, 2]);
        let bounds = col("explicit_bounds").as_list::<i32>().value(2);
        assert_eq!(bounds.as_primitive::<arrow::datatypes::Float64Type>().values().to_vec(), [0.5]);
        assert_eq!(int32s("exp_scale")[3], Some(-2));
        assert_eq!(ints("exp_zero_count")[3], Some(4));
        assert_eq!((int32s("exp_positive_offset")[3], int32s("exp_negative_offset")[3]), (Some(3), Some(-1)));
        assert_eq!(list_i64("exp_positive_bucket_counts", 3), [1, 2]);
        assert_eq!(list_i64("exp_negative_bucket_counts", 3), [5]);
        assert_eq!(floats("exp_zero_threshold"), [None, None, None, Some(0.001), None]);
        let exemplars = col("exemplars").as_list::<i32>();
        let lengths: Vec<_> =
            (0..5).map(|i| exemplars.is_valid(i).then(|| exemplars.value(i).len())).collect();
        assert_eq!(lengths, [Some(1), Some(1), Some(0), Some(0), None]);
        let first = exemplars.value(0);
        let first = first.as_struct().column_by_name("time").unwrap().clone();
        assert_eq!(
            first.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(0),
            t as i64 / 1000
        );
        let quantiles = col("quantiles").as_list::<i32>().value(4);
        let quantiles = quantiles.as_struct();
        let q =
            |i: usize| quantiles.column(i).as_primitive::<arrow::datatypes::Float64Type>().values().to_vec();
        assert_eq!((q(0), q(1)), (vec![0.5, 1.0], vec![1.0, 2.0]));
        assert_eq!(strings("tenant_id"), some(&["acme"; 5]));
        assert_eq!(strings("service_name"), some(&["api"; 5]));
        assert_eq!(strings("scope_name"), some(&["meter"; 5]));
        let expected = vec![
            ("route".to_string(), Some("/a".to_string())),
            ("code".to_string(), Some("200".to_string())),
        ];
        for row in 0..5 {
            assert_eq!(map_row(col("attributes").as_map(), row), expected);
        }
    }
}
