//! The cost model: meters turn telemetry into hourly `usage`; allocation rules turn the bill
//! into cost per tenant (`cost_allocation`); views give cost, revenue and margin per tenant.
//! Meters and rules are configuration (the `cost` section of the config file), not code.

pub mod allocation;
pub mod anomaly;
pub mod materialized;
pub mod topk;
pub mod usage;
pub mod views;

use std::collections::BTreeMap;

use serde::Deserialize;

/// The cost model's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    /// What `usage` counts. Default: requests, span_seconds, log_records, log_bytes.
    pub meters: Vec<Meter>,
    /// How shared billing lines (those no import attributed to a tenant) are split, first
    /// matching rule first. Lines no rule matches stay `unallocated`.
    pub allocation: Vec<AllocationRule>,
    /// How often `serve` rolls the days ingest touched up into `usage` (each rollup recomputes
    /// those days whole from the raw telemetry, so not every flush).
    pub rollup_interval_ms: u64,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self { meters: Meter::defaults(), allocation: Vec::new(), rollup_interval_ms: 60_000 }
    }
}

/// A meter: `sum(quantity)` of the rows of `table` that match `where`, per tenant and hour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    /// Its name in `usage.meter`, in plans and in allocation rules.
    pub name: String,
    /// `spans`, `logs` or `metrics`.
    pub table: String,
    /// SQL condition on the table's columns (default: every row).
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// SQL expression summed (default `1`: a count).
    #[serde(default)]
    pub quantity: Option<String>,
    /// Unit (UCUM, as OpenTelemetry spells units).
    #[serde(default)]
    pub unit: Option<String>,
}

impl Meter {
    fn new(name: &str, table: &str, filter: Option<&str>, quantity: Option<&str>, unit: &str) -> Self {
        Self {
            name: name.into(),
            table: table.into(),
            filter: filter.map(Into::into),
            quantity: quantity.map(Into::into),
            unit: Some(unit.into()),
        }
    }

    /// The meters used when the config names none.
    pub fn defaults() -> Vec<Meter> {
        vec![
            Meter::new("requests", "spans", Some("kind = 'server'"), None, "{request}"),
            Meter::new(
                "span_seconds",
                "spans",
                Some("duration_ns IS NOT NULL"),
                Some("duration_ns / 1e9"),
                "s",
            ),
            Meter::new("log_records", "logs", None, None, "{record}"),
            Meter::new("log_bytes", "logs", Some("body IS NOT NULL"), Some("octet_length(body)"), "By"),
        ]
    }
}

/// One allocation rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationRule {
    /// Shown in `cost_allocation.allocation_rule`.
    pub name: String,
    /// Which billing lines: every key given must match (`tags` by key).
    #[serde(default, rename = "match")]
    pub filter: Match,
    /// How the matched lines are split.
    pub method: Method,
    /// `proportional`: the meter whose usage in the line's charge period gives the shares.
    #[serde(default)]
    pub meter: Option<String>,
    /// `direct`: the tag whose value is the tenant.
    #[serde(default)]
    pub tag: Option<String>,
    /// `fixed`: tenant -> weight.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
}

/// How a rule splits cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// All of it to the tenant named by a tag.
    Direct,
    /// In proportion to each tenant's usage of a meter in the same period.
    Proportional,
    /// Evenly between the tenants active (with any usage) in the period.
    Even,
    /// By fixed weights.
    Fixed,
}

impl Method {
    /// Its name in `cost_allocation.allocation_method`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Direct => "direct",
            Method::Proportional => "proportional",
            Method::Even => "even",
            Method::Fixed => "fixed",
        }
    }
}

/// One value or a list of accepted values.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

impl OneOrMany {
    fn matches(&self, value: Option<&str>) -> bool {
        let Some(v) = value else { return false };
        match self {
            OneOrMany::One(s) => s == v,
            OneOrMany::Many(list) => list.iter().any(|s| s == v),
        }
    }
}

/// Billing line conditions of a rule (FOCUS column names).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// `service_name`.
    pub service_name: Option<OneOrMany>,
    /// `service_category`.
    pub service_category: Option<OneOrMany>,
    /// `charge_category`.
    pub charge_category: Option<OneOrMany>,
    /// `sub_account_id`.
    pub sub_account_id: Option<OneOrMany>,
    /// `provider_name`.
    pub provider_name: Option<OneOrMany>,
    /// `tags[key]` = value.
    #[serde(default)]
    pub tags: BTreeMap<String, OneOrMany>,
}
