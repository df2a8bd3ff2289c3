//! The PostgreSQL wire protocol over the engine (datafusion-postgres, on pgwire): psql,
//! Grafana's PostgreSQL datasource and any PostgreSQL driver can query the lake.
//!
//! With authentication on, the user name is a principal's name and the password its token
//! (cleartext password authentication: use TLS). Each connection's statements run in its
//! principal's session (see [`crate::access`]): a tenant reader's connection cannot name a
//! table it may not read, and only admin connections may run DDL or change settings. Every
//! statement, refused login and refusal goes to `audit_log`.
//!
//! Written by hand on pgwire's traits, because datafusion-postgres serves one session for all
//! connections and knows nothing of our principals; its statement handling (the extended
//! protocol, the `SET`/`SHOW`, transaction and cursor hooks) is reused per session.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Instant,
};

use async_trait::async_trait;
use datafusion::{
    common::ParamValues,
    logical_expr::LogicalPlan,
    prelude::SessionContext,
    sql::sqlparser::{self, ast::Statement},
};
use datafusion_postgres::{
    DfSessionService, QueryHook,
    arrow_pg::encode_dataframe,
    hooks::{
        HookClient, cursor::CursorStatementHook, set_show::SetShowHook,
        transactions::TransactionStatementHook,
    },
    pgwire::{
        api::{
            ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
            PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
            Type,
            auth::{
                DefaultServerParameterProvider, LoginInfo, StartupHandler, finish_authentication,
                protocol_negotiation, save_startup_parameters_to_metadata,
            },
            cancel::{CancelHandler, DefaultCancelHandler},
            portal::{Format, Portal},
            query::{ExtendedQueryHandler, SimpleQueryHandler},
            results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, SendableRowStream},
            stmt::QueryParser,
            store::PortalStore,
        },
        error::{ErrorInfo, PgWireError, PgWireResult},
        messages::{PgWireBackendMessage, PgWireFrontendMessage, startup::Authentication},
        types::format::FormatOptions,
    },
};
use futures::{Sink, SinkExt, StreamExt, channel::oneshot};
use tenantscope_schemas::{
    AuditEvent,
    auth::{Auth, Caller, Principal},
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{QueryEngine, access::Scope};

/// Client metadata key holding the authenticated principal's name.
const PRINCIPAL: &str = "tenantscope.principal";

/// Serves the PostgreSQL wire on `listener` until the process ends; TLS when `tls` is set (and
/// then a connection that does not ask for TLS is refused at login).
pub async fn serve(
    engine: &QueryEngine,
    listener: TcpListener,
    auth: Auth,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let connections = Arc::new(ConnectionManager::new());
    let handlers = Arc::new(Handlers {
        cancel: Arc::new(DefaultCancelHandler::new(Arc::clone(&connections))),
        service: Arc::new(Service(Arc::new(Sessions {
            engine: engine.clone(),
            auth: auth.clone(),
            sessions: Mutex::default(),
        }))),
        startup: Arc::new(Login {
            engine: engine.clone(),
            auth,
            tls_required: tls.is_some(),
            keys: RandomPidSecretKeyGenerator::default(),
            connections,
        }),
    });
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot accept a PostgreSQL connection.");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let handlers = Arc::clone(&handlers);
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = datafusion_postgres::pgwire::tokio::process_socket(socket, tls, handlers).await {
                tracing::debug!(%addr, error = %e, "A PostgreSQL connection ended with an error.");
            }
        });
    }
}

struct Handlers {
    service: Arc<Service>,
    startup: Arc<Login>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.service)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.service)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Cleartext password login against the principals file.
struct Login {
    engine: QueryEngine,
    auth: Auth,
    tls_required: bool,
    /// Backend key data, so that a client can cancel its running query.
    keys: RandomPidSecretKeyGenerator,
    connections: Arc<ConnectionManager>,
}

fn refuse(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message)))
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.tls_required && !client.is_secure() {
                    self.failure(client, "a connection without TLS");
                    return Err(refuse(
                        "28000",
                        "this server requires TLS (sslmode=require or stronger)".into(),
                    ));
                }
                match &self.auth {
                    Auth::Off => {
                        client.metadata_mut().insert(PRINCIPAL.into(), Principal::anonymous().name);
                        self.logged_in(client);
                        finish_authentication(client, &DefaultServerParameterProvider::default()).await?;
                    }
                    Auth::On(_) => {
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword))
                            .await?;
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let Auth::On(principals) = &self.auth else { return Ok(()) };
                let pwd = pwd.into_password()?;
                let user = LoginInfo::from_client_info(client).user().unwrap_or_default().to_string();
                match principals.authenticate_as(&user, &pwd.password) {
                    Some(p) => {
                        client.metadata_mut().insert(PRINCIPAL.into(), p.name.clone());
                        self.logged_in(client);
                        finish_authentication(client, &DefaultServerParameterProvider::default()).await?;
                    }
                    None => {
                        self.failure(client, &format!("a wrong token for user {user:?}"));
                        return Err(PgWireError::InvalidPassword(user));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Login {
    /// Gives the connection its backend key and registers it, so that its queries can be
    /// cancelled (as pgwire's own login handlers do).
    fn logged_in<C: ClientInfo>(&self, client: &mut C) {
        let (pid, secret) = self.keys.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let (handle, guard) = self.connections.register(pid, secret);
        client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
    }

    fn failure<C: ClientInfo>(&self, client: &C, what: &str) {
        let user = LoginInfo::from_client_info(client).user().map(str::to_string);
        tracing::warn!(addr = %client.socket_addr(), ?user, "PostgreSQL login refused: {what}.");
        self.engine.audit(AuditEvent {
            actor: user,
            target: Some("pg".into()),
            detail: Some(format!("login refused: {what}")),
            remote_addr: Some(client.socket_addr().to_string()),
            outcome: Some("denied".into()),
            ..AuditEvent::new("auth.failure")
        });
    }
}

/// Runs each connection's statements in its principal's session.
struct Service(Arc<Sessions>);

/// An admin connection's own session: the engine's catalog (tables, and views an admin
/// creates, are everyone's) with a copy of its configuration, so that the connection's `SET
/// datafusion.…` changes that connection only, not the other connections or the HTTP API.
/// (Other scopes may only `SET` the client settings datafusion-postgres keeps per connection.)
struct ConnectionSession(Arc<DfSessionService>);

/// The session of each scope, made when first used.
struct Sessions {
    engine: QueryEngine,
    auth: Auth,
    sessions: Mutex<HashMap<Scope, Arc<DfSessionService>>>,
}

impl Sessions {
    fn caller<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<Caller> {
        let name = client.metadata().get(PRINCIPAL).cloned().unwrap_or_default();
        let principal = match &self.auth {
            Auth::Off => Arc::new(Principal::anonymous()),
            Auth::On(p) => p.get(&name).ok_or_else(|| refuse("28000", "not logged in".into()))?,
        };
        Ok(Caller { principal, remote_addr: Some(client.socket_addr().to_string()) })
    }

    /// The session `caller`'s statements on `client`'s connection run in: one per scope, shared
    /// by its connections, except that each admin connection has its own (see
    /// [`ConnectionSession`]).
    async fn session<C: ClientInfo + ?Sized>(
        &self,
        caller: &Caller,
        client: &C,
    ) -> PgWireResult<Arc<DfSessionService>> {
        let p = &caller.principal;
        let Some(scope) = self.engine.scope(p) else {
            return Err(refuse(
                "42501",
                format!("permission denied: {} ({}) may not run queries", p.name, p.role),
            ));
        };
        if scope == Scope::Admin {
            if let Some(own) = client.session_extensions().get::<ConnectionSession>() {
                return Ok(Arc::clone(&own.0));
            }
            let ctx = self.engine.connection_session();
            let service = Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), Self::hooks(&scope)));
            client.session_extensions().insert(ConnectionSession(Arc::clone(&service)));
            // Kept by scope too, for `ScopedParser::any_parser`.
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(scope)
                .or_insert_with(|| Arc::clone(&service));
            return Ok(service);
        }
        if let Some(s) = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(&scope) {
            return Ok(Arc::clone(s));
        }
        let ctx = self.engine.session(&scope).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let service = Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), Self::hooks(&scope)));
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(scope, Arc::clone(&service));
        Ok(service)
    }

    /// The statement hooks of a session of `scope`.
    fn hooks(scope: &Scope) -> Vec<Arc<dyn QueryHook>> {
        let mut hooks: Vec<Arc<dyn QueryHook>> = Vec::new();
        if *scope != Scope::Admin {
            hooks.push(Arc::new(ReadOnly));
        }
        hooks.push(Arc::new(CursorStatementHook));
        hooks.push(Arc::new(ShowSetting));
        hooks.push(Arc::new(SetShowHook));
        hooks.push(Arc::new(TransactionStatementHook));
        hooks.push(Arc::new(MapsAsJson));
        hooks
    }

    /// The audit event of `sql` run by `caller`, with the tables it names.
    fn event(&self, caller: &Caller, sql: &str) -> AuditEvent {
        let mut event = self.engine.query_event(caller, sql);
        event.target = Some("pg".into());
        event
    }
}

/// Records a statement's audit event when its last result stream ends (or at once, when it
/// returned none), with the rows sent and the time until then.
struct Audited {
    engine: QueryEngine,
    event: Mutex<Option<AuditEvent>>,
    started: Instant,
    rows: AtomicI64,
    failed: AtomicBool,
}

impl Audited {
    fn new(engine: &QueryEngine, event: AuditEvent) -> Arc<Self> {
        Arc::new(Self {
            engine: engine.clone(),
            event: Mutex::new(Some(event)),
            started: Instant::now(),
            rows: AtomicI64::new(0),
            failed: AtomicBool::new(false),
        })
    }

    fn error(&self, e: &PgWireError) {
        self.failed.store(true, Ordering::Relaxed);
        if let Some(ev) = self.event.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            // 42501 insufficient_privilege: the refusals of `ReadOnly` and `Sessions::session`.
            let denied = matches!(e, PgWireError::UserError(info) if info.code == "42501");
            ev.outcome = Some(if denied { "denied" } else { "error" }.into());
            ev.detail = Some(e.to_string());
        }
    }

    /// The response with its rows counted into this event, and cancellable while it streams.
    fn count(
        self: &Arc<Self>,
        response: Response,
        cancel: Option<oneshot::Receiver<()>>,
        deadline: Option<tokio::time::Instant>,
    ) -> Response {
        let Response::Query(q) = response else { return response };
        let me = Arc::clone(self);
        let rows = cancellable(q.data_rows, cancel, deadline).inspect(move |r| match r {
            Ok(_) => {
                me.rows.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => me.error(e),
        });
        Response::Query(QueryResponse::new(q.row_schema, rows.boxed()))
    }
}

/// A fresh cancel receiver for the connection: pgwire listens for a CancelRequest only while
/// `do_query` runs, but DataFusion computes most answers while they stream out afterwards.
async fn streaming_cancel<C: ClientInfo + ?Sized>(client: &C) -> Option<oneshot::Receiver<()>> {
    let handle = client.session_extensions().get::<Arc<ConnectionHandle>>()?;
    Some(handle.start_query().await)
}

/// The client's `statement_timeout` (`SET statement_timeout = '5s'`), which datafusion-postgres's
/// SET hook keeps in the connection's metadata. It bounds only the planning there (the plan runs
/// while its rows stream out, after that); here it bounds the streaming too, see [`cancellable`].
fn statement_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<std::time::Duration> {
    client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(std::time::Duration::from_millis)
}

/// When the rows of a statement starting now must have been sent, by the client's timeout.
fn deadline<C: ClientInfo + ?Sized>(client: &C) -> Option<tokio::time::Instant> {
    statement_timeout(client).map(|t| tokio::time::Instant::now() + t)
}

/// The rows until a cancel arrives or the deadline passes, then the query-canceled error
/// (57014, with PostgreSQL's message for a timeout) and the end. Dropping the rows stops the
/// plan's tasks.
fn cancellable(
    rows: SendableRowStream,
    cancel: Option<oneshot::Receiver<()>>,
    deadline: Option<tokio::time::Instant>,
) -> SendableRowStream {
    if cancel.is_none() && deadline.is_none() {
        return rows;
    }
    // One timer for the whole statement, not one per row.
    let timer = deadline.map(|at| Box::pin(tokio::time::sleep_until(at)));
    futures::stream::unfold(
        (rows, cancel, timer, false),
        |(mut rows, mut cancel, mut timer, done)| async move {
            if done {
                return None;
            }
            loop {
                tokio::select! {
                    r = rows.next() => return r.map(|r| (r, (rows, cancel, timer, false))),
                    sent = async {
                        match cancel.as_mut() {
                            Some(rx) => rx.await.is_ok(),
                            None => std::future::pending().await,
                        }
                    } => {
                        if sent {
                            return Some((Err(PgWireError::QueryCanceled), (rows, None, None, true)));
                        }
                        // The connection started another query or closed: no cancel for this one.
                        cancel = None;
                    }
                    () = async {
                        match timer.as_mut() {
                            Some(sleep) => sleep.as_mut().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        let timeout = PgWireError::UserError(Box::new(ErrorInfo::new(
                            "ERROR".into(),
                            "57014".into(),
                            "canceling statement due to statement timeout".into(),
                        )));
                        return Some((Err(timeout), (rows, None, None, true)));
                    }
                }
            }
        },
    )
    .boxed()
}

impl Drop for Audited {
    fn drop(&mut self) {
        let Some(mut event) = self.event.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        event.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
        if !self.failed.load(Ordering::Relaxed) {
            event.rows = Some(self.rows.load(Ordering::Relaxed));
            event.outcome = Some("ok".into());
        }
        self.engine.audit(event);
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let caller = self.0.caller(client)?;
        let audited = Audited::new(&self.0.engine, self.0.event(&caller, query));
        let result = match self.0.session(&caller, client).await {
            Ok(s) => SimpleQueryHandler::do_query(s.as_ref(), client, query).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(responses) => {
                let mut out = Vec::with_capacity(responses.len());
                // Read after the statements ran: `SET statement_timeout` in the same string counts.
                let deadline = deadline(client);
                for r in responses {
                    out.push(audited.count(r, streaming_cancel(client).await, deadline));
                }
                Ok(out)
            }
            Err(e) => {
                audited.error(&e);
                Err(e)
            }
        }
    }
}

type Stmt = (String, Option<(Statement, LogicalPlan)>);

/// Parses each statement in its connection's session.
struct ScopedParser {
    service: Arc<Sessions>,
}

#[async_trait]
impl QueryParser for ScopedParser {
    type Statement = Stmt;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Stmt>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let service = &self.service;
        let caller = service.caller(client)?;
        let session = service.session(&caller, client).await?;
        let parsed = session.query_parser().parse_sql(client, sql, types).await;
        if let Err(e) = &parsed {
            let audited = Audited::new(&service.engine, service.event(&caller, sql));
            audited.error(e);
        }
        parsed
    }

    fn get_parameter_types(&self, stmt: &Stmt) -> PgWireResult<Vec<Type>> {
        self.any_parser()?.get_parameter_types(stmt)
    }

    fn get_result_schema(&self, stmt: &Stmt, column_format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let fields = self.any_parser()?.get_result_schema(stmt, column_format)?;
        Ok(match &stmt.1 {
            Some((_, plan)) => announce_json(fields, plan.schema().as_arrow()),
            None => fields,
        })
    }
}

impl ScopedParser {
    /// Parameter and result types come from the statement's plan, not from a session: any
    /// session's parser answers them.
    fn any_parser(&self) -> PgWireResult<Arc<datafusion_postgres::Parser>> {
        let sessions = self.service.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .values()
            .next()
            .map(|s| s.query_parser())
            .ok_or_else(|| refuse("XX000", "no session has parsed this statement".into()))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = Stmt;
    type QueryParser = ScopedParser;

    fn query_parser(&self) -> Arc<ScopedParser> {
        Arc::new(ScopedParser { service: Arc::clone(&self.0) })
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Stmt>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Stmt>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let caller = self.0.caller(client)?;
        let audited = Audited::new(&self.0.engine, self.0.event(&caller, &portal.statement.statement.0));
        let result = match self.0.session(&caller, client).await {
            Ok(s) => ExtendedQueryHandler::do_query(s.as_ref(), client, portal, max_rows).await,
            Err(e) => Err(e),
        };
        let result = match (result, &portal.statement.statement.1) {
            (Ok(Response::Query(q)), Some((_, plan))) => {
                Ok(Response::Query(announce_json_response(q, plan.schema().as_arrow())))
            }
            (result, _) => result,
        };
        match result {
            Ok(r) => Ok(audited.count(r, streaming_cancel(client).await, deadline(client))),
            Err(e) => {
                audited.error(&e);
                Err(e)
            }
        }
    }
}

/// Refuses, for non-admin sessions, every statement that is not a read: DDL, DML, `COPY`,
/// `SET` of anything but the client's own session settings.
struct ReadOnly;

impl ReadOnly {
    fn check(statement: &Statement) -> Option<PgWireError> {
        use sqlparser::ast::Set;
        let allowed = match statement {
            Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Deallocate { .. }
            | Statement::Discard { .. } => true,
            Statement::Set(Set::SetTimeZone { local: false, .. }) => true,
            Statement::Set(Set::SingleAssignment { variable, .. }) => matches!(
                variable.to_string().to_lowercase().as_str(),
                "statement_timeout"
                    | "datestyle"
                    | "bytea_output"
                    | "intervalstyle"
                    | "application_name"
                    | "extra_float_digits"
                    | "search_path"
                    | "client_encoding"
                    | "timezone"
            ),
            _ => false,
        };
        (!allowed).then(|| {
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "42501".into(),
                format!(
                    "permission denied: only admin may run this statement ({}...)",
                    statement.to_string().chars().take(40).collect::<String>()
                ),
            )))
        })
    }
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::check(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        Self::check(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _: &LogicalPlan,
        _: &ParamValues,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::check(statement).map(Err)
    }
}

/// `SHOW datafusion.execution.batch_size` and the other DataFusion options: their value in the
/// connection's session, as a one-column, one-row answer named after the option (PostgreSQL's
/// shape). datafusion-postgres's SHOW hook, after it, answers these with an empty string.
struct ShowSetting;

impl ShowSetting {
    /// The option `statement` shows and its value, when it is a DataFusion option.
    fn of(statement: &Statement, ctx: &SessionContext) -> Option<(String, String)> {
        let Statement::ShowVariable { variable } = statement else { return None };
        let name = variable.iter().map(|v| v.value.to_lowercase()).collect::<Vec<_>>().join(".");
        if !name.starts_with("datafusion.") {
            return None;
        }
        let state = ctx.state();
        let entry = state.config_options().entries().into_iter().find(|e| e.key == name)?;
        Some((name, entry.value.unwrap_or_default()))
    }

    fn schema(name: &str) -> datafusion::arrow::datatypes::Schema {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        Schema::new(vec![Field::new(name, DataType::Utf8, true)])
    }

    /// The answer to `statement` when it shows a DataFusion option (either protocol).
    fn answer(statement: &Statement, ctx: &SessionContext) -> Option<PgWireResult<Response>> {
        let (name, value) = Self::of(statement, ctx)?;
        Some(Self::respond(&name, &value))
    }

    fn respond(name: &str, value: &str) -> PgWireResult<Response> {
        let fields =
            Arc::new(vec![FieldInfo::new(name.to_string(), None, None, Type::VARCHAR, FieldFormat::Text)]);
        let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
        encoder.encode_field(&Some(value))?;
        let row = encoder.take_row();
        Ok(Response::Query(QueryResponse::new(fields, futures::stream::iter([Ok(row)]).boxed())))
    }
}

#[async_trait]
impl QueryHook for ShowSetting {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::answer(statement, ctx)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        use datafusion::common::ToDFSchema;
        let (name, _) = Self::of(statement, ctx)?;
        Some(
            Self::schema(&name)
                .to_dfschema()
                .map(|schema| {
                    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                        produce_one_row: true,
                        schema: Arc::new(schema),
                    })
                })
                .map_err(|e| PgWireError::ApiError(Box::new(e))),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _: &LogicalPlan,
        _: &ParamValues,
        ctx: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::answer(statement, ctx)
    }
}

/// Plans queries with their map-valued columns as JSON text (see [`crate::json`]): arrow-pg has
/// no wire type for maps and refused any statement returning one. Runs after the other hooks,
/// for queries only; the simple protocol's queries are planned, run and encoded here as
/// datafusion-postgres would (from the statement already parsed).
struct MapsAsJson;

impl MapsAsJson {
    async fn plan(statement: &Statement, ctx: &SessionContext) -> PgWireResult<LogicalPlan> {
        let api = |e: datafusion::error::DataFusionError| PgWireError::ApiError(Box::new(e));
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(statement.clone())))
            .await
            .map_err(api)?;
        crate::json::maps_as_json(plan).map_err(api)
    }
}

#[async_trait]
impl QueryHook for MapsAsJson {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        let run = async {
            let plan = Self::plan(statement, ctx).await?;
            let df = ctx.execute_logical_plan(plan).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            let response = encode_dataframe(df, &Format::UnifiedText, Some(options)).await?;
            Ok(Response::Query(announce_json_response(response, &schema)))
        };
        Some(run.await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        Some(Self::plan(statement, ctx).await)
    }

    async fn handle_extended_query(
        &self,
        _: &Statement,
        _: &LogicalPlan,
        _: &ParamValues,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// `fields` with the columns `schema` marks as JSON text announced as PostgreSQL `json` (whose
/// text and binary forms are both the text itself, as encoded for `text`).
fn announce_json(fields: Vec<FieldInfo>, schema: &datafusion::arrow::datatypes::Schema) -> Vec<FieldInfo> {
    if fields.len() != schema.fields().len() {
        return fields;
    }
    fields
        .into_iter()
        .zip(schema.fields())
        .map(|(info, field)| {
            if field.metadata().get(crate::json::PG_TYPE).is_some_and(|t| t == "json") {
                FieldInfo::new(
                    info.name().to_string(),
                    info.table_id(),
                    info.column_id(),
                    Type::JSON,
                    info.format(),
                )
                .with_format_options(Arc::clone(info.format_options()))
                .with_type_size(info.type_size())
            } else {
                info
            }
        })
        .collect()
}

fn announce_json_response(
    mut response: QueryResponse,
    schema: &datafusion::arrow::datatypes::Schema,
) -> QueryResponse {
    let fields = announce_json(response.row_schema.as_ref().clone(), schema);
    response.row_schema = Arc::new(fields);
    response
}
