//! Converting a CSV export straight into the lake's row order.
//!
//! The `billing` table's files are sorted by billing period, tenant and charge period start, so
//! that a tenant or time filter reads a few row groups. Converting rows in file order and then
//! sorting the converted columns meant gathering 60-odd columns of a million rows twice (a
//! locality-friendly sort of short runs, then the global gather): more than a quarter of a
//! million-line import, and two more copies of the data in memory. Here a first pass reads each
//! record's sort key (the few columns it is made of) and where the record starts; the records are
//! ordered by key (pass 1 runs beside the file's checksum); then each unit of records is read
//! again from the file's bytes and converted in that order, on every core, into batches that
//! are already sorted (so [`Lake::replace`](tenantscope_schemas::Lake::replace) finds nothing
//! to reorder). Records read in the lake's order come from anywhere in the file: each would be
//! a cache and TLB miss (about a tenth of a million-line import), so pass 2 prefetches the
//! records it will read next ([`prefetch`]).

use std::{
    collections::{BTreeSet, HashMap},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use chrono::NaiveDate;
use tenantscope_schemas::lake::{SliceWrite, WrittenFiles};

use super::{
    convert::{self, Attribution, Converted, Converter},
    formats::Plan,
    source::{self, Block, Loaded},
};
use crate::error::ImportError;

/// Records converted as one unit of pass 2, into one batch: a quarter of a row group (the lake's
/// writer joins batches into row groups), so that the last units leave no core idle for long.
const UNIT_ROWS: usize = 32 * 1024;

/// One record: its sort key and where it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located {
    period: i32,
    /// 0 for no tenant (shared cost: first, as NULLs sort first in the lake), else an index into
    /// the chunk's tenants (pass 1) or the rank of the tenant's id (after merging).
    tenant: u32,
    start: i64,
    line: u64,
    offset: usize,
}

/// The records of one chunk and the tenant ids they name.
#[derive(Default)]
struct ChunkKeys {
    records: Vec<Located>,
    tenants: Vec<String>,
}

/// Pass 1: every record's place in the lake's order and where it starts, read one part of the
/// file per core (see [`convert_in_order`] for pass 2).
pub(crate) fn lake_order(
    file: &Loaded,
    parts: &[source::Chunk],
    plan: &Plan,
    attribution: &Attribution,
) -> Result<Vec<Located>, ImportError> {
    // Pass 1: every record's key and offset, one part of the file per core.
    let keyed: Vec<Result<Option<ChunkKeys>, ImportError>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            parts.iter().map(|chunk| scope.spawn(move || keys_of(file, *chunk, plan, attribution))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(panicked()))).collect()
    });
    let keyed = match keyed.into_iter().collect::<Result<Option<Vec<_>>, _>>()? {
        Some(keyed) => keyed,
        None => {
            // A part ended inside a record (a quote in an unquoted field fooled the splitter).
            tracing::debug!(file = %file.name, "CSV parts ended inside records; reading the file as one part");
            let whole = keys_of(file, source::Chunk::whole(file), plan, attribution)?;
            vec![
                whole.ok_or_else(|| {
                    ImportError::Query("internal: the whole file ended inside a record".into())
                })?,
            ]
        }
    };

    // Tenants ranked by id, so that sorting numbers sorts ids.
    let (tenants, records): (Vec<Vec<String>>, Vec<Vec<Located>>) =
        keyed.into_iter().map(|k| (k.tenants, k.records)).unzip();
    let names: Vec<&str> = tenants
        .iter()
        .flat_map(|t| t.iter().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rank = |name: &str| names.binary_search(&name).map_or(0, |i| i as u32 + 1);
    // Each part's records ranked and sorted on its own core, then merged (a sort of the whole on
    // one core left the other idle).
    let key = |r: &Located| (r.period, r.tenant, r.start, r.line);
    let runs: Vec<Vec<Located>> = std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .into_iter()
            .zip(&tenants)
            .map(|(mut records, tenants)| {
                let rank = &rank;
                scope.spawn(move || {
                    let ranks: Vec<u32> = std::iter::once(0).chain(tenants.iter().map(|t| rank(t))).collect();
                    records.iter_mut().for_each(|r| r.tenant = ranks[r.tenant as usize]);
                    records.sort_unstable_by_key(key);
                    records
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| panicked())).collect::<Result<_, _>>()
    })?;
    // The standard stable sort finds the sorted runs and merges them.
    let mut records = runs.concat();
    records.sort_by_key(key);
    Ok(records)
}

/// What pass 2 converts: the file, its plan, and what every row is stamped with.
#[derive(Clone, Copy)]
pub(crate) struct Pass2<'a> {
    pub(crate) file: &'a Loaded,
    pub(crate) plan: &'a Plan,
    pub(crate) source: &'a str,
    pub(crate) import_id: &'a str,
    pub(crate) attribution: &'a Attribution,
}

/// Pass 2: the records, in the order [`lake_order`] gave them, converted into batches of at most
/// [`UNIT_ROWS`] rows, on `threads` threads. Bad values are collected as
/// [`convert::convert`] does, sorted by line.
pub(crate) fn convert_in_order(
    pass: Pass2<'_>,
    records: &[Located],
    threads: usize,
) -> Result<Converted, ImportError> {
    // Pass 2: each unit of records converted in order, units dealt to the cores as they come
    // free.
    let groups: Vec<&[Located]> = records.chunks(UNIT_ROWS).collect();
    let next = AtomicUsize::new(0);
    let done: Vec<Vec<(usize, Result<Converted, ImportError>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.min(groups.len()).max(1))
            .map(|_| {
                let (groups, next) = (&groups, &next);
                scope.spawn(move || {
                    let mut block = Block::new(pass.plan.headers.len());
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(group) = groups.get(i) else { break };
                        out.push((i, convert_group(pass, group, &mut block)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| vec![(usize::MAX, Err(panicked()))]))
            .collect()
    });
    let mut done: Vec<(usize, Result<Converted, ImportError>)> = done.into_iter().flatten().collect();
    done.sort_by_key(|(i, _)| *i);
    let mut whole = Converted::default();
    for (_, c) in done {
        whole.extend(c?);
    }
    whole.errors.sort_by_key(|e| e.line);
    Ok(whole)
}

/// The billing periods (first days) of the records, by their sort keys: the periods of the valid
/// ones among them (an invalid line's key may name another, never fewer).
pub(crate) fn periods(records: &[Located]) -> BTreeSet<NaiveDate> {
    let days: BTreeSet<i32> = records.iter().map(|r| r.period).collect();
    days.into_iter().filter_map(convert::date_of_days).collect()
}

/// Where pass 2 writes the batches it makes, when it writes them as it goes
/// ([`convert_and_write`]).
pub(crate) struct Sink<'a> {
    pub(crate) write: &'a SliceWrite,
    /// The runtime the writers' uploads run on (pass 2's threads are not its own).
    pub(crate) runtime: tokio::runtime::Handle,
    /// Whether a bad value drops its row (the others are written) rather than the whole file.
    pub(crate) skip_invalid: bool,
}

/// Pass 2 as [`convert_in_order`], but each unit's batch written at once by its thread's
/// [`FileWriter`](tenantscope_schemas::lake::FileWriter) instead of kept: the converted rows of
/// a large file are never all in memory (a million-line import held ~0.9 GB of them until the
/// end, and first touches of that much fresh memory cost more than a tenth of its time). Each
/// thread takes a contiguous run of the records, so its files hold one range of the lake's
/// order. Once a bad value is found and `skip_invalid` is off, the file is going to be rejected:
/// writing stops, converting goes on for the report. Returns what was converted (without
/// batches) and the files written, for the caller to commit or discard; on an error they are
/// discarded here.
pub(crate) fn convert_and_write(
    pass: Pass2<'_>,
    records: &[Located],
    threads: usize,
    sink: &Sink<'_>,
) -> Result<(Converted, Vec<WrittenFiles>), ImportError> {
    let groups: Vec<&[Located]> = records.chunks(UNIT_ROWS).collect();
    let threads = threads.min(groups.len()).max(1);
    let stop = AtomicBool::new(false);
    let done: Vec<Result<(Vec<Converted>, WrittenFiles), ImportError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let run = &groups[groups.len() * t / threads..groups.len() * (t + 1) / threads];
                let stop = &stop;
                scope.spawn(move || write_run(pass, run, sink, stop))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(panicked()))).collect()
    });
    let mut whole = Converted::default();
    let mut files = Vec::with_capacity(threads);
    let mut failed = None;
    for run in done {
        match run {
            Ok((converted, written)) => {
                converted.into_iter().for_each(|c| whole.extend(c));
                files.push(written);
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        if let Err(discard) = sink.runtime.block_on(sink.write.discard(files)) {
            tracing::warn!(error = %discard, "Could not delete the files of a failed import.");
        }
        return Err(e);
    }
    whole.errors.sort_by_key(|e| e.line);
    Ok((whole, files))
}

/// One thread's run of units for [`convert_and_write`].
fn write_run(
    pass: Pass2<'_>,
    run: &[&[Located]],
    sink: &Sink<'_>,
    stop: &AtomicBool,
) -> Result<(Vec<Converted>, WrittenFiles), ImportError> {
    let mut writer = sink.write.writer();
    let mut block = Block::new(pass.plan.headers.len());
    let mut out = Vec::with_capacity(run.len());
    for group in run {
        let written = convert_group(pass, group, &mut block).and_then(|mut converted| {
            if !converted.errors.is_empty() && !sink.skip_invalid {
                stop.store(true, Ordering::Relaxed);
            }
            let batches = std::mem::take(&mut converted.batches);
            if !stop.load(Ordering::Relaxed) {
                for batch in &batches {
                    sink.runtime.block_on(writer.write(batch))?;
                }
            }
            Ok(converted)
        });
        match written {
            Ok(converted) => out.push(converted),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                sink.runtime.block_on(writer.abort());
                return Err(e);
            }
        }
    }
    Ok((out, sink.runtime.block_on(writer.close())?))
}

fn panicked() -> ImportError {
    ImportError::Query("internal: a conversion thread panicked".into())
}

/// The keys of a part's records; `None` when the part did not end where a record ends.
fn keys_of(
    file: &Loaded,
    chunk: source::Chunk,
    plan: &Plan,
    attribution: &Attribution,
) -> Result<Option<ChunkKeys>, ImportError> {
    let mut out = ChunkKeys::default();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut scratch = convert::KeyScratch::default();
    let columns = convert::key_columns(plan, attribution);
    let whole = source::for_each_csv_record(file, chunk, columns.as_deref(), |offset, row| {
        let (period, tenant, start) = convert::sort_key(plan, attribution, row, &mut scratch);
        let tenant = match tenant {
            None => 0,
            Some(t) => match ids.get(t) {
                Some(id) => *id,
                None => {
                    let id = ids.len() as u32 + 1;
                    ids.insert(t.to_string(), id);
                    id
                }
            },
        };
        out.records.push(Located { period, tenant, start, line: row.line(), offset });
        Ok(())
    })?;
    if !whole {
        return Ok(None);
    }
    out.tenants = vec![String::new(); ids.len()];
    for (name, id) in ids {
        out.tenants[id as usize - 1] = name;
    }
    Ok(Some(out))
}

/// How many records ahead of the one being read pass 2 asks the CPU to fetch.
const PREFETCH_AHEAD: usize = 32;

/// Asks the CPU to bring the first KiB of `bytes[at..]` into its caches (a FOCUS record is ~750
/// bytes; the hardware prefetcher follows longer ones). Pass 2 reads records in the lake's
/// order, from anywhere in the file: without this, the first byte of each record was a cache
/// and TLB miss, half of reading the records (1M-line import: 3.9 -> 3.5 CPU-s). A plain read
/// ahead did not help: a load that misses stalls the core as the later read would.
#[allow(unsafe_code)]
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = bytes.get(at..) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        for line in (0..1024).step_by(64) {
            if let Some(p) = b.get(line) {
                // SAFETY: a prefetch is a hint; it reads nothing the program sees and cannot
                // fault. Its one requirement, SSE, is part of every x86_64 CPU.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(p).cast()) };
            }
        }
    }
}

/// One unit of records, read again from the file in the given order and converted.
fn convert_group(pass: Pass2<'_>, group: &[Located], block: &mut Block) -> Result<Converted, ImportError> {
    let Pass2 { file, plan, source, import_id, attribution } = pass;
    let mut converter = Converter::new(&file.name, plan, source, import_id, attribution, group.len());
    block.clear();
    for (i, r) in group.iter().enumerate() {
        if let Some(ahead) = group.get(i + PREFETCH_AHEAD) {
            prefetch(&file.bytes, ahead.offset);
        }
        block.push_csv(file, r.offset, r.line);
        if block.is_full() {
            converter.block(block)?;
        }
    }
    converter.block(block)?;
    converter.finish()
}

#[cfg(test)]
mod tests {
    use arrow::{
        array::RecordBatch,
        compute::concat_batches,
        util::display::{ArrayFormatter, FormatOptions},
    };
    use bytes::Bytes;
    use tenantscope_schemas::{Table, lake::prepare};

    use super::*;
    use crate::billing::{Format, source::load};

    /// Pass 1 then pass 2, as an import of source `focus` does them.
    fn both_passes(
        file: &Loaded,
        parts: &[source::Chunk],
        plan: &Plan,
        attribution: &Attribution,
        threads: usize,
    ) -> Result<Converted, ImportError> {
        let records = lake_order(file, parts, plan, attribution)?;
        let pass = Pass2 { file, plan, source: "focus", import_id: "imp", attribution };
        convert_in_order(pass, &records, threads)
    }

    fn rows_as_text(batches: &[RecordBatch]) -> Vec<String> {
        let all = concat_batches(&Table::Billing.schema(), batches).unwrap();
        let options = FormatOptions::default();
        let formatters: Vec<_> =
            all.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
        (0..all.num_rows())
            .map(|i| formatters.iter().map(|f| f.value(i).to_string()).collect::<Vec<_>>().join("\u{1f}"))
            .collect()
    }

    #[test]
    fn rows_come_out_in_the_lake_order_and_are_the_rows_of_the_file() {
        check_against_file_order(false);
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_does_not_misplace_rows() {
        check_against_file_order(true);
    }

    #[test]

    fn a_line_that_is_not_utf8_is_a_bad_line_named_and_the_others_are_kept() {
        let sample = std::fs::read(manifest_dir().join("../testdata/focus/focus_sample.csv")).unwrap();
        let mut lines: Vec<Vec<u8>> =
            sample.split_inclusive(|b| *b == b'\n').take(50).map(<[u8]>::to_vec).collect();
        // Line 10: a Latin-1 byte inside a quoted description.
        let at = lines[9].iter().position(|b| *b == b'"').unwrap() + 1;
        lines[9][at] = 0xe9;
        let file = load("latin1.csv", Bytes::from(lines.concat())).unwrap();
        let plan = Plan::new(Format::Focus, source::headers(&file).unwrap());
        let parts = source::chunks(&file, 2);
        let attribution = Attribution::default();
        let converted = both_passes(&file, &parts, &plan, &attribution, 2).unwrap();
        // The other 48 lines are kept; line 10 is reported (the file is rejected with it unless
        // invalid rows are skipped).
        assert_eq!(converted.rows, 48);
        let errors: Vec<String> = converted.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("latin1.csv:10: column (line): ")
                && errors[0].ends_with(": not UTF-8 text (exports must be UTF-8)"),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains('\u{fffd}'), "{}", errors[0]);
    }

    /// The package's folder: from the environment `cargo test` runs with, so that a test binary built
    /// in another checkout sharing this target dir reads this checkout's files; else as compiled.
    fn manifest_dir() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
    }

    fn check_against_file_order(literal_quotes: bool) {
        // The real FOCUS sample six times over (6,000 lines, 4.5 MB: three chunks on three
        // threads), with two bad values, tenants from a tag and from sub accounts; and with
        // `literal_quotes`, line 2's availability zone starting `X"` (a quote inside an
        // unquoted field, which the part splitter's quote count takes for an opening quote).
        let sample =
            std::fs::read_to_string(manifest_dir().join("../testdata/focus/focus_sample.csv")).unwrap();
        let (header, body) = sample.split_once('\n').unwrap();
        let mut text = format!("{header}\n");
        for _ in 0..6 {
            text.push_str(body);
            if !body.ends_with('\n') {
                text.push('\n');
            }
        }
        let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
        for bad_line in [5000, 17] {
            // Line numbers are 1-based and the header is line 1 (no multi-line fields before).
            lines[bad_line - 1] = lines[bad_line - 1].replacen(",", ",not-a-number-", 1);
        }
        if literal_quotes {
            assert!(lines[0].starts_with("\"AvailabilityZone\","));
            lines[1].insert_str(0, "X\"");
            // Quoted newlines after the bad lines (their numbers stay), which the splitter's
            // count, one quote off from line 2 on, takes for record ends.
            for line in lines.iter_mut().skip(5001).step_by(10) {
                *line = line.replacen(" per ", " per\n", 1);
            }
        }
        let text = lines.concat();
        let file = load("sample.csv", Bytes::from(text)).unwrap();
        let headers = source::headers(&file).unwrap();
        let plan = Plan::new(Format::Focus, headers);
        let attribution = Attribution {
            tag_keys: vec!["application".into()],
            accounts: [
                ("11353890204".to_string(), "acme".to_string()),
                ("85742851457".into(), "zeta".into()),
            ]
            .into_iter()
            .collect(),
        };

        let parts = source::chunks(&file, 3);
        assert!(parts.len() == 3 || literal_quotes && parts.len() == 2, "{}", parts.len());
        // With the quotes, a part ends inside a record, and the file is read as one part.
        let fooled = parts.iter().any(|part| keys_of(&file, *part, &plan, &attribution).unwrap().is_none());
        assert_eq!(fooled, literal_quotes);
        let sorted = both_passes(&file, &parts, &plan, &attribution, 3).unwrap();
        let whole = source::Chunk::whole(&file);
        let in_file_order = convert::convert(&file, whole, &plan, "focus", "imp", &attribution).unwrap();

        assert_eq!(sorted.rows, in_file_order.rows);
        assert_eq!(sorted.rows, 6000 - 2);
        assert_eq!(sorted.attributed, in_file_order.attributed);
        assert!(sorted.attributed > 3000, "{}", sorted.attributed);
        assert_eq!(sorted.periods, in_file_order.periods);
        assert_eq!(sorted.accounts, in_file_order.accounts);
        assert_eq!(sorted.rounded, in_file_order.rounded);
        let errors = |c: &Converted| c.errors.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(errors(&sorted), errors(&in_file_order));
        assert_eq!(sorted.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![17, 5000]);

        // The lake's own sort finds nothing to reorder: the batches come back as they went in.
        let prepared = prepare(Table::Billing, &sorted.batches).unwrap().unwrap();
        assert_eq!(rows_as_text(&prepared), rows_as_text(&sorted.batches));
        // And they are the file's rows, in the order the lake's sort gives them (ties aside).
        let mut expected = rows_as_text(&prepare(Table::Billing, &in_file_order.batches).unwrap().unwrap());
        let mut got = rows_as_text(&sorted.batches);
        let key = |row: &String| {
            let schema = Table::Billing.schema();
            let cols: Vec<&str> = row.split('\u{1f}').collect();
            let at = |name: &str| cols[schema.index_of(name).unwrap()].to_string();
            (at("billing_period"), at("tenant_id"), at("charge_period_start"))
        };
        assert_eq!(got.iter().map(key).collect::<Vec<_>>(), expected.iter().map(key).collect::<Vec<_>>());
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }
}
