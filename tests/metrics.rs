//! Metrics (feature `metrics`): scripted refreshes, failures, waits and store errors, read back
//! through metrics-util's debugging recorder. Everything runs on one thread under a local
//! recorder, on a manual clock.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::*;
use keepfresh::metrics::{self as kf_metrics, Labels, SubjectLabel};
use keepfresh::pool::{CredentialKey, CredentialPool};
use keepfresh::runtime::{ManualClock, Runtime};
use keepfresh::store::MemoryStore;
use keepfresh::{Credential, RefreshError, TokenSet};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn drive<F: Future>(clock: &ManualClock, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        clock.run_until_stalled();
    }
    panic!("the future made no progress");
}

fn build(
    clock: &ManualClock,
    provider: &Provider,
    store: Option<FlakyStore>,
    tokens: TokenSet,
) -> Credential {
    let mut b = Credential::builder(provider.clone())
        .runtime(Runtime::manual(clock))
        .policy(policy())
        .tokens(tokens);
    if let Some(s) = store {
        b = b.store(s);
    }
    drive(clock, b.build()).expect("builds")
}

/// One recorded series: its name, its labels, its value.
type Series = (String, Vec<(String, String)>, DebugValue);

/// The metrics recorded so far, by name and labels.
struct Recorded(Vec<Series>);

impl Recorded {
    fn take(s: &Snapshotter) -> Self {
        Recorded(
            s.snapshot()
                .into_vec()
                .into_iter()
                .map(|(ck, _, _, v)| {
                    let key = ck.key();
                    let labels = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    (key.name().to_owned(), labels, v)
                })
                .collect(),
        )
    }

    /// The value of `name` for the series carrying every label in `labels`, summed when more
    /// than one does (counters and gauges) or concatenated (histograms: their sample count).
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&DebugValue> {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .collect()
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.find(name, labels)
            .into_iter()
            .map(|v| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .into_iter()
            .map(|v| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                other => panic!("{name} is not a gauge: {other:?}"),
            })
            .sum()
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.find(name, labels)
            .into_iter()
            .flat_map(|v| match v {
                DebugValue::Histogram(h) => h.iter().map(|x| x.into_inner()).collect::<Vec<_>>(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .collect()
    }

    /// Every label value recorded, to check that none is a secret.
    fn label_values(&self) -> Vec<&str> {
        self.0
            .iter()
            .flat_map(|(_, l, _)| l.iter().map(|(_, v)| v.as_str()))
            .collect()
    }
}

/// A failed refresh a caller waited for, a successful one after the backoff, a rejection, a
/// refresh-ahead served stale, and a store that cannot save.
#[test]
fn counters_follow_a_scripted_run() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let provider = Provider::rotating("refresh-0");
        provider.script([Answer::Fail(RefreshError::transient("HTTP 503"))]);
        let c = build(&clock, &provider, None, expired(&clock));
        kf_metrics::install(&c, Labels::new().label("credential", "scripted"));

        // 1. Expired: the caller waits, the refresh fails, the caller gets the error.
        assert!(drive(&clock, c.token()).is_err());
        // 2. After the backoff: waits again, the refresh succeeds.
        clock.advance(Duration::from_secs(600));
        assert_eq!(drive(&clock, c.token()).unwrap().secret(), "access-1");
        // 3. The resource server rejects it: a background refresh.
        let t = c.try_token().unwrap();
        assert!(c.invalidate(&t));
        clock.run_until_stalled();
        assert_eq!(c.try_token().unwrap().secret(), "access-2");
        // 4. Past the refresh point: served while the refresh-ahead runs (stale), 1 + 5 times.
        clock.advance(Duration::from_secs(3200));
        assert_eq!(drive(&clock, c.token()).unwrap().secret(), "access-2");
        for _ in 0..5 {
            assert_eq!(c.try_token().unwrap().secret(), "access-2");
        }
        clock.run_until_stalled();
        assert_eq!(c.try_token().unwrap().secret(), "access-3");

        // 5. A second credential whose store fails its save: served from memory, save retried.
        let store = FlakyStore::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        let failing = build(
            &clock,
            &Provider::rotating("refresh-0"),
            Some(store.clone()),
            expired(&clock),
        );
        kf_metrics::install(&failing, Labels::new().label("credential", "store"));
        store.set_failing(true);
        assert!(drive(&clock, failing.token()).is_ok());

        let r = Recorded::take(&snapshotter);
        let me = ("credential", "scripted");
        let outcome = |o| [me, ("outcome", o)];
        assert_eq!(r.counter(kf_metrics::REFRESHES, &outcome("transient")), 1);
        assert_eq!(r.counter(kf_metrics::REFRESHES, &outcome("success")), 3);
        assert_eq!(r.samples(kf_metrics::REFRESH_DURATION, &[me]).len(), 4);
        assert_eq!(r.counter(kf_metrics::CALLER_WAITS, &outcome("failed")), 1);
        assert_eq!(r.counter(kf_metrics::CALLER_WAITS, &outcome("served")), 1);
        assert_eq!(r.samples(kf_metrics::CALLER_WAIT, &[me]).len(), 2);
        assert_eq!(r.counter(kf_metrics::CALLER_WAIT_TIMEOUTS, &[me]), 0);
        assert_eq!(r.counter(kf_metrics::INVALIDATIONS, &[me]), 1);
        assert_eq!(r.counter(kf_metrics::SERVED_STALE, &[me]), 6);
        // Refresh starts: expired (twice), rejected while valid, inside the window.
        let left = r.samples(kf_metrics::TIME_TO_EXPIRY, &[me]);
        assert_eq!(left.len(), 4);
        assert_eq!(left[0], 0.0);
        assert!(left[2] > 3000.0, "{left:?}");
        assert!(left[3] > 0.0 && left[3] < 600.0, "{left:?}");
        // It ended fresh; every phase it left is back to zero.
        assert_eq!(
            r.gauge(kf_metrics::CREDENTIALS, &[me, ("phase", "fresh")]),
            1.0
        );
        assert_eq!(r.gauge(kf_metrics::CREDENTIALS, &[me]), 1.0);

        let store_me = ("credential", "store");
        assert!(
            r.counter(
                kf_metrics::STORE_ERRORS,
                &[store_me, ("op", "save"), ("kind", "io")]
            ) >= 1
        );
        assert_eq!(r.counter(kf_metrics::REFRESHES, &[store_me]), 1);
        drop(failing);
        drop(c);
    });
}

/// Pool entries get metrics without asking, labelled from their key; subjects are hashed by
/// default, and no label holds a token.
#[test]
fn pooled_credentials_are_labelled_by_key() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let pool = CredentialPool::builder()
            .runtime(Runtime::manual(&clock))
            .build();
        let key = CredentialKey::new("https://auth.example", "client")
            .scopes(["read"])
            .subject("alice@example.com");
        let provider = Provider::rotating("refresh-0");
        let c = drive(
            &clock,
            pool.get_or_build(&key, || {
                let b = Credential::builder(provider.clone())
                    .policy(policy())
                    .tokens(expired(&clock));
                async { Ok(b) }
            }),
        )
        .unwrap();
        assert_eq!(drive(&clock, c.token()).unwrap().secret(), "access-1");

        let r = Recorded::take(&snapshotter);
        let labels = [
            ("issuer", "https://auth.example"),
            ("client_id", "client"),
            ("scopes", "read"),
            ("outcome", "success"),
        ];
        assert_eq!(r.counter(kf_metrics::REFRESHES, &labels), 1);
        let values = r.label_values();
        assert!(!values.contains(&"alice@example.com"), "subject hashed");
        assert!(values
            .iter()
            .all(|v| !v.contains("access-") && !v.contains("refresh-")));
        let hashed = Labels::from_key(&key, SubjectLabel::Hashed);
        let (_, subject) = hashed.iter().find(|(k, _)| *k == "subject").unwrap();
        assert!(values.contains(&subject));
    });
}

/// A dropped credential leaves the phase gauge.
#[test]
fn dropped_credentials_leave_the_phase_gauge() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let c = build(
            &clock,
            &Provider::rotating("refresh-0"),
            None,
            fresh(&clock),
        );
        kf_metrics::install(&c, Labels::new().label("credential", "gone"));
        drop(c);
        let r = Recorded::take(&snapshotter);
        assert_eq!(
            r.gauge(kf_metrics::CREDENTIALS, &[("phase", "fresh")]),
            0.0,
            "+1 at install, -1 at drop"
        );
    });
}
