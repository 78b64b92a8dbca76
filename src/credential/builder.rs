//! [`CredentialBuilder`]: where the first tokens come from, and the credential's start.

use std::fmt;
use std::sync::{Arc, LazyLock, Weak};

use super::engine::{self, After, Common, Core, Inner};
use super::handle::Snapshot;
use super::pooled::{Scheduler, Timer};
use super::{driver, store_io, Credential};
use crate::error::Error;
use crate::event::{Event, Listeners};
use crate::machine::{Grant, Input};
use crate::policy::RefreshPolicy;
use crate::refresher::Refresher;
use crate::runtime::{MonoTime, Runtime};
use crate::secret::RefreshToken;
use crate::store::{SaveOutcome, Stored, TokenStore};
use crate::sync::{Mutex, Published};
use crate::token::TokenSet;

/// Which tokens a new credential starts from when both the store and the builder have some.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Precedence {
    /// The set issued later wins (by `issued_at`); a refresh token given alone loses to a stored
    /// set, which may hold its rotated successor. The default.
    #[default]
    Newer,
    /// The store's set wins whenever there is one.
    Store,
    /// The builder's tokens win: they are saved over the store's set.
    Given,
}

/// The tokens given to the builder.
#[derive(Clone)]
enum Given {
    Set(TokenSet),
    /// A refresh token alone: there is no access token until the first refresh.
    RefreshOnly(RefreshToken),
}

/// Builder of a [`Credential`].
///
/// # Default
/// | setting | default |
/// |---|---|
/// | [`runtime`](CredentialBuilder::runtime) | [`Runtime::tokio`] with the `tokio` feature; required without it |
/// | [`policy`](CredentialBuilder::policy) | [`RefreshPolicy::default`] |
/// | [`store`](CredentialBuilder::store) | none: tokens live in memory only |
/// | [`tokens`](CredentialBuilder::tokens) / [`refresh_token`](CredentialBuilder::refresh_token) | none: the store's content, or [`Phase::Empty`](crate::Phase::Empty) |
/// | [`precedence`](CredentialBuilder::precedence) | [`Precedence::Newer`] |
/// | [`name`](CredentialBuilder::name) | `"credential"` (used in tracing spans) |
pub struct CredentialBuilder {
    refresher: Arc<dyn Refresher>,
    runtime: Option<Runtime>,
    policy: RefreshPolicy,
    store: Option<Arc<dyn TokenStore>>,
    given: Option<Given>,
    precedence: Precedence,
    name: String,
}

impl fmt::Debug for CredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given = match &self.given {
            None => "none",
            Some(Given::Set(_)) => "token set",
            Some(Given::RefreshOnly(_)) => "refresh token",
        };
        f.debug_struct("CredentialBuilder")
            .field("policy", &self.policy)
            .field("has_store", &self.store.is_some())
            .field("given", &given)
            .field("precedence", &self.precedence)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CredentialBuilder {
    pub(super) fn new(refresher: Arc<dyn Refresher>) -> Self {
        CredentialBuilder {
            refresher,
            runtime: None,
            policy: RefreshPolicy::default(),
            store: None,
            given: None,
            precedence: Precedence::default(),
            name: DEFAULT_NAME.into(),
        }
    }

    /// The runtime to run on (clock, timers, spawning).
    ///
    /// See [`Runtime`] for building one; the [default](CredentialBuilder#default) is tokio.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The refresh policy.
    ///
    /// See [`RefreshPolicy`].
    pub fn policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The store tokens are loaded from at build time and saved to after every refresh.
    ///
    /// See [`TokenStore`].
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Initial tokens (from a login). When the store holds a set too, the
    /// [`precedence`](CredentialBuilder::precedence) decides.
    ///
    /// See the [`Token::access_token`](crate::Token::access_token) example.
    pub fn tokens(mut self, tokens: TokenSet) -> Self {
        self.given = Some(Given::Set(tokens));
        self
    }

    /// Start from a refresh token alone: there is no access token until the first caller's
    /// refresh, and nothing is saved before that refresh succeeds.
    ///
    /// See the [`Credential` example](Credential#examples).
    pub fn refresh_token(mut self, refresh_token: RefreshToken) -> Self {
        self.given = Some(Given::RefreshOnly(refresh_token));
        self
    }

    /// Which tokens win when both the store and the builder have some; the choice is reported
    /// as [`Event::InitialTokens`].
    ///
    /// ```
    /// # let b = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) }));
    /// let b = b.precedence(keepfresh::Precedence::Given);
    /// assert!(format!("{b:?}").contains("Given"));
    /// ```
    pub fn precedence(mut self, precedence: Precedence) -> Self {
        self.precedence = precedence;
        self
    }

    /// A name for tracing spans and `Debug` output.
    ///
    /// ```
    /// # let b = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) }));
    /// let b = b.name("github");
    /// assert!(format!("{b:?}").contains("github"));
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Builds the credential, loading the store first.
    ///
    /// # Errors
    /// A configuration error when no runtime is available, a store error when the store cannot
    /// be read (a corrupt store is left untouched) or the given tokens cannot be saved.
    ///
    /// # Cancel safety
    /// Cancelling drops the half-built credential; at most the given token set was written to
    /// the store.
    ///
    /// See the [`Credential` example](Credential#examples).
    pub async fn build(self) -> Result<Credential, Error> {
        self.build_in(None).await
    }

    /// The policy set so far (a pool shares one copy of equal policies).
    pub(crate) fn policy_ref(&self) -> &RefreshPolicy {
        &self.policy
    }

    /// The refresher (a pool shares one [`Common`] among the credentials that use one).
    pub(crate) fn refresher_ref(&self) -> &Arc<dyn Refresher> {
        &self.refresher
    }

    /// Builds a credential for a pool: on the pool's runtime (the builder's is ignored: the
    /// pool's one scheduler reads one clock), sharing the part that does not depend on its
    /// tokens with the pool's other credentials of the same refresher and an equal policy, and
    /// timed by the pool's scheduler instead of a task of its own.
    pub(crate) async fn build_pooled(self, pool: PoolParts) -> Result<Credential, Error> {
        self.build_in(Some(pool)).await
    }

    async fn build_in(self, pool: Option<PoolParts>) -> Result<Credential, Error> {
        let (common, timer) = match pool {
            None => {
                let rt = match self.runtime {
                    Some(rt) => rt,
                    None => default_runtime()?,
                };
                let common = common(rt, self.refresher, Arc::new(self.policy), None);
                (Arc::new(common), Timer::own())
            }
            Some(pool) => (pool.common, Timer::pooled()),
        };
        let inner = Arc::new(Inner {
            id: engine::next_id(),
            published: Published::new(Snapshot {
                owner: 0,
                set: None,
                generation: 0,
                fast_until: MonoTime::ZERO,
                #[cfg(feature = "metrics")]
                stale_from: MonoTime::MAX,
            }),
            core: Mutex::new(Core::new(&common.policy)),
            common,
            store: self.store,
            listeners: Listeners::default(),
            timer,
            #[cfg(feature = "metrics")]
            stale_served: Default::default(),
            name: shared_name(self.name),
        });
        let limit = inner.common.policy.store_timeout();
        let stored = match &inner.store {
            Some(store) => store_io::store_op(&inner.common.rt, limit, store.load()).await?,
            None => None,
        };
        let start = choose(stored, self.given, self.precedence);
        let mut after = After::default();
        let now = inner.common.rt.now();
        if let Some(from_store) = start.contested {
            after.events.push(Event::InitialTokens {
                at: now,
                from_store,
            });
        }
        let mut version = start.version;
        if let (Some(store), Some(set), true) = (&inner.store, &start.set, start.save) {
            version = match store_io::store_op(&inner.common.rt, limit, store.save(version, set))
                .await?
            {
                SaveOutcome::Saved(v) => Some(v),
                SaveOutcome::Conflict(_) => {
                    return Err(Error::store(crate::store::StoreError::new(
                        crate::store::StoreErrorKind::Io,
                        "the store changed while the credential was being built",
                    )))
                }
            };
        }
        {
            let mut core = inner.core.lock();
            core.version = version;
            match (start.set, start.refresh_only) {
                (Some(set), _) => {
                    inner.authorize_locked(&mut core, set, version, false, &mut after)
                }
                (None, Some(rt)) => {
                    core.active_mut().refresh_only = Some(rt);
                    // No access token: a grant that is already over, with a refresh token.
                    let grant = Grant::new(now, std::time::Duration::ZERO, true);
                    core.machine.handle(Input::Authorize { now, grant });
                    inner.publish_locked(&mut core, &mut after.events);
                }
                (None, None) => inner.publish_locked(&mut core, &mut after.events),
            }
        }
        inner.run_after(after);
        // The timer runs when time alone can start a refresh: eager mode and keep-alive. The
        // retry after an ambiguous answer starts it on demand.
        if inner.common.policy.eager() || inner.common.policy.keep_alive().is_some() {
            inner.start_timer();
        }
        Ok(Credential { inner })
    }
}

/// What a pool lends the credentials it builds: the part they share, its runtime and scheduler
/// among it.
pub(crate) struct PoolParts {
    pub(crate) common: Arc<Common>,
}

/// The shared part of a credential that runs on `rt`, refreshes with `refresher` under
/// `policy`, and is ticked by `scheduler` (a pool's) or by a timer task of its own.
pub(crate) fn common(
    rt: Runtime,
    refresher: Arc<dyn Refresher>,
    policy: Arc<RefreshPolicy>,
    scheduler: Option<Weak<dyn Scheduler>>,
) -> Common {
    Common {
        rt,
        refresher,
        policy,
        scheduler,
        spawn_job: driver::spawn,
    }
}

const DEFAULT_NAME: &str = "credential";

/// The name as the credential keeps it; credentials left with the default name share one copy.
///
/// An `Arc<String>`, not an `Arc<str>`: one word in every credential instead of two.
fn shared_name(name: String) -> Arc<String> {
    static DEFAULT: LazyLock<Arc<String>> = LazyLock::new(|| Arc::new(DEFAULT_NAME.to_owned()));
    if name == DEFAULT_NAME {
        DEFAULT.clone()
    } else {
        Arc::new(name)
    }
}

/// The tokens a credential starts from.
struct Initial {
    set: Option<Arc<TokenSet>>,
    refresh_only: Option<RefreshToken>,
    version: Option<crate::store::Version>,
    /// Whether `set` must be saved (the builder's set won, or the store was empty).
    save: bool,
    /// `Some(from_store)` when both had tokens.
    contested: Option<bool>,
}

fn choose(stored: Option<Stored>, given: Option<Given>, precedence: Precedence) -> Initial {
    let version = stored.as_ref().map(|s| s.version);
    let from_store = |stored: Stored, contested| Initial {
        set: Some(Arc::new(stored.tokens)),
        refresh_only: None,
        version: Some(stored.version),
        save: false,
        contested,
    };
    match (stored, given) {
        (None, None) => Initial {
            set: None,
            refresh_only: None,
            version: None,
            save: false,
            contested: None,
        },
        (Some(s), None) => from_store(s, None),
        (None, Some(Given::Set(set))) => Initial {
            set: Some(Arc::new(set)),
            refresh_only: None,
            version: None,
            save: true,
            contested: None,
        },
        (None, Some(Given::RefreshOnly(rt))) => Initial {
            set: None,
            refresh_only: Some(rt),
            version: None,
            save: false,
            contested: None,
        },
        (Some(s), Some(given)) => {
            let given_wins = match (&given, precedence) {
                (_, Precedence::Given) => true,
                (_, Precedence::Store) => false,
                (Given::Set(set), Precedence::Newer) => set.issued_at() > s.tokens.issued_at(),
                (Given::RefreshOnly(_), Precedence::Newer) => false,
            };
            if !given_wins {
                return from_store(s, Some(true));
            }
            match given {
                Given::Set(set) => Initial {
                    set: Some(Arc::new(set)),
                    refresh_only: None,
                    version,
                    save: true,
                    contested: Some(false),
                },
                // Saved with the first refresh's set, over the store's version.
                Given::RefreshOnly(rt) => Initial {
                    set: None,
                    refresh_only: Some(rt),
                    version,
                    save: false,
                    contested: Some(false),
                },
            }
        }
    }
}

#[cfg(feature = "tokio")]
fn default_runtime() -> Result<Runtime, Error> {
    Ok(Runtime::tokio())
}

#[cfg(not(feature = "tokio"))]
fn default_runtime() -> Result<Runtime, Error> {
    Err(Error::config(
        "no runtime: enable the `tokio` feature or call CredentialBuilder::runtime",
    ))
}
