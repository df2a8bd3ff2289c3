//! The configuration file (`serve --config FILE`, YAML). Every section is optional; see
//! `examples/tenantscope.yaml`.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use tenantscope_ingest::otlp::IngestConfig;

/// Everything the config file may set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// OTLP ingest: attribution, flush interval, memory and rate limits.
    pub(crate) ingest: IngestConfig,
}

impl Config {
    /// Reads and checks the file; the defaults when there is none.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let config: Config = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let i = &config.ingest;
        anyhow::ensure!(
            i.max_tenant_share > 0.0 && i.max_tenant_share <= 1.0,
            "invalid config file {}: ingest.max_tenant_share must be in (0, 1], not {}",
            path.display(),
            i.max_tenant_share
        );
        Ok(config)
    }
}
