//! What a resource server's answer means for the header that was sent, in one place for both
//! integrations: attaching the header, reading `WWW-Authenticate`, reporting a rejection and
//! deciding on the single retry.

use std::fmt;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Extensions, HeaderMap, StatusCode};

use super::error::StepUpRequired;
use crate::auth_header::{AuthHeader, AuthSource};
use crate::error::Error;
use crate::oauth::{parse_bearer_challenge, BearerChallenge};
use crate::sync::Published;

/// Which send of a request an answer is for.
#[derive(Clone, Copy)]
pub(crate) enum Attempt {
    /// The first send; `can_replay` says whether a copy of the request is at hand for a retry.
    First { can_replay: bool },
    /// The one retry: whatever it answers goes to the caller.
    Retry,
}

/// What to do with an answer.
pub(crate) enum Verdict {
    /// Hand the response to the caller, with the challenge it carried (if any) put in its
    /// extensions.
    Deliver(Option<BearerChallenge>),
    /// The token was rejected and reported, and a retry can help: send the copy with a new
    /// header. Never given for [`Attempt::Retry`].
    Retry(Option<BearerChallenge>),
    /// 403 `insufficient_scope`: a new token of the same grant cannot help.
    StepUp(StepUpRequired),
}

/// What one middleware (and every clone of it) shares: the source, and the header value last
/// built for a credential's token.
///
/// That value is kept while the credential hands out the same token: a token's bytes (a JWT of
/// a kilobyte or more) are checked and copied into an `http::HeaderValue` once per token
/// instead of once per request, and requests share them. That also leaves one copy of the
/// token in freed memory per token rather than one per request (`http` does not zero header
/// values). A key's value is short and built each time: comparing it in constant time with the
/// one kept would cost more.
pub(crate) struct Authorizer {
    source: Arc<dyn AuthSource>,
    last: Published<Option<Built>>,
}

/// The `Authorization` value built for one token of one credential.
struct Built {
    owner: u64,
    generation: u64,
    value: HeaderValue,
}

impl Authorizer {
    pub(crate) fn new(source: Arc<dyn AuthSource>) -> Self {
        Authorizer {
            source,
            last: Published::new(None),
        }
    }

    /// The header for the next send.
    ///
    /// # Errors
    /// The source's: see [`AuthSource::auth_header`].
    pub(crate) async fn header(&self) -> Result<AuthHeader, Error> {
        // On the source itself: `Arc`'s forwarding impl would box a second future.
        self.source.as_ref().auth_header().await
    }

    /// Sets `header` on `headers`, marked sensitive so HTTP libraries leave its value out of
    /// their logs, replacing a header of the same name the caller may have set.
    ///
    /// # Errors
    /// [`Error::is_unsendable_token`] for a value `http` refuses; the sources of this crate
    /// check their values when they are made, so this does not happen with them.
    pub(crate) fn attach(&self, headers: &mut HeaderMap, header: &AuthHeader) -> Result<(), Error> {
        let Some(token) = header.token() else {
            let name = if header.name() == AUTHORIZATION.as_str() {
                AUTHORIZATION
            } else {
                HeaderName::from_bytes(header.name().as_bytes())
                    .map_err(|_| Error::unsendable_token())?
            };
            headers.insert(name, sensitive(header)?);
            return Ok(());
        };
        let (owner, generation) = (token.owner(), token.generation());
        let kept = {
            let last = self.last.load();
            (**last)
                .as_ref()
                .filter(|b| b.owner == owner && b.generation == generation)
                .map(|b| b.value.clone())
        };
        let value = match kept {
            Some(value) => value,
            None => {
                let value = sensitive(header)?;
                self.last.store(Some(Built {
                    owner,
                    generation,
                    value: value.clone(),
                }));
                value
            }
        };
        headers.insert(AUTHORIZATION, value);
        Ok(())
    }

    /// [`judge`] with this authorizer's source.
    pub(crate) fn judge(
        &self,
        sent: &AuthHeader,
        status: StatusCode,
        headers: &HeaderMap,
        attempt: Attempt,
    ) -> Verdict {
        judge(&*self.source, sent, status, headers, attempt)
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let generation = (**self.last.load()).as_ref().map(|b| b.generation);
        f.debug_struct("Authorizer")
            .field("source", &self.source)
            .field("built_for_generation", &generation)
            .finish()
    }
}

/// `header`'s value, marked sensitive.
fn sensitive(header: &AuthHeader) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_bytes(header.expose_value().as_bytes())
        .map_err(|_| Error::unsendable_token())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads an answer to a request sent with `sent`. On a 401 for the token itself (`invalid_token`
/// or a challenge without an error code, as RFC 6750 §3.1 allows for a request that lacked
/// valid credentials; also when no Bearer challenge came at all) the first send reports the
/// rejection to `source`, which invalidates exactly that token; a retry's 401 is handed over
/// without another report, so that nothing loops.
fn judge(
    source: &dyn AuthSource,
    sent: &AuthHeader,
    status: StatusCode,
    headers: &HeaderMap,
    attempt: Attempt,
) -> Verdict {
    match status {
        StatusCode::UNAUTHORIZED => {
            let challenge = challenge(headers);
            let Attempt::First { can_replay } = attempt else {
                return Verdict::Deliver(challenge);
            };
            let code = challenge.as_ref().and_then(|c| c.error.as_deref());
            if !matches!(code, None | Some("invalid_token")) {
                return Verdict::Deliver(challenge);
            }
            let rejection = source.rejected(sent);
            let retry = can_replay && rejection.should_retry();
            #[cfg(feature = "tracing")]
            tracing::debug!(
                token = %sent.fingerprint(),
                ?rejection,
                retry,
                "keepfresh middleware: 401, token reported as rejected"
            );
            if retry {
                Verdict::Retry(challenge)
            } else {
                Verdict::Deliver(challenge)
            }
        }
        StatusCode::FORBIDDEN => match challenge(headers) {
            Some(c) if c.error.as_deref() == Some("insufficient_scope") => {
                let step_up = StepUpRequired::new(sent.token().and_then(|t| t.scope()), c);
                #[cfg(feature = "tracing")]
                tracing::debug!(
                    token = %sent.fingerprint(),
                    scope = %step_up.scope(),
                    "keepfresh middleware: 403 insufficient_scope, step-up required"
                );
                Verdict::StepUp(step_up)
            }
            other => Verdict::Deliver(other),
        },
        _ => Verdict::Deliver(None),
    }
}

/// Puts the answer's challenge where callers find it: `extensions.get::<BearerChallenge>()`.
pub(crate) fn keep_challenge(extensions: &mut Extensions, challenge: Option<BearerChallenge>) {
    if let Some(challenge) = challenge {
        extensions.insert(challenge);
    }
}

/// The first Bearer challenge among the answer's `WWW-Authenticate` headers (a server may send
/// one header per scheme).
fn challenge(headers: &HeaderMap) -> Option<BearerChallenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .find_map(|value| parse_bearer_challenge(&String::from_utf8_lossy(value.as_bytes())))
}
