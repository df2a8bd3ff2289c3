//! Small helpers for building Arrow columns row by row.

use arrow::{
    array::{ArrayRef, ListBuilder, StringBuilder, TimestampMicrosecondBuilder},
    datatypes::DataType,
};
use tenantscope_schemas::types::{MONEY_SCALE, UTC};

/// 10^10: one unit of money at the lake's scale.
pub(crate) const ONE: i128 = 10_000_000_000;

/// A decimal literal ("0.384", "-12") at the lake's scale.
pub(crate) fn dec(s: &str) -> i128 {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let int: i128 = int.parse().unwrap_or(0);
    let mut frac = frac.to_string();
    frac.truncate(MONEY_SCALE as usize);
    while frac.len() < MONEY_SCALE as usize {
        frac.push('0');
    }
    let v = int * ONE + frac.parse::<i128>().unwrap_or(0);
    if neg { -v } else { v }
}

/// `a * b` where both are at the lake's scale, rounded half away from zero.
pub(crate) fn mul(a: i128, b: i128) -> i128 {
    let p = a * b;
    let half = ONE / 2;
    if p >= 0 { (p + half) / ONE } else { (p - half) / ONE }
}

/// Units at the lake's scale as decimal text, e.g. `12.5000000000`.
pub(crate) fn fmt_units(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let v = units.unsigned_abs();
    format!("{sign}{}.{:010}", v / ONE as u128, v % ONE as u128)
}

pub(crate) fn ts_builder(capacity: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone(UTC)
}

pub(crate) fn string_list_builder() -> ListBuilder<StringBuilder> {
    tenantscope_schemas::types::list_builder(StringBuilder::new(), DataType::Utf8)
}

/// Finishes any builder into an `ArrayRef`.
pub(crate) fn fin<B: arrow::array::ArrayBuilder>(mut b: B) -> ArrayRef {
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_literals_and_products_are_exact() {
        assert_eq!(dec("0.384"), 3_840_000_000);
        assert_eq!(dec("-12"), -12 * ONE);
        assert_eq!(mul(dec("0.384"), dec("24")), dec("9.216"));
        assert_eq!(mul(dec("0.0000000001"), dec("0.5")), 1); // rounds half away from zero
        assert_eq!(fmt_units(dec("-12.5")), "-12.5000000000");
    }
}
