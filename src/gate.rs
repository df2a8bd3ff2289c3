//! Authentication and rights on the HTTP listeners (the API and OTLP/HTTP): every request but
//! `/healthz` and `/readyz` presents `Authorization: Bearer TOKEN`; the caller goes into the
//! request's extensions for the routes to use. Refusals answer 401 (with
//! `WWW-Authenticate: Bearer`) or 403, and are recorded in the audit log.

use axum::{
    Json,
    extract::{ConnectInfo, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tenantscope_schemas::{
    AuditEvent, Auditor,
    auth::{Auth, Caller, Principal, Refusal},
};

use crate::tls::Peer;

/// What a route needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Right {
    /// SQL (the engine then decides what the principal sees).
    Query,
    /// OTLP.
    Ingest,
    /// Billing and business data import.
    Import,
    /// The service's own state: metrics, rule status.
    Operate,
}

impl Right {
    fn allows(self, p: &Principal) -> bool {
        match self {
            Right::Query => p.can_query(),
            Right::Ingest => p.can_ingest(),
            Right::Import => p.can_import(),
            Right::Operate => p.can_operate(),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Right::Query => "run queries",
            Right::Ingest => "send telemetry",
            Right::Import => "import billing data",
            Right::Operate => "read the service's state",
        }
    }
}

/// The state of [`gate`]: how to authenticate, what the routes behind it need, where to record
/// refusals, and which listener this is (in the audit log).
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) auth: Auth,
    pub(crate) right: Right,
    pub(crate) auditor: Auditor,
    pub(crate) listener: &'static str,
}

/// The middleware: authenticate, check the right, pass the caller on.
pub(crate) async fn gate(State(g): State<Gate>, mut request: Request, next: Next) -> Response {
    let remote_addr = request.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.0.to_string());
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let refuse = |action: &str, principal: Option<&Principal>, why: String, status: StatusCode| {
        tracing::warn!(addr = ?remote_addr, path = %request.uri().path(), "{} request refused: {why}", g.listener);
        g.auditor.record(AuditEvent {
            actor: principal.map(|p| p.name.clone()),
            role: principal.map(|p| p.role.to_string()),
            tenant_id: principal.and_then(|p| p.tenant.clone()),
            target: Some(format!("{} {} {}", g.listener, request.method(), request.uri().path())),
            detail: Some(why.clone()),
            remote_addr: remote_addr.clone(),
            outcome: Some("denied".into()),
            ..AuditEvent::new(action)
        });
        let mut response = (status, Json(json!({ "error": why }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tenantscope\""),
            );
        }
        response
    };
    let principal = match g.auth.bearer(authorization) {
        Ok(p) => p,
        Err(Refusal::Unauthenticated(why)) => {
            return refuse("auth.failure", None, why, StatusCode::UNAUTHORIZED);
        }
    };
    if !g.right.allows(&principal) {
        let why = format!("{} ({}) may not {}", principal.name, principal.role, g.right.what());
        return refuse("access.denied", Some(&principal), why, StatusCode::FORBIDDEN);
    }
    request.extensions_mut().insert(Caller { principal, remote_addr });
    next.run(request).await
}
