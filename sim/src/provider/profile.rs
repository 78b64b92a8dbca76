//! The documented behaviour of real providers as presets of the mock authorization server
//! (described for users in `docs/scenarios.md`, "Provider profiles").

use std::time::Duration;

use serde::Serialize;

/// How the provider reports errors on the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ErrorStyle {
    /// RFC 6749: HTTP 400/401 with `{"error": …}`.
    Standard,
    /// GitHub: HTTP 200 with `{"error": "bad_refresh_token"}`.
    Http200,
    /// Slack: HTTP 200 with `{"ok": false, "error": …}`.
    SlackEnvelope,
}

/// How the provider states the access token's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ExpiresStyle {
    /// `"expires_in": 3600`.
    Number,
    /// `"expires_in": "3600"` (PayPal).
    String,
    /// No `expires_in`, `issued_at` in milliseconds (Salesforce).
    MissingIssuedAtMs,
    /// A different odd value on each answer: missing, string, 0, negative, huge, float.
    Odd,
}

/// A provider's refresh-token behaviour and quirks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Profile {
    /// Preset name.
    pub name: &'static str,
    /// Access-token lifetime the provider issues.
    pub at_lifetime: Duration,
    /// Whether each refresh issues a new refresh token.
    pub rotate: bool,
    /// Whether presenting a rotated refresh token again revokes the whole family.
    pub reuse_revokes_family: bool,
    /// How long a rotated refresh token stays redeemable.
    pub grace: Duration,
    /// Refresh tokens unused for this long die.
    pub rt_idle_expiry: Option<Duration>,
    /// Refresh tokens die this long after the login, whatever happens.
    pub rt_absolute_expiry: Option<Duration>,
    /// Using the refresh token revokes the previous access token (GitHub).
    pub refresh_kills_old_access_token: bool,
    /// At most this many live refresh tokens per client; the oldest is evicted (Google).
    pub live_rt_cap: Option<usize>,
    /// Error reporting style.
    pub errors: ErrorStyle,
    /// Lifetime reporting style.
    pub expires: ExpiresStyle,
    /// Token responses are form-encoded rather than JSON.
    pub form_encoded: bool,
    /// Whether the provider issues refresh tokens at all.
    pub issues_refresh_token: bool,
    /// Probability that a refresh answer omits `refresh_token` (the old one stays valid).
    pub omit_refresh_token: f64,
}

impl Profile {
    /// The names of every preset.
    pub const NAMES: [&'static str; 8] = [
        "strict",
        "okta",
        "auth0",
        "xero",
        "github-user",
        "slack",
        "salesforce",
        "google",
    ];

    /// The strict MCP public-client profile: rotation, family revoke on reuse, no grace.
    pub fn strict(at_lifetime: Duration) -> Profile {
        Profile {
            name: "strict",
            at_lifetime,
            rotate: true,
            reuse_revokes_family: true,
            grace: Duration::ZERO,
            rt_idle_expiry: None,
            rt_absolute_expiry: None,
            refresh_kills_old_access_token: false,
            live_rt_cap: None,
            errors: ErrorStyle::Standard,
            expires: ExpiresStyle::Number,
            form_encoded: false,
            issues_refresh_token: true,
            omit_refresh_token: 0.0,
        }
    }

    /// A preset by name; the access-token lifetime applies where the provider lets the
    /// customer configure it.
    ///
    /// # Errors
    /// The list of known names when `name` is not one.
    pub fn by_name(name: &str, at_lifetime: Duration) -> Result<Profile, String> {
        let s = Profile::strict(at_lifetime);
        let h = |x: u64| Duration::from_secs(x * 3600);
        Ok(match name {
            "strict" => s,
            "okta" => Profile {
                name: "okta",
                grace: Duration::from_secs(30),
                rt_idle_expiry: Some(h(24 * 7)),
                ..s
            },
            "auth0" => Profile {
                name: "auth0",
                grace: Duration::from_secs(60),
                rt_idle_expiry: Some(h(24 * 15)),
                rt_absolute_expiry: Some(h(24 * 30)),
                ..s
            },
            "xero" => Profile {
                name: "xero",
                at_lifetime: Duration::from_secs(1800),
                grace: Duration::from_secs(1800),
                rt_idle_expiry: Some(h(24 * 60)),
                ..s
            },
            "github-user" => Profile {
                name: "github-user",
                at_lifetime: h(8),
                refresh_kills_old_access_token: true,
                rt_absolute_expiry: Some(h(24 * 183)),
                errors: ErrorStyle::Http200,
                ..s
            },
            "slack" => Profile {
                name: "slack",
                at_lifetime: h(12),
                errors: ErrorStyle::SlackEnvelope,
                ..s
            },
            "salesforce" => Profile {
                name: "salesforce",
                at_lifetime: h(2),
                rotate: false,
                reuse_revokes_family: false,
                expires: ExpiresStyle::MissingIssuedAtMs,
                ..s
            },
            "google" => Profile {
                name: "google",
                at_lifetime: h(1),
                rotate: false,
                reuse_revokes_family: false,
                live_rt_cap: Some(100),
                ..s
            },
            other => {
                return Err(format!(
                    "unknown provider profile {other:?}; known profiles: {}",
                    Profile::NAMES.join(", ")
                ))
            }
        })
    }
}
