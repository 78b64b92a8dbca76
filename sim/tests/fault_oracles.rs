//! The fault kinds of SCENARIOS.md J38–K44 (store outages, lease and read faults, suspends,
//! logins, writes that overtake a save retry, panicking listeners): they are off unless a
//! scenario switches them on, shrinking can switch each off, their scenarios replay, and their
//! oracles fire on clients that have the bugs they look for — independently of the engine,
//! whose own handling of these faults the scenarios check (they are not in the CI corpus yet).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::store::{SaveOutcome, TokenStore};
use keepfresh::TokenSet;
use keepfresh_sim::clients;
use keepfresh_sim::provider::Profile;
use keepfresh_sim::runner::{self, Overrides};
use keepfresh_sim::scenario;
use keepfresh_sim::strategy::{
    ClientError, ClientStrategy, Health, Keepfresh, ProcessClient, ProcessContext, ServedToken,
};
use keepfresh_sim::world::{Action, Faults, WorldConfig};

const NEW_SCENARIOS: [&str; 6] = [
    "store-outage",
    "lease-faults",
    "suspend",
    "login-during-refresh",
    "newer-during-save-retry",
    "panicking-listener",
];

#[test]
fn new_fault_kinds_are_off_unless_a_scenario_switches_them_on() {
    assert!(Faults::none().active().is_empty());
    let base = WorldConfig::base("x", Profile::strict(Duration::from_secs(3600)));
    assert!(base.active_faults().is_empty());
    for sc in runner::suite() {
        if NEW_SCENARIOS.contains(&sc.name) || sc.name == "swarm" {
            continue;
        }
        let cfg = runner::resolve(&sc, 1, &Overrides::default()).unwrap();
        for kind in cfg.active_faults() {
            assert!(
                ![
                    "lease_fail",
                    "lease_hang",
                    "load_fail",
                    "load_hang",
                    "listener_panics",
                    "store_outage",
                    "suspend",
                    "login",
                    "newer_write",
                ]
                .contains(&kind),
                "{} switched on {kind}",
                sc.name
            );
        }
    }
}

#[test]
fn shrinking_can_switch_off_every_new_fault_kind() {
    for (name, kinds) in [
        ("store-outage", &["store_outage"][..]),
        (
            "lease-faults",
            &["lease_fail", "lease_hang", "load_fail", "load_hang"][..],
        ),
        ("suspend", &["suspend"][..]),
        ("login-during-refresh", &["login"][..]),
        (
            "newer-during-save-retry",
            &["store_write_fail", "newer_write"][..],
        ),
        ("panicking-listener", &["listener_panics"][..]),
    ] {
        let sc = scenario::by_name(name).unwrap();
        let cfg = runner::resolve(&sc, 4, &Overrides::default()).unwrap();
        for kind in kinds {
            assert!(cfg.active_faults().contains(kind), "{name}: {kind} not on");
        }
        let off = Overrides {
            disable_faults: kinds.iter().map(|k| k.to_string()).collect(),
            ..Overrides::default()
        };
        let cfg = runner::resolve(&sc, 4, &off).unwrap();
        assert!(
            cfg.active_faults().is_empty(),
            "{name}: {:?}",
            cfg.active_faults()
        );
        assert!(cfg.schedule.iter().all(|(_, a)| a.fault_kind().is_none()));
    }
}

#[test]
fn new_scenarios_replay_to_the_same_trace() {
    for name in NEW_SCENARIOS {
        let sc = scenario::by_name(name).unwrap();
        runner::determinism_check(&sc, 11, &Overrides::default()).unwrap();
    }
}

fn failure(cfg: &WorldConfig, strategy: Arc<dyn ClientStrategy>) -> Option<String> {
    runner::run_world(cfg, 1, strategy, false)
        .failure
        .map(|f| f.message)
}

/// A client that keeps its deadlines on the monotonic clock only (golang/oauth2's model) serves
/// the token it held before the suspend, long expired, after the resume.
#[test]
fn the_expiry_oracle_judges_by_true_time_across_a_suspend() {
    let sc = scenario::by_name("suspend").unwrap();
    let cfg = runner::resolve(&sc, 1, &Overrides::default()).unwrap();
    let golang = clients::by_name("golang-oauth2").unwrap();
    let msg = failure(&cfg, golang).expect("an expired token is served after the resume");
    assert!(msg.contains("after it expired"), "{msg}");
}

/// Keepfresh with a deliberate bug around logins or shutdowns, to show the store and login
/// oracles fire whatever the engine does.
struct Buggy {
    bug: Bug,
}

#[derive(Clone, Copy)]
enum Bug {
    /// `login` reports success but installs nothing.
    IgnoresLogin,
    /// After installing a login, writes the first grant's tokens back over the store.
    ClobbersLogin,
    /// At shutdown, writes the tokens it started with back over the store.
    ClobbersOnShutdown,
}

struct BuggyClient {
    inner: Arc<dyn ProcessClient>,
    store: Arc<dyn TokenStore>,
    initial: Option<TokenSet>,
    bug: Bug,
}

impl BuggyClient {
    async fn write_initial(&self) {
        let (Ok(current), Some(set)) = (self.store.load().await, &self.initial) else {
            return;
        };
        let saved = self.store.save(current.map(|c| c.version), set).await;
        assert!(matches!(saved, Ok(SaveOutcome::Saved(_))), "{saved:?}");
    }
}

#[async_trait]
impl ClientStrategy for Buggy {
    fn name(&self) -> &'static str {
        "buggy-keepfresh"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        let (store, initial) = (ctx.store.clone(), ctx.initial.clone());
        let inner = Keepfresh.start(ctx).await?;
        Ok(Arc::new(BuggyClient {
            inner,
            store,
            initial,
            bug: self.bug,
        }))
    }
}

#[async_trait]
impl ProcessClient for BuggyClient {
    async fn token(&self) -> Result<ServedToken, ClientError> {
        self.inner.token().await
    }

    fn unauthorized(&self, token: &ServedToken) -> bool {
        self.inner.unauthorized(token)
    }

    async fn login(&self, tokens: TokenSet) -> Result<(), ClientError> {
        match self.bug {
            Bug::IgnoresLogin => Ok(()),
            Bug::ClobbersLogin => {
                self.inner.login(tokens).await?;
                self.write_initial().await;
                Ok(())
            }
            Bug::ClobbersOnShutdown => self.inner.login(tokens).await,
        }
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
        if let Bug::ClobbersOnShutdown = self.bug {
            self.write_initial().await;
        }
    }

    fn health(&self) -> Health {
        self.inner.health()
    }
}

/// A quiet world: one process, a login at 10 min (no refresh in flight) and a clean restart
/// at 2 h (after two refreshes).
fn quiet_world() -> WorldConfig {
    let mut cfg = WorldConfig::base("quiet", Profile::strict(Duration::from_secs(3600)));
    cfg.duration = Duration::from_secs(3 * 3600);
    cfg.schedule = vec![
        (Duration::from_secs(600), Action::Login { proc: 0 }),
        (
            Duration::from_secs(7200),
            Action::Shutdown {
                proc: 0,
                restart_after: Duration::from_secs(5),
            },
        ),
    ];
    cfg
}

#[test]
fn the_login_and_store_order_oracles_fire_on_clients_that_lose_a_login_or_go_back() {
    let cfg = quiet_world();
    assert_eq!(failure(&cfg, Arc::new(Keepfresh)), None);
    let msg = failure(
        &cfg,
        Arc::new(Buggy {
            bug: Bug::IgnoresLogin,
        }),
    )
    .expect("the process keeps serving the replaced grant");
    assert!(msg.contains("after its login installed grant"), "{msg}");
    let msg = failure(
        &cfg,
        Arc::new(Buggy {
            bug: Bug::ClobbersLogin,
        }),
    )
    .expect("the store goes back to the replaced grant");
    assert!(msg.contains("over the store of the newer grant"), "{msg}");
    let mut no_login = cfg.clone();
    no_login.disable_fault("login");
    let msg = failure(
        &no_login,
        Arc::new(Buggy {
            bug: Bug::ClobbersOnShutdown,
        }),
    )
    .expect("the store goes back to an older refresh token");
    assert!(
        msg.contains("wrote an older token set over a newer one of the same grant"),
        "{msg}"
    );
}
