//! `tenantscope import billing`: export files into the lake.

use anyhow::{Context, anyhow};
use tenantscope_ingest::billing::{BillingImportOptions, ExportFile, Format, ImportError, import_billing};
use tenantscope_schemas::Lake;

use crate::cli::BillingImportArgs;

pub(crate) async fn billing(args: BillingImportArgs) -> anyhow::Result<()> {
    let format = args.format.as_deref().map(str::parse::<Format>).transpose().map_err(|e| anyhow!(e))?;
    let mut files = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        files.push(ExportFile { name: path.display().to_string(), bytes: bytes.into() });
    }
    let lake = Lake::open_url(&args.lake.data).await.context("cannot open the lake")?;
    let options = BillingImportOptions {
        format,
        source: args.source,
        skip_invalid: args.skip_invalid,
        tenant_tag_keys: args.tenant_tags,
    };
    let outcome = match import_billing(&lake, &files, &options).await {
        Ok(o) => o,
        Err(ImportError::InvalidRows { file, total, errors }) => {
            // The full report on stderr, one value per line; the error itself stays one line.
            for e in &errors {
                eprintln!("{e}");
            }
            if total > errors.len() {
                eprintln!("... and {} more", total - errors.len());
            }
            return Err(anyhow!("{file}: {total} invalid value(s); nothing was imported (--skip-invalid imports the valid rows)"));
        }
        Err(e) => return Err(e.into()),
    };
    if !outcome.written {
        crate::cli::say(format!("Already imported ({}): these files' {} lines are in the lake; nothing to do.", outcome.import_id, outcome.source));
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
        crate::cli::say(format!("{} values had more than 10 decimals and were rounded half-even to 10.", outcome.rounded));
    }
    if !outcome.rejected.is_empty() {
        let mut w = csv::Writer::from_path(&args.rejects)
            .with_context(|| format!("cannot write {}", args.rejects.display()))?;
        for e in &outcome.rejected {
            w.serialize(e)?;
        }
        w.flush()?;
        crate::cli::say(format!("{} invalid values skipped: see {}.", outcome.rejected.len(), args.rejects.display()));
    }
    Ok(())
}
