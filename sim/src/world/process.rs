//! Starting a process of a credential: its clock, its store and network views, its client.

use super::*;
use crate::exec::MinHeap4;

pub(super) fn start_process(w: &Arc<Shared>, i: usize) {
    let group = w.exec.new_group();
    if w.procs[i].host.suspended_since().is_some() {
        // Restarted while its host sleeps: it runs when the host resumes.
        w.exec.freeze(group);
    }
    *w.procs[i].group.lock() = group;
    let instance = {
        let mut s = w.state.lock();
        s.instance[i] += 1;
        s.gen_cache[i] = (u64::MAX, MonoTime::ZERO, 0);
        // A new instance knows nothing of what the one before it saw.
        s.seen_rotated[i].clear();
        s.reported_rejected[i].clear();
        s.served_sets[i].clear();
        s.misled[i] = false;
        s.instance[i]
    };
    let w2 = w.clone();
    w.exec.spawn_in(group, async move {
        let p = &w2.procs[i];
        let runtime = if w2.strategy.name() == "keepfresh" {
            w2.exec.runtime(group, p.offset.clone(), p.host.clone())
        } else {
            w2.exec
                .monotonic_only_runtime(group, p.offset.clone(), p.host.clone())
        };
        let store: Arc<dyn TokenStore> = Arc::new(FaultyStore {
            inner: w2.stores[p.cred].clone(),
            state: w2.state.clone(),
            exec: w2.exec.clone(),
            cred: p.cred,
            proc: i,
            group,
        });
        let refresher = Arc::new(ProviderClient {
            state: w2.state.clone(),
            exec: w2.exec.clone(),
            cred: p.cred,
            proc: i,
        });
        let st = w2.state.clone();
        let ex = w2.exec.clone();
        let cred = p.cred;
        let prefix = format!("p{i} ");
        let log = LogSink::new(move |line| {
            let mut s = st.lock();
            let now = ex.now();
            match line {
                LogLine::Text(mut t) => {
                    // `format!("p{i} {t}")` without a second string grown from a few bytes.
                    t.insert_str(0, &prefix);
                    s.trace_line(now, t)
                }
                LogLine::Reauth { reason } => {
                    s.metrics.reauths += 1;
                    // A re-authorization after a replay the client could not avoid (its
                    // rotation answer was lost, or died with a crashed process) is correct.
                    let fam = s.families[cred];
                    let excused = s
                        .provider
                        .replays
                        .iter()
                        .any(|r| r.excused && r.family == fam);
                    if s.reauth_never && !excused {
                        s.violate_correctness(
                            now,
                            format!("process p{i} requires re-authorization ({reason})"),
                        );
                    }
                    s.reauth_reports
                        .entry((i, instance))
                        .or_default()
                        .push(reason);
                }
                LogLine::Persisted => {
                    if let Some(since) = s.unsaved_since[cred].take() {
                        let d = now.saturating_duration_since(since).as_nanos() as u64;
                        s.metrics.max_unsaved_window_ns = s.metrics.max_unsaved_window_ns.max(d);
                    }
                }
                LogLine::PersistFailed => s.metrics.persist_failures += 1,
            }
        });
        let listener_panics = (w2.cfg.faults.listener_panics > 0.0).then(|| {
            let st = w2.state.clone();
            let ex = w2.exec.clone();
            ListenerPanics::new(move |kind| {
                let mut s = st.lock();
                let p = s.faults.listener_panics;
                if s.healed || !s.rng.chance(p) {
                    return false;
                }
                s.metrics.listener_panics += 1;
                let now = ex.now();
                s.trace_line(now, format!("p{i} an event listener panics on {kind}"));
                true
            })
        });
        let initial = w2.logins.lock()[p.cred].clone();
        let ctx = ProcessContext {
            runtime,
            store,
            refresher,
            initial: Some(initial),
            // Each process (and each restart of it) draws its own refresh points, as replicas
            // seeded from entropy would; a shared seed would make jitter spread nothing.
            policy: w2.policy.clone().with_jitter_seed(derive(
                w2.seed,
                5_000_000 + i as u64 * 7919 + instance as u64,
            )),
            seed: derive(w2.seed, 1000 + i as u64 * 7919 + instance as u64),
            log,
            label: format!("c{}/p{i}", p.cred),
            listener_panics,
        };
        match w2.strategy.start(ctx).await {
            Ok(client) => {
                *p.client.lock() = Some(client.clone());
                drive_callers(w2.clone(), i, group, client).await;
            }
            Err(e) => {
                // A host restarts a process that failed to start (its store timed out, say).
                let now = w2.exec.now();
                w2.state
                    .lock()
                    .trace_line(now, format!("p{i} failed to start ({e}); restarting in 5s"));
                w2.exec.sleep(Duration::from_secs(5)).await;
                start_process(&w2, i);
                w2.exec.kill(group);
            }
        }
    });
}

/// Counts a caller request as pending until it resolves or is dropped (process crash).
pub(super) struct Pending<'a> {
    pub(crate) state: &'a Mutex<State>,
    pub(crate) armed: bool,
}

impl Pending<'_> {
    /// The request resolved: stop counting it (under the caller's lock of the state).
    pub(crate) fn resolve(&mut self, s: &mut State) {
        if std::mem::take(&mut self.armed) {
            s.pending_callers -= 1;
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.state.lock().pending_callers -= 1;
        }
    }
}

pub(super) async fn drive_callers(
    w: Arc<Shared>,
    i: usize,
    group: Group,
    client: Arc<dyn ProcessClient>,
) {
    let cfg = &w.cfg;
    let end = MonoTime::from_duration(cfg.duration);
    let mut rng = SimRng::new(derive(w.seed, 50_000 + i as u64));
    let caller = Arc::new(Caller {
        w: w.clone(),
        client,
    });
    // Request times are on the host's monotonic clock, like a host's timers: a suspend delays
    // them. The host's clock never runs ahead of virtual time, so a virtual-time sleep to a
    // request time wakes at it or before; a host that was ever suspended then sleeps on by its
    // clock (the common case costs one virtual-time sleep). The workload still ends at `end`
    // in true time: a request time past `end` on the host's clock is past it in true time too,
    // and after a suspend the true time is checked on waking.
    let host = w.procs[i].host.clone();
    match &cfg.pattern {
        Pattern::Steady { mean } => {
            let mean_ns = mean.as_nanos() as u64;
            let now = host.mono_at(w.exec.now()).as_nanos();
            let mut queue = CallerQueue::new(cfg.callers, end.as_nanos(), mean_ns);
            for c in 0..cfg.callers as u64 {
                queue.push(now + rng.range(0, mean_ns), c);
            }
            // Each turn serves the earliest caller and puts it back at its next time in one
            // pass down the queue (`replace_top`), not a `pop` and a `push`.
            while let Some((t, c)) = queue.peek() {
                if t >= end.as_nanos() {
                    break;
                }
                w.exec.sleep_until(MonoTime::from_nanos(t)).await;
                if host.ever_suspended() {
                    w.exec.sleep_until_on(&host, MonoTime::from_nanos(t)).await;
                    if w.exec.now() >= end {
                        break;
                    }
                }
                issue(&caller, i, group).await;
                queue.replace_top(t + rng.range(mean_ns / 2, mean_ns * 3 / 2), c);
            }
        }
        Pattern::Bursts { first, every } => {
            let mut t = MonoTime::from_duration(*first).max(host.mono_at(w.exec.now()));
            while t < end {
                w.exec.sleep_until(t).await;
                if host.ever_suspended() {
                    w.exec.sleep_until_on(&host, t).await;
                    if w.exec.now() >= end {
                        break;
                    }
                }
                for _ in 0..cfg.callers {
                    issue(&caller, i, group).await;
                }
                t = t.saturating_add(*every);
            }
        }
    }
}

/// A process's steady callers by next request time (nanoseconds), ties by caller index.
///
/// Packed into one `u64` per caller (time above the index bits) when every time the run can
/// reach fits, which halves the heap and its comparisons; otherwise `(time, caller)` pairs.
/// Both give the same order.
enum CallerQueue {
    Packed { heap: MinHeap4<u64>, bits: u32 },
    Wide(MinHeap4<(u64, u64)>),
}

impl CallerQueue {
    /// A queue for `callers` callers whose times stay below `end_ns` plus one and a half
    /// intervals of `mean_ns`.
    fn new(callers: usize, end_ns: u64, mean_ns: u64) -> CallerQueue {
        let bits = u64::BITS - (callers.max(1) as u64 - 1).leading_zeros();
        let latest = end_ns
            .saturating_add(mean_ns.saturating_mul(3) / 2)
            .saturating_add(1);
        if bits < 64 && latest.leading_zeros() >= bits {
            CallerQueue::Packed {
                heap: MinHeap4::with_capacity(callers),
                bits,
            }
        } else {
            CallerQueue::Wide(MinHeap4::with_capacity(callers))
        }
    }

    fn push(&mut self, t: u64, c: u64) {
        match self {
            CallerQueue::Packed { heap, bits } => heap.push(t << *bits | c),
            CallerQueue::Wide(heap) => heap.push((t, c)),
        }
    }

    /// The earliest `(time, caller)`.
    fn peek(&self) -> Option<(u64, u64)> {
        match self {
            CallerQueue::Packed { heap, bits } => heap
                .peek()
                .map(|key| (key >> *bits, key & ((1u64 << *bits) - 1))),
            CallerQueue::Wide(heap) => heap.peek(),
        }
    }

    /// Puts the earliest caller, `c`, back at time `t` (it must be the earliest).
    fn replace_top(&mut self, t: u64, c: u64) {
        debug_assert_eq!(self.peek().map(|p| p.1), Some(c));
        match self {
            CallerQueue::Packed { heap, bits } => {
                heap.replace_top(t << *bits | c);
            }
            CallerQueue::Wide(heap) => {
                heap.replace_top((t, c));
            }
        }
    }

    #[cfg(test)]
    fn pop(&mut self) -> Option<(u64, u64)> {
        match self {
            CallerQueue::Packed { heap, bits } => heap
                .pop()
                .map(|key| (key >> *bits, key & ((1u64 << *bits) - 1))),
            CallerQueue::Wide(heap) => heap.pop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CallerQueue;

    /// Packed and wide queues hand out the same `(time, caller)` sequence, ties by caller.
    #[test]
    fn packed_and_wide_queues_agree() {
        let mut packed = CallerQueue::new(100, 1 << 40, 1 << 20);
        let mut wide = CallerQueue::new(100, u64::MAX - 1, 1 << 20);
        assert!(matches!(packed, CallerQueue::Packed { .. }));
        assert!(matches!(wide, CallerQueue::Wide(_)));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for c in 0..100 {
            // Few distinct times, so that ties between callers are common.
            let t = next() % 50;
            packed.push(t, c);
            wide.push(t, c);
        }
        let mut last = (0, 0);
        for round in 0..2000 {
            let (a, b) = (packed.peek().unwrap(), wide.peek().unwrap());
            assert_eq!(a, b);
            assert!(a >= last, "{a:?} after {last:?}");
            last = a;
            let t = a.0 + next() % 50;
            if round % 2 == 0 {
                packed.replace_top(t, a.1);
                wide.replace_top(t, a.1);
            } else {
                assert_eq!(packed.pop(), Some(a));
                assert_eq!(wide.pop(), Some(a));
                packed.push(t, a.1);
                wide.push(t, a.1);
            }
        }
    }
}
