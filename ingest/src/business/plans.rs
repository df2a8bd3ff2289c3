//! The price book (YAML):
//!
//! ```yaml
//! currency: USD                  # default for every plan
//! plans:
//!   - name: team
//!     base_fee: "49"             # per month; quote money to keep every digit
//!     valid_from: 2026-01-01     # optional: price changes are new versions
//!     meters:
//!       - meter: requests
//!         unit: request
//!         included: 100000       # per month, free
//!         unit_price: "0.0002"   # above the included quantity...
//!         tiers:                 # ...or graduated tiers instead
//!           - up_to: 1000000
//!             unit_price: "0.0002"
//!           - unit_price: "0.00015"
//! ```
//!
//! One row per plan, meter and tier. An import replaces the versions (plan, valid_from) it
//! defines.

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use serde::Deserialize;
use tenantscope_schemas::{
    Table,
    types::{MONEY_PRECISION, MONEY_SCALE, UTC},
};

use super::{Parsed, tenants::yaml_line, yaml_error};
use crate::{
    billing::value::{parse_decimal, parse_timestamp},
    error::{ImportError, RowError},
    imports::sql_str,
};

/// A decimal written as a YAML string or number. Numbers go through their shortest text form
/// (`0.0002` stays `0.0002`); quote values with more than 15 significant digits.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum Dec {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Dec {
    fn text(&self) -> String {
        match self {
            Dec::Text(s) => s.clone(),
            Dec::Int(i) => i.to_string(),
            Dec::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    currency: Option<String>,
    plans: Vec<PlanDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanDef {
    name: String,
    currency: Option<String>,
    base_fee: Option<Dec>,
    valid_from: Option<String>,
    #[serde(default)]
    meters: Vec<MeterDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterDef {
    meter: String,
    unit: Option<String>,
    unit_price: Option<Dec>,
    included: Option<Dec>,
    #[serde(default)]
    tiers: Vec<TierDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierDef {
    up_to: Option<Dec>,
    unit_price: Dec,
}

struct Out {
    plan: StringBuilder,
    currency: StringBuilder,
    base: Decimal128Builder,
    meter: StringBuilder,
    unit: StringBuilder,
    price: Decimal128Builder,
    included: Decimal128Builder,
    from: Decimal128Builder,
    to: Decimal128Builder,
    valid: TimestampMicrosecondBuilder,
    import: StringBuilder,
    rows: usize,
}

fn money() -> Decimal128Builder {
    Decimal128Builder::new()
        .with_data_type(arrow::datatypes::DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE))
}

pub(crate) fn parse(file: &str, text: &str, import_id: &str) -> Result<Parsed, ImportError> {
    let book: PlansFile = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(file, &e))?;
    let mut errors = Vec::new();
    let mut out = Out {
        plan: StringBuilder::new(),
        currency: StringBuilder::new(),
        base: money(),
        meter: StringBuilder::new(),
        unit: StringBuilder::new(),
        price: money(),
        included: money(),
        from: money(),
        to: money(),
        valid: TimestampMicrosecondBuilder::new().with_timezone(UTC),
        import: StringBuilder::new(),
        rows: 0,
    };
    let mut keys = Vec::new();
    let mut terms = Vec::new();
    for (pi, plan) in book.plans.iter().enumerate() {
        let line = yaml_line(text, "name", &plan.name);
        let mut bad = |path: String, value: String, reason: String| {
            errors.push(RowError { file: file.to_string(), line, column: path, value, reason });
        };
        let dec = |path: String, d: &Dec, bad: &mut dyn FnMut(String, String, String)| -> Option<i128> {
            match parse_decimal(&d.text()) {
                Ok(m) if m.units < 0 => {
                    bad(path, d.text(), "must not be negative".to_string());
                    None
                }
                Ok(m) => Some(m.units),
                Err(reason) => {
                    bad(path, d.text(), reason);
                    None
                }
            }
        };
        let name = plan.name.trim().to_string();
        if name.is_empty() {
            bad(format!("plans[{pi}].name"), String::new(), "the plan name is empty".to_string());
            continue;
        }
        let Some(currency) =
            plan.currency.clone().or_else(|| book.currency.clone()).map(|c| c.trim().to_ascii_uppercase())
        else {
            bad(
                format!("plans[{pi}].currency"),
                String::new(),
                "no currency: set it on the plan or at the top".to_string(),
            );
            continue;
        };
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            bad(format!("plans[{pi}].currency"), currency.clone(), "not an ISO 4217 code".to_string());
            continue;
        }
        let valid_from = match plan.valid_from.as_deref() {
            Some(raw) => match parse_timestamp(raw) {
                Ok(t) => t,
                Err(reason) => {
                    bad(format!("plans[{pi}].valid_from"), raw.to_string(), reason);
                    continue;
                }
            },
            None => 0,
        };
        let base = plan.base_fee.as_ref().and_then(|d| dec(format!("plans[{pi}].base_fee"), d, &mut bad));
        if keys.iter().any(|(n, v)| n == &name && *v == valid_from) {
            bad(
                format!("plans[{pi}].name"),
                name.clone(),
                "this plan and valid_from appear twice".to_string(),
            );
            continue;
        }
        keys.push((name.clone(), valid_from));
        let valid_text =
            chrono::DateTime::from_timestamp_micros(valid_from).map(|t| t.to_rfc3339()).unwrap_or_default();
        terms.push(format!("(plan = {} AND valid_from = {})", sql_str(&name), sql_str(&valid_text)));
        let push = |out: &mut Out,
                    meter: Option<&MeterDef>,
                    price: Option<i128>,
                    incl: Option<i128>,
                    from: Option<i128>,
                    to: Option<i128>| {
            out.plan.append_value(&name);
            out.currency.append_value(&currency);
            out.base.append_option(base);
            out.meter.append_option(meter.map(|m| m.meter.trim()));
            out.unit.append_option(meter.and_then(|m| m.unit.as_deref()));
            out.price.append_option(price);
            out.included.append_option(incl);
            out.from.append_option(from);
            out.to.append_option(to);
            out.valid.append_value(valid_from);
            out.import.append_value(import_id);
            out.rows += 1;
        };
        if plan.meters.is_empty() {
            push(&mut out, None, None, None, None, None);
        }
        for (mi, m) in plan.meters.iter().enumerate() {
            let at = format!("plans[{pi}].meters[{mi}]");
            let incl = m.included.as_ref().and_then(|d| dec(format!("{at}.included"), d, &mut bad));
            if m.tiers.is_empty() {
                let price = m.unit_price.as_ref().and_then(|d| dec(format!("{at}.unit_price"), d, &mut bad));
                if m.unit_price.is_none() {
                    bad(
                        format!("{at}.unit_price"),
                        String::new(),
                        "a meter needs unit_price or tiers".to_string(),
                    );
                }
                push(&mut out, Some(m), price, incl, Some(0), None);
                continue;
            }
            if m.unit_price.is_some() {
                bad(
                    format!("{at}.unit_price"),
                    String::new(),
                    "give unit_price or tiers, not both".to_string(),
                );
            }
            let mut from = 0_i128;
            for (ti, t) in m.tiers.iter().enumerate() {
                let price = dec(format!("{at}.tiers[{ti}].unit_price"), &t.unit_price, &mut bad);
                let to = t.up_to.as_ref().and_then(|d| dec(format!("{at}.tiers[{ti}].up_to"), d, &mut bad));
                let last = ti + 1 == m.tiers.len();
                match to {
                    Some(to) if to <= from => bad(
                        format!("{at}.tiers[{ti}].up_to"),
                        t.up_to.as_ref().map(Dec::text).unwrap_or_default(),
                        "tiers must grow: up_to must be above the previous tier's".to_string(),
                    ),
                    None if !last => bad(
                        format!("{at}.tiers[{ti}].up_to"),
                        String::new(),
                        "only the last tier may be open-ended".to_string(),
                    ),
                    _ => {}
                }
                push(&mut out, Some(m), price, incl, Some(from), to);
                from = to.unwrap_or(from);
            }
        }
    }
    let names: Vec<String> = keys.iter().map(|(n, _)| n.clone()).collect();
    if out.rows == 0 || !errors.is_empty() {
        return Ok(Parsed { batch: None, predicate: String::new(), keys: names, errors, unattributed: 0 });
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(out.plan.finish()),
        Arc::new(out.currency.finish()),
        Arc::new(out.base.finish()),
        Arc::new(out.meter.finish()),
        Arc::new(out.unit.finish()),
        Arc::new(out.price.finish()),
        Arc::new(out.included.finish()),
        Arc::new(out.from.finish()),
        Arc::new(out.to.finish()),
        Arc::new(out.valid.finish()),
        Arc::new(out.import.finish()),
    ];
    let batch = RecordBatch::try_new(Table::Plans.schema(), columns)
        .map_err(|e| ImportError::Query(format!("internal: plans batch: {e}")))?;
    Ok(Parsed { batch: Some(batch), predicate: terms.join(" OR "), keys: names, errors, unattributed: 0 })
}
