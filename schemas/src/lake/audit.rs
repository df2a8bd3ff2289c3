//! The `audit_log` table: who did what, when, and how it ended.
//!
//! Queries arrive many a second (a Grafana dashboard sends one per panel), so events are not
//! committed one by one: an [`Auditor`] queues them and one background task appends what is
//! queued every interval, in one commit. [`Auditor::flush`] writes what is queued now (a
//! server calls it on the way out). The queue is bounded: when the lake is unreachable for
//! long, the oldest unwritten events are dropped and the count of dropped events is logged
//! and recorded as an event of its own once the lake answers again.

use std::{collections::HashMap, sync::Arc, time::Duration};

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::{Lake, LakeError, Result};
use crate::{columns::DATE, tables::Table};

/// One row of `audit_log`. Every field but `action` is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditEvent {
    /// When it happened.
    pub time: Option<DateTime<Utc>>,
    /// The principal (or the process, for maintenance).
    pub actor: Option<String>,
    /// The principal's role.
    pub role: Option<String>,
    /// What: `query`, `auth.failure`, `import.billing`, `rules.reload`, `maintenance.compact`, ...
    pub action: String,
    /// What it was done to (a table, a rule file, a listener).
    pub target: Option<String>,
    /// The tenant the principal is confined or bound to.
    pub tenant_id: Option<String>,
    /// Free text: the error, the counts.
    pub detail: Option<String>,
    /// The client's address.
    pub remote_addr: Option<String>,
    /// The SQL of a query.
    pub statement: Option<String>,
    /// The tables and views a query names.
    pub tables: Option<Vec<String>>,
    /// Rows returned (a query) or written (an import).
    pub rows: Option<i64>,
    /// How long it took.
    pub duration_ms: Option<f64>,
    /// `ok`, `error` or `denied`.
    pub outcome: Option<String>,
}

impl AuditEvent {
    /// An event of `action` now.
    pub fn new(action: impl Into<String>) -> Self {
        Self { time: Some(Utc::now()), action: action.into(), ..Default::default() }
    }
}

/// The rows of `audit_log` for `events`.
pub fn audit_batch(events: &[AuditEvent]) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let schema = Table::AuditLog.schema();
    let now = Utc::now();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.time.unwrap_or(now)).collect();
    let text = |f: fn(&AuditEvent) -> Option<&str>| -> ArrayRef {
        Arc::new(events.iter().map(f).collect::<StringArray>())
    };
    let mut tables = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(
        arrow::datatypes::Field::new("element", arrow::datatypes::DataType::Utf8, true),
    ));
    for e in events {
        match &e.tables {
            Some(t) => {
                for name in t {
                    tables.values().append_value(name);
                }
                tables.append(true);
            }
            None => tables.append(false),
        }
    }
    let mut cols: HashMap<&str, ArrayRef> = HashMap::new();
    cols.insert(
        crate::columns::TIME,
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(times.iter().map(|t| t.timestamp_micros()))
                .with_timezone("UTC"),
        ),
    );
    cols.insert("actor", text(|e| e.actor.as_deref()));
    cols.insert("role", text(|e| e.role.as_deref()));
    cols.insert("action", Arc::new(events.iter().map(|e| Some(e.action.as_str())).collect::<StringArray>()));
    cols.insert("target", text(|e| e.target.as_deref()));
    cols.insert(crate::columns::TENANT_ID, text(|e| e.tenant_id.as_deref()));
    cols.insert("detail", text(|e| e.detail.as_deref()));
    cols.insert("remote_addr", text(|e| e.remote_addr.as_deref()));
    cols.insert("statement", text(|e| e.statement.as_deref()));
    cols.insert("tables", Arc::new(tables.finish()));
    cols.insert("rows", Arc::new(events.iter().map(|e| e.rows).collect::<Int64Array>()));
    cols.insert("duration_ms", Arc::new(events.iter().map(|e| e.duration_ms).collect::<Float64Array>()));
    cols.insert("outcome", text(|e| e.outcome.as_deref()));
    cols.insert(
        DATE,
        Arc::new(Date32Array::from_iter_values(
            times.iter().map(|t| t.timestamp().div_euclid(86_400) as i32),
        )),
    );
    crate::types::batch_with_nulls(&schema, events.len(), cols)
}

impl Lake {
    /// Appends events to `audit_log` in one commit.
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let batch =
            audit_batch(events).map_err(|source| LakeError::Arrow { table: Table::AuditLog, source })?;
        self.append(Table::AuditLog, &[batch]).await.map(drop)
    }

    /// Appends one row to `audit_log` (who did what to what, when), at once.
    pub async fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<()> {
        let event = AuditEvent {
            actor: Some(actor.into()),
            target: Some(target.into()),
            detail: Some(detail.into()),
            outcome: Some("ok".into()),
            ..AuditEvent::new(action)
        };
        self.append_audit(&[event]).await
    }
}

enum Message {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<Result<()>>),
}

/// Queues audit events and appends them to the lake in the background (see the module).
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Message>,
}

/// Events kept while the lake does not answer.
const MAX_PENDING: usize = 100_000;

impl Auditor {
    /// Starts the writer task: queued events are appended every `every`.
    pub fn start(lake: Lake, every: Duration) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer(lake, rx, every));
        Self { tx }
    }

    /// Queues an event. Never waits: a full queue (the writer far behind) drops the event
    /// with a warning, rather than slowing the query or request it describes.
    pub fn record(&self, event: AuditEvent) {
        if let Err(e) = self.tx.try_send(Message::Event(Box::new(event))) {
            tracing::warn!(error = %e, "The audit queue is full; an audit event is dropped.");
        }
    }

    /// Appends everything queued so far.
    pub async fn flush(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_err() {
            return Ok(());
        }
        wait.await.unwrap_or(Ok(()))
    }
}

async fn writer(lake: Lake, mut rx: mpsc::Receiver<Message>, every: Duration) {
    let mut pending: Vec<AuditEvent> = Vec::new();
    let mut dropped: u64 = 0;
    let mut closed = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flush = tokio::select! {
            m = rx.recv() => match m {
                Some(Message::Event(e)) => {
                    pending.push(*e);
                    if pending.len() > MAX_PENDING {
                        let excess = pending.len() - MAX_PENDING;
                        pending.drain(..excess);
                        dropped += excess as u64;
                    }
                    continue;
                }
                Some(Message::Flush(done)) => Some(done),
                None => {
                    closed = true;
                    None
                }
            },
            _ = tick.tick() => {
                if pending.is_empty() { continue; }
                None
            }
        };
        if dropped > 0 {
            pending.push(AuditEvent {
                actor: Some("tenantscope".into()),
                detail: Some(format!("{dropped} audit events were dropped while the lake did not answer")),
                outcome: Some("error".into()),
                ..AuditEvent::new("audit.dropped")
            });
        }
        let written = lake.append_audit(&pending).await;
        match &written {
            Ok(()) => {
                pending.clear();
                dropped = 0;
            }
            Err(e) => {
                if dropped > 0 {
                    pending.pop();
                }
                tracing::warn!(error = %e, pending = pending.len(), "Cannot write the audit log; retrying.");
            }
        }
        match flush {
            Some(done) => {
                let _ = done.send(written);
            }
            None if closed => return,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn events_become_rows_with_nulls_where_unset() {
        let mut q = AuditEvent::new("query");
        q.actor = Some("alice".into());
        q.tables = Some(vec!["spans".into(), "tenants".into()]);
        q.rows = Some(3);
        let b = audit_batch(&[q, AuditEvent::new("auth.failure")]).unwrap();
        assert_eq!(b.num_rows(), 2);
        let tables = b.column_by_name("tables").unwrap().as_list::<i32>();
        assert_eq!(
            tables.value(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(),
            ["spans", "tenants"]
        );
        assert!(tables.is_null(1));
        assert!(b.column_by_name("actor").unwrap().is_null(1));
        assert_eq!(b.column_by_name("action").unwrap().as_string::<i32>().value(1), "auth.failure");
    }
}
