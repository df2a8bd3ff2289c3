//! Tenants: CSV (`tenant_id,name,plan,accounts,labels,currency,created_at`; accounts separated
//! by `;` or `|`, labels as `k=v;k=v` or JSON) or YAML:
//!
//! ```yaml
//! tenants:
//!   - id: acme
//!     name: Acme Corp
//!     plan: enterprise
//!     accounts: ["210987654321"]   # cloud accounts / projects / subscriptions it owns
//!     labels: {segment: strategic, stripe_customer: cus_123}
//! ```
//!
//! An import replaces the tenants it names (upsert by id).

use std::{collections::BTreeMap, sync::Arc};

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use serde::Deserialize;
use tenantscope_schemas::{
    Table,
    types::{UTC, list_builder, string_map_builder},
};

use super::{Parsed, find_column, in_list, parse_labels, yaml_error};
use crate::{
    billing::value::parse_timestamp,
    error::{ImportError, RowError},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    tenants: Vec<TenantDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDef {
    id: String,
    name: Option<String>,
    plan: Option<String>,
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    currency: Option<String>,
    created_at: Option<String>,
}

struct Row {
    line: u64,
    def: TenantDef,
}

pub(crate) fn parse(file: &str, text: &str, import_id: &str) -> Result<Parsed, ImportError> {
    let looks_yaml =
        file.ends_with(".yaml") || file.ends_with(".yml") || text.trim_start().starts_with("tenants:");
    let mut errors = Vec::new();
    let rows: Vec<Row> = if looks_yaml {
        let parsed: TenantsFile = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(file, &e))?;
        parsed.tenants.into_iter().map(|def| Row { line: yaml_line(text, "id", &def.id), def }).collect()
    } else {
        csv_rows(file, text, &mut errors)?
    };
    let mut ids = Vec::new();
    let (mut id, mut name, mut plan, mut currency, mut import) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut accounts = list_builder(StringBuilder::new(), arrow::datatypes::DataType::Utf8);
    let mut labels = string_map_builder();
    let mut created = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    for Row { line, def } in rows {
        let mut bad = |column: &str, value: &str, reason: String| {
            errors.push(RowError {
                file: file.to_string(),
                line,
                column: column.to_string(),
                value: value.to_string(),
                reason,
            });
        };
        let tid = def.id.trim().to_string();
        if tid.is_empty() {
            bad("id", "", "the tenant id is empty".to_string());
            continue;
        }
        if ids.contains(&tid) {
            bad("id", &tid, "this tenant id appears twice in the file".to_string());
            continue;
        }
        let created_at = match def.created_at.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(raw) => match parse_timestamp(raw) {
                Ok(t) => Some(t),
                Err(reason) => {
                    bad("created_at", raw, reason);
                    continue;
                }
            },
            None => None,
        };
        ids.push(tid.clone());
        id.append_value(&tid);
        name.append_option(def.name.as_deref());
        plan.append_option(def.plan.as_deref().map(str::trim));
        for a in def.accounts.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            accounts.values().append_value(a);
        }
        accounts.append(true);
        for (k, v) in &def.labels {
            labels.keys().append_value(k.trim());
            labels.values().append_value(v);
        }
        let _ = labels.append(true);
        currency.append_option(def.currency.as_deref().map(|c| c.trim().to_ascii_uppercase()));
        created.append_option(created_at);
        import.append_value(import_id);
    }
    if ids.is_empty() {
        return Ok(Parsed { batch: None, predicate: String::new(), keys: ids, errors, unattributed: 0 });
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(plan.finish()),
        Arc::new(accounts.finish()),
        Arc::new(labels.finish()),
        Arc::new(currency.finish()),
        Arc::new(created.finish()),
        Arc::new(import.finish()),
    ];
    let batch = conform(columns).map_err(|e| ImportError::Query(format!("internal: tenants batch: {e}")))?;
    let predicate = in_list("tenant_id", &ids);
    Ok(Parsed { batch: Some(batch), predicate, keys: ids, errors, unattributed: 0 })
}

/// The line of `key: value` in a YAML text (for error locations after parsing), or 0.
pub(crate) fn yaml_line(text: &str, key: &str, value: &str) -> u64 {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ").trim();
            l.strip_prefix(key)
                .and_then(|r| r.trim_start().strip_prefix(':'))
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == value)
        })
        .map_or(0, |i| i as u64 + 1)
}

fn conform(columns: Vec<ArrayRef>) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = Table::Tenants.schema();
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(
            |(c, f)| {
                if c.data_type() == f.data_type() { Ok(c) } else { arrow::compute::cast(&c, f.data_type()) }
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

fn csv_rows(file: &str, text: &str, errors: &mut Vec<RowError>) -> Result<Vec<Row>, ImportError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ImportError::file(file, format!("cannot read the CSV header: {e}")))?
        .clone();
    let col = |names: &[&str]| find_column(&headers, names);
    let Some(id_col) = col(&["tenant_id", "id", "tenant"]) else {
        return Err(ImportError::file(file, "no tenant_id (or id) column in the header"));
    };
    let (name, plan, accounts, labels, currency, created) = (
        col(&["name"]),
        col(&["plan"]),
        col(&["accounts", "account"]),
        col(&["labels"]),
        col(&["currency"]),
        col(&["created_at", "created"]),
    );
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| ImportError::file(file, format!("malformed CSV: {e}")))?;
        let line = record.position().map_or(0, csv::Position::line);
        let get = |c: Option<usize>| {
            c.and_then(|c| record.get(c)).map(str::trim).filter(|s| !s.is_empty()).map(String::from)
        };
        let label_text = get(labels).unwrap_or_default();
        let labels = match parse_labels(&label_text) {
            Ok(l) => l.into_iter().collect(),
            Err(reason) => {
                errors.push(RowError {
                    file: file.to_string(),
                    line,
                    column: "labels".into(),
                    value: label_text,
                    reason,
                });
                continue;
            }
        };
        rows.push(Row {
            line,
            def: TenantDef {
                id: get(Some(id_col)).unwrap_or_default(),
                name: get(name),
                plan: get(plan),
                accounts: get(accounts)
                    .map(|a| a.split([';', '|']).map(String::from).collect())
                    .unwrap_or_default(),
                labels,
                currency: get(currency),
                created_at: get(created),
            },
        });
    }
    Ok(rows)
}
