//! The example MCP server over Streamable HTTP: many users, each authenticated by the bearer
//! token they present, each calling the upstream API with their own upstream grant.
//!
//! ```text
//! mcp-server-http --listen 127.0.0.1:8765 --users users.json --store-dir tokens/ \
//!     --token-url http://127.0.0.1:8080/token --api-url http://127.0.0.1:8080/resource
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use keepfresh_mcp_example::{
    inbound, main_with, read_users, Stores, Upstream, UpstreamArgs, UpstreamTools,
};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

#[derive(Parser)]
#[command(about = "The keepfresh example MCP server over Streamable HTTP")]
struct Args {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: String,
    /// The users file: user name -> SHA-256 (hex) of their bearer token.
    #[arg(long)]
    users: PathBuf,
    /// Directory of the users' upstream token files (`<user>.json`).
    #[arg(long)]
    store_dir: PathBuf,
    #[command(flatten)]
    upstream: UpstreamArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    main_with("mcp-server-http", run).await
}

async fn run(args: Args) -> Result<(), String> {
    let users = Arc::new(read_users(&args.users)?);
    let upstream = Arc::new(Upstream::new(
        &args.upstream,
        Stores::PerUser(args.store_dir),
    )?);
    let service = StreamableHttpService::new(
        move || Ok(UpstreamTools::for_http(upstream.clone())),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service).layer(
        axum::middleware::from_fn_with_state(users, inbound::authenticate),
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // The one line on stdout: where to connect (the tests read it).
    println!("listening on http://{address}/mcp");
    tracing::info!(%address, "serving MCP over Streamable HTTP at /mcp");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
