//! [`TokenFuture`]: the lock-free hot path, and the slow path that joins or starts a refresh.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{select, Either};

use super::engine::{Inner, Step};
#[cfg(feature = "metrics")]
use super::handle::Snapshot;
use super::handle::Token;
use crate::error::Error;
use crate::event::Event;
use crate::refresher::RefreshError;
#[cfg(feature = "metrics")]
use crate::runtime::MonoTime;

/// How many times one caller follows a finished refresh with another before giving up.
const MAX_ROUNDS: u32 = 4;

/// The future returned by [`Credential::token`](crate::Credential::token).
///
/// Its first poll serves a fresh token without locks or allocation; only when that is not
/// possible does it box the engine's slow path (joining or starting a refresh), so the future
/// itself stays two words and is cheap to create, move and drop.
#[must_use = "futures do nothing unless polled"]
pub struct TokenFuture<'a> {
    pub(super) inner: &'a Arc<Inner>,
    pub(super) slow: Option<SlowPath<'a>>,
}

type SlowPath<'a> = Pin<Box<dyn Future<Output = Result<Token, Error>> + Send + 'a>>;

impl Future for TokenFuture<'_> {
    type Output = Result<Token, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(slow) = self.slow.as_mut() {
            return slow.as_mut().poll(cx);
        }
        if let Some(token) = self.inner.try_fast() {
            return Poll::Ready(Ok(token));
        }
        let mut slow: SlowPath<'_> = Box::pin(self.inner.token_slow());
        let poll = slow.as_mut().poll(cx);
        if poll.is_pending() {
            self.slow = Some(slow);
        }
        poll
    }
}

impl fmt::Debug for TokenFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFuture")
            .field("waiting", &self.slow.is_some())
            .finish()
    }
}

impl Inner {
    /// The published token, if it may be handed out now without the engine's attention.
    #[inline]
    pub(crate) fn try_fast(&self) -> Option<Token> {
        let snap = self.published.load();
        let now = self.common.rt.now();
        if now >= snap.fast_until {
            return None;
        }
        #[cfg(feature = "metrics")]
        self.count_stale(&snap, now);
        Some(Token { snap })
    }

    pub(crate) async fn token_slow(self: &Arc<Self>) -> Result<Token, Error> {
        let start = self.common.rt.now();
        let deadline = start.saturating_add(self.common.policy.wait_timeout());
        let mut waited = false;
        let result = 'done: {
            for _ in 0..MAX_ROUNDS {
                match self.demand() {
                    Step::Serve(snap) => {
                        #[cfg(feature = "metrics")]
                        self.count_stale(&snap, self.common.rt.now());
                        break 'done Ok(Token { snap });
                    }
                    Step::Fail(e) => break 'done Err(e),
                    Step::Wait(cell) => {
                        waited = true;
                        let timer = self.common.rt.sleep_until(deadline);
                        if let Either::Right(_) = select(cell.wait(), timer).await {
                            self.listeners.emit(vec![Event::WaitTimedOut {
                                at: self.common.rt.now(),
                            }]);
                            break 'done Err(Error::timeout());
                        }
                        // The refresh published its token: read it lock-free, like the hot
                        // path, instead of re-entering the machine under its lock.
                        if let Some(token) = self.try_fast() {
                            break 'done Ok(token);
                        }
                    }
                }
            }
            Err(Error::refresh(
                RefreshError::transient(
                    "refreshed tokens were unusable on arrival (lifetime shorter than the refresh latency)",
                ),
                None,
            ))
        };
        if waited {
            let at = self.common.rt.now();
            self.listeners.emit(vec![Event::CallerWaited {
                at,
                waited: at.saturating_duration_since(start),
                served: result.is_ok(),
            }]);
        }
        result
    }

    /// Counts a token served past its refresh point (metrics' served-stale).
    #[cfg(feature = "metrics")]
    #[inline]
    fn count_stale(&self, snap: &Snapshot, now: MonoTime) {
        if now >= snap.stale_from {
            self.stale_served
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
