//! An optimizer rule for the lake's timestamps, which are all `Timestamp(µs, "UTC")`.
//!
//! arrow casts a time-zone-aware timestamp to a date through the time zone, value by value;
//! for UTC the answer is a plain integer division. The rule rewrites `CAST(ts AS DATE)` on a
//! UTC column of microseconds or nanoseconds (the lake's are microseconds) into `utc_date(ts)`,
//! that division (arrow's zone-less cast still builds a chrono date per value: a tenth of the
//! CPU of grouping 20 million spans by day). In filters it writes
//! `CAST(CAST(ts AS zone-less) AS DATE)` instead, a cast the pruning of files and row groups
//! sees through. The same instants, the same dates; names are kept, so plans' schemas do not
//! change.

use std::sync::{Arc, LazyLock};

use datafusion::{
    arrow::{
        array::{Array, AsArray, Date32Array},
        compute::cast,
        datatypes::{DataType, Int64Type, TimeUnit},
    },
    common::{
        DFSchema, Result, ScalarValue, exec_err,
        tree_node::{Transformed, TreeNode},
    },
    logical_expr::{
        Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
        Signature, Volatility, expr_rewriter::NamePreserver, sort_properties::ExprProperties,
        sort_properties::SortProperties, utils::merge_schema,
    },
    optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule},
};

/// See the module.
#[derive(Debug, Default)]
pub(crate) struct UtcDateCasts;

impl OptimizerRule for UtcDateCasts {
    fn name(&self) -> &str {
        "tenantscope_utc_date_casts"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        if plan.inputs().is_empty() {
            return Ok(Transformed::no(plan));
        }
        let schema = merge_schema(&plan.inputs());
        let names = NamePreserver::new(&plan);
        let prunable = matches!(plan, LogicalPlan::Filter(_));
        plan.map_expressions(|e| {
            let saved = names.save(&e);
            let t = e.transform_up(|e| rewrite(e, &schema, prunable))?;
            Ok(if t.transformed { t.update_data(|e| saved.restore(e)) } else { t })
        })
    }
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "+00:00" | "Z" | "Etc/UTC")
}

fn rewrite(e: Expr, schema: &DFSchema, prunable: bool) -> Result<Transformed<Expr>> {
    let Expr::Cast(Cast { expr, field }) = &e else { return Ok(Transformed::no(e)) };
    if field.data_type() != &DataType::Date32 {
        return Ok(Transformed::no(e));
    }
    match expr.get_type(schema) {
        Ok(DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, Some(tz)))
            if is_utc(&tz) && !prunable =>
        {
            Ok(Transformed::yes(UTC_DATE.call(vec![expr.as_ref().clone()])))
        }
        Ok(DataType::Timestamp(unit, Some(tz))) if is_utc(&tz) => {
            let naive = Expr::Cast(Cast::new(expr.clone(), DataType::Timestamp(unit, None)));
            Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(Box::new(naive), field.clone()))))
        }
        _ => Ok(Transformed::no(e)),
    }
}

static UTC_DATE: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    Arc::new(ScalarUDF::new_from_impl(UtcDate { signature: Signature::any(1, Volatility::Immutable) }))
});

/// `utc_date(ts)`: the UTC date of a timestamp of microseconds or nanoseconds, by floor division
/// (what `CAST(ts AS DATE)` answers for UTC). Never out of range: an i64 of microseconds is
/// within ±300,000 years.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDate {
    signature: Signature,
}

impl ScalarUDFImpl for UtcDate {
    fn name(&self) -> &str {
        "utc_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        Ok(inputs.first().map_or(SortProperties::Unordered, |i| i.sort_properties))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else { return exec_err!("utc_date takes one timestamp") };
        let per_day: i64 = match arg.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => 86_400_000_000,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => 86_400_000_000_000,
            other => return exec_err!("utc_date takes a timestamp of micro- or nanoseconds, not {other}"),
        };
        let dates = |array: &dyn Array| -> Result<Date32Array> {
            let ticks = cast(array, &DataType::Int64)?;
            Ok(ticks.as_primitive::<Int64Type>().unary(|t| t.div_euclid(per_day) as i32))
        };
        Ok(match arg {
            ColumnarValue::Array(array) => ColumnarValue::Array(Arc::new(dates(array.as_ref())?)),
            ColumnarValue::Scalar(value) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&dates(value.to_array()?.as_ref())?, 0)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::{
        arrow::{
            array::{RecordBatch, TimestampMicrosecondArray},
            datatypes::{Field, Schema, TimeUnit},
        },
        execution::SessionStateBuilder,
        prelude::SessionContext,
    };

    use super::*;

    #[tokio::test]
    async fn dates_of_utc_timestamps_are_the_same_and_the_names_too() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        )]));
        // Around midnight, the epoch, before the epoch, and NULL.
        let values = vec![
            Some(1_764_201_599_999_999),
            Some(1_764_201_600_000_000),
            Some(0),
            Some(-1),
            Some(-86_400_000_001),
            None,
        ];
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))],
        )
        .unwrap();
        let plain = SessionContext::new();
        let state = SessionStateBuilder::new_from_existing(SessionContext::new().state())
            .with_optimizer_rule(Arc::new(UtcDateCasts))
            .build();
        let ruled = SessionContext::new_with_state(state);
        let sql = "SELECT CAST(time AS DATE), count(*) FROM t GROUP BY 1 ORDER BY 1";
        let filtered = "SELECT count(*) FROM t WHERE CAST(time AS DATE) = DATE '1969-12-31'";
        let mut out = Vec::new();
        for ctx in [&plain, &ruled] {
            ctx.register_batch("t", batch.clone()).unwrap();
            let df = ctx.sql(sql).await.unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
                .unwrap()
                .to_string();
            out.push(text);
        }
        assert_eq!(out[0], out[1]);
        assert!(out[0].contains("1969-12-30") && out[0].contains("2025-11-27"), "{}", out[0]);
        let explain = |ctx: &SessionContext, sql: String| {
            let ctx = ctx.clone();
            async move {
                let plan = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap().collect().await.unwrap();
                datafusion::arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string()
            }
        };
        // Grouped by the division; filtered through the zone-less cast, with the same count.
        let text = explain(&ruled, sql.to_string()).await;
        assert!(text.contains("utc_date(t.time)"), "{text}");
        let text = explain(&ruled, filtered.to_string()).await;
        assert!(text.contains("Timestamp(µs)") && !text.contains("utc_date"), "{text}");
        let mut counts = Vec::new();
        for ctx in [&plain, &ruled] {
            let batches = ctx.sql(filtered).await.unwrap().collect().await.unwrap();
            counts
                .push(datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string());
        }
        assert_eq!(counts[0], counts[1]);
        assert!(counts[0].contains("| 1 "), "{}", counts[0]); // -1 µs is 1969-12-31, 0 is not
    }
}
