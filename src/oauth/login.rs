//! Getting the first tokens: the authorization code grant with PKCE (RFC 7636, S256 only), a
//! `state` check and the `iss` check of RFC 9207, through a loopback redirect on `127.0.0.1`
//! with an ephemeral port (RFC 8252 §7.3). The refresh engine takes over from the token set it
//! returns.
//!
//! ```no_run
//! use keepfresh::oauth::discovery::Discovery;
//! use keepfresh::oauth::login::{Login, LoginOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let metadata = Discovery::builder().build()?.discover_authorization_server("https://auth.example.com").await?;
//! let login = Login::start(&metadata, LoginOptions::new("my-client-id").scope("read")).await?;
//! println!("open {}", login.authorization_url());
//! let tokens = login.finish().await?; // waits for the browser's redirect
//! # let _ = tokens;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{redirect, Url};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use super::discovery::AuthorizationServerMetadata;
use super::{parse_token_response, HttpAnswer};
use crate::policy::RefreshPolicy;
use crate::secret::ClientSecret;
use crate::token::TokenSet;

/// What a login asks for.
///
/// ```
/// use keepfresh::oauth::login::LoginOptions;
/// let o = LoginOptions::new("client").scope("read").scope("write").resource("https://mcp.example.com/");
/// assert_eq!(o.scopes(), ["read", "write"]);
/// ```
#[derive(Clone)]
pub struct LoginOptions {
    client_id: String,
    client_secret: Option<ClientSecret>,
    scopes: Vec<String>,
    resource: Option<String>,
    timeout: Duration,
    redirect_path: String,
}

impl fmt::Debug for LoginOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginOptions")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl LoginOptions {
    /// A public client `client_id`, no scopes, no resource, five minutes to complete.
    ///
    /// See the [type-level example](LoginOptions).
    pub fn new(client_id: impl Into<String>) -> LoginOptions {
        LoginOptions {
            client_id: client_id.into(),
            client_secret: None,
            scopes: Vec::new(),
            resource: None,
            timeout: Duration::from_secs(300),
            redirect_path: "/callback".into(),
        }
    }

    /// A confidential client's secret, sent to the token endpoint with HTTP Basic.
    ///
    /// ```
    /// # use keepfresh::oauth::login::LoginOptions;
    /// let o = LoginOptions::new("c").client_secret(keepfresh::ClientSecret::new("s"));
    /// assert!(!format!("{o:?}").contains("\"s\""));
    /// ```
    pub fn client_secret(mut self, secret: ClientSecret) -> LoginOptions {
        self.client_secret = Some(secret);
        self
    }

    /// Adds a scope to ask for. Ask for what the tools need and no more.
    ///
    /// See the [type-level example](LoginOptions).
    pub fn scope(mut self, scope: impl Into<String>) -> LoginOptions {
        let scope = scope.into();
        if !scope.is_empty() && !self.scopes.contains(&scope) {
            self.scopes.push(scope);
        }
        self
    }

    /// The RFC 8707 resource (for MCP, the server's canonical URI), sent in the authorization
    /// and the token request.
    ///
    /// See the [type-level example](LoginOptions).
    pub fn resource(mut self, resource: impl Into<String>) -> LoginOptions {
        self.resource = Some(resource.into());
        self
    }

    /// How long to wait for the browser's redirect (default five minutes).
    ///
    /// ```
    /// # use keepfresh::oauth::login::LoginOptions;
    /// let o = LoginOptions::new("c").timeout(std::time::Duration::from_secs(60));
    /// # let _ = o;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> LoginOptions {
        self.timeout = timeout;
        self
    }

    /// The scopes asked for.
    ///
    /// See the [type-level example](LoginOptions).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
}

/// Why a login failed. `Display` never contains a code, a verifier, a token or a secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoginError {
    /// The authorization server does not advertise PKCE with S256; keepfresh refuses it.
    PkceUnsupported,
    /// The user (or the server) refused: the `error` code and its description.
    Denied {
        /// The OAuth error code (`access_denied`, `invalid_scope`, …).
        error: String,
        /// The server's description, if any: control characters dropped, at most 200
        /// characters, and every token-looking word (20 or more base64 or URL characters with a
        /// letter and a digit) replaced by `<redacted>`.
        description: Option<String>,
    },
    /// The redirect's `state` is not the one sent: a forged or stale redirect.
    StateMismatch,
    /// The redirect's `iss` is missing or not the issuer the request went to (a mix-up attack,
    /// RFC 9207).
    IssuerMismatch {
        /// The issuer the request went to.
        expected: String,
    },
    /// No redirect arrived in time.
    Timeout(Duration),
    /// A pasted redirect URL could not be read.
    BadRedirect(String),
    /// The loopback listener or the token request failed at the transport level.
    Io(String),
    /// The token endpoint refused the code or answered something unusable.
    Token(crate::RefreshError),
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::PkceUnsupported => f.write_str(
                "the authorization server does not advertise PKCE with S256 (code_challenge_methods_supported); keepfresh does not log in without it",
            ),
            LoginError::Denied { error, description } => {
                write!(f, "the authorization was refused ({error})")?;
                if let Some(d) = description {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
            LoginError::StateMismatch => f.write_str(
                "the redirect's state does not match this login: ignored as forged or stale; start the login again",
            ),
            LoginError::IssuerMismatch { expected } => write!(
                f,
                "the redirect did not come from {expected} (iss missing or different): possible mix-up attack, login aborted"
            ),
            LoginError::Timeout(t) => write!(
                f,
                "no answer from the browser within {}s; run the login again (or use --no-browser and paste the redirect URL)",
                t.as_secs()
            ),
            LoginError::BadRedirect(why) => write!(f, "the redirect URL cannot be used: {why}"),
            LoginError::Io(why) => write!(f, "login failed: {why}"),
            LoginError::Token(e) => write!(f, "the token endpoint refused the authorization code: {e}"),
        }
    }
}

impl std::error::Error for LoginError {}

/// A login in progress: the loopback listener is bound and the authorization URL is ready to
/// be opened in a browser.
pub struct Login {
    listener: TcpListener,
    authorization_url: Url,
    redirect_uri: String,
    state: Zeroizing<String>,
    verifier: Zeroizing<String>,
    issuer: String,
    require_iss: bool,
    token_endpoint: Url,
    options: LoginOptions,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("redirect_uri", &self.redirect_uri)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn random_b64(bytes: usize) -> Result<Zeroizing<String>, LoginError> {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    getrandom::fill(&mut buf).map_err(|e| LoginError::Io(format!("no randomness: {e}")))?;
    Ok(Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*buf),
    ))
}

/// `BASE64URL(SHA256(verifier))`.
fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

impl Login {
    /// Binds the loopback listener on `127.0.0.1` (an ephemeral port) and prepares the
    /// authorization URL with a fresh PKCE verifier and state.
    ///
    /// # Errors
    /// [`LoginError::PkceUnsupported`] when the metadata does not list S256;
    /// [`LoginError::Io`] when the listener cannot be bound.
    pub async fn start(
        metadata: &AuthorizationServerMetadata,
        options: LoginOptions,
    ) -> Result<Login, LoginError> {
        if !metadata
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
        {
            return Err(LoginError::PkceUnsupported);
        }
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| LoginError::Io(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| LoginError::Io(e.to_string()))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}{}", options.redirect_path);
        let verifier = random_b64(32)?;
        let state = random_b64(16)?;
        let mut url = metadata.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", &options.client_id);
            q.append_pair("redirect_uri", &redirect_uri);
            q.append_pair("state", &state);
            q.append_pair("code_challenge", &challenge(&verifier));
            q.append_pair("code_challenge_method", "S256");
            if !options.scopes.is_empty() {
                q.append_pair("scope", &options.scopes.join(" "));
            }
            if let Some(r) = &options.resource {
                q.append_pair("resource", r);
            }
        }
        Ok(Login {
            listener,
            authorization_url: url,
            redirect_uri,
            state,
            verifier,
            issuer: metadata.issuer.clone(),
            require_iss: metadata.authorization_response_iss_parameter_supported,
            token_endpoint: metadata.token_endpoint.clone(),
            options,
        })
    }

    /// The URL to open in the user's browser.
    ///
    /// See the [module example](self).
    pub fn authorization_url(&self) -> &Url {
        &self.authorization_url
    }

    /// The loopback redirect URI registered for this login.
    ///
    /// See the [module example](self).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the browser's redirect to the loopback listener (other requests, such as a
    /// favicon, are answered 404 and ignored), checks it and redeems the code.
    ///
    /// # Errors
    /// See [`LoginError`]: a denial, a state or issuer mismatch, the timeout, a refused code.
    pub async fn finish(self) -> Result<TokenSet, LoginError> {
        let limit = self.options.timeout;
        let query = tokio::time::timeout(limit, self.wait_for_redirect())
            .await
            .map_err(|_| LoginError::Timeout(limit))??;
        self.redeem(&query).await
    }

    /// Finishes with a redirect URL the user copied from the browser's address bar (for a
    /// login on another machine, over SSH).
    ///
    /// # Errors
    /// As [`finish`](Self::finish), and [`LoginError::BadRedirect`] for a URL that is not
    /// this login's redirect.
    pub async fn finish_with_redirect(self, pasted: &str) -> Result<TokenSet, LoginError> {
        let url =
            Url::parse(pasted.trim()).map_err(|_| LoginError::BadRedirect("not a URL".into()))?;
        if !url.as_str().starts_with(&self.redirect_uri) {
            return Err(LoginError::BadRedirect(format!(
                "it does not start with this login's redirect URI {}",
                self.redirect_uri
            )));
        }
        let query = url.query().unwrap_or_default().to_owned();
        self.redeem(&query).await
    }

    /// Accepts connections until one asks for the redirect path; returns its query.
    async fn wait_for_redirect(&self) -> Result<String, LoginError> {
        loop {
            let (mut sock, _) = self
                .listener
                .accept()
                .await
                .map_err(|e| LoginError::Io(format!("loopback listener: {e}")))?;
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // The request line is all we need; bounded, so a hostile local client cannot make
            // us buffer without end.
            while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let (path, query) = request_target(&head);
            if path != self.options.redirect_path {
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                continue;
            }
            let page = "<!doctype html><title>keepfresh</title><p>Done: you can close this window and go back to the terminal.</p>";
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = sock.write_all(answer.as_bytes()).await;
            return Ok(query.to_owned());
        }
    }

    /// Checks the redirect's parameters and redeems the code.
    async fn redeem(&self, query: &str) -> Result<TokenSet, LoginError> {
        let code = check_redirect(query, &self.state, &self.issuer, self.require_iss)?;
        self.exchange(&code).await
    }

    async fn exchange(&self, code: &str) -> Result<TokenSet, LoginError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code");
        form.append_pair("code", code);
        form.append_pair("redirect_uri", &self.redirect_uri);
        form.append_pair("code_verifier", &self.verifier);
        form.append_pair("client_id", &self.options.client_id);
        if let Some(r) = &self.options.resource {
            form.append_pair("resource", r);
        }
        let body = Zeroizing::new(form.finish());
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .retry(reqwest::retry::never())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| LoginError::Io(format!("HTTP client: {}", super::http::root_cause(&e))))?;
        let mut request = client
            .post(self.token_endpoint.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec());
        if let Some(secret) = &self.options.client_secret {
            let id: String =
                form_urlencoded::byte_serialize(self.options.client_id.as_bytes()).collect();
            let secret = Zeroizing::new(
                form_urlencoded::byte_serialize(secret.expose_secret().as_bytes())
                    .collect::<String>(),
            );
            request = request.basic_auth(id, Some(secret.as_str()));
        }
        let issued = time::OffsetDateTime::now_utc();
        let response = request.send().await.map_err(|e| {
            LoginError::Io(format!("token request: {}", super::http::root_cause(&e)))
        })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|e| {
                    LoginError::Io(format!("token answer: {}", super::http::root_cause(&e)))
                })?
                .to_vec(),
        );
        if bytes.len() > crate::limits::MAX_TOKEN_RESPONSE_BYTES {
            return Err(LoginError::Io(
                "the token answer is larger than 64 KiB".into(),
            ));
        }
        let answer = parse_token_response(HttpAnswer {
            status,
            content_type: content_type.as_deref(),
            retry_after: None,
            body: &bytes,
        })
        .map_err(|e| LoginError::Token(scrub(e, code)))?;
        let (lifetime, _) = RefreshPolicy::default().lifetime(answer.expires_in());
        let expires = time::Duration::try_from(lifetime)
            .ok()
            .and_then(|l| issued.checked_add(l))
            .ok_or_else(|| LoginError::Io("the token's expiry is out of range".into()))?;
        let mut set = TokenSet::new(
            answer.access_token().clone(),
            answer.refresh_token().cloned(),
            issued,
            expires,
        );
        let scope = answer
            .scope()
            .map(str::to_owned)
            .or_else(|| (!self.options.scopes.is_empty()).then(|| self.options.scopes.join(" ")));
        if let Some(scope) = scope {
            set = set.with_scope(scope);
        }
        Ok(set)
    }
}

/// The path and the query of the request line at the start of `head` (`GET /path?query HTTP/1.1`),
/// both empty when it is not a `GET`.
pub(crate) fn request_target(head: &[u8]) -> (String, String) {
    let line = String::from_utf8_lossy(head);
    let target = line
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (path.to_owned(), query.to_owned())
}

/// Checks a redirect's query against the login's `state`, the issuer (RFC 9207 `iss`, required
/// when the server advertises it) and an error the server sent; the code to redeem otherwise.
pub(crate) fn check_redirect(
    query: &str,
    expected_state: &str,
    issuer: &str,
    require_iss: bool,
) -> Result<Zeroizing<String>, LoginError> {
    let mut code = None;
    let mut state = None;
    let mut iss = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "code" => code = Some(Zeroizing::new(v.into_owned())),
            "state" => state = Some(Zeroizing::new(v.into_owned())),
            "iss" => iss = Some(v.into_owned()),
            // Whoever sent the browser here wrote these: token-looking words are cut out
            // before they can reach an error message or a log.
            "error" => error = Some(sanitize(&crate::oauth::redact_token_words(&v))),
            "error_description" => {
                description = Some(sanitize(&crate::oauth::redact_token_words(&v)))
            }
            _ => {}
        }
    }
    // The state first: an error redirect with a forged state is not this login's either.
    let state_ok = state.as_deref().is_some_and(|s| {
        use subtle::ConstantTimeEq as _;
        bool::from(s.as_bytes().ct_eq(expected_state.as_bytes()))
    });
    if !state_ok {
        return Err(LoginError::StateMismatch);
    }
    // RFC 9207: an `iss` present must match exactly (also on error redirects), and a server
    // that advertises the parameter must send it.
    let iss_ok = match &iss {
        Some(iss) => iss == issuer,
        None => !require_iss,
    };
    if !iss_ok {
        return Err(LoginError::IssuerMismatch {
            expected: issuer.to_owned(),
        });
    }
    if let Some(error) = error {
        return Err(LoginError::Denied { error, description });
    }
    let Some(code) = code else {
        return Err(LoginError::BadRedirect("no code in the redirect".into()));
    };
    Ok(code)
}

/// A short, printable copy of a server-provided string.
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Removes the code from an error a server might have echoed it into.
fn scrub(e: crate::RefreshError, code: &str) -> crate::RefreshError {
    if code.len() >= 4 && e.message().contains(code) {
        crate::RefreshError::new(e.class(), e.message().replace(code, "<redacted>"))
    } else {
        e
    }
}
