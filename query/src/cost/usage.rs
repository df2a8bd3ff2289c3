//! The `usage` table: hourly quantity per tenant and meter, rolled up from the telemetry one UTC
//! day at a time, so that cost and revenue queries never rescan raw telemetry. A day is
//! recomputed whole and replaces that day's rows in one Delta commit: rolling up a day again
//! (late data, a changed meter) is safe.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use tenantscope_schemas::{Lake, LakeError, Table};

use super::Meter;

/// Why a rollup failed.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    /// A meter names a table that is not telemetry.
    #[error("meter {meter:?}: table {table:?} is not one of spans, logs, metrics")]
    Table {
        /// The meter.
        meter: String,
        /// What it named.
        table: String,
    },
    /// The lake failed, or a meter's SQL does not plan (named in the message).
    #[error("usage rollup of {day}: {source}")]
    Lake {
        /// The day.
        day: NaiveDate,
        /// The cause.
        source: LakeError,
    },
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SELECT that computes one day's usage for every meter.
pub fn day_sql(meters: &[Meter], day: NaiveDate) -> Result<String, RollupError> {
    let mut parts = Vec::new();
    for m in meters {
        if !matches!(m.table.as_str(), "spans" | "logs" | "metrics") {
            return Err(RollupError::Table { meter: m.name.clone(), table: m.table.clone() });
        }
        parts.push(format!(
            "SELECT date_trunc('hour', time) AS hour, tenant_id, {name} AS meter, \
             CAST(sum({quantity}) AS DECIMAL(38, 10)) AS quantity, {unit} AS unit, date \
             FROM {table} WHERE date = DATE '{day}' AND ({filter}) \
             GROUP BY date_trunc('hour', time), tenant_id, date",
            name = sql_str(&m.name),
            quantity = m.quantity.as_deref().unwrap_or("1"),
            unit = m.unit.as_deref().map_or("CAST(NULL AS VARCHAR)".to_string(), sql_str),
            table = m.table,
            filter = m.filter.as_deref().unwrap_or("TRUE"),
        ));
    }
    Ok(parts.join(" UNION ALL "))
}

/// Recomputes `usage` for `days`. Returns the rows written.
pub async fn rollup(lake: &Lake, meters: &[Meter], days: &BTreeSet<NaiveDate>) -> Result<usize, RollupError> {
    let mut rows = 0;
    for &day in days {
        let sql = day_sql(meters, day)?;
        let batches = lake
            .query(&[Table::Spans, Table::Logs, Table::Metrics], &sql)
            .await
            .map_err(|source| RollupError::Lake { day, source })?;
        let predicate = format!("date = '{day}'");
        let n = if batches.iter().all(|b| b.num_rows() == 0) {
            // Nothing to count that day (any more): clear what an earlier rollup wrote.
            lake.delete(Table::Usage, &predicate)
                .await
                .map_err(|source| RollupError::Lake { day, source })?;
            0
        } else {
            let commit = lake
                .replace(Table::Usage, &batches, &predicate)
                .await
                .map_err(|source| RollupError::Lake { day, source })?;
            commit.map_or(0, |c| c.rows)
        };
        tracing::debug!(%day, rows = n, "Rolled up usage.");
        rows += n;
    }
    Ok(rows)
}

/// Days that have telemetry but no usage rows (a new lake, a lake written by another tool, or
/// usage lost): what a starting server rolls up before anything else.
pub async fn missing_days(lake: &Lake) -> Result<BTreeSet<NaiveDate>, LakeError> {
    let sql = "SELECT DISTINCT CAST(date AS VARCHAR) AS d FROM ( \
               SELECT DISTINCT date FROM spans UNION SELECT DISTINCT date FROM logs \
               UNION SELECT DISTINCT date FROM metrics) t \
               WHERE date NOT IN (SELECT DISTINCT date FROM usage)";
    let batches = lake.query(&[Table::Spans, Table::Logs, Table::Metrics, Table::Usage], sql).await;
    let batches = match batches {
        Ok(b) => b,
        // A lake without usage yet: every telemetry day is missing.
        Err(_) => {
            let sql = "SELECT DISTINCT CAST(date AS VARCHAR) AS d FROM ( \
                       SELECT DISTINCT date FROM spans UNION SELECT DISTINCT date FROM logs \
                       UNION SELECT DISTINCT date FROM metrics) t";
            lake.query(&[Table::Spans, Table::Logs, Table::Metrics], sql).await?
        }
    };
    let mut days = BTreeSet::new();
    for b in &batches {
        let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(|source| LakeError::Arrow { table: Table::Usage, source })?;
        for d in arrow::array::AsArray::as_string::<i32>(&col).iter().flatten() {
            if let Ok(day) = NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                days.insert(day);
            }
        }
    }
    Ok(days)
}
