//! `approx_top_k(column, k)`: the k most frequent values of a column and their counts, in
//! bounded memory whatever the column's cardinality (routes, resources, user ids), as
//! `list<struct<value: utf8, count: int64>>`, most frequent first:
//!
//! ```sql
//! SELECT tenant_id, approx_top_k(attributes['http.route'], 5) FROM spans GROUP BY tenant_id
//! ```
//!
//! A summary of `max(25 k, 500)` counters per group: each batch is counted exactly, then merged
//! into the summary, which keeps its most frequent values and forgets the rest. Counts are
//! lower bounds (a value forgotten while rare loses what it had counted), exact when the column
//! has no more distinct values than counters; a value that is frequent in most batches is never
//! forgotten. On a column of all-distinct values it still answers k of them (count 1). Partial
//! summaries of parallel partitions merge the same way. Values are compared as text. Written
//! by hand: no DataFusion crate offers a heavy-hitters aggregate.

use std::{collections::HashMap, sync::Arc};

use arrow::{
    array::{Array, ArrayRef, AsArray, Int64Array, ListArray, StringArray, StructArray},
    buffer::OffsetBuffer,
    compute::cast,
    datatypes::{DataType, Field, FieldRef, Fields},
};
use datafusion::{
    common::ScalarValue,
    error::{DataFusionError, Result},
    logical_expr::{
        Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
        function::{AccumulatorArgs, StateFieldsArgs},
    },
    physical_expr::expressions::Literal,
};

fn entry_fields() -> Fields {
    Fields::from(vec![Field::new("value", DataType::Utf8, true), Field::new("count", DataType::Int64, false)])
}

fn result_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(entry_fields()), true)))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ApproxTopK {
    signature: Signature,
}

impl AggregateUDFImpl for ApproxTopK {
    fn name(&self) -> &str {
        "approx_top_k"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(result_type())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let k = args
            .exprs
            .get(1)
            .and_then(|e| e.downcast_ref::<Literal>())
            .and_then(|l| match l.value().clone() {
                ScalarValue::Int64(Some(k)) => Some(k),
                ScalarValue::Int32(Some(k)) => Some(i64::from(k)),
                ScalarValue::UInt64(Some(k)) => i64::try_from(k).ok(),
                _ => None,
            })
            .filter(|k| (1..=10_000).contains(k))
            .ok_or_else(|| {
                DataFusionError::Plan(
                    "approx_top_k(column, k): k must be an integer literal from 1 to 10000".into(),
                )
            })? as usize;
        Ok(Box::new(TopK { k, counters: (k * 25).max(500), counts: HashMap::new() }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[values]", args.name),
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[counts]", args.name),
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct TopK {
    k: usize,
    counters: usize,
    counts: HashMap<String, i64>,
}

impl TopK {
    fn add(&mut self, value: &str, n: i64) {
        *self.counts.entry(value.to_string()).or_default() += n;
    }

    /// Keeps the `counters` most frequent values (ties by value, so the result is
    /// deterministic); the rest are forgotten.
    fn shrink(&mut self) {
        if self.counts.len() <= self.counters {
            return;
        }
        let mut all: Vec<(String, i64)> = self.counts.drain().collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(self.counters);
        self.counts.extend(all);
    }

    fn sorted(&self) -> Vec<(&String, i64)> {
        let mut v: Vec<(&String, i64)> = self.counts.iter().map(|(s, c)| (s, *c)).collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v
    }
}

impl Accumulator for TopK {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(col) = values.first() else { return Ok(()) };
        let text = cast(col, &DataType::Utf8)?;
        let mut batch: HashMap<&str, i64> = HashMap::new();
        for v in text.as_string::<i32>().iter().flatten() {
            *batch.entry(v).or_default() += 1;
        }
        for (v, n) in batch {
            self.add(v, n);
        }
        self.shrink();
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (Some(values), Some(counts)) = (states.first(), states.get(1)) else { return Ok(()) };
        let (values, counts) = (values.as_list::<i32>(), counts.as_list::<i32>());
        for row in 0..values.len() {
            if values.is_null(row) {
                continue;
            }
            let v = values.value(row);
            let c = counts.value(row);
            let (v, c) = (v.as_string::<i32>(), c.as_primitive::<arrow::datatypes::Int64Type>());
            for i in 0..v.len() {
                if !v.is_null(i) {
                    self.add(v.value(i), c.value(i));
                }
            }
        }
        self.shrink();
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let (values, counts): (Vec<&str>, Vec<i64>) =
            self.counts.iter().map(|(s, c)| (s.as_str(), *c)).unzip();
        Ok(vec![
            ScalarValue::List(Arc::new(ListArray::from_iter_primitive_or_strings(values))),
            ScalarValue::List(Arc::new(ListArray::from_iter_primitive::<arrow::datatypes::Int64Type, _, _>(
                [Some(counts.into_iter().map(Some).collect::<Vec<_>>())],
            ))),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let top: Vec<(&String, i64)> = self.sorted().into_iter().take(self.k).collect();
        let values = StringArray::from_iter_values(top.iter().map(|(s, _)| s.as_str()));
        let counts = Int64Array::from_iter_values(top.iter().map(|(_, c)| *c));
        let entries = StructArray::try_new(entry_fields(), vec![Arc::new(values), Arc::new(counts)], None)?;
        let list = ListArray::try_new(
            Arc::new(Field::new("item", DataType::Struct(entry_fields()), true)),
            OffsetBuffer::from_lengths([top.len()]),
            Arc::new(entries),
            None,
        )?;
        Ok(ScalarValue::List(Arc::new(list)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.counts.iter().map(|(s, _)| s.capacity() + 48).sum::<usize>()
    }
}

/// A one-row list of strings (the state's values), as `ListArray` has no direct constructor.
trait FromStrings {
    fn from_iter_primitive_or_strings(values: Vec<&str>) -> ListArray;
}

impl FromStrings for ListArray {
    fn from_iter_primitive_or_strings(values: Vec<&str>) -> ListArray {
        let n = values.len();
        ListArray::new(
            Arc::new(Field::new("item", DataType::Utf8, true)),
            OffsetBuffer::from_lengths([n]),
            Arc::new(StringArray::from(values)),
            None,
        )
    }
}

/// The aggregate, to register on a session.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(ApproxTopK { signature: Signature::any(2, Volatility::Immutable) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_heavy_hitters_of_a_long_tail_in_bounded_memory() {
        let mut acc = TopK { k: 3, counters: 50, counts: HashMap::new() };
        // Three heavy values and 10,000 values seen once, in batches.
        for chunk in 0..100 {
            let mut v: Vec<String> = (0..100).map(|i| format!("tail-{chunk}-{i}")).collect();
            v.extend(std::iter::repeat_n("a".to_string(), 50));
            v.extend(std::iter::repeat_n("b".to_string(), 30));
            v.extend(std::iter::repeat_n("c".to_string(), 20));
            let arr: ArrayRef = Arc::new(StringArray::from(v));
            acc.update_batch(&[arr]).unwrap();
            assert!(acc.counts.len() <= 50);
        }
        let top: Vec<(String, i64)> = acc.sorted().into_iter().take(3).map(|(s, c)| (s.clone(), c)).collect();
        assert_eq!(top.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        // Values frequent in every batch are never forgotten: their counts are exact.
        assert_eq!(top.iter().map(|(_, c)| *c).collect::<Vec<_>>(), [5000, 3000, 2000]);
        // All-distinct values: still k answers.
        let mut acc = TopK { k: 3, counters: 50, counts: HashMap::new() };
        let arr: ArrayRef = Arc::new(StringArray::from_iter_values((0..1000).map(|i| format!("v{i:04}"))));
        acc.update_batch(&[arr]).unwrap();
        assert_eq!(acc.sorted().len(), 50);
    }
}
