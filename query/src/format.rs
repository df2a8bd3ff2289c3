//! Printing query results as a table, CSV or JSON.

use std::io::Write;

use datafusion::arrow::{
    array::{Array, RecordBatch},
    json::{WriterBuilder, writer::JsonArray},
    util::{
        display::{ArrayFormatter, FormatOptions},
        pretty::pretty_format_batches_with_schema,
    },
};

use crate::{
    engine::QueryResult,
    error::{QueryError, Result},
};

/// How to print a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table, for people.
    #[default]
    Table,
    /// RFC 4180 CSV with a header line; nested values as their text form.
    Csv,
    /// A JSON array of objects, one per row.
    Json,
}

/// Writes `result` to `out` in `format`.
pub fn write_result(result: &QueryResult, format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    let io = |e: std::io::Error| QueryError::Output(e.to_string());
    match format {
        OutputFormat::Table => {
            let table = pretty_format_batches_with_schema(result.schema.clone(), &result.batches)
                .map_err(|e| QueryError::Output(e.to_string()))?;
            writeln!(out, "{table}").map_err(io)?;
        }
        OutputFormat::Csv => {
            let header: Vec<String> = result.schema.fields().iter().map(|f| csv_field(f.name())).collect();
            writeln!(out, "{}", header.join(",")).map_err(io)?;
            let options = FormatOptions::default().with_null("");
            for batch in &result.batches {
                let formatters = formatters(batch, &options)?;
                for row in 0..batch.num_rows() {
                    let line: Vec<String> = formatters
                        .iter()
                        .zip(batch.columns())
                        .map(|(f, c)| {
                            if c.is_null(row) { String::new() } else { csv_field(&f.value(row).to_string()) }
                        })
                        .collect();
                    writeln!(out, "{}", line.join(",")).map_err(io)?;
                }
            }
        }
        OutputFormat::Json => {
            let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(&mut *out);
            let batches: Vec<_> = result.batches.iter().collect();
            writer.write_batches(&batches).map_err(|e| QueryError::Output(e.to_string()))?;
            writer.finish().map_err(|e| QueryError::Output(e.to_string()))?;
            if result.num_rows() == 0 {
                write!(out, "[]").map_err(io)?;
            }
            writeln!(out).map_err(io)?;
        }
    }
    Ok(())
}

/// One text formatter per column of `batch`.
pub(crate) fn formatters<'a>(
    batch: &'a RecordBatch,
    options: &'a FormatOptions<'a>,
) -> Result<Vec<ArrayFormatter<'a>>> {
    batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueryError::Output(e.to_string()))
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
