//! The Arrow types every table is built from, so that writer and reader agree on them.
//!
//! Delta Lake constrains what a column may be: timestamps are microseconds (UTC), there are no
//! unsigned integers, decimals have a precision of at most 38. Everything here fits those rules.

use std::sync::Arc;

use arrow::{
    array::{
        ArrayBuilder, ArrayRef, AsArray, BinaryBuilder, ListBuilder, MapArray, MapBuilder, MapFieldNames,
        StringArray, StringBuilder, StructArray,
    },
    datatypes::{DataType, Field, Fields, TimeUnit},
    error::ArrowError,
};

/// Money: exact decimal, 38 digits with 10 after the point. Never f64.
pub const MONEY_PRECISION: u8 = 38;
/// Digits after the decimal point of every money and quantity column.
pub const MONEY_SCALE: i8 = 10;

/// UTC time zone name carried by every timestamp column.
pub const UTC: &str = "UTC";

/// `Timestamp(Microsecond, "UTC")`: the one timestamp type of the lake (Delta's `timestamp`).
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC)))
}

/// `Decimal128(38, 10)`: money and billed quantities.
pub fn money() -> DataType {
    DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE)
}

/// A `map<string, string>` in the layout Delta readers produce (`key_value` entries of `key`,
/// `value`), so that what we write and what we read back have the same type.
pub fn string_map() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

/// A builder of [`string_map`] columns (the same field names, so no cast is needed).
pub fn string_map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(Some(map_field_names()), StringBuilder::new(), StringBuilder::new())
}

/// A builder of a [`string_map`] whose keys and values are gathered as bytes, with room for
/// `rows` maps of `entries` entries in all, whose keys and values take `key_bytes` and
/// `value_bytes`; [`string_map_from_bytes`] makes its array a [`string_map`].
///
/// For strings their producer already checked as UTF-8 (OTLP records are checked one at a time
/// so that a bad one is rejected alone): appending them to a `StringBuilder` checked each again,
/// one short string at a time, where the whole column is then checked in one pass.
pub fn byte_map_builder_with_capacity(
    rows: usize,
    entries: usize,
    key_bytes: usize,
    value_bytes: usize,
) -> MapBuilder<BinaryBuilder, BinaryBuilder> {
    MapBuilder::with_capacity(
        Some(map_field_names()),
        BinaryBuilder::with_capacity(entries, key_bytes),
        BinaryBuilder::with_capacity(entries, value_bytes),
        rows,
    )
}

/// The [`string_map`] of a map of bytes ([`byte_map_builder_with_capacity`]): its keys and
/// values checked as UTF-8, one pass over each column's bytes, and nothing copied.
pub fn string_map_from_bytes(map: MapArray) -> Result<MapArray, ArrowError> {
    let DataType::Map(field, ordered) = string_map() else { unreachable!("string_map is a map") };
    let DataType::Struct(fields) = field.data_type().clone() else { unreachable!("entries are structs") };
    let (_, offsets, entries, nulls, _) = map.into_parts();
    let (_, columns, entry_nulls) = entries.into_parts();
    let columns = columns
        .iter()
        .map(|c| {
            let bytes = c.as_binary_opt::<i32>().ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!("map entries of {}, not bytes", c.data_type()))
            })?;
            Ok(Arc::new(StringArray::try_from_binary(bytes.clone())?) as ArrayRef)
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let entries = StructArray::try_new(fields, columns, entry_nulls)?;
    MapArray::try_new(field, offsets, entries, nulls, ordered)
}

fn map_field_names() -> MapFieldNames {
    MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() }
}

/// A builder of [`list_of`] columns whose items `values` builds (of type `item`).
pub fn list_builder<T: ArrayBuilder>(values: T, item: DataType) -> ListBuilder<T> {
    ListBuilder::new(values).with_field(Arc::new(Field::new("element", item, true)))
}

/// `list<string>`.
pub fn string_list() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

/// `list<T>` with Delta's element naming.
pub fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("element", item, true)))
}

/// Shorthand for a nullable field.
pub fn nullable(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

/// Shorthand for a non-null field.
pub fn required(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, false)
}

/// A batch of `schema` with `n` rows: the given columns by name, NULL in every other (the
/// columns not given must be nullable).
pub fn batch_with_nulls(
    schema: &arrow::datatypes::SchemaRef,
    n: usize,
    mut columns: std::collections::HashMap<&str, arrow::array::ArrayRef>,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    let arrays: Vec<arrow::array::ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| {
            columns
                .remove(f.name().as_str())
                .unwrap_or_else(|| arrow::array::new_null_array(f.data_type(), n))
        })
        .collect();
    if let Some(name) = columns.keys().next() {
        return Err(arrow::error::ArrowError::SchemaError(format!("no column {name:?} in the schema")));
    }
    arrow::array::RecordBatch::try_new(schema.clone(), arrays)
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;

    use super::*;

    #[test]
    fn a_map_of_bytes_becomes_the_string_map_a_string_builder_makes() {
        let mut bytes = byte_map_builder_with_capacity(2, 3, 8, 8);
        let mut strings = string_map_builder();
        for (row, entries) in
            [vec![("k", Some("v")), ("é", None)], vec![], vec![("x", Some("ü"))]].iter().enumerate()
        {
            for (k, v) in entries {
                bytes.keys().append_value(k);
                bytes.values().append_option(v.map(str::as_bytes));
                strings.keys().append_value(k);
                strings.values().append_option(*v);
            }
            bytes.append(row != 1).unwrap();
            strings.append(row != 1).unwrap();
        }
        let converted = string_map_from_bytes(bytes.finish()).unwrap();
        assert_eq!(converted.data_type(), &string_map());
        assert_eq!(converted, strings.finish());
        assert!(converted.is_null(1));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_an_error() {
        let mut bytes = byte_map_builder_with_capacity(1, 1, 1, 1);
        bytes.keys().append_value("k");
        bytes.values().append_value([0xff_u8]);
        bytes.append(true).unwrap();
        let err = string_map_from_bytes(bytes.finish()).unwrap_err().to_string();
        assert!(err.contains("UTF-8"), "{err}");
    }
}
