//! The FOCUS 1.2 columns (FinOps Open Cost and Usage Specification, CC BY 4.0), as they are named
//! in an export and in the `billing` table. The list is generated from the spec's column table
//! (`shared/data/focus-columns.md`): 57 columns, the union of FOCUS 1.0, 1.1 and 1.2.

/// How a FOCUS column is typed in the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FocusKind {
    /// Text.
    String,
    /// Exact decimal, `Decimal128(38, 10)`.
    Decimal,
    /// UTC timestamp.
    DateTime,
    /// A JSON object kept as JSON text (`SkuPriceDetails`).
    Json,
    /// Key-value tags, kept as `map<string, string>` (`Tags`).
    Tags,
}

/// One FOCUS column.
#[derive(Debug, Clone, Copy)]
pub struct FocusColumn {
    /// The spec's column id, e.g. `BilledCost`.
    pub focus_name: &'static str,
    /// The lake's column name, e.g. `billed_cost`.
    pub name: &'static str,
    /// Type in the lake.
    pub kind: FocusKind,
    /// FOCUS versions that define the column.
    pub versions: &'static str,
}

/// Every FOCUS column, in the spec's (alphabetical) order.
pub const FOCUS_COLUMNS: &[FocusColumn] = &[
    FocusColumn {
        focus_name: "AvailabilityZone",
        name: "availability_zone",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "BilledCost",
        name: "billed_cost",
        kind: FocusKind::Decimal,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "BillingAccountId",
        name: "billing_account_id",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "BillingAccountName",
        name: "billing_account_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "BillingAccountType",
        name: "billing_account_type",
        kind: FocusKind::String,
        versions: "1.2",
    },
    FocusColumn {
        focus_name: "BillingCurrency",
        name: "billing_currency",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "BillingPeriodEnd",
        name: "billing_period_end",
        kind: FocusKind::DateTime,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "BillingPeriodStart",
        name: "billing_period_start",
        kind: FocusKind::DateTime,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CapacityReservationId",
        name: "capacity_reservation_id",
        kind: FocusKind::String,
        versions: "1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CapacityReservationStatus",
        name: "capacity_reservation_status",
        kind: FocusKind::String,
        versions: "1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ChargeCategory",
        name: "charge_category",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ChargeClass",
        name: "charge_class",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ChargeDescription",
        name: "charge_description",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ChargeFrequency",
        name: "charge_frequency",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ChargePeriodEnd",
        name: "charge_period_end",
        kind: FocusKind::DateTime,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ChargePeriodStart",
        name: "charge_period_start",
        kind: FocusKind::DateTime,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CommitmentDiscountCategory",
        name: "commitment_discount_category",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CommitmentDiscountId",
        name: "commitment_discount_id",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CommitmentDiscountName",
        name: "commitment_discount_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CommitmentDiscountQuantity",
        name: "commitment_discount_quantity",
        kind: FocusKind::Decimal,
        versions: "1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CommitmentDiscountStatus",
        name: "commitment_discount_status",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CommitmentDiscountType",
        name: "commitment_discount_type",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "CommitmentDiscountUnit",
        name: "commitment_discount_unit",
        kind: FocusKind::String,
        versions: "1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ConsumedQuantity",
        name: "consumed_quantity",
        kind: FocusKind::Decimal,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ConsumedUnit",
        name: "consumed_unit",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ContractedCost",
        name: "contracted_cost",
        kind: FocusKind::Decimal,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ContractedUnitPrice",
        name: "contracted_unit_price",
        kind: FocusKind::Decimal,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "EffectiveCost",
        name: "effective_cost",
        kind: FocusKind::Decimal,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn { focus_name: "InvoiceId", name: "invoice_id", kind: FocusKind::String, versions: "1.2" },
    FocusColumn {
        focus_name: "InvoiceIssuerName",
        name: "invoice_issuer_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ListCost",
        name: "list_cost",
        kind: FocusKind::Decimal,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ListUnitPrice",
        name: "list_unit_price",
        kind: FocusKind::Decimal,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "PricingCategory",
        name: "pricing_category",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "PricingCurrency",
        name: "pricing_currency",
        kind: FocusKind::String,
        versions: "1.2",
    },
    FocusColumn {
        focus_name: "PricingCurrencyContractedUnitPrice",
        name: "pricing_currency_contracted_unit_price",
        kind: FocusKind::Decimal,
        versions: "1.2",
    },
    FocusColumn {
        focus_name: "PricingCurrencyEffectiveCost",
        name: "pricing_currency_effective_cost",
        kind: FocusKind::Decimal,
        versions: "1.2",
    },
    FocusColumn {
        focus_name: "PricingCurrencyListUnitPrice",
        name: "pricing_currency_list_unit_price",
        kind: FocusKind::Decimal,
        versions: "1.2",
    },
    FocusColumn {
        focus_name: "PricingQuantity",
        name: "pricing_quantity",
        kind: FocusKind::Decimal,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "PricingUnit",
        name: "pricing_unit",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ProviderName",
        name: "provider_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "PublisherName",
        name: "publisher_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "RegionId",
        name: "region_id",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "RegionName",
        name: "region_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ResourceId",
        name: "resource_id",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ResourceName",
        name: "resource_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ResourceType",
        name: "resource_type",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ServiceCategory",
        name: "service_category",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ServiceName",
        name: "service_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "ServiceSubcategory",
        name: "service_subcategory",
        kind: FocusKind::String,
        versions: "1.1, 1.2",
    },
    FocusColumn { focus_name: "SkuId", name: "sku_id", kind: FocusKind::String, versions: "1.0, 1.1, 1.2" },
    FocusColumn { focus_name: "SkuMeter", name: "sku_meter", kind: FocusKind::String, versions: "1.1, 1.2" },
    FocusColumn {
        focus_name: "SkuPriceDetails",
        name: "sku_price_details",
        kind: FocusKind::Json,
        versions: "1.1, 1.2",
    },
    FocusColumn {
        focus_name: "SkuPriceId",
        name: "sku_price_id",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "SubAccountId",
        name: "sub_account_id",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "SubAccountName",
        name: "sub_account_name",
        kind: FocusKind::String,
        versions: "1.0, 1.1, 1.2",
    },
    FocusColumn {
        focus_name: "SubAccountType",
        name: "sub_account_type",
        kind: FocusKind::String,
        versions: "1.2",
    },
    FocusColumn { focus_name: "Tags", name: "tags", kind: FocusKind::Tags, versions: "1.0, 1.1, 1.2" },
];

/// Looks a column up by its FOCUS id (case-insensitive, so `billedcost` finds `BilledCost`).
pub fn focus_column(focus_name: &str) -> Option<&'static FocusColumn> {
    FOCUS_COLUMNS.iter().find(|c| c.focus_name.eq_ignore_ascii_case(focus_name))
}

/// `billed_cost`.
pub const BILLED_COST: &str = "billed_cost";
/// `effective_cost`.
pub const EFFECTIVE_COST: &str = "effective_cost";
/// `list_cost`.
pub const LIST_COST: &str = "list_cost";
/// `contracted_cost`.
pub const CONTRACTED_COST: &str = "contracted_cost";
/// `billing_currency`.
pub const BILLING_CURRENCY: &str = "billing_currency";
/// `charge_period_start`.
pub const CHARGE_PERIOD_START: &str = "charge_period_start";
/// `charge_period_end`.
pub const CHARGE_PERIOD_END: &str = "charge_period_end";
/// `billing_period_start`.
pub const BILLING_PERIOD_START: &str = "billing_period_start";
/// `billing_period_end`.
pub const BILLING_PERIOD_END: &str = "billing_period_end";
/// `service_name`.
pub const SERVICE_NAME: &str = "service_name";
/// `service_category`.
pub const SERVICE_CATEGORY: &str = "service_category";
/// `sub_account_id`.
pub const SUB_ACCOUNT_ID: &str = "sub_account_id";
/// `resource_id`.
pub const RESOURCE_ID: &str = "resource_id";
/// `tags`.
pub const TAGS: &str = "tags";
/// `charge_category`.
pub const CHARGE_CATEGORY: &str = "charge_category";
