//! The PostgreSQL wire protocol over the engine's session (datafusion-postgres, on pgwire):
//! psql, Grafana's PostgreSQL datasource and any PostgreSQL driver can query the lake.

use std::{net::SocketAddr, sync::Arc};

use datafusion_postgres::{ServerOptions, serve as serve_pg};

use crate::QueryEngine;

/// Serves the PostgreSQL wire protocol on `addr` until the process ends. The library binds
/// inside its accept loop, so a caller that wants a taken port to fail start-up checks it first
/// (as `tenantscope serve` does).
pub async fn serve(engine: &QueryEngine, addr: SocketAddr) -> std::io::Result<()> {
    let ctx = Arc::new(engine.context().clone());
    let options = ServerOptions::new().with_host(addr.ip().to_string()).with_port(addr.port());
    serve_pg(ctx, &options).await
}
