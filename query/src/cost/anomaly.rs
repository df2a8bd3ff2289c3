//! Robust anomaly scoring for any series, as SQL functions:
//!
//! - `series_median(history)`: the median of a list of numbers (NULLs ignored);
//! - `anomaly_score(value, history)`: the modified z-score `(value - median) / (1.4826 * MAD)` of
//!   `value` against `history` (the median absolute deviation; when more than half of the
//!   history is one value, the mean absolute deviation scaled by 1.2533 instead). NULL when
//!   the history has fewer than `MIN_HISTORY` values or no spread at all.
//!
//! The history is a list, usually a trailing window:
//! `anomaly_score(v, array_agg(v) OVER (PARTITION BY tenant_id ORDER BY day ROWS BETWEEN 28
//! PRECEDING AND 1 PRECEDING))`; for weekday seasonality, partition by the weekday too.
//! Median and MAD are not moved by the outliers they are looking for, as mean and standard
//! deviation are.

use std::sync::Arc;

use arrow::{
    array::{Array, ArrayRef, AsArray, Float64Array},
    compute::cast,
    datatypes::DataType,
};
use datafusion::{
    error::Result,
    logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility},
};

/// Fewer values than this in the history: no score.
pub const MIN_HISTORY: usize = 5;
/// |score| above this is an anomaly (Iglewicz and Hoaglin's threshold for modified z-scores).
pub const THRESHOLD: f64 = 3.5;

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// The modified z-score of `value` against `history`.
pub fn score(value: f64, history: &[f64]) -> Option<f64> {
    if history.len() < MIN_HISTORY || !value.is_finite() {
        return None;
    }
    let mut h: Vec<f64> = history.iter().copied().filter(|v| v.is_finite()).collect();
    if h.len() < MIN_HISTORY {
        return None;
    }
    h.sort_by(f64::total_cmp);
    let m = median(&h);
    let mut dev: Vec<f64> = h.iter().map(|v| (v - m).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = median(&dev);
    let scale = if mad > 0.0 {
        1.4826 * mad
    } else {
        let mean_ad = dev.iter().sum::<f64>() / dev.len() as f64;
        1.2533 * mean_ad
    };
    if scale > 0.0 { Some((value - m) / scale) } else { None }
}

fn list_values(list: &ArrayRef, row: usize) -> Result<Vec<f64>> {
    let values = match list.data_type() {
        DataType::List(_) => list.as_list::<i32>().value(row),
        DataType::LargeList(_) => list.as_list::<i64>().value(row),
        other => {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "the history must be a list of numbers (e.g. array_agg(...) OVER (...)), not {other}"
            )));
        }
    };
    let values = cast(&values, &DataType::Float64)?;
    Ok(values.as_primitive::<arrow::datatypes::Float64Type>().iter().flatten().collect())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct AnomalyScore {
    signature: Signature,
}

impl ScalarUDFImpl for AnomalyScore {
    fn name(&self) -> &str {
        "anomaly_score"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [value, history] = arrays.as_slice() else {
            return Err(datafusion::error::DataFusionError::Plan(
                "anomaly_score(value, history) takes two arguments".into(),
            ));
        };
        let value = cast(value, &DataType::Float64)?;
        let value = value.as_primitive::<arrow::datatypes::Float64Type>();
        let mut out = Vec::with_capacity(value.len());
        for row in 0..value.len() {
            if value.is_null(row) || history.is_null(row) {
                out.push(None);
                continue;
            }
            out.push(score(value.value(row), &list_values(history, row)?));
        }
        Ok(ColumnarValue::Array(Arc::new(Float64Array::from(out))))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SeriesMedian {
    signature: Signature,
}

impl ScalarUDFImpl for SeriesMedian {
    fn name(&self) -> &str {
        "series_median"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [history] = arrays.as_slice() else {
            return Err(datafusion::error::DataFusionError::Plan(
                "series_median(history) takes one argument".into(),
            ));
        };
        let mut out = Vec::with_capacity(history.len());
        for row in 0..history.len() {
            if history.is_null(row) {
                out.push(None);
                continue;
            }
            let mut v = list_values(history, row)?;
            v.retain(|x| x.is_finite());
            v.sort_by(f64::total_cmp);
            out.push((!v.is_empty()).then(|| median(&v)));
        }
        Ok(ColumnarValue::Array(Arc::new(Float64Array::from(out))))
    }
}

/// The functions, to register on a session.
pub fn udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(AnomalyScore { signature: Signature::any(2, Volatility::Immutable) }),
        ScalarUDF::new_from_impl(SeriesMedian { signature: Signature::any(1, Volatility::Immutable) }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_robust_to_the_outliers_they_look_for() {
        let history = [100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 5000.0];
        // The one huge value in the history does not hide the next one.
        let s = score(400.0, &history).unwrap();
        assert!(s > 100.0, "{s}");
        assert!(score(101.0, &history).unwrap().abs() < 1.0);
        // Too little history, or no spread: no score.
        assert_eq!(score(5.0, &[1.0, 1.0, 1.0]), None);
        assert_eq!(score(5.0, &[1.0; 10]), None);
        // More than half equal: the mean absolute deviation still gives a scale.
        assert!(score(50.0, &[10.0, 10.0, 10.0, 10.0, 10.0, 12.0]).unwrap() > THRESHOLD);
    }
}
