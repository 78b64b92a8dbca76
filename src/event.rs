//! What a credential reports as it lives: phase transitions and refresh, store and cache events.
//! Events carry fingerprints, never secrets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;

use crate::machine::{FlightId, Phase, ReauthReason, Transition};
use crate::policy::LifetimeAdjustment;
use crate::refresher::ErrorClass;
use crate::runtime::MonoTime;
use crate::secret::Fingerprint;
use crate::store::{StoreError, Version};
use crate::sync::Mutex;

/// Something that happened to a credential.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The phase changed.
    Transition(Transition),
    /// A refresh started.
    RefreshStarted {
        /// When.
        at: MonoTime,
        /// Which refresh.
        flight: FlightId,
        /// Fingerprint of the refresh token being redeemed.
        refresh_token: Option<Fingerprint>,
    },
    /// A refresh produced a new token set, now published.
    Refreshed {
        /// When.
        at: MonoTime,
        /// Which refresh.
        flight: FlightId,
        /// The new generation.
        generation: u64,
        /// Fingerprint of the new access token.
        access_token: Fingerprint,
        /// Fingerprint of the refresh token now held.
        refresh_token: Option<Fingerprint>,
        /// Whether the provider rotated the refresh token.
        rotated: bool,
        /// The lifetime used.
        lifetime: Duration,
    },
    /// Newer tokens written by another process were adopted instead of refreshing.
    Adopted {
        /// When.
        at: MonoTime,
        /// The new generation.
        generation: u64,
        /// Fingerprint of the adopted access token.
        access_token: Fingerprint,
    },
    /// A refresh failed.
    RefreshFailed {
        /// When.
        at: MonoTime,
        /// Which refresh.
        flight: FlightId,
        /// How it was classified.
        class: ErrorClass,
        /// The provider's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The refresher panicked; reported as a transient failure.
    RefresherPanicked {
        /// When.
        at: MonoTime,
        /// Which refresh.
        flight: FlightId,
    },
    /// The provider's `expires_in` was missing or out of range and was replaced.
    LifetimeAdjusted {
        /// When.
        at: MonoTime,
        /// What was done.
        adjustment: LifetimeAdjustment,
        /// The lifetime used instead.
        used: Duration,
    },
    /// The provider answered without an access token; a rotated refresh token in that answer
    /// was kept.
    MalformedResponse {
        /// When.
        at: MonoTime,
        /// Whether a rotated refresh token was kept from it.
        kept_refresh_token: bool,
    },
    /// A token set was written to the store.
    Persisted {
        /// When.
        at: MonoTime,
        /// The generation written.
        generation: u64,
        /// The store's new version.
        version: Version,
    },
    /// Writing a token set failed; it is served from memory and the write is retried.
    PersistFailed {
        /// When.
        at: MonoTime,
        /// The generation that is not yet durable.
        generation: u64,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// The store's error.
        error: StoreError,
    },
    /// The store had changed under a write (another writer); the write was redone.
    StoreConflict {
        /// When.
        at: MonoTime,
    },
    /// The store was cleared because it still held the refresh token the provider refused.
    StoreCleared {
        /// When.
        at: MonoTime,
    },
    /// The store answered with a token set this process had already replaced: it lost a save
    /// it had acknowledged, the read came from a lagging replica, or another writer rewrote
    /// the replaced set while this process's save of its successor was still owed. The set
    /// held is kept and refreshed from (the stored refresh token is spent), and the next save
    /// writes over the stored set. Seen without failing saves, it means the store lies, and
    /// rotations will be lost at restarts: fix the store.
    StoreBehind {
        /// When.
        at: MonoTime,
    },
    /// Another process holds the refresh lease; waiting for its result.
    LeaseBusy {
        /// When.
        at: MonoTime,
    },
    /// Renewing the cross-process lease failed or the store said it is no longer ours; the
    /// owed save goes on (the store's compare-and-swap protects it).
    LeaseLost {
        /// When.
        at: MonoTime,
    },
    /// An owed save was given up: the store holds another lineage's set (`adopted`: it is now
    /// served) or was emptied by someone else (it is not resurrected).
    SaveSuperseded {
        /// When.
        at: MonoTime,
        /// Whether the store's set was adopted.
        adopted: bool,
    },
    /// At build time, the store and the builder both had tokens: which ones were used.
    InitialTokens {
        /// When.
        at: MonoTime,
        /// `true`: the store's set; `false`: the builder's.
        from_store: bool,
    },
    /// A listener panicked; the panic was caught and the listener stays registered.
    ListenerPanicked {
        /// When.
        at: MonoTime,
    },
    /// The refresh task could not be started or ended without a result (a panic, a dropped
    /// runtime); the flight was failed so that callers are not left waiting.
    FlightAborted {
        /// When.
        at: MonoTime,
        /// The flight.
        flight: FlightId,
    },
    /// A resource server rejected a token.
    Invalidated {
        /// When.
        at: MonoTime,
        /// The generation named by the caller.
        generation: u64,
        /// Whether a refresh was started because of it (false: stale or already handled).
        refresh_started: bool,
    },
    /// Re-authorization is required (also visible as a transition).
    ReauthRequired {
        /// When.
        at: MonoTime,
        /// Why.
        reason: ReauthReason,
    },
    /// A caller gave up waiting.
    WaitTimedOut {
        /// When.
        at: MonoTime,
    },
    /// A caller that had to wait for a refresh got its answer: a token, or an error (a wait
    /// that timed out is also reported as [`Event::WaitTimedOut`]). Callers cancelled while
    /// waiting are not reported.
    CallerWaited {
        /// When the wait ended.
        at: MonoTime,
        /// How long the caller waited.
        waited: Duration,
        /// Whether it got a token.
        served: bool,
    },
}

impl Event {
    /// The phase moved to, if this is a transition.
    ///
    /// ```
    /// use keepfresh::event::Event;
    /// use keepfresh::machine::{Phase, Transition};
    /// use keepfresh::runtime::MonoTime;
    /// let e = Event::Transition(Transition { at: MonoTime::ZERO, from: Phase::Empty, to: Phase::Fresh });
    /// assert_eq!(e.new_phase(), Some(&Phase::Fresh));
    /// ```
    pub fn new_phase(&self) -> Option<&Phase> {
        match self {
            Event::Transition(t) => Some(&t.to),
            _ => None,
        }
    }
}

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// The time an event carries (transitions carry theirs too).
fn event_time(e: &Event) -> MonoTime {
    match e {
        Event::Transition(t) => t.at,
        Event::RefreshStarted { at, .. }
        | Event::Refreshed { at, .. }
        | Event::Adopted { at, .. }
        | Event::RefreshFailed { at, .. }
        | Event::RefresherPanicked { at, .. }
        | Event::LifetimeAdjusted { at, .. }
        | Event::MalformedResponse { at, .. }
        | Event::Persisted { at, .. }
        | Event::PersistFailed { at, .. }
        | Event::StoreConflict { at }
        | Event::StoreCleared { at }
        | Event::StoreBehind { at }
        | Event::LeaseBusy { at }
        | Event::LeaseLost { at }
        | Event::SaveSuperseded { at, .. }
        | Event::InitialTokens { at, .. }
        | Event::ListenerPanicked { at }
        | Event::FlightAborted { at, .. }
        | Event::Invalidated { at, .. }
        | Event::ReauthRequired { at, .. }
        | Event::WaitTimedOut { at }
        | Event::CallerWaited { at, .. } => *at,
    }
}

/// The listeners of one credential. Boxed on first use: most credentials have none, and a
/// pool holds many credentials.
#[derive(Default)]
pub(crate) struct Listeners {
    lists: Mutex<Option<Box<Lists>>>,
}

#[derive(Default)]
struct Lists {
    callbacks: Vec<Listener>,
    streams: Vec<mpsc::UnboundedSender<Event>>,
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lists = self.lists.lock();
        let (callbacks, streams) = lists
            .as_deref()
            .map_or((0, 0), |l| (l.callbacks.len(), l.streams.len()));
        f.debug_struct("Listeners")
            .field("callbacks", &callbacks)
            .field("streams", &streams)
            .finish()
    }
}

impl Listeners {
    pub(crate) fn add(&self, f: Listener) {
        self.lists
            .lock()
            .get_or_insert_with(Default::default)
            .callbacks
            .push(f);
    }

    pub(crate) fn stream(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded();
        self.lists
            .lock()
            .get_or_insert_with(Default::default)
            .streams
            .push(tx);
        rx
    }

    /// Delivers events in order. Called with no engine lock held: listeners are caller code.
    pub(crate) fn emit(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let callbacks: Vec<Listener> = match self.lists.lock().as_deref() {
            Some(l) => l.callbacks.clone(),
            None => Vec::new(),
        };
        let mut panicked = None;
        for e in &events {
            #[cfg(feature = "tracing")]
            trace_event(e);
            for cb in &callbacks {
                // A panicking listener must not wedge the credential: the panic is caught here
                // and the remaining listeners still run.
                let call = std::panic::AssertUnwindSafe(|| cb(e));
                if std::panic::catch_unwind(call).is_err() {
                    panicked = Some(event_time(e));
                }
            }
        }
        let mut events = events;
        if let Some(at) = panicked {
            // Told to the streams (and tracing) only: the listeners just panicked.
            let e = Event::ListenerPanicked { at };
            #[cfg(feature = "tracing")]
            trace_event(&e);
            events.push(e);
        }
        let mut lists = self.lists.lock();
        if let Some(l) = lists.as_deref_mut()
            && !l.streams.is_empty()
        {
            l.streams
                .retain(|tx| events.iter().all(|e| tx.unbounded_send(e.clone()).is_ok()));
        }
    }
}

#[cfg(feature = "tracing")]
fn trace_event(e: &Event) {
    use tracing::{event, Level};
    match e {
        Event::Transition(t) => {
            event!(Level::DEBUG, from = %t.from, to = %t.to, "keepfresh phase transition")
        }
        Event::RefreshStarted {
            flight,
            refresh_token,
            ..
        } => event!(
            Level::DEBUG,
            flight = flight.0,
            refresh_token = refresh_token.map(|f| f.to_string()),
            "keepfresh refresh started"
        ),
        Event::Refreshed {
            generation,
            access_token,
            rotated,
            lifetime,
            ..
        } => event!(
            Level::INFO,
            generation,
            access_token = %access_token,
            rotated,
            lifetime_s = lifetime.as_secs(),
            "keepfresh token refreshed"
        ),
        Event::RefreshFailed {
            class, retry_after, ..
        } => event!(
            Level::WARN,
            class = %class,
            retry_after_s = retry_after.map(|d| d.as_secs()),
            "keepfresh refresh failed"
        ),
        Event::PersistFailed {
            generation,
            attempt,
            error,
            ..
        } => event!(
            Level::ERROR,
            generation,
            attempt,
            error = %error,
            "keepfresh could not persist a rotated token; serving it from memory and retrying"
        ),
        Event::ReauthRequired { reason, .. } => {
            event!(Level::WARN, reason = %reason, "keepfresh re-authorization required")
        }
        other => event!(Level::DEBUG, event = ?other, "keepfresh event"),
    }
}
