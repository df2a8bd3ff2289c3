//! Reading export files into rows of text fields, whatever the file's format: CSV (plain or
//! gzip, with or without a UTF-8 BOM) and Parquet (every column cast to text, so that a DOUBLE
//! cost and a DECIMAL cost go through the same exact decimal parser; a double prints as its
//! shortest round-trip form, `0.1`, not `0.1000000000000000055`).

use std::{io::Read, sync::Arc};

use arrow::{
    array::{Array, AsArray, RecordBatch},
    compute::cast,
    datatypes::DataType,
};
use bytes::Bytes;
use tenantscope_schemas::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::ImportError;

/// One row of an export.
pub(crate) trait Row {
    /// The text of column `col`; `None` when it is absent or null. Not trimmed.
    fn get(&self, col: usize) -> Option<&str>;
    /// 1-based line (CSV, counting the header as line 1) or row number (Parquet).
    fn line(&self) -> u64;
}

/// A file's content, decompressed, with what kind of file it is.
pub(crate) struct Loaded {
    pub(crate) name: String,
    pub(crate) bytes: Bytes,
    pub(crate) kind: FileKind,
}

/// How a file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Csv,
    Parquet,
    /// One JSON object per line (BigQuery's JSON export); nested records become dotted
    /// columns (`service.description`), arrays stay JSON text.
    JsonLines,
}

/// Reads `bytes` (named `name`), undoing gzip and telling CSV from Parquet by content.
pub(crate) fn load(name: &str, raw: Bytes) -> Result<Loaded, ImportError> {
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 8);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| ImportError::file(name, format!("cannot decompress gzip: {e}")))?;
        Bytes::from(out)
    } else {
        raw
    };
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    let kind = if bytes.starts_with(b"PAR1") {
        FileKind::Parquet
    } else if first == Some(b'{') {
        FileKind::JsonLines
    } else {
        FileKind::Csv
    };
    Ok(Loaded { name: name.to_string(), bytes, kind })
}

/// The header of a file (BOM removed, names trimmed).
pub(crate) fn headers(file: &Loaded) -> Result<Vec<String>, ImportError> {
    match file.kind {
        FileKind::Csv => {
            let mut reader = csv_reader(&file.bytes);
            let headers = reader
                .headers()
                .map_err(|e| ImportError::file(&file.name, format!("cannot read the CSV header: {e}")))?;
            Ok(headers.iter().map(|h| h.trim().to_string()).collect())
        }
        FileKind::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file.bytes.clone())
                .map_err(|e| ImportError::file(&file.name, format!("not a readable Parquet file: {e}")))?;
            let mut names = Vec::new();
            for f in builder.schema().fields() {
                flat_names(f.name(), f.data_type(), &mut names);
            }
            Ok(names)
        }
        FileKind::JsonLines => {
            let mut names: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (i, line) in json_lines(&file.bytes) {
                let value = parse_json_line(&file.name, i, line)?;
                let mut flat = Vec::new();
                flatten_json("", &value, &mut flat);
                for (k, _) in flat {
                    if seen.insert(k.clone()) {
                        names.push(k);
                    }
                }
            }
            Ok(names)
        }
    }
}

/// Column names of a Parquet field, structs expanded into dotted names.
fn flat_names(prefix: &str, data_type: &DataType, out: &mut Vec<String>) {
    match data_type {
        DataType::Struct(fields) => {
            for f in fields {
                flat_names(&format!("{prefix}.{}", f.name()), f.data_type(), out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn json_lines(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l))
        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
}

fn parse_json_line(name: &str, line: u64, bytes: &[u8]) -> Result<serde_json::Value, ImportError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ImportError::file(name, format!("line {line}: not a JSON object: {e}")))
}

/// Records become dotted paths; arrays and scalars are leaves (arrays as JSON text).
fn flatten_json(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, Option<String>)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_json(&key, v, out);
            }
        }
        serde_json::Value::Null => out.push((prefix.to_string(), None)),
        serde_json::Value::String(s) => out.push((prefix.to_string(), Some(s.clone()))),
        other => out.push((prefix.to_string(), Some(other.to_string()))),
    }
}

struct JsonRow {
    values: Vec<Option<String>>,
    line: u64,
}

impl Row for JsonRow {
    fn get(&self, col: usize) -> Option<&str> {
        self.values.get(col)?.as_deref()
    }
    fn line(&self) -> u64 {
        self.line
    }
}

fn csv_reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(bytes)
}

struct CsvRow<'a> {
    record: &'a csv::StringRecord,
    line: u64,
}

impl Row for CsvRow<'_> {
    fn get(&self, col: usize) -> Option<&str> {
        self.record.get(col)
    }
    fn line(&self) -> u64 {
        self.line
    }
}

struct ArrowRow<'a> {
    columns: &'a [Option<arrow::array::StringArray>],
    row: usize,
    offset: u64,
}

impl Row for ArrowRow<'_> {
    fn get(&self, col: usize) -> Option<&str> {
        let array = self.columns.get(col)?.as_ref()?;
        array.is_valid(self.row).then(|| array.value(self.row))
    }
    fn line(&self) -> u64 {
        self.offset + self.row as u64 + 1
    }
}

/// A part of a file that can be read on its own: a byte range of a CSV body starting at a
/// record boundary, or (Parquet, JSON lines) the whole file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    start: usize,
    end: usize,
    /// Line number of the chunk's first line.
    first_line: u64,
}

/// Splits a file into at most `n` chunks of about equal size that can be converted in
/// parallel. CSV is split only at newlines outside quoted fields (one quote-counting pass).
pub(crate) fn chunks(file: &Loaded, n: usize) -> Vec<Chunk> {
    chunks_of_at_least(file, n, 1 << 20)
}

fn chunks_of_at_least(file: &Loaded, n: usize, min_bytes: usize) -> Vec<Chunk> {
    let whole = vec![Chunk { start: 0, end: file.bytes.len(), first_line: 0 }];
    if file.kind != FileKind::Csv || n <= 1 {
        return whole;
    }
    let bytes = &file.bytes[..];
    let bom = if bytes.starts_with(b"\xef\xbb\xbf") { 3 } else { 0 };
    // The header ends at the first newline outside quotes.
    let mut in_quotes = false;
    let mut header_end = None;
    for (i, b) in bytes.iter().enumerate().skip(bom) {
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' if !in_quotes => {
                header_end = Some(i + 1);
                break;
            }
            _ => {}
        }
    }
    let Some(body_start) = header_end else { return whole };
    let target = (bytes.len() - body_start) / n;
    if target < min_bytes.max(1) {
        return whole;
    }
    // Jump a chunk's length ahead, keeping the quote parity and the line count by counting
    // quotes and newlines in the skipped bytes (loops the compiler vectorizes), then walk to the
    // next newline outside quotes. A byte-at-a-time state machine over the whole file was a
    // tenth of a million-line import.
    let count = |s: &[u8], c: u8| s.iter().filter(|&&b| b == c).count();
    let mut out = Vec::with_capacity(n);
    let (mut start, mut start_line) = (body_start, 2_u64);
    let (mut pos, mut line) = (body_start, 2_u64);
    in_quotes = false;
    while out.len() + 1 < n {
        let candidate = start + target;
        if candidate >= bytes.len() {
            break;
        }
        if candidate > pos {
            in_quotes ^= count(&bytes[pos..candidate], b'"') % 2 == 1;
            line += count(&bytes[pos..candidate], b'\n') as u64;
            pos = candidate;
        }
        let mut split = None;
        while let Some(i) = bytes[pos..].iter().position(|&b| b == b'"' || b == b'\n') {
            let at = pos + i;
            pos = at + 1;
            if bytes[at] == b'"' {
                in_quotes = !in_quotes;
            } else {
                line += 1;
                if !in_quotes {
                    split = Some(pos);
                    break;
                }
            }
        }
        let Some(end) = split.filter(|&e| e < bytes.len()) else { break };
        out.push(Chunk { start, end, first_line: start_line });
        start = end;
        start_line = line;
    }
    out.push(Chunk { start, end: bytes.len(), first_line: start_line });
    out
}

/// Calls `f` on every row of a chunk of the file (see [`chunks`]), in order.
pub(crate) fn for_each_row(
    file: &Loaded,
    chunk: Chunk,
    mut f: impl FnMut(&dyn Row) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    match file.kind {
        FileKind::Csv => {
            let mut reader = if chunk.first_line == 0 {
                csv_reader(&file.bytes)
            } else {
                csv::ReaderBuilder::new()
                    .flexible(true)
                    .has_headers(false)
                    .from_reader(&file.bytes[chunk.start..chunk.end])
            };
            // A chunk's reader counts lines from 1; shift to the file's numbering.
            let shift = chunk.first_line.saturating_sub(1);
            let mut record = csv::StringRecord::new();
            loop {
                match reader.read_record(&mut record) {
                    Ok(true) => {
                        let line = record.position().map_or(0, csv::Position::line) + shift;
                        // A blank trailing line reads as one empty field.
                        if record.len() == 1 && record.get(0).is_some_and(str::is_empty) {
                            continue;
                        }
                        f(&CsvRow { record: &record, line })?;
                    }
                    Ok(false) => return Ok(()),
                    Err(e) => {
                        let line = e.position().map_or(0, csv::Position::line) + shift;
                        return Err(ImportError::file(
                            &file.name,
                            format!("line {line}: malformed CSV: {e}"),
                        ));
                    }
                }
            }
        }
        FileKind::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file.bytes.clone())
                .and_then(|b| b.with_batch_size(8192).build())
                .map_err(|e| ImportError::file(&file.name, format!("not a readable Parquet file: {e}")))?;
            let mut offset = 0_u64;
            for batch in reader {
                let batch =
                    batch.map_err(|e| ImportError::file(&file.name, format!("cannot read Parquet: {e}")))?;
                let columns = text_columns(&batch);
                for row in 0..batch.num_rows() {
                    f(&ArrowRow { columns: &columns, row, offset })?;
                }
                offset += batch.num_rows() as u64;
            }
            Ok(())
        }
        FileKind::JsonLines => {
            let headers = headers(file)?;
            let index: std::collections::HashMap<&str, usize> =
                headers.iter().enumerate().map(|(i, h)| (h.as_str(), i)).collect();
            for (line, bytes) in json_lines(&file.bytes) {
                let value = parse_json_line(&file.name, line, bytes)?;
                let mut flat = Vec::new();
                flatten_json("", &value, &mut flat);
                let mut values = vec![None; headers.len()];
                for (k, v) in flat {
                    if let Some(i) = index.get(k.as_str()) {
                        values[*i] = v;
                    }
                }
                f(&JsonRow { values, line })?;
            }
            Ok(())
        }
    }
}

/// Every column as text, structs expanded into their fields (as [`flat_names`] names them);
/// maps and lists as JSON text.
fn text_columns(batch: &RecordBatch) -> Vec<Option<arrow::array::StringArray>> {
    let mut out = Vec::new();
    for col in batch.columns() {
        push_text(col, &mut out);
    }
    out
}

fn push_text(col: &Arc<dyn Array>, out: &mut Vec<Option<arrow::array::StringArray>>) {
    match col.data_type() {
        DataType::Struct(_) => {
            let s = col.as_struct();
            for child in s.columns() {
                // A null struct makes its fields null.
                let child = match s.nulls() {
                    Some(n) => {
                        arrow::compute::nullif(child, &arrow::array::BooleanArray::new(!n.inner(), None))
                            .unwrap_or_else(|_| Arc::clone(child))
                    }
                    None => Arc::clone(child),
                };
                push_text(&child, out);
            }
        }
        DataType::Map(..) | DataType::List(_) | DataType::LargeList(_) => out.push(Some(json_text(col))),
        _ => out.push(cast(col, &DataType::Utf8).ok().map(|a| a.as_string::<i32>().clone())),
    }
}

/// Nested values as JSON: a map becomes an object, so tag columns parse like CSV tags.
fn json_text(col: &Arc<dyn Array>) -> arrow::array::StringArray {
    (0..col.len())
        .map(|i| {
            if col.is_null(i) {
                return None;
            }
            Some(nested_json(col.as_ref(), i).to_string())
        })
        .collect()
}

fn nested_json(col: &dyn Array, i: usize) -> serde_json::Value {
    use serde_json::Value;
    if col.is_null(i) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Map(..) => {
            let map = col.as_map();
            let entries = map.value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut obj = serde_json::Map::new();
            for j in 0..entries.len() {
                let key = match nested_json(keys.as_ref(), j) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(key, nested_json(values.as_ref(), j));
            }
            Value::Object(obj)
        }
        DataType::List(_) => {
            let list = col.as_list::<i32>().value(i);
            Value::Array((0..list.len()).map(|j| nested_json(list.as_ref(), j)).collect())
        }
        DataType::Struct(fields) => {
            let s = col.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), nested_json(c.as_ref(), i)))
                    .collect(),
            )
        }
        _ => match cast(&col.slice(i, 1), &DataType::Utf8) {
            Ok(a) => {
                let text = a.as_string::<i32>().value(0).to_string();
                if col.data_type().is_numeric() {
                    text.parse::<serde_json::Number>().map(Value::Number).unwrap_or(Value::String(text))
                } else {
                    Value::String(text)
                }
            }
            Err(_) => Value::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(file: &Loaded, parts: &[Chunk]) -> Vec<(u64, Vec<String>)> {
        let mut out = Vec::new();
        for c in parts {
            for_each_row(file, *c, |row| {
                out.push((row.line(), (0..3).map(|i| row.get(i).unwrap_or("-").to_string()).collect()));
                Ok(())
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn chunks_split_at_record_boundaries_and_keep_line_numbers() {
        let mut text = String::from("\u{feff}a,b,c\n");
        for i in 0..200 {
            if i % 7 == 0 {
                text.push_str(&format!("{i},\"multi\nline, \"\"quoted\"\"\",x\n"));
            } else {
                text.push_str(&format!("{i},plain,y\n"));
            }
        }
        let file = load("t.csv", Bytes::from(text)).unwrap();
        let one = rows(&file, &[Chunk { start: 0, end: file.bytes.len(), first_line: 0 }]);
        assert_eq!(one.len(), 200);
        for n in [2, 3, 8] {
            let parts = chunks_of_at_least(&file, n, 1);
            assert_eq!(parts.len(), n);
            assert_eq!(rows(&file, &parts), one, "{n} chunks");
        }
        // Line numbers count the newlines inside quoted fields, as the CSV reader does.
        assert_eq!(one[1].0, 4);
    }
}
