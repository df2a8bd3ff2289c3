//! Column names used by more than one component. Ingest and query spell a column only through
//! these constants.

/// Event time (span start, log timestamp, metric point time), `timestamp` UTC.
pub const TIME: &str = "time";
/// UTC day of `time`, the partition column of telemetry tables.
pub const DATE: &str = "date";
/// The tenant a row belongs to; NULL when unattributed.
pub const TENANT_ID: &str = "tenant_id";
/// `service.name` lifted out of the resource.
pub const SERVICE_NAME: &str = "service_name";
/// Record attributes.
pub const ATTRIBUTES: &str = "attributes";
/// Resource attributes.
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
/// Instrumentation scope name.
pub const SCOPE_NAME: &str = "scope_name";
/// Trace id, 32 lowercase hex characters.
pub const TRACE_ID: &str = "trace_id";
/// Span id, 16 lowercase hex characters.
pub const SPAN_ID: &str = "span_id";

// spans
/// Span end time.
pub const END_TIME: &str = "end_time";
/// Span duration in nanoseconds (exact, unlike the microsecond timestamps).
pub const DURATION_NS: &str = "duration_ns";
/// Parent span id, NULL for a root span.
pub const PARENT_SPAN_ID: &str = "parent_span_id";
/// Span name.
pub const NAME: &str = "name";
/// Span kind: `internal`, `server`, `client`, `producer`, `consumer`, `unspecified`.
pub const KIND: &str = "kind";
/// Span status: `unset`, `ok`, `error`.
pub const STATUS_CODE: &str = "status_code";
/// Span status message.
pub const STATUS_MESSAGE: &str = "status_message";
/// Span events.
pub const EVENTS: &str = "events";
/// Span links.
pub const LINKS: &str = "links";

// logs
/// When the collector observed the log record.
pub const OBSERVED_TIME: &str = "observed_time";
/// OTLP severity number (1-24).
pub const SEVERITY_NUMBER: &str = "severity_number";
/// Severity text.
pub const SEVERITY_TEXT: &str = "severity_text";
/// Log body; strings as is, other AnyValues as JSON.
pub const BODY: &str = "body";

// metrics
/// Start of the aggregation interval of a cumulative or delta point.
pub const START_TIME: &str = "start_time";
/// Metric name.
pub const METRIC_NAME: &str = "metric_name";
/// `gauge`, `sum`, `histogram`, `exponential_histogram`, `summary`.
pub const METRIC_TYPE: &str = "metric_type";
/// Unit (UCUM).
pub const UNIT: &str = "unit";
/// Value of a gauge or sum point.
pub const VALUE: &str = "value";
/// Count of a histogram or summary point.
pub const COUNT: &str = "count";
/// Sum of a histogram or summary point.
pub const SUM: &str = "sum";
/// Histogram bucket counts.
pub const BUCKET_COUNTS: &str = "bucket_counts";
/// Histogram explicit bounds.
pub const EXPLICIT_BOUNDS: &str = "explicit_bounds";
/// `delta`, `cumulative` or NULL.
pub const TEMPORALITY: &str = "temporality";
/// Whether a sum is monotonic.
pub const IS_MONOTONIC: &str = "is_monotonic";

// billing extras (the FOCUS columns are in [`crate::focus`])
/// Where a billing line came from (e.g. `aws-cur`, `focus`, or `--source`).
pub const SOURCE: &str = "source";
/// The import that wrote a row.
pub const IMPORT_ID: &str = "import_id";
/// First day (UTC) of the billing period, the partition column of `billing`.
pub const BILLING_PERIOD: &str = "billing_period";
/// Provider columns that FOCUS does not define (`x_*` and the like), kept as a map.
pub const X_EXTRA: &str = "x_extra";

// usage
/// Start of the hour a usage quantity is for.
pub const HOUR: &str = "hour";
/// Meter name, e.g. `requests`.
pub const METER: &str = "meter";
/// Metered quantity.
pub const QUANTITY: &str = "quantity";

// business data
/// Plan name.
pub const PLAN: &str = "plan";
/// ISO 4217 currency code.
pub const CURRENCY: &str = "currency";
