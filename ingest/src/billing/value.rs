//! Parsing the values real billing exports contain, which break their own specs: decimals of
//! any scale (quoted, with a currency sign, thousands separators, stray spaces, e-notation),
//! timestamps in ISO 8601, `YYYY-MM-DD HH:MM:SS`, `M/D/YY` and `MM/DD/YYYY`, and tags as JSON
//! objects with or without their outer braces.
//!
//! The decimal parser is written by hand because arrow's `parse_decimal` silently truncates
//! digits beyond the scale; we round half-even and count it, so an import can say so.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tenantscope_schemas::types::MONEY_SCALE;

/// Is this raw value a null? Exports use empty fields, `NULL` and `null`.
pub(crate) fn is_null(raw: &str) -> bool {
    let t = trim(raw);
    t.is_empty() || t.eq_ignore_ascii_case("null")
}

/// `s.trim()`, without its Unicode scan for the common field that starts and ends with a
/// visible ASCII character (a tenth of a million-line import's conversion went to `trim`).
pub(crate) fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(&a), Some(&b)) if a.is_ascii_graphic() && b.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// A decimal at the lake's scale (10 digits after the point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Money {
    /// Value × 10^10.
    pub(crate) units: i128,
    /// Non-zero digits beyond the scale were rounded away (half-even).
    pub(crate) rounded: bool,
}

/// Parses a decimal: `12.5`, `-0.00000080000`, `"$10,000.00 "`, `1.5E-7`, `+3`.
pub(crate) fn parse_decimal(raw: &str) -> Result<Money, String> {
    match plain_decimal(trim(raw).as_bytes()) {
        Some(units) => Ok(Money { units, rounded: false }),
        None => any_decimal(raw),
    }
}

/// [`parse_decimal`] of any shape.
fn any_decimal(raw: &str) -> Result<Money, String> {
    let s = raw.trim();
    let s = s.strip_prefix('$').or_else(|| s.strip_prefix("US$")).unwrap_or(s).trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    // A currency sign may also follow the minus: "-$5.00".
    let s = s.strip_prefix('$').unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => {
            let exp: i32 = s[i + 1..].parse().map_err(|_| format!("not a number: {raw:?}"))?;
            (&s[..i], exp)
        }
        None => (s, 0),
    };
    let mut digits: Vec<u8> = Vec::with_capacity(mantissa.len());
    let mut point: Option<usize> = None;
    for (i, b) in mantissa.bytes().enumerate() {
        match b {
            b'0'..=b'9' => digits.push(b - b'0'),
            b'.' if point.is_none() => point = Some(digits.len()),
            // Thousands separators: before the point, each followed by exactly three digits
            // (`10,000.00`). `1,2` is a decimal comma, not twelve: an error, not a guess.
            b',' if point.is_none() && i > 0 && is_thousands_group(&mantissa.as_bytes()[i + 1..]) => {}
            _ => return Err(format!("not a number: {raw:?}")),
        }
    }
    if digits.is_empty() {
        return Err(format!("not a number: {raw:?}"));
    }
    // Position of the decimal point after applying the exponent.
    let int_len = point.unwrap_or(digits.len()) as i64 + i64::from(exponent);
    let scale = i64::from(MONEY_SCALE);
    // Keep digits up to `scale` places after the point; the rest decides the rounding.
    let keep = int_len + scale;
    let mut units: i128 = 0;
    let mut rounded = false;
    let mut round_up = false;
    for pos in 0..keep.max(0) {
        let d = if pos >= 0 && (pos as usize) < digits.len() { digits[pos as usize] } else { 0 };
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(i128::from(d)))
            .ok_or_else(|| format!("number too large: {raw:?}"))?;
    }
    if keep < digits.len() as i64 {
        let rest = &digits[keep.max(0) as usize..];
        if rest.iter().any(|d| *d != 0) {
            rounded = true;
            let first = if keep < 0 { 0 } else { rest[0] };
            let tail_nonzero = if keep < 0 { true } else { rest[1..].iter().any(|d| *d != 0) };
            round_up = first > 5 || (first == 5 && (tail_nonzero || units % 2 == 1));
        }
    }
    if round_up {
        units += 1;
    }
    if units >= 10_i128.pow(38) {
        return Err(format!("number too large: {raw:?}"));
    }
    Ok(Money { units: if negative { -units } else { units }, rounded })
}

/// The common case, exactly: an optional sign, digits and at most one point, with no non-zero
/// digit beyond the lake's 10 decimal places (`12.5`, `-0.00000080000`): the digits before the
/// point and the kept ones after it accumulated in a `u64` while they fit (a `u128` for up to 38
/// digits), then scaled once. Anything else (exponents, separators, currency signs, rounding,
/// more digits) is `None`, for the general parser.
fn plain_decimal(s: &[u8]) -> Option<i128> {
    let scale = MONEY_SCALE as usize;
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (whole, fraction) = match memchr::memchr(b'.', digits) {
        Some(p) => (&digits[..p], &digits[p + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let (kept, beyond) = fraction.split_at(fraction.len().min(scale));
    // Beyond the scale: exact only while the digits are zeros.
    if beyond.iter().any(|&b| b != b'0') {
        return None;
    }
    let count = whole.len() + kept.len();
    let value: u128 = if count <= 19 {
        let digits = |part: &[u8], start: u64| {
            part.iter().try_fold(start, |v, &b| {
                let d = b.wrapping_sub(b'0');
                (d <= 9).then(|| v * 10 + u64::from(d))
            })
        };
        u128::from(digits(kept, digits(whole, 0)?)?)
    } else if count <= 38 {
        whole.iter().chain(kept).try_fold(0_u128, |v, &b| {
            let d = b.wrapping_sub(b'0');
            (d <= 9).then(|| v * 10 + u128::from(d))
        })?
    } else {
        return None;
    };
    const POWERS: [u64; 11] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
        1_000_000_000,
        10_000_000_000,
    ];
    let units = value.checked_mul(u128::from(*POWERS.get(scale - kept.len())?))?;
    // Larger than DECIMAL(38, 10) holds: the general parser says so.
    let units = i128::try_from(units).ok().filter(|u| *u < 10_i128.pow(38))?;
    Some(if negative { -units } else { units })
}

fn is_thousands_group(rest: &[u8]) -> bool {
    rest.len() >= 3
        && rest[..3].iter().all(u8::is_ascii_digit)
        && rest.get(3).is_none_or(|b| matches!(b, b',' | b'.'))
}

/// Parses a UTC timestamp (microseconds since the epoch). Values without a zone are UTC.
pub(crate) fn parse_timestamp(raw: &str) -> Result<i64, String> {
    let s = raw.trim();
    match iso_fast(s.as_bytes()) {
        Some(us) => Ok(us),
        None => parse_timestamp_general(raw, s),
    }
}

/// [`parse_timestamp`] with a memory of the last text parsed: sorted or not, the rows of an
/// export repeat their timestamps (a month's billing period on every line, an hour's charges
/// together), and comparing a few bytes costs less than parsing them.
#[derive(Debug, Default)]
pub(crate) struct LastTimestamp {
    text: String,
    parsed: Option<Result<i64, String>>,
}

impl LastTimestamp {
    pub(crate) fn parse(&mut self, text: &str) -> Result<i64, String> {
        if let Some(parsed) = &self.parsed
            && self.text == text
        {
            return parsed.clone();
        }
        let parsed = parse_timestamp(text);
        self.text.clear();
        self.text.push_str(text);
        self.parsed = Some(parsed.clone());
        parsed
    }
}

/// Every layout [`parse_timestamp`] takes, through chrono's format parsers (`s` is `raw`
/// trimmed).
fn parse_timestamp_general(raw: &str, s: &str) -> Result<i64, String> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc).timestamp_micros());
    }
    // BigQuery and some exports: "2024-09-18 22:00:00 UTC", "2024-09-18 22:00:00+00:00".
    let s2 = s.strip_suffix(" UTC").unwrap_or(s);
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(s2, fmt) {
            return Ok(dt.with_timezone(&Utc).timestamp_micros());
        }
    }
    let s2 = s2.strip_suffix('Z').unwrap_or(s2);
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s2, fmt) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    if let Some(us) = hour_rollover(s2) {
        return Ok(us);
    }
    // Dates alone: ISO, US `MM/DD/YYYY` (Azure) and spreadsheet `M/D/YY` (FOCUS examples),
    // optionally followed by a time.
    let (date_part, time_part) = s2.split_once(' ').unwrap_or((s2, ""));
    let date = NaiveDate::parse_from_str(date_part, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(date_part, "%Y%m%d"))
        .or_else(|_| parse_us_date(date_part))
        .map_err(|_| format!("not a date/time: {raw:?}"))?;
    let time = if time_part.is_empty() {
        chrono::NaiveTime::MIN
    } else {
        ["%H:%M:%S%.f", "%H:%M", "%I:%M:%S %p", "%I:%M %p"]
            .iter()
            .find_map(|f| chrono::NaiveTime::parse_from_str(time_part, f).ok())
            .ok_or_else(|| format!("not a date/time: {raw:?}"))?
    };
    Ok(date.and_time(time).and_utc().timestamp_micros())
}

/// The layout nearly every export uses, `YYYY-MM-DD[T ]HH:MM:SS[.f][Z| UTC|+00:00]`, parsed
/// without chrono's format interpreter (which was the import's largest cost). `None` for
/// anything else, including out-of-range fields: the general path then parses or explains it.
fn iso_fast(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let padded = frac[..digits.min(6)].iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0'));
        micros = padded * 10u32.pow(6 - digits.min(6) as u32);
        if frac[6.min(digits)..digits].iter().any(|c| *c != b'0') {
            return None; // sub-microsecond digits: let the general path decide
        }
        rest = &frac[digits..];
    }
    if !matches!(rest, b"" | b"Z" | b" UTC" | b"+00:00" | b"+0000" | b"z") {
        return None;
    }
    let time = NaiveDate::from_ymd_opt(y as i32, mo, d)?.and_hms_opt(h, mi, sec)?;
    Some(time.and_utc().timestamp_micros() + i64::from(micros))
}

/// `2023-02-01T30:00:00Z`: the FOCUS 1.2 spec's own worked examples write the end of a
/// 10-hour block that starts at 20:00 as hour 30. An hour from 24 to 99 with otherwise valid
/// fields rolls over into the following day(s), as the example means.
fn hour_rollover(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(['T', ' '])?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let mut parts = time.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next().unwrap_or("0"));
    if parts.next().is_some() || h.len() != 2 {
        return None;
    }
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok().filter(|m| *m < 60)?;
    let sec: f64 = sec.parse().ok().filter(|s| *s < 60.0)?;
    if !(24..100).contains(&h) {
        return None;
    }
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
    Some(midnight + (h * 3600 + m * 60) * 1_000_000 + (sec * 1e6).round() as i64)
}

fn parse_us_date(s: &str) -> Result<NaiveDate, ()> {
    let mut parts = s.split('/');
    let (Some(m), Some(d), Some(y), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(());
    };
    let (m, d): (u32, u32) = (m.parse().map_err(|_| ())?, d.parse().map_err(|_| ())?);
    let y: i32 = y.parse().map_err(|_| ())?;
    // Two-digit years are 20YY: billing data is recent.
    let y = if y < 100 { 2000 + y } else { y };
    NaiveDate::from_ymd_opt(y, m, d).ok_or(())
}

/// Parses tags: a JSON object (`{"env": "prod"}`), the same without its outer braces (Azure EA:
/// `"env": "prod","team": "x"`), or `k=v` pairs separated by `,` or `;`. Keys are trimmed of
/// stray spaces (`" org"`); non-string values keep their JSON text.
pub(crate) fn parse_tags(raw: &str) -> Result<Vec<(String, String)>, String> {
    let s = raw.trim();
    if s.is_empty() || s == "{}" || s == "[]" {
        return Ok(Vec::new());
    }
    // BigQuery labels: `[{"key": "team", "value": "a"}, ...]`.
    if s.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(s).map_err(|e| format!("tags are not a JSON array: {e}"))?;
        let pairs = items
            .iter()
            .map(|item| {
                let text = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                match (item.get("key"), item.get("value")) {
                    (Some(k), v) => Ok((text(k), v.map(text).unwrap_or_default())),
                    _ => Err(format!("tag {item} has no \"key\"")),
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        return Ok(dedup(pairs.into_iter()));
    }
    let braced;
    let json = if s.starts_with('{') {
        s
    } else if s.starts_with('"') {
        braced = format!("{{{s}}}");
        &braced
    } else {
        ""
    };
    if !json.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| format!("tags are not a JSON object: {e}"))?;
        return Ok(dedup(map.into_iter().map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })));
    }
    let pairs = s
        .split([',', ';'])
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once(['=', ':'])
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("tag {p:?} is not key=value"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(dedup(pairs.into_iter()))
}

/// Trims keys, sorts them, and keeps the first value where trimming made two keys one (the
/// FOCUS sample has `" org"` next to `"org"`, with the same value).
fn dedup(pairs: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pairs
        .map(|(k, v)| if trim(&k).len() == k.len() { (k, v) } else { (k.trim().to_string(), v) })
        .collect();
    // Stable: of keys equal after trimming, the first stays first.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|later, first| later.0 == first.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: i128 = 10_000_000_000;

    fn units(s: &str) -> i128 {
        parse_decimal(s).unwrap().units
    }

    #[test]
    fn decimals_of_any_shape() {
        assert_eq!(units("12.5"), 125 * ONE / 10);
        assert_eq!(units("0.00000080000"), 8_000);
        assert_eq!(units("\"0.0000004\"".trim_matches('"')), 4_000);
        assert_eq!(units("$10,000.00 "), 10_000 * ONE);
        assert_eq!(units("-$5.25"), -525 * ONE / 100);
        assert_eq!(units("1.5E-7"), 1_500);
        assert_eq!(units("2E3"), 2_000 * ONE);
        assert_eq!(units("+3"), 3 * ONE);
        assert_eq!(units(".5"), ONE / 2);
        assert_eq!(units("1,234,567.5"), 12_345_675 * ONE / 10);
        for bad in ["", "abc", "1.2.3", "1e", "--1", "1,", "1,2", "1,23", "1,2345", "12,345,6", "1.000,5"] {
            assert!(parse_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_parser() {
        let mut seen = 0;
        for i in 0..20_000_u64 {
            let n = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 60);
            let digits = n.to_string();
            for point in 0..=digits.len() {
                for sign in ["", "-", "+"] {
                    let text = format!("{sign}{}.{}", &digits[..point], &digits[point..]);
                    let text = text.trim_end_matches('.').to_string();
                    if let Some(fast) = plain_decimal(text.as_bytes()) {
                        seen += 1;
                        assert_eq!(Ok(Money { units: fast, rounded: false }), any_decimal(&text), "{text}");
                    }
                }
            }
        }
        assert!(seen > 100_000, "{seen}");
        assert_eq!(plain_decimal(b"0.0000008000000000"), Some(8_000));
        assert_eq!(plain_decimal(b"12345678901234567890.5"), Some(123_456_789_012_345_678_905 * ONE / 10));
        for other in
            ["1.00000000001", "1234567890123456789012345678901", "1e3", "$5", "1,000", ".", "-", "1.2.3"]
        {
            assert_eq!(plain_decimal(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn excess_digits_round_half_even_and_say_so() {
        let m = parse_decimal("0.00000000015").unwrap(); // 1.5 units -> 2
        assert_eq!((m.units, m.rounded), (2, true));
        let m = parse_decimal("0.00000000025").unwrap(); // 2.5 units -> 2
        assert_eq!((m.units, m.rounded), (2, true));
        let m = parse_decimal("0.000000000251").unwrap(); // 2.51 -> 3
        assert_eq!((m.units, m.rounded), (3, true));
        let m = parse_decimal("2.000000000000000").unwrap(); // trailing zeros are exact
        assert_eq!((m.units, m.rounded), (2 * ONE, false));
        let m = parse_decimal("-0.00000000015").unwrap();
        assert_eq!((m.units, m.rounded), (-2, true));
        let m = parse_decimal("0.0000000072922557592391990000").unwrap();
        assert_eq!((m.units, m.rounded), (73, true));
    }

    #[test]
    fn timestamps_of_every_export() {
        let t = |s| parse_timestamp(s).unwrap();
        let base = t("2024-09-18T22:00:00Z");
        assert_eq!(base, 1_726_696_800_000_000);
        assert_eq!(t("2024-09-18 22:00:00"), base);
        assert_eq!(t("2024-09-18T22:00:00.000Z"), base);
        assert_eq!(t("2024-09-18T23:00:00+01:00"), base);
        assert_eq!(t("2024-09-18 22:00:00 UTC"), base);
        assert_eq!(t("09/18/2024"), t("2024-09-18"));
        assert_eq!(t("5/1/25"), t("2025-05-01"));
        assert_eq!(t("2023-02-01T30:00:00Z"), t("2023-02-02T06:00:00Z"));
        assert_eq!(t("2024-09-18 22:00:00.25"), base + 250_000);
        assert_eq!(t("2024-09-18T22:00:00.123456789+00:00"), base + 123_456);
        assert_eq!(t("1969-12-31 23:59:59"), -1_000_000);
        // The fast path takes these, and the general one agrees on each.
        for s in [
            "2024-02-29 23:59:59",
            "2024-09-18T22:00:00.5Z",
            "2000-01-01T00:00:00+00:00",
            "2024-09-18 22:00:00 UTC",
            "1969-12-31T23:59:59.999999Z",
        ] {
            let fast = iso_fast(s.as_bytes()).unwrap_or_else(|| panic!("{s}: not on the fast path"));
            assert_eq!(Ok(fast), parse_timestamp_general(s, s), "{s}");
        }
        assert!(parse_timestamp("2023-02-29 00:00:00").is_err());
        assert!(parse_timestamp("2024-09-18 22:61:00").is_err());
        assert!(parse_timestamp("2023-02-01T30:61:00Z").is_err());
        assert!(parse_timestamp("13/45/2024").is_err());
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn tags_with_and_without_braces() {
        assert_eq!(
            parse_tags(r#"{"env": "prod", " org": "x", "org": "x", "n": 3}"#).unwrap(),
            vec![
                ("env".to_string(), "prod".to_string()),
                ("n".to_string(), "3".to_string()),
                ("org".to_string(), "x".to_string()),
            ]
        );
        assert_eq!(parse_tags(r#""CostCenter": "1234","env": "prod""#).unwrap().len(), 2);
        assert_eq!(parse_tags("team=a; env=b").unwrap()[1], ("team".to_string(), "a".to_string()));
        assert!(parse_tags("{not json").is_err());
        let gcp =
            parse_tags(r#"[{"key": "tenant", "value": "acme"}, {"key": "env", "value": null}]"#).unwrap();
        assert_eq!(gcp, vec![("env".to_string(), String::new()), ("tenant".to_string(), "acme".to_string())]);
        assert!(parse_tags("").unwrap().is_empty());
    }
}
