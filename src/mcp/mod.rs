//! keepfresh inside MCP servers and clients built on rmcp, the official MCP Rust SDK (3.11):
//! an MCP server calls upstream APIs with each user's own token, an MCP client authorizes its
//! requests to an MCP server — both with one refresh per token generation.
//!
//! # Server side: upstream APIs on behalf of the connected user
//! The MCP specification forbids passing the token the MCP client sent to the MCP server on
//! to another API: the server holds its own grant for each user with the upstream
//! authorization server. Keep those grants in a [`CredentialPool`](crate::pool::CredentialPool)
//! keyed by user ([`CredentialKey::subject`](crate::pool::CredentialKey::subject)), call the
//! upstream through [`AuthMiddleware`](crate::middleware::AuthMiddleware), and turn what went
//! wrong into a tool error with [`ToolAuthError`]:
//!
//! - a fresh token: the call goes through; concurrent tool calls of one user share one
//!   refresh, also across the server's processes through the store's lease;
//! - a step-up (403 `insufficient_scope`): a structured tool error naming the scopes to
//!   authorize;
//! - re-authorization needed (never authorized, grant revoked): a structured tool error with
//!   the login instruction.
//!
//! ```no_run
//! use std::sync::Arc;
//! use keepfresh::mcp::ToolAuthError;
//! use keepfresh::middleware::AuthMiddleware;
//! use keepfresh::pool::{CredentialKey, CredentialPool};
//! use keepfresh::store::MemoryStore;
//! use keepfresh::{Credential, Refresher};
//! use rmcp::model::{CallToolResult, ContentBlock};
//!
//! const LOGIN: &str = "Connect your account: open https://mcp.example.com/connect";
//!
//! /// A tool body: `user` is who the server authenticated (never their MCP token);
//! /// `refresher` (`oauth::HttpRefresher`, feature `http`) was built once at startup.
//! async fn list_repos(
//!     pool: &CredentialPool,
//!     refresher: &(impl Refresher + Clone),
//!     user: &str,
//! ) -> CallToolResult {
//!     let key = CredentialKey::new("https://github.com", "my-mcp-server").subject(user);
//!     let credential = match pool
//!         .get_or_build(&key, || async {
//!             // The user's store: `FileStore` (feature `file`) on a desktop, `RedisStore`
//!             // (feature `redis`) for replicas.
//!             Ok(Credential::builder(refresher.clone()).store(MemoryStore::new()))
//!         })
//!         .await
//!     {
//!         Ok(credential) => credential,
//!         Err(e) => return ToolAuthError::from_error(e, LOGIN).into(),
//!     };
//!     let api = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!         .with(AuthMiddleware::new(Arc::new(credential)))
//!         .build();
//!     match api.get("https://api.github.com/user/repos").send().await {
//!         Ok(response) if response.status().is_success() => CallToolResult::success(vec![
//!             ContentBlock::text(response.text().await.unwrap_or_default()),
//!         ]),
//!         Ok(response) if response.status() == 401 => ToolAuthError::reauthorize(LOGIN).into(),
//!         Ok(response) => CallToolResult::error(vec![ContentBlock::text(format!(
//!             "GitHub answered {}",
//!             response.status()
//!         ))]),
//!         Err(e) => match ToolAuthError::from_middleware(&e, LOGIN) {
//!             Some(auth) => auth.into(),
//!             None => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
//!         },
//!     }
//! }
//! ```
//!
//! # Client side: which to choose
//! | you want | use |
//! |---|---|
//! | one refresh per token generation however many requests, sessions and processes; the token shared with the rest of your program; refresh-ahead, backoff, persist-then-publish | [`CredentialHttpClient`]: rmcp's Streamable HTTP transport with its token from a keepfresh [`Credential`](crate::Credential) |
//! | to keep rmcp's `AuthorizationManager` (its authorization flow and refresh), with keepfresh's stores and their cross-process lease | [`RmcpStore`]: rmcp's `CredentialStore` over any [`TokenStore`](crate::store::TokenStore) |
//!
//! rmcp's manager refreshes behind a mutex, refreshes again in every caller that waited for
//! it, keeps one credential per manager, and loses a rotated refresh token when its save
//! fails; [`RmcpStore`] makes its refreshes take turns across processes (the store's lease)
//! and never lets one overwrite newer tokens, but cannot remove the extra refreshes. Choose
//! [`CredentialHttpClient`] unless you depend on the manager's flow.
//!
//! # Stores
//! | where the server runs | store |
//! |---|---|
//! | a desktop (stdio servers the MCP client starts, often several at once) | `FileStore` (or the encrypted file and keyring stores; features `file`, `encrypted`, `keyring`): the user's processes share one file and take turns through its lease |
//! | replicas behind a load balancer (Streamable HTTP) | `RedisStore` (feature `redis`): every replica sees the same tokens, one refresh across all of them |
//! | one process, tokens re-obtained at start | [`MemoryStore`](crate::store::MemoryStore) |

mod client;
mod store;
mod tool;

pub use client::{CredentialHttpClient, TransportError};
pub use store::RmcpStore;
pub use tool::ToolAuthError;
