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

impl Chunk {
    /// The whole file.
    pub(crate) fn whole(file: &Loaded) -> Chunk {
        Chunk { start: 0, end: file.bytes.len(), first_line: 0 }
    }
}

/// Splits a file into at most `n` chunks of about equal size that can be converted in
/// parallel. CSV is split only at newlines outside quoted fields (one quote-counting pass).
pub(crate) fn chunks(file: &Loaded, n: usize) -> Vec<Chunk> {
    chunks_of_at_least(file, n, 1 << 20)
}

fn chunks_of_at_least(file: &Loaded, n: usize, min_bytes: usize) -> Vec<Chunk> {
    let whole = vec![Chunk::whole(file)];
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
            let (quotes, newlines) = quotes_and_newlines(&bytes[pos..candidate]);
            in_quotes ^= quotes % 2 == 1;
            line += newlines as u64;
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

/// The quotes and newlines in `s`, counted in one pass of byte-wide counters (255 bytes at a
/// time, so that they cannot overflow), which the compiler turns into vector compares and adds.
fn quotes_and_newlines(s: &[u8]) -> (usize, usize) {
    let (mut quotes, mut newlines) = (0, 0);
    for part in s.chunks(255) {
        let (mut q, mut n) = (0_u8, 0_u8);
        for &b in part {
            q += u8::from(b == b'"');
            n += u8::from(b == b'\n');
        }
        quotes += usize::from(q);
        newlines += usize::from(n);
    }
    (quotes, newlines)
}

/// Calls `f` on every row of a chunk of the file (see [`chunks`]), in order.
pub(crate) fn for_each_row(
    file: &Loaded,
    chunk: Chunk,
    mut f: impl FnMut(&dyn Row) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    match file.kind {
        FileKind::Csv => {
            let (mut reader, base, mut lines) = chunk_reader(file, chunk);
            let shift = chunk.first_line.saturating_sub(1);
            let mut record = csv::StringRecord::new();
            loop {
                match reader.read_record(&mut record) {
                    Ok(true) => {
                        let Some(position) = record.position() else { continue };
                        let line = lines.at(base + position.byte() as usize);
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

/// Calls `f` on every record of a chunk of a CSV file with the byte offset in the file where the
/// record starts (for [`Block::push_csv`]) and the fields `wanted` names by index (all
/// when `None`; the others read as absent): the first pass of an import needs a few columns for
/// each line's sort key and where each record ends, so the other fields are skipped, not
/// unescaped and copied (`csv_core` reading every field was most of that pass). The grammar is
/// the one `csv_core` parses (see [`scan_record`]). Fields are not checked for UTF-8 here: a
/// field that is not reads as absent; reading the record again checks it.
///
/// Returns `false` when the chunk did not end where a record ends: [`chunks`] counts quotes to
/// split outside quoted fields, and a quote inside an unquoted field (`5" screen`) fools that
/// count; the chunk then ends inside a record (which this exact reading sees) and the caller
/// reads the file again as one chunk.
pub(crate) fn for_each_csv_record(
    file: &Loaded,
    chunk: Chunk,
    wanted: Option<&[usize]>,
    mut f: impl FnMut(usize, &dyn Row) -> Result<(), ImportError>,
) -> Result<bool, ImportError> {
    let last_chunk = chunk.end >= file.bytes.len();
    let bytes = &file.bytes[..chunk.end];
    let mut mask = vec![false; wanted.map_or(0, |w| w.iter().max().map_or(0, |m| m + 1))];
    for &i in wanted.unwrap_or_default() {
        mask[i] = true;
    }
    let want = |i: usize| wanted.is_none() || mask.get(i).copied().unwrap_or(false);
    let mut pos = chunk.start;
    let mut lines = Lines { bytes: &file.bytes, pos, line: chunk.first_line.max(1) };
    let (mut out, mut spans) = (Vec::with_capacity(1024), Vec::new());
    if chunk.first_line == 0 {
        pos += if file.bytes.starts_with(b"\xef\xbb\xbf") { 3 } else { 0 };
        lines.pos = pos;
        // The header.
        pos = skip_blank(bytes, pos);
        out.clear();
        pos = scan_record(bytes, pos, |_| false, &mut out, &mut spans).next;
    }
    loop {
        pos = skip_blank(bytes, pos);
        if pos >= bytes.len() {
            return Ok(true);
        }
        let start = pos;
        out.clear();
        let record = scan_record(bytes, pos, want, &mut out, &mut spans);
        pos = record.next;
        if !record.terminated && !last_chunk {
            return Ok(false);
        }
        // A record of one empty field (`""`) is skipped, as the CSV reader does.
        if record.fields == 1 && matches!(&bytes[start..record.end], b"" | b"\"\"") {
            continue;
        }
        f(start, &SpanRow { bytes: &out, spans: &spans, line: lines.at(start) })?;
    }
}

/// Skips blank lines (`csv_core` does too).
fn skip_blank(bytes: &[u8], mut pos: usize) -> usize {
    while matches!(bytes.get(pos), Some(b'\r' | b'\n')) {
        pos += 1;
    }
    pos
}

/// Where [`scan_record`] left a record.
struct Scanned {
    /// The end of its last field.
    end: usize,
    /// The start of what follows its terminator.
    next: usize,
    /// It ended with a terminator, not with the input.
    terminated: bool,
    /// Its number of fields.
    fields: usize,
}

/// Reads one CSV record from `pos`, appending the fields `want` asks for, unescaped, to `out`
/// (their ranges in `out` in `spans`, by field index) and skipping the others with `memchr`. The grammar
/// of `csv_core` with the csv crate's defaults: a field is quoted when it starts with `"`, runs
/// to a `"` not followed by another (`""` is a quote; newlines and commas are data), and any
/// text after the closing quote up to the delimiter is appended; in an unquoted field quotes are
/// literal; `,` ends a field, `\r` or `\n` the record.
fn scan_record(
    bytes: &[u8],
    mut pos: usize,
    want: impl Fn(usize) -> bool,
    out: &mut Vec<u8>,
    spans: &mut Vec<Option<(usize, usize)>>,
) -> Scanned {
    spans.clear();
    let mut field = 0;
    loop {
        let wanted = want(field);
        let start = out.len();
        if bytes.get(pos) == Some(&b'"') {
            pos += 1;
            loop {
                let Some(i) = quote_at(&bytes[pos..]) else {
                    // The input ends inside the quotes: the rest is the field.
                    if wanted {
                        out.extend_from_slice(&bytes[pos..]);
                    }
                    pos = bytes.len();
                    break;
                };
                if wanted {
                    out.extend_from_slice(&bytes[pos..pos + i]);
                }
                pos += i + 1;
                if bytes.get(pos) != Some(&b'"') {
                    break;
                }
                if wanted {
                    out.push(b'"');
                }
                pos += 1;
            }
        }
        // A quoted field usually ends at its closing quote.
        let (end, stop) = match bytes.get(pos) {
            Some(&b @ (b',' | b'\n' | b'\r')) => (pos, Some(b)),
            _ => match field_end(&bytes[pos..]) {
                Some(i) => (pos + i, Some(bytes[pos + i])),
                None => (bytes.len(), None),
            },
        };
        if wanted {
            if end > pos {
                out.extend_from_slice(&bytes[pos..end]);
            }
            if spans.len() < field {
                spans.resize(field, None);
            }
            spans.push(Some((start, out.len())));
        }
        field += 1;
        match stop {
            Some(b',') => pos = end + 1,
            Some(_) => return Scanned { end, next: end + 1, terminated: true, fields: field },
            None => return Scanned { end, next: end, terminated: false, fields: field },
        }
    }
}

/// Where the rest of a field ends in `rest`: the first `,`, `\n` or `\r`.
fn field_end(rest: &[u8]) -> Option<usize> {
    find_short(
        rest,
        |w| zero_bytes(w ^ splat(b',')) | zero_bytes(w ^ splat(b'\n')) | zero_bytes(w ^ splat(b'\r')),
        |s| memchr::memchr3(b',', b'\n', b'\r', s),
    )
}

/// Where the next quote is in `rest`.
fn quote_at(rest: &[u8]) -> Option<usize> {
    find_short(rest, |w| zero_bytes(w ^ splat(b'"')), |s| memchr::memchr(b'"', s))
}

/// The first byte of `rest` that `marks` marks, eight bytes at a time: `marks` sets the high bit
/// of each byte of a little-endian word that it picks, and may set bits above the first (see
/// [`zero_bytes`]), so the lowest set bit is the answer. Most fields are short (and the rest of
/// a quoted field after its closing quote is usually empty): a word at a time costs less than
/// setting up a vectorized search (`long`), which takes over past the first 64 bytes.
fn find_short(
    rest: &[u8],
    marks: impl Fn(u64) -> u64,
    long: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    const SHORT: usize = 64;
    let mut at = 0;
    while let Some(word) = rest.get(at..at + 8) {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or_default());
        let found = marks(word);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
        if at >= SHORT {
            return long(&rest[at..]).map(|i| i + at);
        }
    }
    // The last bytes, fewer than eight: padded with bytes no caller looks for.
    let mut last = [0xff_u8; 8];
    last[..rest.len() - at].copy_from_slice(&rest[at..]);
    let found = marks(u64::from_le_bytes(last));
    (found != 0).then(|| at + (found.trailing_zeros() / 8) as usize)
}

/// `b` in every byte of a word.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The high bit of each zero byte of `w` set, and possibly of bytes above a zero byte (a borrow
/// runs up), never below the first: the lowest set bit is the first zero byte, exactly.
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(splat(1)) & !w & splat(0x80)
}

/// The fields of a record [`scan_record`] copied.
struct SpanRow<'a> {
    bytes: &'a [u8],
    spans: &'a [Option<(usize, usize)>],
    line: u64,
}

impl Row for SpanRow<'_> {
    fn get(&self, col: usize) -> Option<&str> {
        let (start, end) = (*self.spans.get(col)?)?;
        std::str::from_utf8(&self.bytes[start..end]).ok()
    }
    fn line(&self) -> u64 {
        self.line
    }
}

/// A CSV reader over a chunk (the first with the header), the file offset its positions count
/// from, and the line numbers of its records.
fn chunk_reader(file: &Loaded, chunk: Chunk) -> (csv::Reader<&[u8]>, usize, Lines<'_>) {
    if chunk.first_line == 0 {
        let bom = if file.bytes.starts_with(b"\xef\xbb\xbf") { 3 } else { 0 };
        (csv_reader(&file.bytes), bom, Lines { bytes: &file.bytes, pos: bom, line: 1 })
    } else {
        let reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(&file.bytes[chunk.start..chunk.end]);
        (reader, chunk.start, Lines { bytes: &file.bytes, pos: chunk.start, line: chunk.first_line })
    }
}

/// Line numbers of records, counted in the file's bytes: the CSV reader's own count leaves out
/// blank lines, and a chunk's reader starts its count again.
struct Lines<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: u64,
}

impl Lines<'_> {
    /// The line of the record the reader started at `offset` (after any blank lines there).
    fn at(&mut self, offset: usize) -> u64 {
        let start = offset
            + self
                .bytes
                .get(offset..)
                .unwrap_or_default()
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
        if start > self.pos {
            self.line += memchr::memchr_iter(b'\n', &self.bytes[self.pos..start]).count() as u64;
            self.pos = start;
        }
        self.line
    }
}

/// Records read as text into one buffer, a few thousand at a time, for a converter that reads
/// them a column at a time (each column's parser and builder stay hot, and the per-value
/// dispatch on where the value comes from is made once per column, not per row). Records are
/// appended as bytes; [`Block::seal`] checks the whole block is UTF-8 once and makes it text.
pub(crate) struct Block {
    /// The records' fields while the block fills.
    raw: Vec<u8>,
    /// The same, sealed.
    text: String,
    sealed: bool,
    /// `width` entries a record: each field's range in the buffer, `None` when absent.
    spans: Vec<Option<(u32, u32)>>,
    /// Where each record's fields start in the buffer.
    starts: Vec<u32>,
    lines: Vec<u64>,
    width: usize,
    scratch_spans: Vec<Option<(usize, usize)>>,
}

impl Block {
    /// Records a block holds before it is converted.
    const ROWS: usize = 2048;

    /// An empty block of records of `width` fields (the header's; fields past it are not read).
    pub(crate) fn new(width: usize) -> Self {
        Self {
            raw: Vec::with_capacity(Self::ROWS * 1024),
            text: String::new(),
            sealed: false,
            spans: Vec::with_capacity(Self::ROWS * width),
            starts: Vec::with_capacity(Self::ROWS),
            lines: Vec::with_capacity(Self::ROWS),
            width,
            scratch_spans: Vec::with_capacity(width + 1),
        }
    }

    /// Empties the block for the next records (keeping its buffers).
    pub(crate) fn clear(&mut self) {
        if self.sealed {
            self.raw = std::mem::take(&mut self.text).into_bytes();
            self.sealed = false;
        }
        self.raw.clear();
        self.spans.clear();
        self.starts.clear();
        self.lines.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether it is time to convert what the block holds (its offsets are 32-bit).
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= Self::ROWS || self.raw.len() >= (u32::MAX / 2) as usize
    }

    /// The text of field `col` of record `row` (untrimmed) of a sealed block, `None` when absent.
    pub(crate) fn get(&self, row: usize, col: usize) -> Option<&str> {
        debug_assert!(self.sealed, "a block is read once sealed");
        if col >= self.width {
            return None;
        }
        let (start, end) = self.spans[row * self.width + col]?;
        self.text.get(start as usize..end as usize)
    }

    pub(crate) fn line(&self, row: usize) -> u64 {
        self.lines[row]
    }

    /// Record `row` as a [`Row`].
    pub(crate) fn row(&self, row: usize) -> BlockRow<'_> {
        BlockRow { block: self, row }
    }

    /// Appends a row of any source, its fields copied.
    pub(crate) fn push_row(&mut self, row: &dyn Row) {
        debug_assert!(!self.sealed, "a sealed block is cleared before it is filled again");
        self.starts.push(self.raw.len() as u32);
        for col in 0..self.width {
            let span = row.get(col).map(|v| {
                let start = self.raw.len() as u32;
                self.raw.extend_from_slice(v.as_bytes());
                (start, self.raw.len() as u32)
            });
            self.spans.push(span);
        }
        self.lines.push(row.line());
    }

    /// Appends the CSV record starting at byte `offset` of `file` (on `line`), read with the
    /// grammar of the file-order reader ([`scan_record`]).
    pub(crate) fn push_csv(&mut self, file: &Loaded, offset: usize, line: u64) {
        debug_assert!(!self.sealed, "a sealed block is cleared before it is filled again");
        let bytes = &file.bytes[..];
        self.starts.push(self.raw.len() as u32);
        scan_record(bytes, offset.min(bytes.len()), |_| true, &mut self.raw, &mut self.scratch_spans);
        let read = &self.scratch_spans[..self.scratch_spans.len().min(self.width)];
        self.spans.extend(read.iter().map(|s| s.map(|(s, e)| (s as u32, e as u32))));
        self.spans.resize(self.lines.len() * self.width + self.width, None);
        self.lines.push(line);
    }

    /// Makes the block readable: its bytes checked for UTF-8 once. A record that is not UTF-8
    /// is taken out, and returned with its line and its text (invalid bytes replaced).
    /// Fields are cut at ASCII delimiters and quotes, so a valid record's fields are valid text;
    /// unescaping can join two halves of an invalid sequence into a valid one, which the
    /// check of every field's bounds catches.
    pub(crate) fn seal(&mut self) -> Vec<(u64, String)> {
        if self.sealed {
            return Vec::new();
        }
        let raw = std::mem::take(&mut self.raw);
        let mut rejected = Vec::new();
        self.text = match String::from_utf8(raw) {
            Ok(text) if text.is_ascii() || self.bounds_ok(&text, 0..self.len()) => text,
            Ok(text) => self.keep_valid(text.into_bytes(), &mut rejected),
            Err(e) => self.keep_valid(e.into_bytes(), &mut rejected),
        };
        self.sealed = true;
        rejected
    }

    /// Whether every field of records `rows` starts and ends on a character boundary.
    fn bounds_ok(&self, text: &str, rows: std::ops::Range<usize>) -> bool {
        on_boundaries(text, &self.spans[rows.start * self.width..rows.end * self.width], 0)
    }

    /// The records of `raw` that are text, as one text; the others into `rejected`.
    fn keep_valid(&mut self, raw: Vec<u8>, rejected: &mut Vec<(u64, String)>) -> String {
        let n = self.len();
        let (spans, starts, lines) = (
            std::mem::take(&mut self.spans),
            std::mem::take(&mut self.starts),
            std::mem::take(&mut self.lines),
        );
        let mut text = String::with_capacity(raw.len());
        for r in 0..n {
            let end = starts.get(r + 1).map_or(raw.len(), |&e| e as usize);
            let bytes = &raw[starts[r] as usize..end];
            let fields = &spans[r * self.width..(r + 1) * self.width];
            let ok = std::str::from_utf8(bytes).ok().filter(|t| on_boundaries(t, fields, starts[r]));
            let Some(record) = ok else {
                rejected.push((lines[r], String::from_utf8_lossy(bytes).into_owned()));
                continue;
            };
            let shift = text.len() as i64 - i64::from(starts[r]);
            let moved = |p: u32| (i64::from(p) + shift) as u32;
            self.starts.push(text.len() as u32);
            self.spans.extend(fields.iter().map(|f| f.map(|(s, e)| (moved(s), moved(e)))));
            self.lines.push(lines[r]);
            text.push_str(record);
        }
        text
    }
}

/// Whether every field of `spans` (offsets into a buffer of which `text` starts at `base`)
/// starts and ends on a character boundary of `text`.
fn on_boundaries(text: &str, spans: &[Option<(u32, u32)>], base: u32) -> bool {
    spans.iter().flatten().all(|&(s, e)| {
        text.is_char_boundary((s - base) as usize) && text.is_char_boundary((e - base) as usize)
    })
}

/// A record of a [`Block`].
pub(crate) struct BlockRow<'a> {
    block: &'a Block,
    row: usize,
}

impl Row for BlockRow<'_> {
    fn get(&self, col: usize) -> Option<&str> {
        self.block.get(self.row, col)
    }
    fn line(&self) -> u64 {
        self.block.line(self.row)
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
    fn a_sealed_block_takes_out_records_that_are_not_text_and_keeps_the_others_whole() {
        // After the header: line 2 plain; line 3 with a multi-byte character; line 4 with `é`
        // cut in two by a delimiter (the block's bytes join it into valid text, the fields'
        // bounds do not); line 5 with `é`'s two bytes either side of a closing quote, one
        // field (valid, as the CSV reader reads it); line 6 with a Latin-1 byte; line 7 plain.
        let text = b"h1,h2\na,b\ncaf\xc3\xa9,x\nq\xc3,\xa9r\n\"\xc3\"\xa9,y\nbad\xe9,z\nlast,w\n".to_vec();
        let file = load("t.csv", Bytes::from(text)).unwrap();
        let mut located = Vec::new();
        for_each_csv_record(&file, Chunk::whole(&file), None, |offset, row| {
            located.push((offset, row.line()));
            Ok(())
        })
        .unwrap();
        assert_eq!(located.iter().map(|(_, line)| *line).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6, 7]);
        let all_kept = vec![
            (2, Some("a"), Some("b")),
            (3, Some("caf\u{e9}"), Some("x")),
            (5, Some("\u{e9}"), Some("y")),
            (7, Some("last"), Some("w")),
        ];
        // With line 6 the block's bytes are not text (each record is then checked alone);
        // without it they are, and only the fields' bounds find line 4. In file order and
        // backwards, so that kept records move in the buffer.
        for (without_6, backwards) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut records: Vec<_> =
                located.iter().copied().filter(|(_, line)| !(without_6 && *line == 6)).collect();
            if backwards {
                records.reverse();
            }
            let mut block = Block::new(2);
            for (offset, line) in records {
                block.push_csv(&file, offset, line);
            }
            let mut rejected: Vec<u64> = block.seal().into_iter().map(|(line, _)| line).collect();
            rejected.sort();
            assert_eq!(rejected, if without_6 { vec![4] } else { vec![4, 6] });
            let mut kept: Vec<(u64, Option<&str>, Option<&str>)> =
                (0..block.len()).map(|r| (block.line(r), block.get(r, 0), block.get(r, 1))).collect();
            kept.sort();
            assert_eq!(kept, all_kept, "without line 6: {without_6}, backwards: {backwards}");
            block.clear();
            assert_eq!(block.len(), 0);
        }
    }

    #[test]
    fn the_word_at_a_time_search_finds_the_first_delimiter_or_quote() {
        // Every length up to past the vectorized search's start, the byte at every place, with
        // other bytes (high ones, a byte one above a delimiter, which a borrow could confuse)
        // around and after it.
        for len in 0..80 {
            for at in 0..=len {
                for (filler, after) in
                    [(b'a', b','), (0xc3, b'\n'), (b'-', b'"'), (0x2d, 0x2c), (0x01, b'\r')]
                {
                    let mut bytes = vec![filler; len];
                    if at < len {
                        bytes[at] = b',';
                        for b in &mut bytes[at + 1..] {
                            *b = after;
                        }
                    }
                    let plain = bytes.iter().position(|b| matches!(b, b',' | b'\n' | b'\r'));
                    assert_eq!(field_end(&bytes), plain, "{len} {at} {filler} {after}");
                    let quote = bytes.iter().position(|b| *b == b'"');
                    assert_eq!(quote_at(&bytes), quote, "{len} {at} {filler} {after}");
                }
            }
        }
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
        let one = rows(&file, &[Chunk::whole(&file)]);
        assert_eq!(one.len(), 200);
        for n in [2, 3, 8] {
            let parts = chunks_of_at_least(&file, n, 1);
            assert_eq!(parts.len(), n);
            assert_eq!(rows(&file, &parts), one, "{n} chunks");
        }
        // Line numbers count the newlines inside quoted fields, as the CSV reader does.
        assert_eq!(one[1].0, 4);
    }

    #[test]
    fn records_read_at_their_offsets_are_the_rows_read_in_order() {
        // BOM, CRLF and LF endings, quoted newlines and quotes, a short row, a blank line, no
        // newline at the end; and, in the second file, quotes inside unquoted fields.
        let mut fooled = Vec::new();
        for literal_quotes in [false, true] {
            let mut text = String::from("\u{feff}a,b,c\r\n");
            for i in 0..300 {
                match i % 5 {
                    0 => text.push_str(&format!("{i},\"multi\r\nline, \"\"quoted\"\"\",x\r\n")),
                    1 => text.push_str(&format!("{i},short\n")),
                    2 => text.push_str(&format!("{i},caf\u{e9} \u{2603},y\n\n")),
                    3 if literal_quotes => text.push_str(&format!("{i},5\" screen,\"a\"b,c\r\n")),
                    _ => text.push_str(&format!("{i},plain,\"\"\r\n")),
                }
            }
            text.push_str("last,row,z");
            let file = load("t.csv", Bytes::from(text)).unwrap();
            let all = |row: &dyn Row| {
                (row.line(), (0..4).map(|i| row.get(i).map(str::to_string)).collect::<Vec<_>>())
            };
            let mut expected = Vec::new();
            for_each_row(&file, Chunk::whole(&file), |row| {
                expected.push(all(row));
                Ok(())
            })
            .unwrap();
            assert_eq!(expected.len(), 301);
            if literal_quotes {
                assert_eq!(expected[3].1[1].as_deref(), Some("5\" screen"));
                assert_eq!(expected[3].1[2].as_deref(), Some("ab"));
                assert_eq!(expected[3].1[3].as_deref(), Some("c"));
            }
            // Physical lines: the header, then 7 lines per 5 rows (a quoted newline, a blank line).
            assert_eq!(expected[3].0, 7);
            assert_eq!(expected[155].0, 219);
            assert_eq!(expected[300].0, 2 + 60 * 7);
            'chunkings: for n in [1, 2, 3] {
                let mut located = Vec::new();
                for chunk in chunks_of_at_least(&file, n, 1) {
                    let whole = for_each_csv_record(&file, chunk, None, |offset, row| {
                        located.push((offset, row.line()));
                        Ok(())
                    })
                    .unwrap();
                    if !whole {
                        // A chunk ending inside a record says so (the caller reads it whole).
                        assert!(n > 1);
                        fooled.push((literal_quotes, n));
                        continue 'chunkings;
                    }
                }
                // The first pass reads the fields it wants, the same as the whole record's,
                // and skips the others to the same next record.
                for wanted in [&[0][..], &[1], &[0, 2], &[2, 3], &[3]] {
                    let mut some = Vec::new();
                    for chunk in chunks_of_at_least(&file, n, 1) {
                        let whole = for_each_csv_record(&file, chunk, Some(wanted), |offset, row| {
                            some.push((offset, all(row)));
                            Ok(())
                        })
                        .unwrap();
                        assert!(whole);
                    }
                    let cut: Vec<_> = expected
                        .iter()
                        .zip(&located)
                        .map(|((line, values), (offset, _))| {
                            let mut values = values.clone();
                            for (i, v) in values.iter_mut().enumerate() {
                                if !wanted.contains(&i) {
                                    *v = None;
                                }
                            }
                            (*offset, (*line, values))
                        })
                        .collect();
                    assert_eq!(some, cut, "{n} chunks, fields {wanted:?}");
                }
                // Read back to front into blocks of four fields (one past the header's three:
                // absent) and of two: each read stands alone.
                for width in [4, 2] {
                    let mut block = Block::new(width);
                    for &(o, l) in located.iter().rev() {
                        block.push_csv(&file, o, l);
                    }
                    assert!(block.seal().is_empty());
                    let mut got: Vec<_> = (0..block.len()).rev().map(|r| all(&block.row(r))).collect();
                    let want: Vec<_> = expected
                        .iter()
                        .map(|(line, values)| {
                            let mut values = values.clone();
                            values.truncate(width);
                            values.resize(4, None);
                            (*line, values)
                        })
                        .collect();
                    got.iter_mut().for_each(|(_, v)| v.resize(4, None));
                    assert_eq!(got, want, "{n} chunks, width {width}");
                }
            }
        }
        // Only the file with quotes inside unquoted fields fools the splitter, and it does.
        assert!(!fooled.is_empty() && fooled.iter().all(|(literal_quotes, _)| *literal_quotes), "{fooled:?}");
    }
}
