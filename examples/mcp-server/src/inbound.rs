//! Who is calling: the bearer token an MCP client presents to this server, checked against
//! the users file and then removed from the request, so no tool can ever see it, let alone
//! pass it upstream.
//!
//! A stand-in for validating the tokens of this server's own authorization server (JWT
//! signature and audience, or introspection): what matters here is that the user is known
//! before the MCP layer runs, and that the MCP client's token goes no further.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::StatusCode;
use sha2::{Digest, Sha256};

use crate::User;

/// The users this server knows, by the SHA-256 of their bearer token.
pub type Users = Arc<HashMap<[u8; 32], User>>;

/// An axum middleware (`axum::middleware::from_fn_with_state`): a known bearer token puts
/// its [`User`] into the request's extensions (rmcp hands them to the tools) and is
/// removed; anything else is answered 401 with a Bearer challenge.
pub async fn authenticate(
    State(users): State<Users>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| <[u8; 32]>::from(Sha256::digest(token.trim().as_bytes())))
        .and_then(|digest| users.get(&digest).cloned());
    let Some(user) = user else {
        tracing::info!("MCP request refused: missing or unknown bearer token");
        return (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
            Body::empty(),
        )
            .into_response();
    };
    request.headers_mut().remove(AUTHORIZATION);
    request.extensions_mut().insert(user);
    next.run(request).await
}
