//! Label and annotation templates in Prometheus' syntax: Go's text/template (the `gtmpl` crate)
//! with the variables Prometheus defines, `$labels`, `$value`, `$externalLabels` and
//! `$externalURL`, and its `humanize*`, `toUpper`, `toLower` and `title` functions.
//!
//! `{{ $labels.tenant_id }} costs {{ $value | humanize }}`, `{{ .Labels.tenant_id }}` and
//! `{{ $.labels.tenant_id }}` (as Prometheus' own rule-format fixture writes it) all work.

use std::collections::{BTreeMap, HashMap};

use gtmpl::{Context, FuncError, Template, Value};

/// What Prometheus puts in front of every template so that its variables exist.
const PRELUDE: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// Every `{{` has its `}}`: gtmpl 0.7's lexer does not come back from an unclosed action.
fn balanced(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(format!("invalid template {text:?}: an action opened with {{{{ is never closed"));
        };
        rest = &after[close + 2..];
    }
    Ok(())
}

fn compile(text: &str) -> Result<Template, String> {
    balanced(text)?;
    let mut t = Template::default();
    t.add_funcs(&[
        ("humanize", humanize as gtmpl::Func),
        ("humanize1024", humanize1024 as gtmpl::Func),
        ("humanizePercentage", humanize_percentage as gtmpl::Func),
        ("humanizeDuration", humanize_duration as gtmpl::Func),
        ("toUpper", to_upper as gtmpl::Func),
        ("toLower", to_lower as gtmpl::Func),
        ("title", title as gtmpl::Func),
        // gtmpl's own printf refuses %f for a float that happens to be whole (it stores it
        // as an integer): Prometheus' `printf "%.2f" $value` must work for -6 too.
        ("printf", printf as gtmpl::Func),
    ]);
    t.parse(format!("{PRELUDE}{text}")).map_err(|e| format!("invalid template {text:?}: {e}"))?;
    Ok(t)
}

/// Checks that a template parses.
pub fn check(text: &str) -> Result<(), String> {
    if !text.contains("{{") {
        return Ok(());
    }
    compile(text).map(drop)
}

/// Expands a template for one alert instance.
pub fn expand(
    text: &str,
    labels: &BTreeMap<String, String>,
    value: f64,
    external_url: &str,
) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let t = compile(text)?;
    let labels: HashMap<String, Value> =
        labels.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    let mut data: HashMap<String, Value> = HashMap::new();
    data.insert("Labels".into(), Value::Map(labels.clone()));
    data.insert("labels".into(), Value::Map(labels));
    // gtmpl_value turns every negative float into an integer (its `fract() < EPSILON` test):
    // a negative value with a fraction goes in as text, which printing, `printf` and the
    // humanize functions read back exactly.
    let v = if value < 0.0 && value.fract() != 0.0 {
        Value::from(format!("{value}"))
    } else {
        Value::from(value)
    };
    data.insert("Value".into(), v.clone());
    data.insert("value".into(), v);
    data.insert("ExternalLabels".into(), Value::Map(HashMap::new()));
    data.insert("ExternalURL".into(), Value::from(external_url));
    t.render(&Context::from(Value::Object(data))).map_err(|e| format!("cannot expand template {text:?}: {e}"))
}

fn one_number(name: &str, args: &[Value]) -> Result<f64, FuncError> {
    match args {
        [Value::Number(n)] => n
            .as_f64()
            .or_else(|| n.as_i64().map(|i| i as f64))
            .or_else(|| n.as_u64().map(|u| u as f64))
            .ok_or(FuncError::UnableToConvertFromValue),
        [Value::String(s)] => {
            s.trim().parse::<f64>().map_err(|_| FuncError::Generic(format!("{name}: {s:?} is not a number")))
        }
        [_] => Err(FuncError::Generic(format!("{name}: the argument is not a number"))),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn one_string(name: &str, args: &[Value]) -> Result<String, FuncError> {
    match args {
        [Value::String(s)] => Ok(s.clone()),
        [v] => Ok(v.to_string()),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

/// Go's `%.4g`, as Prometheus' humanize functions print.
fn g4(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..4).contains(&exp) {
        let m = v / 10f64.powi(exp);
        let m = format!("{:.3}", m);
        let m = m.trim_end_matches('0').trim_end_matches('.');
        return format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let decimals = (3 - exp).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn scaled(v: f64, base: f64, big: &[&str], small: &[&str]) -> String {
    if v == 0.0 || !v.is_finite() {
        return g4(v);
    }
    let mut x = v;
    if x.abs() >= 1.0 {
        let mut i = 0;
        while x.abs() >= base && i < big.len() {
            x /= base;
            i += 1;
        }
        let prefix = if i == 0 { "" } else { big[i - 1] };
        return format!("{}{prefix}", g4(x));
    }
    let mut i = 0;
    while x.abs() < 1.0 && i < small.len() {
        x *= base;
        i += 1;
    }
    let prefix = if i == 0 { "" } else { small[i - 1] };
    format!("{}{prefix}", g4(x))
}

fn humanize(args: &[Value]) -> Result<Value, FuncError> {
    let v = one_number("humanize", args)?;
    Ok(Value::from(scaled(
        v,
        1000.0,
        &["k", "M", "G", "T", "P", "E", "Z", "Y"],
        &["m", "u", "n", "p", "f", "a", "z", "y"],
    )))
}

fn humanize1024(args: &[Value]) -> Result<Value, FuncError> {
    let v = one_number("humanize1024", args)?;
    if v.abs() <= 1.0 {
        return Ok(Value::from(g4(v)));
    }
    Ok(Value::from(scaled(v, 1024.0, &["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"], &[])))
}

fn humanize_percentage(args: &[Value]) -> Result<Value, FuncError> {
    let v = one_number("humanizePercentage", args)?;
    Ok(Value::from(format!("{}%", g4(v * 100.0))))
}

fn humanize_duration(args: &[Value]) -> Result<Value, FuncError> {
    let v = one_number("humanizeDuration", args)?;
    if !v.is_finite() {
        return Ok(Value::from(format!("{v}")));
    }
    if v.abs() < 1.0 {
        return Ok(Value::from(
            scaled(v, 1000.0, &[], &["ms", "us", "ns", "ps", "fs", "as", "zs", "ys"]).replace(' ', "")
                + if v == 0.0 { "s" } else { "" },
        ));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let secs = v.abs();
    let whole = secs.trunc() as u64;
    let (d, h, m, s) = (whole / 86400, whole / 3600 % 24, whole / 60 % 60, whole % 60);
    let frac = secs - whole as f64;
    let s = if frac > 0.0 {
        format!("{s}.{:03}", (frac * 1000.0).round() as u64).trim_end_matches('0').to_string()
    } else {
        s.to_string()
    };
    let out = if d > 0 {
        format!("{sign}{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{sign}{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{sign}{m}m {s}s")
    } else {
        format!("{sign}{s}s")
    };
    Ok(Value::from(out))
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => {
            n.as_f64().or_else(|| n.as_i64().map(|i| i as f64)).or_else(|| n.as_u64().map(|u| u as f64))
        }
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(_) => number_of(v).map(|f| format!("{f}")).unwrap_or_default(),
        Value::Nil | Value::NoValue => "<no value>".into(),
        other => other.to_string(),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%d %f %e %g %s %v %q %x %%`, with flags
/// `-` and `0`, width and precision.
fn printf(args: &[Value]) -> Result<Value, FuncError> {
    let Some((Value::String(format), rest)) = args.split_first() else {
        return Err(FuncError::Generic("printf requires a format string".into()));
    };
    let mut out = String::new();
    let mut args = rest.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero) = (false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => left = true,
                '0' => zero = true,
                '+' | ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            precision = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        let num = number_of(arg);
        let text = match (verb, num) {
            ('d', Some(f)) => format!("{}", f.trunc() as i64),
            ('f' | 'F', Some(f)) => format!("{f:.*}", precision.unwrap_or(6)),
            ('e' | 'E', Some(f)) => {
                let s = format!("{f:.*e}", precision.unwrap_or(6));
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                let s = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
                if verb == 'E' { s.to_uppercase() } else { s }
            }
            ('g' | 'G', Some(f)) => match precision {
                Some(p) if p > 0 => {
                    let s =
                        format!("{f:.*}", p.saturating_sub(1 + f.abs().log10().floor().max(0.0) as usize));
                    if s.contains('.') {
                        s.trim_end_matches('0').trim_end_matches('.').to_string()
                    } else {
                        s
                    }
                }
                _ => format!("{f}"),
            },
            ('x', Some(f)) => format!("{:x}", f.trunc() as i64),
            ('q', _) => format!("{:?}", text_of(arg)),
            ('s' | 'v', _) => text_of(arg),
            (v, _) => format!("%!{v}({})", text_of(arg)),
        };
        let width: usize = width.parse().unwrap_or(0);
        let pad = width.saturating_sub(text.chars().count());
        if left {
            out.push_str(&text);
            out.push_str(&" ".repeat(pad));
        } else if zero && num.is_some() && !matches!(verb, 's' | 'q') {
            let (sign, digits) = text.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", &text));
            out.push_str(sign);
            out.push_str(&"0".repeat(pad));
            out.push_str(digits);
        } else {
            out.push_str(&" ".repeat(pad));
            out.push_str(&text);
        }
    }
    Ok(Value::from(out))
}

fn to_upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(one_string("toUpper", args)?.to_uppercase()))
}

fn to_lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(one_string("toLower", args)?.to_lowercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = one_string("title", args)?;
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    Ok(Value::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        [("tenant_id".to_string(), "acme".to_string()), ("service".to_string(), "api".to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn prometheus_variables_and_functions() {
        let l = labels();
        let x = |t: &str, v: f64| expand(t, &l, v, "http://ts:8080").unwrap();
        assert_eq!(x("{{ $labels.tenant_id }} at {{ $value }}", 2000.0), "acme at 2000");
        assert_eq!(x("{{ .Labels.service }}/{{ .Value }}", 0.5), "api/0.5");
        assert_eq!(x("stuff's happening with {{ $.labels.service }}", 1.0), "stuff's happening with api");
        assert_eq!(x("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(x("{{ humanize $value }}", 0.0123), "12.3m");
        assert_eq!(x("{{ $value | humanizePercentage }}", 0.1534), "15.34%");
        assert_eq!(x("{{ $value | humanize1024 }}", 1073741824.0), "1Gi");
        assert_eq!(x("{{ $value | humanizeDuration }}", 5400.0), "1h 30m 0s");
        assert_eq!(x("{{ printf \"%.2f\" $value }}", 3.24159), "3.24");
        assert_eq!(x("{{ printf \"%.2f\" $value }}", -6.0), "-6.00");
        assert_eq!(x("{{ printf \"%.2f\" $value }} {{ $value }}", -29.906), "-29.91 -29.906");
        assert_eq!(
            x("{{ printf \"%d items, %5.1f%%, %s, %-4s|\" $value 12.345 $labels.tenant_id \"ab\" }}", 7.0),
            "7 items,  12.3%, acme, ab  |"
        );
        assert_eq!(x("{{ printf \"%e\" $value }}", 1500.0), "1.500000e+03");
        assert_eq!(x("{{ $labels.tenant_id | toUpper }}", 0.0), "ACME");
        assert_eq!(x("{{ $externalURL }}", 0.0), "http://ts:8080");
        assert_eq!(x("no template", 0.0), "no template");
        assert!(check("{{ $value ").is_err());
        assert!(check("{{ nosuchfunc $value }}").is_err());
    }
}
