//! The Arrow types every table is built from, so that writer and reader agree on them.
//!
//! Delta Lake constrains what a column may be: timestamps are microseconds (UTC), there are no
//! unsigned integers, decimals have a precision of at most 38. Everything here fits those rules.

use std::sync::Arc;

use arrow::{
    array::{ArrayBuilder, ListBuilder, MapBuilder, MapFieldNames, StringBuilder},
    datatypes::{DataType, Field, Fields, TimeUnit},
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

/// A [`string_map_builder`] with room for `rows` maps of `entries` entries in all, whose keys
/// and values take `key_bytes` and `value_bytes`.
pub fn string_map_builder_with_capacity(
    rows: usize,
    entries: usize,
    key_bytes: usize,
    value_bytes: usize,
) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::with_capacity(
        Some(map_field_names()),
        StringBuilder::with_capacity(entries, key_bytes),
        StringBuilder::with_capacity(entries, value_bytes),
        rows,
    )
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
