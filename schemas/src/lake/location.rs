//! Where the lake lives: a local folder or an object store URL, and the object stores behind it.
//!
//! deltalake only knows `file://` and `memory://` without its cloud features; those features
//! bring the whole AWS SDK (for DynamoDB locking) into the build. We register object_store's own
//! S3, GCS and Azure clients instead, with Delta's default log store. Commits use conditional
//! put (`PutMode::Create`, `If-None-Match: *` on S3), so two writers never overwrite each other's
//! commit file: the Delta protocol's atomicity without a lock table.

use std::{
    path::PathBuf,
    str::FromStr,
    sync::{Arc, Once},
    time::Duration,
};

use deltalake::{
    DeltaResult,
    logstore::{
        LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
        logstore_factories, object_store_factories,
    },
};
use object_store::{
    ClientConfigKey, ObjectStore, RetryConfig,
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    azure::{AzureConfigKey, MicrosoftAzureBuilder},
    gcp::{GoogleCloudStorageBuilder, GoogleConfigKey},
    path::Path,
};
use url::Url;

use super::error::{LakeError, Result};

/// URL schemes served by object_store's cloud clients.
const CLOUD_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure"];

/// A parsed lake location: always a URL with a trailing slash, so table URLs join under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeLocation {
    url: Url,
}

impl LakeLocation {
    /// Parses a local path (relative or absolute), `file://`, `memory://`, `s3://`, `s3a://`,
    /// `gs://`, `az://`, `abfs[s]://` or `azure://`.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid =
            |reason: &str| LakeError::InvalidUrl { url: input.to_string(), reason: reason.to_string() };
        if input.trim().is_empty() {
            return Err(invalid("empty"));
        }
        let mut url = match Url::parse(input) {
            // A single letter before ':' is a Windows drive, not a scheme.
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                let path = PathBuf::from(input);
                let abs = if path.is_absolute() {
                    path
                } else {
                    std::env::current_dir()
                        .map_err(|e| invalid(&format!("no current directory: {e}")))?
                        .join(path)
                };
                Url::from_directory_path(&abs).map_err(|()| invalid("not a usable local path"))?
            }
        };
        match url.scheme() {
            "file" | "memory" => {}
            s if CLOUD_SCHEMES.contains(&s) => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(invalid("no bucket or container name after the scheme"));
                }
            }
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme {other:?}; use a local path, file://, s3://, gs:// or az://"
                )));
            }
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Self { url })
    }

    /// The lake's root URL (ends with `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local folder, for a `file://` lake.
    pub fn local_path(&self) -> Option<PathBuf> {
        (self.url.scheme() == "file").then(|| self.url.to_file_path().ok()).flatten()
    }

    /// The URL of a table's folder, e.g. `s3://bucket/lake/spans/`.
    pub fn table_url(&self, table_name: &str) -> Url {
        // Joining a plain segment onto a URL that ends with '/' cannot fail.
        self.url.join(&format!("{table_name}/")).unwrap_or_else(|_| self.url.clone())
    }

    /// An object store for the lake's root, and the path of the lake inside it.
    pub fn object_store(&self) -> Result<(Arc<dyn ObjectStore>, Path)> {
        register_cloud_stores();
        let url = &self.url;
        match url.scheme() {
            "file" | "memory" => {
                let (store, path) = object_store::parse_url(url)
                    .map_err(|e| LakeError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
                Ok((Arc::from(store), path))
            }
            _ => {
                let store = build_cloud_store(url, &Default::default())
                    .map_err(|e| LakeError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
                let path = Path::from_url_path(url.path())
                    .map_err(|e| LakeError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
                Ok((store, path))
            }
        }
    }
}

impl FromStr for LakeLocation {
    type Err = LakeError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl std::fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.url.fmt(f)
    }
}

/// Bounded retries so that an unreachable endpoint is reported in seconds, not minutes.
fn retry_config() -> RetryConfig {
    RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..RetryConfig::default() }
}

/// Client settings applied unless the environment or the options set them: a connect timeout
/// of 5 s (the default waits far longer on an unroutable address).
const CLIENT_DEFAULTS: [(ClientConfigKey, &str); 1] = [(ClientConfigKey::ConnectTimeout, "5s")];

/// Builds the S3, GCS or Azure client for `url` from the environment (`AWS_*`, `GOOGLE_*`,
/// `AZURE_*`, as object_store reads them) and explicit options.
fn build_cloud_store(
    url: &Url,
    options: &std::collections::HashMap<String, String>,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    let retry = retry_config();
    let root = format!("{}://{}", url.scheme(), url.authority());
    Ok(match url.scheme() {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(&root);
            for (k, v) in options {
                if let Ok(key) = AmazonS3ConfigKey::from_str(&k.to_ascii_lowercase()) {
                    b = b.with_config(key, v);
                }
            }
            for (key, value) in CLIENT_DEFAULTS {
                if b.get_config_value(&AmazonS3ConfigKey::Client(key)).is_none() {
                    b = b.with_config(AmazonS3ConfigKey::Client(key), value);
                }
            }
            Arc::new(b.with_retry(retry).build()?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(&root);
            for (k, v) in options {
                if let Ok(key) = GoogleConfigKey::from_str(&k.to_ascii_lowercase()) {
                    b = b.with_config(key, v);
                }
            }
            for (key, value) in CLIENT_DEFAULTS {
                if b.get_config_value(&GoogleConfigKey::Client(key)).is_none() {
                    b = b.with_config(GoogleConfigKey::Client(key), value);
                }
            }
            Arc::new(b.with_retry(retry).build()?)
        }
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(&root);
            for (k, v) in options {
                if let Ok(key) = AzureConfigKey::from_str(&k.to_ascii_lowercase()) {
                    b = b.with_config(key, v);
                }
            }
            for (key, value) in CLIENT_DEFAULTS {
                if b.get_config_value(&AzureConfigKey::Client(key)).is_none() {
                    b = b.with_config(AzureConfigKey::Client(key), value);
                }
            }
            Arc::new(b.with_retry(retry).build()?)
        }
    })
}

struct CloudStoreFactory;

impl ObjectStoreFactory for CloudStoreFactory {
    fn parse_url_opts(&self, url: &Url, config: &StorageConfig) -> DeltaResult<(ObjectStoreRef, Path)> {
        let store = build_cloud_store(url, &config.raw)?;
        let path = Path::from_url_path(url.path())?;
        Ok((store, path))
    }
}

struct CloudLogStoreFactory;

impl LogStoreFactory for CloudLogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

/// Registers the cloud object stores with deltalake, once per process.
pub fn register_cloud_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in CLOUD_SCHEMES {
            // "<scheme>://" always parses.
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                object_store_factories().insert(url.clone(), Arc::new(CloudStoreFactory));
                logstore_factories().insert(url, Arc::new(CloudLogStoreFactory));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_relative_path_as_file_url() {
        let loc = LakeLocation::parse("some/lake").unwrap();
        assert_eq!(loc.url().scheme(), "file");
        assert!(loc.url().path().ends_with("/some/lake/"));
        assert!(loc.table_url("spans").path().ends_with("/some/lake/spans/"));
    }

    #[test]
    fn parses_s3_with_prefix() {
        let loc = LakeLocation::parse("s3://bucket/pre/fix").unwrap();
        assert_eq!(loc.table_url("billing").as_str(), "s3://bucket/pre/fix/billing/");
    }

    #[test]
    fn rejects_unknown_scheme_and_missing_bucket() {
        let err = LakeLocation::parse("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme \"ftp\""), "{err}");
        let err = LakeLocation::parse("s3:///x").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
    }
}
