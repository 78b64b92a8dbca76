//! When to refresh and how to back off: the tunable numbers of the engine, with their defaults.

use std::fmt;
use std::time::Duration;

use crate::runtime::MonoTime;

/// A small, seedable random source (SplitMix64) for refresh-point jitter and backoff jitter.
///
/// Deterministic for a given seed, which is what the simulator and tests rely on. Not for
/// cryptographic use.
///
/// ```
/// use keepfresh::policy::JitterRng;
/// let mut a = JitterRng::new(7);
/// let mut b = JitterRng::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.unit();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitterRng(u64);

impl JitterRng {
    /// A generator seeded with `seed`.
    ///
    /// See the [type-level example](JitterRng).
    pub fn new(seed: u64) -> Self {
        JitterRng(seed)
    }

    /// A generator seeded from the process's random hasher keys, so that replicas started
    /// together draw different refresh points.
    ///
    /// ```
    /// let _ = keepfresh::policy::JitterRng::from_entropy();
    /// ```
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        JitterRng(h.finish())
    }

    /// The next 64 random bits.
    ///
    /// See the [type-level example](JitterRng).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in `[0, 1)`.
    ///
    /// See the [type-level example](JitterRng).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the policy did to a provider's `expires_in`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifetimeAdjustment {
    /// `expires_in` was absent; the default lifetime was used.
    Missing,
    /// `expires_in` was zero or negative; replaced by the minimum lifetime.
    RaisedToMinimum {
        /// The value the provider sent, in seconds.
        sent: i64,
    },
    /// `expires_in` was above the maximum lifetime; lowered to it.
    LoweredToMaximum {
        /// The value the provider sent, in seconds.
        sent: i64,
    },
}

/// The timing the policy derives for one token: when to refresh it, and until when to serve it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenTiming {
    /// When the token was issued (the refresh request's send time).
    pub issued: MonoTime,
    /// The jittered refresh-ahead point.
    pub refresh_at: MonoTime,
    /// The last instant the token is handed out in normal operation: expiry minus the skew
    /// allowance.
    pub usable_until: MonoTime,
    /// The expiry the provider stated. Between `usable_until` and this instant the token is
    /// handed out only as a last resort: while refreshes are failing or re-authorization is
    /// pending, when the alternative is an error.
    pub expires_at: MonoTime,
}

/// The refresh and backoff policy of a credential.
///
/// # Default
/// | setting | default | meaning |
/// |---|---|---|
/// | [`refresh_window`](RefreshPolicyBuilder::refresh_window) | 0.60 – 0.85 | the refresh point is drawn uniformly in this fraction of the lifetime |
/// | [`floor_margin`](RefreshPolicyBuilder::floor_margin) | 60 s | refresh at least this long before (skew-adjusted) expiry when the lifetime allows |
/// | [`skew_allowance`](RefreshPolicyBuilder::skew_allowance) | 30 s (at most half the lifetime) | a token is not handed out during the last part of its life |
/// | [`default_lifetime`](RefreshPolicyBuilder::default_lifetime) | 1 h | lifetime assumed when `expires_in` is missing |
/// | [`min_lifetime`](RefreshPolicyBuilder::min_lifetime) | 30 s | zero or negative `expires_in` is replaced by this (so no refresh loop); positive values are kept as sent |
/// | [`max_lifetime`](RefreshPolicyBuilder::max_lifetime) | 400 days | larger `expires_in` is lowered to this |
/// | [`serve_stale`](RefreshPolicyBuilder::serve_stale) | `true` | a still-valid token is served while a refresh runs or backs off |
/// | [`backoff`](RefreshPolicyBuilder::backoff) | 1 s base, 5 min cap | exponential backoff with full jitter |
/// | [`max_retry_after`](RefreshPolicyBuilder::max_retry_after) | 1 h | `Retry-After` is honoured up to this |
/// | [`invalid_client_threshold`](RefreshPolicyBuilder::invalid_client_threshold) | 2 | consecutive `invalid_client` answers before it is terminal |
/// | [`wait_timeout`](RefreshPolicyBuilder::wait_timeout) | 30 s | how long a caller waits for a refresh |
/// | [`refresh_timeout`](RefreshPolicyBuilder::refresh_timeout) | 10 s | a refresh taking longer is abandoned as ambiguous and retried on the engine's timer |
/// | [`store_timeout`](RefreshPolicyBuilder::store_timeout) | 5 s | a store operation taking longer is a store failure |
/// | [`lease_ttl`](RefreshPolicyBuilder::lease_ttl) | 60 s | cross-process refresh lease lifetime (renewed until the rotated set is durable) |
/// | [`eager`](RefreshPolicyBuilder::eager) | `false` | refresh at the refresh point even when nobody asks |
/// | [`keep_alive`](RefreshPolicyBuilder::keep_alive) | 24 h | an idle credential is refreshed once per this period, so that a refresh token that expires after inactivity stays alive; `None` turns it off |
/// | [`fail_open`](RefreshPolicyBuilder::fail_open) | `false` | refresh without the lease and re-read when the store fails (availability over the single-flight guarantee; see the setter) |
///
/// ## Timeouts
/// The refresh timeout sits well below the grace windows providers commonly give a rotated
/// refresh token (30 s is typical): when an answer is lost, the engine's own retry — on its
/// timer, whether or not a caller comes — still lands inside the window. A healthy token
/// endpoint answers in well under a second, so 10 s only cuts off answers that are lost anyway.
/// [`build`](RefreshPolicyBuilder::build) checks the relations between the timeouts: the lease
/// must outlive one refresh — taking it, re-reading the store, the provider call and renewing
/// it before the save: `lease_ttl >= refresh_timeout + 3 × store_timeout`. The wait timeout
/// may be shorter than a refresh: a caller that gives up leaves the refresh running.
/// | [`jitter_seed`](RefreshPolicyBuilder::jitter_seed) | from entropy | seed of the jitter RNG |
///
/// # Examples
/// ```
/// use keepfresh::RefreshPolicy;
/// use std::time::Duration;
///
/// let policy = RefreshPolicy::builder()
///     .refresh_window(0.5, 0.75)
///     .skew_allowance(Duration::from_secs(10))
///     .jitter_seed(42)
///     .build()
///     .unwrap();
/// assert_eq!(policy.skew_allowance(), Duration::from_secs(10));
/// assert!(RefreshPolicy::builder().refresh_window(0.9, 0.2).build().is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshPolicy {
    window: (f64, f64),
    floor_margin: Duration,
    skew: Duration,
    default_lifetime: Duration,
    min_lifetime: Duration,
    max_lifetime: Duration,
    serve_stale: bool,
    backoff_base: Duration,
    backoff_cap: Duration,
    max_retry_after: Duration,
    invalid_client_threshold: u32,
    wait_timeout: Duration,
    refresh_timeout: Duration,
    store_timeout: Duration,
    lease_ttl: Duration,
    eager: bool,
    keep_alive: Option<Duration>,
    fail_open: bool,
    jitter_seed: Option<u64>,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            window: (0.60, 0.85),
            floor_margin: Duration::from_secs(60),
            skew: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(3600),
            min_lifetime: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(400 * 86_400),
            serve_stale: true,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
            invalid_client_threshold: 2,
            wait_timeout: Duration::from_secs(30),
            refresh_timeout: Duration::from_secs(10),
            store_timeout: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(60),
            eager: false,
            keep_alive: Some(Duration::from_secs(86_400)),
            fail_open: false,
            jitter_seed: None,
        }
    }
}

/// A policy setting was out of range.
///
/// ```
/// let err = keepfresh::RefreshPolicy::builder().refresh_window(0.0, 1.5).build().unwrap_err();
/// assert!(err.to_string().contains("refresh_window"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid refresh policy: {}", self.0)
    }
}

impl std::error::Error for PolicyError {}

impl RefreshPolicy {
    /// A builder starting from the [defaults](RefreshPolicy#default).
    ///
    /// See the [type-level example](RefreshPolicy#examples).
    pub fn builder() -> RefreshPolicyBuilder {
        RefreshPolicyBuilder(RefreshPolicy::default())
    }

    /// Validates a raw `expires_in` and turns it into a lifetime.
    ///
    /// ```
    /// use keepfresh::RefreshPolicy;
    /// use keepfresh::policy::LifetimeAdjustment;
    /// use std::time::Duration;
    ///
    /// let p = RefreshPolicy::default();
    /// assert_eq!(p.lifetime(Some(3600)), (Duration::from_secs(3600), None));
    /// assert_eq!(p.lifetime(None), (Duration::from_secs(3600), Some(LifetimeAdjustment::Missing)));
    /// assert_eq!(p.lifetime(Some(0)).0, Duration::from_secs(30));
    /// assert_eq!(p.lifetime(Some(-5)).1, Some(LifetimeAdjustment::RaisedToMinimum { sent: -5 }));
    /// assert_eq!(p.lifetime(Some(i64::MAX)).0, Duration::from_secs(400 * 86_400));
    /// ```
    pub fn lifetime(&self, expires_in: Option<i64>) -> (Duration, Option<LifetimeAdjustment>) {
        match expires_in {
            None => (self.default_lifetime, Some(LifetimeAdjustment::Missing)),
            Some(sent) => {
                let d = Duration::from_secs(sent.max(0) as u64);
                if sent <= 0 {
                    (
                        self.min_lifetime,
                        Some(LifetimeAdjustment::RaisedToMinimum { sent }),
                    )
                } else if d > self.max_lifetime {
                    (
                        self.max_lifetime,
                        Some(LifetimeAdjustment::LoweredToMaximum { sent }),
                    )
                } else {
                    (d, None)
                }
            }
        }
    }

    /// The skew allowance actually applied to a token of the given lifetime: the configured
    /// allowance, but never more than half the lifetime.
    ///
    /// ```
    /// use keepfresh::RefreshPolicy;
    /// use std::time::Duration;
    /// let p = RefreshPolicy::default();
    /// assert_eq!(p.effective_skew(Duration::from_secs(3600)), Duration::from_secs(30));
    /// assert_eq!(p.effective_skew(Duration::from_secs(20)), Duration::from_secs(10));
    /// ```
    pub fn effective_skew(&self, lifetime: Duration) -> Duration {
        self.skew.min(lifetime / 2)
    }

    /// Derives the refresh point and the serving deadline of a token issued at `issued` with
    /// `lifetime`, drawing the jitter from `rng`.
    ///
    /// The refresh point lies in the refresh window of the lifetime, is moved earlier to keep
    /// the floor margin before the serving deadline when the lifetime allows it, and is never
    /// later than the serving deadline nor earlier than the window's start — so a lifetime
    /// shorter than the margin still refreshes once per lifetime, never in a loop.
    ///
    /// ```
    /// use keepfresh::{RefreshPolicy, policy::JitterRng, runtime::MonoTime};
    /// use std::time::Duration;
    ///
    /// let p = RefreshPolicy::default();
    /// let mut rng = JitterRng::new(1);
    /// let t = p.timing(MonoTime::ZERO, Duration::from_secs(3600), &mut rng);
    /// assert!(t.refresh_at >= MonoTime::from_duration(Duration::from_secs(2160)));
    /// assert!(t.refresh_at <= MonoTime::from_duration(Duration::from_secs(3060)));
    /// assert_eq!(t.usable_until, MonoTime::from_duration(Duration::from_secs(3570)));
    ///
    /// // 60 s tokens with the default 60 s margin: still refreshed at 60-85 % of life.
    /// let t = p.timing(MonoTime::ZERO, Duration::from_secs(60), &mut rng);
    /// assert!(t.refresh_at >= MonoTime::from_duration(Duration::from_secs(30)));
    /// assert!(t.refresh_at <= t.usable_until);
    /// ```
    pub fn timing(&self, issued: MonoTime, lifetime: Duration, rng: &mut JitterRng) -> TokenTiming {
        let usable_until = issued.saturating_add(lifetime - self.effective_skew(lifetime));
        let (lo, hi) = self.window;
        let frac = lo + (hi - lo) * rng.unit();
        let earliest = issued.saturating_add(lifetime.mul_f64(lo));
        let mut refresh_at = issued.saturating_add(lifetime.mul_f64(frac));
        let margin_point = usable_until.saturating_sub(self.floor_margin);
        if margin_point >= earliest {
            refresh_at = refresh_at.min(margin_point);
        }
        refresh_at = refresh_at.max(earliest).min(usable_until);
        TokenTiming {
            issued,
            refresh_at,
            usable_until,
            expires_at: issued.saturating_add(lifetime),
        }
    }

    /// The delay before retry number `attempt` (1-based) after a transient failure:
    /// exponential with full jitter, `uniform(0, min(cap, base * 2^(attempt-1)))`, but never
    /// shorter than the provider's `Retry-After` (itself capped at `max_retry_after`).
    ///
    /// ```
    /// use keepfresh::{RefreshPolicy, policy::JitterRng};
    /// use std::time::Duration;
    ///
    /// let p = RefreshPolicy::default();
    /// let mut rng = JitterRng::new(3);
    /// for attempt in 1..20 {
    ///     assert!(p.backoff_delay(attempt, None, &mut rng) <= Duration::from_secs(300));
    /// }
    /// let d = p.backoff_delay(1, Some(Duration::from_secs(120)), &mut rng);
    /// assert!(d >= Duration::from_secs(120));
    /// ```
    pub fn backoff_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut JitterRng,
    ) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let ceiling = self
            .backoff_base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.backoff_cap)
            .min(self.backoff_cap);
        let jittered = ceiling.mul_f64(rng.unit());
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.max_retry_after)),
            None => jittered,
        }
    }

    /// Whether still-valid tokens are served while a refresh runs or backs off.
    ///
    /// ```
    /// assert!(keepfresh::RefreshPolicy::default().serve_stale());
    /// ```
    pub fn serve_stale(&self) -> bool {
        self.serve_stale
    }

    /// The configured skew allowance.
    ///
    /// See the [type-level example](RefreshPolicy#examples).
    pub fn skew_allowance(&self) -> Duration {
        self.skew
    }

    /// Consecutive `invalid_client` answers before the credential stops refreshing.
    ///
    /// ```
    /// assert_eq!(keepfresh::RefreshPolicy::default().invalid_client_threshold(), 2);
    /// ```
    pub fn invalid_client_threshold(&self) -> u32 {
        self.invalid_client_threshold
    }

    /// How long a caller waits for a refresh before giving up with a timeout error.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(keepfresh::RefreshPolicy::default().wait_timeout(), Duration::from_secs(30));
    /// ```
    pub fn wait_timeout(&self) -> Duration {
        self.wait_timeout
    }

    /// How long one refresh may take before it is abandoned as ambiguous.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(keepfresh::RefreshPolicy::default().refresh_timeout(), Duration::from_secs(10));
    /// ```
    pub fn refresh_timeout(&self) -> Duration {
        self.refresh_timeout
    }

    /// How long one store operation may take.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(keepfresh::RefreshPolicy::default().store_timeout(), Duration::from_secs(5));
    /// ```
    pub fn store_timeout(&self) -> Duration {
        self.store_timeout
    }

    /// The lifetime of a cross-process refresh lease.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(keepfresh::RefreshPolicy::default().lease_ttl(), Duration::from_secs(60));
    /// ```
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Whether the credential refreshes on a timer without callers.
    ///
    /// ```
    /// assert!(!keepfresh::RefreshPolicy::default().eager());
    /// ```
    pub fn eager(&self) -> bool {
        self.eager
    }

    /// How often an idle credential is refreshed without callers (`None`: never).
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(keepfresh::RefreshPolicy::default().keep_alive(), Some(Duration::from_secs(86_400)));
    /// ```
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive
    }

    /// Whether a store failure (lease or re-read) lets a refresh go ahead anyway.
    ///
    /// ```
    /// assert!(!keepfresh::RefreshPolicy::default().fail_open());
    /// ```
    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    /// This policy with another jitter seed (for example one per process or replica, so that
    /// their refresh points differ).
    ///
    /// ```
    /// let p = keepfresh::RefreshPolicy::default().with_jitter_seed(9);
    /// assert_eq!(p.rng(), keepfresh::policy::JitterRng::new(9));
    /// ```
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// The RNG this policy's jitter is drawn from: seeded if a seed was set, else from entropy.
    ///
    /// ```
    /// let p = keepfresh::RefreshPolicy::builder().jitter_seed(5).build().unwrap();
    /// assert_eq!(p.rng(), keepfresh::policy::JitterRng::new(5));
    /// ```
    pub fn rng(&self) -> JitterRng {
        match self.jitter_seed {
            Some(s) => JitterRng::new(s),
            None => JitterRng::from_entropy(),
        }
    }
}

/// Builder of a [`RefreshPolicy`]; every setting and its default is listed on
/// [`RefreshPolicy`](RefreshPolicy#default).
#[derive(Clone, Debug)]
pub struct RefreshPolicyBuilder(RefreshPolicy);

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident : $field:ident : $ty:ty) => {
        $(#[$doc])*
        ///
        /// See [`RefreshPolicy`](RefreshPolicy#default) for the default.
        pub fn $name(mut self, value: $ty) -> Self {
            self.0.$field = value;
            self
        }
    };
}

impl RefreshPolicyBuilder {
    /// The refresh point is drawn uniformly in `[start, end]` of the lifetime
    /// (`0 < start <= end < 1`).
    ///
    /// See [`RefreshPolicy`](RefreshPolicy#default) for the default.
    pub fn refresh_window(mut self, start: f64, end: f64) -> Self {
        self.0.window = (start, end);
        self
    }

    setter!(
        /// Refresh at least this long before expiry when the lifetime allows.
        floor_margin: floor_margin: Duration
    );
    setter!(
        /// Stop handing a token out this long before its stated expiry (capped at half its life).
        skew_allowance: skew: Duration
    );
    setter!(
        /// Lifetime assumed when the provider sends no `expires_in`.
        default_lifetime: default_lifetime: Duration
    );
    setter!(
        /// Zero or negative lifetimes are raised to this.
        min_lifetime: min_lifetime: Duration
    );
    setter!(
        /// Larger lifetimes are lowered to this.
        max_lifetime: max_lifetime: Duration
    );
    setter!(
        /// Serve a still-valid token while refreshing or backing off.
        serve_stale: serve_stale: bool
    );
    setter!(
        /// Longest `Retry-After` honoured.
        max_retry_after: max_retry_after: Duration
    );
    setter!(
        /// Consecutive `invalid_client` answers before it is terminal (at least 1).
        invalid_client_threshold: invalid_client_threshold: u32
    );
    setter!(
        /// How long a caller waits for a refresh.
        wait_timeout: wait_timeout: Duration
    );
    setter!(
        /// How long one refresh may take.
        refresh_timeout: refresh_timeout: Duration
    );
    setter!(
        /// How long one store operation may take.
        store_timeout: store_timeout: Duration
    );
    setter!(
        /// Cross-process refresh lease lifetime.
        lease_ttl: lease_ttl: Duration
    );
    setter!(
        /// Refresh at the refresh point even when nobody asks.
        eager: eager: bool
    );
    setter!(
        /// Refresh an idle credential once per this period (`None`: never). Providers expire
        /// refresh tokens that go unused for a while (days to months); the default of a day is
        /// far inside all of those and costs one refresh a day for an idle credential.
        keep_alive: keep_alive: Option<Duration>
    );
    setter!(
        /// When the store's lease or re-read fails, refresh anyway (`true`) instead of treating
        /// it as a transient failure and backing off (`false`, the default).
        ///
        /// **Risk:** with a store shared by several processes, a store blip then lets two of them
        /// refresh with the same refresh token; a provider with strict rotation takes that for
        /// theft and revokes the whole grant, and the loser may replay a spent token later.
        /// Only choose it for a store no other process shares, or a provider without rotation.
        fail_open: fail_open: bool
    );

    /// Exponential backoff: first retry within `base`, doubling up to `cap`.
    ///
    /// See [`RefreshPolicy`](RefreshPolicy#default) for the default.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.0.backoff_base = base;
        self.0.backoff_cap = cap;
        self
    }

    /// Seeds the jitter RNG, for reproducible refresh points and backoff delays.
    ///
    /// See [`RefreshPolicy`](RefreshPolicy#default) for the default.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.0.jitter_seed = Some(seed);
        self
    }

    /// Checks the settings and builds the policy.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the first setting out of range.
    ///
    /// See [`RefreshPolicy`](RefreshPolicy#examples) for an example.
    pub fn build(self) -> Result<RefreshPolicy, PolicyError> {
        let p = self.0;
        let (lo, hi) = p.window;
        if !(lo > 0.0 && lo <= hi && hi < 1.0) {
            return Err(PolicyError(format!(
                "refresh_window must satisfy 0 < start <= end < 1, got {lo}..{hi}"
            )));
        }
        if p.min_lifetime.is_zero() || p.min_lifetime > p.max_lifetime {
            return Err(PolicyError(
                "min_lifetime must be positive and not above max_lifetime".into(),
            ));
        }
        if p.default_lifetime < p.min_lifetime || p.default_lifetime > p.max_lifetime {
            return Err(PolicyError(
                "default_lifetime must lie between min_lifetime and max_lifetime".into(),
            ));
        }
        if p.backoff_base.is_zero() || p.backoff_base > p.backoff_cap {
            return Err(PolicyError(
                "backoff base must be positive and not above the cap".into(),
            ));
        }
        if p.invalid_client_threshold == 0 {
            return Err(PolicyError(
                "invalid_client_threshold must be at least 1".into(),
            ));
        }
        for (name, d) in [
            ("wait_timeout", p.wait_timeout),
            ("refresh_timeout", p.refresh_timeout),
            ("store_timeout", p.store_timeout),
            ("lease_ttl", p.lease_ttl),
        ] {
            if d.is_zero() {
                return Err(PolicyError(format!("{name} must be positive")));
            }
        }
        // About a century: far beyond any real token, small enough that no date arithmetic on
        // it can overflow.
        const MAX_LIFETIME_LIMIT: Duration = Duration::from_secs(100 * 366 * 86_400);
        if p.max_lifetime > MAX_LIFETIME_LIMIT {
            return Err(PolicyError(format!(
                "max_lifetime must be at most 100 years, got {:?}",
                p.max_lifetime
            )));
        }
        for (name, d) in [
            ("wait_timeout", p.wait_timeout),
            ("refresh_timeout", p.refresh_timeout),
            ("store_timeout", p.store_timeout),
            ("lease_ttl", p.lease_ttl),
            ("max_retry_after", p.max_retry_after),
            ("backoff cap", p.backoff_cap),
        ] {
            if d > MAX_LIFETIME_LIMIT {
                return Err(PolicyError(format!(
                    "{name} must be at most 100 years, got {d:?}"
                )));
            }
        }
        if p.keep_alive.is_some_and(|k| k < p.min_lifetime) {
            return Err(PolicyError(format!(
                "keep_alive ({:?}) must not be shorter than min_lifetime ({:?})",
                p.keep_alive.unwrap_or_default(),
                p.min_lifetime
            )));
        }
        let lease_floor = p.refresh_timeout + p.store_timeout * 3;
        if p.lease_ttl < lease_floor {
            return Err(PolicyError(format!(
                "lease_ttl ({:?}) must cover one refresh: at least refresh_timeout + 3 × \
                 store_timeout = {:?} (take the lease, re-read, call the provider, renew)",
                p.lease_ttl, lease_floor
            )));
        }
        Ok(p)
    }
}
