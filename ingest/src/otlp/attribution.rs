//! Which tenant a telemetry record belongs to (DESIGN.md, "Tenant attribution"):
//! 1. the tenant an ingest token is bound to (the payload cannot override it);
//! 2. else the first configured attribute that is set, resource attributes first, then the
//!    record's (default `tenant.id`);
//! 3. else mapping rules: an attribute such as `cloud.account.id` or `k8s.namespace.name` whose
//!    value names a tenant, by the rule's own table or by the tenants' `accounts`;
//! 4. else none: the record is kept and counts as unattributed.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use serde::Deserialize;

use super::value::{Attribute, attribute_str};

/// Attribution settings (the `ingest.attribution` section of the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionConfig {
    /// Attributes that carry the tenant id, tried in order (resource, then record).
    pub tenant_attributes: Vec<String>,
    /// Attributes whose value maps to a tenant.
    pub mappings: Vec<MappingRule>,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            tenant_attributes: vec!["tenant.id".to_string()],
            mappings: vec![
                MappingRule::accounts("cloud.account.id"),
                MappingRule::accounts("k8s.namespace.name"),
            ],
        }
    }
}

/// Maps the value of one attribute to a tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// The attribute, e.g. `cloud.account.id`.
    pub attribute: String,
    /// Value -> tenant id. Values not listed are looked up in the tenants' `accounts`.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
}

impl MappingRule {
    fn accounts(attribute: &str) -> Self {
        Self { attribute: attribute.to_string(), values: BTreeMap::new() }
    }
}

/// Resolves tenants; shared by every receiver. The account table is refreshed from the lake's
/// `tenants` table by the pipeline.
#[derive(Debug, Clone)]
pub struct TenantResolver {
    config: Arc<AttributionConfig>,
    accounts: Arc<RwLock<HashMap<String, String>>>,
}

/// What a resource says about its records' tenant, worked out once per resource.
#[derive(Debug, Default)]
pub(crate) struct ResourceTenant {
    bound: Option<String>,
    direct: Option<String>,
    mapped: Option<String>,
}

impl TenantResolver {
    /// A resolver with `config` and no known accounts yet.
    pub fn new(config: AttributionConfig) -> Self {
        Self { config: Arc::new(config), accounts: Arc::default() }
    }

    /// Replaces the account -> tenant table (from `tenants.accounts`).
    pub fn set_accounts(&self, accounts: HashMap<String, String>) {
        *self.accounts.write().unwrap_or_else(|e| e.into_inner()) = accounts;
    }

    /// Steps 1 to 3 for a resource's own attributes.
    pub(crate) fn resource<A: Attribute>(&self, bound: Option<&str>, attributes: &[A]) -> ResourceTenant {
        if let Some(tenant) = bound {
            return ResourceTenant { bound: Some(tenant.to_string()), ..Default::default() };
        }
        let direct = self.direct(attributes);
        let mapped = if direct.is_none() { self.mapped(attributes) } else { None };
        ResourceTenant { bound: None, direct, mapped }
    }

    /// The tenant of one record of a resource (borrowed from the resource or the record where
    /// it can be: this runs once per row).
    pub(crate) fn record<'a, A: Attribute>(
        &self,
        resource: &'a ResourceTenant,
        attributes: &'a [A],
    ) -> Option<Cow<'a, str>> {
        if let Some(t) = resource.bound.as_deref().or(resource.direct.as_deref()) {
            return Some(Cow::Borrowed(t));
        }
        let mapped = || resource.mapped.as_deref().map(Cow::Borrowed);
        if attributes.is_empty() {
            return mapped();
        }
        self.direct_str(attributes).or_else(mapped).or_else(|| self.mapped(attributes).map(Cow::Owned))
    }

    fn direct<A: Attribute>(&self, attributes: &[A]) -> Option<String> {
        self.direct_str(attributes).map(Cow::into_owned)
    }

    fn direct_str<'a, A: Attribute>(&self, attributes: &'a [A]) -> Option<Cow<'a, str>> {
        self.config.tenant_attributes.iter().find_map(|key| attribute_str(attributes, key))
    }

    fn mapped<A: Attribute>(&self, attributes: &[A]) -> Option<String> {
        for rule in &self.config.mappings {
            let Some(value) = attribute_str(attributes, &rule.attribute) else { continue };
            if let Some(tenant) = rule.values.get(value.as_ref()) {
                return Some(tenant.clone());
            }
            if let Some(tenant) = self.accounts.read().unwrap_or_else(|e| e.into_inner()).get(value.as_ref())
            {
                return Some(tenant.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
            key_strindex: 0,
        }
    }

    #[test]
    fn token_then_attributes_then_mappings_then_none() {
        let r = TenantResolver::new(AttributionConfig {
            tenant_attributes: vec!["tenant.id".into(), "customer".into()],
            mappings: vec![
                MappingRule {
                    attribute: "k8s.namespace.name".into(),
                    values: [("ns-blue".to_string(), "blue".to_string())].into(),
                },
                MappingRule::accounts("cloud.account.id"),
            ],
        });
        r.set_accounts([("1111".to_string(), "acme".to_string())].into());
        let res = [kv("cloud.account.id", "1111"), kv("service.name", "api")];
        // Token wins over everything in the payload.
        let t = r.resource(Some("bound"), &[kv("tenant.id", "evil")]);
        assert_eq!(r.record(&t, &[kv("tenant.id", "evil2")]).as_deref(), Some("bound"));
        // Resource attribute, then the record's, before any mapping.
        let t = r.resource(None, &[kv("tenant.id", "globex")]);
        assert_eq!(r.record(&t, &[kv("tenant.id", "other")]).as_deref(), Some("globex"));
        let t = r.resource(None, &res);
        assert_eq!(r.record(&t, &[kv("customer", "initech")]).as_deref(), Some("initech"));
        // Mapping by the tenants' accounts, and by the rule's own table (rule order).
        assert_eq!(r.record::<KeyValue>(&t, &[]).as_deref(), Some("acme"));
        let t = r.resource(None, &[kv("k8s.namespace.name", "ns-blue"), kv("cloud.account.id", "1111")]);
        assert_eq!(r.record::<KeyValue>(&t, &[]).as_deref(), Some("blue"));
        // Nothing known: unattributed, not dropped.
        let t = r.resource(None, &[kv("cloud.account.id", "9999")]);
        assert_eq!(r.record(&t, &[kv("x", "y")]), None);
        // An empty string is not a tenant.
        let t = r.resource(None, &[kv("tenant.id", "")]);
        assert_eq!(r.record::<KeyValue>(&t, &[]), None);
    }
}
