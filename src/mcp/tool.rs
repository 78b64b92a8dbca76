//! What an MCP tool tells its caller when the upstream API could not be called on the user's
//! behalf: the three outcomes a tool author has to tell apart, as structured tool errors.

use std::fmt;
use std::sync::Arc;

use rmcp::model::CallToolResult;
use serde_json::{json, Value};

use crate::error::Error;
use crate::machine::ReauthReason;
use crate::middleware::{StepUpRequired, Unauthorized};

/// Why a tool could not call the upstream API for the connected user, in the form the MCP
/// client needs to act on it.
///
/// | variant | when | the client should |
/// |---|---|---|
/// | [`StepUp`](ToolAuthError::StepUp) | the API answered 403 `insufficient_scope` | have the user authorize [`StepUpRequired::scopes`] (held and wanted), then call again |
/// | [`Reauthorize`](ToolAuthError::Reauthorize) | the user's grant is gone: never authorized, refresh token rejected or revoked, a refreshed token refused again | follow the login instruction, then call again |
/// | [`Unavailable`](ToolAuthError::Unavailable) | the refresh is failing for now (provider outage, store down, timeout) | call again later; nothing for the user to do |
///
/// [`into_call_tool_result`](ToolAuthError::into_call_tool_result) turns it into an MCP tool
/// error (`isError: true`) whose `structuredContent` carries an `error` code
/// (`insufficient_scope`, `reauthorization_required`, `upstream_unavailable`) and the fields
/// to act on; its text content is the same JSON, for clients that read text only.
///
/// It never carries a token: the MCP client's token is never involved (the server does not
/// pass it upstream), and the upstream token stays in the server's credential.
///
/// # Examples
/// ```
/// use keepfresh::mcp::ToolAuthError;
/// use keepfresh::Error;
///
/// let login = "Sign in again: open https://mcp.example.com/connect/upstream";
/// let error = ToolAuthError::from_error(Error::not_authorized(), login);
/// let result = error.into_call_tool_result();
/// assert_eq!(result.is_error, Some(true));
/// let body = result.structured_content.unwrap();
/// assert_eq!(body["error"], "reauthorization_required");
/// assert_eq!(body["reason"], "never_authorized");
/// assert_eq!(body["login"], login);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ToolAuthError {
    /// The upstream API wants a scope the user's token lacks (HTTP 403 `insufficient_scope`).
    /// A refresh cannot add scope: the user must authorize again with the scopes listed.
    StepUp(StepUpRequired),
    /// The user must authorize the server again; `login` says how.
    Reauthorize {
        /// Why; `None`: the user never authorized the server with the upstream.
        reason: Option<ReauthReason>,
        /// What the user has to do, as configured by the server (a URL or a command).
        login: Arc<str>,
    },
    /// No token for now: the refresh is failing transiently, the store is unavailable, or
    /// the wait timed out. The grant is intact; calling again later can succeed.
    Unavailable(Error),
}

impl ToolAuthError {
    /// Classifies an error from [`Credential::token`](crate::Credential::token) (or from a
    /// pool's `get_or_build`): never authorized and re-authorization required become
    /// [`Reauthorize`](ToolAuthError::Reauthorize) with `login`, everything else
    /// [`Unavailable`](ToolAuthError::Unavailable).
    ///
    /// See the [type-level example](ToolAuthError#examples).
    pub fn from_error(error: Error, login: &str) -> Self {
        if error.is_not_authorized() || error.is_reauth_required() {
            ToolAuthError::Reauthorize {
                reason: error.reauth_reason(),
                login: login.into(),
            }
        } else {
            ToolAuthError::Unavailable(error)
        }
    }

    /// Classifies an error from a `reqwest-middleware` client with keepfresh's
    /// [`AuthMiddleware`](crate::middleware::AuthMiddleware): a [`StepUpRequired`] becomes
    /// [`StepUp`](ToolAuthError::StepUp); a keepfresh [`Error`] or an [`Unauthorized`] (the
    /// token was refused and no new one could be had) goes through
    /// [`from_error`](ToolAuthError::from_error). `None` for an error that is not about
    /// authorization (connection refused, timeout of the API itself…): the tool reports those
    /// as it sees fit.
    ///
    /// ```
    /// use keepfresh::mcp::ToolAuthError;
    /// let plain = reqwest_middleware::Error::middleware(std::io::Error::other("no route"));
    /// assert!(ToolAuthError::from_middleware(&plain, "log in").is_none());
    /// let auth = reqwest_middleware::Error::middleware(keepfresh::Error::not_authorized());
    /// assert!(matches!(
    ///     ToolAuthError::from_middleware(&auth, "log in"),
    ///     Some(ToolAuthError::Reauthorize { .. })
    /// ));
    /// ```
    pub fn from_middleware(error: &reqwest_middleware::Error, login: &str) -> Option<Self> {
        let reqwest_middleware::Error::Middleware(error) = error else {
            return None;
        };
        if let Some(step_up) = error.downcast_ref::<StepUpRequired>() {
            return Some(ToolAuthError::StepUp(step_up.clone()));
        }
        if let Some(unauthorized) = error.downcast_ref::<Unauthorized>() {
            return Some(Self::from_error(unauthorized.error().clone(), login));
        }
        error
            .downcast_ref::<Error>()
            .map(|e| Self::from_error(e.clone(), login))
    }

    /// The user must authorize again, for a reason the server decided itself: typically the
    /// upstream API answered 401 to the retry with a freshly refreshed token, so the grant
    /// was revoked at the provider.
    ///
    /// ```
    /// use keepfresh::mcp::ToolAuthError;
    /// let e = ToolAuthError::reauthorize("run `app login`");
    /// assert_eq!(e.into_call_tool_result().structured_content.unwrap()["reason"], "token_rejected");
    /// ```
    pub fn reauthorize(login: &str) -> Self {
        ToolAuthError::Reauthorize {
            reason: Some(ReauthReason::TokenRejected),
            login: login.into(),
        }
    }

    /// The machine-readable error code: `insufficient_scope`, `reauthorization_required` or
    /// `upstream_unavailable`.
    ///
    /// ```
    /// # use keepfresh::mcp::ToolAuthError;
    /// assert_eq!(ToolAuthError::reauthorize("log in").code(), "reauthorization_required");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            ToolAuthError::StepUp(_) => "insufficient_scope",
            ToolAuthError::Reauthorize { .. } => "reauthorization_required",
            ToolAuthError::Unavailable(_) => "upstream_unavailable",
        }
    }

    /// The structured content of the tool error:
    ///
    /// - step-up: `{"error": "insufficient_scope", "scopes": [..], "scope": "..",
    ///   "resource_metadata": ..?, "message": ".."}`;
    /// - re-authorization: `{"error": "reauthorization_required", "reason": "..", "login":
    ///   "..", "message": ".."}`, `reason` one of `never_authorized`, `no_refresh_token`,
    ///   `invalid_grant`, `response_lost`, `invalid_client`, `configuration`,
    ///   `token_rejected`;
    /// - unavailable: `{"error": "upstream_unavailable", "message": ".."}`.
    ///
    /// ```
    /// # use keepfresh::mcp::ToolAuthError;
    /// let body = ToolAuthError::reauthorize("log in").structured();
    /// assert_eq!(body["login"], "log in");
    /// ```
    pub fn structured(&self) -> Value {
        let message = self.to_string();
        match self {
            ToolAuthError::StepUp(step_up) => {
                let mut body = json!({
                    "error": self.code(),
                    "scopes": step_up.scopes(),
                    "scope": step_up.scope(),
                    "message": message,
                });
                if let Some(metadata) = step_up.resource_metadata() {
                    body["resource_metadata"] = metadata.into();
                }
                body
            }
            ToolAuthError::Reauthorize { reason, login } => json!({
                "error": self.code(),
                "reason": reason_code(*reason),
                "login": &**login,
                "message": message,
            }),
            ToolAuthError::Unavailable(_) => json!({
                "error": self.code(),
                "message": message,
            }),
        }
    }

    /// The MCP tool result to return: `isError: true` with [`structured`](Self::structured)
    /// as its structured and text content.
    ///
    /// See the [type-level example](ToolAuthError#examples).
    pub fn into_call_tool_result(self) -> CallToolResult {
        CallToolResult::structured_error(self.structured())
    }
}

/// The `reason` field of a re-authorization error.
fn reason_code(reason: Option<ReauthReason>) -> &'static str {
    match reason {
        None => "never_authorized",
        Some(ReauthReason::TokenRejected) => "token_rejected",
        Some(ReauthReason::NoRefreshToken) => "no_refresh_token",
        Some(ReauthReason::InvalidGrant) => "invalid_grant",
        Some(ReauthReason::ResponseLost) => "response_lost",
        Some(ReauthReason::InvalidClient) => "invalid_client",
        Some(ReauthReason::Configuration) => "configuration",
    }
}

impl From<ToolAuthError> for CallToolResult {
    fn from(error: ToolAuthError) -> Self {
        error.into_call_tool_result()
    }
}

impl fmt::Display for ToolAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolAuthError::StepUp(step_up) => write!(
                f,
                "the upstream API needs more access: authorize scope \"{}\" and call again",
                step_up.scope()
            ),
            ToolAuthError::Reauthorize {
                reason: Some(reason),
                login,
            } => write!(
                f,
                "authorization with the upstream API is needed ({reason}): {login}"
            ),
            ToolAuthError::Reauthorize {
                reason: None,
                login,
            } => write!(
                f,
                "authorization with the upstream API is needed (never authorized): {login}"
            ),
            ToolAuthError::Unavailable(error) => write!(
                f,
                "the upstream API cannot be authorized right now, try again later: {error}"
            ),
        }
    }
}

impl std::error::Error for ToolAuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ToolAuthError::StepUp(step_up) => Some(step_up),
            ToolAuthError::Unavailable(error) => Some(error),
            ToolAuthError::Reauthorize { .. } => None,
        }
    }
}
