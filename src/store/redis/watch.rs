//! One pub/sub connection per opened server, shared by every credential on it, that turns
//! change messages into wake-ups; it reconnects by itself, and after every (re)subscription
//! tells the waiters to look, since messages sent meanwhile were lost.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::redis::aio::PubSubSink;
use futures::future::{select, Either};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a quiet subscription is checked with a PING: a connection that died without a
/// word (a network partition) would otherwise deliver nothing forever.
const PING_EVERY: Duration = Duration::from_secs(5);
/// The first and the longest pause between reconnection attempts.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Aborts the task when dropped, so that a dropped caller leaves no work behind.
pub(super) struct AbortOnDrop<T>(pub(super) JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The subscriptions and the running pub/sub task; dropping it stops the task.
pub(super) struct Watcher {
    state: Arc<State>,
    _task: AbortOnDrop<()>,
}

/// What a channel's waiters are told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Signal {
    /// Messages received on the channel.
    pub(super) messages: u64,
    /// Subscriptions made: after each, a message may have been missed, so waiters look.
    pub(super) subscriptions: u64,
}

#[derive(Default)]
struct State {
    channels: Mutex<HashMap<String, watch::Sender<Signal>>>,
    /// The live connection's subscribing half, while there is one.
    sink: Mutex<Option<PubSubSink>>,
}

impl State {
    fn message(&self, channel: &str) {
        if let Some(tx) = self.channels.lock().get(channel) {
            tx.send_modify(|s| s.messages = s.messages.wrapping_add(1));
        }
    }

    fn subscribed(&self, channels: &[String]) {
        let senders = self.channels.lock();
        for tx in channels.iter().filter_map(|c| senders.get(c)) {
            tx.send_modify(|s| s.subscriptions = s.subscriptions.wrapping_add(1));
        }
    }
}

impl Watcher {
    /// Starts the pub/sub task on `rt`.
    pub(super) fn start(
        client: ::redis::Client,
        rt: &tokio::runtime::Handle,
        op_timeout: Duration,
    ) -> Self {
        let state = Arc::new(State::default());
        let task = rt.spawn(run(client, state.clone(), op_timeout));
        Watcher {
            state,
            _task: AbortOnDrop(task),
        }
    }

    /// A receiver that sees every later message on `channel`. When connected, returns once the
    /// server confirmed the subscription (or `limit` passed), so that a message published after
    /// this returns is not missed; when not, the receiver is told once the subscription is
    /// made.
    pub(super) async fn subscribe(
        &self,
        channel: &str,
        limit: Duration,
    ) -> watch::Receiver<Signal> {
        let (rx, new) = {
            let mut channels = self.state.channels.lock();
            match channels.get(channel) {
                Some(tx) => (tx.subscribe(), false),
                None => {
                    let (tx, rx) = watch::channel(Signal::default());
                    channels.insert(channel.to_owned(), tx);
                    (rx, true)
                }
            }
        };
        // The task subscribes every known channel after it connects; a channel added while it
        // is connected is subscribed here. Both look at the other's lock after taking their
        // own, so at least one of them subscribes it.
        if new {
            let sink = self.state.sink.lock().clone();
            if let Some(mut sink) = sink {
                let _ = tokio::time::timeout(limit, sink.subscribe(channel)).await;
            }
        }
        rx
    }
}

async fn run(client: ::redis::Client, state: Arc<State>, op_timeout: Duration) {
    let mut pause = RECONNECT_FIRST;
    loop {
        if let Ok(Ok(pubsub)) = tokio::time::timeout(op_timeout, client.get_async_pubsub()).await {
            let (sink, stream) = pubsub.split();
            *state.sink.lock() = Some(sink.clone());
            let channels: Vec<String> = state.channels.lock().keys().cloned().collect();
            let subscribed = channels.is_empty()
                || matches!(
                    tokio::time::timeout(op_timeout, sink.clone().subscribe(channels.as_slice()))
                        .await,
                    Ok(Ok(()))
                );
            if subscribed {
                state.subscribed(&channels);
                pause = RECONNECT_FIRST;
                listen(&state, sink, stream, op_timeout).await;
            }
            *state.sink.lock() = None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

/// Wakes the channels' waiters until the connection ends or stops answering PINGs.
async fn listen(
    state: &State,
    mut sink: PubSubSink,
    mut stream: ::redis::aio::PubSubStream,
    op_timeout: Duration,
) {
    loop {
        let quiet = tokio::time::sleep(PING_EVERY);
        match select(stream.next(), std::pin::pin!(quiet)).await {
            Either::Left((Some(msg), _)) => state.message(msg.get_channel_name()),
            Either::Left((None, _)) => return,
            Either::Right(_) => {
                let ping = sink.ping::<::redis::Value>();
                if !matches!(tokio::time::timeout(op_timeout, ping).await, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
