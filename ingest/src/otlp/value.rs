//! OTLP `AnyValue`s as the lake keeps them: attribute maps are `map<string, string>`, so a
//! scalar becomes its text and a nested value (array, key-value list, bytes) its JSON, which
//! SQL can still take apart (`json_get`, `->>`). Nothing is dropped.

use std::borrow::Cow;

use arrow::array::BinaryBuilder;
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use serde_json::Value as Json;

/// The text of a value: strings as they are (borrowed), numbers and booleans in their usual
/// spelling, bytes in base64 (as OTLP/JSON spells them), arrays and key-value lists as JSON.
/// `None` for an empty value.
pub(crate) fn text(value: &AnyValue) -> Option<Cow<'_, str>> {
    Some(Cow::Owned(match value.value.as_ref()? {
        Value::StringValue(s) => return Some(Cow::Borrowed(s)),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::ArrayValue(_) | Value::KvlistValue(_) => json(value).to_string(),
        // Profiling's string-table reference: no meaning outside profiles (the spec says to
        // treat it as absent).
        Value::StringValueStrindex(_) => return None,
    }))
}

/// A value as JSON, keeping nested structure.
pub(crate) fn json(value: &AnyValue) -> Json {
    match value.value.as_ref() {
        None | Some(Value::StringValueStrindex(_)) => Json::Null,
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or_else(
            // NaN and the infinities have no JSON number: spell them as OTLP/JSON does.
            || Json::String(d.to_string()),
            Json::Number,
        ),
        Some(Value::BytesValue(b)) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Value::ArrayValue(a)) => Json::Array(a.values.iter().map(json).collect()),
        Some(Value::KvlistValue(kv)) => Json::Object(
            kv.values.iter().map(|k| (k.key.clone(), k.value.as_ref().map_or(Json::Null, json))).collect(),
        ),
    }
}

/// An attribute: opentelemetry-proto's `KeyValue`, or one of a request decoded without
/// copying its strings (`wire`).
pub(crate) trait Attribute {
    /// Its key.
    fn key(&self) -> &str;
    /// Its key's bytes (compared and copied without checking them as UTF-8 again).
    fn key_bytes(&self) -> &[u8] {
        self.key().as_bytes()
    }
    /// Its value's text (see [`text`]).
    fn text(&self) -> Option<Cow<'_, str>>;

    /// Appends its value's text (NULL for none) to `builder`, a string column gathered as bytes
    /// (`convert::MapColumn`).
    fn append_text(&self, builder: &mut BinaryBuilder) {
        builder.append_option(self.text().as_deref().map(str::as_bytes));
    }
}

impl Attribute for KeyValue {
    fn key(&self) -> &str {
        &self.key
    }

    fn text(&self) -> Option<Cow<'_, str>> {
        self.value.as_ref().and_then(text)
    }
}

impl Attribute for super::wire::KeyValue {
    fn key(&self) -> &str {
        super::wire::text(&self.key)
    }

    fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    fn text(&self) -> Option<Cow<'_, str>> {
        self.value.as_ref().and_then(super::wire::value_text)
    }

    fn append_text(&self, builder: &mut BinaryBuilder) {
        super::wire::append_value_text(builder, self.value.as_ref());
    }
}

/// The text of attribute `key`, without copying a string value (tenant ids, service names are
/// strings); `None` when it is absent or empty.
pub(crate) fn attribute_str<'a, A: Attribute>(attributes: &'a [A], key: &str) -> Option<Cow<'a, str>> {
    attributes.iter().find(|kv| kv.key_bytes() == key.as_bytes())?.text().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn scalars_are_text_and_nested_values_json() {
        assert_eq!(text(&v(Value::StringValue("a b".into()))).as_deref(), Some("a b"));
        assert_eq!(text(&v(Value::IntValue(-7))).as_deref(), Some("-7"));
        assert_eq!(text(&v(Value::DoubleValue(0.5))).as_deref(), Some("0.5"));
        assert_eq!(text(&v(Value::BoolValue(true))).as_deref(), Some("true"));
        assert_eq!(text(&v(Value::BytesValue(vec![1, 2, 255]))).as_deref(), Some("AQL/"));
        let nested = v(Value::KvlistValue(KeyValueList {
            values: vec![
                KeyValue { key: "n".into(), value: Some(v(Value::IntValue(1))), key_strindex: 0 },
                KeyValue {
                    key: "l".into(),
                    value: Some(v(Value::ArrayValue(ArrayValue {
                        values: vec![v(Value::StringValue("x".into())), v(Value::DoubleValue(f64::NAN))],
                    }))),
                    key_strindex: 0,
                },
            ],
        }));
        let parsed: Json = serde_json::from_str(&text(&nested).unwrap()).unwrap();
        assert_eq!(parsed, serde_json::json!({"n": 1, "l": ["x", "NaN"]}));
        assert_eq!(text(&AnyValue { value: None }), None);
    }
}
