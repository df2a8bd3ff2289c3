//! Where alerts go: Alertmanager's v2 API (`POST /api/v2/alerts`) and generic webhooks that get
//! Alertmanager's webhook payload (version 4). Timeouts, retries with backoff; every attempt's
//! outcome is returned so that it lands in the `alerts` table.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::state::{Alert, AlertState};

/// A generic webhook receiver (the `alerts.webhooks` list of the config file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name (the payload's `receiver`).
    pub name: String,
    /// Where the payload is POSTed.
    pub url: String,
    /// Whether resolved alerts are sent (default true).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// At most this many alerts per message; 0 = all (the rest are counted in `truncatedAlerts`).
    #[serde(default)]
    pub max_alerts: usize,
    /// Time for one request, e.g. `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Firing alerts are sent again after this long, e.g. `4h` (Alertmanager's default).
    #[serde(default)]
    pub repeat_interval: Option<String>,
    /// Only alerts of these rules (all when empty).
    #[serde(default)]
    pub rules: Vec<String>,
}

fn yes() -> bool {
    true
}

/// The client every notifier shares.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("tenantscope/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The fingerprint of a label set: 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    const_hex::encode(&h.finalize()[..8])
}

/// The URL of Alertmanager's alerts endpoint, from what the user gave (its base URL or the
/// endpoint itself).
pub fn alertmanager_endpoint(url: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.ends_with("/api/v2/alerts") { base.to_string() } else { format!("{base}/api/v2/alerts") }
}

/// An alert as Alertmanager's v2 API takes it.
pub fn alertmanager_alert(a: &Alert, generator_url: &str) -> Value {
    let ends = if a.state == AlertState::Inactive { a.resolved_at } else { a.valid_until };
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.fired_at.max(a.active_at)),
        "endsAt": rfc3339(ends),
        "generatorURL": generator_url,
    })
}

/// One alert of a webhook message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// RFC 3339; Go's zero time while firing, as Alertmanager sends it.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// Link to the rule.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// Fingerprint of the labels.
    pub fingerprint: String,
}

impl WebhookAlert {
    /// The webhook form of an alert.
    pub fn new(a: &Alert, generator_url: &str) -> Self {
        let resolved = a.state == AlertState::Inactive;
        Self {
            status: if resolved { "resolved" } else { "firing" }.into(),
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: rfc3339(a.fired_at.max(a.active_at)),
            ends_at: if resolved { rfc3339(a.resolved_at) } else { "0001-01-01T00:00:00Z".into() },
            generator_url: generator_url.into(),
            fingerprint: fingerprint(&a.labels),
        }
    }
}

fn common(maps: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = maps.split_first() else { return BTreeMap::new() };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Alertmanager's webhook payload, version 4, for one rule's alerts.
pub fn webhook_payload(
    receiver: &str,
    rule: &str,
    alerts: &[WebhookAlert],
    max_alerts: usize,
    external_url: &str,
    reason: &str,
) -> Value {
    let firing = alerts.iter().any(|a| a.status == "firing");
    let shown = if max_alerts > 0 && alerts.len() > max_alerts { &alerts[..max_alerts] } else { alerts };
    let labels: Vec<&BTreeMap<String, String>> = alerts.iter().map(|a| &a.labels).collect();
    let annotations: Vec<&BTreeMap<String, String>> = alerts.iter().map(|a| &a.annotations).collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={rule:?}}}"),
        "truncatedAlerts": alerts.len() - shown.len(),
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": {"alertname": rule},
        "commonLabels": common(&labels),
        "commonAnnotations": common(&annotations),
        "externalURL": external_url,
        "notification_reason": reason,
        "alerts": shown,
    })
}

/// What one delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (2xx).
    Delivered,
    /// Refused or unreachable; worth trying again.
    Failed(String),
}

/// POSTs a JSON body, trying `attempts` times with backoff (100 ms, doubling) within each
/// attempt's `timeout`. 4xx answers other than 408 and 429 are not retried: the body is at fault.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    timeout: Duration,
    attempts: u32,
) -> Outcome {
    let mut wait = Duration::from_millis(100);
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        let req = client
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return Outcome::Delivered,
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                last =
                    format!("{url} answered {status}: {}", text.trim().chars().take(300).collect::<String>());
                if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                    break;
                }
            }
            Err(e) => last = format!("cannot POST to {url}: {e}"),
        }
    }
    Outcome::Failed(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState) -> Alert {
        Alert {
            labels: [("alertname", "Spike"), ("tenant_id", "acme"), ("severity", "warning")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            annotations: [("summary".to_string(), "acme spikes".to_string())].into_iter().collect(),
            value: 4.2,
            state,
            active_at: 1_700_000_000_000,
            fired_at: 1_700_000_600_000,
            resolved_at: if state == AlertState::Inactive { 1_700_001_200_000 } else { 0 },
            last_sent_at: 0,
            keep_firing_since: 0,
            valid_until: 1_700_000_840_000,
            resolve_delivered: false,
        }
    }

    #[test]
    fn the_version_4_payload() {
        let mut b = alert(AlertState::Firing);
        b.labels.insert("tenant_id".into(), "globex".into());
        let alerts = vec![
            WebhookAlert::new(&alert(AlertState::Firing), "http://ts/v1/rules"),
            WebhookAlert::new(&b, "u"),
        ];
        let p = webhook_payload("oncall", "Spike", &alerts, 1, "http://ts:8080", "alert_group_state_changed");
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["receiver"], "oncall");
        assert_eq!(p["groupLabels"], json!({"alertname": "Spike"}));
        assert_eq!(p["commonLabels"], json!({"alertname": "Spike", "severity": "warning"}));
        assert_eq!(p["truncatedAlerts"], 1);
        assert_eq!(p["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(p["alerts"][0]["startsAt"], "2023-11-14T22:23:20.000Z");
        assert_eq!(p["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
        let r = WebhookAlert::new(&alert(AlertState::Inactive), "u");
        assert_eq!(r.status, "resolved");
        assert_eq!(r.ends_at, "2023-11-14T22:33:20.000Z");
    }

    #[test]
    fn alertmanager_alerts_carry_ends_at() {
        let a = alertmanager_alert(&alert(AlertState::Firing), "g");
        assert_eq!(a["endsAt"], "2023-11-14T22:27:20.000Z");
        let r = alertmanager_alert(&alert(AlertState::Inactive), "g");
        assert_eq!(r["endsAt"], "2023-11-14T22:33:20.000Z");
        assert_eq!(alertmanager_endpoint("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(alertmanager_endpoint("http://am:9093/api/v2/alerts"), "http://am:9093/api/v2/alerts");
    }
}
