//! Export formats: detection from the header, and each format's mapping onto FOCUS columns.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Days};
use tenantscope_schemas::focus::{FOCUS_COLUMNS, FocusKind};

use super::{source::Row, value};

/// A billing export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FOCUS 1.0, 1.1 or 1.2 (any provider's FOCUS export, Azure's FocusCost export, the FOCUS
    /// samples).
    Focus,
    /// Azure Cost Management cost details (EA or MCA, actual or amortized).
    AzureCost,
    /// AWS Cost and Usage Report 2.0 (Data Exports): tags, product and cost categories as maps.
    AwsCur2,
    /// Legacy AWS CUR: tags flattened into `resource_tags_*` (Parquet) or `resourceTags/*` (CSV).
    AwsCurLegacy,
    /// Google Cloud Billing export (standard or detailed), as BigQuery exports it: JSON lines,
    /// CSV or Parquet, with nested records and label arrays.
    Gcp,
}

impl Format {
    /// Every format, for messages.
    pub const ALL: [Format; 5] =
        [Format::Focus, Format::AzureCost, Format::AwsCur2, Format::AwsCurLegacy, Format::Gcp];

    /// The format's name on the command line and in the `imports` table.
    pub fn name(self) -> &'static str {
        match self {
            Format::Focus => "focus",
            Format::AzureCost => "azure",
            Format::AwsCur2 => "aws-cur2",
            Format::AwsCurLegacy => "aws-cur",
            Format::Gcp => "gcp",
        }
    }

    /// The format a header belongs to, if any.
    pub fn detect(headers: &[String]) -> Option<Format> {
        let has = |name: &str| find(headers, &[name]).is_some();
        if has("BilledCost") && has("ChargePeriodStart") {
            Some(Format::Focus)
        } else if has("line_item_unblended_cost") && has("line_item_usage_start_date") {
            let flattened_tags = headers
                .iter()
                .any(|h| normalize(h).starts_with("resourcetags") && normalize(h) != "resourcetags");
            if !flattened_tags && (has("resource_tags") || has("bill_payer_account_name") || has("product")) {
                Some(Format::AwsCur2)
            } else {
                Some(Format::AwsCurLegacy)
            }
        } else if has("MeterCategory") && (has("Cost") || has("CostInBillingCurrency")) && has("Date") {
            Some(Format::AzureCost)
        } else if has("billing_account_id") && has("cost") && has("usage_start_time") {
            Some(Format::Gcp)
        } else {
            None
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
            format!("unknown billing format {s:?}; the formats are: {}", names.join(", "))
        })
    }
}

/// Header names compare without case, `_`, spaces or `/` (`BilledCost`, `billed_cost`).
fn normalize(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

fn find(headers: &[String], names: &[&str]) -> Option<usize> {
    names.iter().find_map(|n| {
        let n = normalize(n);
        headers.iter().position(|h| normalize(h) == n)
    })
}

/// A computed value: text parsed afterwards by the target column's type.
pub(crate) type Compute = Box<dyn Fn(&dyn Row) -> Result<Option<String>, String> + Send + Sync>;

/// Where a target column's value comes from.
pub(crate) enum Extract {
    /// No source: NULL.
    Null,
    /// A source column.
    Column(usize),
    /// A constant.
    Const(&'static str),
    /// Computed from the row; the label names the source columns in error messages.
    Computed(String, Compute),
}

/// How one file maps onto the billing table.
pub(crate) struct Plan {
    pub(crate) headers: Vec<String>,
    /// One per entry of [`FOCUS_COLUMNS`] (`Tags` is `tags` below).
    pub(crate) focus: Vec<Extract>,
    /// Source columns holding tags (a JSON object, a braceless object or a label array).
    pub(crate) tags: Vec<usize>,
    /// Tags flattened into one column per key (legacy CUR), with their keys.
    pub(crate) tag_columns: Vec<(String, usize)>,
    /// Source columns kept in `x_extra`, with the key they are kept under.
    pub(crate) extras: Vec<(String, usize)>,
    /// Map columns (CUR 2.0 `product`, `cost_category`) flattened into `x_extra` as
    /// `<prefix>.<key>`.
    pub(crate) extra_maps: Vec<(String, usize)>,
}

impl Plan {
    /// The source column(s) a target value comes from, for error messages.
    pub(crate) fn label(&self, focus_index: usize) -> String {
        match &self.focus[focus_index] {
            Extract::Column(i) => self.headers[*i].clone(),
            Extract::Computed(label, _) => label.clone(),
            Extract::Null | Extract::Const(_) => FOCUS_COLUMNS[focus_index].focus_name.to_string(),
        }
    }

    pub(crate) fn new(format: Format, headers: Vec<String>) -> Plan {
        match format {
            Format::Focus => focus_plan(headers),
            Format::AzureCost => azure_plan(headers),
            Format::AwsCur2 | Format::AwsCurLegacy => cur_plan(headers),
            Format::Gcp => gcp_plan(headers),
        }
    }
}

/// Builds a [`Plan`]: which source column feeds which FOCUS column; every source column not
/// used ends up in `x_extra`, so nothing in an export is dropped.
struct PlanBuilder {
    headers: Vec<String>,
    focus: Vec<Extract>,
    used: Vec<usize>,
    tags: Vec<usize>,
    tag_columns: Vec<(String, usize)>,
    extra_maps: Vec<(String, usize)>,
}

type Get = std::sync::Arc<dyn Fn(&dyn Row, Option<usize>) -> Option<String> + Send + Sync>;

impl PlanBuilder {
    fn new(headers: Vec<String>) -> Self {
        Self {
            focus: FOCUS_COLUMNS.iter().map(|_| Extract::Null).collect(),
            headers,
            used: Vec::new(),
            tags: Vec::new(),
            tag_columns: Vec::new(),
            extra_maps: Vec::new(),
        }
    }

    /// The first of `names` in the header, marked as used.
    fn find(&mut self, names: &[&str]) -> Option<usize> {
        let i = find(&self.headers, names);
        self.used.extend(i);
        i
    }

    fn set(&mut self, target: &str, e: Extract) {
        if let Some(i) = FOCUS_COLUMNS.iter().position(|c| c.focus_name == target) {
            self.focus[i] = e;
        }
    }

    fn col(&mut self, target: &str, names: &[&str]) {
        if let Some(i) = self.find(names) {
            self.set(target, Extract::Column(i));
        }
    }

    fn constant(&mut self, target: &str, value: &'static str) {
        self.set(target, Extract::Const(value));
    }

    fn computed(
        &mut self,
        target: &str,
        label: &str,
        f: impl Fn(&dyn Row) -> Result<Option<String>, String> + Send + Sync + 'static,
    ) {
        self.set(target, Extract::Computed(label.to_string(), Box::new(f)));
    }

    fn get() -> Get {
        std::sync::Arc::new(|row: &dyn Row, i: Option<usize>| {
            i.and_then(|i| row.get(i)).filter(|v| !value::is_null(v)).map(|v| v.trim().to_string())
        })
    }

    fn finish(self) -> Plan {
        let extras = self
            .headers
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                !self.used.contains(i)
                    && !self.tags.contains(i)
                    && !self.tag_columns.iter().any(|(_, c)| c == i)
                    && !self.extra_maps.iter().any(|(_, c)| c == i)
            })
            .map(|(i, h)| (h.clone(), i))
            .collect();
        Plan {
            headers: self.headers,
            focus: self.focus,
            tags: self.tags,
            tag_columns: self.tag_columns,
            extras,
            extra_maps: self.extra_maps,
        }
    }
}

fn focus_plan(headers: Vec<String>) -> Plan {
    let mut b = PlanBuilder::new(headers);
    for i in 0..b.headers.len() {
        let n = normalize(&b.headers[i]);
        match FOCUS_COLUMNS.iter().position(|c| normalize(c.focus_name) == n) {
            Some(c) if FOCUS_COLUMNS[c].kind == FocusKind::Tags => b.tags.push(i),
            Some(c) => {
                b.focus[c] = Extract::Column(i);
                b.used.push(i);
            }
            // Provider columns (`x_*`, and the unprefixed ones real exports carry, like the
            // FOCUS sample's `Id`) are kept in x_extra, not dropped.
            None => {}
        }
    }
    b.finish()
}

/// Azure cost details onto FOCUS, after Microsoft's FOCUS conversion guidance: the file's
/// `Cost` is what was billed except for usage covered by a reservation or savings plan, whose
/// amortized cost is effective cost (billed with the purchase). Azure's end dates are inclusive,
/// FOCUS's exclusive: one day is added.
fn azure_plan(headers: Vec<String>) -> Plan {
    let mut b = PlanBuilder::new(headers);
    let get = PlanBuilder::get();
    let cost = b.find(&["CostInBillingCurrency", "Cost"]);
    let charge_type = b.find(&["ChargeType"]);
    let pricing_model = b.find(&["PricingModel"]);
    let quantity = b.find(&["Quantity"]);
    let g = get.clone();
    let covered = move |row: &dyn Row| -> bool {
        let ct = g(row, charge_type).unwrap_or_default();
        let pm = g(row, pricing_model).unwrap_or_default();
        ct.eq_ignore_ascii_case("Usage")
            && (pm.eq_ignore_ascii_case("Reservation") || pm.eq_ignore_ascii_case("SavingsPlan"))
    };
    let cost_label = cost.map_or("Cost".to_string(), |i| b.headers[i].clone());
    let (g, cv) = (get.clone(), covered.clone());
    b.computed("BilledCost", &cost_label, move |row| {
        Ok(if cv(row) { Some("0".to_string()) } else { g(row, cost) })
    });
    let g = get.clone();
    b.computed("EffectiveCost", &cost_label, move |row| Ok(g(row, cost)));
    let payg = b.find(&["PayGPrice"]);
    let unit_price = b.find(&["UnitPrice"]);
    b.set("ListCost", product(payg, quantity, "PayGPrice*Quantity"));
    b.set("ContractedCost", product(unit_price, quantity, "UnitPrice*Quantity"));
    b.col("ListUnitPrice", &["PayGPrice"]);
    b.col("ContractedUnitPrice", &["UnitPrice"]);
    b.col("BillingAccountId", &["BillingAccountId"]);
    b.col("BillingAccountName", &["BillingAccountName"]);
    b.col("BillingCurrency", &["BillingCurrency", "BillingCurrencyCode"]);
    b.col("BillingPeriodStart", &["BillingPeriodStartDate"]);
    let bp_end = b.find(&["BillingPeriodEndDate"]);
    b.set("BillingPeriodEnd", next_day(bp_end, "BillingPeriodEndDate"));
    let date = b.find(&["Date", "UsageDate"]);
    b.col("ChargePeriodStart", &["Date", "UsageDate"]);
    b.set("ChargePeriodEnd", next_day(date, "Date"));
    let g = get.clone();
    b.computed("ChargeCategory", "ChargeType", move |row| {
        Ok(g(row, charge_type).map(|ct| {
            match ct.as_str() {
                "Purchase" => "Purchase",
                "Refund" => "Credit",
                "Tax" => "Tax",
                "RoundingAdjustment" | "Adjustment" => "Adjustment",
                _ => "Usage",
            }
            .to_string()
        }))
    });
    let frequency = b.find(&["Frequency", "ChargeFrequency"]);
    let g = get.clone();
    b.computed("ChargeFrequency", "Frequency", move |row| {
        Ok(g(row, frequency).map(|f| {
            match f.as_str() {
                "OneTime" => "One-Time",
                "Recurring" => "Recurring",
                _ => "Usage-Based",
            }
            .to_string()
        }))
    });
    b.col("ChargeDescription", &["ProductName", "Product"]);
    b.col("CommitmentDiscountId", &["benefitId", "ReservationId"]);
    b.col("CommitmentDiscountName", &["benefitName", "ReservationName"]);
    let g = get.clone();
    b.computed("CommitmentDiscountType", "PricingModel", move |row| {
        Ok(g(row, pricing_model).and_then(|p| match p.as_str() {
            "Reservation" => Some("Reservation".to_string()),
            "SavingsPlan" => Some("Savings Plan".to_string()),
            _ => None,
        }))
    });
    let (g, cv) = (get.clone(), covered);
    b.computed("CommitmentDiscountStatus", "ChargeType", move |row| {
        let ct = g(row, charge_type).unwrap_or_default();
        Ok(if ct.starts_with("Unused") {
            Some("Unused".to_string())
        } else if cv(row) {
            Some("Used".to_string())
        } else {
            None
        })
    });
    let g = get.clone();
    b.computed("PricingCategory", "PricingModel", move |row| {
        Ok(g(row, pricing_model).map(|p| {
            match p.as_str() {
                "Reservation" | "SavingsPlan" => "Committed",
                "Spot" => "Dynamic",
                _ => "Standard",
            }
            .to_string()
        }))
    });
    b.col("ConsumedQuantity", &["Quantity"]);
    b.col("PricingQuantity", &["Quantity"]);
    b.col("ConsumedUnit", &["UnitOfMeasure"]);
    b.col("PricingUnit", &["UnitOfMeasure"]);
    b.constant("ProviderName", "Microsoft");
    b.constant("InvoiceIssuerName", "Microsoft");
    b.col("PublisherName", &["PublisherName"]);
    b.col("RegionId", &["ResourceLocation"]);
    b.col("RegionName", &["MeterRegion"]);
    b.col("AvailabilityZone", &["AvailabilityZone"]);
    b.col("ResourceId", &["ResourceId", "InstanceName"]);
    b.col("ResourceName", &["ResourceName"]);
    b.col("ResourceType", &["ConsumedService"]);
    let meter_category = b.find(&["MeterCategory"]);
    b.col("ServiceName", &["MeterCategory"]);
    let g = get.clone();
    b.computed("ServiceCategory", "MeterCategory", move |row| {
        Ok(g(row, meter_category).map(|m| azure_service_category(&m).to_string()))
    });
    b.col("ServiceSubcategory", &["MeterSubCategory"]);
    b.col("SkuId", &["PartNumber", "ProductId"]);
    b.col("SkuPriceId", &["MeterId"]);
    b.col("SkuMeter", &["MeterName"]);
    b.col("SubAccountId", &["SubscriptionId", "SubscriptionGuid"]);
    b.col("SubAccountName", &["SubscriptionName"]);
    b.constant("SubAccountType", "Subscription");
    if let Some(t) = b.find(&["Tags"]) {
        b.tags.push(t);
    }
    b.finish()
}

/// AWS CUR (2.0 and legacy) onto FOCUS, after AWS's FOCUS conversion: effective cost is the
/// amortized cost (reservation / savings plan effective cost for covered usage, the unused
/// part of a reservation fee, zero for fees amortized into usage), list cost the public
/// on-demand cost. Column names match in every spelling (`line_item_unblended_cost`,
/// `lineItem/UnblendedCost`).
fn cur_plan(headers: Vec<String>) -> Plan {
    let mut b = PlanBuilder::new(headers);
    let get = PlanBuilder::get();
    let item_type = b.find(&["line_item_line_item_type"]);
    let unblended = b.find(&["line_item_unblended_cost"]);
    let ri_effective = b.find(&["reservation_effective_cost"]);
    let sp_effective = b.find(&["savings_plan_savings_plan_effective_cost"]);
    let ri_unused_upfront = b.find(&["reservation_unused_amortized_upfront_fee_for_billing_period"]);
    let ri_unused_recurring = b.find(&["reservation_unused_recurring_fee"]);
    b.col("BilledCost", &["line_item_unblended_cost"]);
    let g = get.clone();
    b.computed("EffectiveCost", "line_item_line_item_type", move |row| {
        let t = g(row, item_type).unwrap_or_default();
        Ok(match t.as_str() {
            "DiscountedUsage" => g(row, ri_effective).or_else(|| Some("0".to_string())),
            "SavingsPlanCoveredUsage" => g(row, sp_effective).or_else(|| Some("0".to_string())),
            "SavingsPlanNegation" | "SavingsPlanUpfrontFee" | "SavingsPlanRecurringFee" => {
                Some("0".to_string())
            }
            "RIFee" => {
                let a = g(row, ri_unused_upfront)
                    .map(|v| value::parse_decimal(&v))
                    .transpose()?
                    .map_or(0, |m| m.units);
                let c = g(row, ri_unused_recurring)
                    .map(|v| value::parse_decimal(&v))
                    .transpose()?
                    .map_or(0, |m| m.units);
                Some(units_text(a + c))
            }
            "Fee" if g(row, ri_effective).is_some() => Some("0".to_string()),
            _ => g(row, unblended),
        })
    });
    b.col("ListCost", &["pricing_public_on_demand_cost"]);
    b.col("ListUnitPrice", &["pricing_public_on_demand_rate"]);
    b.col("ContractedCost", &["line_item_unblended_cost"]);
    b.col("ContractedUnitPrice", &["line_item_unblended_rate"]);
    b.col("BillingAccountId", &["bill_payer_account_id"]);
    b.col("BillingAccountName", &["bill_payer_account_name"]);
    b.col("BillingCurrency", &["line_item_currency_code"]);
    b.col("BillingPeriodStart", &["bill_billing_period_start_date"]);
    b.col("BillingPeriodEnd", &["bill_billing_period_end_date"]);
    b.col("ChargePeriodStart", &["line_item_usage_start_date"]);
    b.col("ChargePeriodEnd", &["line_item_usage_end_date"]);
    b.col("ChargeDescription", &["line_item_line_item_description"]);
    let g = get.clone();
    b.computed("ChargeCategory", "line_item_line_item_type", move |row| {
        Ok(g(row, item_type).map(|t| {
            match t.as_str() {
                "Tax" => "Tax",
                "Credit" | "Refund" => "Credit",
                "Fee" | "RIFee" | "SavingsPlanUpfrontFee" | "SavingsPlanRecurringFee" => "Purchase",
                _ => "Usage",
            }
            .to_string()
        }))
    });
    let g = get.clone();
    b.computed("ChargeFrequency", "line_item_line_item_type", move |row| {
        Ok(g(row, item_type).map(|t| {
            match t.as_str() {
                "Fee" | "SavingsPlanUpfrontFee" => "One-Time",
                "RIFee" | "SavingsPlanRecurringFee" => "Recurring",
                _ => "Usage-Based",
            }
            .to_string()
        }))
    });
    let ri_arn = b.find(&["reservation_reservation_a_r_n", "reservation_reservation_arn"]);
    let sp_arn = b.find(&["savings_plan_savings_plan_a_r_n", "savings_plan_savings_plan_arn"]);
    let g = get.clone();
    b.computed("CommitmentDiscountId", "reservation_reservation_a_r_n", move |row| {
        Ok(g(row, ri_arn).or_else(|| g(row, sp_arn)))
    });
    let g = get.clone();
    b.computed("CommitmentDiscountType", "line_item_line_item_type", move |row| {
        Ok(if g(row, ri_arn).is_some() {
            Some("Reserved Instance".to_string())
        } else if g(row, sp_arn).is_some() {
            Some("Savings Plan".to_string())
        } else {
            None
        })
    });
    let g = get.clone();
    b.computed("CommitmentDiscountStatus", "line_item_line_item_type", move |row| {
        Ok(match g(row, item_type).as_deref() {
            Some("DiscountedUsage" | "SavingsPlanCoveredUsage") => Some("Used".to_string()),
            _ => None,
        })
    });
    let term = b.find(&["pricing_term"]);
    let g = get.clone();
    b.computed("PricingCategory", "pricing_term", move |row| {
        Ok(g(row, term).map(|t| {
            match t.as_str() {
                "Reserved" | "Savings Plan" => "Committed",
                "Spot" => "Dynamic",
                _ => "Standard",
            }
            .to_string()
        }))
    });
    b.col("ConsumedQuantity", &["line_item_usage_amount"]);
    b.col("PricingQuantity", &["pricing_usage_amount", "line_item_usage_amount"]);
    b.col("ConsumedUnit", &["pricing_unit"]);
    b.col("PricingUnit", &["pricing_unit"]);
    b.col("InvoiceId", &["bill_invoice_id"]);
    b.constant("ProviderName", "AWS");
    b.col("PublisherName", &["bill_billing_entity"]);
    b.col("InvoiceIssuerName", &["bill_invoicing_entity"]);
    if find(&b.headers, &["bill_invoicing_entity"]).is_none() {
        b.constant("InvoiceIssuerName", "Amazon Web Services, Inc.");
    }
    b.col("RegionId", &["product_region_code", "product_region"]);
    b.col("RegionName", &["product_location"]);
    b.col("AvailabilityZone", &["line_item_availability_zone"]);
    b.col("ResourceId", &["line_item_resource_id"]);
    let service_code = b.find(&["product_servicecode", "line_item_product_code"]);
    b.col("ServiceName", &["product_servicename", "product_product_name"]);
    if find(&b.headers, &["product_servicename", "product_product_name"]).is_none() {
        // CUR 2.0 keeps the product name in the `product` map; the product code is all
        // there is otherwise.
        let g = get.clone();
        b.computed("ServiceName", "line_item_product_code", move |row| Ok(g(row, service_code)));
    }
    let g = get.clone();
    b.computed("ServiceCategory", "product_servicecode", move |row| {
        Ok(g(row, service_code).map(|c| aws_service_category(&c).to_string()))
    });
    b.col("SkuId", &["product_sku"]);
    b.col("SkuPriceId", &["pricing_rate_id"]);
    b.col("SubAccountId", &["line_item_usage_account_id"]);
    b.col("SubAccountName", &["line_item_usage_account_name"]);
    b.constant("SubAccountType", "Account");
    b.col("ResourceType", &["product_instance_type"]);
    // Tags: the CUR 2.0 map, or one column per key (legacy).
    let headers = b.headers.clone();
    for (i, h) in headers.iter().enumerate() {
        let n = normalize(h);
        if n == "resourcetags" {
            b.tags.push(i);
        } else if let Some(key) = h.strip_prefix("resourceTags/").or_else(|| h.strip_prefix("resource_tags_"))
        {
            b.tag_columns.push((key.to_string(), i));
        } else if n == "product" || n == "costcategory" || n == "discount" {
            b.extra_maps.push((h.clone(), i));
        }
    }
    b.finish()
}

/// Google Cloud Billing export onto FOCUS: billed cost is `cost` plus the (negative) credits,
/// list cost `cost_at_list` when the export has it; the billing period is the invoice month.
/// Resource labels are the tags, with the project's labels beside them (a resource label wins
/// over a project label of the same key).
fn gcp_plan(headers: Vec<String>) -> Plan {
    let mut b = PlanBuilder::new(headers);
    let get = PlanBuilder::get();
    let cost = b.find(&["cost"]);
    let credits = b.find(&["credits"]);
    let g = get.clone();
    let net = move |row: &dyn Row| -> Result<Option<String>, String> {
        let Some(c) = g(row, cost) else { return Ok(None) };
        let mut units = value::parse_decimal(&c)?.units;
        if let Some(text) = g(row, credits) {
            let items: Vec<serde_json::Value> =
                serde_json::from_str(&text).map_err(|e| format!("credits are not a JSON array: {e}"))?;
            for item in items {
                let amount = match item.get("amount") {
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    _ => continue,
                };
                units += value::parse_decimal(&amount)?.units;
            }
        }
        Ok(Some(units_text(units)))
    };
    let net = std::sync::Arc::new(net);
    let n = net.clone();
    b.computed("BilledCost", "cost+credits", move |row| n(row));
    let n = net.clone();
    b.computed("EffectiveCost", "cost+credits", move |row| n(row));
    let list = b.find(&["cost_at_list"]);
    let g = get.clone();
    b.computed("ListCost", "cost_at_list", move |row| Ok(g(row, list).or_else(|| g(row, cost))));
    b.col("ContractedCost", &["cost"]);
    b.col("BillingAccountId", &["billing_account_id"]);
    b.col("BillingCurrency", &["currency"]);
    b.col("ChargePeriodStart", &["usage_start_time"]);
    b.col("ChargePeriodEnd", &["usage_end_time"]);
    let month = b.find(&["invoice.month"]);
    let g = get.clone();
    b.computed("BillingPeriodStart", "invoice.month", move |row| {
        Ok(g(row, month).map(|m| invoice_month(&m)).transpose()?.map(|(s, _)| s))
    });
    let g = get.clone();
    b.computed("BillingPeriodEnd", "invoice.month", move |row| {
        Ok(g(row, month).map(|m| invoice_month(&m)).transpose()?.map(|(_, e)| e))
    });
    let cost_type = b.find(&["cost_type"]);
    let g = get.clone();
    b.computed("ChargeCategory", "cost_type", move |row| {
        Ok(Some(
            match g(row, cost_type).as_deref() {
                Some("tax") => "Tax",
                Some("adjustment" | "rounding error") => "Adjustment",
                _ => "Usage",
            }
            .to_string(),
        ))
    });
    b.constant("ChargeFrequency", "Usage-Based");
    b.col("ChargeDescription", &["sku.description"]);
    b.col("ConsumedQuantity", &["usage.amount"]);
    b.col("ConsumedUnit", &["usage.unit"]);
    b.col("PricingQuantity", &["usage.amount_in_pricing_units"]);
    b.col("PricingUnit", &["usage.pricing_unit"]);
    b.col("ContractedUnitPrice", &["price.effective_price"]);
    b.col("ListUnitPrice", &["price.list_price"]);
    b.constant("ProviderName", "Google Cloud");
    b.constant("InvoiceIssuerName", "Google");
    let seller = b.find(&["seller_name"]);
    let g = get.clone();
    b.computed("PublisherName", "seller_name", move |row| {
        Ok(g(row, seller).or_else(|| Some("Google Cloud".to_string())))
    });
    b.col("RegionId", &["location.region"]);
    b.col("RegionName", &["location.location"]);
    b.col("AvailabilityZone", &["location.zone"]);
    b.col("ResourceId", &["resource.global_name"]);
    b.col("ResourceName", &["resource.name"]);
    let service = b.find(&["service.description"]);
    b.col("ServiceName", &["service.description"]);
    let g = get.clone();
    b.computed("ServiceCategory", "service.description", move |row| {
        Ok(g(row, service).map(|s| gcp_service_category(&s).to_string()))
    });
    b.col("SkuId", &["sku.id"]);
    b.col("SubAccountId", &["project.id"]);
    b.col("SubAccountName", &["project.name"]);
    b.constant("SubAccountType", "Project");
    // Resource labels first: on a shared key the first source wins.
    for names in [&["labels"][..], &["project.labels"][..]] {
        if let Some(i) = b.find(names) {
            b.tags.push(i);
        }
    }
    b.finish()
}

/// `YYYYMM` -> the month's first day and the next month's first day (RFC 3339).
fn invoice_month(m: &str) -> Result<(String, String), String> {
    let bad = || format!("invoice month {m:?} is not YYYYMM");
    if m.len() != 6 {
        return Err(bad());
    }
    let (y, mo): (i32, u32) = (m[..4].parse().map_err(|_| bad())?, m[4..].parse().map_err(|_| bad())?);
    let start = chrono::NaiveDate::from_ymd_opt(y, mo, 1).ok_or_else(bad)?;
    let end = start.checked_add_months(chrono::Months::new(1)).ok_or_else(bad)?;
    Ok((format!("{start}T00:00:00Z"), format!("{end}T00:00:00Z")))
}

/// `a × b` of two decimal columns, exact.
fn product(a: Option<usize>, b: Option<usize>, label: &str) -> Extract {
    let get = PlanBuilder::get();
    Extract::Computed(
        label.to_string(),
        Box::new(move |row| {
            let (Some(x), Some(y)) = (get(row, a), get(row, b)) else { return Ok(None) };
            let x = value::parse_decimal(&x)?;
            let y = value::parse_decimal(&y)?;
            Ok(Some(decimal_text(x.units * y.units)))
        }),
    )
}

/// Units at the lake's scale (10) as decimal text.
fn units_text(units: i128) -> String {
    let neg = units < 0;
    let v = units.unsigned_abs();
    format!("{}{}.{:010}", if neg { "-" } else { "" }, v / 10_000_000_000, v % 10_000_000_000)
}

fn next_day(col: Option<usize>, label: &str) -> Extract {
    Extract::Computed(
        label.to_string(),
        Box::new(move |row| {
            let Some(raw) = col.and_then(|i| row.get(i)) else { return Ok(None) };
            if value::is_null(raw) {
                return Ok(None);
            }
            let us = value::parse_timestamp(raw)?;
            let dt =
                DateTime::from_timestamp_micros(us).ok_or_else(|| format!("date out of range: {raw:?}"))?;
            let next =
                dt.checked_add_days(Days::new(1)).ok_or_else(|| format!("date out of range: {raw:?}"))?;
            Ok(Some(next.to_rfc3339()))
        }),
    )
}

/// Units at scale 20 (a product of two scale-10 values) as decimal text.
fn decimal_text(units20: i128) -> String {
    let neg = units20 < 0;
    let v = units20.unsigned_abs();
    let scale = 10_u128.pow(20);
    format!("{}{}.{:020}", if neg { "-" } else { "" }, v / scale, v % scale)
}

/// FOCUS ServiceCategory for an AWS service code.
fn aws_service_category(code: &str) -> &'static str {
    match code {
        "AmazonEC2" | "AWSLambda" | "AmazonECS" | "AmazonEKS" | "AWSFargate" | "AmazonLightsail" => "Compute",
        "AmazonS3" | "AmazonEFS" | "AmazonGlacier" | "AWSBackup" | "AmazonFSx" => "Storage",
        "AmazonRDS" | "AmazonDynamoDB" | "AmazonElastiCache" | "AmazonRedshift" | "AmazonDocDB"
        | "AmazonNeptune" => "Databases",
        "AmazonVPC" | "AmazonCloudFront" | "AWSDataTransfer" | "AmazonRoute53" | "AWSELB"
        | "AmazonApiGateway" | "AWSDirectConnect" => "Networking",
        "AmazonCloudWatch" | "AWSCloudTrail" | "AWSConfig" | "AWSSystemsManager" => {
            "Management and Governance"
        }
        "AmazonSQS" | "AmazonSNS" | "AmazonKinesis" | "AmazonMSK" | "AWSEvents" => "Integration",
        "AmazonAthena"
        | "AWSGlue"
        | "AmazonEMR"
        | "AmazonQuickSight"
        | "AmazonOpenSearchService"
        | "AmazonES" => "Analytics",
        "AmazonSageMaker" | "AmazonBedrock" | "AmazonRekognition" | "AmazonComprehend" => {
            "AI and Machine Learning"
        }
        "AWSKMS" | "AWSSecretsManager" | "AmazonGuardDuty" | "AWSWAF" | "AWSShield" | "AmazonInspector" => {
            "Security"
        }
        _ => "Other",
    }
}

/// FOCUS ServiceCategory for a Google Cloud service description.
fn gcp_service_category(service: &str) -> &'static str {
    match service {
        "Compute Engine" | "Kubernetes Engine" | "Cloud Run" | "Cloud Functions" | "App Engine" => "Compute",
        "Cloud Storage" | "Filestore" => "Storage",
        "Cloud SQL"
        | "Cloud Spanner"
        | "Firestore"
        | "Cloud Bigtable"
        | "Memorystore for Redis"
        | "AlloyDB" => "Databases",
        "Networking" | "Cloud CDN" | "Cloud DNS" | "Cloud Load Balancing" | "Network Intelligence Center" => {
            "Networking"
        }
        "BigQuery" | "Dataflow" | "Dataproc" | "Pub/Sub" | "Looker" => "Analytics",
        "Cloud Logging" | "Cloud Monitoring" | "Cloud Trace" => "Management and Governance",
        "Vertex AI" | "Cloud Vision API" | "Cloud Natural Language API" => "AI and Machine Learning",
        "Secret Manager" | "Cloud Key Management Service (KMS)" | "Cloud Armor" => "Security",
        _ => "Other",
    }
}

/// FOCUS ServiceCategory for an Azure meter category.
fn azure_service_category(meter_category: &str) -> &'static str {
    match meter_category {
        "Virtual Machines"
        | "Virtual Machines Licenses"
        | "Container Instances"
        | "Azure App Service"
        | "Functions"
        | "Cloud Services"
        | "Azure Kubernetes Service" => "Compute",
        "Storage" | "Backup" | "Azure NetApp Files" => "Storage",
        "SQL Database"
        | "SQL Managed Instance"
        | "Azure Database for MySQL"
        | "Azure Database for PostgreSQL"
        | "Azure Cosmos DB"
        | "Redis Cache" => "Databases",
        "Bandwidth"
        | "Virtual Network"
        | "Load Balancer"
        | "VPN Gateway"
        | "Application Gateway"
        | "Azure DNS"
        | "Azure Front Door Service"
        | "Content Delivery Network" => "Networking",
        "Advanced Threat Protection"
        | "Advanced Data Security"
        | "Microsoft Defender for Cloud"
        | "Key Vault"
        | "Azure Firewall" => "Security",
        "Log Analytics" | "Azure Monitor" | "Application Insights" => "Management and Governance",
        "Azure Synapse Analytics" | "Azure Databricks" | "HDInsight" | "Data Factory" => "Analytics",
        "Cognitive Services" | "Azure OpenAI" | "Machine Learning" => "AI and Machine Learning",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_from_headers() {
        let h = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(Format::detect(&h("BilledCost,ChargePeriodStart,Tags")), Some(Format::Focus));
        assert_eq!(Format::detect(&h("billed_cost,charge_period_start")), Some(Format::Focus));
        assert_eq!(Format::detect(&h("Date,MeterCategory,Cost,Tags")), Some(Format::AzureCost));
        assert_eq!(
            Format::detect(&h("line_item_unblended_cost,line_item_usage_start_date,resource_tags,product")),
            Some(Format::AwsCur2)
        );
        assert_eq!(
            Format::detect(&h("lineItem/UnblendedCost,lineItem/UsageStartDate,resourceTags/user:team")),
            Some(Format::AwsCurLegacy)
        );
        assert_eq!(
            Format::detect(&h("line_item_unblended_cost,line_item_usage_start_date,resource_tags_user_team")),
            Some(Format::AwsCurLegacy)
        );
        assert_eq!(
            Format::detect(&h("billing_account_id,service.description,cost,usage_start_time,credits")),
            Some(Format::Gcp)
        );
        assert_eq!(Format::detect(&h("a,b,c")), None);
    }

    #[test]
    fn product_text_is_exact() {
        assert_eq!(decimal_text(-15 * 10_i128.pow(19)), "-1.50000000000000000000");
        assert_eq!(units_text(-5), "-0.0000000005");
        assert_eq!(invoice_month("202612").unwrap().1, "2027-01-01T00:00:00Z");
        assert!(invoice_month("2026-12").is_err());
    }
}
