//! Invoice lines (CSV), in the shape of a Stripe invoice-line export: `invoice_id` (or
//! `invoice`), `id` (the line), `customer`, `period_start`, `period_end` (timestamps or Unix
//! seconds), `amount` (in currency units, e.g. `49.00`), `currency`, and optionally
//! `description`, `quantity`, `meter`, `tenant_id`.
//!
//! A line's tenant: its `tenant_id` column, else the tenant whose `labels['stripe_customer']`
//! is the customer, else the tenant whose id is the customer. An import replaces the invoices
//! it contains (a corrected invoice replaces the old one).

use std::{collections::HashMap, sync::Arc};

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use tenantscope_schemas::{
    Lake, Table,
    types::{MONEY_PRECISION, MONEY_SCALE, UTC},
};

use super::{Parsed, find_column, in_list};
use crate::{
    billing::value::{is_null, parse_decimal, parse_timestamp},
    error::{ImportError, RowError},
};

fn money() -> Decimal128Builder {
    Decimal128Builder::new()
        .with_data_type(arrow::datatypes::DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE))
}

/// Unix seconds (Stripe's API form) or any timestamp the billing importers read.
fn parse_time(raw: &str) -> Result<i64, String> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = raw.parse().map_err(|_| format!("not a time: {raw:?}"))?;
        return secs.checked_mul(1_000_000).ok_or_else(|| format!("not a time: {raw:?}"));
    }
    parse_timestamp(raw)
}

/// customer -> tenant, from the tenants table.
async fn customers(lake: &Lake) -> Result<HashMap<String, String>, ImportError> {
    let mut out = HashMap::new();
    if !lake.exists(Table::Tenants).await? {
        return Ok(out);
    }
    let batches = lake
        .query(
            &[Table::Tenants],
            "SELECT CAST(tenant_id AS VARCHAR), CAST(labels['stripe_customer'] AS VARCHAR) FROM tenants",
        )
        .await?;
    for b in batches {
        let cast = |c: &ArrayRef| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8);
        let (t, c) = (
            cast(b.column(0)).map_err(|e| ImportError::Query(e.to_string()))?,
            cast(b.column(1)).map_err(|e| ImportError::Query(e.to_string()))?,
        );
        let (t, c) = (t.as_string::<i32>(), c.as_string::<i32>());
        for i in 0..b.num_rows() {
            if t.is_valid(i) {
                out.entry(t.value(i).to_string()).or_insert_with(|| t.value(i).to_string());
                if c.is_valid(i) {
                    out.insert(c.value(i).to_string(), t.value(i).to_string());
                }
            }
        }
    }
    Ok(out)
}

pub(crate) async fn parse(
    lake: &Lake,
    file: &str,
    text: &str,
    import_id: &str,
) -> Result<Parsed, ImportError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ImportError::file(file, format!("cannot read the CSV header: {e}")))?
        .clone();
    let col = |names: &[&str]| find_column(&headers, names);
    let required = |names: &[&str]| {
        col(names).ok_or_else(|| ImportError::file(file, format!("no {} column in the header", names[0])))
    };
    let (c_invoice, c_amount, c_currency) =
        (required(&["invoice_id", "invoice"])?, required(&["amount"])?, required(&["currency"])?);
    let (c_line, c_customer, c_tenant) =
        (col(&["line_id", "id"]), col(&["customer", "customer_id"]), col(&["tenant_id", "tenant"]));
    let (c_start, c_end, c_desc) =
        (col(&["period_start", "period.start"]), col(&["period_end", "period.end"]), col(&["description"]));
    let (c_qty, c_meter) = (col(&["quantity"]), col(&["meter"]));
    let tenants = customers(lake).await?;

    let (mut inv, mut line_id, mut tenant, mut customer, mut desc, mut meter, mut cur, mut import) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut start, mut end) = (
        TimestampMicrosecondBuilder::new().with_timezone(UTC),
        TimestampMicrosecondBuilder::new().with_timezone(UTC),
    );
    let (mut qty, mut amount) = (money(), money());
    let (mut errors, mut invoices, mut unattributed, mut rows) = (Vec::new(), Vec::<String>::new(), 0, 0);
    for record in reader.records() {
        let record = record.map_err(|e| ImportError::file(file, format!("malformed CSV: {e}")))?;
        let line = record.position().map_or(0, csv::Position::line);
        let get = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim).filter(|s| !is_null(s));
        let mut ok = true;
        let mut bad = |c: usize, value: &str, reason: String| {
            errors.push(RowError {
                file: file.to_string(),
                line,
                column: headers[c].to_string(),
                value: value.to_string(),
                reason,
            });
            ok = false;
        };
        let Some(invoice_id) = get(Some(c_invoice)) else {
            bad(c_invoice, "", "the invoice id is empty".to_string());
            continue;
        };
        let amount_v = match get(Some(c_amount)).map(parse_decimal) {
            Some(Ok(m)) => Some(m.units),
            Some(Err(reason)) => {
                bad(c_amount, get(Some(c_amount)).unwrap_or(""), reason);
                None
            }
            None => {
                bad(c_amount, "", "the amount is empty".to_string());
                None
            }
        };
        let currency = get(Some(c_currency)).map(str::to_ascii_uppercase);
        if !currency.as_deref().is_some_and(|c| c.len() == 3 && c.chars().all(|c| c.is_ascii_alphabetic())) {
            bad(c_currency, get(Some(c_currency)).unwrap_or(""), "not an ISO 4217 currency code".to_string());
        }
        let time = |c: Option<usize>, bad: &mut dyn FnMut(usize, &str, String)| -> Option<i64> {
            let raw = get(c)?;
            parse_time(raw).map_err(|r| bad(c.unwrap_or(0), raw, r)).ok()
        };
        let (s, e) = (time(c_start, &mut bad), time(c_end, &mut bad));
        let q = match get(c_qty).map(parse_decimal) {
            Some(Ok(m)) => Some(m.units),
            Some(Err(reason)) => {
                bad(c_qty.unwrap_or(0), get(c_qty).unwrap_or(""), reason);
                None
            }
            None => None,
        };
        if !ok {
            continue;
        }
        let cust = get(c_customer);
        let t = get(c_tenant).map(String::from).or_else(|| cust.and_then(|c| tenants.get(c).cloned()));
        unattributed += usize::from(t.is_none());
        if !invoices.iter().any(|i| i == invoice_id) {
            invoices.push(invoice_id.to_string());
        }
        inv.append_value(invoice_id);
        line_id.append_option(get(c_line));
        tenant.append_option(t);
        customer.append_option(cust);
        start.append_option(s);
        end.append_option(e);
        desc.append_option(get(c_desc));
        meter.append_option(get(c_meter));
        qty.append_option(q);
        amount.append_option(amount_v);
        cur.append_option(currency);
        import.append_value(import_id);
        rows += 1;
    }
    if rows == 0 || !errors.is_empty() {
        return Ok(Parsed { batch: None, predicate: String::new(), keys: invoices, errors, unattributed });
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(inv.finish()),
        Arc::new(line_id.finish()),
        Arc::new(tenant.finish()),
        Arc::new(customer.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(desc.finish()),
        Arc::new(meter.finish()),
        Arc::new(qty.finish()),
        Arc::new(amount.finish()),
        Arc::new(cur.finish()),
        Arc::new(import.finish()),
    ];
    let batch = RecordBatch::try_new(Table::Invoices.schema(), columns)
        .map_err(|e| ImportError::Query(format!("internal: invoices batch: {e}")))?;
    let predicate = in_list("invoice_id", &invoices);
    Ok(Parsed { batch: Some(batch), predicate, keys: invoices, errors, unattributed })
}
