//! Every table of the lake: its name, Arrow schema, partition column and sort order.
//!
//! All tables are fleet-wide: every row carries `tenant_id` (NULL where a row belongs to no single
//! tenant). There is never a table per tenant.

use std::{fmt, str::FromStr, sync::Arc};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

use crate::columns::*;
use crate::focus::{FOCUS_COLUMNS, FocusKind};
use crate::types::{list_of, money, nullable, required, string_list, string_map, timestamp};

/// A table of the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// OpenTelemetry spans.
    Spans,
    /// OpenTelemetry log records.
    Logs,
    /// OpenTelemetry metric data points, one row per point.
    Metrics,
    /// Cloud billing lines in FOCUS 1.2 columns.
    Billing,
    /// Tenants: id, name, plan, cloud accounts, labels.
    Tenants,
    /// Price book: one row per plan, meter and tier.
    Plans,
    /// Invoice lines (what tenants were billed).
    Invoices,
    /// Hourly quantity per tenant and meter.
    Usage,
    /// Alert rule evaluations, state changes and notifications.
    Alerts,
    /// Who did what, when.
    AuditLog,
    /// One row per billing or business-data import (idempotency and restatement bookkeeping).
    Imports,
}

impl Table {
    /// Every table, in a stable order.
    pub const ALL: [Table; 11] = [
        Table::Spans,
        Table::Logs,
        Table::Metrics,
        Table::Billing,
        Table::Tenants,
        Table::Plans,
        Table::Invoices,
        Table::Usage,
        Table::Alerts,
        Table::AuditLog,
        Table::Imports,
    ];

    /// The table's name, which is also its folder under the lake URL.
    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Logs => "logs",
            Table::Metrics => "metrics",
            Table::Billing => "billing",
            Table::Tenants => "tenants",
            Table::Plans => "plans",
            Table::Invoices => "invoices",
            Table::Usage => "usage",
            Table::Alerts => "alerts",
            Table::AuditLog => "audit_log",
            Table::Imports => "imports",
        }
    }

    /// Whether the table holds telemetry (partitioned by UTC day).
    pub fn is_telemetry(self) -> bool {
        matches!(self, Table::Spans | Table::Logs | Table::Metrics)
    }

    /// The Delta partition columns.
    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            Table::Spans | Table::Logs | Table::Metrics | Table::Usage | Table::Alerts | Table::AuditLog => {
                &[DATE]
            }
            Table::Billing => &[BILLING_PERIOD],
            Table::Tenants | Table::Plans | Table::Invoices | Table::Imports => &[],
        }
    }

    /// Rows within a file are sorted by these columns (tenant first, then time), so that tenant
    /// and time filters prune row groups and pages.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Table::Spans | Table::Logs | Table::Metrics | Table::Alerts | Table::AuditLog => {
                &[TENANT_ID, TIME]
            }
            Table::Usage => &[TENANT_ID, HOUR],
            Table::Billing => &[TENANT_ID, crate::focus::CHARGE_PERIOD_START],
            Table::Tenants => &[TENANT_ID],
            Table::Plans => &[PLAN],
            Table::Invoices => &[TENANT_ID, "period_start"],
            Table::Imports => &["imported_at"],
        }
    }

    /// Columns that carry min/max statistics in the Delta log (file skipping).
    pub fn stats_columns(self) -> Vec<&'static str> {
        let mut cols: Vec<&'static str> = self.sort_columns().to_vec();
        match self {
            Table::Spans => cols.extend([SERVICE_NAME, TRACE_ID, END_TIME]),
            Table::Logs => cols.extend([SERVICE_NAME, TRACE_ID, SEVERITY_NUMBER]),
            Table::Metrics => cols.extend([SERVICE_NAME, METRIC_NAME]),
            Table::Billing => cols.extend([
                crate::focus::CHARGE_PERIOD_END,
                crate::focus::BILLING_PERIOD_START,
                crate::focus::SUB_ACCOUNT_ID,
                crate::focus::SERVICE_NAME,
                SOURCE,
                IMPORT_ID,
            ]),
            Table::Usage => cols.push(METER),
            _ => {}
        }
        cols
    }

    /// Text columns of near-unique identifiers or free text, written without Parquet statistics:
    /// rows are sorted by tenant and time, so a page's minimum and maximum of a description or a
    /// resource id cover nearly every value and prune nothing, while computing them compares
    /// every value twice (a tenth of encoding a billing import). Map, list and struct columns
    /// never get statistics (no filter prunes on their leaves). See `lake::writer_properties`.
    pub fn unindexed_columns(self) -> &'static [&'static str] {
        match self {
            Table::Spans => &[SPAN_ID, PARENT_SPAN_ID, STATUS_MESSAGE],
            Table::Logs => &[BODY, SPAN_ID],
            Table::Billing => &[
                "charge_description",
                crate::focus::RESOURCE_ID,
                "resource_name",
                "sku_id",
                "sku_price_id",
                "sku_price_details",
                "commitment_discount_id",
                "commitment_discount_name",
                "capacity_reservation_id",
                "invoice_id",
                "billing_account_name",
                "sub_account_name",
            ],
            _ => &[],
        }
    }

    /// Columns whose values are (nearly) all different: a Parquet dictionary of them only fills
    /// up and is abandoned, after hashing every value into it. Nanosecond times and durations
    /// too: their dictionary was a hash of every value and a larger file (a flush of 102,400
    /// spans: 433k -> 524k spans per CPU-second, 51.3 -> 46.0 bytes per span).
    pub fn unique_columns(self) -> &'static [&'static str] {
        match self {
            Table::Spans => &[TIME, END_TIME, DURATION_NS, TRACE_ID, SPAN_ID, PARENT_SPAN_ID],
            Table::Logs => &[TIME, OBSERVED_TIME, TRACE_ID, SPAN_ID],
            _ => &[],
        }
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        Arc::new(Schema::new(self.fields()))
    }

    fn fields(self) -> Vec<Field> {
        match self {
            Table::Spans => spans_fields(),
            Table::Logs => logs_fields(),
            Table::Metrics => metrics_fields(),
            Table::Billing => billing_fields(),
            Table::Tenants => vec![
                required(TENANT_ID, DataType::Utf8),
                nullable(NAME, DataType::Utf8),
                nullable(PLAN, DataType::Utf8),
                nullable("accounts", string_list()),
                nullable("labels", string_map()),
                nullable(CURRENCY, DataType::Utf8),
                nullable("created_at", timestamp()),
                nullable(IMPORT_ID, DataType::Utf8),
            ],
            Table::Plans => vec![
                required(PLAN, DataType::Utf8),
                required(CURRENCY, DataType::Utf8),
                nullable("base_fee", money()),
                nullable(METER, DataType::Utf8),
                nullable("unit", DataType::Utf8),
                nullable("unit_price", money()),
                nullable("included_quantity", money()),
                nullable("tier_from", money()),
                nullable("tier_to", money()),
                nullable("valid_from", timestamp()),
                nullable(IMPORT_ID, DataType::Utf8),
            ],
            Table::Invoices => vec![
                required("invoice_id", DataType::Utf8),
                nullable("line_id", DataType::Utf8),
                nullable(TENANT_ID, DataType::Utf8),
                nullable("customer_id", DataType::Utf8),
                nullable("period_start", timestamp()),
                nullable("period_end", timestamp()),
                nullable("description", DataType::Utf8),
                nullable(METER, DataType::Utf8),
                nullable(QUANTITY, money()),
                required("amount", money()),
                required(CURRENCY, DataType::Utf8),
                nullable(IMPORT_ID, DataType::Utf8),
            ],
            Table::Usage => vec![
                required(HOUR, timestamp()),
                nullable(TENANT_ID, DataType::Utf8),
                required(METER, DataType::Utf8),
                required(QUANTITY, money()),
                nullable("unit", DataType::Utf8),
                required(DATE, DataType::Date32),
            ],
            Table::Alerts => vec![
                required(TIME, timestamp()),
                required("rule", DataType::Utf8),
                required("event", DataType::Utf8),
                nullable("state", DataType::Utf8),
                nullable(TENANT_ID, DataType::Utf8),
                nullable("labels", string_map()),
                nullable("annotations", string_map()),
                nullable(VALUE, DataType::Float64),
                nullable("receiver", DataType::Utf8),
                nullable("detail", DataType::Utf8),
                required(DATE, DataType::Date32),
            ],
            Table::AuditLog => vec![
                required(TIME, timestamp()),
                nullable("actor", DataType::Utf8),
                nullable("role", DataType::Utf8),
                required("action", DataType::Utf8),
                nullable("target", DataType::Utf8),
                nullable(TENANT_ID, DataType::Utf8),
                nullable("detail", DataType::Utf8),
                nullable("remote_addr", DataType::Utf8),
                nullable("statement", DataType::Utf8),
                nullable("tables", string_list()),
                nullable("rows", DataType::Int64),
                nullable("duration_ms", DataType::Float64),
                nullable("outcome", DataType::Utf8),
                required(DATE, DataType::Date32),
            ],
            Table::Imports => vec![
                required(IMPORT_ID, DataType::Utf8),
                required("imported_at", timestamp()),
                required("kind", DataType::Utf8),
                nullable(SOURCE, DataType::Utf8),
                nullable("format", DataType::Utf8),
                nullable("file_name", DataType::Utf8),
                required("checksum", DataType::Utf8),
                required("row_count", DataType::Int64),
                nullable("billing_periods", string_list()),
                nullable("status", DataType::Utf8),
            ],
        }
    }
}

fn spans_fields() -> Vec<Field> {
    let event = DataType::Struct(Fields::from(vec![
        nullable(TIME, timestamp()),
        nullable(NAME, DataType::Utf8),
        nullable(ATTRIBUTES, string_map()),
    ]));
    let link = DataType::Struct(Fields::from(vec![
        nullable(TRACE_ID, DataType::Utf8),
        nullable(SPAN_ID, DataType::Utf8),
        nullable("trace_state", DataType::Utf8),
        nullable(ATTRIBUTES, string_map()),
    ]));
    vec![
        required(TIME, timestamp()),
        nullable(END_TIME, timestamp()),
        nullable(DURATION_NS, DataType::Int64),
        required(TRACE_ID, DataType::Utf8),
        required(SPAN_ID, DataType::Utf8),
        nullable(PARENT_SPAN_ID, DataType::Utf8),
        nullable("trace_state", DataType::Utf8),
        nullable(NAME, DataType::Utf8),
        nullable(KIND, DataType::Utf8),
        nullable(STATUS_CODE, DataType::Utf8),
        nullable(STATUS_MESSAGE, DataType::Utf8),
        nullable(SERVICE_NAME, DataType::Utf8),
        nullable(TENANT_ID, DataType::Utf8),
        nullable(ATTRIBUTES, string_map()),
        nullable(RESOURCE_ATTRIBUTES, string_map()),
        nullable(SCOPE_NAME, DataType::Utf8),
        nullable("scope_version", DataType::Utf8),
        nullable(EVENTS, list_of(event)),
        nullable(LINKS, list_of(link)),
        required(DATE, DataType::Date32),
    ]
}

fn logs_fields() -> Vec<Field> {
    vec![
        required(TIME, timestamp()),
        nullable(OBSERVED_TIME, timestamp()),
        nullable(SEVERITY_NUMBER, DataType::Int32),
        nullable(SEVERITY_TEXT, DataType::Utf8),
        nullable(BODY, DataType::Utf8),
        nullable(TRACE_ID, DataType::Utf8),
        nullable(SPAN_ID, DataType::Utf8),
        nullable(SERVICE_NAME, DataType::Utf8),
        nullable(TENANT_ID, DataType::Utf8),
        nullable(ATTRIBUTES, string_map()),
        nullable(RESOURCE_ATTRIBUTES, string_map()),
        nullable(SCOPE_NAME, DataType::Utf8),
        nullable("event_name", DataType::Utf8),
        required(DATE, DataType::Date32),
    ]
}

fn metrics_fields() -> Vec<Field> {
    let quantile = DataType::Struct(Fields::from(vec![
        nullable("quantile", DataType::Float64),
        nullable(VALUE, DataType::Float64),
    ]));
    let exemplar = DataType::Struct(Fields::from(vec![
        nullable(TIME, timestamp()),
        nullable(VALUE, DataType::Float64),
        nullable(TRACE_ID, DataType::Utf8),
        nullable(SPAN_ID, DataType::Utf8),
        nullable("filtered_attributes", string_map()),
    ]));
    vec![
        required(TIME, timestamp()),
        nullable(START_TIME, timestamp()),
        required(METRIC_NAME, DataType::Utf8),
        required(METRIC_TYPE, DataType::Utf8),
        nullable(UNIT, DataType::Utf8),
        nullable("description", DataType::Utf8),
        nullable(VALUE, DataType::Float64),
        nullable(COUNT, DataType::Int64),
        nullable(SUM, DataType::Float64),
        nullable("min", DataType::Float64),
        nullable("max", DataType::Float64),
        nullable(BUCKET_COUNTS, list_of(DataType::Int64)),
        nullable(EXPLICIT_BOUNDS, list_of(DataType::Float64)),
        nullable("exp_scale", DataType::Int32),
        nullable("exp_zero_count", DataType::Int64),
        nullable("exp_positive_offset", DataType::Int32),
        nullable("exp_positive_bucket_counts", list_of(DataType::Int64)),
        nullable("exp_negative_offset", DataType::Int32),
        nullable("exp_negative_bucket_counts", list_of(DataType::Int64)),
        nullable("quantiles", list_of(quantile)),
        nullable(TEMPORALITY, DataType::Utf8),
        nullable(IS_MONOTONIC, DataType::Boolean),
        nullable(SERVICE_NAME, DataType::Utf8),
        nullable(TENANT_ID, DataType::Utf8),
        nullable(ATTRIBUTES, string_map()),
        nullable(RESOURCE_ATTRIBUTES, string_map()),
        nullable(SCOPE_NAME, DataType::Utf8),
        required(DATE, DataType::Date32),
        // Added after `date` (0.1, Dec 2026): a table written before has them appended there by
        // `Lake::add_missing_columns`, so old and new tables keep one column order.
        nullable("exp_zero_threshold", DataType::Float64),
        nullable("exemplars", list_of(exemplar)),
    ]
}

fn billing_fields() -> Vec<Field> {
    let mut fields: Vec<Field> = FOCUS_COLUMNS
        .iter()
        .map(|c| {
            let data_type = match c.kind {
                FocusKind::String | FocusKind::Json => DataType::Utf8,
                FocusKind::Decimal => money(),
                FocusKind::DateTime => timestamp(),
                FocusKind::Tags => string_map(),
            };
            nullable(c.name, data_type)
        })
        .collect();
    fields.extend([
        nullable(X_EXTRA, string_map()),
        nullable(TENANT_ID, DataType::Utf8),
        required(SOURCE, DataType::Utf8),
        required(IMPORT_ID, DataType::Utf8),
        required(BILLING_PERIOD, DataType::Date32),
    ]);
    fields
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A table name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown table {0:?}; the tables are: spans, logs, metrics, billing, tenants, plans, invoices, usage, alerts, audit_log, imports"
)]
pub struct UnknownTable(pub String);

impl FromStr for Table {
    type Err = UnknownTable;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Table::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| UnknownTable(s.to_string()))
    }
}
