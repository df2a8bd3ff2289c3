//! `tenantscope import billing`: export files into the lake.

use anyhow::{Context, anyhow};
use tenantscope_ingest::{
    billing::{BillingImportOptions, ExportFile, Format, ImportError, import_billing},
    business::{Kind, import_business},
};
use tenantscope_schemas::{AuditEvent, Lake};

use crate::cli::{BillingImportArgs, BusinessImportArgs};

pub(crate) async fn billing(args: BillingImportArgs) -> anyhow::Result<()> {
    let format = args.format.as_deref().map(str::parse::<Format>).transpose().map_err(|e| anyhow!(e))?;
    let mut files = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let bytes = read_file(path).with_context(|| format!("cannot read {}", path.display()))?;
        files.push(ExportFile { name: path.display().to_string(), bytes });
    }
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let options = BillingImportOptions {
        format,
        source: args.source,
        skip_invalid: args.skip_invalid,
        tenant_tag_keys: args.tenant_tags,
    };
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let outcome = match import_billing(&lake, &files, &options).await {
        Ok(o) => {
            let detail = format!("import {} ({} rows, written: {})", o.import_id, o.rows, o.written);
            audit(&lake, "import.billing", &names, Ok((o.rows, detail))).await;
            o
        }
        Err(e) => {
            audit(&lake, "import.billing", &names, Err(e.to_string())).await;
            return Err(report(e, "(--skip-invalid imports the valid rows)"));
        }
    };
    if !outcome.written {
        crate::cli::say(format!(
            "Already imported ({}): these files' {} lines are in the lake; nothing to do.",
            outcome.import_id, outcome.source
        ));
        return Ok(());
    }
    let periods: Vec<String> = outcome.periods.iter().map(|p| p.format("%Y-%m").to_string()).collect();
    crate::cli::say(format!(
        "Imported {} billing lines from {} file(s) as source {:?} ({}), billing periods {}; import {}.",
        outcome.rows,
        files.len(),
        outcome.source,
        outcome.formats.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "),
        periods.join(", "),
        outcome.import_id,
    ));
    crate::cli::say(format!("{} lines attributed to a tenant; the rest is shared cost.", outcome.attributed));
    if outcome.rounded > 0 {
        crate::cli::say(format!(
            "{} values had more than 10 decimals and were rounded half-even to 10.",
            outcome.rounded
        ));
    }
    if !outcome.rejected.is_empty() {
        let mut w = csv::Writer::from_path(&args.rejects)
            .with_context(|| format!("cannot write {}", args.rejects.display()))?;
        for e in &outcome.rejected {
            w.serialize(e)?;
        }
        w.flush()?;
        crate::cli::say(format!(
            "{} invalid values skipped: see {}.",
            outcome.rejected.len(),
            args.rejects.display()
        ));
    }
    Ok(())
}

/// An import error for the terminal: every listed bad value on its own line of stderr, then
/// the error itself (one line).
fn report(e: ImportError, hint: &str) -> anyhow::Error {
    match e {
        ImportError::InvalidRows { file, total, errors } => {
            for e in &errors {
                eprintln!("{e}");
            }
            if total > errors.len() {
                eprintln!("... and {} more", total - errors.len());
            }
            anyhow!("{file}: {total} invalid value(s); nothing was imported {hint}").context("import failed")
        }
        other => anyhow::Error::new(other).context("import failed"),
    }
}

/// Files from this size on are mapped rather than read.
const MAP_FROM: u64 = 8 << 20;

/// Reads a whole export file. A large regular file is mapped, not copied: reading a 750 MB
/// export into a fresh buffer, even on every core, cost a tenth of its import (the kernel zeroes
/// every fresh page, then copies the page cache into it), where mapping pages already cached
/// costs next to nothing and holds no second copy of the file in memory.
fn read_file(path: &std::path::Path) -> std::io::Result<bytes::Bytes> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() < MAP_FROM {
        return std::fs::read(path).map(bytes::Bytes::from);
    }
    // SAFETY: the mapping is read-only and only read; what it requires is that no other process
    // change the file while it is mapped (for the length of one import). An export being
    // imported is a finished file; README.md says not to rewrite a file while it is imported.
    // A file truncated meanwhile would end the process with SIGBUS, not corrupt the lake: the
    // import commits nothing until every row is converted.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(bytes::Bytes::from_owner(map))
}

pub(crate) async fn business(kind: Kind, args: BusinessImportArgs) -> anyhow::Result<()> {
    let path = &args.file;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = ExportFile { name: path.display().to_string(), bytes: bytes.into() };
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let action = format!("import.{kind}");
    let names = [file.name.clone()];
    let outcome = match import_business(&lake, kind, &file).await {
        Ok(o) => {
            let detail = format!("import {} ({} rows, written: {})", o.import_id, o.rows, o.written);
            audit(&lake, &action, &names, Ok((o.rows, detail))).await;
            o
        }
        Err(e) => {
            audit(&lake, &action, &names, Err(e.to_string())).await;
            return Err(report(e, ""));
        }
    };
    if !outcome.written {
        crate::cli::say(format!(
            "Already imported ({}): this file's {kind} are in the lake; nothing to do.",
            outcome.import_id
        ));
        return Ok(());
    }
    let mut keys = outcome.keys.clone();
    if keys.len() > 8 {
        let more = keys.len() - 8;
        keys.truncate(8);
        keys.push(format!("and {more} more"));
    }
    crate::cli::say(format!(
        "Imported {} {kind} rows ({}); import {}.",
        outcome.rows,
        keys.join(", "),
        outcome.import_id
    ));
    if outcome.unattributed > 0 {
        crate::cli::say(format!(
            "{} invoice lines name a customer that maps to no tenant (set tenant_id, or labels.stripe_customer on the tenant).",
            outcome.unattributed
        ));
    }
    Ok(())
}

/// Records an import run from the command line in `audit_log` (the actor is the OS user: the
/// command reads and writes the lake with that user's credentials).
async fn audit(lake: &Lake, action: &str, files: &[String], result: Result<(usize, String), String>) {
    let user =
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let (outcome, rows, detail) = match result {
        Ok((rows, detail)) => ("ok", Some(rows as i64), detail),
        Err(e) => ("error", None, e),
    };
    let event = AuditEvent {
        actor: Some(format!("tenantscope import ({user})")),
        target: Some(files.join(", ")),
        detail: Some(detail),
        rows,
        outcome: Some(outcome.into()),
        ..AuditEvent::new(action)
    };
    if let Err(e) = lake.append_audit(&[event]).await {
        tracing::warn!(error = %e, "Cannot write the audit log.");
    }
}
