//! An MCP server on rmcp whose tools call an upstream HTTP API on behalf of the connected
//! user, with that user's own upstream token from a keepfresh pool — never with the token the
//! MCP client presented to this server.
//!
//! Two binaries share it: `mcp-server-http` (Streamable HTTP, many users, each identified by
//! the bearer token they present) and `mcp-server-stdio` (one local user, as a desktop MCP
//! client starts it). Their tools show the three outcomes a tool author has to handle:
//!
//! - `read_resource`: the upstream resource, with a fresh token (refreshed ahead of expiry,
//!   one refresh per token generation however many calls run at once);
//! - `admin_report`: an upstream resource that needs a scope no grant has, answered with a
//!   structured step-up error naming the scopes;
//! - any tool, for a user with no usable grant: a structured re-authorization error with the
//!   login instruction.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use keepfresh::mcp::ToolAuthError;
use keepfresh::middleware::AuthMiddleware;
use keepfresh::oauth::HttpRefresher;
use keepfresh::pool::{CredentialKey, CredentialPool};
use keepfresh::store::FileStore;
use keepfresh::Credential;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, ErrorData, RoleServer};
use serde_json::json;
use sha2::{Digest, Sha256};

pub mod inbound;

/// Where the upstream API and its authorization server are, and how this server is
/// registered with it.
#[derive(Clone, Debug, clap::Args)]
pub struct UpstreamArgs {
    /// The upstream authorization server's token endpoint.
    #[arg(long)]
    pub token_url: String,
    /// The upstream API's base URL (`read_resource` gets `<api-url>`, `admin_report`
    /// gets `<api-url>/admin`).
    #[arg(long)]
    pub api_url: String,
    /// This server's client id at the upstream authorization server.
    #[arg(long, default_value = "keepfresh-mcp-example")]
    pub client_id: String,
    /// What a user is told to do when their upstream grant is gone.
    #[arg(
        long,
        default_value = "Connect your upstream account again: run `keepfresh login` with this server's upstream profile, then retry"
    )]
    pub login: String,
}

/// Who a tool call is for: a user name this server authenticated (never a token).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct User(Arc<str>);

impl User {
    /// A user name: 1 to 64 ASCII letters, digits, `-` or `_` (it names the user's token
    /// file).
    ///
    /// # Errors
    /// A message naming the rule when `name` breaks it.
    pub fn new(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(User(name.into()))
        } else {
            Err(format!(
                "user name {name:?}: use 1 to 64 letters, digits, '-' or '_'"
            ))
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the users' upstream token sets live.
#[derive(Clone, Debug)]
pub enum Stores {
    /// One file per user in this directory: `<dir>/<user>.json`.
    PerUser(PathBuf),
    /// One file for the one local user (the desktop case: every server process the MCP client
    /// starts shares it, and they take turns refreshing through its lease).
    Single(PathBuf),
}

impl Stores {
    fn path(&self, user: &User) -> PathBuf {
        match self {
            Stores::PerUser(dir) => dir.join(format!("{}.json", user.name())),
            Stores::Single(file) => file.clone(),
        }
    }
}

/// The upstream API on behalf of this server's users: one keepfresh credential per user in
/// one pool (one scheduler refreshes them all ahead of expiry), each backed by the user's
/// token file.
pub struct Upstream {
    pool: CredentialPool,
    refresher: HttpRefresher,
    http: reqwest::Client,
    api_url: String,
    issuer: String,
    client_id: String,
    login: String,
    stores: Stores,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("api_url", &self.api_url)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("stores", &self.stores)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The upstream described by `args`, with token files in `stores`.
    ///
    /// # Errors
    /// A token URL the refresher refuses.
    pub fn new(args: &UpstreamArgs, stores: Stores) -> Result<Self, String> {
        let refresher = HttpRefresher::builder(args.token_url.clone(), args.client_id.clone())
            .build()
            .map_err(|e| format!("--token-url: {e}"))?;
        let issuer = args
            .token_url
            .rsplit_once('/')
            .map_or(args.token_url.as_str(), |(base, _)| base)
            .to_owned();
        Ok(Upstream {
            pool: CredentialPool::new(),
            refresher,
            http: reqwest::Client::new(),
            api_url: args.api_url.trim_end_matches('/').to_owned(),
            issuer,
            client_id: args.client_id.clone(),
            login: args.login.clone(),
            stores,
        })
    }

    fn key(&self, user: &User) -> CredentialKey {
        CredentialKey::new(self.issuer.clone(), self.client_id.clone())
            .resource(self.api_url.clone())
            .subject(user.name())
    }

    /// `user`'s credential: built on first use from their token file, then shared by every
    /// tool call of theirs.
    async fn credential(&self, user: &User) -> Result<Credential, ToolAuthError> {
        self.pool
            .get_or_build(&self.key(user), || async {
                let store = FileStore::open(self.stores.path(user))?;
                Ok(Credential::builder(self.refresher.clone())
                    .store(store)
                    .name(user.name()))
            })
            .await
            .map_err(|e| ToolAuthError::from_error(e, &self.login))
    }

    /// `GET <api-url><path>` as `user`, as a tool result.
    pub async fn get(&self, user: &User, path: &str) -> CallToolResult {
        let credential = match self.credential(user).await {
            Ok(c) => c,
            Err(e) => return self.failed(user, e),
        };
        let api = reqwest_middleware::ClientBuilder::new(self.http.clone())
            .with(AuthMiddleware::new(Arc::new(credential)))
            .build();
        match api.get(format!("{}{path}", self.api_url)).send().await {
            Ok(response) if response.status().is_success() => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                CallToolResult::structured(json!({ "user": user.name(), "upstream": body }))
            }
            // The retry with a refreshed token was refused too: the grant is gone upstream.
            Ok(response) if response.status() == 401 => {
                self.failed(user, ToolAuthError::reauthorize(&self.login))
            }
            Ok(response) => CallToolResult::error(vec![ContentBlock::text(format!(
                "the upstream API answered {}",
                response.status()
            ))]),
            Err(e) => match ToolAuthError::from_middleware(&e, &self.login) {
                Some(auth) => self.failed(user, auth),
                None => CallToolResult::error(vec![ContentBlock::text(format!(
                    "the upstream API could not be reached: {e}"
                ))]),
            },
        }
    }

    fn failed(&self, user: &User, error: ToolAuthError) -> CallToolResult {
        tracing::info!(user = ?user, error = error.code(), "tool call not authorized upstream");
        if let ToolAuthError::Reauthorize { .. } = error {
            // Forget the credential: once the user has authorized again (a new token file),
            // their next call builds it anew from the file.
            self.pool.remove(&self.key(user));
        }
        error.into_call_tool_result()
    }
}

/// The MCP tools. Over Streamable HTTP the user is the one [`inbound`] authenticated for the
/// request; over stdio it is the one local user.
#[derive(Clone, Debug)]
pub struct UpstreamTools {
    upstream: Arc<Upstream>,
    local_user: Option<User>,
}

impl UpstreamTools {
    /// Tools for the users [`inbound`] authenticates (Streamable HTTP).
    pub fn for_http(upstream: Arc<Upstream>) -> Self {
        UpstreamTools {
            upstream,
            local_user: None,
        }
    }

    /// Tools for one local user (stdio).
    pub fn for_local_user(upstream: Arc<Upstream>, user: User) -> Self {
        UpstreamTools {
            upstream,
            local_user: Some(user),
        }
    }

    fn user(&self, ctx: &RequestContext<RoleServer>) -> Result<User, ErrorData> {
        if let Some(user) = &self.local_user {
            return Ok(user.clone());
        }
        ctx.extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<User>())
            .cloned()
            .ok_or_else(|| ErrorData::invalid_request("no authenticated user", None))
    }
}

#[tool_router(server_handler)]
impl UpstreamTools {
    /// Reads the upstream resource as the connected user.
    #[tool(description = "Read the upstream resource as the connected user")]
    async fn read_resource(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let user = self.user(&ctx)?;
        Ok(self.upstream.get(&user, "").await)
    }

    /// Reads the upstream admin report, which needs the `admin` scope.
    #[tool(description = "Read the upstream admin report (needs the admin scope)")]
    async fn admin_report(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let user = self.user(&ctx)?;
        Ok(self.upstream.get(&user, "/admin").await)
    }
}

/// The SHA-256 of a bearer token, as the users file stores it (hex).
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The users file: user name → SHA-256 (hex) of the bearer token they present to this server.
///
/// ```json
/// { "alice": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }
/// ```
///
/// # Errors
/// An unreadable or malformed file, a bad user name or digest.
pub fn read_users(path: &Path) -> Result<HashMap<[u8; 32], User>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let entries: HashMap<String, String> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut users = HashMap::new();
    for (name, digest) in entries {
        let user = User::new(&name)?;
        let bytes = decode_digest(&digest)
            .ok_or_else(|| format!("user {name}: the digest must be 64 hex digits"))?;
        users.insert(bytes, user);
    }
    Ok(users)
}

fn decode_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The `main` of both binaries: logging ([`init_logging`]), the command line `A`, then `run`.
/// An error is printed to stderr as `<program>: <error>` and exits with status 2; a bad
/// command line exits as clap does (usage on stderr, status 2).
pub async fn main_with<A, F>(program: &str, run: impl FnOnce(A) -> F) -> ExitCode
where
    A: clap::Parser,
    F: Future<Output = Result<(), String>>,
{
    init_logging();
    let args = A::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr (stdout is the stdio transport's), `RUST_LOG` or `info,keepfresh=debug`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,keepfresh=debug"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
