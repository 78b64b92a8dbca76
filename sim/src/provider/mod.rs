//! The mock authorization server as a pure model, so provider behaviour (rotation, reuse
//! detection, grace windows, expiry, revocation, vendor error styles) is exact and replayable.
//!
//! The model holds no clock of its own: every call passes the true simulated time, and the
//! provider's skew only changes the wall-clock values it writes into answers (`issued_at`,
//! `Retry-After` dates). Transport faults (latency, 5xx, 429, lost answers) are decided by the
//! caller of the model, [`crate::world::network::ProviderClient`]; the model answers as an honest
//! server would.

mod profile;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use keepfresh::runtime::MonoTime;

pub use profile::{ErrorStyle, ExpiresStyle, Profile};

use crate::exec::wall_at;
use crate::rng::SimRng;

/// Every secret the mock provider mints contains this marker, and nothing else the simulator
/// prints does: a captured line containing it leaks a secret.
pub const SECRET_MARKER: &str = "kfs~";

/// The client secret the simulated clients hold (also scanned for).
pub const CLIENT_SECRET: &str = "kfs~client-secret~5e3d";

/// Identifies a token family (one login's chain of refresh tokens).
pub type FamilyId = usize;

/// What the provider knows about an access token it issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    /// The family it belongs to.
    pub family: FamilyId,
    /// When it was issued (true time).
    pub issued: MonoTime,
    /// When it expires (true time).
    pub expires: MonoTime,
    /// Revoked before expiry.
    pub revoked: bool,
    /// Issue order among every token the provider minted (larger: issued later).
    pub seq: u64,
}

/// Where a token set stands in the provider's issue order: its grant (family) and the issue
/// order of its refresh and access tokens. A set with a smaller key is older.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IssueOrder {
    /// The grant; families are numbered in login order.
    pub family: FamilyId,
    /// Issue order of the refresh token (`None`: the set has none).
    pub refresh: Option<u64>,
    /// Issue order of the access token.
    pub access: u64,
}

#[derive(Clone, Debug)]
struct RtRecord {
    family: FamilyId,
    seq: u64,
    last_used: MonoTime,
    superseded_at: Option<MonoTime>,
    dead: bool,
}

#[derive(Clone, Debug)]
struct Family {
    login_at: MonoTime,
    revoked: Option<&'static str>,
    current_rt: Option<String>,
    access_tokens: Vec<String>,
    rt_chain: Vec<String>,
    /// Some access token of the family was revoked before expiry.
    any_access_revoked: bool,
}

/// A refresh token presented again after rotation, outside any grace window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// When.
    pub at: MonoTime,
    /// The family.
    pub family: FamilyId,
    /// Whether the provider revoked the family for it.
    pub revoked_family: bool,
    /// Whether the rotation answer for this token had been lost (the client could not know).
    pub excused: bool,
    /// Whether the store hid the rotation from the client that replayed (a save it acknowledged
    /// and lost, a stale read): the store's failure, so excused too.
    pub store_lie: bool,
}

/// The outcome of one token-endpoint call, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallOutcome {
    /// New tokens issued (with rotation or not).
    Ok,
    /// Replay accepted inside the grace window.
    OkGrace,
    /// `invalid_grant` (dead, revoked, replayed, expired refresh token).
    InvalidGrant,
    /// `invalid_client`.
    InvalidClient,
    /// A 5xx answer.
    ServerError,
    /// 429 with `Retry-After`.
    RateLimited,
    /// 503 with `Retry-After`.
    Unavailable,
    /// Malformed or HTML body with HTTP 200.
    Malformed,
    /// The answer was lost after the provider committed.
    LostAfterCommit,
    /// The request never reached the provider.
    NotDelivered,
}

impl CallOutcome {
    /// A stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::OkGrace => "ok_grace",
            CallOutcome::InvalidGrant => "invalid_grant",
            CallOutcome::InvalidClient => "invalid_client",
            CallOutcome::ServerError => "server_error",
            CallOutcome::RateLimited => "rate_limited",
            CallOutcome::Unavailable => "unavailable",
            CallOutcome::Malformed => "malformed",
            CallOutcome::LostAfterCommit => "lost_after_commit",
            CallOutcome::NotDelivered => "not_delivered",
        }
    }
}

/// An HTTP answer of the token endpoint, before transport faults.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Raw `Retry-After` header.
    pub retry_after: Option<String>,
    /// Body bytes (may contain secrets: never printed).
    pub body: Vec<u8>,
    /// How the call went.
    pub outcome: CallOutcome,
}

/// What the resource server answers to a request carrying an access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceAnswer {
    /// 200.
    Ok,
    /// 401 `invalid_token`: unknown, expired or revoked.
    Unauthorized,
    /// 403 `insufficient_scope`.
    Forbidden,
}

/// The mock authorization server and resource server, as one pure model.
#[derive(Debug)]
pub struct Provider {
    profile: Profile,
    families: Vec<Family>,
    rts: HashMap<String, RtRecord>,
    ats: HashMap<String, AccessRecord>,
    rng: SimRng,
    skew_nanos: i64,
    counter: u64,
    undelivered: HashMap<String, MonoTime>,
    /// Some family's access token was revoked before expiry (`Family::any_access_revoked` of
    /// any family): until then every issued access token is valid exactly until its expiry.
    access_revoked_anywhere: bool,
    /// Replays seen so far.
    pub replays: Vec<Replay>,
    /// Calls by outcome.
    pub outcomes: BTreeMap<CallOutcome, u64>,
    /// Commits (rotations or new access tokens) per family.
    pub issued: u64,
    /// How long a rotation takes to reach the storage the reuse check reads (zero: the check
    /// and the rotation are one atomic step).
    racy_window: Duration,
    /// `expires_in` to state instead of the true lifetime (a provider whose tokens die early).
    stated_lifetime: Option<Duration>,
}

impl Provider {
    /// A provider following `profile`, whose clock is off by `skew_nanos` from true time.
    pub fn new(profile: Profile, seed: u64, skew_nanos: i64) -> Self {
        Provider {
            profile,
            families: Vec::new(),
            rts: HashMap::new(),
            ats: HashMap::new(),
            rng: SimRng::new(seed),
            skew_nanos,
            counter: 0,
            undelivered: HashMap::new(),
            access_revoked_anywhere: false,
            replays: Vec::new(),
            outcomes: BTreeMap::new(),
            issued: 0,
            racy_window: Duration::ZERO,
            stated_lifetime: None,
        }
    }

    /// Makes answers state `expires_in` as `stated` whatever the access tokens' true lifetime:
    /// a provider that overstates (tokens die early) or understates it.
    pub fn set_stated_lifetime(&mut self, stated: Duration) {
        self.stated_lifetime = Some(stated);
    }

    /// Makes the reuse check non-atomic: a rotation is written to the storage the check reads
    /// only `window` after it was decided, as on a server that reads the token's state, answers,
    /// and writes with storage latency in between. Two refreshes of one token less than
    /// `window` apart then both succeed, each with a refresh token of its own: the grant forks
    /// into two live chains. Zero (the default) restores the atomic check.
    pub fn set_racy_reuse_window(&mut self, window: Duration) {
        self.racy_window = window;
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn mint(&mut self, kind: &str, family: FamilyId) -> String {
        self.counter += 1;
        format!(
            "{SECRET_MARKER}{kind}~{family}~{}~{:08x}",
            self.counter,
            self.rng.next_u64() as u32
        )
    }

    /// A login: a new family with a first access token (and refresh token if the profile
    /// issues them). Returns the family, the access token, the refresh token and the access
    /// token's expiry (true time).
    pub fn login(&mut self, now: MonoTime) -> (FamilyId, String, Option<String>, MonoTime) {
        let family = self.families.len();
        self.families.push(Family {
            login_at: now,
            revoked: None,
            current_rt: None,
            access_tokens: Vec::new(),
            rt_chain: Vec::new(),
            any_access_revoked: false,
        });
        let at = self.issue_access(family, now);
        let rt = self
            .profile
            .issues_refresh_token
            .then(|| self.issue_refresh(family, now));
        let expires = now.saturating_add(self.profile.at_lifetime);
        (family, at, rt, expires)
    }

    fn issue_access(&mut self, family: FamilyId, now: MonoTime) -> String {
        let at = self.mint("at", family);
        self.ats.insert(
            at.clone(),
            AccessRecord {
                family,
                issued: now,
                expires: now.saturating_add(self.profile.at_lifetime),
                revoked: false,
                seq: self.counter,
            },
        );
        self.families[family].access_tokens.push(at.clone());
        self.issued += 1;
        at
    }

    fn issue_refresh(&mut self, family: FamilyId, now: MonoTime) -> String {
        let rt = self.mint("rt", family);
        self.rts.insert(
            rt.clone(),
            RtRecord {
                family,
                seq: self.counter,
                last_used: now,
                superseded_at: None,
                dead: false,
            },
        );
        let f = &mut self.families[family];
        f.current_rt = Some(rt.clone());
        f.rt_chain.push(rt.clone());
        if let Some(cap) = self.profile.live_rt_cap {
            let live: Vec<String> = f.rt_chain.clone();
            if live.len() > cap {
                let oldest = live[live.len() - cap - 1].clone();
                if let Some(r) = self.rts.get_mut(&oldest) {
                    r.dead = true;
                }
            }
        }
        rt
    }

    /// Revokes a family: every refresh and access token of it dies.
    pub fn revoke_family(&mut self, family: FamilyId, why: &'static str) {
        let Some(f) = self.families.get_mut(family) else {
            return;
        };
        if f.revoked.is_none() {
            f.revoked = Some(why);
        }
        f.any_access_revoked = true;
        self.access_revoked_anywhere = true;
        for at in &f.access_tokens {
            if let Some(r) = self.ats.get_mut(at) {
                r.revoked = true;
            }
        }
    }

    /// The family a refresh token belongs to (spent ones included), for revocation.
    pub fn family_of(&self, rt: &str) -> Option<FamilyId> {
        self.rts.get(rt).map(|r| r.family)
    }

    /// Revokes every access token of `family` issued so far (its refresh tokens stay valid):
    /// the resource server answers 401 for them from now on.
    pub fn revoke_access_tokens(&mut self, family: FamilyId) {
        let Some(f) = self.families.get_mut(family) else {
            return;
        };
        f.any_access_revoked = true;
        self.access_revoked_anywhere = true;
        for at in f.access_tokens.clone() {
            if let Some(r) = self.ats.get_mut(&at) {
                r.revoked = true;
            }
        }
    }

    /// Why a family was revoked, if it was.
    pub fn family_revoked(&self, family: FamilyId) -> Option<&'static str> {
        self.families.get(family).and_then(|f| f.revoked)
    }

    /// How many times the family's refresh token was rotated since the login.
    pub fn rotations(&self, family: FamilyId) -> usize {
        self.families
            .get(family)
            .map_or(0, |f| f.rt_chain.len().saturating_sub(1))
    }

    /// The newest refresh token of a family.
    pub fn current_refresh_token(&self, family: FamilyId) -> Option<&str> {
        self.families
            .get(family)
            .and_then(|f| f.current_rt.as_deref())
    }

    /// The refresh tokens of `newer`'s family issued from `older` (included) up to `newer`
    /// (excluded): the rotations between two sets of one grant. Empty when they are of
    /// different grants or out of order.
    pub fn refresh_tokens_between(&self, older: &str, newer: &str) -> Vec<String> {
        let (Some(o), Some(n)) = (self.rts.get(older), self.rts.get(newer)) else {
            return Vec::new();
        };
        if o.family != n.family || o.seq >= n.seq {
            return Vec::new();
        }
        self.families[n.family]
            .rt_chain
            .iter()
            .filter(|rt| {
                self.rts
                    .get(*rt)
                    .is_some_and(|r| r.seq >= o.seq && r.seq < n.seq)
            })
            .cloned()
            .collect()
    }

    /// Records that the answer rotating `rt` never reached a durable place in the client (lost
    /// on the wire, or the process died first): a later replay of `rt` is excused.
    pub fn mark_undelivered(&mut self, rt: &str, now: MonoTime) {
        self.undelivered.insert(rt.to_owned(), now);
    }

    /// Moves an access token's issue and expiry `age` into the past (tokens minted before the
    /// simulation started).
    pub fn age_access_token(&mut self, at: &str, age: Duration) {
        if let Some(r) = self.ats.get_mut(at) {
            let life = r.expires.saturating_duration_since(r.issued);
            let remaining = life.saturating_sub(age);
            r.expires = r.issued.saturating_add(remaining);
        }
    }

    /// Whether any access token of `family` was ever revoked before its expiry. While not,
    /// an issued access token of the family is valid exactly until its recorded expiry (the
    /// callers' fast path of [`Provider::check_resource`]).
    pub fn family_access_revoked(&self, family: FamilyId) -> bool {
        !matches!(self.families.get(family), Some(f) if !f.any_access_revoked)
    }

    /// Whether any access token of any family was revoked before expiry (see
    /// [`Provider::family_access_revoked`]).
    #[inline]
    pub fn access_revoked_anywhere(&self) -> bool {
        self.access_revoked_anywhere
    }

    /// What the provider knows of an access token.
    pub fn access_record(&self, at: &str) -> Option<AccessRecord> {
        self.ats.get(at).copied()
    }

    /// Where a token set of access token `at` and refresh token `rt` stands in the issue order;
    /// `None` when the provider did not issue the access token, or the refresh token is of
    /// another family or unknown.
    pub fn issue_order(&self, at: &str, rt: Option<&str>) -> Option<IssueOrder> {
        let a = self.ats.get(at)?;
        let refresh = match rt {
            None => None,
            Some(rt) => {
                let r = self.rts.get(rt)?;
                if r.family != a.family {
                    return None;
                }
                Some(r.seq)
            }
        };
        Some(IssueOrder {
            family: a.family,
            refresh,
            access: a.seq,
        })
    }

    /// The resource server's view of a request carrying `at` at true time `now`.
    pub fn check_resource(&self, at: &str, now: MonoTime) -> ResourceAnswer {
        match self.ats.get(at) {
            Some(r) if !r.revoked && now < r.expires => ResourceAnswer::Ok,
            _ => ResourceAnswer::Unauthorized,
        }
    }

    /// The provider's wall clock at true time `now`.
    pub fn wall(&self, now: MonoTime) -> time::OffsetDateTime {
        wall_at(now, self.skew_nanos)
    }

    /// Counts a call outcome decided outside the model (a transport fault).
    pub fn count(&mut self, outcome: CallOutcome) {
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    /// Handles one refresh-grant request at true time `now`.
    pub fn refresh(&mut self, now: MonoTime, rt: Option<&str>) -> Answer {
        let answer = self.refresh_inner(now, rt);
        self.count(answer.outcome);
        answer
    }

    fn refresh_inner(&mut self, now: MonoTime, rt: Option<&str>) -> Answer {
        let Some(rt) = rt else {
            return self.error("invalid_request", "refresh_token missing");
        };
        let Some(rec) = self.rts.get(rt).cloned() else {
            return self.error("invalid_grant", "unknown refresh token");
        };
        let family = rec.family;
        if self.families[family].revoked.is_some() || rec.dead {
            return self.error("invalid_grant", "refresh token revoked");
        }
        let p = &self.profile;
        if let Some(abs) = p.rt_absolute_expiry
            && now >= self.families[family].login_at.saturating_add(abs)
        {
            self.revoke_family(family, "absolute expiry");
            return self.error("invalid_grant", "refresh token expired");
        }
        if let Some(idle) = p.rt_idle_expiry
            && now >= rec.last_used.saturating_add(idle)
        {
            if let Some(r) = self.rts.get_mut(rt) {
                r.dead = true;
            }
            return self.error("invalid_grant", "refresh token expired (idle)");
        }
        let mut grace_hit = false;
        // With a racy check, a rotation not yet written is invisible: the token looks unused.
        if let Some(superseded) = rec.superseded_at.filter(|s| *s <= now) {
            if now.saturating_duration_since(superseded) <= self.profile.grace
                && !self.profile.grace.is_zero()
            {
                grace_hit = true;
            } else {
                let excused = self.undelivered.contains_key(rt);
                let revoke = self.profile.reuse_revokes_family;
                self.replays.push(Replay {
                    at: now,
                    family,
                    revoked_family: revoke,
                    excused,
                    store_lie: false,
                });
                if revoke {
                    self.revoke_family(family, "refresh token reuse");
                }
                return self.error("invalid_grant", "refresh token already used");
            }
        }
        if self.profile.refresh_kills_old_access_token {
            self.families[family].any_access_revoked = true;
            self.access_revoked_anywhere = true;
            let old: Vec<String> = self.families[family].access_tokens.clone();
            for at in old {
                if let Some(r) = self.ats.get_mut(&at) {
                    r.revoked = true;
                }
            }
        }
        if let Some(r) = self.rts.get_mut(rt) {
            r.last_used = now;
        }
        let at = self.issue_access(family, now);
        let new_rt = if grace_hit {
            // Inside the grace window the provider hands out the family's newest refresh token.
            self.families[family].current_rt.clone()
        } else if self.profile.rotate && !self.rng.chance(self.profile.omit_refresh_token) {
            let visible = now.saturating_add(self.racy_window);
            if let Some(r) = self.rts.get_mut(rt) {
                // A racy second rotation does not move the first write later.
                r.superseded_at = Some(r.superseded_at.map_or(visible, |s| s.min(visible)));
            }
            Some(self.issue_refresh(family, now))
        } else if self.profile.omit_refresh_token > 0.0 {
            None
        } else {
            Some(rt.to_owned())
        };
        let outcome = if grace_hit {
            CallOutcome::OkGrace
        } else {
            CallOutcome::Ok
        };
        self.success(now, &at, new_rt.as_deref(), outcome)
    }

    fn success(
        &mut self,
        now: MonoTime,
        at: &str,
        rt: Option<&str>,
        outcome: CallOutcome,
    ) -> Answer {
        let lifetime = self
            .stated_lifetime
            .unwrap_or(self.profile.at_lifetime)
            .as_secs() as i64;
        let mut fields: Vec<(&str, serde_json::Value)> =
            vec![("access_token", at.into()), ("token_type", "Bearer".into())];
        match self.profile.expires {
            ExpiresStyle::Number => fields.push(("expires_in", lifetime.into())),
            ExpiresStyle::String => fields.push(("expires_in", lifetime.to_string().into())),
            ExpiresStyle::MissingIssuedAtMs => {
                let ms = self.wall(now).unix_timestamp_nanos() / 1_000_000;
                fields.push(("issued_at", ms.to_string().into()));
            }
            ExpiresStyle::Odd => {
                let v: serde_json::Value = match self.rng.below(6) {
                    0 => serde_json::Value::Null,
                    1 => lifetime.to_string().into(),
                    2 => 0.into(),
                    3 => (-5).into(),
                    4 => serde_json::json!(1e30),
                    _ => (lifetime as f64 + 0.5).into(),
                };
                if !v.is_null() {
                    fields.push(("expires_in", v));
                }
            }
        }
        if let Some(rt) = rt {
            fields.push(("refresh_token", rt.into()));
        }
        let (content_type, body) = if self.profile.form_encoded {
            let mut ser = form_encode(&fields);
            ser.push('\n');
            ("application/x-www-form-urlencoded", ser.into_bytes())
        } else {
            let mut map = serde_json::Map::new();
            if self.profile.errors == ErrorStyle::SlackEnvelope {
                map.insert("ok".into(), true.into());
            }
            for (k, v) in fields {
                map.insert(k.into(), v);
            }
            (
                "application/json",
                serde_json::to_vec(&map).expect("json map"),
            )
        };
        Answer {
            status: 200,
            content_type,
            retry_after: None,
            body,
            outcome,
        }
    }

    fn error(&self, code: &str, description: &str) -> Answer {
        let outcome = match code {
            "invalid_grant" => CallOutcome::InvalidGrant,
            "invalid_client" => CallOutcome::InvalidClient,
            _ => CallOutcome::InvalidGrant,
        };
        let (status, body) = match self.profile.errors {
            ErrorStyle::Standard => (
                if code == "invalid_client" { 401 } else { 400 },
                serde_json::json!({"error": code, "error_description": description}),
            ),
            ErrorStyle::Http200 => (
                200,
                serde_json::json!({
                    "error": if code == "invalid_grant" { "bad_refresh_token" } else { code },
                    "error_description": description,
                }),
            ),
            ErrorStyle::SlackEnvelope => (
                200,
                serde_json::json!({
                    "ok": false,
                    "error": if code == "invalid_grant" { "invalid_refresh_token" } else { code },
                }),
            ),
        };
        Answer {
            status,
            content_type: "application/json",
            retry_after: None,
            body: serde_json::to_vec(&body).expect("json"),
            outcome,
        }
    }

    /// An `invalid_client` answer in the profile's error style.
    pub fn invalid_client(&mut self) -> Answer {
        let a = self.error("invalid_client", "client authentication failed");
        self.count(a.outcome);
        a
    }
}

fn form_encode(fields: &[(&str, serde_json::Value)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for c in s.chars() {
            if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                out.push(c);
            } else {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// How long a refresh token stays valid after being rotated under `profile` (for reports).
pub fn grace_of(profile: &Profile) -> Duration {
    profile.grace
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepfresh::oauth::{parse_token_response, HttpAnswer};

    fn parse(a: &Answer) -> Result<keepfresh::TokenResponse, keepfresh::RefreshError> {
        parse_token_response(HttpAnswer {
            status: a.status,
            content_type: Some(a.content_type),
            retry_after: None,
            body: &a.body,
        })
    }

    #[test]
    fn rotation_reuse_revokes_the_family_unless_inside_grace() {
        let t = |s| MonoTime::from_duration(Duration::from_secs(s));
        let mut p = Provider::new(Profile::strict(Duration::from_secs(3600)), 1, 0);
        let (fam, _at, rt, _) = p.login(t(0));
        let rt = rt.unwrap();
        let r = parse(&p.refresh(t(10), Some(&rt))).unwrap();
        assert!(r.refresh_token().is_some());
        let again = parse(&p.refresh(t(11), Some(&rt))).unwrap_err();
        assert_eq!(again.class(), keepfresh::ErrorClass::InvalidGrant);
        assert_eq!(p.family_revoked(fam), Some("refresh token reuse"));

        let mut okta = Provider::new(
            Profile::by_name("okta", Duration::from_secs(3600)).unwrap(),
            1,
            0,
        );
        let (fam, _, rt, _) = okta.login(t(0));
        let rt = rt.unwrap();
        parse(&okta.refresh(t(10), Some(&rt))).unwrap();
        parse(&okta.refresh(t(20), Some(&rt))).unwrap();
        assert_eq!(okta.family_revoked(fam), None);
        assert!(parse(&okta.refresh(t(100), Some(&rt))).is_err());
        assert!(okta.family_revoked(fam).is_some());
    }

    #[test]
    fn a_racy_reuse_check_forks_the_grant_inside_its_window_only() {
        let t = |ms| MonoTime::from_duration(Duration::from_millis(ms));
        let mut p = Provider::new(Profile::strict(Duration::from_secs(3600)), 1, 0);
        p.set_racy_reuse_window(Duration::from_millis(20));
        let (fam, _, rt, _) = p.login(t(0));
        let rt = rt.unwrap();
        let a = parse(&p.refresh(t(100), Some(&rt))).unwrap();
        let b = parse(&p.refresh(t(110), Some(&rt))).unwrap();
        let (a, b) = (a.refresh_token().unwrap(), b.refresh_token().unwrap());
        assert_ne!(a.expose_secret(), b.expose_secret(), "two chains");
        assert!(parse(&p.refresh(t(200), Some(a.expose_secret()))).is_ok());
        assert!(parse(&p.refresh(t(200), Some(b.expose_secret()))).is_ok());
        assert_eq!(p.family_revoked(fam), None, "the fork is silent");
        // Once the write has landed, reuse is caught as before.
        assert!(parse(&p.refresh(t(300), Some(&rt))).is_err());
        assert!(p.family_revoked(fam).is_some());
    }

    #[test]
    fn every_profile_answers_in_a_shape_the_engine_parses() {
        for name in Profile::NAMES {
            let mut p = Provider::new(
                Profile::by_name(name, Duration::from_secs(3600)).unwrap(),
                7,
                0,
            );
            let (_, _, rt, _) = p.login(MonoTime::ZERO);
            let rt = rt.unwrap();
            let ok = parse(&p.refresh(MonoTime::from_nanos(1), Some(&rt)));
            assert!(ok.is_ok(), "{name}: {ok:?}");
            let bad = parse(&p.refresh(MonoTime::from_nanos(2), Some("kfs~nope"))).unwrap_err();
            assert_eq!(bad.class(), keepfresh::ErrorClass::InvalidGrant, "{name}");
            assert!(!bad.to_string().contains(SECRET_MARKER));
        }
    }
}
