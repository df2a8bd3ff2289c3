//! `to_json(value)`: any value as JSON text, and map columns sent as JSON over the PostgreSQL
//! wire.
//!
//! Attributes, tags and provider extras are Arrow maps. The HTTP API writes them as JSON objects,
//! but the PostgreSQL encoder (arrow-pg) has no wire type for a map and refused the whole
//! statement (`SELECT * FROM spans` in psql, a Grafana table panel over `billing`). Over the
//! wire, a query's map-valued output columns (also maps inside lists and structs) are therefore
//! converted with `to_json` and announced as PostgreSQL `json`, which psql prints, psycopg
//! decodes to a dict and Grafana shows as text. The JSON is arrow-json's: a map is an object of
//! its keys (NULL values kept as `null`), a list an array, a string a JSON string.

use std::sync::Arc;

use arrow::{
    array::{Array, ArrayRef, StringBuilder},
    datatypes::{DataType, Field, FieldRef},
    error::ArrowError,
    json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder, make_encoder},
    util::display::{ArrayFormatter, FormatOptions},
};
use datafusion::{
    common::{Column, DFSchema, Result},
    logical_expr::{
        ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
        ScalarUDFImpl, Signature, Volatility,
    },
};

/// Field metadata key naming the PostgreSQL type a text column is sent as.
pub const PG_TYPE: &str = "tenantscope.pg_type";

/// The `to_json` function.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToJson { signature: Signature::any(1, Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToJson {
    signature: Signature,
}

impl ScalarUDFImpl for ToJson {
    fn name(&self) -> &str {
        "to_json"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        let metadata = [(PG_TYPE.to_string(), "json".to_string())].into();
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, nullable).with_metadata(metadata)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(to_json(&args.arg_fields[0], &array)?))
    }
}

/// arrow-json's options for our JSON: NULL values inside maps and structs written as `null`;
/// decimals as JSON strings (as the HTTP API writes them everywhere) when `decimals_as_strings`,
/// else as JSON numbers (as PostgreSQL's `to_json(numeric)`).
pub(crate) fn encoder_options(decimals_as_strings: bool) -> EncoderOptions {
    let options = EncoderOptions::default().with_explicit_nulls(true);
    if decimals_as_strings { options.with_encoder_factory(Arc::new(DecimalsAsStrings)) } else { options }
}

/// Decimals inside maps, lists and structs as JSON strings, as at the top level, so that no
/// digit of money is lost to a JSON reader's floats.
#[derive(Debug)]
struct DecimalsAsStrings;

impl EncoderFactory for DecimalsAsStrings {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        if !matches!(
            array.data_type(),
            DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        ) {
            return Ok(None);
        }
        let text = ArrayFormatter::try_new(array, &FormatOptions::default())?;
        Ok(Some(NullableEncoder::new(Box::new(DecimalText(text)), array.nulls().cloned())))
    }
}

struct DecimalText<'a>(ArrayFormatter<'a>);

impl Encoder for DecimalText<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        use std::io::Write;
        out.push(b'"');
        // Digits, a sign and a point: nothing to escape.
        let _ = write!(out, "{}", self.0.value(idx));
        out.push(b'"');
    }
}

/// Whether values of `t` are maps, lists or structs (JSON objects and arrays).
pub(crate) fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Map(..)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Struct(_)
    )
}

/// Each value of `array` as JSON text (NULL stays NULL).
fn to_json(field: &FieldRef, array: &ArrayRef) -> Result<ArrayRef> {
    let options = encoder_options(false);
    let mut encoder = make_encoder(field, array.as_ref(), &options)?;
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 32);
    let mut buf = Vec::with_capacity(256);
    for i in 0..array.len() {
        if encoder.is_null(i) {
            out.append_null();
            continue;
        }
        buf.clear();
        encoder.encode(i, &mut buf);
        // arrow-json writes valid UTF-8 (strings are escaped as JSON, binary as hex).
        out.append_value(String::from_utf8_lossy(&buf));
    }
    Ok(Arc::new(out.finish()))
}

/// Whether values of `t` hold a map anywhere.
fn holds_map(t: &DataType) -> bool {
    match t {
        DataType::Map(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => holds_map(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| holds_map(f.data_type())),
        DataType::Dictionary(_, v) => holds_map(v),
        _ => false,
    }
}

/// `plan` with every output column that holds a map replaced by its `to_json` (same name);
/// `plan` itself when it has none.
pub fn maps_as_json(plan: LogicalPlan) -> Result<LogicalPlan> {
    let schema: &DFSchema = plan.schema();
    if !schema.fields().iter().any(|f| holds_map(f.data_type())) {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = schema
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            if holds_map(field.data_type()) { udf().call(vec![column]).alias(field.name()) } else { column }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(exprs)?.build()
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, MapBuilder, StringBuilder as Strings};
    use datafusion::{arrow::array::RecordBatch, prelude::SessionContext};

    use super::*;

    #[tokio::test]
    async fn maps_become_json_objects_with_their_name_and_pg_type() {
        let mut maps = MapBuilder::new(None, Strings::new(), Strings::new());
        maps.keys().append_value("env");
        maps.values().append_value("prod \"eu\"");
        maps.keys().append_value("team");
        maps.values().append_null();
        maps.append(true).unwrap();
        maps.append(false).unwrap();
        maps.append(true).unwrap();
        let maps = Arc::new(maps.finish()) as ArrayRef;
        let ids = Arc::new(arrow::array::StringArray::from(vec!["a", "b", "c"])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("id", ids), ("tags", maps)]).unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch).unwrap();
        ctx.register_udf(udf());

        let plan = ctx.state().create_logical_plan("SELECT * FROM t").await.unwrap();
        let plan = maps_as_json(plan).unwrap();
        let df = ctx.execute_logical_plan(plan).await.unwrap();
        let field = df.schema().field(1).clone();
        assert_eq!(field.name(), "tags");
        assert_eq!(field.data_type(), &DataType::Utf8);
        assert_eq!(field.metadata().get(PG_TYPE).map(String::as_str), Some("json"));
        let batches = df.collect().await.unwrap();
        let tags = batches[0].column(1).as_string::<i32>();
        assert_eq!(tags.value(0), r#"{"env":"prod \"eu\"","team":null}"#);
        assert!(tags.is_null(1));
        assert_eq!(tags.value(2), "{}");
        assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "a");

        // Plans without maps are left alone; to_json works on any value.
        let plan = ctx.state().create_logical_plan("SELECT id FROM t").await.unwrap();
        assert_eq!(maps_as_json(plan.clone()).unwrap(), plan);
        let out = ctx
            .sql("SELECT to_json(id) AS j, to_json(1) AS n FROM t LIMIT 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(out[0].column(0).as_string::<i32>().value(0), "\"a\"");
        assert_eq!(out[0].column(1).as_string::<i32>().value(0), "1");
    }
}
