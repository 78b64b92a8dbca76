//! The example MCP server over stdio: one local user, as a desktop MCP client starts it
//! (often several at once); their upstream tokens in one file that every such process shares.
//!
//! ```text
//! mcp-server-stdio --store ~/.config/keepfresh-example/upstream.json \
//!     --token-url http://127.0.0.1:8080/token --api-url http://127.0.0.1:8080/resource
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use keepfresh_mcp_example::{main_with, Stores, Upstream, UpstreamArgs, UpstreamTools, User};
use rmcp::ServiceExt;

#[derive(Parser)]
#[command(about = "The keepfresh example MCP server over stdio")]
struct Args {
    /// The local user's upstream token file, shared by every server process of theirs.
    #[arg(long)]
    store: PathBuf,
    /// The local user's name (in logs and tool results).
    #[arg(long, default_value = "local")]
    user: String,
    #[command(flatten)]
    upstream: UpstreamArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    main_with("mcp-server-stdio", run).await
}

async fn run(args: Args) -> Result<(), String> {
    let user = User::new(&args.user)?;
    let upstream = Arc::new(Upstream::new(&args.upstream, Stores::Single(args.store))?);
    tracing::info!(user = ?user, "serving MCP over stdio");
    let server = UpstreamTools::for_local_user(upstream, user)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP handshake failed: {e}"))?;
    server.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}
